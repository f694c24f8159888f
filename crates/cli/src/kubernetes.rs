//! `warden install`, `warden uninstall`, `warden webhook`, `warden admission`: flags over
//! `warden_kube`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use warden_kube::admission::WebhookSettings;
use warden_kube::certs::{WebhookCerts, ensure_dir, generate};
use warden_kube::inject::{SidecarTemplate, SocketSource, SpiffeSocket};
use warden_kube::install::{InstallOptions, WebhookEndpoint, webhook_service_hosts};
use warden_kube::server::WebhookServerConfig;

/// How sidecars and control-plane pods get the SPIFFE Workload API, and what they run.
#[derive(Debug, Args)]
pub(crate) struct InjectionArgs {
    /// The Warden image for the control plane and the injected sidecar.
    #[arg(long, default_value = concat!("ghcr.io/warden-mesh/warden:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Trust domain of the mesh when no MeshConfig sets one.
    #[arg(long, default_value = "warden.local")]
    trust_domain: String,
    /// The Workload API socket's path inside containers; its directory is the mount point.
    #[arg(long, default_value = "/spiffe-workload-api/spire-agent.sock")]
    spiffe_socket: String,
    /// Mount the socket directory from this host path instead of the SPIFFE CSI driver
    /// (csi.spiffe.io), e.g. /run/spire/agent-sockets.
    #[arg(long)]
    spiffe_host_dir: Option<String>,
}

impl InjectionArgs {
    fn socket(&self) -> anyhow::Result<SpiffeSocket> {
        if !self.spiffe_socket.starts_with('/') || self.spiffe_socket.ends_with('/') {
            bail!(
                "--spiffe-socket {:?}: expected an absolute path to the socket file",
                self.spiffe_socket
            );
        }
        Ok(SpiffeSocket {
            source: match &self.spiffe_host_dir {
                Some(dir) => SocketSource::HostPath(dir.clone()),
                None => SocketSource::Csi,
            },
            path: self.spiffe_socket.clone(),
        })
    }
}

/// Which objects install makes (uninstall needs the same to know what to delete).
#[derive(Debug, Args)]
pub(crate) struct LayoutArgs {
    /// The control plane's namespace.
    #[arg(long, default_value = "warden-system")]
    namespace: String,
    /// Point the webhook configurations at a webhook outside the cluster (`warden webhook`
    /// on this machine, as tests and developers run it), https://HOST:PORT; needs --tls-dir.
    /// No in-cluster webhook is deployed then.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Take the webhook's certificate from cert-manager (a self-signed Issuer and a
    /// Certificate; cert-manager injects the caBundle) instead of generating one.
    #[arg(long, conflicts_with = "webhook_url")]
    cert_manager: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    injection: InjectionArgs,
    /// Keep the webhook's CA and serving certificate here (created when absent, reused
    /// after, so the caBundle stays the same across runs): ca.crt, ca.key, tls.crt, tls.key.
    /// Without it a new CA is generated on every run.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Gateway replicas.
    #[arg(long, default_value_t = 1)]
    gateway_replicas: i32,
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// Not used to delete anything; accepted so install's flags can be reused as they are.
    #[arg(long, hide = true)]
    tls_dir: Option<PathBuf>,
    /// Keep the CRDs, and with them every Agent and MeshConfig (deleting a CRD deletes all
    /// of its objects).
    #[arg(long)]
    keep_crds: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// Kubeconfig of the cluster to read Agents, MeshConfigs and Namespaces from [default:
    /// KUBECONFIG, ~/.kube/config, or the in-cluster service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Directory with tls.crt and tls.key (as `warden install --tls-dir` writes them, or the
    /// mounted Secret); re-read when they change.
    #[arg(long)]
    tls_dir: PathBuf,
    /// The control plane's namespace (the gateway's Service and identity).
    #[arg(long, default_value = "warden-system")]
    control_namespace: String,
    #[command(flatten)]
    injection: InjectionArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AdmissionOutput {
    /// One line per object.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct AdmissionArgs {
    /// A manifest file or a directory of them.
    path: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = AdmissionOutput::Text)]
    output: AdmissionOutput,
}

