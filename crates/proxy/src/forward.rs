//! Sending a request on: pooled plaintext and mTLS clients, body limits, and errors mapped to
//! JSON responses. Used by the sidecar (to its app and for egress) and by the gateway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warden_identity::source::SvidSource;
use warden_identity::tls::client_config;
use warden_identity::{Authorizer, SpiffeId};

use crate::app_uid::{AppDial, AppNotOwned, AppOwners};
use crate::config::Limits;
use crate::http::{ProxyBody, json_error, strip_hop_by_hop};

type MeshClient = Client<hyper_rustls::HttpsConnector<Dial>, ProxyBody>;

/// How a request leaves.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// Plain HTTP.
    Plain,
    /// mTLS with this process's SVID, to a server that must prove the given identity.
    Mesh(&'a SpiffeId),
    /// mTLS as [`Via::Mesh`], but connected to `at` whatever host the request names: a
    /// request for an agent's host name (`:authority` and SNI name the agent) sent to the
    /// gateway, which routes by that name.
    MeshAt(&'a SpiffeId, &'a http::uri::Authority),
}

/// The TCP connector of mTLS clients: to the request's host, or always to `to`. TLS above it
/// still names the request's host (SNI), so a gateway reached for an agent's host name
/// routes the connection by that name.
#[derive(Clone)]
pub struct Dial {
    tcp: HttpConnector,
    to: Option<http::Uri>,
}

impl tower::Service<http::Uri> for Dial {
    type Response = <HttpConnector as tower::Service<http::Uri>>::Response;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = <HttpConnector as tower::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let dst = self.to.clone().unwrap_or(dst);
        self.tcp.call(dst)
    }
}

/// The pooled clients of one process.
pub struct Upstreams {
    identity: Arc<dyn SvidSource>,
    limits: Limits,
    plain: Client<AppDial, ProxyBody>,
    /// HTTP/2 with prior knowledge (h2c), for requests that must stay HTTP/2 (gRPC).
    plain_h2: Client<AppDial, ProxyBody>,
    /// mTLS clients by the server identity they expect (HTTP/1.1); built on first use.
    mesh: ArcSwap<HashMap<SpiffeId, Arc<MeshClient>>>,
    /// The same over HTTP/2 (ALPN `h2`), for requests that must stay HTTP/2 (gRPC).
    mesh_h2: ArcSwap<HashMap<SpiffeId, Arc<MeshClient>>>,
    /// mTLS clients that always connect to one address ([`Via::MeshAt`]), by identity,
    /// address and HTTP/2.
    mesh_at: ArcSwap<HashMap<(SpiffeId, String, bool), Arc<MeshClient>>>,
}

impl Upstreams {
    /// Clients presenting `identity`'s SVID, within `limits`.
    pub fn new(identity: Arc<dyn SvidSource>, limits: Limits) -> Self {
        Self {
            identity,
            plain: plain_client(&limits, None, false),
            plain_h2: plain_client(&limits, None, true),
            mesh: ArcSwap::from_pointee(HashMap::new()),
            mesh_h2: ArcSwap::from_pointee(HashMap::new()),
            mesh_at: ArcSwap::from_pointee(HashMap::new()),
            limits,
        }
    }

    /// These clients, whose plaintext connections to the app are used only while one of
    /// `owners`' uids holds its port ([`crate::app_uid`]; `None`: unchecked).
    pub fn checking_app(mut self, owners: Option<AppOwners>) -> Self {
        let owners = owners.map(Arc::new);
        self.plain = plain_client(&self.limits, owners.clone(), false);
        self.plain_h2 = plain_client(&self.limits, owners, true);
        self
    }

