//! `warden`: zero-trust networking for AI agents. This binary only parses flags and calls the
//! library crates; see `docs/ARCHITECTURE.md` for how the pieces fit.

mod ca;
mod cluster;
mod controller;
mod gateway;
mod kubernetes;
mod policy;
mod sidecar;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Zero-trust A2A networking for AI agents: SPIFFE identities, mutual TLS on every hop,
/// per-request authorization.
#[derive(Debug, Parser)]
#[command(name = "warden", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "WARDEN_LOG_FORMAT")]
    log_format: LogFormat,

    /// Where Warden keeps its state (CA, sockets, snapshots) when a command is not told
    /// otherwise.
    #[arg(
        long,
        global = true,
        default_value = ".warden",
        env = "WARDEN_STATE_DIR"
    )]
    state_dir: PathBuf,

    /// Threads that serve connections [default: one per CPU]. A sidecar given one CPU runs
    /// best with 1 (no cross-thread wake-ups; less memory).
    #[arg(long, global = true, env = "WARDEN_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The embedded certificate authority: create or adopt a root, issue and inspect SVIDs,
    /// serve the SPIFFE Workload API.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check manifests (a file or directory of YAML): exit 0 when valid and every agent is
    /// accepted, otherwise each problem on its own line and exit 1.
    Validate(policy::ValidateArgs),
    /// Decide one call by the manifests' policy and show why: exit 0 ALLOW, 1 DENY, 2 error.
    Explain(policy::ExplainArgs),
    /// Compile manifests into the snapshot file sidecars load with --snapshot.
    Compile(policy::CompileArgs),
    /// Print the warden.dev manifests equivalent to the given ones (kagent Agents and
    /// kagenti/rossoctl AgentRuntimes converted; the same decision for every call).
    Convert(policy::ConvertArgs),
    /// Run the sidecar beside an agent: one-port mTLS ingress (disabled, permissive or
    /// strict), egress mTLS origination, verified caller identity to the app.
    Sidecar(Box<sidecar::SidecarArgs>),
    /// Run the A2A gateway: /api/a2a/{namespace}/{agent}/ with per-request authentication,
    /// authorization, delegation headers, card rewriting, streaming and audit.
    Gateway(Box<gateway::GatewayArgs>),
    /// Built-in agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Run the local mesh from manifests: embedded CA and Workload API, the gateway, a sidecar
    /// and an agent per Agent; prints the status and runs `verify` once ready.
    Up(up::UpArgs),
    /// Show the running local mesh: agents, conditions, addresses, cards, gateway, CA.
    Status(up::StatusArgs),
    /// Check the running local mesh, one PASS/FAIL row per property derived from its
    /// manifests; exit 0 when all pass, 1 when any fails, 3 when no mesh runs.
    Verify(up::VerifyArgs),
    /// Run `warden up`'s pre-flight checks (state directory writable and free, ports free,
    /// manifests valid) without starting anything; exit 0 when all pass.
    Check(up::UpArgs),
    /// Stop the mesh running on the state directory (from another terminal).
    Down,
    /// Show the logs of the mesh's processes (all, one process, or one agent's); -f follows.
    Logs(up::LogsArgs),
    /// Internal: how `warden up` starts a child so that it dies with `up`.
    #[command(hide = true)]
    ExecChild(up::ExecChildArgs),
    /// Print every object a cluster needs, for `kubectl apply -f -`: CRDs, namespace,
    /// least-privilege RBAC, controller, gateway and webhook Deployments and Services,
    /// webhook configurations with their CA bundle.
    Install(Box<kubernetes::InstallArgs>),
    /// Print what `warden install` made, for `kubectl delete --ignore-not-found -f -`.
    Uninstall(kubernetes::UninstallArgs),
    /// Serve the validating and mutating admission webhooks over HTTPS (in the cluster, or
    /// outside it with --kubeconfig and `warden install --webhook-url`).
    Webhook(Box<kubernetes::WebhookArgs>),
    /// Keep every Agent's status (Accepted, MTLSReady, CardDiscovered, Ready, the card fetched
    /// over mTLS) and its workload's mode annotation in line with the compiled mesh.
    Controller(Box<controller::ControllerArgs>),
    /// Run the validating webhook's checks offline over manifests (for CI before `kubectl
    /// apply`): exit 0 when every object would be admitted, 1 otherwise.
    Admission(kubernetes::AdmissionArgs),
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// An A2A 1.0 echo agent (0.3 method names too): card, SendMessage, SendStreamingMessage
    /// (SSE), GetTask, CancelTask; its replies name the verified caller and the delegation
    /// headers it received.
    Echo(EchoArgs),
}

#[derive(Debug, clap::Args)]
struct EchoArgs {
    /// Where to listen (the sidecar's --app).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The agent's name, in its card and replies.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Forward each message to this agent's JSON-RPC URL (through the sidecar's egress, e.g.
    /// http://127.0.0.1:15001/api/a2a/team-beta/specialist/) and include its reply.
    #[arg(long)]
    delegate_to: Option<String>,
    /// Serve only connections opened by this OS user (repeatable; found in /proc/net/tcp{,6}),
    /// so that no other local user reaches the app around its sidecar.
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files stay free of ANSI codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::ExecChild(args) = cli.command {
        return finish(up::exec_child(args));
    }
    init_logging(cli.log_format);
    let mut builder = match cli.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ca(cmd) => ca::run(cmd, &cli.state_dir).await,
            Command::Validate(args) => Ok(policy::validate(args)),
            Command::Explain(args) => policy::run_explain(args),
            Command::Compile(args) => policy::compile(args),
            Command::Convert(args) => policy::convert(args),
            Command::Sidecar(args) => sidecar::run(*args).await,
            Command::Gateway(args) => gateway::run(*args).await,
            Command::Up(args) => {
                let json_logs = matches!(cli.log_format, LogFormat::Json);
                up::up(args, &cli.state_dir, json_logs).await
            }
            Command::Status(args) => up::status(args, &cli.state_dir).await,
            Command::Verify(args) => up::verify(args, &cli.state_dir).await,
            Command::Check(args) => up::check(args, &cli.state_dir),
            Command::Down => up::down(&cli.state_dir).await,
            Command::Logs(args) => up::logs(args, &cli.state_dir).await,
            Command::ExecChild(args) => up::exec_child(args),
            Command::Install(args) => kubernetes::install(*args),
            Command::Uninstall(args) => kubernetes::uninstall(args),
            Command::Webhook(args) => kubernetes::webhook(*args).await,
            Command::Controller(args) => controller::run(*args).await,
            Command::Admission(args) => kubernetes::admission(args),
            Command::Agent(AgentCommand::Echo(args)) => {
                let config = warden_a2a::echo::EchoConfig {
                    listen: args.listen,
                    name: args.name,
                    delegate_to: args.delegate_to,
                    admit: (!args.allow_uid.is_empty()).then(|| {
                        let uids = args.allow_uid;
                        warden_a2a::echo::Admit(std::sync::Arc::new(move |local, remote| {
                            warden_proxy::peer_uid::client_uid(local, remote)
                                .is_some_and(|uid| uids.contains(&uid))
                        }))
                    }),
                };
                warden_a2a::echo::run(config, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    finish(result)
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
