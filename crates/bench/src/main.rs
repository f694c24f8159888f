//! `warden-bench`: measures Warden against a direct connection and nginx in the same run, on
//! loopback, and reports ratios.
//!
//! Scenarios: `direct` (client → upstream), `nginx-mtls` (client → nginx terminating mTLS →
//! upstream), `sidecar-mtls` (client → Strict sidecar → upstream), `mesh-path` (client →
//! sidecar egress → gateway → sidecar → upstream), `handshakes` (new mTLS handshakes per second
//! against the sidecar), `memory` (RSS idle and with 1,000 connections), `policy` (one decision
//! with 100,000 agents). Each request is an A2A `SendMessage` of 1 KiB.

mod load;
mod setup;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Warden against a direct connection and nginx, side by side.
#[derive(Debug, Parser)]
#[command(name = "warden-bench", version)]
struct Args {
    /// Short runs (the whole invocation under 3 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Open-loop rate, requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Connections for the closed-loop throughput run.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Run only these scenarios (comma-separated: direct, nginx-mtls, sidecar-mtls, mesh-path,
    /// handshakes, memory, policy); for profiling one path.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds per closed and open loop [default: 15, or 4 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// The `warden` binary [default: next to this one].
    #[arg(long)]
    warden: Option<PathBuf>,
}

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 7] = [
    "direct",
    "nginx-mtls",
    "sidecar-mtls",
    "mesh-path",
    "handshakes",
    "memory",
    "policy",
];

/// One row of the table.
#[derive(Debug, Clone, Serialize, Default)]
struct Scenario {
    name: String,
    rps: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    cpu_seconds: Option<f64>,
    rss_kib: Option<u64>,
    /// Microseconds of CPU the processes on the path spent per request (both loops): what
    /// the proxy costs, whoever else shares the cores.
    cpu_us_per_request: Option<f64>,
    skipped: Option<String>,
    rps_vs_direct: Option<f64>,
    rps_vs_nginx: Option<f64>,
    added_p99_ms_vs_direct: Option<f64>,
    /// nginx-mtls's CPU per request divided by this row's: above 1, cheaper than nginx.
    cpu_efficiency_vs_nginx: Option<f64>,
}

#[derive(Debug, Serialize, Default)]
struct Report {
    machine: String,
    quick: bool,
    rate: u64,
    scenarios: Vec<Scenario>,
    handshakes_per_sec: Option<f64>,
    /// Handshakes per second of the sidecar's own CPU time: its capacity per core.
    handshakes_per_sidecar_cpu_sec: Option<f64>,
    /// The same two figures against nginx (same certificates, same client).
    nginx_handshakes_per_sec: Option<f64>,
    nginx_handshakes_per_cpu_sec: Option<f64>,
    sidecar_idle_rss_kib: Option<u64>,
    sidecar_1k_conn_rss_kib: Option<u64>,
    gateway_idle_rss_kib: Option<u64>,
    policy_decision_ns: Option<f64>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn table(report: &Report) -> String {
    let mut out = String::from(
        "| scenario | rps | p50 ms | p99 ms | max ms | cpu s | cpu µs/req | rss KiB | rps ÷ direct | rps ÷ nginx | cpu/req: nginx ÷ row | added p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &report.scenarios {
        if let Some(why) = &s.skipped {
            out.push_str(&format!(
                "| {} | skipped: {why} | | | | | | | | | | |\n",
                s.name
            ));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.name,
            fmt(s.rps, 0),
            fmt(s.p50_ms, 3),
            fmt(s.p99_ms, 3),
            fmt(s.max_ms, 3),
            fmt(s.cpu_seconds, 2),
            fmt(s.cpu_us_per_request, 1),
            s.rss_kib.map_or("–".into(), |r| r.to_string()),
            fmt(s.rps_vs_direct, 2),
            fmt(s.rps_vs_nginx, 2),
            fmt(s.cpu_efficiency_vs_nginx, 2),
            fmt(s.added_p99_ms_vs_direct, 3),
        ));
    }
    out.push_str(&format!(
        "\nhandshakes/s: sidecar {} ({} per CPU second), nginx {} ({} per CPU second) · sidecar RSS idle {} KiB, with 1,000 connections {} KiB · gateway RSS idle {} KiB · policy decision {} ns\n",
        fmt(report.handshakes_per_sec, 0),
        fmt(report.handshakes_per_sidecar_cpu_sec, 0),
        fmt(report.nginx_handshakes_per_sec, 0),
        fmt(report.nginx_handshakes_per_cpu_sec, 0),
        report.sidecar_idle_rss_kib.map_or("–".into(), |v| v.to_string()),
        report.sidecar_1k_conn_rss_kib.map_or("–".into(), |v| v.to_string()),
        report.gateway_idle_rss_kib.map_or("–".into(), |v| v.to_string()),
        fmt(report.policy_decision_ns, 0),
    ));
    out
}

