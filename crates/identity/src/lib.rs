//! Workload identity for Warden, by the SPIFFE specifications.
//!
//! Everything else in Warden stands on this crate: a peer is whoever its X.509-SVID says it
//! is, once the SVID passed every rule of the spec against the bundle of its own trust
//! domain. The pieces:
//!
//! - [`id`]: SPIFFE IDs and trust domains, with the `ns/<ns>/sa/<sa>` workload shape;
//! - [`svid`]: X.509-SVID validation, one named rule at a time;
//! - [`bundle`]: trust bundles per trust domain (PEM and SPIFFE bundle JSON);
//! - [`tls`]: rustls verifiers, the per-handshake SVID resolver, ready-made configs;
//! - [`authorizer`]: which verified peers an endpoint admits;
//! - [`source`]: where the workload's own SVID comes from (Workload API, files, embedded CA);
//! - [`ca`] and [`workload_api`]: the embedded CA and the Workload API server it backs;
//! - [`jwt`]: JWT-SVID validation;
//! - [`file_events`]: which file events mean new content, for every file watcher.

pub mod authorizer;
pub mod bundle;
pub mod ca;
mod crypto;
pub mod file_events;
mod h2_authority;
pub mod id;
pub mod jwt;
pub mod pem;
pub mod source;
pub mod svid;
pub mod tls;
mod verified_chains;
pub mod workload_api;

pub use authorizer::{Authorizer, PeerMatcher};
pub use bundle::{TrustBundle, TrustBundleSet};
pub use ca::CertificateAuthority;
pub use id::{SpiffeId, TrustDomain};
pub use source::{IdentityCell, SvidSource, X509Identity};
pub use svid::{SvidRejection, SvidRule};

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "warden.local";
