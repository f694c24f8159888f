//! Classification: which A2A call a request is, so that policy can decide on the method.
//!
//! At the gateway: the agent card (`GET …/.well-known/agent-card.json`), a JSON-RPC call
//! (`POST` to the agent's root, or a JSON `POST` under a path such as `/a2a/jsonrpc`; the body
//! is read, within the body limit, for its method, id, task and context), an HTTP+JSON route
//! under any prefix (`POST …/a2a/rest/message:send`, …; a JSON body is read too, and refused
//! when it is a JSON-RPC request naming another method), a gRPC method
//! (`/lf.a2a.v1.A2AService/SendMessage`), or else the HTTP route itself
//! (`warden_a2a::classify`). A sidecar only tells the card fetch from any other call (the gateway parsed the
//! A2A body already); the egress port does not classify.

use std::borrow::Cow;

use http::{Method, Response, StatusCode};
use warden_a2a::classify::{Classified, classify};
use warden_model::policy::{CARD_METHOD, decide};

use super::body::{self, BodyError, BodyRules};
use super::{Exchange, Handler, Refusal, RequestBody};
use crate::http::{ProxyBody, json_error, jsonrpc_error};

/// The pseudo-method a sidecar decides calls by (it does not parse A2A bodies; the gateway
/// does).
pub const CALL_METHOD: &str = "call";

