//! The sidecar: one mesh-facing port, a localhost egress port, an admin port.
//!
//! A connection's path: accept → (connection limit) → peek the first byte within the
//! handshake timeout → by the mode current *at accept time*: TLS (0x16) → mTLS handshake with
//! the current SVID, client SVID verified → HTTP/1.1 or HTTP/2 → per request: strip identity
//! headers, resolve the caller (gateway-forwarded only from gateway IDs), authorize, set XFCC,
//! stream to the app and back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use warden_identity::source::{FileSource, SvidSource, WorkloadApiSource};
use warden_identity::tls::{ClientAuth, PeerRejected, client_config, server_config};
use warden_identity::{Authorizer, SpiffeId};
use warden_model::policy::{CARD_METHOD, Caller, decide};
use warden_model::{MeshSnapshot, MtlsMode};

use crate::authz::{Peer, Verdict, authorize_by_flags, resolve_caller};
use crate::config::{DynamicConfig, FileConfig, IdentityConfig, SidecarConfig, SnapshotConfig};
use crate::http::{
    CALLER_HEADER, IDENTITY_HEADERS, ProxyBody, full, json_error, jsonrpc_error, jsonrpc_id,
    strip_hop_by_hop, strip_inbound_headers, xfcc,
};
use crate::metrics::{Metrics, RequestLabels, status_class};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SVID source could not start.
    #[error("identity: {0}")]
    Identity(String),
    /// The config file is unusable.
    #[error("{0}")]
    Config(String),
}

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a denied request's body is read to find a JSON-RPC id.
const DENY_BODY_PEEK: usize = 64 * 1024;

type MeshClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

struct Sidecar {
    config: SidecarConfig,
    identity: Arc<dyn SvidSource>,
    dynamic: ArcSwap<DynamicConfig>,
    tls: TlsAcceptor,
    metrics: Arc<Metrics>,
    plain_client: Client<HttpConnector, ProxyBody>,
    /// mTLS clients by the server identity they expect; built on first use.
    mesh_clients: ArcSwap<HashMap<SpiffeId, Arc<MeshClient>>>,
    http: auto::Builder<TokioExecutor>,
    /// The mesh policy, when a snapshot is configured; swapped whole on every good reload.
    snapshot: ArcSwapOption<MeshSnapshot>,
}

