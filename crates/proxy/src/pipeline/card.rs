//! Agent cards at the gateway: the card is served by the gateway itself with every URL
//! pointing at the gateway as the client reached it (each interface keeping its own path) —
//! the static card from the snapshot, or the one the agent serves, fetched over mTLS and
//! revalidated by ETag.
//!
//! Which base a card's URLs get, first that applies:
//! 1. the client's egress, when the card was fetched through one: the egress says its own
//!    address in `x-warden-egress-url`, believed only when the connection's verified peer is
//!    the identity of an agent in the snapshot (a mesh sidecar); so an app that fetched the
//!    card through its egress keeps calling through it instead of being sent past it;
//! 2. `--public-url` (an explicit override, for clients outside the mesh);
//! 3. the scheme and authority the client used (https over TLS).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use warden_model::CompiledAgent;

use super::Exchange;
use crate::endpoints::Endpoints;
use crate::forward::{Upstreams, Via};
use crate::http::{ProxyBody, full, json_error};

struct CachedCard {
    etag: String,
    card: serde_json::Value,
}

/// The gateway's card service: where clients reach the gateway, and fetched cards by agent.
pub struct Cards {
    public_url: Option<String>,
    listen: String,
    cache: Mutex<HashMap<String, CachedCard>>,
}

impl Cards {
    /// Cards whose URLs start with `public_url` when it is set (`--public-url`), else with the
    /// scheme and authority each client used (https over TLS; `listen` when it named none).
    pub fn new(public_url: Option<String>, listen: String) -> Self {
        Self {
            public_url,
            listen,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `scheme://authority` of the gateway for this request's client: its egress, else
    /// `--public-url`, else as the client reached it.
    fn base_url(&self, ex: &Exchange) -> String {
        if let Some(egress) = egress_base(ex) {
            return egress;
        }
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => self.client_base(ex),
        }
    }

    /// `scheme://authority` as this request's client reached the gateway.
    fn client_base(&self, ex: &Exchange) -> String {
        let authority = ex.parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            ex.parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        warden_a2a::card::client_base(ex.peer.tls, authority, &self.listen)
    }

    /// The routed agent's card, rewritten to gateway URLs.
    pub async fn serve(
        &self,
        upstreams: &Upstreams,
        endpoints: &Endpoints,
        ex: &Exchange,
    ) -> Response<ProxyBody> {
        let (Some(target), Some(snapshot)) = (&ex.target, &ex.policy.snapshot) else {
            return json_error(StatusCode::NOT_FOUND, "route", "no target");
        };
        let Some(agent) = snapshot.agent(&target.namespace, &target.name) else {
            return json_error(StatusCode::NOT_FOUND, "unknown_target", "no such agent");
        };
        let key = target.key();
        let base = if target.by_host {
            // The agent's own host: its root is the agent, whatever --public-url says.
            let mut base = egress_base(ex).unwrap_or_else(|| self.client_base(ex));
            base.push('/');
            base
        } else {
            format!("{}/api/a2a/{key}/", self.base_url(ex))
        };
        let mut card = match &agent.card {
            Some(card) => card.clone(),
            None => {
                let Some(endpoint) = endpoints.pick(&key, agent.port) else {
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_endpoint",
                        "no endpoint is configured for this agent",
                    );
                };
                match self.fetch(upstreams, &key, &endpoint, agent).await {
                    Ok(card) => card,
                    Err(response) => return response,
                }
            }
        };
        let domain = snapshot.control_plane().host_domain.as_str();
        let grpc_authority = grpc_authority(target, &base, domain);
        warden_a2a::card::rewrite_card(
            &mut card,
            &warden_a2a::card::GatewayUrls {
                base,
                grpc_authority,
            },
        );
        let mut response = Response::new(full(card.to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    fn cached(&self, key: &str) -> Option<(String, serde_json::Value)> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).map(|c| (c.etag.clone(), c.card.clone()))
    }

    async fn fetch(
        &self,
        upstreams: &Upstreams,
        key: &str,
        endpoint: &str,
        agent: &CompiledAgent,
    ) -> Result<serde_json::Value, Response<ProxyBody>> {
        let cached = self.cached(key);
        let mut request = Request::get(format!("https://{endpoint}/.well-known/agent-card.json"));
        if let Some((etag, _)) = &cached {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|_| card_error("cannot build the card request"))?;
        let response = upstreams.send(request, Via::Mesh(&agent.spiffe_id)).await;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED
            && let Some((_, card)) = cached
        {
            return Ok(card);
        }
        if !status.is_success() {
            return Err(response);
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| card_error("the agent's card could not be read"))?;
        let card: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| card_error("the agent's card is not JSON"))?;
        if let (Some(etag), Ok(mut cache)) = (etag, self.cache.lock()) {
            cache.insert(
                key.to_owned(),
                CachedCard {
                    etag,
                    card: card.clone(),
                },
            );
        }
        Ok(card)
    }
}

