//! SPIFFE IDs and trust domains.
//!
//! Thin newtypes over the `spiffe` crate's types: they keep its parsing rules (the SPIFFE ID
//! spec) and add what Warden needs on top — the `ns/<namespace>/sa/<service-account>` shape
//! that both SPIRE and Istio use, and serde as plain strings so IDs can appear in manifests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SPIFFE ID or trust domain that does not follow the SPIFFE ID specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID {input:?}: {reason}")]
pub struct InvalidSpiffeId {
    /// What was given.
    pub input: String,
    /// Which rule of the SPIFFE ID specification it breaks.
    pub reason: String,
}

/// The rule go-spiffe (and the SPIFFE ID specification) applies to the scheme.
const SCHEME_RULE: &str = "the scheme must be \"spiffe\" in lower case";
/// go-spiffe's message for a trust domain with a character outside its set.
const TRUST_DOMAIN_RULE: &str = "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores";

/// Refuses what the `spiffe` crate would silently lower-case: an upper-case scheme or trust
/// domain. go-spiffe refuses both, and so must Warden: an ID written `spiffe://Example.org/…`
/// in a policy would otherwise match a peer the author never named, and IDs compared as
/// strings elsewhere (SPIRE entries, audit logs) would disagree with ours.
fn check_case(input: &str) -> Result<(), InvalidSpiffeId> {
    let refuse = |reason: &str| InvalidSpiffeId {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let trust_domain = match input.split_once("://") {
        Some((scheme, rest)) => {
            if scheme != "spiffe" && scheme.eq_ignore_ascii_case("spiffe") {
                return Err(refuse(SCHEME_RULE));
            }
            rest.split_once('/').map_or(rest, |(td, _)| td)
        }
        None => input,
    };
    if trust_domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(refuse(TRUST_DOMAIN_RULE));
    }
    Ok(())
}

/// A trust domain: the root of trust that issues and verifies SVIDs (`warden.local`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(spiffe::TrustDomain);

