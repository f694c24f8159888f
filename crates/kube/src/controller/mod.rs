//! `warden controller`: keeps every Agent's status, and its workload's mode annotation, equal
//! to what the compiled mesh says.
//!
//! One level-triggered loop rather than a per-object work queue: any change (the compiled
//! mesh from [`crate::watch`], an EndpointSlice, a workload, a CSIDriver, the Workload API
//! coming up, leadership) schedules a pass over every Agent, debounced by a few milliseconds,
//! plus a periodic pass that retries failed card fetches. A pass computes each Agent's desired
//! status ([`status::desired_status`]) and workload template ([`rollout::template_patch`]) and
//! writes only what differs, so passes are cheap when nothing changed and a Namespace relabel
//! reaches `Accepted` within the debounce plus one round trip.
//!
//! - [`status`]: the desired status, a pure function;
//! - [`card`]: where and how each card is fetched (mTLS, proving the agent's own ID);
//! - [`spire`]: SPIRE detection;
//! - [`rollout`]: the pod-template annotation;
//! - [`leader`]: the Lease;
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.

pub mod admin;
pub mod card;
pub mod leader;
pub mod rollout;
pub mod spire;
pub mod status;

mod reconcile;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::Api;
use tokio::sync::{Notify, watch};

use crate::watch::{MeshWatch, WatchOptions, reflect};

/// How `warden controller` runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The controller's namespace (its Lease lives there).
    pub namespace: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    pub identity: String,
    /// The controller's Workload API (`unix:///…`): its SVID for mTLS card fetches, and a
    /// sign of SPIRE.
    pub workload_api: Option<String>,
    /// `--enable-verified-fetch`: false fetches cards over plain HTTP only (the kill switch).
    pub verified_fetch: bool,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// The periodic pass (retries failed card fetches, re-checks SPIRE).
    pub resync: Duration,
    /// How long to wait after a change for more before a pass.
    pub debounce: Duration,
}

impl ControllerConfig {
    /// The defaults for `namespace` and `identity`.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            workload_api: None,
            verified_fetch: true,
            admin: None,
            resync: Duration::from_secs(5),
            debounce: Duration::from_millis(20),
        }
    }
}

/// The controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The admin port.
    #[error(transparent)]
    Bind(#[from] warden_proxy::server::BindError),
}

/// The caches the controller needs besides the mesh's.
#[derive(Clone)]
struct ClusterStores {
    slices: kube::runtime::reflector::Store<EndpointSlice>,
    deployments: kube::runtime::reflector::Store<Deployment>,
    stateful_sets: kube::runtime::reflector::Store<StatefulSet>,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    let metrics = Arc::new(admin::ControllerMetrics::default());
    let mut drain = warden_proxy::server::Drain::default();
    if let Some(addr) = config.admin {
        let local = admin::serve(addr, metrics.clone(), &mut drain).await?;
        tracing::info!(admin = %local, "controller admin port: /healthz /readyz /metrics");
    }
    let mesh = MeshWatch::start(
        client.clone(),
        WatchOptions {
            debounce: config.debounce,
        },
    );
    let kick = Arc::new(Notify::new());
    let on_change = {
        let kick = kick.clone();
        move || kick.notify_one()
    };
    let mut tasks = Vec::new();
    let stores = ClusterStores {
        slices: reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks),
        deployments: reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks),
        stateful_sets: reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks),
    };
    let csi: kube::runtime::reflector::Store<CSIDriver> =
        reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks);
    let detector = Arc::new(spire::SpireDetector::new(
        csi.clone(),
        config.workload_api.clone(),
    ));
    tasks.push(tokio::spawn({
        let (detector, on_change) = (detector.clone(), on_change.clone());
        async move { detector.connect_loop(on_change).await }
    }));
    let (leader_tx, leader_rx) = watch::channel(false);
    let lease = leader::LeaseSettings::new(&config.namespace, &config.identity);
    tasks.push(tokio::spawn(leader::run(
        client.clone(),
        lease.clone(),
        leader_tx,
    )));
    let reconciler = reconcile::Reconciler::new(
        client.clone(),
        &config,
        mesh.stores().agents.clone(),
        stores,
        detector,
        metrics.clone(),
    );
    tokio::select! {
        _ = passes(&mesh, csi, reconciler, kick, leader_rx, &config, &metrics) => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    for task in tasks {
        task.abort();
    }
    leader::release(client, &lease).await;
    drain.shutdown().await;
    Ok(())
}

/// The loop of passes: after any change (debounced), and every `resync`.
async fn passes(
    mesh: &MeshWatch,
    csi: kube::runtime::reflector::Store<CSIDriver>,
    mut reconciler: reconcile::Reconciler,
    kick: Arc<Notify>,
    mut leader: watch::Receiver<bool>,
    config: &ControllerConfig,
    metrics: &admin::ControllerMetrics,
) {
    mesh.synced().await;
    reconciler.wait_until_ready().await;
    let _ = csi.wait_until_ready().await;
    metrics.synced.store(true, Ordering::Relaxed);
    tracing::info!("caches synced");
    let mut states = mesh.subscribe();
    loop {
        let leading = *leader.borrow_and_update();
        metrics.leader.set(i64::from(leading));
        if leading {
            // Not borrowed across the pass: a held borrow blocks the compile loop's send.
            let state = states.borrow_and_update().clone();
            reconciler.pass(&state).await;
            metrics.reconciled_as_leader.store(true, Ordering::Relaxed);
        } else {
            metrics.reconciled_as_leader.store(false, Ordering::Relaxed);
        }
        tokio::select! {
            _ = kick.notified() => {}
            _ = states.changed() => {}
            _ = leader.changed() => {}
            _ = tokio::time::sleep(config.resync) => {}
        }
        tokio::time::sleep(config.debounce).await;
    }
}
