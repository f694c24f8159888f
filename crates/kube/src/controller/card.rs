//! Fetching an agent's card the way a peer would, and proving who served it.
//!
//! Where: the agent's first ready address by [`crate::endpoints`]' convention, the one the
//! gateway routes by (EndpointSlices labelled `kubernetes.io/service-name: <agent>`, the port
//! named `a2a` or the slice's only port, else `spec.port`). A name in an `FQDN` slice that is
//! `localhost` or ends in `.localhost` is loopback (RFC 6761), resolved here since glibc's
//! `files` resolver knows only /etc/hosts. EndpointSlices rather than the Service's ClusterIP:
//! a slice change is a pod change, which is when a card must be fetched again, and the
//! controller needs no kube-proxy.
//!
//! How: over mTLS with the controller's own SVID from the Workload API, through the data
//! plane's pooled client ([`Upstreams`] with [`Via::Mesh`]), whose verifier completes the
//! handshake only with a server proving exactly the agent's SPIFFE ID
//! (`spiffe://td/ns/NS/sa/SA`), not merely a member of the trust domain. With no Workload
//! API, with the kill switch (`--enable-verified-fetch=false`), or for a Disabled agent: plain
//! HTTP, recorded as `transportSecurity: http` with no attested ID. Bounded by a timeout and a
//! size cap.
//!
//! What: the card the app serves — or, for an agent with a static card (`spec.card`), that
//! card once the agent's sidecar answered (over mTLS, proving the agent's ID), since it is
//! what the gateway serves and the only card a gRPC-only app has.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use warden_identity::{IdentityCell, SvidSource};
use warden_model::resources::{CardStatus, TransportSecurity};
use warden_model::{CompiledAgent, MtlsMode};
use warden_proxy::forward::{Upstreams, Via};
use warden_proxy::http::answered_by_peer;

use crate::endpoints::{SERVICE_NAME_LABEL, endpoint_map};

use super::status::{CardOutcome, CardProblem, FetchedCard};

/// How long a card fetch may take, handshake included.
pub const CARD_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest card read (A2A cards are a few KiB).
pub const MAX_CARD_BYTES: usize = 256 * 1024;
/// The path of the card.
const CARD_PATH: &str = "/.well-known/agent-card.json";

/// Where to fetch one agent's card from, and what identifies that place for refetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardTarget {
    /// The first ready endpoint, `host:port` (`[v6]:port`).
    pub endpoint: String,
    /// The slices' names and resource versions: a change means a changed workload.
    pub fingerprint: String,
}

/// The agent's endpoint from its EndpointSlices (`slices` may hold any); `None` when no
/// ready address exists.
pub fn target(slices: &[Arc<EndpointSlice>], agent: &CompiledAgent) -> Option<CardTarget> {
    let mut mine: Vec<&EndpointSlice> = slices
        .iter()
        .map(|s| &**s)
        .filter(|s| {
            s.namespace().as_deref() == Some(agent.namespace.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&agent.name)
        })
        .collect();
    mine.sort_by_key(|s| s.name_any());
    let fingerprint = mine
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                s.name_any(),
                s.resource_version().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let map = endpoint_map(mine.iter().copied());
    let first = map.get(&agent.key())?.first()?;
    let endpoint = first.authority(agent.port);
    Some(CardTarget {
        endpoint,
        fingerprint,
    })
}

/// How a fetch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// mTLS, the server proving the agent's ID.
    Mtls,
    /// Plain HTTP.
    Http,
}

/// Fetches cards; holds the pooled clients.
pub struct CardFetcher {
    mesh: Option<Upstreams>,
    plain: Upstreams,
    verified: bool,
}

impl CardFetcher {
    /// `identity`: the controller's SVID source when it has a Workload API; `verified`: the
    /// `--enable-verified-fetch` switch (false: plain HTTP only).
    pub fn new(identity: Option<Arc<dyn SvidSource>>, verified: bool) -> Self {
        let limits = warden_proxy::config::Limits::default();
        Self {
            mesh: identity.map(|source| Upstreams::new(source, limits.clone())),
            plain: Upstreams::new(Arc::new(IdentityCell::default()), limits),
            verified,
        }
    }

    /// Whether it has the controller's SVID (else every fetch is plain HTTP).
    pub fn has_mesh(&self) -> bool {
        self.mesh.is_some()
    }

    /// How `agent`'s card would be fetched now.
    pub fn transport(&self, agent: &CompiledAgent) -> Transport {
        if self.verified && self.mesh.is_some() && agent.mtls_mode != MtlsMode::Disabled {
            Transport::Mtls
        } else {
            Transport::Http
        }
    }