/// Runs a sidecar until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SidecarError> {
    let metrics = Arc::new(Metrics::default());
    let file = match &config.config_file {
        Some(path) => {
            Some(FileConfig::load(path).map_err(|e| SidecarError::Config(e.to_string()))?)
        }
        None => None,
    };
    let mut dynamic = config.flags.resolve(file.as_ref());
    let snapshot = match &config.snapshot {
        Some(snap) => {
            let loaded = load_snapshot(snap).map_err(SidecarError::Config)?;
            dynamic = apply_snapshot(&config, dynamic, &loaded, snap);
            Some(Arc::new(loaded))
        }
        None => None,
    };

    // Admin first, so that /readyz answers 503 while the identity loads.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, mut conn_rx) = mpsc::channel::<()>(1);
    let identity_slot: Arc<ArcSwap<Option<Arc<dyn SvidSource>>>> =
        Arc::new(ArcSwap::from_pointee(None));
    if let Some(addr) = config.admin {
        let listener = bind(addr, "admin").await?;
        tokio::spawn(serve_admin(
            listener,
            metrics.clone(),
            identity_slot.clone(),
            stop_rx.clone(),
        ));
    }

    let identity: Arc<dyn SvidSource> = match &config.identity {
        IdentityConfig::SvidDir(dir) => {
            Arc::new(FileSource::watch(dir).map_err(|e| SidecarError::Identity(e.to_string()))?)
        }
        IdentityConfig::WorkloadApi(endpoint) => Arc::new(
            WorkloadApiSource::connect(endpoint.as_deref())
                .await
                .map_err(|e| SidecarError::Identity(e.to_string()))?,
        ),
    };
    identity_slot.store(Arc::new(Some(identity.clone())));

    let tls_config = server_config(
        identity.clone(),
        Authorizer::any_in([config.trust_domain.clone()]),
        ClientAuth::Required,
    )
    .map_err(|e| SidecarError::Identity(e.to_string()))?;
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.idle_timeout)
        .max_buf_size(config.limits.max_header_bytes.max(8192));
    http.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.limits.idle_timeout / 2))
        .keep_alive_timeout(config.limits.idle_timeout / 2);
    let mut plain_connector = HttpConnector::new();
    plain_connector.set_connect_timeout(Some(config.limits.handshake_timeout));
    plain_connector.set_nodelay(true);
    let inbound = bind(config.inbound, "inbound").await?;
    let egress = match config.egress {
        Some(addr) => Some(bind(addr, "egress").await?),
        None => None,
    };
    tracing::info!(inbound = %config.inbound, app = %config.app, egress = ?config.egress, mode = %dynamic.mode, "sidecar listening");
    let sidecar = Arc::new(Sidecar {
        identity,
        dynamic: ArcSwap::from_pointee(dynamic),
        tls: TlsAcceptor::from(Arc::new(tls_config)),
        metrics,
        plain_client: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(plain_connector),
        mesh_clients: ArcSwap::from_pointee(HashMap::new()),
        http,
        snapshot: ArcSwapOption::new(snapshot),
        config,
    });
    if let Some(path) = sidecar.config.config_file.clone() {
        let target = sidecar.clone();
        watch_file(path, move || target.reload_config());
    }
    if let Some(snap) = sidecar.config.snapshot.clone() {
        let target = sidecar.clone();
        watch_file(snap.path.clone(), move || target.reload_snapshot(&snap));
    }
    let expiry = tokio::spawn({
        let sidecar = sidecar.clone();
        async move {
            loop {
                sidecar.update_expiry_gauge();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });

    let limit = Arc::new(Semaphore::new(sidecar.config.limits.max_connections));
    let mut loops = vec![tokio::spawn(accept_loop(
        sidecar.clone(),
        inbound,
        Direction::Inbound,
        limit.clone(),
        stop_rx.clone(),
        conn_tx.clone(),
    ))];
    if let Some(listener) = egress {
        let limit = Arc::new(Semaphore::new(sidecar.config.limits.max_connections));
        loops.push(tokio::spawn(accept_loop(
            sidecar.clone(),
            listener,
            Direction::Egress,
            limit,
            stop_rx.clone(),
            conn_tx.clone(),
        )));
    }
    drop(conn_tx);
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, conn_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; closing remaining connections");
    }
    expiry.abort();
    Ok(())
}

/// Resolves once the stop flag is set (the borrow of the flag ends here, not at the caller).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, SidecarError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SidecarError::Bind { addr, what, source })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Egress,
}

async fn accept_loop(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    direction: Direction,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    conn_tx: mpsc::Sender<()>,
) {
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
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
        let _ = tcp.set_nodelay(true);
        let sidecar = sidecar.clone();
        let stop = stop.clone();
        let guard = conn_tx.clone();
        tokio::spawn(async move {
            match direction {
                Direction::Inbound => sidecar.inbound_connection(tcp, remote, stop).await,
                Direction::Egress => {
                    let peer = Arc::new(Peer {
                        id: None,
                        cert_hash: None,
                    });
                    sidecar
                        .clone()
                        .serve(tcp, peer, Direction::Egress, MtlsMode::Disabled, stop)
                        .await
                }
            }
            drop(permit);
            drop(guard);
        });
    }
}

