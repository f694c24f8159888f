//! The webhooks' serving certificate and the CA the apiserver trusts it by (`caBundle`).
//!
//! This is ordinary web PKI (the apiserver checks the host name), not SPIFFE: a small CA of
//! its own, made by `warden install` or kept in a `--tls-dir` so that re-running install keeps
//! the same `caBundle`. File names follow the `kubernetes.io/tls` Secret (`tls.crt`,
//! `tls.key`, `ca.crt`), so the same directory layout is a mounted Secret in the cluster and a
//! local directory out of it. Keys are written 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use warden_identity::ca::write_atomic;

/// The CA certificate (the `caBundle`).
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key (0600), kept so that a new serving certificate keeps the same `caBundle`.
pub const CA_KEY_FILE: &str = "ca.key";
/// The serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key (0600).
pub const KEY_FILE: &str = "tls.key";

const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate closer than this to its expiry is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds something unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating or signing failed.
    #[error("cannot make the webhook certificate: {0}")]
    Signing(String),
}

fn sign_err(e: impl std::fmt::Display) -> CertError {
    CertError::Signing(e.to_string())
}

/// The CA and the serving certificate, as PEM (empty by default: only for listing names).
#[derive(Clone, Default)]
pub struct WebhookCerts {
    /// The CA certificate: the webhook configurations' `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCerts").finish_non_exhaustive()
    }
}

struct Ca {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> Result<Ca, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warden");
    dn.push(DnType::CommonName, "Warden webhook CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(60);
    params.not_after = now + CA_TTL;
    let cert = params.self_signed(&key).map_err(sign_err)?;
    let pem = cert.pem();
    let key_pem = key.serialize_pem();
    let issuer = Issuer::new(params, key);
    Ok(Ca {
        pem,
        key_pem,
        issuer,
    })
}

fn serving(ca: &Ca, hosts: &[String]) -> Result<WebhookCerts, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warden");
    dn.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names = hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => h.clone().try_into().map(SanType::DnsName).map_err(sign_err),
        })
        .collect::<Result<_, _>>()?;
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(60);
    params.not_after = now + SERVING_TTL;
    let cert = params.signed_by(&key, &ca.issuer).map_err(sign_err)?;
    Ok(WebhookCerts {
        ca_pem: ca.pem.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh CA and a serving certificate for `hosts` (DNS names or IP addresses), in memory.
pub fn generate(hosts: &[String]) -> Result<WebhookCerts, CertError> {
    serving(&new_ca()?, hosts)
}

fn read(dir: &Path, name: &str) -> Result<Option<String>, CertError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CertError::Io { path, source }),
    }
}

fn invalid(dir: &Path, name: &str, reason: impl std::fmt::Display) -> CertError {
    CertError::Invalid {
        path: dir.join(name),
        reason: reason.to_string(),
    }
}

fn load_ca(dir: &Path, pem: String, key_pem: String) -> Result<Ca, CertError> {
    let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(dir, CA_KEY_FILE, e))?;
    let der = warden_identity::pem::certificates(pem.as_bytes())
        .map_err(|e| invalid(dir, CA_CERT_FILE, e))?
        .into_iter()
        .next()
        .ok_or_else(|| invalid(dir, CA_CERT_FILE, "holds no CERTIFICATE block"))?;
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| invalid(dir, CA_CERT_FILE, e))?;
    Ok(Ca {
        pem,
        key_pem,
        issuer,
    })
}

/// Whether `cert_pem` was issued by `ca_pem`, names every host and is not about to expire.
fn still_good(ca_pem: &str, cert_pem: &str, hosts: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let (Ok(ca), Ok(leaf)) = (
        warden_identity::pem::certificates(ca_pem.as_bytes()),
        warden_identity::pem::certificates(cert_pem.as_bytes()),
    ) else {
        return false;
    };
    let (Some(ca), Some(leaf)) = (ca.first(), leaf.first()) else {
        return false;
    };
    let (Ok((_, ca)), Ok((_, leaf))) = (
        x509_parser::parse_x509_certificate(ca),
        x509_parser::parse_x509_certificate(leaf),
    ) else {
        return false;
    };
    if leaf.verify_signature(Some(ca.public_key())).is_err() {
        return false;
    }
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    if leaf.validity().not_after.to_datetime() < renew_at {
        return false;
    }
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    hosts.iter().all(|h| {
        let h = h
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or(h.clone());
        names.contains(&h)
    })
}

