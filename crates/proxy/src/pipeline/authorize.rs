//! Authorization: the decision. With a snapshot, the target agent's policy decides on the
//! caller and the method (the gateway always has one; a sidecar when `--snapshot` is given);
//! without, a sidecar admits by its allow lists. The egress port admits its own app. A
//! refusal is 403 naming who was refused, for what, and the rule, in the request's binding
//! (`warden_a2a::denial`).

use http::Response;
use http_body_util::{BodyExt, Limited};
use warden_a2a::denial::{Denial, Refusal};
use warden_model::policy::{CARD_METHOD, Caller, decide};

use super::{Exchange, Handler, RequestBody};
use crate::authz::{Verdict, authorize_by_flags};
use crate::http::{ProxyBody, denial_response, is_grpc, jsonrpc_id};

/// What a JSON-RPC `GetAgentCard` is decided as: any call, not the card grant.
const JSONRPC_CARD: &str = "GetAgentCard (JSON-RPC)";

/// How much of a denied request's body a sidecar reads to find a JSON-RPC id.
const DENY_BODY_PEEK: usize = 64 * 1024;

/// How a listener decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authz {
    /// The gateway: the routed target's policy in the snapshot.
    Gateway,
    /// A sidecar's mesh port: the policy of `agent` when a snapshot is loaded, else the
    /// allow lists (within `trust_domain`).
    Sidecar {
        /// The agent beside this sidecar (`namespace`, `name`), when a snapshot is configured.
        agent: Option<(String, String)>,
        /// The mesh's trust domain.
        trust_domain: String,
    },
    /// The egress port: the app's own calls.
    Egress,
}

/// The authorization step.
pub struct Authorize<S> {
    how: Authz,
    inner: S,
}

impl<S> Authorize<S> {
    /// Decisions by `how`, then `inner` for what is allowed.
    pub fn new(how: Authz, inner: S) -> Self {
        Self { how, inner }
    }

    fn verdict(&self, ex: &Exchange) -> Verdict {
        let method = ex.call.method.as_deref().unwrap_or_default();
        // The card grant is exactly `GET` of the card path (`call.card`), never a JSON-RPC
        // `GetAgentCard` body.
        let method = if method == CARD_METHOD && !ex.call.card {
            JSONRPC_CARD
        } else {
            method
        };
        let snapshot = ex.policy.snapshot.as_deref();
        match (&self.how, snapshot) {
            (Authz::Gateway, Some(snapshot)) => match &ex.target {
                Some(t) => {
                    from_decision(decide(snapshot, &ex.caller, &t.namespace, &t.name, method))
                }
                None => unrouted(),
            },
            (Authz::Gateway, None) => unrouted(),
            (
                Authz::Sidecar {
                    agent: Some((ns, name)),
                    ..
                },
                Some(snapshot),
            ) => from_decision(decide(snapshot, &ex.caller, ns, name, method)),
            (Authz::Sidecar { trust_domain, .. }, _) => {
                authorize_by_flags(&ex.caller, &ex.policy.settings, trust_domain, ex.mode)
            }
            (Authz::Egress, _) => Verdict {
                allowed: true,
                rule: "egress",
                reason: "",
            },
        }
    }
}

impl<S: Handler> Handler for Authorize<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        let verdict = self.verdict(ex);
        ex.verdict = Some(verdict);
        if verdict.allowed {
            return self.inner.handle(ex).await;
        }
        tracing::info!(caller = %ex.caller, method = ?ex.call.method, path = %ex.parts.uri.path(), rule = verdict.rule, "denied");
        deny(ex, &verdict, &self.how).await
    }
}

fn from_decision(d: warden_model::policy::Decision) -> Verdict {
    Verdict {
        allowed: d.allowed,
        rule: d.rule.name(),
        reason: d.reason,
    }
}

fn unrouted() -> Verdict {
    Verdict {
        allowed: false,
        rule: "route",
        reason: "the request names no agent",
    }
}

