//! `warden up`, `warden status`, `warden verify`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use warden_local::status::MeshStatus;

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
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The manifests the mesh runs (informational: the running mesh's state is checked).
    path: Option<PathBuf>,
}

pub(crate) async fn up(args: UpArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let config = warden_local::UpConfig {
        manifests: args.path,
        state_dir: std::path::absolute(state_dir)?,
        ca_dir: args.ca_dir,
        gateway_listen: args.gateway_listen,
        warden: std::env::current_exe()?,
        verify: !args.no_verify,
    };
    warden_local::up(config, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(args: StatusArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let status = MeshStatus::load(state_dir).map_err(anyhow::Error::msg)?;
    match args.output {
        Format::Table => print!("{}", status.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn verify(_args: VerifyArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
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
