//! X.509-SVID validation by the rules of the SPIFFE X.509-SVID specification.
//!
//! Every rule has a name ([`SvidRule`]) and every failure says which rule broke
//! ([`SvidRejection`]), so logs, metric labels and `warden ca inspect` all speak the same terms.
//! [`validate_x509_svid`] is what a handshake runs; [`inspect_x509_svid`] runs the same checks
//! but reports each verdict instead of stopping at the first failure.

use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::bundle::TrustBundleSet;
use crate::id::{SpiffeId, TrustDomain};

/// One rule of the X.509-SVID specification, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SvidRule {
    /// The chain is present and the leaf is a parseable X.509 certificate.
    WellFormed,
    /// The leaf has exactly one URI SAN.
    OneUriSan,
    /// That URI is a valid SPIFFE ID.
    SpiffeIdUri,
    /// The leaf is not a CA (basic constraints CA=false or absent).
    LeafNotCa,
    /// The leaf's key usage includes digitalSignature.
    DigitalSignature,
    /// The leaf's key usage does not include keyCertSign.
    NoKeyCertSign,
    /// The leaf's key usage does not include cRLSign.
    NoCrlSign,
    /// The current time is not after notAfter.
    NotExpired,
    /// The current time is not before notBefore.
    AlreadyValid,
    /// A bundle is known for the SPIFFE ID's trust domain.
    KnownTrustDomain,
    /// The chain verifies against the bundle of the SVID's own trust domain.
    ChainVerifies,
}

impl SvidRule {
    /// Every rule, in checking order.
    pub const ALL: [SvidRule; 11] = [
        SvidRule::WellFormed,
        SvidRule::OneUriSan,
        SvidRule::SpiffeIdUri,
        SvidRule::LeafNotCa,
        SvidRule::DigitalSignature,
        SvidRule::NoKeyCertSign,
        SvidRule::NoCrlSign,
        SvidRule::NotExpired,
        SvidRule::AlreadyValid,
        SvidRule::KnownTrustDomain,
        SvidRule::ChainVerifies,
    ];

    /// A stable snake_case name, used as a metric label and in logs.
    pub fn name(self) -> &'static str {
        match self {
            SvidRule::WellFormed => "well_formed",
            SvidRule::OneUriSan => "one_uri_san",
            SvidRule::SpiffeIdUri => "spiffe_id_uri",
            SvidRule::LeafNotCa => "leaf_not_ca",
            SvidRule::DigitalSignature => "digital_signature",
            SvidRule::NoKeyCertSign => "no_key_cert_sign",
            SvidRule::NoCrlSign => "no_crl_sign",
            SvidRule::NotExpired => "not_expired",
            SvidRule::AlreadyValid => "already_valid",
            SvidRule::KnownTrustDomain => "known_trust_domain",
            SvidRule::ChainVerifies => "chain_verifies",
        }
    }

    /// What the rule demands, in words.
    pub fn description(self) -> &'static str {
        match self {
            SvidRule::WellFormed => "the leaf certificate is well-formed X.509",
            SvidRule::OneUriSan => "the leaf has exactly one URI SAN",
            SvidRule::SpiffeIdUri => "the URI SAN is a valid SPIFFE ID",
            SvidRule::LeafNotCa => "the leaf is not a CA",
            SvidRule::DigitalSignature => "key usage includes digitalSignature",
            SvidRule::NoKeyCertSign => "key usage excludes keyCertSign",
            SvidRule::NoCrlSign => "key usage excludes cRLSign",
            SvidRule::NotExpired => "the certificate has not expired",
            SvidRule::AlreadyValid => "the certificate is already valid (notBefore passed)",
            SvidRule::KnownTrustDomain => "a bundle is known for the SVID's trust domain",
            SvidRule::ChainVerifies => "the chain verifies against its trust domain's bundle",
        }
    }
}

