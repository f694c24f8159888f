//! JWT-SVID validation against trust bundles.
//!
//! The key is chosen by the token's `kid` among the JWT authorities of the trust domain named
//! by its `sub`; only asymmetric algorithms that fit the key are accepted (`none` and HMAC
//! never are). The audience must contain the expected one.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::bundle::{Jwk, TrustBundleSet};
use crate::id::SpiffeId;

/// Why a JWT-SVID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// The token's header or claims cannot be read.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header's algorithm is not an allowed asymmetric one.
    #[error("algorithm {0} is not allowed (only ES256/ES384/RS256/RS384/RS512/PS256/PS384/PS512)")]
    AlgorithmNotAllowed(String),
    /// `sub` is not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID: {0}")]
    BadSubject(String),
    /// No bundle or no key with that `kid` for the subject's trust domain.
    #[error("no JWT authority with kid {kid:?} in trust domain {trust_domain}")]
    UnknownKey {
        /// The `kid` from the header.
        kid: String,
        /// The subject's trust domain.
        trust_domain: String,
    },
    /// Signature, expiry or audience check failed.
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// A verified JWT-SVID.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// All claims of the token.
    pub claims: Value,
}

/// The asymmetric algorithms Warden accepts for JWTs; `none` and HMAC never are.
pub const ALLOWED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, JwtSvidError> {
    let invalid = |e: jsonwebtoken::errors::Error| JwtSvidError::Invalid(e.to_string());
    match (jwk.kty.as_str(), alg) {
        ("EC", Algorithm::ES256 | Algorithm::ES384) => {
            let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
                return Err(JwtSvidError::Invalid("EC key without x/y".into()));
            };
            DecodingKey::from_ec_components(x, y).map_err(invalid)
        }
        ("RSA", Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
        | ("RSA", Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512) => {
            let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
                return Err(JwtSvidError::Invalid("RSA key without n/e".into()));
            };
            DecodingKey::from_rsa_components(n, e).map_err(invalid)
        }
        (kty, alg) => Err(JwtSvidError::AlgorithmNotAllowed(format!(
            "{alg:?} with a {kty} key"
        ))),
    }
}

/// Validates a JWT-SVID: signature by a JWT authority of the subject's trust domain, expiry,
/// and that `audience` is among its audiences.
pub fn validate_jwt_svid(
    token: &str,
    bundles: &TrustBundleSet,
    audience: &str,
) -> Result<VerifiedJwt, JwtSvidError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtSvidError::Malformed(e.to_string()))?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(JwtSvidError::AlgorithmNotAllowed(format!(
            "{:?}",
            header.alg
        )));
    }
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .map_err(|e| JwtSvidError::Malformed(e.to_string()))?;
    let sub = unverified
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtSvidError::BadSubject("missing".into()))?;
    let spiffe_id = SpiffeId::new(sub).map_err(|e| JwtSvidError::BadSubject(e.to_string()))?;
    let kid = header.kid.unwrap_or_default();
    let unknown = || JwtSvidError::UnknownKey {
        kid: kid.clone(),
        trust_domain: spiffe_id.trust_domain_name().to_owned(),
    };
    let bundle = bundles
        .get_by_name(spiffe_id.trust_domain_name())
        .ok_or_else(unknown)?;
    let authority = bundle
        .jwt_authorities()
        .iter()
        .find(|a| a.kid == kid)
        .ok_or_else(unknown)?;
    let key = decoding_key(&authority.jwk, header.alg)?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    validation.leeway = 30;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| JwtSvidError::Invalid(e.to_string()))?;
    Ok(VerifiedJwt {
        spiffe_id,
        claims: data.claims,
    })
}
