//! Sidecar configuration: what `warden sidecar` flags and `--config FILE` (YAML, the same
//! names) describe.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use warden_identity::{SpiffeId, TrustDomain};
use warden_model::MtlsMode;

/// Safe defaults for every limit; all configurable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers) accepted.
    pub max_header_bytes: usize,
    /// Largest request body forwarded; a larger one fails the request with 413.
    pub max_body_bytes: u64,
    /// Time for a body the gateway must read (JSON-RPC) to arrive; 408 past it.
    #[serde(with = "duration_text")]
    pub body_read_timeout: Duration,
    /// Request bytes the gateway holds in memory at once, over all requests; past it a
    /// request that needs its body read gets 503 with `Retry-After`.
    pub max_buffered_bytes: u64,
    /// Time for the first byte and the TLS handshake of a new connection.
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Time for a request's head to arrive: HTTP/1 headers, and a connection's first request
    /// (HTTP/1 or HTTP/2). A caller that opens connections and sends nothing is closed.
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long. Only requests and
    /// responses count: HTTP/2 PING or SETTINGS frames do not keep a connection open.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Connections served at once per listener. At the limit, the connection idle the longest
    /// is closed to serve a new one; when none is idle, new ones wait.
    pub max_connections: usize,
    /// Requests in flight at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Request headers whose name contains `_` (read as `-` by WSGI, CGI, PHP-FPM, Rack):
    /// dropped, or the request refused with 400.
    pub underscore_headers: UnderscoreHeaders,
    /// Time for the upstream to send its response head.
    #[serde(with = "duration_text")]
    pub upstream_timeout: Duration,
    /// A response body from upstream that sends nothing for this long is aborted.
    #[serde(with = "duration_text")]
    pub upstream_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(10),
            max_buffered_bytes: 64 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_concurrent_streams: 100,
            underscore_headers: UnderscoreHeaders::Drop,
            upstream_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What happens to a request header whose name contains `_`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// The header is removed; the request goes on.
    #[default]
    Drop,
    /// The request is refused with 400 naming the header.
    Reject,
}

impl std::str::FromStr for UnderscoreHeaders {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "drop" => Ok(Self::Drop),
            "reject" => Ok(Self::Reject),
            other => Err(format!("{other:?}: expected drop or reject")),
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 5s, 2m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    }
}

/// Where the sidecar's SVID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityConfig {
    /// A Workload API endpoint (`unix:///path`), or `SPIFFE_ENDPOINT_SOCKET` when `None`.
    WorkloadApi(Option<String>),
    /// A spiffe-helper directory.
    SvidDir(PathBuf),
}

/// Everything the sidecar needs to start.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Mesh-facing listener (mTLS and/or plaintext by mode).
    pub inbound: SocketAddr,
    /// The agent's app (plaintext HTTP on localhost).
    pub app: SocketAddr,
    /// Localhost listener for the app's outbound calls.
    pub egress: Option<SocketAddr>,
    /// The app's OS users: the egress serves only connections they opened
    /// (`--egress-allow-uid`, empty: everyone), so another local user cannot call, and be
    /// audited and given delegation secrets, as this agent.
    pub egress_allow_uids: Vec<u32>,
    /// The app's OS users: a connection to the app is used only when one of them holds its
    /// port (`--app-uid`, empty: unchecked), so another user who binds it while the app is
    /// down receives no request.
    pub app_uids: Vec<u32>,
    /// Where origin-form egress requests go (`http://host:port`).
    pub gateway_url: Option<http::Uri>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: Option<SocketAddr>,
    /// SVID source.
    pub identity: IdentityConfig,
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// Mesh destinations of absolute-form egress requests: `host:port` → expected server ID.
    pub mesh_peers: HashMap<String, SpiffeId>,
    /// Limits.
    pub limits: Limits,
    /// Dynamic settings given as flags; they win over the config file, at start and on
    /// every reload.
    pub flags: DynamicFlags,
    /// A YAML file whose mode, allow lists and gateway IDs are re-read when it changes.
    pub config_file: Option<PathBuf>,
    /// A compiled mesh snapshot (JSON, `warden compile`), watched: when set, requests are
    /// decided by the policy of `agent` in it, and the mode comes from it unless `--mode` is
    /// given.
    pub snapshot: Option<SnapshotConfig>,
}

/// Which snapshot, and which agent of it this sidecar stands beside.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Where the snapshot comes from.
    pub source: SnapshotSource,
    /// The agent's namespace.
    pub namespace: String,
    /// The agent's name.
    pub name: String,
}

