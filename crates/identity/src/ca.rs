//! Warden's embedded certificate authority: the identity provider of local mode.
//!
//! It keeps a root (ECDSA P-256, made here or adopted from an existing CA such as one made
//! with openssl) and a JWT signing key in a directory, and issues X.509-SVIDs and JWT-SVIDs
//! for IDs of its own trust domain. Private keys are written 0600.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::bundle::{Jwk, JwtAuthority, TrustBundle, TrustBundleSet};
use crate::id::{SpiffeId, TrustDomain};

/// File names inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The root's private key (0600).
pub const CA_KEY_FILE: &str = "ca_key.pem";
/// The JWT-SVID signing key (0600).
pub const JWT_KEY_FILE: &str = "jwt_key.pem";
/// The trust domain, one line.
pub const TRUST_DOMAIN_FILE: &str = "trust_domain";

/// How long a root made by `init` is valid.
const ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// SVIDs start this much in the past so that a peer with a slightly slow clock accepts them.
const BACKDATE: Duration = Duration::from_secs(30);

/// What went wrong with a CA operation.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `init` would overwrite an existing CA.
    #[error("{0} already holds a CA; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// A CA file does not hold what it should.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested ID is not in this CA's trust domain.
    #[error("cannot issue for {id}: this CA signs only trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested ID.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// A DNS name asked for beside the SPIFFE ID is not a host name.
    #[error("--dns {name:?}: {reason}")]
    BadDnsName {
        /// The name.
        name: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The requested ID is a bare trust domain.
    #[error("cannot issue for {0}: an SVID's SPIFFE ID needs a path")]
    NoPath(SpiffeId),
    /// Certificate or token generation failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A host name for a certificate: dot-separated labels of letters, digits and `-` (1–63
/// bytes, not starting or ending with `-`), the first label optionally `*`. Public so that a
/// caller choosing names (`warden up`) can leave out one the CA would refuse.
pub fn check_dns_name(name: &str) -> Result<(), CaError> {
    let bad = |reason| CaError::BadDnsName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("a host name has 1 to 253 characters"));
    }
    for (i, label) in name.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        if !crate::id::is_dns_label(label) {
            return Err(bad(
                "each label is 1-63 letters, digits or '-' (only the first may be '*')",
            ));
        }
    }
    Ok(())
}

fn sign_err(e: impl std::fmt::Display) -> CaError {
    CaError::Signing(e.to_string())
}

/// An X.509-SVID just issued: chain, key and expiry.
#[derive(Clone)]
pub struct IssuedSvid {
    /// The SPIFFE ID it certifies.
    pub id: SpiffeId,
    /// Leaf first (the root is not included; it is in the bundle).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// notAfter.
    pub not_after: SystemTime,
    /// Lifetime from issue to notAfter (without the backdating).
    pub ttl: Duration,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedSvid {
    /// The key as rustls wants it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// Writes `svid.pem`, `svid_key.pem` (0600) and `svid_bundle.pem` into `dir`, in
    /// spiffe-helper's layout. Each file is replaced atomically (write, then rename).
    pub fn write_files(&self, dir: &Path, bundle: &TrustBundle) -> Result<(), CaError> {
        use crate::pem::{SVID_BUNDLE_FILE, SVID_CERT_FILE, SVID_KEY_FILE};
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let chain: String = self
            .chain
            .iter()
            .map(|c| crate::pem::encode_certificate(c))
            .collect();
        write_atomic(&dir.join(SVID_CERT_FILE), chain.as_bytes(), 0o644)?;
        write_atomic(
            &dir.join(SVID_KEY_FILE),
            crate::pem::encode("PRIVATE KEY", &self.key_pkcs8).as_bytes(),
            0o600,
        )?;
        write_atomic(
            &dir.join(SVID_BUNDLE_FILE),
            bundle.to_pem().as_bytes(),
            0o644,
        )
    }
}

/// Writes a file through a temporary sibling and a rename, with `mode` set before any byte of
/// content is written (so a key is never readable by others, not even briefly).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The embedded CA, loaded from its directory.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    root: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    root_not_after: OffsetDateTime,
    jwt_key: KeyPair,
    jwt_kid: String,
    bundle: TrustBundle,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new root for `trust_domain` in `dir` and returns the loaded CA. Refuses to
    /// overwrite an existing CA.
    pub fn init(dir: &Path, trust_domain: &TrustDomain) -> Result<Self, CaError> {
        ensure_empty(dir)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden");
        dn.push(DnType::CommonName, format!("Warden CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            trust_domain.id_string().try_into().map_err(sign_err)?,
        )];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_TTL;
        params.serial_number = Some(random_serial(key.public_key_raw()));
        let cert = params.self_signed(&key).map_err(sign_err)?;
        write_ca_files(dir, trust_domain, &cert.pem(), &key.serialize_pem())?;
        Self::load(dir)
    }

