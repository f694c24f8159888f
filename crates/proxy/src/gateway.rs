//! The A2A gateway: `/api/a2a/{namespace}/{agent}/…` on one port.
//!
//! This file only assembles: the gateway is the [`crate::pipeline`] configured for it —
//! audit lines, routing by path, mTLS-or-bearer authentication, A2A classification, the
//! target's policy, delegation headers and `x-warden-caller`, and forwarding over mTLS as the
//! gateway to the target's sidecar, which must prove the target's SPIFFE ID. The snapshot a
//! request starts with is the one it finishes with; a new snapshot applies to the next
//! request.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use warden_identity::tls::{ClientAuth, server_config};
use warden_identity::{Authorizer, TrustBundle, TrustBundleSet, TrustDomain};
use warden_model::{MeshSnapshot, MtlsMode};

use crate::admin::start_admin_and_identity;
use crate::audit::{Audit, Sink};
use crate::authn::{JwtConfig, OidcIssuer};
use crate::config::{DynamicConfig, IdentityConfig, Limits};
use crate::endpoints::{EndpointMap, Endpoints};
use crate::error::SidecarError;
use crate::forward::Upstreams;
use crate::gateway_names::HostNameCheck;
use crate::metrics::Metrics;
use crate::pipeline::body::BodyRules;
use crate::pipeline::card::Cards;
use crate::pipeline::forward::{Destination, Forward};
use crate::pipeline::{
    Listener, Policy, Steps, admit, audit, authenticate, authorize, classify, delegate, route,
};
use crate::server::{Drain, Server, bind, watch_file};

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Nowhere.
    None,
    /// Standard output (`--audit-log -`).
    Stdout,
    /// A file, rotated past `max_bytes` to `<file>.1`, `<file>.2` …
    File {
        /// The file.
        path: PathBuf,
        /// Rotation threshold.
        max_bytes: u64,
        /// Rotated files kept.
        max_files: u32,
    },
}