impl fmt::Display for SvidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a certificate chain is not a valid X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidRejection {
    /// No certificate was presented, or the leaf does not parse.
    #[error("malformed certificate: {reason}")]
    Malformed {
        /// The parser's complaint.
        reason: String,
    },
    /// The leaf has no URI SAN.
    #[error("leaf has no URI SAN, so it carries no SPIFFE ID")]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("leaf has {count} URI SANs; an SVID has exactly one")]
    MultipleUriSans {
        /// How many there are.
        count: usize,
    },
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI.
        uri: String,
        /// Which part of the SPIFFE ID spec it breaks.
        reason: String,
    },
    /// The leaf says it is a CA.
    #[error("leaf certificate is a CA (basic constraints CA=true)")]
    LeafIsCa,
    /// digitalSignature is missing from key usage (or key usage is absent).
    #[error("leaf key usage lacks digitalSignature")]
    NoDigitalSignature,
    /// keyCertSign is set on the leaf.
    #[error("leaf key usage has keyCertSign, which only CAs may have")]
    KeyCertSign,
    /// cRLSign is set on the leaf.
    #[error("leaf key usage has cRLSign, which only CAs may have")]
    CrlSign,
    /// notAfter has passed.
    #[error("certificate expired at unix time {not_after}")]
    Expired {
        /// notAfter, seconds since the epoch.
        not_after: i64,
    },
    /// notBefore is in the future.
    #[error("certificate is not valid before unix time {not_before}")]
    NotYetValid {
        /// notBefore, seconds since the epoch.
        not_before: i64,
    },
    /// No bundle is configured for the ID's trust domain.
    #[error("trust domain {trust_domain} is not trusted (no bundle)")]
    UnknownTrustDomain {
        /// The SVID's trust domain.
        trust_domain: TrustDomain,
    },
    /// The chain does not verify against the bundle of the SVID's trust domain.
    #[error("chain does not verify against the bundle of trust domain {trust_domain}: {reason}")]
    UntrustedChain {
        /// The SVID's trust domain.
        trust_domain: TrustDomain,
        /// The path builder's complaint.
        reason: String,
    },
}

impl SvidRejection {
    /// The rule that was broken.
    pub fn rule(&self) -> SvidRule {
        match self {
            SvidRejection::Malformed { .. } => SvidRule::WellFormed,
            SvidRejection::NoUriSan | SvidRejection::MultipleUriSans { .. } => SvidRule::OneUriSan,
            SvidRejection::InvalidSpiffeId { .. } => SvidRule::SpiffeIdUri,
            SvidRejection::LeafIsCa => SvidRule::LeafNotCa,
            SvidRejection::NoDigitalSignature => SvidRule::DigitalSignature,
            SvidRejection::KeyCertSign => SvidRule::NoKeyCertSign,
            SvidRejection::CrlSign => SvidRule::NoCrlSign,
            SvidRejection::Expired { .. } => SvidRule::NotExpired,
            SvidRejection::NotYetValid { .. } => SvidRule::AlreadyValid,
            SvidRejection::UnknownTrustDomain { .. } => SvidRule::KnownTrustDomain,
            SvidRejection::UntrustedChain { .. } => SvidRule::ChainVerifies,
        }
    }
}

/// Which end of a TLS connection presented the SVID; selects the extended key usage to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// A TLS client (clientAuth EKU, when an EKU extension is present).
    Client,
    /// A TLS server (serverAuth EKU, when an EKU extension is present).
    Server,
}

fn parse_leaf<'a>(leaf: &'a [u8]) -> Result<X509Certificate<'a>, SvidRejection> {
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(SvidRejection::Malformed {
            reason: e.to_string(),
        }),
    }
}