    /// Adopts an existing CA certificate and key (PEM; e.g. made by openssl) into `dir`.
    /// The trust domain defaults to the one in the certificate's `spiffe://` URI SAN.
    pub fn adopt(
        dir: &Path,
        trust_domain: Option<&TrustDomain>,
        ca_cert: &Path,
        ca_key: &Path,
    ) -> Result<Self, CaError> {
        ensure_empty(dir)?;
        let cert_pem = std::fs::read_to_string(ca_cert).map_err(io_err(ca_cert))?;
        let key_pem = std::fs::read_to_string(ca_key).map_err(io_err(ca_key))?;
        let cert_der = first_certificate(cert_pem.as_bytes(), ca_cert)?;
        let trust_domain = match trust_domain {
            Some(td) => td.clone(),
            None => trust_domain_of_ca(&cert_der).unwrap_or_else(|| {
                TrustDomain::new(crate::DEFAULT_TRUST_DOMAIN)
                    .expect("default trust domain is valid")
            }),
        };
        // Validate before writing anything.
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: ca_key.to_owned(),
            reason: format!("not a PKCS#8 private key: {e}"),
        })?;
        check_ca_certificate(&cert_der, &key, ca_cert)?;
        write_ca_files(dir, &trust_domain, &cert_pem, &key.serialize_pem())?;
        Self::load(dir)
    }

    /// Loads the CA kept in `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(io_err(&path))
        };
        let td_path = dir.join(TRUST_DOMAIN_FILE);
        let trust_domain =
            TrustDomain::new(read(TRUST_DOMAIN_FILE)?.trim()).map_err(|e| CaError::Invalid {
                path: td_path,
                reason: e.to_string(),
            })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let root = first_certificate(read(CA_CERT_FILE)?.as_bytes(), &cert_path)?;
        let key_path = dir.join(CA_KEY_FILE);
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?).map_err(|e| CaError::Invalid {
            path: key_path,
            reason: e.to_string(),
        })?;
        check_ca_certificate(&root, &key, &cert_path)?;
        let root_not_after = x509_parser::parse_x509_certificate(&root)
            .map(|(_, c)| c.validity().not_after.to_datetime())
            .map_err(|e| CaError::Invalid {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let issuer = Issuer::from_ca_cert_der(&root, key).map_err(|e| CaError::Invalid {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
        let jwt_path = dir.join(JWT_KEY_FILE);
        let jwt_key = KeyPair::from_pem(&read(JWT_KEY_FILE)?).map_err(|e| CaError::Invalid {
            path: jwt_path.clone(),
            reason: e.to_string(),
        })?;
        let point = jwt_key.public_key_raw();
        if point.len() != 65 {
            return Err(CaError::Invalid {
                path: jwt_path,
                reason: "the JWT signing key must be ECDSA P-256".into(),
            });
        }
        let jwt_kid = hex::encode(&Sha256::digest(point)[..16]);
        let bundle = TrustBundle::from_der(
            trust_domain.clone(),
            vec![root.clone()],
            &cert_path.display().to_string(),
        )
        .map_err(|e| CaError::Invalid {
            path: cert_path,
            reason: e.to_string(),
        })?
        .with_jwt_authority(JwtAuthority {
            kid: jwt_kid.clone(),
            jwk: Jwk {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
                y: Some(URL_SAFE_NO_PAD.encode(&point[33..])),
                ..Jwk::default()
            },
        });
        Ok(Self {
            trust_domain,
            root,
            issuer,
            root_not_after,
            jwt_key,
            jwt_kid,
            bundle,
        })
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The trust bundle: the root and the JWT signing key.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The bundle set a workload of this trust domain trusts.
    pub fn bundle_set(&self) -> TrustBundleSet {
        TrustBundleSet::single(self.bundle.clone())
    }

    fn check_issuable(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.trust_domain_name() != self.trust_domain.name() {
            return Err(CaError::ForeignTrustDomain {
                id: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::NoPath(id.clone()));
        }
        Ok(())
    }

    /// Issues an X.509-SVID for `id`, valid for `ttl` (capped at the root's own expiry).
    pub fn issue_x509(&self, id: &SpiffeId, ttl: Duration) -> Result<IssuedSvid, CaError> {
        self.issue_x509_named(id, &[], ttl)
    }

    /// [`Self::issue_x509`] with DNS names beside the SPIFFE ID (the X.509-SVID spec allows
    /// them): for a server that clients outside SPIFFE reach by host name and check it — the
    /// gateway, whose gRPC clients (grpcio) always verify the host name.
    pub fn issue_x509_named(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<IssuedSvid, CaError> {
        self.check_issuable(id)?;
        let mut sans = vec![SanType::URI(
            id.as_str().to_owned().try_into().map_err(sign_err)?,
        )];
        for name in dns_names {
            check_dns_name(name)?;
            sans.push(SanType::DnsName(name.clone().try_into().map_err(sign_err)?));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = sans;
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = (now + ttl).min(self.root_not_after);
        params.serial_number = Some(random_serial(key.public_key_raw()));
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        let not_after =
            UNIX_EPOCH + Duration::from_secs(params.not_after.unix_timestamp().max(0) as u64);
        Ok(IssuedSvid {
            id: id.clone(),
            chain: vec![cert.der().clone()],
            key_pkcs8: key.serialize_der(),
            not_after,
            ttl: not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        })
    }

    /// Issues a JWT-SVID (ES256) for `id` with the given audiences.
    pub fn issue_jwt(
        &self,
        id: &SpiffeId,
        audiences: &[String],
        ttl: Duration,
    ) -> Result<String, CaError> {
        self.check_issuable(id)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "sub": id.as_str(),
            "aud": audiences,
            "iat": now,
            "exp": now + ttl.as_secs(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.jwt_kid.clone());
        header.typ = Some("JWT".into());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.jwt_key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).map_err(sign_err)
    }
}

fn ensure_empty(dir: &Path) -> Result<(), CaError> {
    if dir.join(CA_CERT_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
        return Err(CaError::AlreadyExists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

fn write_ca_files(
    dir: &Path,
    trust_domain: &TrustDomain,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), CaError> {
    let jwt_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_err)?;
    write_atomic(&dir.join(CA_KEY_FILE), key_pem.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join(JWT_KEY_FILE),
        jwt_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(TRUST_DOMAIN_FILE),
        format!("{trust_domain}\n").as_bytes(),
        0o644,
    )?;
    write_atomic(&dir.join(CA_CERT_FILE), cert_pem.as_bytes(), 0o644)
}

fn first_certificate(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>, CaError> {
    crate::pem::certificates(pem)
        .map_err(|reason| CaError::Invalid {
            path: path.to_owned(),
            reason,
        })?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::Invalid {
            path: path.to_owned(),
            reason: "holds no CERTIFICATE block".into(),
        })
}

/// The trust domain named by a CA certificate's `spiffe://td` URI SAN, if it has one.
fn trust_domain_of_ca(der: &[u8]) -> Option<TrustDomain> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => TrustDomain::new(uri).ok(),
        _ => None,
    })
}

/// A CA certificate must say CA=true, may sign certificates, and belong to `key`.
fn check_ca_certificate(der: &[u8], key: &KeyPair, path: &Path) -> Result<(), CaError> {
    let invalid = |reason: String| CaError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => {
            return Err(invalid(
                "not a CA certificate (basic constraints CA=true is missing)".into(),
            ));
        }
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(invalid("key usage lacks keyCertSign".into()));
    }
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err(invalid(
            "the private key does not belong to this certificate".into(),
        ));
    }
    Ok(())
}

fn random_serial(salt: &[u8]) -> SerialNumber {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(nanos.to_le_bytes());
    let mut bytes = hasher.finalize()[..16].to_vec();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_go_beside_the_spiffe_id_and_bad_ones_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let td = TrustDomain::new("warden.local").expect("trust domain");
        let ca = CertificateAuthority::init(&dir.path().join("ca"), &td).expect("init");
        let id = SpiffeId::new("spiffe://warden.local/ns/warden-system/sa/gw").expect("id");
        let names = [
            "*.team-beta.a2a.localhost".to_owned(),
            "gw.example".to_owned(),
        ];
        let svid = ca
            .issue_x509_named(&id, &names, Duration::from_secs(60))
            .expect("issued");
        let (_, cert) = x509_parser::parse_x509_certificate(&svid.chain[0]).expect("parses");
        let san = cert
            .subject_alternative_name()
            .expect("one SAN extension")
            .expect("present");
        let found: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().any(|n| n.contains(id.as_str())), "{found:?}");
        assert!(
            found
                .iter()
                .any(|n| n.contains("*.team-beta.a2a.localhost"))
        );
        assert_eq!(crate::svid::dns_names_of(&svid.chain[0]), names);
        let plain = ca.issue_x509(&id, Duration::from_secs(60)).expect("issued");
        assert!(crate::svid::dns_names_of(&plain.chain[0]).is_empty());
        for bad in ["", "a b.example", "-x.example", "x.*.example", "a..b"] {
            let refused = ca.issue_x509_named(&id, &[bad.to_owned()], Duration::from_secs(60));
            assert!(
                matches!(&refused, Err(CaError::BadDnsName { name, .. }) if name == bad),
                "{bad:?} was not refused by name"
            );
        }
    }
}
