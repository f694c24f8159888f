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
//!   list watch` on that `resourceName`) and writes each version to the sidecar's snapshot file
//!   (0600, atomically), which the sidecar already watches; so the sidecar's request path is the
//!   same as with `--snapshot FILE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    /// The sidecar's snapshot file could not be written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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

/// Keeps a sidecar's snapshot file equal to the published snapshot; dropping it stops.
pub struct SnapshotMirror {
    task: JoinHandle<()>,
}

impl Drop for SnapshotMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SnapshotMirror {
    /// Watches the ConfigMap in `namespace` and writes each version to `path`; returns once
    /// the first one is written (the sidecar must start with a snapshot), logging while it
    /// waits. A ConfigMap without a usable snapshot is logged and the file keeps the last one.
    pub async fn start(client: kube::Client, namespace: &str, path: PathBuf) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={SNAPSHOT_CONFIGMAP}"));
        let (written, mut first) = watch::channel(false);
        let namespace = namespace.to_owned();
        let task = tokio::spawn(async move {
            let mut objects =
                std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
            while let Some(object) = objects.next().await {
                let result = match object {
                    Ok(map) => mirror_one(&map, &path),
                    Err(e) => {
                        tracing::warn!(%namespace, error = %e, "watching {SNAPSHOT_CONFIGMAP}; retrying");
                        continue;
                    }
                };
                match result {
                    Ok(version) => {
                        tracing::info!(version, "published snapshot mirrored");
                        written.send_replace(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "published snapshot not usable; keeping the last one")
                    }
                }
            }
        });
        while tokio::time::timeout(std::time::Duration::from_secs(10), first.wait_for(|w| *w))
            .await
            .is_err()
        {
            tracing::warn!(
                "no snapshot published yet in ConfigMap {SNAPSHOT_CONFIGMAP} (the controller writes it)"
            );
        }
        Self { task }
    }
}

/// Writes the snapshot in `map` to `path` (tmp file + rename, 0600); its version.
fn mirror_one(map: &ConfigMap, path: &Path) -> Result<u64, PublishError> {
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(SNAPSHOT_KEY))
        .ok_or_else(|| PublishError::Snapshot(format!("no key {SNAPSHOT_KEY}")))?;
    let snapshot: MeshSnapshot =
        serde_json::from_str(text).map_err(|e| PublishError::Snapshot(e.to_string()))?;
    let file_error = |source| PublishError::File {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("new");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_error)?;
        file.write_all(text.as_bytes()).map_err(file_error)?;
    }
    std::fs::rename(&tmp, path).map_err(file_error)?;
    Ok(snapshot.version())
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
