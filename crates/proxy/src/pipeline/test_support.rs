//! What the step tests share: exchanges without a connection, a policy, the example mesh,
//! and a last step that answers as told and keeps what it saw.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, Response, StatusCode};
use warden_identity::SpiffeId;
use warden_model::policy::Caller;
use warden_model::{MeshSnapshot, MtlsMode};

use super::{Call, Exchange, Handler, Phase, Policy, RequestBody, Target};
use crate::authn::JwtConfig;
use crate::authz::{Peer, Verdict};
use crate::config::DynamicConfig;
use crate::http::{ProxyBody, full, json_error};

/// Permissive settings, no snapshot, no tokens.
pub fn settings() -> DynamicConfig {
    DynamicConfig {
        mode: MtlsMode::Permissive,
        allow_ids: Vec::new(),
        allow_namespaces: Vec::new(),
        gateway_ids: Vec::new(),
    }
}

/// A policy of `settings()`.
pub fn policy() -> Arc<Policy> {
    Arc::new(Policy {
        snapshot: None,
        settings: settings(),
        jwt: JwtConfig::default(),
    })
}

/// The cross-namespace example, compiled.
pub fn example_snapshot() -> Arc<MeshSnapshot> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a");
    let manifests = warden_model::loader::load_path(&dir).expect("the example loads");
    Arc::new(warden_model::compile::compile(&manifests, 1).expect("the example compiles"))
}

/// A policy with the example's snapshot.
pub fn example_policy() -> Arc<Policy> {
    Arc::new(Policy {
        snapshot: Some(example_snapshot()),
        settings: settings(),
        jwt: JwtConfig::default(),
    })
}

/// An anonymous plaintext exchange with no body.
pub fn exchange(method: &str, uri: &str, policy: Arc<Policy>) -> Exchange {
    with_headers(method, uri, &[], policy)
}

/// An anonymous plaintext exchange with these headers and no body.
pub fn with_headers(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    policy: Arc<Policy>,
) -> Exchange {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, ()) = builder.body(()).expect("test request").into_parts();
    Exchange::from_parts(
        parts,
        RequestBody::Taken,
        Arc::new(Peer::anonymous()),
        MtlsMode::Permissive,
        policy,
    )
}

/// The same exchange from a verified mTLS peer.
pub fn from_peer(mut ex: Exchange, id: &str) -> Exchange {
    let id = SpiffeId::new(id).expect("test SPIFFE ID");
    ex.peer = Arc::new(Peer::verified(Some(id), Some("00".into())));
    ex
}

/// What the last step saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The headers as they would go on.
    pub headers: HeaderMap,
    /// The caller.
    pub caller: Caller,
    /// How it was authenticated.
    pub authn: &'static str,
    /// Forwarded by a gateway.
    pub forwarded: bool,
    /// The target.
    pub target: Option<Target>,
    /// The call.
    pub call: Call,
}

/// A last step.
pub enum Answer {
    /// Records a denial by `rule` and answers `status`.
    Refuse(&'static str, u16),
    /// Allows, starts forwarding, and never answers.
    Never,
    /// Answers 200 and keeps what it saw.
    Ok(Arc<Mutex<Option<Seen>>>),
    /// Allows, and answers what this makes (an upstream's response).
    Upstream(fn() -> Response<ProxyBody>),
}

impl Answer {
    /// See [`Answer::Refuse`].
    pub fn refuse(rule: &'static str, status: u16) -> Self {
        Answer::Refuse(rule, status)
    }

    /// See [`Answer::Never`].
    pub fn never() -> Self {
        Answer::Never
    }

    /// See [`Answer::Ok`]; the second value is what it saw, once called.
    pub fn ok() -> (Self, Arc<Mutex<Option<Seen>>>) {
        let seen = Arc::new(Mutex::new(None));
        (Answer::Ok(seen.clone()), seen)
    }
}

impl Handler for Answer {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        match self {
            Answer::Refuse(rule, status) => {
                ex.verdict = Some(Verdict {
                    allowed: false,
                    rule,
                    reason: "refused by the test",
                });
                let status = StatusCode::from_u16(*status).expect("test status");
                json_error(status, rule, "refused by the test")
            }
            Answer::Never => {
                ex.verdict = Some(Verdict {
                    allowed: true,
                    rule: "test",
                    reason: "",
                });
                ex.phase = Phase::Forwarding;
                std::future::pending().await
            }
            Answer::Ok(seen) => {
                *seen.lock().expect("test lock") = Some(Seen {
                    headers: ex.parts.headers.clone(),
                    caller: ex.caller.clone(),
                    authn: ex.authn,
                    forwarded: ex.forwarded,
                    target: ex.target.clone(),
                    call: ex.call.clone(),
                });
                Response::new(full("ok"))
            }
            Answer::Upstream(respond) => {
                ex.verdict = Some(Verdict {
                    allowed: true,
                    rule: "test",
                    reason: "",
                });
                respond()
            }
        }
    }
}

/// What the last step saw (it must have been called).
pub fn seen(slot: &Arc<Mutex<Option<Seen>>>) -> Seen {
    slot.lock()
        .expect("test lock")
        .clone()
        .expect("the request reached the last step")
}