/// Where the gateway's policy snapshot and the agents' addresses come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A compiled snapshot file, watched (a change applies to the next request), and fixed
    /// addresses (`--endpoint`).
    Files {
        /// The compiled snapshot (`warden compile`).
        snapshot: PathBuf,
        /// `namespace/name` → `host:port` of the agent's sidecar.
        endpoints: HashMap<String, String>,
    },
    /// A cluster (`warden gateway --kubernetes`): the snapshot compiled from watched
    /// resources and the agents' EndpointSlices, each replaced as the cluster changes. The
    /// gateway serves nothing until the first snapshot arrives (every route is 404 before).
    Live {
        /// The latest compiled snapshot; `None` until the first one.
        snapshot: watch::Receiver<Option<Arc<MeshSnapshot>>>,
        /// The agents' ready addresses.
        endpoints: watch::Receiver<Arc<EndpointMap>>,
    },
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The listener (`127.0.0.1:8083`).
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: Option<SocketAddr>,
    /// SVID source (the gateway's identity is `…/ns/warden-system/sa/warden-gateway`).
    pub identity: IdentityConfig,
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// Permissive (mTLS and plaintext on the port) or Strict (mTLS only).
    pub mode: MtlsMode,
    /// Where the snapshot and the agents' addresses come from.
    pub source: Source,
    /// The audit log.
    pub audit: AuditTarget,
    /// A SPIFFE bundle (JSON) with JWT authorities, to accept JWT-SVIDs.
    pub jwt_bundle: Option<PathBuf>,
    /// The audience a JWT-SVID must carry.
    pub jwt_audience: String,
    /// The URL clients reach the gateway at, for card rewriting; default: the scheme and
    /// authority each client used.
    pub public_url: Option<String>,
    /// Limits.
    pub limits: Limits,
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests.
pub async fn run_gateway(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SidecarError> {
    let policy = initial_policy(&config).map_err(SidecarError::Config)?;
    let metrics = Arc::new(Metrics::default());
    let mut drain = Drain::default();
    let identity =
        start_admin_and_identity(config.admin, &config.identity, &metrics, &drain).await?;
    // Client certificates are optional: a caller without one is anonymous (or brings a JWT).
    let tls = server_config(
        identity.clone(),
        Authorizer::any_in([config.trust_domain.clone()]),
        ClientAuth::Optional,
    )
    .map_err(|e| SidecarError::Identity(e.to_string()))?;
    let sink = match &config.audit {
        AuditTarget::None => Sink::Discard,
        AuditTarget::Stdout => Sink::Stdout,
        AuditTarget::File {
            path,
            max_bytes,
            max_files,
        } => Sink::file(path.clone(), *max_bytes, *max_files)
            .map_err(|e| SidecarError::Config(format!("audit log {}: {e}", path.display())))?,
    };
    let listener = bind(config.listen, "gateway").await?;
    let agents = policy.snapshot.as_ref().map_or(0, |s| s.agents().len());
    tracing::info!(listen = %config.listen, mode = %config.mode, agents, "gateway listening");
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    let (host_names, host_names_task) =
        HostNameCheck::start(identity.clone(), policy.clone(), metrics.clone());
    let endpoints = follow_source(&config, &policy, &metrics, &host_names)?;
    let steps = Steps {
        record: audit::Recorder::Gateway(Arc::new(Audit {
            sink,
            metrics: metrics.clone(),
        })),
        admit: admit::Admission {
            underscore_headers: config.limits.underscore_headers,
            recheck_mode: false,
        },
        route: route::Routing::Gateway,
        authenticate: authenticate::Authn::Gateway,
        classify: classify::Classifier::Gateway(BodyRules::new(
            config.limits.max_body_bytes,
            config.limits.body_read_timeout,
            config.limits.max_buffered_bytes,
        )),
        authorize: authorize::Authz::Gateway,
        delegate: delegate::Delegation::Gateway,
        forward: Forward::new(
            Upstreams::new(identity, config.limits.clone()),
            Destination::Gateway {
                endpoints,
                cards: Cards::new(config.public_url.clone(), config.listen.to_string()),
            },
        ),
    };
    let server = Arc::new(Server::new(
        Some(TlsAcceptor::from(Arc::new(tls))),
        metrics,
        config.limits.clone(),
    ));
    drain.listen(
        server,
        Arc::new(Listener::new(steps, policy, None)),
        listener,
    );
    shutdown.await;
    drain.shutdown().await;
    host_names_task.abort();
    Ok(())
}

/// The policy to start with: the snapshot file's, or (live) whatever snapshot has arrived.
fn initial_policy(config: &GatewayConfig) -> Result<Policy, String> {
    match &config.source {
        Source::Files { snapshot, .. } => load_policy(config, &read_snapshot(snapshot)?),
        Source::Live { snapshot, .. } => match snapshot.borrow().clone() {
            Some(snapshot) => load_policy(config, &snapshot),
            None => Ok(policy_without_snapshot(config)),
        },
    }
}

/// Keeps the policy and the agents' addresses current from the configured source; the
/// address table the forwarding step reads. Each new snapshot is also checked against the
/// gateway's host names.
fn follow_source(
    config: &GatewayConfig,
    policy: &Arc<ArcSwap<Policy>>,
    metrics: &Arc<Metrics>,
    host_names: &Arc<HostNameCheck>,
) -> Result<Arc<Endpoints>, SidecarError> {
    let (config, policy, metrics) = (config.clone(), policy.clone(), metrics.clone());
    let host_names = host_names.clone();
    match config.source.clone() {
        Source::Files {
            snapshot,
            endpoints,
        } => {
            let endpoints = Endpoints::fixed(endpoints).map_err(SidecarError::Config)?;
            watch_file(snapshot.clone(), move || {
                let next = read_snapshot(&snapshot).and_then(|s| load_policy(&config, &s));
                install(next, &policy, &metrics, &host_names);
            });
            Ok(Arc::new(endpoints))
        }
        Source::Live {
            snapshot,
            endpoints,
        } => {
            let table = Arc::new(Endpoints::from_map((*endpoints.borrow()).as_ref().clone()));
            tokio::spawn(follow_endpoints(endpoints, table.clone()));
            tokio::spawn(follow_snapshots(
                snapshot, config, policy, metrics, host_names,
            ));
            Ok(table)
        }
    }
}

/// Applies every new snapshot from the cluster to the next request.
async fn follow_snapshots(
    mut snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
    config: GatewayConfig,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    host_names: Arc<HostNameCheck>,
) {
    while snapshots.changed().await.is_ok() {
        let next = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = next {
            install(
                load_policy(&config, &snapshot),
                &policy,
                &metrics,
                &host_names,
            );
        }
    }
    tracing::warn!("the cluster's snapshot source ended; keeping the last snapshot");
}

/// Applies every new EndpointSlice table to the next request.
async fn follow_endpoints(
    mut tables: watch::Receiver<Arc<EndpointMap>>,
    endpoints: Arc<Endpoints>,
) {
    while tables.changed().await.is_ok() {
        let table = tables.borrow_and_update().clone();
        tracing::debug!(agents = table.len(), "agent endpoints updated");
        endpoints.replace(table);
    }
}

fn install(
    next: Result<Policy, String>,
    policy: &ArcSwap<Policy>,
    metrics: &Metrics,
    host_names: &HostNameCheck,
) {
    match next {
        Ok(next) => {
            metrics.reloads.inc();
            let version = next.snapshot.as_ref().map_or(0, |s| s.version());
            tracing::info!(version, "snapshot loaded; applies to the next request");
            policy.store(Arc::new(next));
            host_names.run();
        }
        Err(e) => tracing::warn!(error = %e, "snapshot not usable; keeping the last good one"),
    }
}

/// The compiled snapshot in the file at `path`; errors name the file.
pub(crate) fn read_snapshot(path: &Path) -> Result<Arc<MeshSnapshot>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let snapshot: MeshSnapshot = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a Warden snapshot: {e}", path.display()))?;
    Ok(Arc::new(snapshot))
}

