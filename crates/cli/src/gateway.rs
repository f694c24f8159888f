//! `warden gateway`: flags → the gateway's configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use warden_model::MtlsMode;
use warden_proxy::config::{FileConfig, Limits};
use warden_proxy::gateway::{AuditTarget, GatewayConfig, Source};

use crate::sidecar::{IdentityArgs, LimitArgs};

#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// The listener.
    #[arg(long, default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The compiled snapshot (`warden compile`), watched: a change applies to the next request.
    #[arg(long, required_unless_present = "kubernetes")]
    snapshot: Option<PathBuf>,
    /// Take the snapshot from a cluster instead (Agents, MeshConfig, Namespaces, Secrets and
    /// ConfigMaps, watched and compiled live) and each agent's addresses from its
    /// EndpointSlices (labelled `kubernetes.io/service-name: <agent>`): every change applies
    /// to the next request.
    #[arg(long, conflicts_with_all = ["snapshot", "endpoint"])]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes [default: KUBECONFIG, ~/.kube/config, or the in-cluster
    /// service account].
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// permissive (mTLS and plaintext on the one port) or strict (mTLS only).
    #[arg(long, default_value = "permissive")]
    mode: MtlsMode,
    #[command(flatten)]
    identity: IdentityArgs,
    /// NAMESPACE/AGENT=HOST:PORT (repeatable): where the agent's sidecar listens.
    #[arg(long)]
    endpoint: Vec<String>,
    /// Audit log file, or `-` for stdout. One JSON line per request.
    #[arg(long)]
    audit_log: Option<String>,
    /// Rotate the audit log past this many bytes: <file> → <file>.1 → <file>.2 …
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    audit_max_bytes: u64,
    /// Rotated audit files kept (<file>.1 … <file>.N).
    #[arg(long, default_value_t = 10)]
    audit_max_files: u32,
    /// A SPIFFE bundle (JSON, `warden ca bundle --format spiffe`) whose JWT authorities
    /// verify JWT-SVIDs.
    #[arg(long)]
    jwt_bundle: Option<PathBuf>,
    /// The audience JWT-SVIDs must carry.
    #[arg(long, default_value = "warden-gateway")]
    jwt_audience: String,
    /// The URL clients use to reach the gateway, for card URLs [default: the scheme and
    /// authority each client used: https over TLS, its Host].
    #[arg(long)]
    public_url: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if args.mode == MtlsMode::Disabled {
        anyhow::bail!("--mode: the gateway runs permissive or strict");
    }
    // `_cluster` is held for the life of the gateway: dropping it stops the cluster watches.
    let (source, _cluster) = match (args.kubernetes, args.snapshot) {
        (true, _) => {
            let client = warden_kube::client(args.kubeconfig.as_deref()).await?;
            let cluster = warden_kube::gateway::ClusterSource::start(client).await;
            (cluster.source(), Some(cluster))
        }
        (false, Some(snapshot)) => {
            let endpoints = endpoint_flags(&args.endpoint)?;
            (
                Source::Files {
                    snapshot,
                    endpoints,
                },
                None,
            )
        }
        (false, None) => anyhow::bail!("--snapshot or --kubernetes is required"),
    };
    let (identity, trust_domain) = args.identity.resolve(&FileConfig::default())?;
    let config = GatewayConfig {
        listen: args.listen,
        admin: args.admin,
        identity,
        trust_domain,
        mode: args.mode,
        source,
        audit: match args.audit_log.as_deref() {
            None => AuditTarget::None,
            Some("-") => AuditTarget::Stdout,
            Some(path) => AuditTarget::File {
                path: path.into(),
                max_bytes: args.audit_max_bytes,
                max_files: args.audit_max_files,
            },
        },
        jwt_bundle: args.jwt_bundle,
        jwt_audience: args.jwt_audience,
        public_url: args.public_url,
        limits: args.limits.apply(Limits::default()),
    };
    warden_proxy::gateway::run_gateway(config, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `--endpoint NAMESPACE/AGENT=HOST:PORT` flags.
fn endpoint_flags(flags: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut endpoints = HashMap::new();
    for text in flags {
        let (agent, addr) = text
            .split_once('=')
            .filter(|(agent, addr)| agent.contains('/') && !addr.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--endpoint {text:?}: expected NAMESPACE/AGENT=HOST:PORT")
            })?;
        endpoints.insert(agent.to_owned(), addr.to_owned());
    }
    Ok(endpoints)
}