impl TrustDomain {
    /// Parses a trust domain name (`example.org`) or a SPIFFE ID whose trust domain is wanted.
    pub fn new(name: &str) -> Result<Self, InvalidSpiffeId> {
        check_case(name)?;
        spiffe::TrustDomain::new(name)
            .map(Self)
            .map_err(|e| InvalidSpiffeId {
                input: name.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The bare name, as used in bundle maps and file names.
    pub fn name(&self) -> &str {
        self.0.as_str()
    }

    /// The trust domain as a SPIFFE ID (`spiffe://example.org`), as CA certificates carry it.
    pub fn id_string(&self) -> String {
        self.0.id_string()
    }

    /// The `spiffe` crate's type, for handing to its APIs.
    pub fn as_spiffe(&self) -> &spiffe::TrustDomain {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.name())
    }
}

impl FromStr for TrustDomain {
    type Err = InvalidSpiffeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A SPIFFE ID (`spiffe://<trust-domain>/<path>`): the identity of a workload.
///
/// Holds the canonical string beside the parsed form so that comparing, hashing and printing
/// never allocate; equality, hashing and ordering look at the string only (the parsed form is
/// derived from it).
#[derive(Clone)]
pub struct SpiffeId {
    full: String,
    parsed: spiffe::SpiffeId,
}

impl SpiffeId {
    /// Parses a SPIFFE ID by the rules of the SPIFFE ID specification.
    pub fn new(id: &str) -> Result<Self, InvalidSpiffeId> {
        check_case(id)?;
        spiffe::SpiffeId::new(id)
            .map(Self::from)
            .map_err(|e| InvalidSpiffeId {
                input: id.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The ID of a Kubernetes-style workload: `spiffe://<td>/ns/<namespace>/sa/<sa>`.
    pub fn for_workload(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, InvalidSpiffeId> {
        for (field, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if value.is_empty() || value.contains('/') {
                return Err(InvalidSpiffeId {
                    input: value.to_owned(),
                    reason: format!("a {field} must be one non-empty path segment"),
                });
            }
        }
        Self::new(&format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            trust_domain.name()
        ))
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.parsed.trust_domain().clone())
    }

    /// The name of the trust domain, without allocating.
    pub fn trust_domain_name(&self) -> &str {
        self.parsed.trust_domain_name()
    }

    /// The path, starting with `/` (empty for a trust domain ID).
    pub fn path(&self) -> &str {
        self.parsed.path()
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Namespace and service account when the path has exactly the `ns/<ns>/sa/<sa>` shape.
    ///
    /// Policy rules about namespaces apply only to IDs of this shape: any other path is a
    /// workload that belongs to no namespace.
    pub fn workload(&self) -> Option<WorkloadName<'_>> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) => {
                Some(WorkloadName {
                    namespace,
                    service_account,
                })
            }
            _ => None,
        }
    }

    /// The namespace of an `ns/<ns>/sa/<sa>` ID.
    pub fn namespace(&self) -> Option<&str> {
        self.workload().map(|w| w.namespace)
    }

    /// The `spiffe` crate's type, for handing to its APIs.
    pub fn as_spiffe(&self) -> &spiffe::SpiffeId {
        &self.parsed
    }
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for SpiffeId {}

impl std::hash::Hash for SpiffeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.full.cmp(&other.full)
    }
}

impl From<spiffe::SpiffeId> for SpiffeId {
    fn from(parsed: spiffe::SpiffeId) -> Self {
        Self {
            full: parsed.to_string(),
            parsed,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.as_str())
    }
}

impl FromStr for SpiffeId {
    type Err = InvalidSpiffeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The namespace and service account of an `ns/<ns>/sa/<sa>` SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadName<'a> {
    /// The namespace segment.
    pub namespace: &'a str,
    /// The service-account segment.
    pub service_account: &'a str,
}

/// A DNS label as host names and SANs allow it: 1–63 ASCII letters, digits or `-`, not
/// starting or ending with `-`. One rule for every place Warden checks a host name (the
/// CA's DNS SANs, the mesh's host domain), so they cannot disagree about what is valid.
pub fn is_dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_shape_is_parsed_only_when_exact() {
        let id = SpiffeId::new("spiffe://warden.local/ns/team-alpha/sa/orchestrator").unwrap();
        assert_eq!(
            id.workload(),
            Some(WorkloadName {
                namespace: "team-alpha",
                service_account: "orchestrator"
            })
        );
        assert_eq!(id.trust_domain_name(), "warden.local");
        for other in [
            "spiffe://warden.local/ns/a/sa/b/extra",
            "spiffe://warden.local/ns/a",
            "spiffe://warden.local/sa/b/ns/a",
            "spiffe://warden.local",
        ] {
            assert_eq!(SpiffeId::new(other).unwrap().workload(), None, "{other}");
        }
    }

    #[test]
    fn invalid_ids_name_the_input() {
        for bad in [
            "http://warden.local/ns/a/sa/b",
            "spiffe://td/a?b",
            "spiffe://td/a//b",
            "spiffe://td/a/",
            "",
        ] {
            let err = SpiffeId::new(bad).unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.to_string().contains("invalid SPIFFE ID"));
        }
    }

    #[test]
    fn upper_case_scheme_or_trust_domain_is_refused_naming_the_rule() {
        for (bad, rule) in [
            (
                "SPIFFE://warden.local/ns/a/sa/b",
                "scheme must be \"spiffe\" in lower case",
            ),
            (
                "Spiffe://warden.local/ns/a/sa/b",
                "scheme must be \"spiffe\" in lower case",
            ),
            (
                "spiffe://Warden.local/ns/a/sa/b",
                "limited to lowercase letters",
            ),
            ("spiffe://WARDEN.LOCAL", "limited to lowercase letters"),
        ] {
            let err = SpiffeId::new(bad).unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.reason.contains(rule), "{bad}: {err}");
        }
        for bad in ["Warden.local", "spiffe://EXAMPLE.org/x"] {
            let err = TrustDomain::new(bad).unwrap_err();
            assert!(
                err.reason.contains("limited to lowercase letters"),
                "{bad}: {err}"
            );
        }
        // Paths are case-sensitive and may hold upper case; only scheme and trust domain may not.
        let id = SpiffeId::new("spiffe://warden.local/ns/Team/sa/Bot").unwrap();
        assert_eq!(id.as_str(), "spiffe://warden.local/ns/Team/sa/Bot");
        assert!(TrustDomain::new("warden.local").is_ok());
    }

    #[test]
    fn for_workload_round_trips() {
        let td = TrustDomain::new("example.org").unwrap();
        let id = SpiffeId::for_workload(&td, "ns1", "sa1").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/ns/ns1/sa/sa1");
        assert_eq!(id.trust_domain(), td);
        assert!(SpiffeId::for_workload(&td, "a/b", "c").is_err());
    }
}
