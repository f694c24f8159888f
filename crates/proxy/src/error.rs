//! Why a sidecar or gateway could not start.

use std::net::SocketAddr;

/// Why the sidecar (or the gateway) could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The SVID source could not start.
    #[error("identity: {0}")]
    Identity(String),
    /// The config or snapshot file is unusable.
    #[error("{0}")]
    Config(String),
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Which listener.
    pub what: &'static str,
    /// The I/O error.
    pub source: std::io::Error,
}
