//! Forwarding, the last step: the request goes on to the target agent's sidecar over mTLS
//! (the gateway, which must see the target's SPIFFE ID), to the app on localhost (a sidecar's
//! mesh port), or to the gateway or a named mesh peer (the egress port). Both bodies stream;
//! a body a step had to read goes on as read.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Empty, Full};
use warden_identity::SpiffeId;
use warden_model::MtlsMode;

use super::card::Cards;
use super::{Exchange, Handler, Phase, Policy, RequestBody};
use crate::endpoints::Endpoints;
use crate::forward::{Upstreams, Via};
use crate::http::{EGRESS_URL_HEADER, ProxyBody, json_error};

/// Where a listener sends what it allowed.
pub enum Destination {
    /// The gateway: the target agent's sidecar, by `--endpoint`.
    Gateway {
        /// `namespace/name` → the addresses of the agent's sidecars (swapped live in a
        /// cluster).
        endpoints: Arc<Endpoints>,
        /// Agent cards, served here with gateway URLs.
        cards: Cards,
    },
    /// A sidecar's mesh port: the app.
    App(http::uri::Authority),
    /// The egress port: origin-form to the gateway, absolute-form to the named host.
    Egress {
        /// Where origin-form requests go.
        gateway_url: Option<Uri>,
        /// `host:port` → the identity a mesh destination must prove.
        mesh_peers: HashMap<String, SpiffeId>,
    },
}

/// The forwarding step.
pub struct Forward {
    upstreams: Upstreams,
    to: Destination,
}

impl Forward {
    /// Sends to `to` with `upstreams`' pooled clients.
    pub fn new(upstreams: Upstreams, to: Destination) -> Self {
        Self { upstreams, to }
    }
}

impl Handler for Forward {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        // The request's policy, held here so that the upstream identity can be borrowed
        // from it while the exchange is lent out.
        let policy = ex.policy.clone();
        let aimed = match &self.to {
            Destination::Gateway { endpoints, cards } => {
                if ex.call.card {
                    return cards.serve(&self.upstreams, endpoints, ex).await;
                }
                to_sidecar(ex, endpoints, &policy)
            }
            Destination::App(app) => to_app(ex, app),
            Destination::Egress {
                gateway_url,
                mesh_peers,
            } => to_egress(ex, gateway_url.as_ref(), mesh_peers, &policy),
        };
        let via = match aimed {
            Ok(via) => via,
            Err(refusal) => return *refusal,
        };
        ex.phase = Phase::Forwarding;
        let mut response = send(&self.upstreams, ex, via).await;
        ex.phase = Phase::Responding;
        if let Destination::App(_) = self.to {
            crate::app_uid::mark(&mut response);
        }
        response
    }
}

type Aimed<'a> = Result<Via<'a>, Box<Response<ProxyBody>>>;

fn to_sidecar<'p>(ex: &mut Exchange, endpoints: &Endpoints, policy: &'p Policy) -> Aimed<'p> {
    let Some(target) = &ex.target else {
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            "route",
            "no target",
        )));
    };
    let key = target.key();
    let agent = policy
        .snapshot
        .as_ref()
        .and_then(|s| s.agent(&target.namespace, &target.name));
    let (Some(agent), Some(endpoint)) = (agent, agent.and_then(|a| endpoints.pick(&key, a.port)))
    else {
        let message = format!("no endpoint is configured for {key}");
        return Err(Box::new(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoint",
            &message,
        )));
    };
    // `/{rest}?{query}` in one allocation.
    let query = ex.parts.uri.query();
    let mut path = String::with_capacity(2 + target.rest.len() + query.map_or(0, str::len));
    path.push('/');
    path.push_str(&target.rest);
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(http::uri::PathAndQuery::try_from(path).map_err(|_| bad_target())?);
    let authority: http::uri::Authority = endpoint.parse().map_err(|_| bad_target())?;
    if let Ok(host) = HeaderValue::from_str(&endpoint) {
        ex.parts.headers.insert(http::header::HOST, host);
    }
    aim(&mut ex.parts, uri, http::uri::Scheme::HTTPS, authority)?;
    Ok(Via::Mesh(&agent.spiffe_id))
}