/// The SPIFFE ID in the leaf's single URI SAN (rules `one_uri_san`, `spiffe_id_uri`).
fn leaf_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidRejection> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidRejection::Malformed {
            reason: format!("subjectAltName: {e}"),
        })?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        let count = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter(|n| matches!(n, GeneralName::URI(_)))
            .count();
        return Err(if count == 0 {
            SvidRejection::NoUriSan
        } else {
            SvidRejection::MultipleUriSans { count }
        });
    };
    let id = SpiffeId::new(uri).map_err(|e| SvidRejection::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason: e.reason,
    })?;
    if id.path().is_empty() {
        return Err(SvidRejection::InvalidSpiffeId {
            uri: uri.to_owned(),
            reason: "an SVID's SPIFFE ID must have a path (this is a trust domain ID)".into(),
        });
    }
    Ok(id)
}

type LeafCheck = fn(&X509Certificate<'_>, UnixTime) -> Result<(), SvidRejection>;

/// The checks on the leaf alone, after its ID has been read.
const LEAF_CHECKS: [(SvidRule, LeafCheck); 6] = [
    (SvidRule::LeafNotCa, check_not_ca),
    (SvidRule::DigitalSignature, check_digital_signature),
    (SvidRule::NoKeyCertSign, check_no_key_cert_sign),
    (SvidRule::NoCrlSign, check_no_crl_sign),
    (SvidRule::NotExpired, check_not_expired),
    (SvidRule::AlreadyValid, check_already_valid),
];

fn malformed_ext(name: &str, e: impl fmt::Display) -> SvidRejection {
    SvidRejection::Malformed {
        reason: format!("{name}: {e}"),
    }
}

fn check_not_ca(cert: &X509Certificate<'_>, _: UnixTime) -> Result<(), SvidRejection> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Err(SvidRejection::LeafIsCa),
        Ok(_) => Ok(()),
        Err(e) => Err(malformed_ext("basicConstraints", e)),
    }
}

fn key_usage(
    cert: &X509Certificate<'_>,
) -> Result<Option<x509_parser::extensions::KeyUsage>, SvidRejection> {
    cert.key_usage()
        .map(|ku| ku.map(|ext| *ext.value))
        .map_err(|e| malformed_ext("keyUsage", e))
}

fn check_digital_signature(cert: &X509Certificate<'_>, _: UnixTime) -> Result<(), SvidRejection> {
    match key_usage(cert)? {
        Some(ku) if ku.digital_signature() => Ok(()),
        _ => Err(SvidRejection::NoDigitalSignature),
    }
}

fn check_no_key_cert_sign(cert: &X509Certificate<'_>, _: UnixTime) -> Result<(), SvidRejection> {
    match key_usage(cert)? {
        Some(ku) if ku.key_cert_sign() => Err(SvidRejection::KeyCertSign),
        _ => Ok(()),
    }
}

fn check_no_crl_sign(cert: &X509Certificate<'_>, _: UnixTime) -> Result<(), SvidRejection> {
    match key_usage(cert)? {
        Some(ku) if ku.crl_sign() => Err(SvidRejection::CrlSign),
        _ => Ok(()),
    }
}

fn check_not_expired(cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), SvidRejection> {
    let not_after = cert.validity().not_after.timestamp();
    if (now.as_secs() as i64) > not_after {
        return Err(SvidRejection::Expired { not_after });
    }
    Ok(())
}

fn check_already_valid(cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), SvidRejection> {
    let not_before = cert.validity().not_before.timestamp();
    if (now.as_secs() as i64) < not_before {
        return Err(SvidRejection::NotYetValid { not_before });
    }
    Ok(())
}

