//! The sidecar: one mesh-facing port, a localhost egress port, an admin port.
//!
//! This file only assembles: connections are accepted by [`crate::server`] (limit, first-byte
//! sniff against the mode at accept time, mTLS handshake, HTTP/1.1 or HTTP/2), and each port
//! runs the [`crate::pipeline`] configured for it. Inbound: identity headers stripped, the
//! caller resolved (gateway-forwarded only from gateway IDs), decided by the snapshot or the
//! allow lists, XFCC set, streamed to the app and back. Egress: to the gateway or the named
//! host, over mTLS when an identity is expected of it. Mode, allow lists and the snapshot are
//! reloaded from their files, or the snapshot from memory ([`SnapshotSource::Live`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use warden_identity::Authorizer;
use warden_identity::source::SvidSource;
use warden_identity::tls::{ClientAuth, server_config};
use warden_model::{MeshSnapshot, MtlsMode};

use crate::admin::start_admin_and_identity;
use crate::app_uid::AppOwners;
use crate::config::{DynamicConfig, FileConfig, SidecarConfig, SnapshotConfig, SnapshotSource};
pub use crate::error::SidecarError;
use crate::forward::Upstreams;
use crate::gateway::read_snapshot;
use crate::metrics::Metrics;
use crate::pipeline::forward::{Destination, Forward};
use crate::pipeline::{
    Listener, Policy, Steps, admit, audit, authenticate, authorize, classify, delegate, route,
};
use crate::server::{Drain, Server, bind, watch_file};

