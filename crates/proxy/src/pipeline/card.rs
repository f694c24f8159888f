//! Agent cards at the gateway: the card is served by the gateway itself with every URL
//! pointing at the gateway as the client reached it (each interface keeping its own path) —
//! the static card from the snapshot, or the one the agent serves, fetched over mTLS and
//! revalidated by ETag.

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

    /// `scheme://authority` of the gateway for this request's client: `--public-url`, else
    /// as the client reached it.
    fn base_url(&self, ex: &Exchange) -> String {
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
            let mut base = self.client_base(ex);
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
        warden_a2a::rewrite_card(&mut card, &base);
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

fn card_error(message: &str) -> Response<ProxyBody> {
    json_error(StatusCode::BAD_GATEWAY, "card_fetch", message)
}