/// Where a sidecar's snapshot comes from. Both are applied by the same reload (the agent must
/// be in it, or the last good snapshot stays), so the request path cannot tell them apart.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    /// A compiled snapshot file (`warden compile`), watched.
    File(PathBuf),
    /// Snapshots handed over in memory (`warden sidecar --kubernetes`: the published
    /// ConfigMap), so that the sidecar writes no file and runs on a read-only root filesystem.
    Live {
        /// Names the source in errors and logs, e.g. `ConfigMap warden-system/warden-mesh-snapshot`.
        origin: String,
        /// The latest snapshot; the sidecar starts only once it holds one.
        snapshots: tokio::sync::watch::Receiver<Option<std::sync::Arc<warden_model::MeshSnapshot>>>,
    },
}

impl std::fmt::Display for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Live { origin, .. } => f.write_str(origin),
        }
    }
}

/// Dynamic settings as given on the command line (unset: take the file's, then the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicFlags {
    /// `--mode` (or `MTLS_MODE`).
    pub mode: Option<MtlsMode>,
    /// `--allow-id`.
    pub allow_ids: Vec<SpiffeId>,
    /// `--allow-namespace`.
    pub allow_namespaces: Vec<String>,
    /// `--gateway-id`.
    pub gateway_ids: Vec<SpiffeId>,
}

impl DynamicFlags {
    /// Flags over file over defaults.
    pub fn resolve(&self, file: Option<&FileConfig>) -> DynamicConfig {
        DynamicConfig {
            mode: self
                .mode
                .or(file.and_then(|f| f.mode.map(|m| m.0)))
                .unwrap_or_default(),
            allow_ids: pick(&self.allow_ids, file.map(|f| &f.allow_id)),
            allow_namespaces: pick(&self.allow_namespaces, file.map(|f| &f.allow_namespace)),
            gateway_ids: pick(&self.gateway_ids, file.map(|f| &f.gateway_id)),
        }
    }
}

/// The part of the configuration a running sidecar picks up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicConfig {
    /// Disabled, Permissive or Strict: applies to connections accepted from then on.
    pub mode: MtlsMode,
    /// Exact caller IDs admitted.
    pub allow_ids: Vec<SpiffeId>,
    /// Namespaces whose callers are admitted.
    pub allow_namespaces: Vec<String>,
    /// Hop identities (the gateway) whose forwarded caller identity is trusted; also the
    /// identity expected of the gateway when egress dials it.
    pub gateway_ids: Vec<SpiffeId>,
}

/// The YAML form of `--config FILE`: the flags' names, every field optional (flags win).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// `--inbound`.
    pub inbound: Option<SocketAddr>,
    /// `--app`.
    pub app: Option<SocketAddr>,
    /// `--egress`.
    pub egress: Option<SocketAddr>,
    /// `--app-uid`.
    #[serde(default)]
    pub app_uid: Vec<u32>,
    /// `--gateway-url`.
    pub gateway_url: Option<String>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--mode`.
    pub mode: Option<MtlsModeText>,
    /// `--workload-api`.
    pub workload_api: Option<String>,
    /// `--svid-dir`.
    pub svid_dir: Option<PathBuf>,
    /// `--trust-domain`.
    pub trust_domain: Option<TrustDomain>,
    /// `--allow-id`.
    #[serde(default)]
    pub allow_id: Vec<SpiffeId>,
    /// `--allow-namespace`.
    #[serde(default)]
    pub allow_namespace: Vec<String>,
    /// `--gateway-id`.
    #[serde(default)]
    pub gateway_id: Vec<SpiffeId>,
    /// `--mesh-peer`.
    #[serde(default)]
    pub mesh_peer: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// An mTLS mode written in any case (`strict`, `Strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtlsModeText(pub MtlsMode);

impl<'de> Deserialize<'de> for MtlsModeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(MtlsModeText)
            .map_err(serde::de::Error::custom)
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong, with the field when known.
    pub message: String,
}

impl FileConfig {
    /// Reads and parses a YAML config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// A list flag if given, else the file's, else empty.
pub fn pick<T: Clone>(flag: &[T], from_file: Option<&Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        from_file.cloned().unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

/// Parses `host:port=spiffe://…`.
pub fn parse_mesh_peer(text: &str) -> Result<(String, SpiffeId), String> {
    let (authority, id) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected HOST:PORT=SPIFFE_ID"))?;
    let id = SpiffeId::new(id).map_err(|e| e.to_string())?;
    Ok((authority.to_owned(), id))
}