/// The certificates in `dir`, made or completed as needed: the CA is created once and kept
/// (so the `caBundle` stays the same across `warden install` runs); the serving certificate
/// is reissued when it does not name every one of `hosts`, was not issued by that CA, or
/// expires within 30 days.
pub fn ensure_dir(dir: &Path, hosts: &[String]) -> Result<WebhookCerts, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca = match (read(dir, CA_CERT_FILE)?, read(dir, CA_KEY_FILE)?) {
        (Some(pem), Some(key)) => load_ca(dir, pem, key)?,
        (None, None) => {
            let ca = new_ca()?;
            write(dir, CA_KEY_FILE, &ca.key_pem, 0o600)?;
            write(dir, CA_CERT_FILE, &ca.pem, 0o644)?;
            ca
        }
        (Some(_), None) => return Err(invalid(dir, CA_KEY_FILE, "missing beside ca.crt")),
        (None, Some(_)) => return Err(invalid(dir, CA_CERT_FILE, "missing beside ca.key")),
    };
    if let (Some(cert_pem), Some(key_pem)) = (read(dir, CERT_FILE)?, read(dir, KEY_FILE)?)
        && still_good(&ca.pem, &cert_pem, hosts)
    {
        return Ok(WebhookCerts {
            ca_pem: ca.pem,
            cert_pem,
            key_pem,
        });
    }
    let certs = serving(&ca, hosts)?;
    write(dir, KEY_FILE, &certs.key_pem, 0o600)?;
    write(dir, CERT_FILE, &certs.cert_pem, 0o644)?;
    Ok(certs)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), CertError> {
    write_atomic(&dir.join(name), text.as_bytes(), mode).map_err(|e| CertError::Invalid {
        path: dir.join(name),
        reason: e.to_string(),
    })
}

/// `dir`'s `tls.crt` and `tls.key` as rustls serves them.
pub fn load_certified_key(dir: &Path) -> Result<rustls::sign::CertifiedKey, CertError> {
    let cert_pem = read(dir, CERT_FILE)?.ok_or_else(|| invalid(dir, CERT_FILE, "missing"))?;
    let key_pem = read(dir, KEY_FILE)?.ok_or_else(|| invalid(dir, KEY_FILE, "missing"))?;
    let chain = warden_identity::pem::certificates(cert_pem.as_bytes())
        .map_err(|e| invalid(dir, CERT_FILE, e))?;
    if chain.is_empty() {
        return Err(invalid(dir, CERT_FILE, "holds no CERTIFICATE block"));
    }
    let key = warden_identity::pem::private_key(key_pem.as_bytes())
        .map_err(|e| invalid(dir, KEY_FILE, e))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| invalid(dir, KEY_FILE, format!("does not match tls.crt: {e}")))
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The serving certificate of a directory, re-read when its files change (a mounted Secret
/// is updated in place by the kubelet; cert-manager renews it), so renewal needs no restart.
#[derive(Debug)]
pub struct ReloadingCert {
    dir: PathBuf,
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    stamp: std::sync::Mutex<Option<(std::time::SystemTime, std::time::SystemTime)>>,
}

impl ReloadingCert {
    /// Loads `dir`'s certificate; an error names the file.
    pub fn new(dir: &Path) -> Result<Self, CertError> {
        let current = load_certified_key(dir)?;
        let cert = Self {
            dir: dir.to_owned(),
            current: arc_swap::ArcSwap::from_pointee(current),
            stamp: std::sync::Mutex::new(None),
        };
        *cert.stamp.lock().unwrap_or_else(|e| e.into_inner()) = cert.modified();
        Ok(cert)
    }

    fn modified(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        let time = |name| {
            std::fs::metadata(self.dir.join(name))
                .and_then(|m| m.modified())
                .ok()
        };
        Some((time(CERT_FILE)?, time(KEY_FILE)?))
    }

    /// Re-reads the files if they changed since the last look; a bad pair keeps the old one.
    pub fn refresh(&self) {
        let now = self.modified();
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now == *stamp {
            return;
        }
        match load_certified_key(&self.dir) {
            Ok(key) => {
                self.current.store(std::sync::Arc::new(key));
                *stamp = now;
                tracing::info!(dir = %self.dir.display(), "webhook serving certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "keeping the previous webhook certificate"),
        }
    }

    /// A rustls server configuration that serves the current certificate (HTTP/2 and 1.1).
    pub fn server_config(self: &std::sync::Arc<Self>) -> Result<rustls::ServerConfig, CertError> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(provider()))
                .with_safe_default_protocol_versions()
                .map_err(sign_err)?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_kept_and_the_serving_cert_follows_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["127.0.0.1".to_owned()];
        let first = ensure_dir(dir.path(), &hosts).unwrap();
        for (name, mode) in [(CA_KEY_FILE, 0o600), (KEY_FILE, 0o600), (CERT_FILE, 0o644)] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let again = ensure_dir(dir.path(), &hosts).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(
            first.cert_pem, again.cert_pem,
            "a good certificate is reused"
        );
        let more = vec!["127.0.0.1".to_owned(), "webhook.example".to_owned()];
        let reissued = ensure_dir(dir.path(), &more).unwrap();
        assert_eq!(first.ca_pem, reissued.ca_pem, "same caBundle");
        assert_ne!(
            first.cert_pem, reissued.cert_pem,
            "new host, new certificate"
        );
        assert!(still_good(&reissued.ca_pem, &reissued.cert_pem, &more));
        assert!(!still_good(
            &generate(&more).unwrap().ca_pem,
            &reissued.cert_pem,
            &more
        ));
        ReloadingCert::new(dir.path()).unwrap();
    }

    #[test]
    fn a_lone_ca_cert_is_an_error_naming_the_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), "x").unwrap();
        let err = ensure_dir(dir.path(), &["h".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.key") && err.contains("missing"), "{err}");
    }
}