fn to_app(ex: &mut Exchange, app: &http::uri::Authority) -> Aimed<'static> {
    let parts = &mut ex.parts;
    // HTTP/2 carries the authority in the URI, not in `Host`; the app gets it as `Host`.
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    let uri = std::mem::take(&mut parts.uri).into_parts();
    aim(parts, uri, http::uri::Scheme::HTTP, app.clone())?;
    Ok(Via::Plain)
}

fn to_egress<'a>(
    ex: &mut Exchange,
    gateway_url: Option<&'a Uri>,
    mesh_peers: &'a HashMap<String, SpiffeId>,
    policy: &'a Policy,
) -> Aimed<'a> {
    let parts = &mut ex.parts;
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    let egress_url = egress_url(parts, &uri);
    let (authority, expected) = match uri.authority.take() {
        // An agent's host name (a gRPC client following a card fetched through this egress
        // calls `{agent}.{ns}.{domain}:{egress port}`): to the gateway, which routes by it.
        Some(authority) if !mesh_peers.contains_key(authority.as_str()) => {
            if let Some(via) = agent_host_via(&authority, gateway_url, policy) {
                return aim_agent_host(parts, uri, authority, egress_url, via?);
            }
            (authority, None)
        }
        // absolute-form: proxy to the named host.
        Some(authority) => {
            let expected = mesh_peers.get(authority.as_str());
            (authority, expected)
        }
        // origin-form: to the gateway.
        None => match gateway_url.and_then(|g| g.authority()) {
            Some(gateway) => (gateway.clone(), policy.settings.gateway_ids.first()),
            None => {
                return Err(Box::new(json_error(
                    StatusCode::BAD_GATEWAY,
                    "no_gateway",
                    "origin-form request but no --gateway-url is configured",
                )));
            }
        },
    };
    let (scheme, via) = match (expected, policy.settings.mode) {
        (Some(id), MtlsMode::Permissive | MtlsMode::Strict) => {
            (http::uri::Scheme::HTTPS, Via::Mesh(id))
        }
        _ => (http::uri::Scheme::HTTP, Via::Plain),
    };
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(http::header::HOST, host);
    }
    // A mesh peer (the gateway) learns where this app reaches us, for the cards it serves.
    if let (Via::Mesh(_), Some(url)) = (&via, egress_url) {
        parts.headers.insert(EGRESS_URL_HEADER, url);
    }
    aim(parts, uri, scheme, authority)?;
    Ok(via)
}

/// How a request for `authority` goes when it names an agent's host under the mesh's host
/// domain (`None` when it does not): over mTLS to the gateway's address, expecting the
/// gateway's identity, the agent's host name kept as `:authority`/`Host` and SNI. Without a
/// gateway to reach over mTLS it is refused (502) — sent on to the name itself, which is
/// loopback, it could come back to this very egress.
fn agent_host_via<'a>(
    authority: &http::uri::Authority,
    gateway_url: Option<&'a Uri>,
    policy: &'a Policy,
) -> Option<Aimed<'a>> {
    let domain = policy
        .snapshot
        .as_ref()
        .map_or(warden_a2a::host::DEFAULT_DOMAIN, |s| {
            s.control_plane().host_domain.as_str()
        });
    warden_a2a::host::route_host(authority.as_str(), domain)?;
    let gateway = gateway_url.and_then(|g| g.authority());
    Some(
        match (
            gateway,
            policy.settings.gateway_ids.first(),
            policy.settings.mode,
        ) {
            (Some(gateway), Some(id), MtlsMode::Permissive | MtlsMode::Strict) => {
                Ok(Via::MeshAt(id, gateway))
            }
            _ => Err(Box::new(json_error(
                StatusCode::BAD_GATEWAY,
                "no_gateway",
                &format!(
                    "{authority} is an agent's host name, reached through the gateway: \
                     this egress needs --gateway-url, a gateway identity and mTLS"
                ),
            ))),
        },
    )
}

fn aim_agent_host<'a>(
    parts: &mut http::request::Parts,
    uri: http::uri::Parts,
    authority: http::uri::Authority,
    egress_url: Option<HeaderValue>,
    via: Via<'a>,
) -> Aimed<'a> {
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(http::header::HOST, host);
    }
    if let Some(url) = egress_url {
        parts.headers.insert(EGRESS_URL_HEADER, url);
    }
    aim(parts, uri, http::uri::Scheme::HTTPS, authority)?;
    Ok(via)
}

