//! The sidecar: one mesh-facing port, a localhost egress port, an admin port.
//!
//! Connections are accepted by [`crate::server`] (limit, first-byte sniff against the mode at
//! accept time, mTLS handshake, HTTP/1.1 or HTTP/2). Per inbound request: strip identity
//! headers, resolve the caller (gateway-forwarded only from gateway IDs), authorize, set XFCC,
//! stream to the app and back. Per egress request: to the gateway or the named host, over
//! mTLS when an identity is expected of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;
use warden_identity::Authorizer;
use warden_identity::source::{FileSource, SvidSource, WorkloadApiSource};
use warden_identity::tls::{ClientAuth, server_config};
use warden_model::policy::{CARD_METHOD, Caller, decide};
use warden_model::{MeshSnapshot, MtlsMode};

use crate::authz::{Peer, Verdict, authorize_by_flags, resolve_caller};
use crate::config::{DynamicConfig, FileConfig, IdentityConfig, SidecarConfig, SnapshotConfig};
use crate::forward::{Upstreams, Via};
use crate::http::{
    CALLER_HEADER, ProxyBody, XFCC_HEADER, json_error, jsonrpc_error, jsonrpc_id,
    strip_inbound_headers, xfcc,
};
use crate::metrics::{Metrics, RequestLabels, status_class};
use crate::server::{
    BindError, Drain, Server, Service, bind, start_admin_and_identity, watch_file,
};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The SVID source could not start.
    #[error("identity: {0}")]
    Identity(String),
    /// The config or snapshot file is unusable.
    #[error("{0}")]
    Config(String),
}

/// How much of a denied request's body is read to find a JSON-RPC id.
const DENY_BODY_PEEK: usize = 64 * 1024;

struct Sidecar {
    config: SidecarConfig,
    identity: Arc<dyn SvidSource>,
    dynamic: ArcSwap<DynamicConfig>,
    metrics: Arc<Metrics>,
    upstreams: Upstreams,
    /// `--app` as a URI authority, built once rather than per request.
    app_authority: http::uri::Authority,
    /// The mesh policy, when a snapshot is configured; swapped whole on every good reload.
    snapshot: ArcSwapOption<MeshSnapshot>,
}

/// The mesh-facing port.
struct Inbound(Arc<Sidecar>);

impl Service for Inbound {
    fn mode(&self) -> MtlsMode {
        self.0.dynamic.load().mode
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Arc<Peer>,
        mode: MtlsMode,
    ) -> Response<ProxyBody> {
        self.0.inbound(req, &peer, mode).await
    }
}

/// The localhost egress port: plaintext from the app only.
struct Egress(Arc<Sidecar>);

impl Service for Egress {
    fn mode(&self) -> MtlsMode {
        MtlsMode::Disabled
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: Arc<Peer>,
        _mode: MtlsMode,
    ) -> Response<ProxyBody> {
        self.0.egress(req).await
    }
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

    let mut drain = Drain::default();
    let identity =
        start_admin_and_identity(config.admin, &config.identity, &metrics, &drain).await?;

