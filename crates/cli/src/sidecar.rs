//! `warden sidecar`: flags and `--config FILE` → the proxy's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use warden_identity::{SpiffeId, TrustDomain};
use warden_model::MtlsMode;
use warden_proxy::config::{
    DynamicFlags, FileConfig, IdentityConfig, Limits, SidecarConfig, SnapshotConfig,
    SnapshotSource, UnderscoreHeaders, parse_duration, parse_mesh_peer, pick,
};

/// Where the SVID comes from, shared by the sidecar and the gateway.
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    /// Workload API endpoint (unix:///path) [default: SPIFFE_ENDPOINT_SOCKET].
    #[arg(long, conflicts_with = "svid_dir")]
    workload_api: Option<String>,
    /// spiffe-helper directory (svid.pem, svid_key.pem, svid_bundle.pem), watched.
    #[arg(long)]
    svid_dir: Option<PathBuf>,
    /// Trust domain of the mesh [default: warden.local].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
}

impl IdentityArgs {
    /// These flags over the config file's values (`file`), over the defaults.
    pub(crate) fn resolve(
        self,
        file: &FileConfig,
    ) -> anyhow::Result<(IdentityConfig, TrustDomain)> {
        let source = match (
            self.svid_dir.or(file.svid_dir.clone()),
            self.workload_api.or(file.workload_api.clone()),
        ) {
            (Some(dir), _) => IdentityConfig::SvidDir(dir),
            (None, endpoint) => IdentityConfig::WorkloadApi(endpoint),
        };
        let trust_domain = match self.trust_domain.or(file.trust_domain.clone()) {
            Some(td) => td,
            None => TrustDomain::new(warden_identity::DEFAULT_TRUST_DOMAIN)?,
        };
        Ok((source, trust_domain))
    }
}

/// Limits shared by the sidecar and the gateway.
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Largest request head in bytes [default: 16384].
    #[arg(long)]
    max_header_bytes: Option<usize>,
    /// Largest request body in bytes [default: 10485760].
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Time for a body the gateway must read (JSON-RPC) to arrive [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    body_read_timeout: Option<Duration>,
    /// Request bytes the gateway buffers at once over all requests; past it, 503 with
    /// Retry-After [default: 67108864].
    #[arg(long)]
    max_buffered_bytes: Option<u64>,
    /// First byte and TLS handshake deadline [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    handshake_timeout: Option<Duration>,
    /// Time for a request's head to arrive, and for a new connection's first request
    /// [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    header_read_timeout: Option<Duration>,
    /// Close a connection with no request in flight after this long (HTTP/2 PINGs do not
    /// count as activity) [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Connections served at once per listener; at the limit the longest-idle one is closed
    /// for a new caller [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Requests in flight at once on one HTTP/2 connection [default: 100].
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Request headers whose name contains `_`: drop (as nginx and Envoy do) or reject
    /// (400) [default: drop].
    #[arg(long)]
    underscore_headers: Option<UnderscoreHeaders>,
    /// Deadline for the upstream's response head [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    upstream_timeout: Option<Duration>,
    /// Abort a response whose upstream sends nothing for this long [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    upstream_idle_timeout: Option<Duration>,
}

impl LimitArgs {
    /// These flags over `base`.
    pub(crate) fn apply(&self, mut limits: Limits) -> Limits {
        limits.max_header_bytes = self.max_header_bytes.unwrap_or(limits.max_header_bytes);
        limits.max_body_bytes = self.max_body_bytes.unwrap_or(limits.max_body_bytes);
        limits.handshake_timeout = self.handshake_timeout.unwrap_or(limits.handshake_timeout);
        limits.body_read_timeout = self.body_read_timeout.unwrap_or(limits.body_read_timeout);
        limits.max_buffered_bytes = self.max_buffered_bytes.unwrap_or(limits.max_buffered_bytes);
        limits.header_read_timeout = self
            .header_read_timeout
            .unwrap_or(limits.header_read_timeout);
        limits.idle_timeout = self.idle_timeout.unwrap_or(limits.idle_timeout);
        limits.max_concurrent_streams = self
            .max_concurrent_streams
            .unwrap_or(limits.max_concurrent_streams)
            .max(1);
        limits.max_connections = self
            .max_connections
            .unwrap_or(limits.max_connections)
            .max(1);
        limits.upstream_timeout = self.upstream_timeout.unwrap_or(limits.upstream_timeout);
        limits.upstream_idle_timeout = self
            .upstream_idle_timeout
            .unwrap_or(limits.upstream_idle_timeout);
        limits.underscore_headers = self.underscore_headers.unwrap_or(limits.underscore_headers);
        limits
    }
}

