//! SVIDs straight from the embedded CA, in-process, re-issued at half-life.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{IdentityCell, SvidError, SvidSource, X509Identity};
use crate::ca::CertificateAuthority;
use crate::id::SpiffeId;

/// An SVID source backed by an in-process [`CertificateAuthority`].
pub struct CaSource {
    cell: Arc<IdentityCell>,
    task: JoinHandle<()>,
}

impl CaSource {
    /// Issues an SVID for `id` now and re-issues it every half `ttl`. Needs a tokio runtime.
    pub fn start(
        ca: Arc<CertificateAuthority>,
        id: SpiffeId,
        ttl: Duration,
    ) -> Result<Self, SvidError> {
        let issue = {
            let ca = ca.clone();
            let id = id.clone();
            move || -> Result<X509Identity, SvidError> {
                let svid = ca
                    .issue_x509(&id, ttl)
                    .map_err(|e| SvidError::Source(e.to_string()))?;
                X509Identity::new(
                    svid.chain.clone(),
                    svid.private_key(),
                    Arc::new(ca.bundle_set()),
                )
            }
        };
        let cell = IdentityCell::with(issue()?);
        let task = tokio::spawn({
            let cell = cell.clone();
            async move {
                loop {
                    tokio::time::sleep(ttl / 2).await;
                    match issue() {
                        Ok(identity) => cell.store(identity),
                        Err(e) => {
                            tracing::error!(%id, error = %e, "re-issuing SVID failed; keeping the current one")
                        }
                    }
                }
            }
        });
        Ok(Self { cell, task })
    }
}

impl Drop for CaSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SvidSource for CaSource {
    fn current(&self) -> Option<Arc<X509Identity>> {
        self.cell.current()
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.cell.updates()
    }
}
