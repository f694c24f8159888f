//! What every Warden listener does before a request reaches its handler: a connection limit,
//! the first-byte sniff against the mode current at accept time, the mTLS handshake, HTTP/1.1
//! or HTTP/2, and draining on shutdown. The sidecar's inbound and egress ports and the
//! gateway all run on this.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use warden_identity::file_events::may_change_content;
use warden_identity::tls::PeerRejected;
use warden_model::MtlsMode;

use crate::authz::Peer;
use crate::config::Limits;
use crate::conn::{Closed, Connections, InFlight, Registered};
pub use crate::error::BindError;
use crate::http::ProxyBody;
use crate::metrics::Metrics;

/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A request handler behind a listener.
pub trait Service: Send + Sync + 'static {
    /// The mode for a connection accepted now.
    fn mode(&self) -> MtlsMode;

    /// Handles one request of a connection from `peer` accepted under `mode`.
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Arc<Peer>,
        mode: MtlsMode,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

/// What a listener needs besides its handler.
pub struct Server {
    /// TLS for connections that start with a ClientHello; `None` serves plaintext only.
    pub tls: Option<TlsAcceptor>,
    /// Where handshake failures are counted.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// The only OS users whose loopback connections this listener serves (the sidecar's
    /// egress: one agent's app, not every local process); empty serves everyone.
    pub allowed_uids: Vec<u32>,
    http: auto::Builder<TokioExecutor>,
}

impl Server {
    /// A server with HTTP limits from `limits`.
    pub fn new(tls: Option<TlsAcceptor>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .keep_alive_interval(Some(limits.idle_timeout / 2))
            .keep_alive_timeout(limits.idle_timeout / 2);
        Self {
            tls,
            metrics,
            limits,
            allowed_uids: Vec::new(),
            http,
        }
    }

    /// Serves only connections opened by one of `uids` (see [`crate::peer_uid`]; none: every
    /// connection); others are closed before a byte is read and counted as
    /// `warden_connections_closed_total{reason="peer_uid"}`.
    pub fn only_for_uids(mut self, uids: Vec<u32>) -> Self {
        self.allowed_uids = uids;
        self
    }

    /// Whether the connection from `remote` on `tcp` may be served.
    fn admits(&self, tcp: &TcpStream, remote: SocketAddr) -> bool {
        if self.allowed_uids.is_empty() {
            return true;
        }
        let owner = tcp
            .local_addr()
            .ok()
            .and_then(|local| crate::peer_uid::client_uid(local, remote));
        if owner.is_some_and(|uid| self.allowed_uids.contains(&uid)) {
            return true;
        }
        tracing::warn!(%remote, ?owner, allowed = ?self.allowed_uids, "connection refused: opened by another OS user");
        self.metrics.connection_closed(Closed::PeerUid.reason());
        false
    }
}

/// Stops listeners and waits for their connections to finish.
pub struct Drain {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    conn_tx: mpsc::Sender<()>,
    conn_rx: mpsc::Receiver<()>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Default for Drain {
    fn default() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (conn_tx, conn_rx) = mpsc::channel(1);
        Self {
            stop_tx,
            stop_rx,
            conn_tx,
            conn_rx,
            loops: Vec::new(),
        }
    }
}

impl Drain {
    /// A receiver that turns true on shutdown.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    /// Serves `listener` with `service` until shutdown.
    pub fn listen<S: Service>(
        &mut self,
        server: Arc<Server>,
        service: Arc<S>,
        listener: TcpListener,
    ) {
        let slots = Slots {
            limit: Arc::new(Semaphore::new(server.limits.max_connections)),
            open: Arc::new(Connections::default()),
        };
        self.loops.push(tokio::spawn(accept_loop(
            server,
            service,
            listener,
            slots,
            self.stop_rx.clone(),
            self.conn_tx.clone(),
        )));
    }

    /// Stops accepting, lets in-flight requests finish (at most [`DRAIN_TIMEOUT`]).
    pub async fn shutdown(self) {
        let Self {
            stop_tx,
            conn_tx,
            mut conn_rx,
            loops,
            ..
        } = self;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        drop(conn_tx);
        if tokio::time::timeout(DRAIN_TIMEOUT, conn_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "drain timed out after {DRAIN_TIMEOUT:?}; closing remaining connections"
            );
        }
    }
}

/// Resolves once the stop flag is set (the borrow of the flag ends here, not at the caller).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds a TCP listener, naming it in the error.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, what, source })
}

/// A listener's connection permits and its open connections.
struct Slots {
    limit: Arc<Semaphore>,
    open: Arc<Connections>,
}

impl Slots {
    /// A permit for a connection just accepted: at once if one is free; else the connection
    /// idle the longest is asked to close, and the new one waits for its permit.
    async fn permit(&self, stop: &mut watch::Receiver<bool>) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.limit.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.open.shed_oldest_idle();
        tokio::select! {
            permit = self.limit.clone().acquire_owned() => permit.ok(),
            _ = stopped(stop) => None,
        }
    }
}