#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// YAML file with the same settings (kebab-case names). Changes to mode, allow-id,
    /// allow-namespace and gateway-id apply live, to new connections; flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mesh-facing listener [default: 127.0.0.1:15006].
    #[arg(long)]
    inbound: Option<SocketAddr>,
    /// The agent's app, plaintext HTTP [default: 127.0.0.1:8080].
    #[arg(long)]
    app: Option<SocketAddr>,
    /// Use a connection to --app only when its port is held by this OS user (repeatable; the
    /// owner of the socket that accepted it, in /proc/net/tcp{,6}, checked once per new
    /// connection before a byte is sent); otherwise the caller gets 502 app_not_owned, counted
    /// as warden_connections_closed_total{reason="app_uid"}.
    #[arg(long, value_name = "UID")]
    app_uid: Vec<u32>,
    /// Localhost listener for the app's outbound calls.
    #[arg(long)]
    egress: Option<SocketAddr>,
    /// Serve the egress only to connections opened by this OS user (repeatable; the app's
    /// uid, found in /proc/net/tcp{,6}); others are closed, counted as
    /// warden_connections_closed_total{reason="peer_uid"}.
    #[arg(long, value_name = "UID")]
    egress_allow_uid: Vec<u32>,
    /// Where origin-form egress requests go, e.g. http://127.0.0.1:8083.
    #[arg(long)]
    gateway_url: Option<String>,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// disabled | permissive | strict [default: permissive].
    #[arg(long, env = "MTLS_MODE")]
    mode: Option<MtlsMode>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Admit this caller ID (repeatable). With no --allow-id/--allow-namespace, any ID of the
    /// trust domain is admitted.
    #[arg(long)]
    allow_id: Vec<SpiffeId>,
    /// Admit callers of this namespace (repeatable).
    #[arg(long)]
    allow_namespace: Vec<String>,
    /// A gateway identity (repeatable): its forwarded caller header is trusted, and egress
    /// expects it of --gateway-url.
    #[arg(long)]
    gateway_id: Vec<SpiffeId>,
    /// HOST:PORT=SPIFFE_ID (repeatable): absolute-form egress to HOST:PORT uses mTLS and
    /// expects SPIFFE_ID.
    #[arg(long)]
    mesh_peer: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// A compiled mesh snapshot (`warden compile`), watched: requests are decided by the
    /// policy of --agent in it, and the mode comes from it unless --mode is given.
    #[arg(long, requires = "agent")]
    snapshot: Option<PathBuf>,
    /// The agent this sidecar stands beside, NAMESPACE/NAME (with --snapshot or
    /// --kubernetes).
    #[arg(long)]
    agent: Option<String>,
    /// Take the snapshot from the cluster: the ConfigMap `warden-mesh-snapshot` the
    /// controller publishes in --control-namespace, watched (a change applies to the next
    /// request), instead of --snapshot.
    #[arg(long, requires = "agent", conflicts_with = "snapshot")]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes [default: KUBECONFIG, ~/.kube/config, or the in-cluster
    /// service account].
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// The control plane's namespace, where the snapshot is published.
    #[arg(long, default_value = "warden-system")]
    control_namespace: String,
}

/// The sidecar's configuration; with --kubernetes, `live` is the mirror's snapshot source.
fn config(args: SidecarArgs, live: Option<SnapshotSource>) -> anyhow::Result<SidecarConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let (identity, trust_domain) = args.identity.resolve(&file)?;
    let limits = args.limits.apply(file.limits.clone().unwrap_or_default());
    let gateway_url = match args.gateway_url.or(file.gateway_url.clone()) {
        Some(url) => Some(
            url.parse::<http::Uri>()
                .with_context(|| format!("--gateway-url {url:?}"))?,
        ),
        None => None,
    };
    let mut mesh_peers = std::collections::HashMap::new();
    for text in file.mesh_peer.iter().chain(&args.mesh_peer) {
        let (authority, id) =
            parse_mesh_peer(text).map_err(|e| anyhow::anyhow!("--mesh-peer {e}"))?;
        mesh_peers.insert(authority, id);
    }
    Ok(SidecarConfig {
        inbound: args
            .inbound
            .or(file.inbound)
            .unwrap_or(([127, 0, 0, 1], 15006).into()),
        app: args
            .app
            .or(file.app)
            .unwrap_or(([127, 0, 0, 1], 8080).into()),
        egress: args.egress.or(file.egress),
        egress_allow_uids: args.egress_allow_uid,
        app_uids: pick(&args.app_uid, Some(&file.app_uid)),
        gateway_url,
        admin: args.admin.or(file.admin),
        identity,
        trust_domain,
        mesh_peers,
        limits,
        flags: DynamicFlags {
            mode: args.mode,
            allow_ids: args.allow_id,
            allow_namespaces: args.allow_namespace,
            gateway_ids: args.gateway_id,
        },
        config_file: args.config,
        snapshot: match (live.or(args.snapshot.map(SnapshotSource::File)), args.agent) {
            (Some(source), Some(agent)) => {
                let (namespace, name) = agent
                    .split_once('/')
                    .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("--agent {agent:?}: expected NAMESPACE/NAME"))?;
                Some(SnapshotConfig {
                    source,
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            (None, Some(agent)) => {
                anyhow::bail!("--agent {agent}: give --snapshot FILE or --kubernetes")
            }
            _ => None,
        },
    })
}

pub(crate) async fn run(args: SidecarArgs) -> anyhow::Result<ExitCode> {
    if !args.kubernetes {
        warden_proxy::run(config(args, None)?, crate::shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // --kubernetes: the published snapshot handed to the sidecar in memory (no file: the
    // injected container's root filesystem is read-only).
    let client = warden_kube::client(args.kubeconfig.as_deref()).await?;
    let start = warden_kube::publish::SnapshotMirror::start(client, &args.control_namespace);
    // Waiting for the first snapshot must not outlive a SIGTERM.
    let mirror = tokio::select! {
        mirror = start => mirror,
        () = crate::shutdown_signal() => return Ok(ExitCode::SUCCESS),
    };
    let result = warden_proxy::run(
        config(args, Some(mirror.source()))?,
        crate::shutdown_signal(),
    )
    .await;
    drop(mirror);
    result?;
    Ok(ExitCode::SUCCESS)
}