impl Sidecar {
    async fn inbound_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        stop: watch::Receiver<bool>,
    ) {
        // The mode is read once per connection: a change applies to new connections.
        let mode = self.dynamic.load().mode;
        let limits = &self.config.limits;
        let mut first = [0u8; 1];
        let is_tls =
            match tokio::time::timeout(limits.handshake_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => first[0] == 0x16,
                Ok(_) => return, // closed or failed before sending anything
                Err(_) => {
                    self.metrics.handshake_failed("timeout");
                    return;
                }
            };
        match (mode, is_tls) {
            (MtlsMode::Strict, false) => {
                tracing::debug!(%remote, "plaintext connection refused: Strict mode");
                self.metrics.handshake_failed("plaintext_in_strict");
            }
            (MtlsMode::Disabled, true) => {
                tracing::debug!(%remote, "TLS connection refused: Disabled mode");
                self.metrics.handshake_failed("tls_in_disabled");
            }
            (_, false) => {
                let peer = Arc::new(Peer {
                    id: None,
                    cert_hash: None,
                });
                self.serve(tcp, peer, Direction::Inbound, mode, stop).await;
            }
            (_, true) => {
                let accepted =
                    tokio::time::timeout(limits.handshake_timeout, self.tls.accept(tcp)).await;
                let tls = match accepted {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let reason = PeerRejected::from_io_error(&e)
                            .map_or("handshake_error", |r| r.reason());
                        tracing::info!(%remote, reason, error = %e, "mTLS handshake refused");
                        self.metrics.handshake_failed(reason);
                        return;
                    }
                    Err(_) => {
                        self.metrics.handshake_failed("timeout");
                        return;
                    }
                };
                let conn = tls.get_ref().1;
                let peer = Arc::new(Peer {
                    id: warden_identity::tls::peer_spiffe_id(conn),
                    cert_hash: conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| hex::encode(Sha256::digest(leaf))),
                });
                self.serve(tls, peer, Direction::Inbound, mode, stop).await;
            }
        }
    }

    async fn serve<I>(
        self: Arc<Self>,
        io: I,
        peer: Arc<Peer>,
        direction: Direction,
        mode: MtlsMode,
        mut stop: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let peer = peer.clone();
            async move {
                let response = match direction {
                    Direction::Inbound => handler.inbound(req, &peer, mode).await,
                    Direction::Egress => handler.egress(req).await,
                };
                Ok::<_, Infallible>(response)
            }
        });
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
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
        }
    }

    fn count(
        &self,
        direction: &'static str,
        mode: MtlsMode,
        verdict: &Verdict,
        status: StatusCode,
    ) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                direction,
                mode: mode.as_str(),
                decision: if verdict.allowed { "allow" } else { "deny" },
                rule: verdict.rule,
                status: status_class(status),
            })
            .inc();
    }

    async fn inbound(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        mode: MtlsMode,
    ) -> Response<ProxyBody> {
        // The settings this request started with, kept for the whole request.
        let dynamic = self.dynamic.load_full();
        let (caller, forwarded) = resolve_caller(peer, req.headers().get(CALLER_HEADER), &dynamic);
        let verdict = match (self.snapshot.load_full(), &self.config.snapshot) {
            (Some(snapshot), Some(snap)) => {
                let method = if req.method() == http::Method::GET && is_card_path(req.uri().path())
                {
                    CARD_METHOD
                } else {
                    CALL_METHOD
                };
                let d = decide(&snapshot, &caller, &snap.namespace, &snap.name, method);
                Verdict {
                    allowed: d.allowed,
                    rule: d.rule.name(),
                    reason: d.reason,
                }
            }
            _ => authorize_by_flags(&caller, &dynamic, self.config.trust_domain.name(), mode),
        };
        let (mut parts, body) = req.into_parts();
        strip_inbound_headers(&mut parts.headers);
        if !verdict.allowed {
            tracing::info!(caller = %caller, rule = verdict.rule, path = %parts.uri.path(), "request denied");
            let response = deny(&parts, body, &verdict).await;
            self.count("inbound", mode, &verdict, response.status());
            return response;
        }
        if let Caller::Spiffe(id) = &caller
            && let Some(own) = self.identity.current()
            && let Some(value) = xfcc(
                own.spiffe_id(),
                if forwarded {
                    None
                } else {
                    peer.cert_hash.as_deref()
                },
                id,
            )
        {
            parts.headers.insert("x-forwarded-client-cert", value);
        }
        if peer.id.is_none() && mode == MtlsMode::Permissive {
            self.metrics.plaintext_requests.inc();
        }
        // HTTP/2 carries the authority in the URI, not in `Host`; the app gets it as `Host`.
        if !parts.headers.contains_key(http::header::HOST)
            && let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(http::header::HOST, host);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = match format!("http://{}{path}", self.config.app).parse() {
            Ok(uri) => uri,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request target is not a valid path",
                );
            }
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let response = self.forward(parts, body, ForwardVia::Plain).await;
        self.count("inbound", mode, &verdict, response.status());
        response
    }

    async fn egress(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let dynamic = self.dynamic.load_full();
        let (mut parts, body) = req.into_parts();
        for name in IDENTITY_HEADERS {
            parts.headers.remove(name);
        }
        strip_hop_by_hop(&mut parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (authority, expected) = match parts.uri.authority() {
            // absolute-form: proxy to the named host.
            Some(authority) => (
                authority.to_string(),
                self.config.mesh_peers.get(authority.as_str()).cloned(),
            ),
            // origin-form: to the gateway.
            None => match &self.config.gateway_url {
                Some(gateway) => (
                    gateway
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    dynamic.gateway_ids.first().cloned(),
                ),
                None => {
                    return json_error(
                        StatusCode::BAD_GATEWAY,
                        "no_gateway",
                        "origin-form request but no --gateway-url is configured",
                    );
                }
            },
        };
        let verdict = Verdict {
            allowed: true,
            rule: "egress",
            reason: "",
        };
        let (scheme, via) = match (&expected, dynamic.mode) {
            (Some(id), MtlsMode::Permissive | MtlsMode::Strict) => match self.mesh_client(id) {
                Ok(client) => ("https", ForwardVia::Mesh(client)),
                Err(e) => return json_error(StatusCode::BAD_GATEWAY, "tls_config", &e),
            },
            _ => ("http", ForwardVia::Plain),
        };
        parts.uri = match format!("{scheme}://{authority}{path}").parse() {
            Ok(uri) => uri,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "cannot build the upstream URI",
                );
            }
        };
        parts.version = Version::HTTP_11;
        if let Ok(host) = HeaderValue::from_str(&authority) {
            parts.headers.insert(http::header::HOST, host);
        }
        let response = self.forward(parts, body, via).await;
        self.count("egress", dynamic.mode, &verdict, response.status());
        response
    }

    /// The pooled mTLS client that expects `id` of the server.
    fn mesh_client(&self, id: &SpiffeId) -> Result<Arc<MeshClient>, String> {
        if let Some(client) = self.mesh_clients.load().get(id) {
            return Ok(client.clone());
        }
        let tls = client_config(self.identity.clone(), Authorizer::exactly(id.clone()))
            .map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.config.limits.handshake_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client: Arc<MeshClient> = Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        );
        self.mesh_clients.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(id.clone()).or_insert_with(|| client.clone());
            map
        });
        Ok(client)
    }

    async fn forward(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        via: ForwardVia,
    ) -> Response<ProxyBody> {
        let limits = &self.config.limits;
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "max_body_bytes",
                "the request body is larger than the configured limit",
            );
        }
        let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        let body: ProxyBody = Limited::new(body, limit).boxed();
        let request = Request::from_parts(parts, body);
        let sent = match via {
            ForwardVia::Plain => {
                tokio::time::timeout(limits.upstream_timeout, self.plain_client.request(request))
                    .await
            }
            ForwardVia::Mesh(client) => {
                tokio::time::timeout(limits.upstream_timeout, client.request(request)).await
            }
        };
        match sent {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(Into::into).boxed())
            }
            Ok(Err(e)) => {
                if error_chain_has::<http_body_util::LengthLimitError>(&e) {
                    return json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "max_body_bytes",
                        "the request body is larger than the configured limit",
                    );
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

    fn update_expiry_gauge(&self) {
        if let Some(identity) = self.identity.current() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.metrics
                .svid_expiry_seconds
                .set(identity.not_after() - now);
        }
    }
}

