//! Where a workload's own SVID comes from.
//!
//! Three sources sit behind one trait: the SPIFFE Workload API ([`WorkloadApiSource`], SPIRE in
//! a cluster), spiffe-helper's files ([`FileSource`]), and Warden's embedded CA
//! ([`CaSource`]). Each keeps the current [`X509Identity`] in an [`IdentityCell`] that TLS
//! reads lock-free on every handshake, so a rotation takes effect on the next handshake with
//! no restart and no dropped connection.

mod ca;
mod files;
mod workload_api;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

pub use crate::pem::{SVID_BUNDLE_FILE, SVID_CERT_FILE, SVID_KEY_FILE};
pub use ca::CaSource;
pub use files::FileSource;
pub use workload_api::WorkloadApiSource;

use crate::bundle::TrustBundleSet;
use crate::id::SpiffeId;
use crate::svid::SvidRejection;

/// Why an SVID and key could not be put to use.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The certificate is not a well-formed SVID.
    #[error("not a valid SVID: {0}")]
    Invalid(#[from] SvidRejection),
    /// The private key cannot be used for signing.
    #[error("unusable private key: {0}")]
    BadKey(String),
    /// The private key does not belong to the certificate (e.g. a half-written rotation).
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    /// A source could not start.
    #[error("{0}")]
    Source(String),
}

/// A workload's current identity: its SVID, the key for it, and the bundles it trusts.
pub struct X509Identity {
    id: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    not_before: i64,
    not_after: i64,
    bundles: Arc<TrustBundleSet>,
}

impl std::fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Identity")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Identity {
    /// Checks that `chain` is a well-formed SVID and that `key` belongs to it, then prepares
    /// the signing key once so that handshakes only clone an `Arc`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundles: Arc<TrustBundleSet>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidRejection::Malformed {
            reason: "empty certificate chain".into(),
        })?;
        let (id, not_before, not_after) = crate::svid::check_own_svid(leaf)?;
        let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|e| SvidError::BadKey(e.to_string()))?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        match certified_key.keys_match() {
            // `Unknown`: the key type cannot report its public half, so nothing to compare.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(SvidError::KeyMismatch),
            Err(e) => return Err(SvidError::BadKey(e.to_string())),
        }
        Ok(Self {
            id,
            certified_key: Arc::new(certified_key),
            not_before,
            not_after,
            bundles,
        })
    }

    /// The workload's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// Certificate chain and signing key, ready for rustls.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The leaf and intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// notBefore of the leaf, seconds since the epoch.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// notAfter of the leaf, seconds since the epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The bundles this workload trusts, delivered with the SVID.
    pub fn bundles(&self) -> &Arc<TrustBundleSet> {
        &self.bundles
    }
}

/// A workload identity that is swapped atomically and read without locks.
///
/// Readers (every TLS handshake) take the `Arc` that is current; writers (sources) store a
/// new one and bump a version that watchers can await.
pub struct IdentityCell {
    current: ArcSwapOption<X509Identity>,
    version: watch::Sender<u64>,
}

impl Default for IdentityCell {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            version: watch::channel(0).0,
        }
    }
}

impl IdentityCell {
    /// A cell that already holds an identity; a fixed source, for tests and tools.
    pub fn with(identity: X509Identity) -> Arc<Self> {
        let cell = Arc::new(Self::default());
        cell.store(identity);
        cell
    }

    /// Makes `identity` current for every handshake that starts from now on.
    pub fn store(&self, identity: X509Identity) {
        self.current.store(Some(Arc::new(identity)));
        self.version.send_modify(|v| *v += 1);
    }
}

/// A provider of the workload's current SVID and trust bundles.
pub trait SvidSource: Send + Sync + 'static {
    /// The current identity, or `None` until the first SVID has loaded. Lock-free: called on
    /// every handshake.
    fn current(&self) -> Option<Arc<X509Identity>>;

    /// A receiver whose value changes every time a new identity is stored.
    fn updates(&self) -> watch::Receiver<u64>;
}

impl SvidSource for IdentityCell {
    fn current(&self) -> Option<Arc<X509Identity>> {
        self.current.load_full()
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Waits until `source` has an identity, up to `timeout`.
pub async fn wait_ready(
    source: &dyn SvidSource,
    timeout: Duration,
) -> Result<Arc<X509Identity>, SvidError> {
    let mut updates = source.updates();
    let wait = async {
        loop {
            if let Some(identity) = source.current() {
                return Ok(identity);
            }
            if updates.changed().await.is_err() {
                return Err(SvidError::Source("identity source stopped".into()));
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| SvidError::Source(format!("no SVID within {timeout:?}")))?
}