/// Rules `known_trust_domain` and `chain_verifies`: the bundle is the one of the SVID's own
/// trust domain, never another trusted domain's.
pub(crate) fn check_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    id: &SpiffeId,
    bundles: &TrustBundleSet,
    role: PeerRole,
    now: UnixTime,
) -> Result<(), SvidRejection> {
    let Some(bundle) = bundles.get_by_name(id.trust_domain_name()) else {
        return Err(SvidRejection::UnknownTrustDomain {
            trust_domain: id.trust_domain(),
        });
    };
    let untrusted = |reason: String| SvidRejection::UntrustedChain {
        trust_domain: id.trust_domain(),
        reason,
    };
    let end_entity =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| untrusted(format!("{e:?}")))?;
    let usage = match role {
        PeerRole::Client => webpki::KeyUsage::client_auth(),
        PeerRole::Server => webpki::KeyUsage::server_auth(),
    };
    end_entity
        .verify_for_usage(
            crate::crypto::signature_algorithms().all,
            bundle.anchors(),
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| untrusted(webpki_reason(&e)))
}

fn webpki_reason(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "issuer is not in the bundle (unknown CA)".into(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "signature does not verify with the bundle's CA key (a different CA with the same name?)"
                .into()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "extended key usage does not allow this TLS role".into()
        }
        other => format!("{other:?}"),
    }
}

/// Validates an X.509-SVID chain and returns its SPIFFE ID.
///
/// This is the check every handshake runs, so it stops at the first broken rule and
/// allocates only the returned ID.
pub fn validate_x509_svid(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundles: &TrustBundleSet,
    role: PeerRole,
    now: UnixTime,
) -> Result<SpiffeId, SvidRejection> {
    let id = check_leaf(leaf, now)?;
    check_chain(leaf, intermediates, &id, bundles, role, now)?;
    Ok(id)
}