enum ForwardVia {
    Plain,
    Mesh(Arc<MeshClient>),
}

fn error_chain_has<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<E>() {
            return true;
        }
        current = err.source();
    }
    false
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

/// A 403 naming the rule: a JSON-RPC error object when the request was JSON-RPC.
async fn deny(
    parts: &http::request::Parts,
    body: Incoming,
    verdict: &Verdict,
) -> Response<ProxyBody> {
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && parts.method == http::Method::POST {
        let collected = Limited::new(body, DENY_BODY_PEEK).collect().await;
        if let Some(id) = collected
            .ok()
            .map(|c| c.to_bytes())
            .as_deref()
            .and_then(jsonrpc_id)
        {
            return jsonrpc_error(StatusCode::FORBIDDEN, id, verdict.rule, verdict.reason);
        }
    }
    json_error(StatusCode::FORBIDDEN, verdict.rule, verdict.reason)
}

/// Calls `on_change` (debounced) whenever `path` is written, created or replaced. The parent
/// directory is watched, so editors that replace the file are seen too.
fn watch_file(path: std::path::PathBuf, on_change: impl Fn() + Send + 'static) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let name = path.file_name().map(|n| n.to_owned());
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
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
        while rx.recv().await.is_some() {
            while let Ok(Some(())) =
                tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
            {}
            on_change();
        }
    });
}

