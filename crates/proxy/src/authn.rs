//! Authentication at the gateway: the mTLS peer, else a bearer JWT — a JWT-SVID checked
//! against the trust bundle, or a token of a configured OIDC issuer checked against its JWKS —
//! else anonymous. A token that is present but bad is an error, never anonymous.
//! Self-asserted headers (`X-User-Id`, …) never authenticate.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use warden_identity::jwt::ALLOWED_ALGORITHMS;
use warden_identity::{SpiffeId, TrustBundleSet};
use warden_model::policy::Caller;

/// A configured OIDC issuer with its keys.
#[derive(Clone)]
pub struct OidcIssuer {
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Its JWKS.
    pub keys: JwkSet,
}

/// What tokens the gateway accepts.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// Bundles with JWT authorities, for JWT-SVIDs.
    pub svid_bundles: Option<TrustBundleSet>,
    /// The audience JWT-SVIDs must carry.
    pub svid_audience: String,
    /// OIDC issuers by `iss`.
    pub issuers: HashMap<String, OidcIssuer>,
}

/// A refused token, with the reason the client and the audit log see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(pub String);

/// How the caller was authenticated.
pub type Authn = &'static str;

/// Authenticates a bearer token.
pub fn authenticate_bearer(
    token: &str,
    config: &JwtConfig,
) -> Result<(Caller, Authn), TokenRejected> {
    let reject = |s: String| TokenRejected(s);
    // `decode_header` refuses `alg: none` (not an algorithm it knows), which is what we want.
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| reject(format!("malformed token: {e}")))?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(reject(format!(
            "algorithm {:?} is not allowed (asymmetric algorithms only)",
            header.alg
        )));
    }
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(token)
        .map(|d| d.claims)
        .map_err(|e| reject(format!("malformed token: {e}")))?;
    let iss = claims.get("iss").and_then(|v| v.as_str());
    if let Some(issuer) = iss.and_then(|i| config.issuers.get(i)) {
        let iss = iss.unwrap_or_default();
        let kid = header.kid.as_deref().unwrap_or_default();
        let jwk = issuer
            .keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| reject(format!("issuer {iss} has no key {kid:?}")))?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| reject(format!("unusable key {kid:?}: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[iss]);
        validation.set_audience(&issuer.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| reject(reason(&e)))?;
        let subject = data
            .claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        return Ok((
            Caller::Jwt {
                issuer: iss.to_owned(),
                subject,
            },
            "oidc",
        ));
    }
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if sub.starts_with("spiffe://")
        && let Some(bundles) = &config.svid_bundles
    {
        let verified =
            warden_identity::jwt::validate_jwt_svid(token, bundles, &config.svid_audience)
                .map_err(|e| reject(format!("JWT-SVID refused: {e}")))?;
        return Ok((Caller::Spiffe(verified.spiffe_id), "jwt-svid"));
    }
    match iss {
        Some(iss) => Err(reject(format!("unknown issuer {iss}"))),
        None if SpiffeId::new(sub).is_ok() => Err(reject(
            "JWT-SVIDs are not accepted here (no JWT bundle configured)".into(),
        )),
        None => Err(reject("token has no issuer".into())),
    }
}

fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        other => format!("token refused: {other:?}"),
    }
}