/// `scheme://authority` of the egress this request came through, as its app reached it: the
/// `x-warden-egress-url` the previous hop sent, when that hop's verified identity is an agent's
/// (a mesh sidecar's egress) and the value is a bare `http(s)://authority`. From any other
/// caller the header means nothing: it would let a client point other clients' cards anywhere.
fn egress_base(ex: &Exchange) -> Option<String> {
    let claimed = ex.claimed_egress_url.as_ref()?;
    let id = ex.peer.id.as_ref()?;
    let snapshot = ex.policy.snapshot.as_ref()?;
    if snapshot.agents_with_identity(id).next().is_none() {
        tracing::debug!(peer = %id, "x-warden-egress-url ignored: the peer is not a mesh egress");
        return None;
    }
    let uri: http::Uri = claimed.to_str().ok()?.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let authority = uri.authority()?;
    (uri.path() == "/" && uri.query().is_none()).then(|| format!("{scheme}://{authority}"))
}

fn card_error(message: &str) -> Response<ProxyBody> {
    json_error(StatusCode::BAD_GATEWAY, "card_fetch", message)
}

/// Where a gRPC client reaches `target` through the gateway: gRPC paths are
/// `/{service}/{method}`, with no room for the agent, so a card fetched by path
/// (`/api/a2a/{ns}/{agent}/…`) points its gRPC interfaces at the agent's own host name at the
/// gateway's port (`{agent}.{ns}.a2a.localhost:8083`, routed by `:authority`); a card fetched
/// by host name already has that authority (`None`: the base's).
fn grpc_authority(target: &super::Target, base: &str, domain: &str) -> Option<String> {
    if target.by_host {
        return None;
    }
    let authority: http::uri::Authority = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let host = warden_a2a::host::agent_host(&target.namespace, &target.name, domain);
    Some(match authority.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{example_policy, exchange, from_peer};

    const ORCHESTRATOR: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";

    fn claiming(peer: Option<&str>, url: &str) -> Exchange {
        let mut ex = exchange("GET", "/api/a2a/team-beta/specialist/", example_policy());
        if let Some(id) = peer {
            ex = from_peer(ex, id);
        }
        ex.claimed_egress_url = Some(HeaderValue::from_str(url).expect("header value"));
        ex
    }

    #[test]
    fn an_agents_egress_is_believed_about_its_own_address() {
        let ex = claiming(Some(ORCHESTRATOR), "http://127.0.0.1:15001");
        assert_eq!(egress_base(&ex).as_deref(), Some("http://127.0.0.1:15001"));
        let cards = Cards::new(
            Some("https://public.example".into()),
            "127.0.0.1:8083".into(),
        );
        assert_eq!(
            cards.base_url(&ex),
            "http://127.0.0.1:15001",
            "the egress wins over --public-url: a mesh app is never sent past its egress"
        );
    }

    #[test]
    fn anyone_else_claiming_an_egress_address_is_ignored() {
        for (peer, url) in [
            (None, "http://127.0.0.1:15001"),
            (
                Some("spiffe://warden.local/ns/team-alpha/sa/stranger"),
                "http://127.0.0.1:15001",
            ),
            (
                Some("spiffe://other.domain/ns/team-alpha/sa/orchestrator"),
                "http://127.0.0.1:15001",
            ),
            (Some(ORCHESTRATOR), "http://127.0.0.1:15001/elsewhere"),
            (Some(ORCHESTRATOR), "ftp://127.0.0.1:15001"),
            (Some(ORCHESTRATOR), "127.0.0.1:15001"),
        ] {
            let ex = claiming(peer, url);
            assert_eq!(egress_base(&ex), None, "{peer:?} {url}");
            let cards = Cards::new(None, "127.0.0.1:8083".into());
            let scheme = if peer.is_some() { "https" } else { "http" };
            assert_eq!(
                cards.base_url(&ex),
                format!("{scheme}://127.0.0.1:8083"),
                "{peer:?} {url}"
            );
        }
    }

    #[test]
    fn grpc_interfaces_of_a_path_routed_card_point_at_the_agents_host_at_the_gateway_port() {
        let mut target =
            crate::pipeline::route::parse("/api/a2a/team-beta/specialist/").expect("a route");
        let base = "https://127.0.0.1:8083/api/a2a/team-beta/specialist/";
        assert_eq!(
            grpc_authority(&target, base, warden_a2a::host::DEFAULT_DOMAIN).as_deref(),
            Some("specialist.team-beta.a2a.localhost:8083")
        );
        target.by_host = true;
        assert_eq!(
            grpc_authority(&target, base, warden_a2a::host::DEFAULT_DOMAIN),
            None
        );
    }
}