    let tls = server_config(
        identity.clone(),
        Authorizer::any_in([config.trust_domain.clone()]),
        ClientAuth::Required,
    )
    .map_err(|e| SidecarError::Identity(e.to_string()))?;
    let inbound = bind(config.inbound, "inbound").await?;
    let egress = match config.egress {
        Some(addr) => Some(bind(addr, "egress").await?),
        None => None,
    };
    tracing::info!(inbound = %config.inbound, app = %config.app, egress = ?config.egress, mode = %dynamic.mode, "sidecar listening");
    let app_authority = http::uri::Authority::try_from(config.app.to_string())
        .map_err(|e| SidecarError::Config(format!("--app {}: {e}", config.app)))?;
    let sidecar = Arc::new(Sidecar {
        app_authority,
        upstreams: Upstreams::new(identity.clone(), config.limits.clone()),
        identity,
        dynamic: ArcSwap::from_pointee(dynamic),
        metrics: metrics.clone(),
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
    let limits = sidecar.config.limits.clone();
    let mesh = Arc::new(Server::new(
        Some(TlsAcceptor::from(Arc::new(tls))),
        metrics.clone(),
        limits.clone(),
    ));
    drain.listen(mesh, Arc::new(Inbound(sidecar.clone())), inbound);
    if let Some(listener) = egress {
        let local = Arc::new(Server::new(None, metrics, limits));
        drain.listen(local, Arc::new(Egress(sidecar.clone())), listener);
    }
    shutdown.await;
    drain.shutdown().await;
    expiry.abort();
    Ok(())
}

/// Starts the configured SVID source.
pub(crate) async fn start_identity(
    config: &IdentityConfig,
) -> Result<Arc<dyn SvidSource>, SidecarError> {
    Ok(match config {
        IdentityConfig::SvidDir(dir) => {
            Arc::new(FileSource::watch(dir).map_err(|e| SidecarError::Identity(e.to_string()))?)
        }
        IdentityConfig::WorkloadApi(endpoint) => Arc::new(
            WorkloadApiSource::connect(endpoint.as_deref())
                .await
                .map_err(|e| SidecarError::Identity(e.to_string()))?,
        ),
    })
}

impl Sidecar {
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
        if let Caller::Spiffe(id) = &caller {
            let value = if forwarded {
                self.identity
                    .current()
                    .and_then(|own| xfcc(own.spiffe_id(), None, id))
            } else {
                peer.xfcc
                    .get_or_init(|| {
                        let own = self.identity.current()?;
                        xfcc(own.spiffe_id(), peer.cert_hash.as_deref(), id)
                    })
                    .clone()
            };
            if let Some(value) = value {
                parts.headers.insert(XFCC_HEADER.clone(), value);
            }
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
        let uri = std::mem::take(&mut parts.uri).into_parts();
        if let Err(refused) = aim(
            &mut parts,
            uri,
            http::uri::Scheme::HTTP,
            self.app_authority.clone(),
        ) {
            return *refused;
        }
        let response = self
            .upstreams
            .send(Request::from_parts(parts, body), Via::Plain)
            .await;
        self.count("inbound", mode, &verdict, response.status());
        response
    }

    async fn egress(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let dynamic = self.dynamic.load_full();
        let (mut parts, body) = req.into_parts();
        strip_inbound_headers(&mut parts.headers);
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        let (authority, expected) = match uri.authority.take() {
            // absolute-form: proxy to the named host.
            Some(authority) => {
                let expected = self.config.mesh_peers.get(authority.as_str());
                (authority, expected)
            }
            // origin-form: to the gateway.
            None => match self.config.gateway_url.as_ref().and_then(|g| g.authority()) {
                Some(gateway) => (gateway.clone(), dynamic.gateway_ids.first()),
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
        let (scheme, via) = match (expected, dynamic.mode) {
            (Some(id), MtlsMode::Permissive | MtlsMode::Strict) => {
                (http::uri::Scheme::HTTPS, Via::Mesh(id))
            }
            _ => (http::uri::Scheme::HTTP, Via::Plain),
        };
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(http::header::HOST, host);
        }
        if let Err(refused) = aim(&mut parts, uri, scheme, authority) {
            return *refused;
        }
        let response = self
            .upstreams
            .send(Request::from_parts(parts, body), via)
            .await;
        self.count("egress", dynamic.mode, &verdict, response.status());
        response
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

/// Points a request at `scheme://authority` with its own path and query (moved, not copied),
/// as HTTP/1.1; a target that makes no valid URI gets a 400.
fn aim(
    parts: &mut http::request::Parts,
    mut uri: http::uri::Parts,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
) -> Result<(), Box<Response<ProxyBody>>> {
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target is not a valid path",
        ))
    })?;
    parts.version = Version::HTTP_11;
    Ok(())
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
    crate::admin_status::snapshot_loaded(snapshot.version());
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