/// The leaf's own rules at `now`; its SPIFFE ID when all hold.
pub(crate) fn check_leaf(
    leaf: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<SpiffeId, SvidRejection> {
    let cert = parse_leaf(leaf)?;
    let id = leaf_spiffe_id(&cert)?;
    for (_, check) in LEAF_CHECKS {
        check(&cert, now)?;
    }
    Ok(id)
}

/// Checks the structural rules only (everything but time and chain): what a workload checks
/// of its own freshly loaded SVID before using it.
pub(crate) fn check_own_svid(
    leaf: &CertificateDer<'_>,
) -> Result<(SpiffeId, i64, i64), SvidRejection> {
    let cert = parse_leaf(leaf)?;
    let id = leaf_spiffe_id(&cert)?;
    for (rule, check) in LEAF_CHECKS {
        if !matches!(rule, SvidRule::NotExpired | SvidRule::AlreadyValid) {
            check(&cert, UnixTime::now())?;
        }
    }
    let validity = cert.validity();
    Ok((
        id,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// The SPIFFE ID in a certificate's URI SAN, for a certificate that was already verified.
pub fn spiffe_id_of(leaf: &CertificateDer<'_>) -> Option<SpiffeId> {
    parse_leaf(leaf).ok().and_then(|c| leaf_spiffe_id(&c).ok())
}

/// The DNS names in a certificate's subjectAltName: the host names a client that checks them
/// (gRPC, https) accepts the certificate for. Empty when there are none or the certificate
/// does not parse.
pub fn dns_names_of(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = parse_leaf(leaf) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

/// The outcome of one rule in an inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// The rule is broken.
    Fail(SvidRejection),
    /// The rule could not be checked; says why.
    Skipped(&'static str),
}

/// What `warden ca inspect` shows: the facts of a certificate and the verdict of every rule.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The SPIFFE ID, when one could be read.
    pub spiffe_id: Option<SpiffeId>,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// notBefore, seconds since the epoch.
    pub not_before: i64,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
    /// Every rule of [`SvidRule::ALL`] with its verdict.
    pub verdicts: Vec<(SvidRule, Verdict)>,
}

impl Inspection {
    /// The first broken rule, if any.
    pub fn first_failure(&self) -> Option<&SvidRejection> {
        self.verdicts.iter().find_map(|(_, v)| match v {
            Verdict::Fail(r) => Some(r),
            _ => None,
        })
    }
}

/// Runs every rule on a chain and reports each verdict. Without bundles, the trust-domain and
/// chain rules are skipped.
pub fn inspect_x509_svid(
    chain: &[CertificateDer<'_>],
    bundles: Option<&TrustBundleSet>,
    now: UnixTime,
) -> Inspection {
    let mut verdicts = Vec::with_capacity(SvidRule::ALL.len());
    let mut inspection = Inspection {
        spiffe_id: None,
        subject: String::new(),
        issuer: String::new(),
        not_before: 0,
        not_after: 0,
        verdicts: Vec::new(),
    };
    let skip_rest = |verdicts: &mut Vec<(SvidRule, Verdict)>, why: &'static str| {
        let done = verdicts.len();
        verdicts.extend(
            SvidRule::ALL[done..]
                .iter()
                .map(|r| (*r, Verdict::Skipped(why))),
        );
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        verdicts.push((
            SvidRule::WellFormed,
            Verdict::Fail(SvidRejection::Malformed {
                reason: "no certificate".into(),
            }),
        ));
        skip_rest(&mut verdicts, "no certificate");
        inspection.verdicts = verdicts;
        return inspection;
    };
    let cert = match parse_leaf(leaf) {
        Ok(cert) => cert,
        Err(r) => {
            verdicts.push((SvidRule::WellFormed, Verdict::Fail(r)));
            skip_rest(&mut verdicts, "leaf does not parse");
            inspection.verdicts = verdicts;
            return inspection;
        }
    };
    verdicts.push((SvidRule::WellFormed, Verdict::Pass));
    inspection.subject = cert.subject().to_string();
    inspection.issuer = cert.issuer().to_string();
    inspection.not_before = cert.validity().not_before.timestamp();
    inspection.not_after = cert.validity().not_after.timestamp();
    match leaf_spiffe_id(&cert) {
        Ok(id) => {
            verdicts.push((SvidRule::OneUriSan, Verdict::Pass));
            verdicts.push((SvidRule::SpiffeIdUri, Verdict::Pass));
            inspection.spiffe_id = Some(id);
        }
        Err(r) => {
            let rule = r.rule();
            if rule == SvidRule::SpiffeIdUri {
                verdicts.push((SvidRule::OneUriSan, Verdict::Pass));
            }
            verdicts.push((rule, Verdict::Fail(r)));
            if rule == SvidRule::OneUriSan {
                verdicts.push((SvidRule::SpiffeIdUri, Verdict::Skipped("no single URI SAN")));
            }
        }
    }
    for (rule, check) in LEAF_CHECKS {
        let verdict = match check(&cert, now) {
            Ok(()) => Verdict::Pass,
            Err(r) => Verdict::Fail(r),
        };
        verdicts.push((rule, verdict));
    }
    match (&inspection.spiffe_id, bundles) {
        (None, _) => skip_rest(&mut verdicts, "no SPIFFE ID to choose a bundle by"),
        (Some(_), None) => skip_rest(&mut verdicts, "no bundle given (--bundle)"),
        (Some(id), Some(bundles)) => {
            match check_chain(leaf, intermediates, id, bundles, PeerRole::Client, now) {
                Ok(()) => {
                    verdicts.push((SvidRule::KnownTrustDomain, Verdict::Pass));
                    verdicts.push((SvidRule::ChainVerifies, Verdict::Pass));
                }
                Err(r @ SvidRejection::UnknownTrustDomain { .. }) => {
                    verdicts.push((SvidRule::KnownTrustDomain, Verdict::Fail(r)));
                    skip_rest(&mut verdicts, "no bundle for the trust domain");
                }
                Err(r) => {
                    verdicts.push((SvidRule::KnownTrustDomain, Verdict::Pass));
                    verdicts.push((SvidRule::ChainVerifies, Verdict::Fail(r)));
                }
            }
        }
    }
    inspection.verdicts = verdicts;
    inspection
}
