//! Warden's data plane.
//!
//! The sidecar sits beside every agent: one mesh-facing port that speaks mTLS, plaintext or
//! both by mode, a localhost egress port that turns the app's plain calls into mTLS, and an
//! admin port. The gateway is one port in front of every agent. Every request of every port
//! goes through the same [`pipeline`] of small steps; the ports differ only in how each step
//! is configured. Modules, one concern each:
//!
//! - [`server`]: listeners, the connection limit, the mode sniff, the TLS handshake, HTTP
//!   serving, drain, the file watcher;
//! - [`conn`]: open connections' activity, for the idle timeouts and shedding;
//! - [`peer_uid`]: which OS user opened a loopback connection (`--egress-allow-uid`);
//! - [`app_uid`]: connections to the app used only while its owner holds its port
//!   (`--app-uid`);
//! - [`refused_by`]: the target sidecar's word to the gateway on why it refused an allowed
//!   call, whatever the wire form (502 or a gRPC status), for the gateway's audit record;
//! - [`pipeline`]: the request path (audit → admit → route → authenticate → classify →
//!   authorize → delegate → forward), one file per step;
//! - [`sidecar`] and [`gateway`]: each assembles its listeners' pipelines and reloads;
//! - `gateway_names`: warns when the gateway's SVID lacks its agents' host names;
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, and starting the identity;
//! - [`config`]: flags and the watched YAML file;
//! - [`authn`] (JWT-SVID and OIDC tokens) and [`authz`] (callers, allow lists): the rules the
//!   authenticate and authorize steps apply;
//! - [`http`]: identity/hop-by-hop header handling, XFCC, denial responses;
//! - [`endpoints`]: where each agent's sidecars listen (flags or EndpointSlices), for the
//!   gateway;
//! - [`forward`]: pooled plaintext and mTLS upstream clients, body limits;
//! - [`audit`]: the audit log's records, file and rotation;
//! - [`metrics`]: `warden_*` Prometheus metrics;
//! - [`error`]: why a process could not start.

pub mod admin;
pub mod admin_status;
pub mod app_uid;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod config;
pub mod conn;
pub mod endpoints;
pub mod error;
pub mod forward;
pub mod gateway;
mod gateway_names;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod peer_uid;
pub mod pipeline;
pub mod refused_by;
pub mod server;
pub mod sidecar;

pub use config::SidecarConfig;
pub use error::SidecarError;
pub use sidecar::run;
