//! The request path, as a pipeline of small steps shared by every listener.
//!
//! A request of the gateway, the sidecar's inbound port or its egress port goes through the
//! same steps, in this order, each in its own file and tested alone:
//!
//! 1. [`audit`]: owns the [`Exchange`]; records every outcome (audit line, metrics), including
//!    a request whose client went away mid-way, so no step can skip or mis-fill the record;
//! 2. [`admit`]: header hygiene before anything reads a header (identity and hop-by-hop
//!    headers removed, a gateway-forwarded caller set aside for step 4);
//! 3. [`route`]: which agent the request is for (the gateway's `/api/a2a/{ns}/{agent}/…`);
//! 4. [`authenticate`]: who the caller is (mTLS peer, bearer JWT, gateway-forwarded caller);
//! 5. [`classify`]: which A2A call this is (card, JSON-RPC method, REST route, or a plain call);
//! 6. [`authorize`]: the target's policy (the snapshot) or the sidecar's allow lists decide;
//! 7. [`delegate`]: the headers the next hop gets (delegation headers, caller, XFCC);
//! 8. [`forward`]: out to the agent's sidecar, the app, or the egress destination.
//!
//! Listeners differ only in the configuration of each step (an enum per step), never in
//! copies of the steps. Each step is a [`Handler`] wrapping the next one (the shape of a tower
//! `Layer`, without `poll_ready`: the connection limit lives in [`crate::server`]); the chain
//! is built once per listener and dispatched statically.

pub mod admit;
pub mod audit;
pub mod authenticate;
pub mod authorize;
pub mod body;
pub mod card;
pub mod classify;
pub mod delegate;
mod exchange;
pub mod forward;
pub mod route;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use warden_model::MtlsMode;

pub use exchange::{Call, Exchange, Phase, Policy, RequestBody, Target};

use crate::authz::Peer;
use crate::http::ProxyBody;

/// A step's answer instead of going on (boxed: a response is large, and refusals are rare).
pub type Refusal = Box<Response<ProxyBody>>;

/// One step of the request path: does its part on the exchange, then calls the next step or
/// answers itself (a refusal).
pub trait Handler: Send + Sync + 'static {
    /// Handles `ex`, returning the response for the client.
    fn handle(&self, ex: &mut Exchange) -> impl Future<Output = Response<ProxyBody>> + Send;
}

/// The steps every listener runs, in order, with their per-listener configuration.
pub type Chain = audit::Audit<
    admit::Admit<
        route::Route<
            authenticate::Authenticate<
                classify::Classify<authorize::Authorize<delegate::Delegate<forward::Forward>>>,
            >,
        >,
    >,
>;

/// The per-listener configuration of every step.
pub struct Steps {
    /// How outcomes are recorded.
    pub record: audit::Recorder,
    /// Header hygiene.
    pub admit: admit::Admission,
    /// How the target is found.
    pub route: route::Routing,
    /// How callers are authenticated.
    pub authenticate: authenticate::Authn,
    /// How calls are classified.
    pub classify: classify::Classifier,
    /// How calls are decided.
    pub authorize: authorize::Authz,
    /// What the next hop is told.
    pub delegate: delegate::Delegation,
    /// Where the request goes.
    pub forward: forward::Forward,
}

impl Steps {
    /// Composes the steps into the chain, outermost first.
    pub fn build(self) -> Chain {
        let forward = self.forward;
        let delegate = delegate::Delegate::new(self.delegate, forward);
        let authorize = authorize::Authorize::new(self.authorize, delegate);
        let classify = classify::Classify::new(self.classify, authorize);
        let authenticate = authenticate::Authenticate::new(self.authenticate, classify);
        let route = route::Route::new(self.route, authenticate);
        let admit = admit::Admit::new(self.admit, route);
        audit::Audit::new(self.record, admit)
    }
}

/// A listener's request handler: the chain plus the policy requests are decided with.
pub struct Listener {
    chain: Chain,
    policy: Arc<ArcSwap<Policy>>,
    /// The mode of every connection of this listener; `None`: the policy's current mode.
    fixed_mode: Option<MtlsMode>,
}

impl Listener {
    /// A listener running `steps` under the (reloadable) `policy`.
    pub fn new(steps: Steps, policy: Arc<ArcSwap<Policy>>, fixed_mode: Option<MtlsMode>) -> Self {
        Self {
            chain: steps.build(),
            policy,
            fixed_mode,
        }
    }
}

impl crate::server::Service for Listener {
    fn mode(&self) -> MtlsMode {
        self.fixed_mode
            .unwrap_or_else(|| self.policy.load().settings.mode)
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Arc<Peer>,
        mode: MtlsMode,
    ) -> Response<ProxyBody> {
        // The policy this request is decided and finished with; a reload applies to the next.
        let ex = Exchange::new(req, peer, mode, self.policy.load_full());
        self.chain.serve(ex).await
    }
}

#[cfg(test)]
pub(crate) mod test_support;