struct Sidecar {
    config: SidecarConfig,
    identity: Arc<dyn SvidSource>,
    metrics: Arc<Metrics>,
    /// Settings and snapshot; swapped whole on every good reload.
    policy: Arc<ArcSwap<Policy>>,
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
    let mut settings = config.flags.resolve(file.as_ref());
    let snapshot = match &config.snapshot {
        Some(snap) => {
            let loaded = first_snapshot(snap).map_err(SidecarError::Config)?;
            settings = apply_snapshot(&config, settings, &loaded, snap);
            Some(loaded)
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
    tracing::info!(inbound = %config.inbound, app = %config.app, egress = ?config.egress, mode = %settings.mode, "sidecar listening");
    let app_authority = http::uri::Authority::try_from(config.app.to_string())
        .map_err(|e| SidecarError::Config(format!("--app {}: {e}", config.app)))?;
    let policy = Arc::new(ArcSwap::from_pointee(Policy {
        snapshot,
        settings,
        jwt: Default::default(),
    }));
    let sidecar = Arc::new(Sidecar {
        identity,
        metrics: metrics.clone(),
        policy,
        config,
    });
    if let Some(path) = sidecar.config.config_file.clone() {
        let target = sidecar.clone();
        watch_file(path, move || target.reload_config());
    }
    let follow = sidecar.config.snapshot.clone().and_then(|snap| {
        let target = sidecar.clone();
        follow_snapshots(snap, move |snap, next| target.reload_snapshot(snap, next))
    });
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
    let listener = Listener::new(
        sidecar.inbound_steps(app_authority),
        sidecar.policy.clone(),
        None,
    );
    drain.listen(mesh, Arc::new(listener), inbound);
    if let Some(socket) = egress {
        let local = Arc::new(
            Server::new(None, metrics, limits)
                .only_for_uids(sidecar.config.egress_allow_uids.clone()),
        );
        let listener = Listener::new(
            sidecar.egress_steps(),
            sidecar.policy.clone(),
            Some(MtlsMode::Disabled),
        );
        drain.listen(local, Arc::new(listener), socket);
    }
    shutdown.await;
    drain.shutdown().await;
    expiry.abort();
    if let Some(follow) = follow {
        follow.abort();
    }
    Ok(())
}

impl Sidecar {
    /// The mesh port's pipeline: to the app.
    fn inbound_steps(&self, app: http::uri::Authority) -> Steps {
        let agent = self
            .config
            .snapshot
            .as_ref()
            .map(|s| (s.namespace.clone(), s.name.clone()));
        Steps {
            record: audit::Recorder::Inbound(self.metrics.clone()),
            admit: admit::Admission {
                underscore_headers: self.config.limits.underscore_headers,
                recheck_mode: true,
            },
            route: route::Routing::Fixed,
            authenticate: authenticate::Authn::Sidecar,
            classify: classify::Classifier::Agent,
            authorize: authorize::Authz::Sidecar {
                agent,
                trust_domain: self.config.trust_domain.name().to_owned(),
            },
            delegate: delegate::Delegation::Sidecar(self.identity.clone()),
            forward: Forward::new(
                Upstreams::new(self.identity.clone(), self.config.limits.clone()).checking_app(
                    AppOwners::new(
                        app.clone(),
                        self.config.app_uids.clone(),
                        self.metrics.clone(),
                    ),
                ),
                Destination::App(app),
            ),
        }
    }

    /// The egress port's pipeline: the app's calls out.
    fn egress_steps(&self) -> Steps {
        Steps {
            record: audit::Recorder::Egress(self.metrics.clone()),
            admit: admit::Admission {
                underscore_headers: self.config.limits.underscore_headers,
                recheck_mode: false,
            },
            route: route::Routing::Fixed,
            authenticate: authenticate::Authn::Local,
            classify: classify::Classifier::None,
            authorize: authorize::Authz::Egress,
            delegate: delegate::Delegation::None,
            forward: Forward::new(
                Upstreams::new(self.identity.clone(), self.config.limits.clone()),
                Destination::Egress {
                    gateway_url: self.config.gateway_url.clone(),
                    mesh_peers: self.config.mesh_peers.clone(),
                },
            ),
        }
    }

    fn update_expiry_gauge(&self) {
        if let Some(identity) = self.identity.current() {
            self.metrics.set_svid_expiry(identity.not_after());
        }
    }
}

/// The snapshot to start with: the file's, or the one already handed over in memory.
fn first_snapshot(snap: &SnapshotConfig) -> Result<Arc<MeshSnapshot>, String> {
    let snapshot = match &snap.source {
        SnapshotSource::File(path) => read_snapshot(path)?,
        SnapshotSource::Live { origin, snapshots } => snapshots
            .borrow()
            .clone()
            .ok_or_else(|| format!("{origin}: no snapshot yet"))?,
    };
    check_snapshot(snap, snapshot)
}

/// Calls `reload` with every new snapshot of `snap`'s source (a file change: the file read
/// again, or its error; in memory: each value handed over), from a task (returned for the
/// in-memory source, to end with the sidecar) or the file watcher.
fn follow_snapshots(
    snap: SnapshotConfig,
    reload: impl Fn(&SnapshotConfig, Result<Arc<MeshSnapshot>, String>) + Send + Sync + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    match snap.source.clone() {
        SnapshotSource::File(path) => {
            watch_file(path.clone(), move || reload(&snap, read_snapshot(&path)));
            None
        }
        SnapshotSource::Live {
            origin,
            mut snapshots,
        } => Some(tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                let next = snapshots.borrow_and_update().clone();
                if let Some(next) = next {
                    reload(&snap, Ok(next));
                }
            }
            tracing::warn!(%origin, "the snapshot source ended; keeping the last snapshot");
        })),
    }
}

