//! Which verified peers a TLS endpoint accepts.
//!
//! Verification says "this peer really is X"; authorization says "X may talk to me". Keeping
//! them apart means the verifier never needs to know about policy and a policy change never
//! touches certificate handling.

use std::collections::HashSet;
use std::fmt;

use crate::id::{InvalidSpiffeId, SpiffeId, TrustDomain};

/// One way a peer can be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatcher {
    /// Any ID in this trust domain.
    TrustDomain(TrustDomain),
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any service account of a namespace: `spiffe://<td>/ns/<namespace>/sa/*`.
    Namespace {
        /// The trust domain the namespace lives in.
        trust_domain: TrustDomain,
        /// The namespace.
        namespace: String,
    },
}

impl PeerMatcher {
    /// Parses `spiffe://td` (a trust domain), `spiffe://td/ns/<ns>/sa/*` (a namespace) or an
    /// exact SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, InvalidSpiffeId> {
        if let Some(prefix) = s.strip_suffix("/sa/*") {
            let id = SpiffeId::new(&format!("{prefix}/sa/x"))?;
            let namespace = id.namespace().ok_or_else(|| InvalidSpiffeId {
                input: s.to_owned(),
                reason: "a pattern must have the shape spiffe://<td>/ns/<namespace>/sa/*".into(),
            })?;
            return Ok(PeerMatcher::Namespace {
                trust_domain: id.trust_domain(),
                namespace: namespace.to_owned(),
            });
        }
        let id = SpiffeId::new(s)?;
        if id.path().is_empty() {
            Ok(PeerMatcher::TrustDomain(id.trust_domain()))
        } else {
            Ok(PeerMatcher::Exact(id))
        }
    }

    /// Whether `id` is admitted by this matcher.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            PeerMatcher::TrustDomain(td) => id.trust_domain_name() == td.name(),
            PeerMatcher::Exact(exact) => exact == id,
            PeerMatcher::Namespace {
                trust_domain,
                namespace,
            } => {
                id.trust_domain_name() == trust_domain.name()
                    && id.namespace() == Some(namespace.as_str())
            }
        }
    }
}

impl fmt::Display for PeerMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMatcher::TrustDomain(td) => write!(f, "spiffe://{td}"),
            PeerMatcher::Exact(id) => write!(f, "{id}"),
            PeerMatcher::Namespace {
                trust_domain,
                namespace,
            } => write!(f, "spiffe://{trust_domain}/ns/{namespace}/sa/*"),
        }
    }
}

/// A verified peer that no matcher admits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer} is not authorized: it matches none of [{allowed}]")]
pub struct NotAuthorized {
    /// The verified peer ID.
    pub peer: SpiffeId,
    /// The matchers that were tried, for the log line.
    pub allowed: String,
}

/// The set of peers an endpoint accepts: a peer is admitted when any matcher matches.
///
/// Short lists of exact IDs are scanned (a few string compares beat hashing the ID); long ones
/// are also indexed in a hash set, so that an allowlist of thousands costs the same per
/// handshake as one of ten.
#[derive(Debug, Clone)]
pub struct Authorizer {
    exact: Vec<SpiffeId>,
    exact_index: Option<HashSet<SpiffeId>>,
    others: Vec<PeerMatcher>,
}

/// Above this many exact IDs, lookups go through a hash set.
const SCAN_LIMIT: usize = 8;

impl Authorizer {
    /// Admits peers matching any of `matchers`. An empty list admits nobody.
    pub fn new(matchers: impl IntoIterator<Item = PeerMatcher>) -> Self {
        let mut exact = Vec::new();
        let mut others = Vec::new();
        for m in matchers {
            match m {
                PeerMatcher::Exact(id) => exact.push(id),
                other => others.push(other),
            }
        }
        let exact_index = (exact.len() > SCAN_LIMIT).then(|| exact.iter().cloned().collect());
        Self {
            exact,
            exact_index,
            others,
        }
    }

    /// Admits any ID of the given trust domains.
    pub fn any_in(trust_domains: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self::new(trust_domains.into_iter().map(PeerMatcher::TrustDomain))
    }

    /// Admits exactly one ID (what a client expects of the server it dials).
    pub fn exactly(id: SpiffeId) -> Self {
        Self::new([PeerMatcher::Exact(id)])
    }

    /// Whether `peer` is admitted; allocates nothing, for per-request checks.
    pub fn admits(&self, peer: &SpiffeId) -> bool {
        let exact = match &self.exact_index {
            Some(index) => index.contains(peer),
            None => self.exact.contains(peer),
        };
        exact || self.others.iter().any(|m| m.matches(peer))
    }

    /// Admits `peer` or says why not.
    pub fn authorize(&self, peer: &SpiffeId) -> Result<(), NotAuthorized> {
        if self.admits(peer) {
            return Ok(());
        }
        let allowed = self
            .exact
            .iter()
            .map(|id| id.to_string())
            .chain(self.others.iter().map(|m| m.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(NotAuthorized {
            peer: peer.clone(),
            allowed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn matchers_admit_what_they_say_and_nothing_else() {
        let cases = [
            ("spiffe://a.org", "spiffe://a.org/ns/x/sa/y", true),
            ("spiffe://a.org", "spiffe://b.org/ns/x/sa/y", false),
            ("spiffe://a.org/ns/x/sa/*", "spiffe://a.org/ns/x/sa/y", true),
            (
                "spiffe://a.org/ns/x/sa/*",
                "spiffe://a.org/ns/xx/sa/y",
                false,
            ),
            (
                "spiffe://a.org/ns/x/sa/*",
                "spiffe://b.org/ns/x/sa/y",
                false,
            ),
            (
                "spiffe://a.org/ns/x/sa/*",
                "spiffe://a.org/ns/x/sa/y/z",
                false,
            ),
            ("spiffe://a.org/ns/x/sa/y", "spiffe://a.org/ns/x/sa/y", true),
            (
                "spiffe://a.org/ns/x/sa/y",
                "spiffe://a.org/ns/x/sa/yy",
                false,
            ),
        ];
        for (pattern, peer, want) in cases {
            let auth = Authorizer::new([PeerMatcher::parse(pattern).unwrap()]);
            assert_eq!(
                auth.authorize(&id(peer)).is_ok(),
                want,
                "{pattern} vs {peer}"
            );
        }
    }

    #[test]
    fn long_allowlists_are_indexed_and_still_exact() {
        let ids: Vec<PeerMatcher> = (0..100)
            .map(|i| PeerMatcher::parse(&format!("spiffe://a.org/ns/n{i}/sa/s")).unwrap())
            .collect();
        let auth = Authorizer::new(ids);
        assert!(auth.admits(&id("spiffe://a.org/ns/n99/sa/s")));
        assert!(!auth.admits(&id("spiffe://a.org/ns/n100/sa/s")));
        assert!(!auth.admits(&id("spiffe://b.org/ns/n1/sa/s")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(PeerMatcher::parse("spiffe://a.org/team/*/sa/*").is_err());
        assert!(PeerMatcher::parse("spiffe://a.org/sa/*").is_err());
        assert!(PeerMatcher::parse("a.org").is_err());
    }

    #[test]
    fn empty_authorizer_admits_nobody_and_names_the_peer() {
        let err = Authorizer::new([])
            .authorize(&id("spiffe://a.org/x"))
            .unwrap_err();
        assert!(err.to_string().contains("spiffe://a.org/x"));
    }
}
