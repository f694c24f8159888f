//! An upstream app for sidecar tests, on a loopback port in the test's runtime.
//!
//! - `GET /headers` (and anything else): the request headers as a JSON object.
//! - `POST /echo`: the body back.
//! - `GET /sse`: a server-sent-events stream: `data: one`, then — only once the test calls
//!   [`App::release_stream`] — `data: two`, then the end. A client that sees `one` before
//!   releasing proves the proxy does not buffer.
//! - `GET /slow`: answers after 1 s.
//! - `GET /hang`: never answers; [`App::hanging`] counts the requests it holds, so a test can
//!   wait until every request it sent has reached the app, however loaded the machine.
//! - `GET /.well-known/agent-card.json`: a card whose URLs point at 10.9.9.9 (to be rewritten;
//!   one interface at `/a2a/rest` with a tenant),
//!   with ETag `"card-v1"` (304 on revalidation).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = BoxBody<Bytes, Infallible>;

pub struct App {
    pub addr: SocketAddr,
    release: Arc<Notify>,
    hanging: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub fn release_stream(&self) {
        self.release.notify_one();
    }

    /// Requests to `GET /hang` received so far.
    pub fn hanging(&self) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(text.into()).boxed()
}

async fn handle(
    req: Request<Incoming>,
    release: Arc<Notify>,
    hanging: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", "/echo") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok(Response::new(full(body)))
        }
        ("GET", "/sse") => {
            let stream = futures_stream(release);
            let mut response = Response::new(BodyExt::boxed(stream));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok(response)
        }
        ("GET", "/.well-known/agent-card.json") => {
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"card-v1\"")
            {
                let mut response = Response::new(full(""));
                *response.status_mut() = http::StatusCode::NOT_MODIFIED;
                return Ok(response);
            }
            let card = serde_json::json!({
                "name": "test agent",
                "url": "http://10.9.9.9:9999/",
                "preferredTransport": "JSONRPC",
                "additionalInterfaces": [{"url": "http://10.9.9.9:9999/", "transport": "JSONRPC"}],
                "supportedInterfaces": [
                    {"url": "http://10.9.9.9:9999/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                    {"url": "http://10.9.9.9:9999/a2a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "t1"}
                ],
                "skills": []
            });
            let mut response = Response::new(full(card.to_string()));
            response
                .headers_mut()
                .insert("etag", "\"card-v1\"".parse().unwrap());
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(response)
        }
        ("GET", "/hang") => {
            hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
        ("GET", "/slow") => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Response::new(full("slow done")))
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
                    )
                })
                .collect();
            Ok(Response::new(full(
                serde_json::Value::Object(headers).to_string(),
            )))
        }
    }
}

fn futures_stream(
    release: Arc<Notify>,
) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
            .await;
        release.notified().await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
            .await;
    });
    ChannelBody(rx)
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

/// Starts the app on a free loopback port.
pub async fn start() -> App {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let release = Arc::new(Notify::new());
    let hanging = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let release = release.clone();
        let hanging = hanging.clone();
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (release, hanging) = (release.clone(), hanging.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, release.clone(), hanging.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    });
    App {
        addr,
        release,
        hanging,
        task,
    }
}
