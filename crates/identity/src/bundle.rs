//! Trust bundles: the CA certificates (and JWT signing keys) of each trust domain.
//!
//! A peer's chain is verified only against the bundle of the peer's own trust domain, so the
//! set is a map keyed by trust domain. Bundles load from PEM files (one trust domain's CAs) and
//! from the SPIFFE bundle format (a JWKS document with `use: x509-svid` / `jwt-svid` keys).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde::{Deserialize, Serialize};

use crate::id::TrustDomain;

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read bundle {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text held no certificate.
    #[error("bundle {origin} holds no CERTIFICATE block")]
    Empty {
        /// Where the bundle came from.
        origin: String,
    },
    /// A certificate in the bundle cannot serve as a trust anchor.
    #[error("bundle {origin}: certificate #{index} is not a usable CA certificate: {reason}")]
    BadCertificate {
        /// Where the bundle came from.
        origin: String,
        /// Zero-based position in the bundle.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The SPIFFE bundle JSON is malformed.
    #[error("bundle {origin}: {reason}")]
    BadJwks {
        /// Where the bundle came from.
        origin: String,
        /// What is wrong, naming the key and field.
        reason: String,
    },
}

/// A JWT signing key of a trust domain, as published in its SPIFFE bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtAuthority {
    /// Key ID, matched against the `kid` of a JWT-SVID's header.
    pub kid: String,
    /// The key in JWK form (`kty`, `crv`, `x`, `y` or `n`, `e`).
    pub jwk: Jwk,
}

/// The public-key members of a JWK that SPIFFE bundles use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC` or `RSA`.
    pub kty: String,
    /// Curve of an EC key (`P-256`, `P-384`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// The roots of trust of one trust domain.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    /// Parsed once so that verifying a handshake does not re-parse the CA certificates.
    anchors: Vec<TrustAnchor<'static>>,
    jwt_authorities: Vec<JwtAuthority>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("x509_authorities", &self.x509_authorities.len())
            .field("jwt_authorities", &self.jwt_authorities.len())
            .finish()
    }
}

impl TrustBundle {
    /// A bundle from DER CA certificates; `origin` names the source in errors.
    pub fn from_der(
        trust_domain: TrustDomain,
        x509_authorities: Vec<CertificateDer<'static>>,
        origin: &str,
    ) -> Result<Self, BundleError> {
        let anchors = x509_authorities
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| BundleError::BadCertificate {
                        origin: origin.to_owned(),
                        index,
                        reason: format!("{e:?}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust_domain,
            x509_authorities,
            anchors,
            jwt_authorities: Vec::new(),
        })
    }

    /// A bundle from PEM text holding one or more CA certificates.
    pub fn from_pem(
        trust_domain: TrustDomain,
        pem: &[u8],
        origin: &str,
    ) -> Result<Self, BundleError> {
        let certs = crate::pem::certificates(pem).map_err(|reason| BundleError::BadJwks {
            origin: origin.to_owned(),
            reason,
        })?;
        if certs.is_empty() {
            return Err(BundleError::Empty {
                origin: origin.to_owned(),
            });
        }
        Self::from_der(trust_domain, certs, origin)
    }

    /// Loads a bundle file: SPIFFE bundle JSON when it starts with `{`, PEM otherwise.
    pub fn load(trust_domain: TrustDomain, path: &Path) -> Result<Self, BundleError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| BundleError::Read {
            path: origin.clone(),
            source,
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Self::from_spiffe_json(trust_domain, &bytes, &origin)
        } else {
            Self::from_pem(trust_domain, &bytes, &origin)
        }
    }

    /// Parses the SPIFFE bundle format (JWKS with `use` = `x509-svid` or `jwt-svid`).
    pub fn from_spiffe_json(
        trust_domain: TrustDomain,
        json: &[u8],
        origin: &str,
    ) -> Result<Self, BundleError> {
        let bad = |reason: String| BundleError::BadJwks {
            origin: origin.to_owned(),
            reason,
        };
        let doc: SpiffeBundleDoc =
            serde_json::from_slice(json).map_err(|e| bad(format!("not a JWKS document: {e}")))?;
        let mut certs = Vec::new();
        let mut jwt = Vec::new();
        for (i, key) in doc.keys.into_iter().enumerate() {
            match key.key_use.as_deref() {
                Some("x509-svid") => {
                    let [one] = key.x5c.as_slice() else {
                        return Err(bad(format!(
                            "keys[{i}].x5c: an x509-svid key must carry exactly one certificate"
                        )));
                    };
                    let der = STANDARD
                        .decode(one)
                        .map_err(|e| bad(format!("keys[{i}].x5c[0]: not base64: {e}")))?;
                    certs.push(CertificateDer::from(der));
                }
                Some("jwt-svid") => {
                    let kid = key
                        .kid
                        .filter(|k| !k.is_empty())
                        .ok_or_else(|| bad(format!("keys[{i}].kid: a jwt-svid key needs a kid")))?;
                    jwt.push(JwtAuthority { kid, jwk: key.jwk });
                }
                // The SPIFFE bundle spec says keys with an unknown use are ignored.
                _ => {}
            }
        }
        let mut bundle = Self::from_der(trust_domain, certs, origin)?;
        bundle.jwt_authorities = jwt;
        Ok(bundle)
    }

    /// The whole bundle (X.509 and JWT authorities) in the SPIFFE bundle format, as it is
    /// published for federation.
    pub fn to_spiffe_json(&self) -> Vec<u8> {
        self.to_jwks(true)
    }

    /// The JWT authorities only, as the Workload API's `FetchJWTBundles` carries them.
    pub fn to_jwt_jwks(&self) -> Vec<u8> {
        self.to_jwks(false)
    }

    fn to_jwks(&self, with_x509: bool) -> Vec<u8> {
        let x509 = if with_x509 {
            &self.x509_authorities[..]
        } else {
            &[]
        };
        let mut keys: Vec<SpiffeBundleKey> = x509
            .iter()
            .map(|der| SpiffeBundleKey {
                key_use: Some("x509-svid".into()),
                kid: None,
                x5c: vec![STANDARD.encode(der)],
                jwk: x509_jwk(der),
            })
            .collect();
        keys.extend(self.jwt_authorities.iter().map(|a| SpiffeBundleKey {
            key_use: Some("jwt-svid".into()),
            kid: Some(a.kid.clone()),
            x5c: Vec::new(),
            jwk: a.jwk.clone(),
        }));
        serde_json::to_vec(&SpiffeBundleDoc { keys }).unwrap_or_default()
    }

    /// Adds a JWT signing key.
    pub fn with_jwt_authority(mut self, authority: JwtAuthority) -> Self {
        self.jwt_authorities.push(authority);
        self
    }

    /// The trust domain whose roots these are.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificates, DER.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// The CA certificates as webpki trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The JWT signing keys.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// The CA certificates concatenated as DER, the Workload API's wire form of a bundle.
    pub fn x509_der_concatenated(&self) -> Vec<u8> {
        self.x509_authorities
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect()
    }

    /// The CA certificates as PEM text.
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|c| crate::pem::encode_certificate(c))
            .collect()
    }
}

