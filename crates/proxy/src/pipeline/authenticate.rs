//! Authentication: who the caller is. The mTLS peer's verified SPIFFE ID first; at the
//! gateway, else a bearer JWT (a JWT-SVID or an OIDC issuer's token — a bad one is 401, never
//! anonymous); at a sidecar, the caller a trusted gateway forwarded; else anonymous.
//! Self-asserted headers never authenticate.

use http::{HeaderValue, Response, StatusCode};
use warden_a2a::denial::{Denial, Refusal as DenialKind};
use warden_model::policy::Caller;

use super::{Exchange, Handler, Refusal};
use crate::authn::authenticate_bearer;
use crate::authz::{caller_header_value, resolve_caller};
use crate::http::{ProxyBody, denial_response, is_grpc, json_error};

/// How a listener authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authn {
    /// The gateway: mTLS peer, else a bearer token, else anonymous.
    Gateway,
    /// A sidecar's mesh port: mTLS peer, or the caller a configured gateway forwarded.
    Sidecar,
    /// The egress port: the local app, anonymous.
    Local,
}

/// The authentication step.
pub struct Authenticate<S> {
    how: Authn,
    inner: S,
}

impl<S> Authenticate<S> {
    /// Authentication by `how`, then `inner`.
    pub fn new(how: Authn, inner: S) -> Self {
        Self { how, inner }
    }
}

impl<S: Handler> Handler for Authenticate<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        match self.how {
            Authn::Gateway => {
                if let Err(refusal) = gateway(ex) {
                    return *refusal;
                }
            }
            Authn::Sidecar => {
                let (caller, forwarded) =
                    resolve_caller(&ex.peer, ex.claimed_caller.as_ref(), &ex.policy.settings);
                ex.authn = if ex.peer.id.is_some() {
                    "mtls"
                } else {
                    "anonymous"
                };
                ex.caller = caller;
                ex.forwarded = forwarded;
            }
            Authn::Local => {}
        }
        self.inner.handle(ex).await
    }
}

fn gateway(ex: &mut Exchange) -> Result<(), Refusal> {
    let credential = match credential(&ex.parts.headers) {
        Ok(credential) => credential,
        Err((status, message)) => return Err(Box::new(refuse(ex, status, message))),
    };
    // Credentials are for the gateway: the agent never sees them, unless it opted in.
    let token = match credential {
        Credential::Bearer(token) => Some(token.to_owned()),
        Credential::None | Credential::Other => None,
    };
    if !target_takes_authorization(ex) {
        ex.parts.headers.remove(http::header::AUTHORIZATION);
    }
    if let Some(id) = &ex.peer.id {
        ex.caller = Caller::Spiffe(id.clone());
        ex.authn = "mtls";
        return Ok(());
    }
    let Some(token) = token else {
        return Ok(());
    };
    match authenticate_bearer(&token, &ex.policy.jwt) {
        // A caller the sidecar cannot be told about is not admitted as someone else.
        Ok((caller, _)) if HeaderValue::from_str(&caller_header_value(&caller)).is_err() => {
            Err(Box::new(refuse(
                ex,
                StatusCode::UNAUTHORIZED,
                "the token's subject has characters that cannot be forwarded (control or non-ASCII)",
            )))
        }
        Ok((caller, authn)) => {
            ex.caller = caller;
            ex.authn = authn;
            Ok(())
        }
        Err(rejected) => Err(Box::new(refuse(ex, StatusCode::UNAUTHORIZED, &rejected.0))),
    }
}

/// Whether the target Agent opted in to receiving the caller's `Authorization`
/// (`spec.forwardAuthorization`); an unknown target, or no snapshot, does not.
fn target_takes_authorization(ex: &Exchange) -> bool {
    match (&ex.policy.snapshot, &ex.target) {
        (Some(snapshot), Some(t)) => snapshot
            .agent(&t.namespace, &t.name)
            .is_some_and(|a| a.forward_authorization),
        _ => false,
    }
}

/// A refused credential: 401 in the binding's own denial shape (JSON-RPC error, google.rpc.Status
/// or gRPC status) naming the rule; a malformed request (400) as a plain JSON error.
fn refuse(ex: &mut Exchange, status: StatusCode, message: &str) -> Response<ProxyBody> {
    ex.authn = "invalid";
    ex.refused_by = Some("authentication");
    if status != StatusCode::UNAUTHORIZED {
        return json_error(status, "authentication", message);
    }
    let target = ex.target.as_ref().map(|t| t.key()).unwrap_or_default();
    let denial = Denial {
        refusal: DenialKind::Unauthenticated,
        rule: "authentication",
        reason: message,
        caller: "the bearer of this token",
        target: &target,
        method: "any call",
    };
    denial_response(&denial, None, is_grpc(&ex.parts.headers))
}

