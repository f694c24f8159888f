//! Warden's data plane.
//!
//! The sidecar sits beside every agent: one mesh-facing port that speaks mTLS, plaintext or
//! both by mode, a localhost egress port that turns the app's plain calls into mTLS, and an
//! admin port. Modules, one concern each:
//!
//! - [`config`]: flags and the watched YAML file;
//! - [`authz`]: who the caller is (gateway-forwarded identities only from gateway IDs) and
//!   whether it is admitted;
//! - [`http`]: identity/hop-by-hop header handling, XFCC, denial responses;
//! - [`metrics`]: `warden_*` Prometheus metrics;
//! - [`server`]: listeners, the mode sniff, the TLS handshake, HTTP serving, drain, admin;
//! - [`forward`]: pooled plaintext and mTLS upstream clients, body limits;
//! - [`sidecar`]: the sidecar's inbound and egress handling;
//! - [`gateway`]: the A2A gateway, with [`authn`] (mTLS, JWT-SVID, OIDC) and [`audit`].

pub mod admin_status;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod config;
pub mod forward;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sidecar;

pub use config::SidecarConfig;
pub use sidecar::{SidecarError, run};
