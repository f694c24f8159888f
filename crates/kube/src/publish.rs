//! The compiled snapshot for sidecars: one ConfigMap the controller writes and every sidecar
//! watches by name (why this and not reflectors in each sidecar: docs/ARCHITECTURE.md, "How
//! the snapshot reaches each party in a cluster").
//!
//! - [`publish_loop`] (the controller's leader): every new snapshot of
//!   [`crate::watch::MeshWatch`], with the delegation header values removed
//!   ([`for_sidecars`]: a sidecar decides, it never injects headers, and a Secret's value must
//!   not land in a ConfigMap), is server-side applied to ConfigMap
//!   [`SNAPSHOT_CONFIGMAP`] in the control namespace, key [`SNAPSHOT_KEY`].
//! - [`SnapshotMirror`] (`warden sidecar --kubernetes`): watches that one object (RBAC: `get
//!   list watch` on that `resourceName`) and hands each usable version to the sidecar in
//!   memory ([`warden_proxy::config::SnapshotSource::Live`]), applied by the same reload as a
//!   `--snapshot FILE` change; nothing is written, so the sidecar runs on a read-only root
//!   filesystem.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_model::MeshSnapshot;

use crate::watch::MeshState;

/// The ConfigMap that carries the sidecars' snapshot.
pub const SNAPSHOT_CONFIGMAP: &str = "warden-mesh-snapshot";
/// Its key: the snapshot as `warden compile` writes it.
pub const SNAPSHOT_KEY: &str = "snapshot.json";
/// The field manager of the controller's writes.
const FIELD_MANAGER: &str = "warden-controller";

/// Publishing or mirroring failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The apiserver refused or could not be reached.
    #[error("ConfigMap {namespace}/{SNAPSHOT_CONFIGMAP}: {source}")]
    Api {
        /// The control namespace.
        namespace: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The snapshot could not be serialised or rebuilt.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// `snapshot` as a sidecar may see it: every tool's delegation header values removed.
pub fn for_sidecars(snapshot: &MeshSnapshot) -> Result<MeshSnapshot, PublishError> {
    let mut data = snapshot.data().clone();
    for tool in data.agents.iter_mut().flat_map(|a| a.tools.iter_mut()) {
        tool.headers.clear();
    }
    MeshSnapshot::new(data).map_err(PublishError::Snapshot)
}

/// Applies `snapshot` (already [`for_sidecars`]) to the ConfigMap in `namespace`.
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    snapshot: &MeshSnapshot,
) -> Result<(), PublishError> {
    let json =
        serde_json::to_string(snapshot).map_err(|e| PublishError::Snapshot(e.to_string()))?;
    let object = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(SNAPSHOT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "warden".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(SNAPSHOT_KEY.to_owned(), json)])),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(
        SNAPSHOT_CONFIGMAP,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|source| PublishError::Api {
        namespace: namespace.into(),
        source,
    })?;
    Ok(())
}

/// Publishes every new snapshot of `states` until the channel closes (the controller runs it
/// while it leads). Only a change of content is published: the ConfigMap is itself one of
/// the objects the watch compiles (a `headersFrom` source could be any ConfigMap), so writing
/// every recompile would feed itself. A failed write is logged and retried after 5 s or with
/// the next change.
pub async fn publish_loop(
    client: kube::Client,
    namespace: String,
    mut states: watch::Receiver<Arc<MeshState>>,
) {
    // The last published content, with its version number zeroed.
    let mut published: Option<String> = None;
    let mut failed = false;
    loop {
        let snapshot = states.borrow_and_update().snapshot.clone();
        if let Some(snapshot) = snapshot {
            failed = match publish_if_changed(&client, &namespace, &snapshot, &mut published).await
            {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish the snapshot; retrying");
                    true
                }
            };
        }
        let retry = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            () = retry, if failed => {}
        }
    }
}

async fn publish_if_changed(
    client: &kube::Client,
    namespace: &str,
    snapshot: &MeshSnapshot,
    published: &mut Option<String>,
) -> Result<(), PublishError> {
    let stripped = for_sidecars(snapshot)?;
    let content = serde_json::to_string(&stripped.clone().with_version(0))
        .map_err(|e| PublishError::Snapshot(e.to_string()))?;
    if published.as_ref() == Some(&content) {
        return Ok(());
    }
    publish(client, namespace, &stripped).await?;
    tracing::info!(
        version = snapshot.version(),
        "snapshot published for sidecars"
    );
    *published = Some(content);
    Ok(())
}

