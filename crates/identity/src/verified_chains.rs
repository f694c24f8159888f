//! Certificate chains that already verified against the current trust bundles.
//!
//! A full mTLS handshake checks two ECDSA signatures of the peer: the CA's over its
//! certificate (the chain) and the peer's own over the handshake (`CertificateVerify`, proof
//! of the private key). Workloads reconnect with the same SVID for its whole lifetime, so the
//! first result is remembered: the chain signature is checked once per SVID, the key proof on
//! every handshake. The leaf's own rules (SAN, key usage, validity *now*) still run every time.
//!
//! An entry is keyed by SHA-256 over the role and the exact DER of the leaf and its
//! intermediates, belongs to one bundle set (a new set — rotation, a bundle update — empties
//! the cache) and is used only until the earliest `notAfter` of the intermediates. The cache
//! is bounded; when full it starts over, so a flood of distinct valid SVIDs costs no more than
//! no cache at all. Reads are lock-free.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use crate::bundle::TrustBundleSet;
use crate::id::SpiffeId;
use crate::svid::{PeerRole, SvidRejection};

/// How many chains are remembered per bundle set.
const CAPACITY: usize = 256;

type Key = [u8; 32];

struct Entries {
    bundles: Arc<TrustBundleSet>,
    /// Key → the last second (Unix) at which every intermediate is still valid.
    chains: HashMap<Key, u64>,
}

/// Chains verified against a bundle set, for the verifiers of one TLS configuration.
pub(crate) struct VerifiedChains {
    entries: ArcSwap<Option<Entries>>,
}

impl Default for VerifiedChains {
    fn default() -> Self {
        Self {
            entries: ArcSwap::from_pointee(None),
        }
    }
}

/// The cache key of a presented chain.
pub(crate) fn chain_key(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    role: PeerRole,
) -> Key {
    let mut hash = Sha256::new();
    hash.update([role as u8]);
    for cert in std::iter::once(leaf).chain(intermediates) {
        // Length-prefixed, so that no two different chains hash the same bytes.
        hash.update((cert.len() as u64).to_be_bytes());
        hash.update(cert.as_ref());
    }
    hash.finalize().into()
}

impl VerifiedChains {
    /// Whether the chain verified against exactly these bundles and is still usable at `now`.
    pub(crate) fn contains(&self, bundles: &Arc<TrustBundleSet>, key: &Key, now: UnixTime) -> bool {
        match self.entries.load().as_ref() {
            Some(e) if Arc::ptr_eq(&e.bundles, bundles) => e
                .chains
                .get(key)
                .is_some_and(|until| now.as_secs() <= *until),
            _ => false,
        }
    }

    /// Remembers a chain that just verified against `bundles`, usable until `until` (Unix s).
    pub(crate) fn insert(&self, bundles: &Arc<TrustBundleSet>, key: Key, until: u64) {
        self.entries.rcu(|current| {
            let mut chains = match current.as_ref() {
                Some(e) if Arc::ptr_eq(&e.bundles, bundles) && e.chains.len() < CAPACITY => {
                    e.chains.clone()
                }
                _ => HashMap::new(),
            };
            chains.insert(key, until);
            Some(Entries {
                bundles: bundles.clone(),
                chains,
            })
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .load()
            .as_ref()
            .as_ref()
            .map_or(0, |e| e.chains.len())
    }
}

/// [`crate::svid::validate_x509_svid`] for the TLS verifiers: the same rules, but a chain that already
/// verified against these very bundles is not verified again (see
/// this module).
pub(crate) fn validate_x509_svid_cached(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundles: &std::sync::Arc<TrustBundleSet>,
    role: PeerRole,
    now: UnixTime,
    verified: &VerifiedChains,
) -> Result<SpiffeId, SvidRejection> {
    let id = crate::svid::check_leaf(leaf, now)?;
    let key = chain_key(leaf, intermediates, role);
    if verified.contains(bundles, &key, now) {
        return Ok(id);
    }
    crate::svid::check_chain(leaf, intermediates, &id, bundles, role, now)?;
    // Usable until the first intermediate expires (the leaf's own dates are checked above on
    // every call). An unreadable intermediate is simply not remembered.
    let until = intermediates.iter().try_fold(u64::MAX, |until, der| {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        Some(until.min(not_after))
    });
    if let Some(until) = until {
        verified.insert(bundles, key, until);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundles() -> Arc<TrustBundleSet> {
        Arc::new(TrustBundleSet::default())
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    #[test]
    fn a_chain_is_remembered_for_its_bundles_until_it_expires() {
        let (cache, set) = (VerifiedChains::default(), bundles());
        let leaf = CertificateDer::from(vec![1, 2, 3]);
        let key = chain_key(&leaf, &[], PeerRole::Client);
        assert!(!cache.contains(&set, &key, at(100)));
        cache.insert(&set, key, 200);
        assert!(cache.contains(&set, &key, at(100)));
        assert!(cache.contains(&set, &key, at(200)));
        assert!(!cache.contains(&set, &key, at(201)), "expired intermediate");
        assert!(
            !cache.contains(&bundles(), &key, at(100)),
            "another bundle set (equal contents, new set) must verify again"
        );
    }

    #[test]
    fn keys_differ_by_role_intermediates_and_bytes() {
        let leaf = CertificateDer::from(vec![1, 2, 3]);
        let other = CertificateDer::from(vec![1, 2, 4]);
        let mid = CertificateDer::from(vec![9]);
        let client = chain_key(&leaf, &[], PeerRole::Client);
        assert_ne!(client, chain_key(&leaf, &[], PeerRole::Server));
        assert_ne!(client, chain_key(&other, &[], PeerRole::Client));
        assert_ne!(client, chain_key(&leaf, &[mid], PeerRole::Client));
        // Moving bytes between certificates changes the key (length prefixes).
        let split = chain_key(
            &CertificateDer::from(vec![1, 2]),
            &[CertificateDer::from(vec![3])],
            PeerRole::Client,
        );
        assert_ne!(split, chain_key(&leaf, &[], PeerRole::Client));
    }

    #[test]
    fn a_full_cache_starts_over_and_a_new_bundle_set_empties_it() {
        let (cache, set) = (VerifiedChains::default(), bundles());
        for i in 0..CAPACITY as u32 {
            let leaf = CertificateDer::from(i.to_be_bytes().to_vec());
            cache.insert(&set, chain_key(&leaf, &[], PeerRole::Client), u64::MAX);
        }
        assert_eq!(cache.len(), CAPACITY);
        let extra = chain_key(&CertificateDer::from(vec![0xff; 8]), &[], PeerRole::Client);
        cache.insert(&set, extra, u64::MAX);
        assert_eq!(cache.len(), 1);
        let next = bundles();
        cache.insert(&next, extra, u64::MAX);
        assert_eq!(cache.len(), 1);
        assert!(!cache.contains(&set, &extra, at(1)));
        assert!(cache.contains(&next, &extra, at(1)));
    }
}
