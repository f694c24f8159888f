//! `warden-bench`: measures Warden against a direct connection, nginx and HAProxy in the same
//! run, on loopback, and reports ratios and the targets of docs/benchmarks.md.
//!
//! Scenarios: `direct` (client → upstream), `nginx-mtls` and `haproxy-mtls` (client → nginx or
//! HAProxy terminating mTLS → upstream), `sidecar-mtls` (client → Strict sidecar → upstream),
//! `mesh-path` (client → sidecar egress → gateway → sidecar → upstream), `nginx-mesh` and
//! `haproxy-mesh` (the same three hops built from nginx or HAProxy), `handshakes` (new
//! mTLS handshakes per second), `memory` (RSS idle and with 1,000 connections),
//! `gateway-burst` (the gateway's RSS after 60 stalled ~9.9 MB anonymous bodies), `policy`
//! (one decision with 100,000 agents). Each request is an A2A `SendMessage` of 1 KiB. With
//! `--baseline`, the sidecar and mesh rows run again against another `warden` binary, so that
//! before and after are measured side by side.

mod burst;
mod load;
mod os;
mod peers;
mod setup;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Warden against a direct connection, nginx and HAProxy, side by side.
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
    /// Run only these scenarios (comma-separated: direct, nginx-mtls, haproxy-mtls,
    /// sidecar-mtls, nginx-mesh, haproxy-mesh, mesh-path, handshakes, memory, gateway-burst,
    /// policy); for profiling one path.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds per closed and open loop [default: 15, or 4 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// The `warden` binary [default: next to this one].
    #[arg(long)]
    warden: Option<PathBuf>,
    /// Another `warden` binary (e.g. built from an earlier commit): its sidecar and mesh path
    /// run as rows `sidecar-mtls@baseline` and `mesh-path@baseline` beside this one's.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 11] = [
    "direct",
    "nginx-mtls",
    "haproxy-mtls",
    "sidecar-mtls",
    "nginx-mesh",
    "haproxy-mesh",
    "mesh-path",
    "handshakes",
    "memory",
    "gateway-burst",
    "policy",
];

/// The suffix of the rows measured against the `--baseline` binary.
const BASELINE: &str = "@baseline";