fn endpoint(layout: &LayoutArgs, tls_dir: Option<&Path>) -> anyhow::Result<WebhookEndpoint> {
    if let Some(url) = &layout.webhook_url {
        let host = webhook_url_host(url)?;
        let dir = tls_dir.context("--webhook-url needs --tls-dir")?;
        let certs = ensure_dir(dir, &[host])?;
        return Ok(WebhookEndpoint::Url {
            url: url.clone(),
            ca_pem: certs.ca_pem,
        });
    }
    if layout.cert_manager {
        return Ok(WebhookEndpoint::CertManager);
    }
    let hosts = webhook_service_hosts(&layout.namespace);
    let certs: WebhookCerts = match tls_dir {
        Some(dir) => ensure_dir(dir, &hosts)?,
        None => generate(&hosts)?,
    };
    Ok(WebhookEndpoint::InCluster(certs))
}

fn webhook_url_host(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--webhook-url {url:?}: not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--webhook-url {url:?}: the apiserver calls webhooks over https only");
    }
    let host = uri
        .host()
        .with_context(|| format!("--webhook-url {url:?}: no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        bail!(
            "--webhook-url {url:?}: give https://HOST:PORT only; /validate and /mutate are added"
        );
    }
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// Prints every object for `kubectl apply -f -`.
pub(crate) fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let options = InstallOptions {
        namespace: args.layout.namespace.clone(),
        image: args.injection.image.clone(),
        trust_domain: args.injection.trust_domain.clone(),
        socket: args.injection.socket()?,
        webhook: endpoint(&args.layout, args.tls_dir.as_deref())?,
        gateway_replicas: args.gateway_replicas,
    };
    print!(
        "{}",
        warden_kube::install::to_yaml(&warden_kube::install::objects(&options))
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints what install made, for `kubectl delete --ignore-not-found -f -`.
pub(crate) fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let layout = &args.layout;
    let options = InstallOptions {
        namespace: layout.namespace.clone(),
        image: String::new(),
        trust_domain: String::new(),
        socket: SpiffeSocket::default(),
        // Only kinds and names are printed: no certificate is made or needed.
        webhook: match (&layout.webhook_url, layout.cert_manager) {
            (Some(url), _) => WebhookEndpoint::Url {
                url: url.clone(),
                ca_pem: String::new(),
            },
            (None, true) => WebhookEndpoint::CertManager,
            (None, false) => WebhookEndpoint::InCluster(WebhookCerts::default()),
        },
        gateway_replicas: 1,
    };
    print!(
        "{}",
        warden_kube::install::to_yaml(&warden_kube::install::uninstall_objects(
            &options,
            args.keep_crds
        ))
    );
    Ok(ExitCode::SUCCESS)
}

/// Serves both admission webhooks until SIGINT/SIGTERM.
pub(crate) async fn webhook(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let client = warden_kube::client(args.kubeconfig.as_deref()).await?;
    let config = WebhookServerConfig {
        listen: args.listen,
        tls_dir: args.tls_dir,
        settings: WebhookSettings {
            sidecar: SidecarTemplate {
                image: args.injection.image.clone(),
                control_namespace: args.control_namespace,
                socket: args.injection.socket()?,
            },
            default_trust_domain: args.injection.trust_domain.clone(),
        },
        limits: Default::default(),
    };
    warden_kube::server::run(
        config,
        warden_kube::cluster::KubeReader::new(client),
        crate::shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The validating webhook's answer for every Agent and MeshConfig of the manifests, checked
/// against the manifests themselves: exit 0 when all would be admitted, 1 otherwise.
pub(crate) fn admission(args: AdmissionArgs) -> anyhow::Result<ExitCode> {
    let manifests = match warden_model::load_path(&args.path) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                println!("DENY {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let results = warden_kube::validate::check_manifests(&manifests);
    let denied = results.iter().filter(|(_, v)| !v.allowed()).count();
    match args.output {
        AdmissionOutput::Json => {
            let objects: Vec<serde_json::Value> = results
                .iter()
                .map(|(object, verdict)| {
                    serde_json::json!({
                        "object": object,
                        "allowed": verdict.allowed(),
                        "errors": verdict.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                        "warnings": verdict.warnings,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"objects": objects, "denied": denied})
                )?
            );
        }
        AdmissionOutput::Text => {
            for (object, verdict) in &results {
                if verdict.allowed() {
                    println!("ALLOW {object}");
                }
                for e in &verdict.errors {
                    println!("DENY {e}");
                }
                for w in &verdict.warnings {
                    println!("  warning: {object}: {w}");
                }
            }
            println!(
                "{} objects, {} would be admitted, {denied} refused",
                results.len(),
                results.len() - denied
            );
        }
    }
    Ok(if denied == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
