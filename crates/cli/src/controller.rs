//! `warden controller`: flags → `warden_kube::controller`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args};
use warden_kube::controller::ControllerConfig;

#[derive(Debug, Args)]
pub(crate) struct ControllerArgs {
    /// Kubeconfig of the cluster [default: KUBECONFIG, ~/.kube/config, or the in-cluster
    /// service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The controller's namespace: its Lease lives there.
    #[arg(long, default_value = "warden-system", env = "POD_NAMESPACE")]
    namespace: String,
    /// This replica's name in the Lease [default: the pod name, else host and pid].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The controller's SPIFFE Workload API (unix:///path): its SVID for fetching agents'
    /// cards over mTLS, and a sign that SPIRE is deployed. Retried until it answers.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    workload_api: Option<String>,
    /// Admin listener: /healthz, /readyz, /metrics.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Fetch agents' cards over mTLS, proving each agent's own SPIFFE ID. `false` is the kill
    /// switch: cards are fetched over plain HTTP only.
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1, default_missing_value = "true")]
    enable_verified_fetch: bool,
    /// Deprecated (kagenti FR-010); accepted and ignored.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    require_a2a_signature: Option<bool>,
    /// Deprecated (kagenti FR-011); accepted and ignored.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    signature_audit_mode: Option<bool>,
    /// Deprecated (kagenti FR-012); accepted and ignored.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enforce_network_policies: Option<bool>,
}

/// What each of kagenti's deprecated flags did there, and what does it in Warden.
const DEPRECATED: [(&str, &str); 3] = [
    (
        "--require-a2a-signature",
        "agent cards are authenticated by the mTLS handshake (the server proves the agent's own SPIFFE ID), not by a signature",
    ),
    (
        "--signature-audit-mode",
        "there is no card signature to audit; the card fetch's transport and attested ID are in each Agent's status.card",
    ),
    (
        "--enforce-network-policies",
        "every call is authorized by the sidecar and the gateway on its SPIFFE ID, with no NetworkPolicy",
    ),
];

/// Runs the controller until SIGINT/SIGTERM.
pub(crate) async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let given = [
        args.require_a2a_signature,
        args.signature_audit_mode,
        args.enforce_network_policies,
    ];
    for ((flag, why), value) in DEPRECATED.iter().zip(given) {
        if let Some(value) = value {
            tracing::warn!(flag, value, "{flag} is deprecated and has no effect: {why}");
        }
    }
    if !args.enable_verified_fetch {
        tracing::warn!(
            "--enable-verified-fetch=false: agents' cards are fetched over plain HTTP, no identity is proved"
        );
    }
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let client = warden_kube::client(args.kubeconfig.as_deref()).await?;
    let mut config = ControllerConfig::new(&args.namespace, &identity);
    config.workload_api = args.workload_api;
    config.verified_fetch = args.enable_verified_fetch;
    config.admin = args.admin;
    warden_kube::controller::run(client, config, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
