//! Admission: header hygiene before any later step reads a header.
//!
//! - Identity headers sent by the client and hop-by-hop headers are removed.
//! - A caller asserted by the previous hop (`x-warden-caller`) is set aside, so that only
//!   authentication decides whether to believe it, and it never reaches the app as sent; so
//!   is an egress's own address (`x-warden-egress-url`), for the card service.
//! - Header names with `_`: WSGI, CGI, PHP-FPM and Rack read `_` as `-`, so
//!   `X_Forwarded_Client_Cert` would reach such an app as the identity header itself. They
//!   are dropped (as nginx and Envoy do), or the request is refused with 400
//!   (`--underscore-headers reject`).
//! - On a sidecar's mesh port, a connection accepted under an earlier mode that the current
//!   mode would refuse (plaintext after a switch to Strict, mTLS after one to Disabled) is
//!   refused at its next request and closed.

use http::{HeaderName, Response, StatusCode};
use warden_model::MtlsMode;

use super::{Exchange, Handler, Refusal};
pub use crate::config::UnderscoreHeaders;
use crate::http::{CALLER_HEADER, EGRESS_URL_HEADER, ProxyBody, json_error, strip_inbound_headers};

/// What admission does on a listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission {
    /// Header names with `_`.
    pub underscore_headers: UnderscoreHeaders,
    /// Check each request's connection against the current mode (a sidecar's mesh port,
    /// whose mode can change while connections stay open).
    pub recheck_mode: bool,
}

/// The admission step.
pub struct Admit<S> {
    config: Admission,
    inner: S,
}

impl<S> Admit<S> {
    /// Admission by `config`, then `inner`.
    pub fn new(config: Admission, inner: S) -> Self {
        Self { config, inner }
    }
}

impl<S: Handler> Handler for Admit<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        if self.config.recheck_mode
            && let Err(refusal) = current_mode_admits(ex)
        {
            return *refusal;
        }
        if let Err(refusal) = underscores(ex, self.config.underscore_headers) {
            return *refusal;
        }
        ex.claimed_caller = ex.parts.headers.remove(CALLER_HEADER);
        ex.claimed_egress_url = ex.parts.headers.remove(EGRESS_URL_HEADER);
        strip_inbound_headers(&mut ex.parts.headers);
        self.inner.handle(ex).await
    }
}

/// Whether the mode now in force would have accepted this request's connection.
fn current_mode_admits(ex: &mut Exchange) -> Result<(), Refusal> {
    let verified = ex.peer.id.is_some();
    let refused = match ex.policy.settings.mode {
        MtlsMode::Strict => !verified,
        MtlsMode::Disabled => verified,
        MtlsMode::Permissive => false,
    };
    if !refused {
        return Ok(());
    }
    ex.refused_by = Some("mode_changed");
    let mut response = json_error(
        StatusCode::FORBIDDEN,
        "mode_changed",
        "the sidecar's mTLS mode changed and no longer accepts this connection; reconnect",
    );
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    Err(Box::new(response))
}

fn underscores(ex: &mut Exchange, rule: UnderscoreHeaders) -> Result<(), Refusal> {
    let headers = &mut ex.parts.headers;
    // The common request has none: one pass over its few names.
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return Ok(());
    }
    let named: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    if rule == UnderscoreHeaders::Reject {
        ex.refused_by = Some("underscore_header");
        let message = format!(
            "request header {:?} contains '_', which some apps read as '-'; such headers are refused here",
            named[0].as_str()
        );
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "underscore_header",
            &message,
        )));
    }
    for name in named {
        headers.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{Answer, policy, seen, with_headers};

    #[tokio::test]
    async fn identity_headers_are_gone_and_the_forwarded_caller_is_set_aside() {
        let (last, slot) = Answer::ok();
        let step = Admit::new(Admission::default(), last);
        let mut ex = with_headers(
            "GET",
            "/",
            &[
                ("x-warden-caller", "spiffe://warden.local/ns/a/sa/b"),
                (
                    "x-forwarded-client-cert",
                    "URI=spiffe://warden.local/ns/a/sa/b",
                ),
                ("x-spiffe-id", "spiffe://warden.local/ns/a/sa/b"),
                ("x-warden-egress-url", "http://127.0.0.1:15001"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("accept", "*/*"),
            ],
            policy(),
        );
        step.handle(&mut ex).await;
        let headers = seen(&slot).headers;
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
        assert_eq!(
            ex.claimed_caller.as_ref().and_then(|v| v.to_str().ok()),
            Some("spiffe://warden.local/ns/a/sa/b")
        );
        assert_eq!(
            ex.claimed_egress_url.as_ref().and_then(|v| v.to_str().ok()),
            Some("http://127.0.0.1:15001")
        );
    }

    const LOOK_ALIKES: [(&str, &str); 4] = [
        (
            "X_Forwarded_Client_Cert",
            "URI=spiffe://warden.local/ns/a/sa/b",
        ),
        ("x-warden_caller", "spiffe://warden.local/ns/a/sa/b"),
        ("x_spiffe_id", "spiffe://warden.local/ns/a/sa/b"),
        ("accept", "*/*"),
    ];

    #[tokio::test]
    async fn underscore_headers_are_dropped_by_default() {
        let (last, slot) = Answer::ok();
        let step = Admit::new(Admission::default(), last);
        let mut ex = with_headers("GET", "/", &LOOK_ALIKES, policy());
        step.handle(&mut ex).await;
        let headers = seen(&slot).headers;
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
        assert!(ex.claimed_caller.is_none());
    }

    #[tokio::test]
    async fn underscore_headers_can_be_refused_with_400_naming_one() {
        let (last, slot) = Answer::ok();
        let config = Admission {
            underscore_headers: UnderscoreHeaders::Reject,
            recheck_mode: false,
        };
        let step = Admit::new(config, last);
        let mut ex = with_headers("GET", "/", &LOOK_ALIKES, policy());
        let response = step.handle(&mut ex).await;
        assert_eq!(response.status(), 400);
        assert_eq!(ex.refused_by, Some("underscore_header"));
        assert!(slot.lock().expect("lock").is_none());
    }

    #[tokio::test]
    async fn a_plaintext_connection_is_refused_and_closed_once_the_mode_is_strict() {
        let mut settings = crate::pipeline::test_support::settings();
        settings.mode = MtlsMode::Strict;
        let strict = std::sync::Arc::new(crate::pipeline::Policy {
            snapshot: None,
            settings,
            jwt: Default::default(),
        });
        let config = Admission {
            underscore_headers: UnderscoreHeaders::Drop,
            recheck_mode: true,
        };
        let (last, slot) = Answer::ok();
        let step = Admit::new(config, last);
        let mut ex = with_headers("GET", "/", &[], strict);
        let response = step.handle(&mut ex).await;
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()[http::header::CONNECTION], "close");
        assert!(slot.lock().expect("lock").is_none());
    }
}
