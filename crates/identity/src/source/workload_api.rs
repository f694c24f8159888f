//! SVIDs from the SPIFFE Workload API (SPIRE, or `warden ca serve`), through the `spiffe`
//! crate's `X509Source`, which keeps the stream open and reconnects.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{IdentityCell, SvidError, SvidSource, X509Identity};
use crate::bundle::{TrustBundle, TrustBundleSet};
use crate::id::TrustDomain;

/// An SVID source backed by a Workload API endpoint.
pub struct WorkloadApiSource {
    cell: Arc<IdentityCell>,
    source: spiffe::X509Source,
    task: JoinHandle<()>,
}

impl WorkloadApiSource {
    /// Connects to `endpoint` (`unix:///path/to/socket`), or to `SPIFFE_ENDPOINT_SOCKET` when
    /// `None`, and waits for the first SVID.
    pub async fn connect(endpoint: Option<&str>) -> Result<Self, SvidError> {
        let mut builder = spiffe::X509Source::builder();
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint(endpoint);
        }
        let source = builder
            .build()
            .await
            .map_err(|e| SvidError::Source(format!("Workload API: {e}")))?;
        let cell = Arc::new(IdentityCell::default());
        refresh(&source, &cell)?;
        let mut updates = source.updated();
        let task = tokio::spawn({
            let cell = cell.clone();
            let source = source.clone();
            async move {
                while updates.changed().await.is_ok() {
                    if let Err(e) = refresh(&source, &cell) {
                        tracing::warn!(error = %e, "Workload API sent an unusable SVID; keeping the last good one");
                    }
                }
            }
        });
        Ok(Self { cell, source, task })
    }
}

fn refresh(source: &spiffe::X509Source, cell: &IdentityCell) -> Result<(), SvidError> {
    let context = source
        .x509_context()
        .map_err(|e| SvidError::Source(format!("Workload API: {e}")))?;
    let svid = context
        .default_svid()
        .ok_or_else(|| SvidError::Source("Workload API returned no SVID".into()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let mut bundles = TrustBundleSet::default();
    for (td, bundle) in context.bundle_set().iter() {
        let td = TrustDomain::new(td.as_str()).map_err(|e| SvidError::Source(e.to_string()))?;
        let certs = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let bundle = TrustBundle::from_der(td, certs, "Workload API")
            .map_err(|e| SvidError::Source(e.to_string()))?;
        bundles.insert(bundle);
    }
    cell.store(X509Identity::new(chain, key, Arc::new(bundles))?);
    Ok(())
}

impl Drop for WorkloadApiSource {
    fn drop(&mut self) {
        self.task.abort();
        let source = self.source.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { source.shutdown().await });
        }
    }
}

impl SvidSource for WorkloadApiSource {
    fn current(&self) -> Option<Arc<X509Identity>> {
        self.cell.current()
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.cell.updates()
    }
}