/// What a request's `Authorization` header carries.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    /// No header.
    None,
    /// `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
    Bearer(&'a str),
    /// A scheme the gateway does not authenticate with.
    Other,
}

/// Reads the one `Authorization` header; two of them, or a malformed bearer one, are refused.
fn credential(headers: &http::HeaderMap) -> Result<Credential<'_>, (StatusCode, &'static str)> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credential::None);
    };
    if values.next().is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "more than one Authorization header",
        ));
    }
    let text = value.to_str().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "the Authorization header is not visible ASCII",
        )
    })?;
    let (scheme, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credential::Other);
    }
    let token = rest.trim_matches([' ', '\t']);
    if token.is_empty() || token.contains([' ', '\t']) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "malformed Authorization header: expected Bearer <token>",
        ));
    }
    Ok(Credential::Bearer(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{Answer, exchange, from_peer, policy, seen, with_headers};

    const ORCH: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";

    #[tokio::test]
    async fn the_mtls_peer_is_the_caller_at_the_gateway() {
        let (last, slot) = Answer::ok();
        let step = Authenticate::new(Authn::Gateway, last);
        let mut ex = from_peer(exchange("GET", "/", policy()), ORCH);
        step.handle(&mut ex).await;
        let seen = seen(&slot);
        assert_eq!(seen.authn, "mtls");
        assert_eq!(seen.caller.to_string(), ORCH);
    }

    #[tokio::test]
    async fn a_bad_token_is_401_never_anonymous() {
        let (last, slot) = Answer::ok();
        let step = Authenticate::new(Authn::Gateway, last);
        let mut ex = with_headers(
            "GET",
            "/",
            &[("authorization", "Bearer not-a-jwt")],
            policy(),
        );
        let response = step.handle(&mut ex).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            (ex.authn, ex.refused_by),
            ("invalid", Some("authentication"))
        );
        assert!(slot.lock().expect("lock").is_none());
    }

    #[test]
    fn bearer_schemes_are_case_insensitive_and_bad_headers_are_named() {
        let parse = |values: &[&str]| {
            let mut map = http::HeaderMap::new();
            for v in values {
                map.append(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            credential(&map)
                .map(|c| format!("{c:?}"))
                .map_err(|(s, _)| s.as_u16())
        };
        assert_eq!(parse(&[]), Ok("None".into()));
        for ok in ["Bearer t0k", "bearer t0k", "BEARER\tt0k", "Bearer  t0k "] {
            assert_eq!(parse(&[ok]), Ok("Bearer(\"t0k\")".into()), "{ok:?}");
        }
        assert_eq!(parse(&["Basic dXNlcg=="]), Ok("Other".into()));
        assert_eq!(parse(&["Bearer a", "Bearer b"]), Err(400));
        for bad in ["Bearer", "Bearer ", "bearer a b"] {
            assert_eq!(parse(&[bad]), Err(401), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_gateway_never_forwards_the_authorization_header() {
        let (last, slot) = Answer::ok();
        let step = Authenticate::new(Authn::Gateway, last);
        let mut ex = from_peer(
            with_headers("GET", "/", &[("authorization", "Basic dXNlcg==")], policy()),
            ORCH,
        );
        step.handle(&mut ex).await;
        let seen = seen(&slot);
        assert_eq!(seen.authn, "mtls");
        assert!(!seen.headers.contains_key(http::header::AUTHORIZATION));
    }

    #[tokio::test]
    async fn a_sidecar_believes_a_forwarded_caller_only_from_a_gateway() {
        let gateway = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";
        let mut settings = crate::pipeline::test_support::settings();
        settings
            .gateway_ids
            .push(warden_identity::SpiffeId::new(gateway).expect("id"));
        let policy = std::sync::Arc::new(crate::pipeline::Policy {
            snapshot: None,
            settings,
            jwt: Default::default(),
        });
        for (peer, expected, forwarded) in [(gateway, ORCH, true), (ORCH, ORCH, false)] {
            let (last, slot) = Answer::ok();
            let step = Authenticate::new(Authn::Sidecar, last);
            let mut ex = from_peer(exchange("GET", "/", policy.clone()), peer);
            ex.claimed_caller = Some(http::HeaderValue::from_static(ORCH));
            step.handle(&mut ex).await;
            let seen = seen(&slot);
            assert_eq!(
                (seen.caller.to_string(), seen.forwarded),
                (expected.to_owned(), forwarded)
            );
        }
        // A plaintext caller claiming an identity is anonymous.
        let (last, slot) = Answer::ok();
        let step = Authenticate::new(Authn::Sidecar, last);
        let mut ex = exchange("GET", "/", policy);
        ex.claimed_caller = Some(http::HeaderValue::from_static(ORCH));
        step.handle(&mut ex).await;
        assert_eq!(seen(&slot).caller, Caller::Anonymous);
    }
}
