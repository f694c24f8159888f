//! Delegation: what the next hop is told about the caller. The gateway adds the delegation
//! headers of the caller's tool reference to the target (`headersFrom`, replacing any the
//! client sent) and the caller it verified in `x-warden-caller` for the target's sidecar; a
//! sidecar tells its app the verified caller in `x-forwarded-client-cert` (Envoy's format).

use std::sync::Arc;

use http::{HeaderValue, Response};
use warden_identity::source::SvidSource;
use warden_model::policy::Caller;

use super::{Exchange, Handler};
use crate::authz::caller_header_value;
use crate::http::{CALLER_HEADER, ProxyBody, XFCC_HEADER, xfcc};

/// What a listener tells the next hop.
pub enum Delegation {
    /// The gateway: delegation headers and `x-warden-caller`.
    Gateway,
    /// A sidecar's mesh port: XFCC, `By=` this workload's own SVID.
    Sidecar(Arc<dyn SvidSource>),
    /// The egress port: nothing.
    None,
}

/// The delegation step.
pub struct Delegate<S> {
    how: Delegation,
    inner: S,
}

impl<S> Delegate<S> {
    /// Headers by `how`, then `inner`.
    pub fn new(how: Delegation, inner: S) -> Self {
        Self { how, inner }
    }
}

impl<S: Handler> Handler for Delegate<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        match &self.how {
            Delegation::Gateway => gateway(ex),
            Delegation::Sidecar(identity) => sidecar(ex, identity.as_ref()),
            Delegation::None => {}
        }
        self.inner.handle(ex).await
    }
}

fn gateway(ex: &mut Exchange) {
    if let (Caller::Spiffe(id), Some(snapshot), Some(target)) =
        (&ex.caller, &ex.policy.snapshot, &ex.target)
    {
        // Parsed when the snapshot was loaded.
        for (name, value) in snapshot.delegation_headers(id, &target.namespace, &target.name) {
            ex.parts.headers.insert(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&caller_header_value(&ex.caller)) {
        ex.parts.headers.insert(CALLER_HEADER, value);
    }
}

fn sidecar(ex: &mut Exchange, identity: &dyn SvidSource) {
    let Caller::Spiffe(id) = &ex.caller else {
        return;
    };
    let value = if ex.forwarded {
        identity
            .current()
            .and_then(|own| xfcc(own.spiffe_id(), None, id))
    } else {
        // The same for every request of the connection: built on its first.
        ex.peer
            .xfcc
            .get_or_init(|| {
                let own = identity.current()?;
                xfcc(own.spiffe_id(), ex.peer.cert_hash.as_deref(), id)
            })
            .clone()
    };
    if let Some(value) = value {
        ex.parts.headers.insert(XFCC_HEADER.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{Answer, example_policy, exchange, seen};

    #[tokio::test]
    async fn the_gateway_adds_the_callers_tool_headers_over_forged_ones_and_the_caller() {
        let orch = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";
        let path = "/api/a2a/team-beta/specialist/";
        let (last, slot) = Answer::ok();
        let step = Delegate::new(Delegation::Gateway, last);
        let mut ex = exchange("POST", path, example_policy());
        ex.parts
            .headers
            .insert("x-delegation-token", HeaderValue::from_static("forged"));
        ex.target = crate::pipeline::route::parse(path);
        ex.caller = Caller::Spiffe(warden_identity::SpiffeId::new(orch).expect("id"));
        step.handle(&mut ex).await;
        let headers = seen(&slot).headers;
        assert_eq!(headers["x-delegation-token"], "delegated-by-team-alpha");
        assert_eq!(headers[CALLER_HEADER], orch);
    }

    #[tokio::test]
    async fn anonymous_callers_are_forwarded_as_anonymous() {
        let (last, slot) = Answer::ok();
        let step = Delegate::new(Delegation::Gateway, last);
        let mut ex = exchange("GET", "/api/a2a/team-beta/specialist/", example_policy());
        step.handle(&mut ex).await;
        assert_eq!(seen(&slot).headers[CALLER_HEADER], "anonymous");
    }
}