    /// The pooled mTLS client that expects `id` of the server, speaking HTTP/2 when `h2`.
    fn mesh_client(&self, id: &SpiffeId, h2: bool) -> Result<Arc<MeshClient>, String> {
        let pool = if h2 { &self.mesh_h2 } else { &self.mesh };
        if let Some(client) = pool.load().get(id) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.new_mesh_client(id, h2, None)?);
        pool.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(id.clone()).or_insert_with(|| client.clone());
            map
        });
        Ok(client)
    }

    /// The pooled mTLS client that connects to `at` and expects `id` of it ([`Via::MeshAt`]).
    fn mesh_client_at(
        &self,
        id: &SpiffeId,
        at: &http::uri::Authority,
        h2: bool,
    ) -> Result<Arc<MeshClient>, String> {
        let key = (id.clone(), at.as_str().to_owned(), h2);
        if let Some(client) = self.mesh_at.load().get(&key) {
            return Ok(client.clone());
        }
        let to: http::Uri = format!("https://{at}/")
            .parse()
            .map_err(|e| format!("{at}: {e}"))?;
        let client = Arc::new(self.new_mesh_client(id, h2, Some(to))?);
        self.mesh_at.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(key.clone()).or_insert_with(|| client.clone());
            map
        });
        Ok(client)
    }

    /// The mTLS client `via` needs; `None` for plain HTTP.
    fn mesh_for(&self, via: Via<'_>, h2: bool) -> Option<Result<Arc<MeshClient>, String>> {
        match via {
            Via::Plain => None,
            Via::Mesh(id) => Some(self.mesh_client(id, h2)),
            Via::MeshAt(id, at) => Some(self.mesh_client_at(id, at, h2)),
        }
    }

    fn new_mesh_client(
        &self,
        id: &SpiffeId,
        h2: bool,
        to: Option<http::Uri>,
    ) -> Result<MeshClient, String> {
        let tls = client_config(self.identity.clone(), Authorizer::exactly(id.clone()))
            .map_err(|e| e.to_string())?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(self.limits.handshake_timeout));
        let dial = Dial { tcp, to };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let connector = if h2 {
            builder.enable_http2().wrap_connector(dial)
        } else {
            builder.enable_http1().wrap_connector(dial)
        };
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(h2)
            .build(connector))
    }

    /// Sends `request` (its URI already absolute: `http://` for plain, `https://` for mesh),
    /// streaming both bodies; the request body is cut at the body limit (413). An HTTP/2
    /// request (gRPC) goes out over HTTP/2 — h2c with prior knowledge, or `h2` by ALPN over
    /// mTLS — so that its trailers survive; any other as HTTP/1.1.
    pub async fn send<B>(&self, request: Request<B>, via: Via<'_>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let limits = &self.limits;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            return too_large();
        }
        let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        let h2 = request.version() == http::Version::HTTP_2;
        let request = request.map(|body| -> ProxyBody { Limited::new(body, limit).boxed() });
        let sent = match self.mesh_for(via, h2) {
            None => {
                let client = if h2 { &self.plain_h2 } else { &self.plain };
                tokio::time::timeout(limits.upstream_timeout, client.request(request)).await
            }
            Some(Ok(client)) => {
                tokio::time::timeout(limits.upstream_timeout, client.request(request)).await
            }
            Some(Err(e)) => return json_error(StatusCode::BAD_GATEWAY, "tls_config", &e),
        };
        match sent {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = IdleBody::new(
                    body.map_err(Into::into).boxed(),
                    limits.upstream_idle_timeout,
                );
                Response::from_parts(parts, body.boxed())
            }
            Ok(Err(e)) => {
                if error_in_chain::<http_body_util::LengthLimitError>(&e).is_some() {
                    return too_large();
                }
                if let Some(refused) = error_in_chain::<AppNotOwned>(&e) {
                    return crate::app_uid::refusal(refused);
                }
                let reason = error_chain(&e);
                tracing::warn!(error = %reason, "upstream request failed");
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    &format!("upstream request failed: {reason}"),
                )
            }
            Err(_) => json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
        }
    }
}

/// A plaintext client (HTTP/2 with prior knowledge when `h2`), checking who holds the app's
/// port when `owners` is set.
fn plain_client(
    limits: &Limits,
    owners: Option<Arc<AppOwners>>,
    h2: bool,
) -> Client<AppDial, ProxyBody> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(limits.handshake_timeout));
    tcp.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .http2_only(h2)
        .build(AppDial::new(tcp, owners))
}

fn too_large() -> Response<ProxyBody> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "max_body_bytes",
        "the request body is larger than the configured limit",
    )
}

/// The first error of type `E` in `e`'s source chain.
fn error_in_chain<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = e.source();
    while let Some(err) = current {
        parts.push(err.to_string());
        current = err.source();
    }
    parts.join(": ")
}

/// A response body that fails when the upstream sends nothing for `idle`: a stalled upstream
/// does not hold the client's connection (and ours) forever, and the audit records the
/// response as aborted.
struct IdleBody {
    inner: ProxyBody,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleBody {
    fn new(inner: ProxyBody, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

/// The upstream went quiet mid-response.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} (upstream idle timeout)")]
pub struct UpstreamIdle(Duration);

impl http_body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::warn!(idle = ?this.idle, "upstream stalled mid-response; aborting it");
                    Poll::Ready(Some(Err(Box::new(UpstreamIdle(this.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn a_body_that_stalls_fails_after_the_idle_timeout_and_a_flowing_one_does_not() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<bytes::Bytes>, crate::http::BoxError>,
        >(4);
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let body = IdleBody::new(StreamBody::new(stream).boxed(), Duration::from_millis(100));
        let mut body = std::pin::pin!(body);
        for _ in 0..3 {
            tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"x"))))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(60)).await;
            let frame = body.as_mut().frame().await.expect("a frame");
            assert!(frame.is_ok(), "frames 60 ms apart are not idle");
        }
        let stalled = tokio::time::timeout(Duration::from_secs(2), body.as_mut().frame()).await;
        let error = stalled.expect("it fails, not hangs").expect("an item");
        assert!(error.is_err());
        drop(tx);
    }
}
