//! Forwarding, the last step: the request goes on to the target agent's sidecar over mTLS
//! (the gateway, which must see the target's SPIFFE ID), to the app on localhost (a sidecar's
//! mesh port), or to the gateway or a named mesh peer (the egress port). Both bodies stream;
//! a body a step had to read goes on as read.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Empty, Full};
use warden_identity::SpiffeId;
use warden_model::MtlsMode;

use super::card::Cards;
use super::{Exchange, Handler, Phase, Policy, RequestBody};
use crate::forward::{Upstreams, Via};
use crate::http::{ProxyBody, json_error};

/// Where a listener sends what it allowed.
pub enum Destination {
    /// The gateway: the target agent's sidecar, by `--endpoint`.
    Gateway {
        /// `namespace/name` → `host:port` of the agent's sidecar.
        endpoints: HashMap<String, String>,
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
    /// The gateway's endpoints, parsed once: no per-request formatting or parsing.
    sidecars: Endpoints,
}

impl Forward {
    /// Sends to `to` with `upstreams`' pooled clients.
    pub fn new(upstreams: Upstreams, to: Destination) -> Self {
        let sidecars = match &to {
            Destination::Gateway { endpoints, .. } => Endpoints::new(endpoints),
            _ => Endpoints::default(),
        };
        Self {
            upstreams,
            to,
            sidecars,
        }
    }
}

/// An agent's sidecar as the gateway reaches it: the URI authority and the `Host` value.
struct Endpoint {
    authority: http::uri::Authority,
    host: HeaderValue,
}

/// The gateway's endpoints by namespace, then name, so that a request's borrowed names find
/// theirs without building a `namespace/name` key.
#[derive(Default)]
struct Endpoints(HashMap<String, HashMap<String, Endpoint>>);

impl Endpoints {
    /// Parses every `namespace/name` → `host:port`; one that is not a valid authority is left
    /// out with a warning (its requests get 503, as for an agent with no endpoint).
    fn new(endpoints: &HashMap<String, String>) -> Self {
        let mut parsed: HashMap<String, HashMap<String, Endpoint>> = HashMap::new();
        for (key, address) in endpoints {
            let (Some((namespace, name)), Ok(authority), Ok(host)) = (
                key.split_once('/'),
                address.parse::<http::uri::Authority>(),
                HeaderValue::from_str(address),
            ) else {
                tracing::warn!(agent = %key, endpoint = %address, "endpoint ignored: not NAMESPACE/AGENT=HOST:PORT");
                continue;
            };
            parsed
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.to_owned(), Endpoint { authority, host });
        }
        Self(parsed)
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Endpoint> {
        self.0.get(namespace)?.get(name)
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
                to_sidecar(ex, &self.sidecars, &policy)
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
        let response = send(&self.upstreams, ex, via).await;
        ex.phase = Phase::Responding;
        response
    }
}

type Aimed<'a> = Result<Via<'a>, Box<Response<ProxyBody>>>;

fn to_sidecar<'p>(ex: &mut Exchange, sidecars: &Endpoints, policy: &'p Policy) -> Aimed<'p> {
    let Some(target) = &ex.target else {
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            "route",
            "no target",
        )));
    };
    let (Some(endpoint), Some(agent)) = (
        sidecars.get(&target.namespace, &target.name),
        policy
            .snapshot
            .as_ref()
            .and_then(|s| s.agent(&target.namespace, &target.name)),
    ) else {
        let message = format!("no endpoint is configured for {}", target.key());
        return Err(Box::new(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoint",
            &message,
        )));
    };
    // `/{rest}?{query}` in one allocation; scheme and authority were parsed at start.
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
    aim(
        &mut ex.parts,
        uri,
        http::uri::Scheme::HTTPS,
        endpoint.authority.clone(),
    )?;
    ex.parts
        .headers
        .insert(http::header::HOST, endpoint.host.clone());
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
    gateway_url: Option<&Uri>,
    mesh_peers: &'a HashMap<String, SpiffeId>,
    policy: &'a Policy,
) -> Aimed<'a> {
    let parts = &mut ex.parts;
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    let (authority, expected) = match uri.authority.take() {
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
    aim(parts, uri, scheme, authority)?;
    Ok(via)
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
    parts.version = Version::HTTP_11;
    Ok(())
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
        let sidecars = Endpoints::new(&HashMap::from([
            (
                "team-beta/specialist".to_owned(),
                "127.0.0.1:9443".to_owned(),
            ),
            ("team-beta/broken".to_owned(), "not an authority".to_owned()),
        ]));
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
        assert!(sidecars.get("team-beta", "broken").is_none());
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
    }
}