/// `snapshot` if it holds this sidecar's agent (then recorded as the loaded version), else
/// an error naming the source, the agent and the version.
fn check_snapshot(
    snap: &SnapshotConfig,
    snapshot: Arc<MeshSnapshot>,
) -> Result<Arc<MeshSnapshot>, String> {
    if snapshot.agent(&snap.namespace, &snap.name).is_none() {
        return Err(format!(
            "{}: no agent {}/{} in snapshot v{}",
            snap.source,
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
    mut settings: DynamicConfig,
    snapshot: &MeshSnapshot,
    snap: &SnapshotConfig,
) -> DynamicConfig {
    if config.flags.mode.is_none()
        && let Some(agent) = snapshot.agent(&snap.namespace, &snap.name)
    {
        settings.mode = agent.mtls_mode;
    }
    let gateway = &snapshot.control_plane().gateway;
    if !settings.gateway_ids.contains(gateway) {
        settings.gateway_ids.push(gateway.clone());
    }
    settings
}

impl Sidecar {
    fn reload_config(&self) {
        let Some(path) = &self.config.config_file else {
            return;
        };
        match FileConfig::load(path) {
            Ok(file) => {
                let current = self.policy.load_full();
                let mut next = self.config.flags.resolve(Some(&file));
                if let (Some(snapshot), Some(snap)) = (&current.snapshot, &self.config.snapshot) {
                    next = apply_snapshot(&self.config, next, snapshot, snap);
                }
                self.store(current.snapshot.clone(), next, "config file");
            }
            Err(e) => {
                tracing::warn!(error = %e, "config file not usable; keeping the current settings")
            }
        }
    }

    /// Puts `next` in force unless it (or reading it) failed or lacks this sidecar's agent:
    /// then the last good snapshot stays, with a warning.
    fn reload_snapshot(&self, snap: &SnapshotConfig, next: Result<Arc<MeshSnapshot>, String>) {
        match next.and_then(|snapshot| check_snapshot(snap, snapshot)) {
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
                self.store(Some(snapshot), next, "snapshot");
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not usable; keeping the last good one"),
        }
    }

    fn store(&self, snapshot: Option<Arc<MeshSnapshot>>, next: DynamicConfig, source: &str) {
        let current = self.policy.load_full();
        if current.settings != next {
            tracing::info!(source, from = %current.settings.mode, to = %next.mode, "settings changed; they apply to new connections");
        }
        self.metrics.reloads.inc();
        self.policy.store(Arc::new(Policy {
            snapshot,
            settings: next,
            jwt: Default::default(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::example_snapshot;

    const ORIGIN: &str = "ConfigMap warden-system/warden-mesh-snapshot";

    /// An in-memory source for `agent` (NS/NAME) and the sender that feeds it.
    fn live(
        agent: &str,
    ) -> (
        tokio::sync::watch::Sender<Option<Arc<MeshSnapshot>>>,
        SnapshotConfig,
    ) {
        let (feed, snapshots) = tokio::sync::watch::channel(None);
        let (namespace, name) = agent.split_once('/').expect("NS/NAME");
        let snap = SnapshotConfig {
            source: SnapshotSource::Live {
                origin: ORIGIN.into(),
                snapshots,
            },
            namespace: namespace.into(),
            name: name.into(),
        };
        (feed, snap)
    }

    #[test]
    fn an_in_memory_source_starts_only_with_a_snapshot_holding_the_agent() {
        let (feed, snap) = live("team-beta/specialist");
        let error = first_snapshot(&snap).expect_err("nothing handed over yet");
        assert_eq!(error, format!("{ORIGIN}: no snapshot yet"));
        feed.send_replace(Some(example_snapshot()));
        assert!(first_snapshot(&snap).is_ok());

        let (feed, ghost) = live("team-beta/ghost");
        feed.send_replace(Some(example_snapshot()));
        let error = first_snapshot(&ghost).expect_err("no such agent");
        assert!(
            error.starts_with(&format!(
                "{ORIGIN}: no agent team-beta/ghost in snapshot v1"
            )),
            "{error}"
        );
    }

    #[tokio::test]
    async fn each_snapshot_handed_over_in_memory_reaches_the_reload_until_the_source_ends() {
        let (feed, snap) = live("team-beta/specialist");
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let task = follow_snapshots(snap, move |_, next| {
            let _ = seen_tx.send(next.map(|s| s.version()));
        })
        .expect("the in-memory source is followed by a task");
        feed.send_replace(Some(example_snapshot()));
        let first = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        assert_eq!(first.expect("reloaded within 5 s"), Some(Ok(1)));
        // The source ending (the mirror dropped) ends the task; nothing else was reloaded.
        drop(feed);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends with its source")
            .expect("the task did not panic");
        assert_eq!(seen.recv().await, None);
    }
}