/// EC public keys of x509 authorities are published as JWKs too, as SPIRE does.
fn x509_jwk(der: &[u8]) -> Jwk {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Jwk::default();
    };
    let spki = &cert.tbs_certificate.subject_pki;
    let point = spki.subject_public_key.data.as_ref();
    if point.len() == 65 && point[0] == 4 {
        Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..])),
            ..Jwk::default()
        }
    } else {
        Jwk::default()
    }
}

#[derive(Serialize, Deserialize)]
struct SpiffeBundleDoc {
    keys: Vec<SpiffeBundleKey>,
}

#[derive(Serialize, Deserialize)]
struct SpiffeBundleKey {
    #[serde(rename = "use", default)]
    key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    x5c: Vec<String>,
    #[serde(flatten)]
    jwk: Jwk,
}

/// The bundles of every trust domain a workload trusts, keyed by trust domain name (so a
/// handshake can look one up from the peer's ID without allocating).
#[derive(Debug, Clone, Default)]
pub struct TrustBundleSet {
    bundles: HashMap<String, Arc<TrustBundle>>,
}

impl TrustBundleSet {
    /// A set holding one bundle.
    pub fn single(bundle: TrustBundle) -> Self {
        let mut set = Self::default();
        set.insert(bundle);
        set
    }

    /// Adds or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles
            .insert(bundle.trust_domain.name().to_owned(), Arc::new(bundle));
    }

    /// The bundle of a trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Arc<TrustBundle>> {
        self.get_by_name(trust_domain.name())
    }

    /// The bundle of the trust domain with this name (as [`SpiffeId::trust_domain_name`]
    /// returns it).
    ///
    /// [`SpiffeId::trust_domain_name`]: crate::SpiffeId::trust_domain_name
    pub fn get_by_name(&self, trust_domain: &str) -> Option<&Arc<TrustBundle>> {
        self.bundles.get(trust_domain)
    }

    /// Every bundle.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TrustBundle>> {
        self.bundles.values()
    }

    /// Whether no trust domain is trusted.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_der() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn spiffe_json_round_trips_x509_and_jwt_keys() {
        let td = TrustDomain::new("example.org").unwrap();
        let bundle = TrustBundle::from_der(td.clone(), vec![ca_der()], "test")
            .unwrap()
            .with_jwt_authority(JwtAuthority {
                kid: "k1".into(),
                jwk: Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some("eA".into()),
                    y: Some("eQ".into()),
                    ..Jwk::default()
                },
            });
        let json = bundle.to_spiffe_json();
        let back = TrustBundle::from_spiffe_json(td, &json, "test").unwrap();
        assert_eq!(back.x509_authorities(), bundle.x509_authorities());
        assert_eq!(back.jwt_authorities(), bundle.jwt_authorities());
        assert_eq!(back.anchors().len(), 1);
    }

    #[test]
    fn malformed_spiffe_json_names_the_key_and_field() {
        let td = TrustDomain::new("example.org").unwrap();
        let err = TrustBundle::from_spiffe_json(
            td.clone(),
            br#"{"keys":[{"use":"x509-svid","kty":"EC","x5c":[]}]}"#,
            "b.json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("b.json"), "{err}");
        assert!(err.to_string().contains("keys[0].x5c"), "{err}");
        let err = TrustBundle::from_spiffe_json(
            td,
            br#"{"keys":[{"use":"jwt-svid","kty":"EC"}]}"#,
            "b.json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("keys[0].kid"), "{err}");
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let td = TrustDomain::new("example.org").unwrap();
        let err = TrustBundle::from_pem(td, b"hello", "x.pem").unwrap_err();
        assert!(matches!(err, BundleError::Empty { .. }), "{err}");
    }
}
