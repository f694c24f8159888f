//! SVIDs from files in spiffe-helper's layout: `svid.pem`, `svid_key.pem`, `svid_bundle.pem`.
//!
//! spiffe-helper rewrites the three files one after another and not atomically, so a reader
//! can see a new certificate with the old key. The source therefore waits until the directory
//! has been quiet for a moment (debounce), checks that key and certificate belong together,
//! and only then swaps; anything wrong keeps the last good SVID in use and is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{IdentityCell, SvidError, SvidSource, X509Identity};
use crate::bundle::{TrustBundle, TrustBundleSet};
use crate::file_events::may_change_content;
use crate::pem::{SVID_BUNDLE_FILE, SVID_CERT_FILE, SVID_KEY_FILE};

/// How long the directory must be quiet before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A re-read even without events, in case the watcher missed one.
const POLL: Duration = Duration::from_secs(10);

/// An SVID source that watches a spiffe-helper directory.
pub struct FileSource {
    cell: Arc<IdentityCell>,
    task: JoinHandle<()>,
}

impl FileSource {
    /// Loads the files in `dir` (if they are there and good) and watches for changes. Missing
    /// or bad files are not an error here: the source stays not-ready until good ones appear.
    /// Needs a tokio runtime.
    pub fn watch(dir: &Path) -> Result<Self, SvidError> {
        let dir = dir.to_owned();
        let cell = Arc::new(IdentityCell::default());
        let (tx, mut rx) = mpsc::channel::<()>(16);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && may_change_content(&event.kind)
                {
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| SvidError::Source(format!("cannot watch {}: {e}", dir.display())))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| SvidError::Source(format!("cannot create {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| SvidError::Source(format!("cannot watch {}: {e}", dir.display())))?;
        reload(&dir, &cell);
        let task = tokio::spawn({
            let cell = cell.clone();
            async move {
                let _watcher = watcher; // lives as long as the task
                loop {
                    // Wait for a change (or the poll interval), then for quiet.
                    let _ = tokio::time::timeout(POLL, rx.recv()).await;
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    reload(&dir, &cell);
                }
            }
        });
        Ok(Self { cell, task })
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SvidSource for FileSource {
    fn current(&self) -> Option<Arc<X509Identity>> {
        self.cell.current()
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.cell.updates()
    }
}

fn reload(dir: &Path, cell: &IdentityCell) {
    match load_dir(dir) {
        Ok(identity) => {
            let unchanged = cell
                .current()
                .is_some_and(|cur| cur.chain() == identity.chain());
            if !unchanged {
                tracing::info!(dir = %dir.display(), id = %identity.spiffe_id(), not_after = identity.not_after(), "loaded SVID from files");
                cell.store(identity);
            }
        }
        Err(e) => {
            if cell.current().is_some() {
                tracing::warn!(dir = %dir.display(), error = %e, "SVID files are not usable; keeping the last good SVID");
            } else {
                tracing::warn!(dir = %dir.display(), error = %e, "SVID files are not usable yet; not ready");
            }
        }
    }
}

/// Reads and checks one spiffe-helper directory.
pub(crate) fn load_dir(dir: &Path) -> Result<X509Identity, SvidError> {
    let read = |name: &str| -> Result<(PathBuf, Vec<u8>), SvidError> {
        let path = dir.join(name);
        std::fs::read(&path)
            .map(|b| (path.clone(), b))
            .map_err(|e| SvidError::Source(format!("{}: {e}", path.display())))
    };
    let (cert_path, cert_pem) = read(SVID_CERT_FILE)?;
    let (key_path, key_pem) = read(SVID_KEY_FILE)?;
    let (bundle_path, bundle_pem) = read(SVID_BUNDLE_FILE)?;
    let chain = crate::pem::certificates(&cert_pem)
        .map_err(|e| SvidError::Source(format!("{}: {e}", cert_path.display())))?;
    let key = crate::pem::private_key(&key_pem)
        .map_err(|e| SvidError::Source(format!("{}: {e}", key_path.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| SvidError::Source(format!("{}: no certificate", cert_path.display())))?;
    let trust_domain = crate::svid::spiffe_id_of(leaf)
        .map(|id| id.trust_domain())
        .ok_or_else(|| {
            SvidError::Source(format!(
                "{}: the leaf carries no SPIFFE ID",
                cert_path.display()
            ))
        })?;
    let bundle = TrustBundle::from_pem(
        trust_domain,
        &bundle_pem,
        &bundle_path.display().to_string(),
    )
    .map_err(|e| SvidError::Source(e.to_string()))?;
    X509Identity::new(chain, key, Arc::new(TrustBundleSet::single(bundle))).map_err(|e| match e {
        SvidError::KeyMismatch => SvidError::Source(format!(
            "{} does not match {} (half-written rotation?)",
            key_path.display(),
            cert_path.display()
        )),
        other => SvidError::Source(format!("{}: {other}", cert_path.display())),
    })
}