async fn accept_loop<S: Service>(
    server: Arc<Server>,
    service: Arc<S>,
    listener: TcpListener,
    slots: Slots,
    mut stop: watch::Receiver<bool>,
    conn_tx: mpsc::Sender<()>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let Some(permit) = slots.permit(&mut stop).await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (server, service, stop, guard) = (
            server.clone(),
            service.clone(),
            stop.clone(),
            conn_tx.clone(),
        );
        let registered = slots.open.open();
        tokio::spawn(async move {
            connection(server, service, tcp, remote, stop, registered).await;
            drop(permit);
            drop(guard);
        });
    }
}

async fn connection<S: Service>(
    server: Arc<Server>,
    service: Arc<S>,
    tcp: TcpStream,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
    registered: Registered,
) {
    if !server.admits(&tcp, remote) {
        return;
    }
    // The mode is read once per connection: a change applies to new connections.
    let mode = service.mode();
    let limits = &server.limits;
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(limits.handshake_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        Ok(_) => return, // closed or failed before sending anything
        Err(_) => {
            server.metrics.handshake_failed("timeout");
            return;
        }
    };
    let tls = match (&server.tls, mode, is_tls) {
        (_, MtlsMode::Strict, false) => {
            tracing::debug!(%remote, "plaintext connection refused: Strict mode");
            server.metrics.handshake_failed("plaintext_in_strict");
            return;
        }
        (None, _, true) | (_, MtlsMode::Disabled, true) => {
            tracing::debug!(%remote, "TLS connection refused: this port serves plaintext");
            server.metrics.handshake_failed("tls_in_disabled");
            return;
        }
        (_, _, false) => None,
        (Some(tls), _, true) => Some(tls.clone()),
    };
    let Some(tls) = tls else {
        let peer = Arc::new(Peer::anonymous());
        serve(server, service, tcp, peer, mode, stop, registered).await;
        return;
    };
    let stream = match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = PeerRejected::from_io_error(&e).map_or("handshake_error", |r| r.reason());
            tracing::info!(%remote, reason, error = %e, "mTLS handshake refused");
            server.metrics.handshake_failed(reason);
            return;
        }
        Err(_) => {
            server.metrics.handshake_failed("timeout");
            return;
        }
    };
    let conn = stream.get_ref().1;
    let peer = Arc::new(Peer {
        server_name: conn.server_name().map(str::to_owned),
        ..Peer::verified(
            warden_identity::tls::peer_spiffe_id(conn),
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| hex::encode(Sha256::digest(leaf))),
        )
    });
    serve(server, service, stream, peer, mode, stop, registered).await;
}

async fn serve<S: Service, I>(
    server: Arc<Server>,
    service: Arc<S>,
    io: I,
    peer: Arc<Peer>,
    mode: MtlsMode,
    mut stop: watch::Receiver<bool>,
    registered: Registered,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = registered.activity.clone();
    let handler = service_fn(move |req: Request<Incoming>| {
        let (service, peer) = (service.clone(), peer.clone());
        let in_flight = activity.start();
        async move {
            let response = service.call(req, peer, mode).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::boxed(body, in_flight)))
        }
    });
    let conn = server.http.serve_connection(TokioIo::new(io), handler);
    tokio::pin!(conn);
    let limits = &server.limits;
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        closed = registered.activity.expired(limits.header_read_timeout, limits.idle_timeout) => {
            server.metrics.connection_closed(closed.reason());
            conn.as_mut().graceful_shutdown();
            // Nothing is in flight: a peer that does not finish the close is cut off.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// A response body that keeps its request counted as in flight until it ends.
struct Tracked {
    inner: ProxyBody,
    _in_flight: InFlight,
}

impl Tracked {
    fn boxed(inner: ProxyBody, in_flight: InFlight) -> ProxyBody {
        use http_body_util::BodyExt;
        Tracked {
            inner,
            _in_flight: in_flight,
        }
        .boxed()
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Calls `on_change` (debounced) whenever the content of `path` changes: written, created
/// or replaced (the parent directory is watched, so editors that replace the file are seen
/// too). Reads of the file — `cat`, or another process reloading it — are not changes, and
/// an event that leaves the content as it was (a `touch`, a rewrite of the same bytes) calls
/// nothing.
pub fn watch_file(path: std::path::PathBuf, on_change: impl Fn() + Send + 'static) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let name = path.file_name().map(|n| n.to_owned());
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && may_change_content(&event.kind)
            && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            let _ = tx.try_send(());
        }
    });
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let watcher = watcher.and_then(|mut w| {
        notify::Watcher::watch(&mut w, dir, notify::RecursiveMode::NonRecursive).map(|()| w)
    });
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot watch; changes need a restart");
            return;
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut seen = content_digest(&path);
        while rx.recv().await.is_some() {
            while let Ok(Some(())) =
                tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
            {}
            let now = content_digest(&path);
            if now == seen {
                tracing::debug!(file = %path.display(), "file event without a content change");
                continue;
            }
            seen = now;
            on_change();
        }
    });
}

/// SHA-256 of a file's bytes (`None` while it cannot be read).
fn content_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}