/// One row of the table.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Scenario {
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
    /// haproxy-mtls's CPU per request divided by this row's: above 1, cheaper than HAProxy.
    cpu_efficiency_vs_haproxy: Option<f64>,
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct Report {
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
    /// The same two figures against HAProxy.
    haproxy_handshakes_per_sec: Option<f64>,
    haproxy_handshakes_per_cpu_sec: Option<f64>,
    /// The same two figures against the `--baseline` binary's sidecar.
    baseline_handshakes_per_sec: Option<f64>,
    baseline_handshakes_per_sidecar_cpu_sec: Option<f64>,
    sidecar_idle_rss_kib: Option<u64>,
    sidecar_1k_conn_rss_kib: Option<u64>,
    gateway_idle_rss_kib: Option<u64>,
    /// The gateway's largest RSS during the burst of stalled anonymous bodies to a target that
    /// denies them (issue 11.2), and after it.
    gateway_burst_peak_rss_kib: Option<u64>,
    gateway_burst_after_rss_kib: Option<u64>,
    /// The same to a target that admits anonymous callers (the bodies are read, within the
    /// buffering budget).
    gateway_burst_admitted_peak_rss_kib: Option<u64>,
    gateway_burst_admitted_after_rss_kib: Option<u64>,
    policy_decision_ns: Option<f64>,
    /// Each target of docs/benchmarks.md, with this run's figure.
    targets: Vec<targets::Check>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn kib(v: Option<u64>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

fn table(report: &Report) -> String {
    let mut out = String::from(
        "| scenario | rps | p50 ms | p99 ms | max ms | cpu s | cpu µs/req | rss KiB | rps ÷ direct | rps ÷ nginx | cpu/req: nginx ÷ row | cpu/req: haproxy ÷ row | added p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &report.scenarios {
        if let Some(why) = &s.skipped {
            out.push_str(&format!(
                "| {} | skipped: {why} | | | | | | | | | | | |\n",
                s.name
            ));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.name,
            fmt(s.rps, 0),
            fmt(s.p50_ms, 3),
            fmt(s.p99_ms, 3),
            fmt(s.max_ms, 3),
            fmt(s.cpu_seconds, 2),
            fmt(s.cpu_us_per_request, 1),
            kib(s.rss_kib),
            fmt(s.rps_vs_direct, 2),
            fmt(s.rps_vs_nginx, 2),
            fmt(s.cpu_efficiency_vs_nginx, 2),
            fmt(s.cpu_efficiency_vs_haproxy, 2),
            fmt(s.added_p99_ms_vs_direct, 3),
        ));
    }
    out.push_str(&format!(
        "\nhandshakes/s (per CPU second): sidecar {} ({}), nginx {} ({}), haproxy {} ({}), baseline sidecar {} ({})\n\
         RSS KiB: sidecar idle {}, with 1,000 connections {} · gateway idle {}, burst to a denying target: peak {}, after {}; to an admitting one: peak {}, after {} · policy decision {} ns\n",
        fmt(report.handshakes_per_sec, 0),
        fmt(report.handshakes_per_sidecar_cpu_sec, 0),
        fmt(report.nginx_handshakes_per_sec, 0),
        fmt(report.nginx_handshakes_per_cpu_sec, 0),
        fmt(report.haproxy_handshakes_per_sec, 0),
        fmt(report.haproxy_handshakes_per_cpu_sec, 0),
        fmt(report.baseline_handshakes_per_sec, 0),
        fmt(report.baseline_handshakes_per_sidecar_cpu_sec, 0),
        kib(report.sidecar_idle_rss_kib),
        kib(report.sidecar_1k_conn_rss_kib),
        kib(report.gateway_idle_rss_kib),
        kib(report.gateway_burst_peak_rss_kib),
        kib(report.gateway_burst_after_rss_kib),
        kib(report.gateway_burst_admitted_peak_rss_kib),
        kib(report.gateway_burst_admitted_after_rss_kib),
        fmt(report.policy_decision_ns, 0),
    ));
    out.push_str(&targets::table(&report.targets));
    out
}

/// Full handshakes per second, and per second of the target's own CPU.
async fn handshake_rates(
    target: &std::sync::Arc<load::Target>,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let cpu_before = os::cpu_seconds(&target.pids);
    let completed = load::handshakes(target, duration).await?;
    let cpu = os::cpu_seconds(&target.pids) - cpu_before;
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

/// One row: a closed loop for throughput, then an open loop for latency, and the CPU the
/// path's processes spent across both.
async fn measure(
    name: &str,
    target: &std::sync::Arc<load::Target>,
    args: &Args,
    seconds: u64,
) -> anyhow::Result<Scenario> {
    eprintln!("running {name}…");
    let duration = Duration::from_secs(seconds);
    let cpu_before = os::cpu_seconds(&target.pids);
    let completed = load::closed_loop(target, args.connections, duration).await?;
    let latencies = load::open_loop(target, args.rate, duration).await?;
    let cpu = os::cpu_seconds(&target.pids) - cpu_before;
    let requests = completed.count as f64 + latencies.count() as f64;
    Ok(Scenario {
        name: name.into(),
        rps: Some(completed.per_second()),
        cpu_us_per_request: (!target.pids.is_empty()).then_some(cpu / requests * 1e6),
        p50_ms: Some(latencies.quantile(0.50)),
        p99_ms: Some(latencies.quantile(0.99)),
        max_ms: Some(latencies.max()),
        cpu_seconds: (!target.pids.is_empty()).then_some(cpu),
        rss_kib: target.pids.first().and_then(|p| os::rss_kib(*p)),
        ..Scenario::default()
    })
}

/// The rows' ratios to `direct`, nginx and HAProxy.
fn add_ratios(report: &mut Report) {
    let find = |name: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == name && s.skipped.is_none())
            .cloned()
    };
    let direct = find("direct").unwrap_or_default();
    let (nginx, haproxy) = (find("nginx-mtls"), find("haproxy-mtls"));
    let efficiency = |peer: &Option<Scenario>, own: Option<f64>| {
        peer.as_ref()
            .and_then(|p| p.cpu_us_per_request.zip(own))
            .map(|(p, own)| p / own)
    };
    for s in report.scenarios.iter_mut().filter(|s| s.skipped.is_none()) {
        s.rps_vs_direct = s.rps.zip(direct.rps).map(|(a, b)| a / b);
        s.rps_vs_nginx = nginx
            .as_ref()
            .and_then(|n| s.rps.zip(n.rps))
            .map(|(a, b)| a / b);
        s.added_p99_ms_vs_direct = s.p99_ms.zip(direct.p99_ms).map(|(a, b)| a - b);
        s.cpu_efficiency_vs_nginx = efficiency(&nginx, s.cpu_us_per_request);
        s.cpu_efficiency_vs_haproxy = efficiency(&haproxy, s.cpu_us_per_request);
    }
}