/// How a listener classifies requests.
#[derive(Debug, Clone)]
pub enum Classifier {
    /// The gateway: A2A methods, reading JSON-RPC bodies within these bounds.
    Gateway(BodyRules),
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
        match &self.how {
            Classifier::Gateway(rules) => {
                if let Err(refusal) = gateway(ex, rules).await {
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

async fn gateway(ex: &mut Exchange, rules: &BodyRules) -> Result<(), Refusal> {
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
    match classify(&[], method.as_str(), rest) {
        // A POST elsewhere than the root is read only when it says it is JSON (the JSON-RPC
        // endpoint of an agent may sit under a path; other bodies keep streaming).
        Classified::JsonRpc if rest.is_empty() || is_json(&ex.parts.headers) => {
            // A caller the target admits for no method is refused without reading a large body.
            let small = ex.parts.headers.contains_key(http::header::CONTENT_LENGTH)
                && ex.bytes_in <= SMALL_BODY;
            if !small && !admitted_for_calls(ex) {
                ex.call.method = Some(Cow::Borrowed(UNREAD_JSONRPC));
                return Ok(());
            }
            jsonrpc(ex, rules).await
        }
        Classified::Rest { method, task_id } => {
            ex.call.method = Some(Cow::Borrowed(method));
            ex.call.task_id = task_id;
            // A JSON body is read (within the same bounds) to check it does not name another
            // method; a caller admitted for nothing is refused later without reading it.
            if is_json(&ex.parts.headers) && admitted_for_calls(ex) {
                let bytes = buffer(ex, rules).await?;
                route_and_body_agree(ex, method, &bytes)?;
            }
            Ok(())
        }
        Classified::Grpc { method } => {
            ex.call.method = Some(Cow::Borrowed(method));
            Ok(())
        }
        Classified::JsonRpc | Classified::Other => {
            ex.call.method = Some(Cow::Owned(format!("{method} /{rest}")));
            Ok(())
        }
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Bodies this small are read even for a caller who will be refused, to answer in JSON-RPC
/// with the request's id.
const SMALL_BODY: u64 = 64 * 1024;

/// The method a JSON-RPC request is decided by when its body was not read (a refusal).
const UNREAD_JSONRPC: &str = "POST /";

/// Whether the target admits the caller for some call other than the card fetch (methods
/// only matter for the card grant, so any other method answers for all of them).
fn admitted_for_calls(ex: &Exchange) -> bool {
    match (&ex.policy.snapshot, &ex.target) {
        (Some(snapshot), Some(t)) => {
            decide(snapshot, &ex.caller, &t.namespace, &t.name, UNREAD_JSONRPC).allowed
        }
        _ => false,
    }
}

/// Reads a JSON-RPC body (within the bounds) for its method, id, task and context. Batches
/// are refused (400): one request, one decision, one audit line.
async fn jsonrpc(ex: &mut Exchange, rules: &BodyRules) -> Result<(), Refusal> {
    let bytes = buffer(ex, rules).await?;
    match warden_a2a::jsonrpc_call(&bytes) {
        Some(call) => {
            ex.call.method = Some(Cow::Owned(call.method));
            ex.call.jsonrpc_id = Some(call.id);
            ex.call.task_id = call.task_id;
            ex.call.context_id = call.context_id;
        }
        None => {
            not_a_single_request(ex, &bytes)?;
            let rest = ex.target.as_ref().map_or("", |t| t.rest.as_str());
            ex.call.method = Some(Cow::Owned(format!("POST /{rest}")));
        }
    }
    Ok(())
}

/// Reads the request body within the bounds; it goes on buffered, holding its share of the
/// budget until the exchange ends.
async fn buffer(ex: &mut Exchange, rules: &BodyRules) -> Result<bytes::Bytes, Refusal> {
    let RequestBody::Streaming(incoming) = std::mem::replace(&mut ex.body, RequestBody::Taken)
    else {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no body",
        )));
    };
    let read = body::read(incoming, rules)
        .await
        .map_err(|e| Box::new(unreadable(ex, e)))?;
    ex.buffered = read.permit;
    ex.bytes_in = read.bytes.len() as u64;
    ex.body = RequestBody::Buffered(read.bytes.clone());
    Ok(read.bytes)
}

/// An HTTP+JSON route whose body is a JSON-RPC request (or batch) naming another method is
/// refused (400): the call is decided and audited as one method, so the agent must not be
/// handed another (an agent that reads any POST as JSON-RPC would run the body's).
fn route_and_body_agree(ex: &mut Exchange, route: &str, bytes: &[u8]) -> Result<(), Refusal> {
    let Some(call) = warden_a2a::jsonrpc_call(bytes) else {
        return not_a_single_request(ex, bytes);
    };
    if call.method == route {
        return Ok(());
    }
    ex.refused_by = Some(ROUTE_BODY_MISMATCH);
    Err(Box::new(json_error(
        StatusCode::BAD_REQUEST,
        ROUTE_BODY_MISMATCH,
        &format!(
            "the route is {route} but the JSON-RPC body names {}: route and body must agree",
            call.method
        ),
    )))
}

/// The rule of a route and body that name different methods.
const ROUTE_BODY_MISMATCH: &str = "route_body_mismatch";

fn unreadable(ex: &mut Exchange, error: BodyError) -> Response<ProxyBody> {
    let (status, rule) = match error {
        BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "max_body_bytes"),
        BodyError::Timeout => (StatusCode::REQUEST_TIMEOUT, "body_read_timeout"),
        BodyError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "max_buffered_bytes"),
        BodyError::Malformed => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    ex.refused_by = Some(rule);
    let mut response = json_error(status, rule, &error.to_string());
    if error == BodyError::Busy {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

/// A body that is JSON-RPC-shaped but not one 2.0 request — a batch, or another `jsonrpc`
/// version — is refused with a JSON-RPC error (400); anything else is not JSON-RPC at all.
fn not_a_single_request(ex: &mut Exchange, bytes: &[u8]) -> Result<(), Refusal> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    let (id, rule, message) = match &value {
        serde_json::Value::Array(_) => (
            serde_json::Value::Null,
            "jsonrpc_batch",
            "JSON-RPC batches are not accepted: send one request at a time",
        ),
        serde_json::Value::Object(o) if o.contains_key("jsonrpc") => (
            o.get("id").cloned().unwrap_or(serde_json::Value::Null),
            "jsonrpc_version",
            "only JSON-RPC \"2.0\" requests are accepted",
        ),
        _ => return Ok(()),
    };
    ex.refused_by = Some(rule);
    Err(Box::new(jsonrpc_error(
        StatusCode::BAD_REQUEST,
        id,
        rule,
        message,
    )))
}

/// Whether a sidecar request asks for the agent card.
/// Exactly the agent's card paths: the card grant is nothing else.
fn is_card_path(path: &str) -> bool {
    matches!(
        path,
        "/.well-known/agent-card.json" | "/.well-known/agent.json"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Target;
    use crate::pipeline::test_support::{Answer, exchange, policy, seen};

    fn rules() -> BodyRules {
        BodyRules::new(1024, std::time::Duration::from_secs(1), 4096)
    }

    async fn gateway_call(method: &str, rest: &str) -> crate::pipeline::Call {
        let (last, slot) = Answer::ok();
        let step = Classify::new(Classifier::Gateway(rules()), last);
        let mut ex = exchange(method, &format!("/api/a2a/b/agent/{rest}"), policy());
        ex.target = Some(Target {
            namespace: "b".into(),
            name: "agent".into(),
            rest: rest.into(),
            by_host: false,
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
        let nested = gateway_call("POST", "a2a/rest/message:send").await;
        assert_eq!(nested.method.as_deref(), Some("SendMessage"));
        let grpc = gateway_call("POST", "lf.a2a.v1.A2AService/GetTask").await;
        assert_eq!(grpc.method.as_deref(), Some("GetTask"));
        // Not JSON: not read, streams through under its route.
        let upload = gateway_call("POST", "files/upload").await;
        assert_eq!(upload.method.as_deref(), Some("POST /files/upload"));
    }

    #[tokio::test]
    async fn the_body_of_a_caller_admitted_for_nothing_is_not_read() {
        let (last, slot) = Answer::ok();
        let step = Classify::new(Classifier::Gateway(rules()), last);
        let mut ex = exchange("POST", "/api/a2a/b/agent/", policy());
        ex.target = crate::pipeline::route::parse("/api/a2a/b/agent/");
        step.handle(&mut ex).await;
        assert_eq!(seen(&slot).call.method.as_deref(), Some(UNREAD_JSONRPC));
        assert!(ex.buffered.is_none());
    }

    #[test]
    fn batches_and_other_versions_are_refused_and_plain_json_is_not_jsonrpc() {
        let mut ex = exchange("POST", "/", policy());
        for (body, rule) in [
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"SendMessage"}]"#,
                "jsonrpc_batch",
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"SendMessage"}"#,
                "jsonrpc_version",
            ),
        ] {
            let refused = not_a_single_request(&mut ex, body.as_bytes());
            assert_eq!(refused.map_err(|r| r.status().as_u16()), Err(400), "{body}");
            assert_eq!(ex.refused_by, Some(rule));
        }
        for body in [r#"{"hello":1}"#, "not json"] {
            assert!(
                not_a_single_request(&mut ex, body.as_bytes()).is_ok(),
                "{body}"
            );
        }
    }

    #[test]
    fn a_rest_route_whose_jsonrpc_body_names_another_method_is_refused() {
        let mut ex = exchange("POST", "/", policy());
        let cancel = r#"{"jsonrpc":"2.0","id":1,"method":"CancelTask","params":{"id":"t1"}}"#;
        let refused = route_and_body_agree(&mut ex, "SendMessage", cancel.as_bytes())
            .expect_err("CancelTask on message:send");
        assert_eq!(refused.status(), 400);
        assert_eq!(ex.refused_by, Some(ROUTE_BODY_MISMATCH));
        // A batch smuggles methods just the same.
        let batch = format!("[{cancel}]");
        assert!(route_and_body_agree(&mut ex, "SendMessage", batch.as_bytes()).is_err());
        // The REST body itself, the same method (in either version's name), or no JSON: on.
        for body in [
            r#"{"message":{"role":"ROLE_USER","parts":[{"text":"hi"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#,
            "",
        ] {
            let mut ex = exchange("POST", "/", policy());
            assert!(
                route_and_body_agree(&mut ex, "SendMessage", body.as_bytes()).is_ok(),
                "{body}"
            );
            assert_eq!(ex.refused_by, None);
        }
    }

    #[tokio::test]
    async fn a_sidecar_tells_the_card_from_a_call() {
        for (method, path, expected) in [
            ("GET", "/.well-known/agent-card.json", CARD_METHOD),
            ("POST", "/.well-known/agent-card.json", CALL_METHOD),
            ("GET", "/app/.well-known/agent-card.json", CALL_METHOD),
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