/// Full handshakes per second, and per second of the target's own CPU.
async fn handshake_rates(
    target: &std::sync::Arc<load::Target>,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let cpu_before = setup::cpu_seconds(&target.pids);
    let completed = load::handshakes(target, duration).await?;
    let cpu = setup::cpu_seconds(&target.pids) - cpu_before;
    Ok((completed.per_second(), completed.count as f64 / cpu))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Interrupted: dropping the run drops its environment, which stops every child process.
    tokio::select! {
        result = run(args) => result,
        _ = interrupted() => anyhow::bail!("interrupted; the processes it started are stopped"),
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let warden = match args.warden.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("warden"),
    };
    anyhow::ensure!(
        warden.exists(),
        "{} not found; build it (cargo build --release -p warden-cli) or pass --warden",
        warden.display()
    );
    let seconds = args.seconds.unwrap_or(if args.quick { 4 } else { 15 });
    let (closed, open) = (Duration::from_secs(seconds), Duration::from_secs(seconds));
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    if let Some(unknown) = args.only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        anyhow::bail!(
            "--only: no scenario {unknown:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    // nginx (and its handshake baseline) only when its row is wanted.
    let env = setup::Env::start(&warden, wanted("nginx-mtls")).await?;
    let mut report = Report {
        machine: setup::machine(),
        quick: args.quick,
        rate: args.rate,
        ..Report::default()
    };
    let targets = [
        ("direct", Some(env.direct())),
        ("nginx-mtls", env.nginx()),
        ("sidecar-mtls", Some(env.sidecar())),
        ("mesh-path", Some(env.mesh_path())),
    ];
    for (name, target) in targets {
        if !wanted(name) {
            continue;
        }
        let Some(target) = target else {
            report.scenarios.push(Scenario {
                name: name.into(),
                skipped: Some(env.nginx_skip_reason()),
                ..Scenario::default()
            });
            continue;
        };
        eprintln!("running {name}…");
        let cpu_before = setup::cpu_seconds(&target.pids);
        let completed = load::closed_loop(&target, args.connections, closed).await?;
        let latencies = load::open_loop(&target, args.rate, open).await?;
        let cpu = setup::cpu_seconds(&target.pids) - cpu_before;
        let requests = completed.count as f64 + latencies.count() as f64;
        report.scenarios.push(Scenario {
            name: name.into(),
            rps: Some(completed.per_second()),
            cpu_us_per_request: (!target.pids.is_empty()).then_some(cpu / requests * 1e6),
            p50_ms: Some(latencies.quantile(0.50)),
            p99_ms: Some(latencies.quantile(0.99)),
            max_ms: Some(latencies.max()),
            cpu_seconds: (!target.pids.is_empty()).then_some(cpu),
            rss_kib: target.pids.first().and_then(|p| setup::rss_kib(*p)),
            ..Scenario::default()
        });
    }
    let direct = report
        .scenarios
        .iter()
        .find(|s| s.name == "direct")
        .cloned()
        .unwrap_or_default();
    let nginx = report
        .scenarios
        .iter()
        .find(|s| s.name == "nginx-mtls" && s.skipped.is_none())
        .cloned();
    for s in report.scenarios.iter_mut().filter(|s| s.skipped.is_none()) {
        s.rps_vs_direct = s.rps.zip(direct.rps).map(|(a, b)| a / b);
        s.rps_vs_nginx = nginx
            .as_ref()
            .and_then(|n| s.rps.zip(n.rps))
            .map(|(a, b)| a / b);
        s.added_p99_ms_vs_direct = s.p99_ms.zip(direct.p99_ms).map(|(a, b)| a - b);
        s.cpu_efficiency_vs_nginx = nginx
            .as_ref()
            .and_then(|n| n.cpu_us_per_request.zip(s.cpu_us_per_request))
            .map(|(n, own)| n / own);
    }
    if wanted("handshakes") {
        eprintln!("running handshakes…");
        let seconds = args.seconds.unwrap_or(if args.quick { 3 } else { 10 });
        let duration = Duration::from_secs(seconds);
        let (rate, per_cpu) = handshake_rates(&env.sidecar(), duration).await?;
        report.handshakes_per_sec = Some(rate);
        report.handshakes_per_sidecar_cpu_sec = Some(per_cpu);
        if let Some(nginx) = env.nginx() {
            eprintln!("running handshakes against nginx…");
            let (rate, per_cpu) = handshake_rates(&nginx, duration).await?;
            report.nginx_handshakes_per_sec = Some(rate);
            report.nginx_handshakes_per_cpu_sec = Some(per_cpu);
        }
    }
    if wanted("memory") {
        eprintln!("running memory…");
        let (idle, loaded) = env.sidecar_memory().await?;
        report.sidecar_idle_rss_kib = idle;
        report.sidecar_1k_conn_rss_kib = loaded;
        report.gateway_idle_rss_kib = env.gateway_rss();
    }
    if wanted("policy") {
        eprintln!("running policy…");
        report.policy_decision_ns = Some(setup::policy_decision_ns());
    }
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