    /// Fetches `agent`'s card from `endpoint`.
    pub async fn fetch(&self, agent: &CompiledAgent, endpoint: &str) -> CardOutcome {
        let transport = self.transport(agent);
        let (scheme, upstreams, via) = match (transport, &self.mesh) {
            (Transport::Mtls, Some(mesh)) => ("https", mesh, Via::Mesh(&agent.spiffe_id)),
            _ => ("http", &self.plain, Via::Plain),
        };
        let what = format!("GET {scheme}://{endpoint}{CARD_PATH}");
        let failed = |message: String| CardProblem {
            reason: "FetchFailed",
            message,
        };
        let request = http::Request::get(format!("{scheme}://{endpoint}{CARD_PATH}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| failed(format!("{what}: {e}")))?;
        let exchange = async {
            let response = upstreams.send(request, via).await;
            let status = response.status();
            let from_peer = answered_by_peer(&response);
            if agent.card.is_some() && from_peer {
                // The static card is taken below: the app's body is not read, so a large or
                // slow one cannot fail an agent whose card is its spec.
                return Ok((status, Default::default(), from_peer));
            }
            let body = Limited::new(response.into_body(), MAX_CARD_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| format!("reading the card (at most {MAX_CARD_BYTES} bytes): {e}"))?;
            Ok::<_, String>((status, body, from_peer))
        };
        let (status, body, from_peer) = tokio::time::timeout(CARD_TIMEOUT, exchange)
            .await
            .map_err(|_| failed(format!("{what}: no answer within {CARD_TIMEOUT:?}")))?
            .map_err(|e| failed(format!("{what}: {e}")))?;
        // A static card (`spec.card`) is the card the gateway serves (it never asks the app),
        // and the only one an app that speaks no HTTP/1.1 has: a gRPC-only app (a2a-sdk's
        // gRPC server) answers no GET and has no RPC for its public card. The sidecar's own
        // answer, whatever it says of the app, proves who serves the endpoint; whether the app
        // serves is the pod's readiness, which put the address in the EndpointSlice.
        if let Some(card) = &agent.card
            && from_peer
        {
            let card = card.to_string();
            return Ok(fetched(agent, transport, card.as_bytes(), endpoint, true));
        }
        if !status.is_success() {
            return Err(failed(format!(
                "{what}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
            return Err(CardProblem {
                reason: "InvalidCard",
                message: format!("{what}: not JSON: {e}"),
            });
        }
        Ok(fetched(agent, transport, &body, endpoint, false))
    }
}

/// The status of `card`, fetched from `endpoint` over `transport` (or, `static_card`, the
/// agent's `spec.card` once `endpoint` answered).
fn fetched(
    agent: &CompiledAgent,
    transport: Transport,
    card: &[u8],
    endpoint: &str,
    static_card: bool,
) -> FetchedCard {
    FetchedCard {
        card: CardStatus {
            transport_security: match transport {
                Transport::Mtls => TransportSecurity::Mtls,
                Transport::Http => TransportSecurity::Http,
            },
            // Via::Mesh completes a handshake only with a server proving exactly this ID.
            attested_spiffe_id: (transport == Transport::Mtls).then(|| agent.spiffe_id.to_string()),
            card_hash: Some(hex::encode(Sha256::digest(card))),
            last_fetch_time: Some(now()),
        },
        endpoint: endpoint.to_string(),
        static_card,
    }
}

/// Now, to the second (what the apiserver keeps of a time).
pub fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> warden_model::MeshSnapshot {
        let mut manifests = warden_model::Manifests::default();
        let mut errors = Vec::new();
        warden_model::loader::load_str(
            std::path::Path::new("t.yaml"),
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec: {port: 9000, mtls: {mode: Strict}}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: d, namespace: ns}\nspec: {mtls: {mode: Disabled}}\n",
            &mut manifests,
            &mut errors,
        );
        warden_model::compile(&manifests, 1).unwrap()
    }

    #[tokio::test]
    async fn the_kill_switch_and_disabled_agents_fetch_over_http() {
        let snapshot = agents();
        let (strict, disabled) = (
            snapshot.agent("ns", "a").unwrap(),
            snapshot.agent("ns", "d").unwrap(),
        );
        let svid: Arc<dyn SvidSource> = Arc::new(IdentityCell::default());
        let verified = CardFetcher::new(Some(svid.clone()), true);
        assert_eq!(verified.transport(strict), Transport::Mtls);
        assert_eq!(verified.transport(disabled), Transport::Http);
        let killed = CardFetcher::new(Some(svid), false);
        assert_eq!(killed.transport(strict), Transport::Http);
        let no_socket = CardFetcher::new(None, true);
        assert_eq!(no_socket.transport(strict), Transport::Http);
    }

    #[test]
    fn the_endpoint_is_the_first_ready_address_on_the_agents_port() {
        let snapshot = agents();
        let agent = snapshot.agent("ns", "a").unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a-1", "namespace": "ns", "resourceVersion": "7",
                         "labels": {SERVICE_NAME_LABEL: "a"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090}, {"name": "a2a", "port": 9000}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}}
            ]
        }))
        .unwrap();
        let other: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b-1", "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "b"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.9"]}]
        }))
        .unwrap();
        let fqdn: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a-0", "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "a"}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["pod-a.example"], "conditions": {"ready": false}}]
        }))
        .unwrap();
        let found = target(&[Arc::new(other), Arc::new(slice.clone())], agent).unwrap();
        assert_eq!(found.endpoint, "10.0.0.2:9000");
        assert_eq!(found.fingerprint, "a-1@7");
        let mut ready_fqdn = fqdn.clone();
        ready_fqdn.endpoints.as_mut().unwrap()[0].conditions = None;
        let found = target(&[Arc::new(ready_fqdn), Arc::new(slice)], agent).unwrap();
        assert_eq!(
            found.endpoint, "10.0.0.2:9000",
            "the first address in order"
        );
        let mut local = fqdn.clone();
        local.endpoints.as_mut().unwrap()[0].conditions = None;
        local.endpoints.as_mut().unwrap()[0].addresses = vec!["pod.localhost".into()];
        let found = target(&[Arc::new(local)], agent).unwrap();
        assert_eq!(found.endpoint, "127.0.0.1:9000");
        assert!(
            crate::endpoints::is_localhost("pod.LOCALHOST.")
                && !crate::endpoints::is_localhost("localhost.example")
        );
    }
}
