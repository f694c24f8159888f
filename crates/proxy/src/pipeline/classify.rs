//! Classification: which A2A call a request is, so that policy can decide on the method.
//!
//! At the gateway: the agent card (`GET …/.well-known/agent-card.json`), a JSON-RPC call
//! (`POST` to the agent's root; the body is read, within the body limit, for its method, id,
//! task and context), an HTTP+JSON route (`POST …/message:send`, …), or else the HTTP route
//! itself. A sidecar only tells the card fetch from any other call (the gateway parsed the
//! A2A body already); the egress port does not classify.

use std::borrow::Cow;

use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use warden_model::policy::CARD_METHOD;

use super::{Exchange, Handler, Refusal, RequestBody};
use crate::http::{ProxyBody, json_error};

/// The pseudo-method a sidecar decides calls by (it does not parse A2A bodies; the gateway
/// does).
pub const CALL_METHOD: &str = "call";

/// How a listener classifies requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classifier {
    /// The gateway: A2A methods, reading JSON-RPC bodies up to `max_body_bytes`.
    Gateway {
        /// The most a JSON-RPC body may hold.
        max_body_bytes: usize,
    },
    /// A sidecar's mesh port: the card, or a call.
    Agent,
    /// The egress port: nothing to classify.
    None,
}

/// The classification step.
pub struct Classify<S> {
    how: Classifier,
    inner: S,
}

impl<S> Classify<S> {
    /// Classification by `how`, then `inner`.
    pub fn new(how: Classifier, inner: S) -> Self {
        Self { how, inner }
    }
}

impl<S: Handler> Handler for Classify<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        match self.how {
            Classifier::Gateway { max_body_bytes } => {
                if let Err(refusal) = gateway(ex, max_body_bytes).await {
                    return *refusal;
                }
            }
            Classifier::Agent => {
                let card = ex.parts.method == Method::GET && is_card_path(ex.parts.uri.path());
                ex.call.card = card;
                ex.call.method = Some(Cow::Borrowed(if card { CARD_METHOD } else { CALL_METHOD }));
            }
            Classifier::None => {}
        }
        self.inner.handle(ex).await
    }
}

async fn gateway(ex: &mut Exchange, max_body_bytes: usize) -> Result<(), Refusal> {
    let rest = ex.target.as_ref().map_or("", |t| t.rest.as_str());
    let method = &ex.parts.method;
    if method == Method::GET
        && matches!(
            rest,
            ".well-known/agent-card.json" | ".well-known/agent.json"
        )
    {
        ex.call.card = true;
        ex.call.method = Some(Cow::Borrowed(CARD_METHOD));
        return Ok(());
    }
    if method == Method::POST && rest.is_empty() {
        return jsonrpc(ex, max_body_bytes).await;
    }
    let (name, task) = match warden_a2a::rest_method(method.as_str(), rest) {
        Some((name, task)) => (Cow::Borrowed(name), task),
        None => (Cow::Owned(format!("{method} /{rest}")), None),
    };
    ex.call.method = Some(name);
    ex.call.task_id = task;
    Ok(())
}

/// Reads a JSON-RPC body (within the limit) for its method, id, task and context.
async fn jsonrpc(ex: &mut Exchange, max_body_bytes: usize) -> Result<(), Refusal> {
    let RequestBody::Streaming(incoming) = std::mem::replace(&mut ex.body, RequestBody::Taken)
    else {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no body",
        )));
    };
    let bytes = match Limited::new(incoming, max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            ex.refused_by = Some("max_body_bytes");
            return Err(Box::new(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "max_body_bytes",
                "the request body is larger than the configured limit",
            )));
        }
    };
    ex.bytes_in = bytes.len() as u64;
    match warden_a2a::jsonrpc_call(&bytes) {
        Some(call) => {
            ex.call.method = Some(Cow::Owned(call.method));
            ex.call.jsonrpc_id = Some(call.id);
            ex.call.task_id = call.task_id;
            ex.call.context_id = call.context_id;
        }
        None => ex.call.method = Some(Cow::Borrowed("POST /")),
    }
    ex.body = RequestBody::Buffered(bytes);
    Ok(())
}

/// Whether a sidecar request asks for the agent card.
fn is_card_path(path: &str) -> bool {
    path.ends_with("/.well-known/agent-card.json") || path.ends_with("/.well-known/agent.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Target;
    use crate::pipeline::test_support::{Answer, exchange, policy, seen};

    async fn gateway_call(method: &str, rest: &str) -> crate::pipeline::Call {
        let (last, slot) = Answer::ok();
        let step = Classify::new(
            Classifier::Gateway {
                max_body_bytes: 1024,
            },
            last,
        );
        let mut ex = exchange(method, &format!("/api/a2a/b/agent/{rest}"), policy());
        ex.target = Some(Target {
            namespace: "b".into(),
            name: "agent".into(),
            rest: rest.into(),
        });
        step.handle(&mut ex).await;
        seen(&slot).call
    }

    #[tokio::test]
    async fn gateway_routes_name_the_a2a_method() {
        let card = gateway_call("GET", ".well-known/agent-card.json").await;
        assert_eq!(
            (card.method.as_deref(), card.card),
            (Some(CARD_METHOD), true)
        );
        let send = gateway_call("POST", "v1/message:send").await;
        assert_eq!(send.method.as_deref(), Some("SendMessage"));
        let other = gateway_call("DELETE", "v1/other").await;
        assert_eq!(other.method.as_deref(), Some("DELETE /v1/other"));
    }

    #[tokio::test]
    async fn a_jsonrpc_post_without_a_body_is_400() {
        let (last, _) = Answer::ok();
        let step = Classify::new(
            Classifier::Gateway {
                max_body_bytes: 1024,
            },
            last,
        );
        let mut ex = exchange("POST", "/api/a2a/b/agent/", policy());
        ex.target = crate::pipeline::route::parse("/api/a2a/b/agent/");
        assert_eq!(step.handle(&mut ex).await.status(), 400);
    }

    #[tokio::test]
    async fn a_sidecar_tells_the_card_from_a_call() {
        for (method, path, expected) in [
            ("GET", "/.well-known/agent-card.json", CARD_METHOD),
            ("POST", "/.well-known/agent-card.json", CALL_METHOD),
            ("GET", "/tasks", CALL_METHOD),
        ] {
            let (last, slot) = Answer::ok();
            let step = Classify::new(Classifier::Agent, last);
            let mut ex = exchange(method, path, policy());
            step.handle(&mut ex).await;
            assert_eq!(
                seen(&slot).call.method.as_deref(),
                Some(expected),
                "{method} {path}"
            );
        }
    }
}