/// The pseudo-method a sidecar decides calls by (it does not parse A2A bodies; the gateway
/// does).
const CALL_METHOD: &str = "call";

fn is_card_path(path: &str) -> bool {
    path.ends_with("/.well-known/agent-card.json") || path.ends_with("/.well-known/agent.json")
}

fn load_snapshot(snap: &SnapshotConfig) -> Result<MeshSnapshot, String> {
    let text =
        std::fs::read_to_string(&snap.path).map_err(|e| format!("{}: {e}", snap.path.display()))?;
    let snapshot: MeshSnapshot = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a Warden snapshot: {e}", snap.path.display()))?;
    if snapshot.agent(&snap.namespace, &snap.name).is_none() {
        return Err(format!(
            "{}: no agent {}/{} in snapshot v{}",
            snap.path.display(),
            snap.namespace,
            snap.name,
            snapshot.version()
        ));
    }
    Ok(snapshot)
}

/// The snapshot's word on mode (unless `--mode` was given) and on which gateway to trust.
fn apply_snapshot(
    config: &SidecarConfig,
    mut dynamic: DynamicConfig,
    snapshot: &MeshSnapshot,
    snap: &SnapshotConfig,
) -> DynamicConfig {
    if config.flags.mode.is_none()
        && let Some(agent) = snapshot.agent(&snap.namespace, &snap.name)
    {
        dynamic.mode = agent.mtls_mode;
    }
    let gateway = &snapshot.control_plane().gateway;
    if !dynamic.gateway_ids.contains(gateway) {
        dynamic.gateway_ids.push(gateway.clone());
    }
    dynamic
}

impl Sidecar {
    fn reload_config(&self) {
        let Some(path) = &self.config.config_file else {
            return;
        };
        match FileConfig::load(path) {
            Ok(file) => {
                let mut next = self.config.flags.resolve(Some(&file));
                if let (Some(snapshot), Some(snap)) =
                    (self.snapshot.load_full(), &self.config.snapshot)
                {
                    next = apply_snapshot(&self.config, next, &snapshot, snap);
                }
                self.store_dynamic(next, "config file");
            }
            Err(e) => {
                tracing::warn!(error = %e, "config file not usable; keeping the current settings")
            }
        }
    }

    fn reload_snapshot(&self, snap: &SnapshotConfig) {
        match load_snapshot(snap) {
            Ok(snapshot) => {
                let file = self
                    .config
                    .config_file
                    .as_ref()
                    .and_then(|p| FileConfig::load(p).ok());
                let next = apply_snapshot(
                    &self.config,
                    self.config.flags.resolve(file.as_ref()),
                    &snapshot,
                    snap,
                );
                tracing::info!(version = snapshot.version(), "policy snapshot loaded");
                self.snapshot.store(Some(Arc::new(snapshot)));
                self.store_dynamic(next, "snapshot");
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not usable; keeping the last good one"),
        }
    }

    fn store_dynamic(&self, next: DynamicConfig, source: &str) {
        let current = self.dynamic.load_full();
        if *current != next {
            tracing::info!(source, from = %current.mode, to = %next.mode, "settings changed; they apply to new connections");
            self.dynamic.store(Arc::new(next));
        }
    }
}

async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    identity: Arc<ArcSwap<Option<Arc<dyn SvidSource>>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stopped(&mut stop) => return,
        };
        let metrics = metrics.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let identity = identity.clone();
                async move {
                    let ready = identity
                        .load()
                        .as_ref()
                        .as_ref()
                        .is_some_and(|source| source.current().is_some());
                    let (status, body): (StatusCode, Bytes) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, Bytes::from_static(b"ok\n")),
                        "/readyz" if ready => (StatusCode::OK, Bytes::from_static(b"ready\n")),
                        "/readyz" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Bytes::from_static(b"no SVID loaded yet\n"),
                        ),
                        "/metrics" => (StatusCode::OK, Bytes::from(metrics.encode())),
                        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
                    };
                    let mut response = Response::new(full(body));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
