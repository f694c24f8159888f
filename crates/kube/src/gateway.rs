//! `warden gateway --kubernetes`: the gateway's policy snapshot and agents' addresses, live
//! from the cluster.
//!
//! The snapshot is the one [`crate::watch::MeshWatch`] compiles from the cluster's Agents,
//! MeshConfig, Namespaces, Secrets and ConfigMaps — the same compile as the controller's and
//! local mode's — and the addresses come from the agents' EndpointSlices
//! ([`crate::endpoints`]). Each change reaches the gateway's next request: a Namespace
//! relabel or a target Agent edit changes the decision, a rotated `headersFrom` Secret
//! changes the forwarded header, within the watch's latency plus its debounce (tens of
//! milliseconds), never at some later reconcile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use warden_model::MeshSnapshot;
use warden_proxy::gateway::Source;

use crate::endpoints::EndpointWatch;
use crate::watch::{MeshState, MeshWatch, WatchOptions};

/// How often the wait for the first sync says it is still waiting.
const SYNC_REPORT: Duration = Duration::from_secs(10);

/// The cluster as the gateway sees it; dropping it stops every watch.
pub struct ClusterSource {
    _mesh: MeshWatch,
    endpoints: EndpointWatch,
    snapshot: watch::Receiver<Option<Arc<MeshSnapshot>>>,
}

impl ClusterSource {
    /// Starts the watches and waits until the caches have synced and the mesh compiled once
    /// (a gateway that listened earlier would answer 404 for agents that exist), logging
    /// while it waits.
    pub async fn start(client: kube::Client) -> Self {
        let mesh = MeshWatch::start(client.clone(), WatchOptions::default());
        let endpoints = EndpointWatch::start(client);
        loop {
            match tokio::time::timeout(SYNC_REPORT, mesh.synced()).await {
                Ok(state) => {
                    log_state(&state);
                    break;
                }
                Err(_) => tracing::warn!(
                    "still waiting for the cluster's Agents, MeshConfigs, Namespaces, Secrets \
                     and ConfigMaps to be listed (RBAC: get list watch on each)"
                ),
            }
        }
        let snapshot = follow_snapshot(mesh.subscribe());
        Self {
            _mesh: mesh,
            snapshot,
            endpoints,
        }
    }

    /// The gateway's source: the snapshot and addresses, each replaced as the cluster changes.
    pub fn source(&self) -> Source {
        Source::Live {
            snapshot: self.snapshot.clone(),
            endpoints: self.endpoints.subscribe(),
        }
    }
}

fn log_state(state: &MeshState) {
    match &state.snapshot {
        Some(snapshot) => tracing::info!(
            version = snapshot.version(),
            agents = snapshot.agents().len(),
            errors = state.errors.len(),
            "the cluster's mesh compiled"
        ),
        None => tracing::warn!(
            errors = state.errors.len(),
            "the cluster's mesh does not compile yet; every route is unknown until it does"
        ),
    }
}

/// The snapshot of each compile, published only when it is a new one (a compile that failed
/// keeps the last good snapshot, which is not news).
fn follow_snapshot(
    mut states: watch::Receiver<Arc<MeshState>>,
) -> watch::Receiver<Option<Arc<MeshSnapshot>>> {
    let first = states.borrow_and_update().snapshot.clone();
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let next = states.borrow_and_update().snapshot.clone();
            tx.send_if_modified(|current| {
                let same = match (current.as_ref(), next.as_ref()) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    *current = next;
                }
                !same
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}