/// `http://{authority}` as the app reached this egress: the authority of an absolute-form
/// request (the app uses us as its HTTP proxy and will again), else its `Host`.
fn egress_url(parts: &http::request::Parts, uri: &http::uri::Parts) -> Option<HeaderValue> {
    let authority = match &uri.authority {
        Some(authority) => authority.as_str(),
        None => parts.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    HeaderValue::from_str(&format!("http://{authority}")).ok()
}

/// Points a request at `scheme://authority` with its own path and query (moved, not copied),
/// as HTTP/1.1; a target that makes no valid URI gets a 400.
fn aim(
    parts: &mut http::request::Parts,
    mut uri: http::uri::Parts,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
) -> Result<(), Box<Response<ProxyBody>>> {
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| bad_target())?;
    set_version(parts);
    Ok(())
}

/// The version a request goes upstream in: gRPC stays HTTP/2 (it needs trailers; the
/// authority travels as `:authority`, so `Host` goes), everything else is HTTP/1.1.
fn set_version(parts: &mut http::request::Parts) {
    if crate::grpc::needs_http2(&parts.headers) {
        parts.version = Version::HTTP_2;
        parts.headers.remove(http::header::HOST);
    } else {
        parts.version = Version::HTTP_11;
    }
}

fn bad_target() -> Box<Response<ProxyBody>> {
    Box::new(json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "the request target is not a valid path",
    ))
}

