//! What the steps of one request share: the request, what each step found out, and the
//! policy the request is decided with.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use warden_model::policy::Caller;
use warden_model::{MeshSnapshot, MtlsMode};

use crate::authn::JwtConfig;
use crate::authz::{Peer, Verdict};
use crate::config::DynamicConfig;

/// The policy a listener decides with, swapped whole on every good reload; a request keeps
/// the one it started with.
pub struct Policy {
    /// The compiled mesh, when one is configured (always for the gateway).
    pub snapshot: Option<Arc<MeshSnapshot>>,
    /// Mode, allow lists, trusted gateway IDs (the sidecar's flags and file; the gateway's
    /// mode).
    pub settings: DynamicConfig,
    /// Tokens accepted as credentials (the gateway's; empty elsewhere).
    pub jwt: JwtConfig,
}

/// How far a request got: what an aborted request's audit record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing decided yet (routing, authentication, classification).
    Received,
    /// Allowed; being sent upstream, waiting for the response head.
    Forwarding,
    /// The upstream's response is streaming back.
    Responding,
}

impl Phase {
    /// The name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Received => "received",
            Phase::Forwarding => "forwarding",
            Phase::Responding => "responding",
        }
    }
}

/// The request body: streaming as received, or read whole by a step that had to look at it.
pub enum RequestBody {
    /// Not read; streams through.
    Streaming(Incoming),
    /// Read (classification needed it).
    Buffered(Bytes),
    /// Consumed by a step.
    Taken,
}

/// The agent a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The path after `/api/a2a/{ns}/{name}/` (or after `/` when routed by host name),
    /// without the leading `/`.
    pub rest: String,
    /// Routed by host name (`{agent}.{namespace}.{domain}`): the agent is at the host's root.
    pub by_host: bool,
}

impl Target {
    /// `namespace/name`, as audit records and `--endpoint` name agents.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the caller asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    /// The method policy decides on (A2A 1.0 name, `GetAgentCard`, or the sidecar's `call`).
    pub method: Option<Cow<'static, str>>,
    /// The agent card is asked for.
    pub card: bool,
    /// A JSON-RPC request's `id`, so that refusals answer in JSON-RPC.
    pub jsonrpc_id: Option<serde_json::Value>,
    /// Task id, when visible.
    pub task_id: Option<String>,
    /// Context id, when visible.
    pub context_id: Option<String>,
}

/// One request on its way through the steps.
pub struct Exchange {
    /// When it arrived.
    pub start: Instant,
    /// When it arrived, wall clock (audit).
    pub time: SystemTime,
    /// The connection's peer.
    pub peer: Arc<Peer>,
    /// The mode the connection was accepted under.
    pub mode: MtlsMode,
    /// The policy it is decided with.
    pub policy: Arc<Policy>,
    /// Method, URI, headers (edited by the steps into what goes upstream).
    pub parts: http::request::Parts,
    /// The body.
    pub body: RequestBody,
    /// Request body bytes (declared, or read).
    pub bytes_in: u64,
    /// The share of the buffered-bytes budget a read body holds, released with the exchange.
    pub buffered: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A caller asserted by the previous hop (`x-warden-caller`), set aside by admission for
    /// authentication to trust or ignore.
    pub claimed_caller: Option<http::HeaderValue>,
    /// The egress address asserted by the previous hop (`x-warden-egress-url`), set aside by
    /// admission for the card service to believe from a mesh egress identity only.
    pub claimed_egress_url: Option<http::HeaderValue>,
    /// Who is calling.
    pub caller: Caller,
    /// How the caller was authenticated: `mtls`, `jwt-svid`, `oidc`, `anonymous`, `invalid`.
    pub authn: &'static str,
    /// The caller was forwarded by a trusted gateway.
    pub forwarded: bool,
    /// The agent it is for (gateway).
    pub target: Option<Target>,
    /// What is asked.
    pub call: Call,
    /// The decision, once made; a refusal before it is recorded with the refusing step's rule.
    pub verdict: Option<Verdict>,
    /// The rule of a refusal made before the decision (`route`, `authentication`, …).
    pub refused_by: Option<&'static str>,
    /// How far it got.
    pub phase: Phase,
}

impl Exchange {
    /// A fresh exchange for `req` from `peer`.
    pub fn new(
        req: Request<Incoming>,
        peer: Arc<Peer>,
        mode: MtlsMode,
        policy: Arc<Policy>,
    ) -> Self {
        let (parts, body) = req.into_parts();
        Self::from_parts(parts, RequestBody::Streaming(body), peer, mode, policy)
    }

    /// An exchange for a request already split (also what step tests start from).
    pub fn from_parts(
        parts: http::request::Parts,
        body: RequestBody,
        peer: Arc<Peer>,
        mode: MtlsMode,
        policy: Arc<Policy>,
    ) -> Self {
        let bytes_in = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            start: Instant::now(),
            time: SystemTime::now(),
            peer,
            mode,
            policy,
            parts,
            body,
            bytes_in,
            buffered: None,
            claimed_caller: None,
            claimed_egress_url: None,
            caller: Caller::Anonymous,
            authn: "anonymous",
            forwarded: false,
            target: None,
            call: Call::default(),
            verdict: None,
            refused_by: None,
            phase: Phase::Received,
        }
    }

    /// The rule that decided the outcome so far: the verdict's, or the refusing step's.
    pub fn rule(&self) -> &'static str {
        self.verdict
            .map(|v| v.rule)
            .or(self.refused_by)
            .unwrap_or("")
    }

    /// Whether the request was allowed.
    pub fn allowed(&self) -> bool {
        self.verdict.is_some_and(|v| v.allowed)
    }
}
