//! The controller's admin port (plain HTTP, on the data plane's listener code):
//! - `/healthz`: the process serves;
//! - `/readyz`: the caches have synced and, when leader, a reconcile pass has completed since
//!   the leadership began (a follower is ready: it stands by);
//! - `/metrics`: `warden_controller_*`, Prometheus text.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use warden_model::MtlsMode;
use warden_proxy::authz::Peer;
use warden_proxy::http::ProxyBody;

use crate::server::{metrics_response, text};
use warden_proxy::server::{BindError, Drain, Server, Service, bind};

/// Label of a card fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `mtls` or `http`.
    pub transport: &'static str,
    /// `ok` or the problem's reason.
    pub result: &'static str,
}

/// Label of a write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `status`, `workload`, `event`.
    pub object: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The controller's metrics and readiness.
pub struct ControllerMetrics {
    registry: Registry,
    /// Reconcile passes.
    pub reconciles: Counter,
    /// Time of a pass.
    pub reconcile_seconds: Histogram,
    /// Writes to the apiserver, by object and result.
    pub writes: Family<WriteLabels, Counter>,
    /// Card fetches.
    pub card_fetches: Family<FetchLabels, Counter>,
    /// 1 while this replica holds the Lease.
    pub leader: Gauge,
    /// 1 while SPIRE is detected.
    pub spire_available: Gauge,
    /// Errors of the cluster's mesh as it is now (0: it compiles).
    pub mesh_errors: Gauge,
    /// The caches have synced.
    pub synced: AtomicBool,
    /// A pass completed since this replica became leader.
    pub reconciled_as_leader: AtomicBool,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("warden_controller");
        let metrics = Self {
            reconciles: Counter::default(),
            reconcile_seconds: Histogram::new([0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            writes: Family::default(),
            card_fetches: Family::default(),
            leader: Gauge::default(),
            spire_available: Gauge::default(),
            mesh_errors: Gauge::default(),
            synced: AtomicBool::new(false),
            reconciled_as_leader: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconcile passes over every Agent",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of a reconcile pass, card fetches included",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "writes",
            "Writes to the apiserver, by object and result",
            metrics.writes.clone(),
        );
        registry.register(
            "card_fetches",
            "Agent card fetches, by transport and result",
            metrics.card_fetches.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            metrics.leader.clone(),
        );
        registry.register(
            "spire_available",
            "1 while SPIRE is detected",
            metrics.spire_available.clone(),
        );
        registry.register(
            "mesh_errors",
            "Errors of the cluster's mesh objects as they are now; 0 when they compile",
            metrics.mesh_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl ControllerMetrics {
    /// Ready: synced and, when leader, reconciled since.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
            && (self.leader.get() == 0 || self.reconciled_as_leader.load(Ordering::Relaxed))
    }
}

struct AdminService(Arc<ControllerMetrics>);

impl Service for AdminService {
    fn mode(&self) -> MtlsMode {
        MtlsMode::Disabled
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: Arc<Peer>,
        _mode: MtlsMode,
    ) -> Response<ProxyBody> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") if self.0.ready() => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: caches not synced, or leading without a completed reconcile\n",
            ),
            (&Method::GET, "/metrics") => metrics_response(&self.0.registry, &req),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Serves the admin port on `addr` until `drain` shuts down; the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<ControllerMetrics>,
    drain: &mut Drain,
) -> Result<SocketAddr, BindError> {
    let listener = bind(addr, "controller admin").await?;
    let local = listener.local_addr().unwrap_or(addr);
    let server = Arc::new(Server::new(
        None,
        Arc::new(warden_proxy::metrics::Metrics::default()),
        warden_proxy::config::Limits::default(),
    ));
    drain.listen(server, Arc::new(AdminService(metrics)), listener);
    Ok(local)
}