/// [`publish_loop`] while `leader` says this replica leads (the controller's Lease), stopped
/// when it stops leading; returns when either channel closes.
pub async fn publish_while_leading(
    client: kube::Client,
    namespace: String,
    states: watch::Receiver<Arc<MeshState>>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if leader.wait_for(|leading| *leading).await.is_err() {
            return;
        }
        let publishing = publish_loop(client.clone(), namespace.clone(), states.clone());
        tokio::select! {
            () = publishing => return,
            lost = leader.wait_for(|leading| !*leading) => if lost.is_err() { return },
        }
    }
}

/// Hands a sidecar each published snapshot in memory (no file: the injected sidecar runs on a
/// read-only root filesystem); dropping it stops the watch.
pub struct SnapshotMirror {
    task: JoinHandle<()>,
    origin: String,
    snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
}

impl Drop for SnapshotMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SnapshotMirror {
    /// Watches the ConfigMap in `namespace`; returns once the first usable snapshot has
    /// arrived (the sidecar must start with one), logging while it waits. A ConfigMap without
    /// a usable snapshot is logged and the last one stays.
    pub async fn start(client: kube::Client, namespace: &str) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={SNAPSHOT_CONFIGMAP}"));
        let (latest, mut snapshots) = watch::channel(None);
        let origin = format!("ConfigMap {namespace}/{SNAPSHOT_CONFIGMAP}");
        let task = tokio::spawn(mirror(api, config, origin.clone(), latest));
        while tokio::time::timeout(
            std::time::Duration::from_secs(10),
            snapshots.wait_for(Option::is_some),
        )
        .await
        .is_err()
        {
            tracing::warn!("no snapshot published yet in {origin} (the controller writes it)");
        }
        Self {
            task,
            origin,
            snapshots,
        }
    }

    /// The sidecar's snapshot source fed by this mirror (the first snapshot already in it).
    pub fn source(&self) -> warden_proxy::config::SnapshotSource {
        warden_proxy::config::SnapshotSource::Live {
            origin: self.origin.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// Sends every usable version of the watched ConfigMap to `latest`.
async fn mirror(
    api: Api<ConfigMap>,
    config: watcher::Config,
    origin: String,
    latest: watch::Sender<Option<Arc<MeshSnapshot>>>,
) {
    let mut objects = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(object) = objects.next().await {
        match object.map(|map| published_snapshot(&map, &origin)) {
            Ok(Ok(snapshot)) => {
                tracing::info!(version = snapshot.version(), "published snapshot received");
                latest.send_replace(Some(Arc::new(snapshot)));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "published snapshot not usable; keeping the last one")
            }
            Err(e) => tracing::warn!(%origin, error = %e, "watching the snapshot; retrying"),
        }
    }
}

/// The snapshot in `map` (key [`SNAPSHOT_KEY`]); errors name `origin`.
fn published_snapshot(map: &ConfigMap, origin: &str) -> Result<MeshSnapshot, PublishError> {
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(SNAPSHOT_KEY))
        .ok_or_else(|| PublishError::Snapshot(format!("{origin}: no key {SNAPSHOT_KEY}")))?;
    serde_json::from_str(text).map_err(|e| {
        PublishError::Snapshot(format!(
            "{origin} key {SNAPSHOT_KEY}: not a Warden snapshot: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_get_the_policy_without_delegation_header_values() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/cross-namespace-a2a");
        let manifests = warden_model::loader::load_path(&dir).expect("the example loads");
        let snapshot = warden_model::compile(&manifests, 3).expect("the example compiles");
        let orchestrator = snapshot.agent("team-alpha", "orchestrator").expect("agent");
        assert!(!orchestrator.tools[0].headers.is_empty());
        let stripped = for_sidecars(&snapshot).expect("rebuilt");
        let text = serde_json::to_string(&stripped).expect("json");
        assert!(!text.contains("delegated-by-team-alpha"), "{text}");
        assert_eq!(stripped.version(), 3);
        let specialist = stripped.agent("team-beta", "specialist").expect("agent");
        assert_eq!(specialist.mtls_mode, warden_model::MtlsMode::Strict);
    }
}
