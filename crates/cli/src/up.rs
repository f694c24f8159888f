//! `warden up`, `check`, `status`, `verify`, `down`, `logs` and the hidden `exec-child`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use warden_local::status::{MeshStatus, StatusError};

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// A manifest file or directory.
    #[arg(default_value = "examples/cross-namespace-a2a")]
    path: PathBuf,
    /// The CA directory to use (e.g. one adopted from openssl) [default: <state-dir>/ca].
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The gateway's listener.
    #[arg(long, default_value = "127.0.0.1:8083")]
    gateway_listen: SocketAddr,
    /// Do not run `verify` once the mesh is ready.
    #[arg(long)]
    no_verify: bool,
    /// The URL clients reach the gateway at, for card URLs [default: the scheme and authority
    /// each client used].
    #[arg(long)]
    public_url: Option<String>,
    /// The `spire-server` program, for a MeshConfig with `identity.provider: Spire` (entries
    /// are made on its `serverSocket`).
    #[arg(long, default_value = "spire-server")]
    spire_server: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Table,
    /// The stable machine interface.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The manifests the mesh runs (informational: the running mesh's state is checked).
    path: Option<PathBuf>,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    #[command(flatten)]
    cluster_verify: crate::cluster::ClusterVerifyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// A process (`gateway`, `team-beta/specialist sidecar`) or an agent
    /// (`team-beta/specialist`: its sidecar and app) [default: all].
    name: Option<String>,
    /// Keep printing what the logs gain (Ctrl-C stops).
    #[arg(short, long)]
    follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExecChildArgs {
    /// The PID of the `warden up` that started this child.
    #[arg(long)]
    parent: u32,
    /// The program, then its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn up_config(
    args: UpArgs,
    verify: bool,
    state_dir: &Path,
    json_logs: bool,
) -> anyhow::Result<warden_local::UpConfig> {
    Ok(warden_local::UpConfig {
        manifests: std::path::absolute(&args.path)?,
        state_dir: std::path::absolute(state_dir)?,
        ca_dir: args.ca_dir,
        gateway_listen: args.gateway_listen,
        public_url: args.public_url,
        warden: std::env::current_exe()?,
        verify: verify && !args.no_verify,
        json_logs,
        spire_server: args.spire_server,
    })
}

/// `json_logs`: the global `--log-format json`, passed on to every child.
pub(crate) async fn up(
    args: UpArgs,
    state_dir: &Path,
    json_logs: bool,
) -> anyhow::Result<ExitCode> {
    let config = up_config(args, true, state_dir, json_logs)?;
    match warden_local::up(config, up_shutdown()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ warden_local::UpError::Preflight(_)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP: whatever asks `up` to end, it stops its children
/// first (a SIGKILL is covered by the children's parent-death signal).
async fn up_shutdown() {
    let hangup = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        _ = hangup => {}
    }
}

/// `warden check`: the pre-flight checks of `warden up`, on demand.
pub(crate) fn check(args: UpArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let config = up_config(args, false, state_dir, false)?;
    match warden_local::preflight::preflight(&config) {
        Ok(cleared) => {
            for line in &cleared.passed {
                println!("ok   {line}");
            }
            println!("all pre-flight checks passed: `warden up` can start");
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            println!("{} pre-flight check(s) failed", problems.len());
            Ok(ExitCode::from(1))
        }
    }
}

/// Exit code of `status` and `verify` when no mesh runs.
const NOT_RUNNING: u8 = 3;

pub(crate) async fn status(args: StatusArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    if args.cluster.kubeconfig.is_some() {
        return crate::cluster::status(&args.cluster, matches!(args.output, Format::Json)).await;
    }
    let mut status = match MeshStatus::load(state_dir) {
        Ok(s) => s,
        Err(e @ StatusError::NotRunning(_)) => {
            if let Format::Json = args.output {
                println!("{}", serde_json::json!({"running": false}));
            }
            eprintln!("{e}");
            return Ok(ExitCode::from(NOT_RUNNING));
        }
        Err(e) => return Err(e.into()),
    };
    status.refresh().await;
    match args.output {
        Format::Table => print!("{}", status.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn verify(args: VerifyArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    if args.cluster.kubeconfig.is_some() {
        return crate::cluster::verify(&args.cluster, &args.cluster_verify).await;
    }
    if warden_local::lock::holder(state_dir).is_none() {
        eprintln!(
            "{}",
            StatusError::NotRunning(state_dir.display().to_string())
        );
        return Ok(ExitCode::from(NOT_RUNNING));
    }
    let checks = warden_local::verify::verify(state_dir)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", warden_local::verify::render(&checks));
    Ok(if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `warden down`: stops the mesh running on the state directory, from another terminal.
pub(crate) async fn down(state_dir: &Path) -> anyhow::Result<ExitCode> {
    match warden_local::lock::stop_holder(state_dir, Duration::from_secs(20)).await {
        Ok(pid) => {
            println!(
                "stopped the mesh in {} (warden up, pid {pid})",
                state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) async fn logs(args: LogsArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let files = warden_local::logs::log_files(state_dir)
        .and_then(|f| warden_local::logs::select(f, args.name.as_deref()))
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout();
    tokio::select! {
        _ = warden_local::logs::print(&files, args.follow, &mut out) => {}
        _ = crate::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Becomes the child `warden up` asked for, armed to die with it.
pub(crate) fn exec_child(args: ExecChildArgs) -> anyhow::Result<ExitCode> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("exec-child: no program given"))?;
    let error = warden_local::supervisor::exec_child(args.parent, Path::new(program), rest);
    Err(anyhow::anyhow!("cannot run {program}: {error}"))
}
