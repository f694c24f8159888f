//! Admission: header hygiene before any later step reads a header. Identity headers sent by
//! the client and hop-by-hop headers are removed; a caller asserted by the previous hop
//! (`x-warden-caller`) is set aside, so that only authentication decides whether to believe
//! it, and it never reaches the app as sent.

use http::Response;

use super::{Exchange, Handler};
use crate::http::{CALLER_HEADER, ProxyBody, strip_inbound_headers};

/// What admission does on a listener.
#[derive(Debug, Clone, Default)]
pub struct Admission {}

/// The admission step.
pub struct Admit<S> {
    #[allow(dead_code)]
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
        ex.claimed_caller = ex.parts.headers.remove(CALLER_HEADER);
        strip_inbound_headers(&mut ex.parts.headers);
        self.inner.handle(ex).await
    }
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
    }
}
