//! The built-in echo agent: an A2A 1.0 JSON-RPC agent (0.3 names accepted too) for demos and
//! tests.
//!
//! Its replies say who called it — the verified caller from `x-forwarded-client-cert`, as its
//! sidecar set it — and which delegation headers arrived. With a delegate URL (reached through
//! the agent's sidecar egress) it forwards each message there and includes that reply.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// How the echo agent runs.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Where it listens (its sidecar's `--app`).
    pub listen: SocketAddr,
    /// Its name, in the card and replies.
    pub name: String,
    /// Another agent's JSON-RPC URL to forward each message to (through the egress).
    pub delegate_to: Option<String>,
    /// Which connections it serves; `None`: every one. Its sidecar's hop is plaintext on
    /// loopback, where any local process could connect and claim a caller in XFCC: `warden
    /// up` admits its own OS user only (see `warden_proxy::peer_uid`).
    pub admit: Option<Admit>,
}

/// Decides, from a connection's (local, remote) addresses, whether it is served.
#[derive(Clone)]
pub struct Admit(pub Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>);

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

/// Header names that are delegation headers by convention: anything the gateway added from
/// `headersFrom` starts with `x-` and is not a transport or identity header.
fn delegation_headers(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("x-") && k != "x-forwarded-client-cert" && k != "x-forwarded-for")
        .collect();
    names.sort();
    names
}

/// The caller's SPIFFE ID from XFCC's `URI=`, or `anonymous`.
fn caller(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').find_map(|kv| kv.strip_prefix("URI=")))
        .unwrap_or("anonymous")
        .to_owned()
}

struct Echo {
    config: EchoConfig,
    tasks: Mutex<HashMap<String, Value>>,
    counter: AtomicU64,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

impl Echo {
    fn card(&self) -> Value {
        let url = format!("http://{}/", self.config.listen);
        json!({
            "name": self.config.name,
            "description": "Warden's built-in echo agent: replies with what it received and who sent it.",
            "version": "1.0.0",
            "protocolVersion": "1.0",
            "url": url,
            "preferredTransport": "JSONRPC",
            "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "additionalInterfaces": [{"url": url, "transport": "JSONRPC"}],
            "capabilities": {"streaming": true},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "echo", "name": "Echo", "description": "Echoes the message and names the caller", "tags": ["test"]}]
        })
    }

    async fn delegate(&self, text: &str, context_id: &str) -> Option<Value> {
        let url = self.config.delegate_to.as_ref()?;
        let body = json!({"jsonrpc": "2.0", "id": "delegated", "method": "SendMessage", "params": {"message": {
            "role": "user", "messageId": format!("{}-delegated", self.config.name), "contextId": context_id,
            "parts": [{"kind": "text", "text": text}]}}});
        let request = Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        let outcome = match self.client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let reply: Value = serde_json::from_slice(&bytes)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
                json!({"status": status, "reply": reply})
            }
            Err(e) => json!({"status": 0, "error": e.to_string()}),
        };
        Some(outcome)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if req.method() == http::Method::GET
            && matches!(
                path.as_str(),
                "/.well-known/agent-card.json" | "/.well-known/agent.json"
            )
        {
            let mut response = json_response(StatusCode::OK, &self.card());
            response.headers_mut().insert(
                http::header::ETAG,
                http::HeaderValue::from_static("\"echo-1\""),
            );
            return response;
        }
        if req.method() != http::Method::POST {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        let headers = req.headers().clone();
        let bytes = match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "unreadable body"}),
                );
            }
        };
        let Ok(rpc) = serde_json::from_slice::<Value>(&bytes) else {
            return rpc_error(&Value::Null, -32700, "parse error");
        };
        let id = rpc.get("id").cloned().unwrap_or(Value::Null);
        let name = rpc
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = rpc.get("params").cloned().unwrap_or(Value::Null);
        match crate::canonical_method(name) {
            Some(method @ ("SendMessage" | "SendStreamingMessage")) => {
                let message = params.get("message").cloned().unwrap_or(Value::Null);
                let text: String = message
                    .get("parts")
                    .and_then(Value::as_array)
                    .map(|parts| {
                        parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let task_id = format!("{}-task-{n}", self.config.name);
                let context_id = message
                    .get("contextId")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{}-ctx-{n}", self.config.name), str::to_owned);
                let caller = caller(&headers);
                let delegation = delegation_headers(&headers);
                let delegate = self.delegate(&text, &context_id).await;
                let reply = json!({
                    "kind": "message", "role": "agent", "messageId": format!("{task_id}-reply"),
                    "taskId": task_id, "contextId": context_id,
                    "parts": [{"kind": "text", "text": format!("{} echoes: {text} (caller: {caller})", self.config.name)}],
                    "metadata": {"agent": self.config.name, "caller": caller, "delegationHeaders": delegation, "delegate": delegate}
                });
                if let Ok(mut tasks) = self.tasks.lock() {
                    tasks.insert(task_id.clone(), json!({"kind": "task", "id": task_id, "contextId": context_id, "status": {"state": "completed"}, "history": [message, reply.clone()]}));
                }
                if method == "SendStreamingMessage" {
                    let working = json!({"jsonrpc": "2.0", "id": id, "result": {"kind": "status-update", "taskId": task_id, "contextId": context_id, "status": {"state": "working"}, "final": false}});
                    let done = json!({"jsonrpc": "2.0", "id": id, "result": reply});
                    let sse = format!("data: {working}\n\ndata: {done}\n\n");
                    let mut response = Response::new(Full::new(Bytes::from(sse)).boxed());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/event-stream"),
                    );
                    return response;
                }
                json_response(
                    StatusCode::OK,
                    &json!({"jsonrpc": "2.0", "id": id, "result": reply}),
                )
            }
            Some("GetTask") => {
                let task_id = params.get("id").and_then(Value::as_str).unwrap_or_default();
                match self.tasks.lock().ok().and_then(|t| t.get(task_id).cloned()) {
                    Some(task) => json_response(
                        StatusCode::OK,
                        &json!({"jsonrpc": "2.0", "id": id, "result": task}),
                    ),
                    None => rpc_error(&id, -32001, "task not found"),
                }
            }
            Some("CancelTask") => rpc_error(
                &id,
                -32002,
                "task cannot be canceled: echo tasks complete at once",
            ),
            _ => rpc_error(&id, -32601, &format!("method not found: {name}")),
        }
    }
}

/// Serves the echo agent until `shutdown` resolves.
pub async fn run(
    config: EchoConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %config.listen, name = %config.name, delegate_to = ?config.delegate_to, "echo agent listening");
    let echo = Arc::new(Echo {
        config,
        tasks: Mutex::new(HashMap::new()),
        counter: AtomicU64::new(0),
        client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
    });
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = &mut shutdown => return Ok(()),
        };
        if let Some(Admit(admit)) = &echo.config.admit
            && !tcp.local_addr().is_ok_and(|local| admit(local, remote))
        {
            tracing::warn!(%remote, "connection refused: not admitted (another OS user)");
            continue;
        }
        let echo = echo.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let echo = echo.clone();
                async move { Ok::<_, Infallible>(echo.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