/// A 403 naming the caller, the target, the method and the rule, in the request's binding:
/// a JSON-RPC error object when the request was JSON-RPC (known from classification, or — at a
/// sidecar, which does not classify bodies — from a bounded peek at a JSON body), a gRPC
/// status for gRPC, else `google.rpc.Status` JSON.
async fn deny(ex: &mut Exchange, verdict: &Verdict, how: &Authz) -> Response<ProxyBody> {
    let grpc = is_grpc(&ex.parts.headers);
    let id = match ex.call.jsonrpc_id.take() {
        Some(id) => Some(id),
        None if matches!(how, Authz::Sidecar { .. }) && !grpc => peek_jsonrpc_id(ex).await,
        None => None,
    };
    let caller = ex.caller.to_string();
    let target = match (&ex.target, how) {
        (Some(target), _) => target.key(),
        (
            None,
            Authz::Sidecar {
                agent: Some((ns, name)),
                ..
            },
        ) => format!("{ns}/{name}"),
        _ => "this agent".to_owned(),
    };
    let denial = Denial {
        refusal: refusal_of(ex, grpc),
        rule: verdict.rule,
        reason: verdict.reason,
        caller: &caller,
        target: &target,
        method: ex.call.method.as_deref().unwrap_or("call"),
    };
    denial_response(&denial, id.as_ref(), grpc)
}

/// `PERMISSION_DENIED`, except a gRPC caller who presented no credentials at all:
/// `UNAUTHENTICATED`, which gRPC clients read as "authenticate and retry". (HTTP bindings stay
/// 403: mTLS offers no `WWW-Authenticate` challenge for a 401 to carry.)
fn refusal_of(ex: &Exchange, grpc: bool) -> Refusal {
    if grpc && matches!(ex.caller, Caller::Anonymous) {
        Refusal::Unauthenticated
    } else {
        Refusal::PermissionDenied
    }
}

async fn peek_jsonrpc_id(ex: &mut Exchange) -> Option<serde_json::Value> {
    let is_json = ex
        .parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json || ex.parts.method != http::Method::POST {
        return None;
    }
    let RequestBody::Streaming(body) = std::mem::replace(&mut ex.body, RequestBody::Taken) else {
        return None;
    };
    let collected = Limited::new(body, DENY_BODY_PEEK).collect().await.ok()?;
    jsonrpc_id(&collected.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{Answer, example_policy, exchange, from_peer, policy};
    use warden_model::policy::Caller;

    const ORCH: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";
    const ROGUE: &str = "spiffe://warden.local/ns/team-gamma/sa/rogue";

    fn gateway_exchange(caller: &str) -> Exchange {
        let path = "/api/a2a/team-beta/specialist/";
        let mut ex = exchange("POST", path, example_policy());
        ex.target = crate::pipeline::route::parse(path);
        ex.call.method = Some("SendMessage".into());
        ex.call.jsonrpc_id = Some(serde_json::json!("r1"));
        ex.caller = Caller::Spiffe(warden_identity::SpiffeId::new(caller).expect("id"));
        ex
    }

    #[tokio::test]
    async fn the_targets_policy_decides_at_the_gateway_and_a_denial_is_jsonrpc() {
        let (last, _) = Answer::ok();
        let step = Authorize::new(Authz::Gateway, last);
        let mut allowed = gateway_exchange(ORCH);
        assert_eq!(step.handle(&mut allowed).await.status(), 200);
        assert_eq!(allowed.verdict.map(|v| v.rule), Some("namespace_selector"));

        let mut denied = gateway_exchange(ROGUE);
        let response = step.handle(&mut denied).await;
        assert_eq!(response.status(), 403);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["id"], "r1");
        assert_eq!(json["error"]["data"]["rule"], "namespace_selector");
    }

    #[tokio::test]
    async fn without_a_snapshot_a_strict_sidecar_refuses_anonymous_callers() {
        let how = Authz::Sidecar {
            agent: None,
            trust_domain: "warden.local".into(),
        };
        let (last, _) = Answer::ok();
        let step = Authorize::new(how, last);
        let mut anonymous = exchange("GET", "/", policy());
        anonymous.mode = warden_model::MtlsMode::Strict;
        assert_eq!(step.handle(&mut anonymous).await.status(), 403);
        assert_eq!(anonymous.rule(), "strict_requires_identity");

        let mut verified = from_peer(exchange("GET", "/", policy()), ORCH);
        verified.caller = Caller::Spiffe(verified.peer.id.clone().expect("peer id"));
        assert_eq!(step.handle(&mut verified).await.status(), 200);
    }
}