/// The request rows, in the order of [`SCENARIOS`], each Warden row followed by its baseline
/// twin (when `--baseline` was given), so that the two see the same machine.
async fn request_rows(
    env: &setup::Env,
    args: &Args,
    seconds: u64,
    wanted: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Scenario>> {
    let mut targets: Vec<(String, Result<std::sync::Arc<load::Target>, String>)> =
        vec![("direct".into(), Ok(env.direct()))];
    for name in SCENARIOS.into_iter().filter(|name| wanted(name)) {
        if let Some(peer) = peers::Peer::ALL.into_iter().find(|p| p.row() == name) {
            targets.push((name.into(), env.peer(peer)));
        }
        for baseline in [false, true] {
            let target = match name {
                "sidecar-mtls" => env.sidecar(baseline),
                "mesh-path" => env.mesh_path(baseline),
                _ => None,
            };
            let row = match baseline {
                false => name.to_owned(),
                true => format!("{name}{BASELINE}"),
            };
            targets.extend(target.map(|t| (row, Ok(t))));
        }
    }
    let mut rows = Vec::new();
    for (name, target) in targets {
        if !wanted(name.trim_end_matches(BASELINE)) {
            continue;
        }
        rows.push(match target {
            Ok(target) => measure(&name, &target, args, seconds).await?,
            Err(why) => Scenario {
                name,
                skipped: Some(why),
                ..Scenario::default()
            },
        });
    }
    Ok(rows)
}

async fn run_handshakes(env: &setup::Env, report: &mut Report, seconds: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds);
    if let Some(sidecar) = env.sidecar(false) {
        eprintln!("running handshakes…");
        let (rate, per_cpu) = handshake_rates(&sidecar, duration).await?;
        report.handshakes_per_sec = Some(rate);
        report.handshakes_per_sidecar_cpu_sec = Some(per_cpu);
    }
    if let Some(sidecar) = env.sidecar(true) {
        eprintln!("running handshakes against the baseline sidecar…");
        let (rate, per_cpu) = handshake_rates(&sidecar, duration).await?;
        report.baseline_handshakes_per_sec = Some(rate);
        report.baseline_handshakes_per_sidecar_cpu_sec = Some(per_cpu);
    }
    if let Ok(nginx) = env.peer(peers::Peer::NginxMtls) {
        eprintln!("running handshakes against nginx…");
        let (rate, per_cpu) = handshake_rates(&nginx, duration).await?;
        report.nginx_handshakes_per_sec = Some(rate);
        report.nginx_handshakes_per_cpu_sec = Some(per_cpu);
    }
    if let Ok(haproxy) = env.peer(peers::Peer::HaproxyMtls) {
        eprintln!("running handshakes against haproxy…");
        let (rate, per_cpu) = handshake_rates(&haproxy, duration).await?;
        report.haproxy_handshakes_per_sec = Some(rate);
        report.haproxy_handshakes_per_cpu_sec = Some(per_cpu);
    }
    Ok(())
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
    if let Some(baseline) = &args.baseline {
        anyhow::ensure!(
            baseline.exists(),
            "--baseline: {} not found",
            baseline.display()
        );
    }
    let seconds = args.seconds.unwrap_or(if args.quick { 4 } else { 15 });
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    if let Some(unknown) = args.only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        anyhow::bail!(
            "--only: no scenario {unknown:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    // nginx and HAProxy (and their handshake baselines) only when their rows are wanted.
    let env = setup::Env::start(
        &warden,
        setup::Wanted {
            peers: peers::Peer::ALL
                .into_iter()
                .filter(|p| wanted(p.row()))
                .collect(),
            baseline: args.baseline.as_deref(),
        },
    )
    .await?;
    let mut report = Report {
        machine: setup::machine(),
        quick: args.quick,
        rate: args.rate,
        ..Report::default()
    };
    report.scenarios = request_rows(&env, &args, seconds, &wanted).await?;
    add_ratios(&mut report);
    if wanted("handshakes") {
        let seconds = args.seconds.unwrap_or(if args.quick { 3 } else { 10 });
        run_handshakes(&env, &mut report, seconds).await?;
    }
    if wanted("memory") {
        eprintln!("running memory…");
        let (idle, loaded) = env.sidecar_memory().await?;
        report.sidecar_idle_rss_kib = idle;
        report.sidecar_1k_conn_rss_kib = loaded;
    }
    report.gateway_idle_rss_kib = env.gateway_rss();
    if wanted("gateway-burst") {
        eprintln!("running gateway-burst…");
        let (addr, pid) = env.gateway();
        let denied = burst::gateway_burst(addr, pid, "bench-b/private", 60).await;
        report.gateway_burst_peak_rss_kib = denied.peak_kib;
        report.gateway_burst_after_rss_kib = denied.after_kib;
        let admitted = burst::gateway_burst(addr, pid, "bench-b/server", 60).await;
        report.gateway_burst_admitted_peak_rss_kib = admitted.peak_kib;
        report.gateway_burst_admitted_after_rss_kib = admitted.after_kib;
    }
    if wanted("policy") {
        eprintln!("running policy…");
        report.policy_decision_ns = Some(setup::policy_decision_ns());
    }
    report.targets = targets::checks(&report);
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
