//! Authentication: who the caller is. The mTLS peer's verified SPIFFE ID first; at the
//! gateway, else a bearer JWT (a JWT-SVID or an OIDC issuer's token — a bad one is 401, never
//! anonymous); at a sidecar, the caller a trusted gateway forwarded; else anonymous.
//! Self-asserted headers never authenticate.

use http::{Response, StatusCode};
use warden_model::policy::Caller;

use super::{Exchange, Handler, Refusal};
use crate::authn::authenticate_bearer;
use crate::authz::resolve_caller;
use crate::http::{ProxyBody, json_error};

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
    if let Some(id) = &ex.peer.id {
        ex.caller = Caller::Spiffe(id.clone());
        ex.authn = "mtls";
        return Ok(());
    }
    let Some(token) = bearer(&ex.parts.headers) else {
        return Ok(());
    };
    match authenticate_bearer(token, &ex.policy.jwt) {
        Ok((caller, authn)) => {
            ex.caller = caller;
            ex.authn = authn;
            // The token was for the gateway.
            ex.parts.headers.remove(http::header::AUTHORIZATION);
            Ok(())
        }
        Err(rejected) => {
            ex.authn = "invalid";
            ex.refused_by = Some("authentication");
            Err(Box::new(json_error(
                StatusCode::UNAUTHORIZED,
                "authentication",
                &rejected.0,
            )))
        }
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
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
