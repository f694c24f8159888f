//! The current snapshot, swapped atomically and only for a good one.
//!
//! Readers (every request) load an `Arc` without locking and keep it for the whole request,
//! so a swap never changes the rules under a request in flight.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use crate::loader::ModelError;
use crate::snapshot::MeshSnapshot;

/// Holds the last good snapshot.
#[derive(Default)]
pub struct SnapshotStore {
    current: ArcSwapOption<MeshSnapshot>,
    next_version: AtomicU64,
}

impl SnapshotStore {
    /// An empty store: nothing is known until the first good snapshot.
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            next_version: AtomicU64::new(1),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Option<Arc<MeshSnapshot>> {
        self.current.load_full()
    }

    /// Loads and compiles `path`; on success the result becomes current with the next version
    /// number, on failure the current snapshot stays and the errors are returned.
    pub fn reload(&self, path: &Path) -> Result<Arc<MeshSnapshot>, Vec<ModelError>> {
        let manifests = crate::loader::load_path(path)?;
        let version = self.next_version.load(Ordering::Relaxed);
        let snapshot = Arc::new(crate::compile::compile(&manifests, version)?);
        self.next_version.store(version + 1, Ordering::Relaxed);
        self.current.store(Some(snapshot.clone()));
        Ok(snapshot)
    }

    /// Makes an already compiled snapshot current (e.g. one read from a snapshot file).
    pub fn replace(&self, snapshot: MeshSnapshot) -> Arc<MeshSnapshot> {
        let snapshot = Arc::new(snapshot);
        self.current.store(Some(snapshot.clone()));
        snapshot
    }
}