/// Moves the request out of the exchange and sends it.
async fn send(upstreams: &Upstreams, ex: &mut Exchange, via: Via<'_>) -> Response<ProxyBody> {
    let (placeholder, ()) = Request::new(()).into_parts();
    let parts = std::mem::replace(&mut ex.parts, placeholder);
    // Keep what the audit record names (`METHOD /path`), for requests not classified.
    ex.parts.method = parts.method.clone();
    match std::mem::replace(&mut ex.body, RequestBody::Taken) {
        RequestBody::Streaming(body) => upstreams.send(Request::from_parts(parts, body), via).await,
        RequestBody::Buffered(bytes) => {
            upstreams
                .send(Request::from_parts(parts, Full::new(bytes)), via)
                .await
        }
        RequestBody::Taken => {
            upstreams
                .send(Request::from_parts(parts, Empty::<Bytes>::new()), via)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{exchange, policy};

    #[test]
    fn the_app_gets_the_path_and_query_and_an_http2_authority_as_host() {
        let mut ex = exchange("GET", "https://mesh.example:8443/tasks?id=1", policy());
        let app = http::uri::Authority::from_static("127.0.0.1:9000");
        assert!(matches!(to_app(&mut ex, &app), Ok(Via::Plain)));
        assert_eq!(ex.parts.uri, "http://127.0.0.1:9000/tasks?id=1");
        assert_eq!(ex.parts.headers[http::header::HOST], "mesh.example:8443");
    }

    #[test]
    fn the_gateway_aims_at_the_agents_sidecar_with_the_rest_of_the_path_and_the_query() {
        let policy = crate::pipeline::test_support::example_policy();
        let sidecars = Endpoints::fixed(HashMap::from([(
            "team-beta/specialist".to_owned(),
            "127.0.0.1:9443".to_owned(),
        )]))
        .expect("endpoints");
        let uri = "/api/a2a/team-beta/specialist/v1/tasks?pageSize=2";
        let mut ex = exchange("GET", uri, policy.clone());
        ex.target = Some(crate::pipeline::Target {
            namespace: "team-beta".into(),
            name: "specialist".into(),
            rest: "v1/tasks".into(),
            by_host: false,
        });
        let Ok(Via::Mesh(id)) = to_sidecar(&mut ex, &sidecars, &policy) else {
            panic!("not aimed over mTLS");
        };
        assert_eq!(
            id.as_str(),
            "spiffe://warden.local/ns/team-beta/sa/specialist"
        );
        assert_eq!(ex.parts.uri, "https://127.0.0.1:9443/v1/tasks?pageSize=2");
        assert_eq!(ex.parts.headers[http::header::HOST], "127.0.0.1:9443");
    }

    #[test]
    fn origin_form_egress_without_a_gateway_is_502() {
        let mut ex = exchange("GET", "/x", policy());
        let (peers, policy) = (HashMap::new(), policy());
        let Err(refused) = to_egress(&mut ex, None, &peers, &policy) else {
            panic!("an origin-form request without a gateway was aimed");
        };
        assert_eq!(refused.status(), 502);
    }

    #[test]
    fn an_agent_host_at_the_egress_goes_to_the_gateway_keeping_the_host_as_authority() {
        use crate::pipeline::test_support::{settings, with_headers};
        use std::sync::Arc;
        let gateway_id = SpiffeId::new("spiffe://warden.local/ns/warden-system/sa/gw").expect("id");
        let policy = Arc::new(Policy {
            settings: crate::config::DynamicConfig {
                gateway_ids: vec![gateway_id.clone()],
                ..settings()
            },
            snapshot: None,
            jwt: crate::authn::JwtConfig::default(),
        });
        let gateway: Uri = "https://127.0.0.1:8083".parse().expect("uri");
        let no_peers = HashMap::new();
        let grpc = [("content-type", "application/grpc")];
        let target = "http://specialist.team-beta.a2a.localhost:15001/lf.a2a.v1.A2AService/GetTask";
        let mut ex = with_headers("POST", target, &grpc, policy.clone());
        let Ok(via) = to_egress(&mut ex, Some(&gateway), &no_peers, &policy) else {
            panic!("not aimed");
        };
        assert!(
            matches!(via, Via::MeshAt(id, at) if *id == gateway_id && at == "127.0.0.1:8083"),
            "{via:?}"
        );
        assert_eq!(
            ex.parts.uri,
            "https://specialist.team-beta.a2a.localhost:15001/lf.a2a.v1.A2AService/GetTask"
        );
        assert_eq!(ex.parts.version, Version::HTTP_2);
        // Any other host is not the gateway's.
        let mut ex = exchange("GET", "http://example.com/x", policy.clone());
        let via = to_egress(&mut ex, Some(&gateway), &no_peers, &policy);
        assert!(matches!(via, Ok(Via::Plain)));
        // Without a gateway, an agent's host is refused, not sent on to itself (loopback).
        let mut ex = with_headers("POST", target, &grpc, policy.clone());
        let Err(refused) = to_egress(&mut ex, None, &no_peers, &policy) else {
            panic!("an agent host without a gateway was aimed");
        };
        assert_eq!(refused.status(), 502);
    }

    #[test]
    fn absolute_form_egress_to_a_mesh_peer_goes_over_mtls_expecting_its_id() {
        let id = SpiffeId::new("spiffe://warden.local/ns/b/sa/agent").expect("id");
        let peers = HashMap::from([("b.mesh:8443".to_owned(), id.clone())]);
        let policy = policy();
        let mut ex = exchange("GET", "http://b.mesh:8443/v1/card", policy.clone());
        let Ok(via) = to_egress(&mut ex, None, &peers, &policy) else {
            panic!("not aimed");
        };
        assert!(matches!(via, Via::Mesh(expected) if *expected == id));
        assert_eq!(ex.parts.uri, "https://b.mesh:8443/v1/card");
        assert_eq!(
            ex.parts.headers[EGRESS_URL_HEADER], "http://b.mesh:8443",
            "an app using the egress as its proxy is sent back through it"
        );
    }

    #[test]
    fn origin_form_egress_tells_the_gateway_the_address_the_app_used() {
        let gateway_id =
            SpiffeId::new("spiffe://warden.local/ns/warden-system/sa/warden-gateway").expect("id");
        let mut settings = crate::pipeline::test_support::settings();
        settings.gateway_ids = vec![gateway_id];
        let policy = std::sync::Arc::new(Policy {
            snapshot: None,
            settings,
            jwt: Default::default(),
        });
        let gateway: Uri = "http://127.0.0.1:8083".parse().expect("uri");
        let mut ex = crate::pipeline::test_support::with_headers(
            "GET",
            "/api/a2a/team-beta/specialist/.well-known/agent-card.json",
            &[("host", "127.0.0.1:15001")],
            policy.clone(),
        );
        let peers = HashMap::new();
        assert!(matches!(
            to_egress(&mut ex, Some(&gateway), &peers, &policy),
            Ok(Via::Mesh(_))
        ));
        assert_eq!(
            ex.parts.headers[EGRESS_URL_HEADER],
            "http://127.0.0.1:15001"
        );
        assert_eq!(ex.parts.headers[http::header::HOST], "127.0.0.1:8083");
    }
}