/// The policy requests are decided with under `snapshot`: its JWT issuers' keys (a
/// `jwksFile` is relative to the snapshot file's directory, or to the working directory for a
/// cluster's snapshot) and the gateway's own settings.
fn load_policy(config: &GatewayConfig, snapshot: &Arc<MeshSnapshot>) -> Result<Policy, String> {
    let base = match &config.source {
        Source::Files { snapshot, .. } => snapshot.parent().map(Path::to_path_buf),
        Source::Live { .. } => None,
    };
    let mut issuers = HashMap::new();
    for issuer in &snapshot.data().jwt_issuers {
        let Some(file) = &issuer.jwks_file else {
            tracing::warn!(issuer = %issuer.issuer, "jwksUrl is not fetched yet; use jwksFile");
            continue;
        };
        let jwks_path = base
            .as_ref()
            .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
        let text = std::fs::read_to_string(&jwks_path)
            .map_err(|e| format!("issuer {}: {}: {e}", issuer.issuer, jwks_path.display()))?;
        let keys = serde_json::from_str(&text).map_err(|e| {
            format!(
                "issuer {}: {}: not a JWKS: {e}",
                issuer.issuer,
                jwks_path.display()
            )
        })?;
        issuers.insert(
            issuer.issuer.clone(),
            OidcIssuer {
                audiences: issuer.audiences.clone(),
                keys,
            },
        );
    }
    let svid_bundles = match &config.jwt_bundle {
        Some(path) => Some(TrustBundleSet::single(
            TrustBundle::load(config.trust_domain.clone(), path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    crate::admin_status::snapshot_loaded(snapshot.version());
    let mut policy = policy_without_snapshot(config);
    policy.snapshot = Some(snapshot.clone());
    policy.jwt = JwtConfig {
        svid_bundles,
        svid_audience: config.jwt_audience.clone(),
        issuers,
    };
    Ok(policy)
}

/// The gateway's settings with no snapshot yet: every route is unknown (404).
fn policy_without_snapshot(config: &GatewayConfig) -> Policy {
    Policy {
        snapshot: None,
        settings: DynamicConfig {
            mode: config.mode,
            allow_ids: Vec::new(),
            allow_namespaces: Vec::new(),
            gateway_ids: Vec::new(),
        },
        jwt: JwtConfig {
            svid_bundles: None,
            svid_audience: config.jwt_audience.clone(),
            issuers: HashMap::new(),
        },
    }
}
