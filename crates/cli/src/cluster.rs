//! `warden status --kubeconfig` and `warden verify --kubeconfig`: the local commands pointed
//! at a cluster (flags over `warden_kube::status` and `warden_local::verify`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use warden_identity::SvidSource;
use warden_identity::source::{FileSource, WorkloadApiSource, wait_ready};
use warden_kube::status::ClusterStatus;
use warden_local::verify::Credentials;

/// How long an SVID source may take to yield its first SVID.
const SVID_WAIT: Duration = Duration::from_secs(15);

/// Where a cluster is and which of its namespaces holds Warden's control plane.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// Show / verify the mesh of the cluster this kubeconfig names instead of the local one.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The control plane's namespace (the gateway's Deployment).
    #[arg(long, default_value = "warden-system", requires = "kubeconfig")]
    control_namespace: String,
}

impl ClusterArgs {
    async fn read(&self) -> anyhow::Result<ClusterStatus> {
        let client = warden_kube::client(self.kubeconfig.as_deref()).await?;
        Ok(ClusterStatus::read(client, &self.control_namespace).await?)
    }
}

/// How `verify --kubeconfig` reaches the cluster's gateway, and as whom.
#[derive(Debug, Args)]
pub(crate) struct ClusterVerifyArgs {
    /// Where the cluster's gateway is reachable from here (e.g. a port-forward or its
    /// LoadBalancer), https://HOST:PORT.
    #[arg(long, requires = "kubeconfig")]
    gateway: Option<String>,
    /// The SPIFFE ID the gateway must prove [default: the mesh's gateway identity,
    /// spiffe://<td>/ns/warden-system/sa/warden-gateway].
    #[arg(long, requires = "gateway")]
    gateway_id: Option<String>,
    /// An SVID to call as, in spiffe-helper's layout (svid.pem, svid_key.pem,
    /// svid_bundle.pem, as `warden ca issue` writes them); repeatable: checks that need an
    /// agent's identity (its tool references, the pairs its policy denies) run for the
    /// agents whose SVIDs are given.
    #[arg(long, requires = "gateway")]
    svid_dir: Vec<PathBuf>,
    /// Also call as the SVID of this Workload API (unix:///path) [default: none].
    #[arg(long, requires = "gateway")]
    workload_api: Option<String>,
    /// The gateway's audit log, when it is readable from here: the run's calls must be in it.
    #[arg(long, requires = "gateway")]
    audit_log: Option<String>,
}

/// `warden status --kubeconfig`.
pub(crate) async fn status(cluster: &ClusterArgs, json: bool) -> anyhow::Result<ExitCode> {
    let status = cluster.read().await?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&status)?),
        false => print!("{}", status.table()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden verify --kubeconfig --gateway URL`.
pub(crate) async fn verify(
    cluster: &ClusterArgs,
    args: &ClusterVerifyArgs,
) -> anyhow::Result<ExitCode> {
    let gateway = args
        .gateway
        .as_deref()
        .context("--gateway URL: where the cluster's gateway is reachable from here")?;
    let credentials = Credentials::Held(sources(args).await?);
    if args.audit_log.is_none() {
        eprintln!("note: the audit log is not checked (give --audit-log FILE to check it)");
    }
    let target = cluster.read().await?.verify_target(
        gateway,
        args.gateway_id.as_deref(),
        args.audit_log.as_deref(),
        credentials,
    )?;
    let checks = warden_local::verify::verify_target(target)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", warden_local::verify::render(&checks));
    Ok(match checks.iter().all(|c| c.pass) {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

/// The SVIDs to call with, each loaded (or a clear error naming its directory or socket).
async fn sources(args: &ClusterVerifyArgs) -> anyhow::Result<Vec<Arc<dyn SvidSource>>> {
    let mut sources: Vec<Arc<dyn SvidSource>> = Vec::new();
    for dir in &args.svid_dir {
        let source =
            FileSource::watch(dir).with_context(|| format!("--svid-dir {}", dir.display()))?;
        wait_ready(&source, SVID_WAIT)
            .await
            .with_context(|| format!("--svid-dir {}: no usable SVID", dir.display()))?;
        sources.push(Arc::new(source));
    }
    if let Some(endpoint) = &args.workload_api {
        let source = WorkloadApiSource::connect(Some(endpoint))
            .await
            .with_context(|| format!("--workload-api {endpoint}"))?;
        sources.push(Arc::new(source));
    }
    if sources.is_empty() {
        anyhow::bail!("no SVID to call with: give --svid-dir DIR (repeatable) or --workload-api");
    }
    Ok(sources)
}
