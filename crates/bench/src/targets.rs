//! The targets of docs/benchmarks.md (issues 11 and 17), computed from one run's figures, so
//! that a single invocation answers every one of them.

use serde::Serialize;

use crate::{BASELINE, Report, Scenario};

/// One target and this run's figure for it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured, with its limit.
    pub target: &'static str,
    /// This run's figure; `None` when the rows it needs did not run.
    pub value: Option<f64>,
    /// Whether the figure is within the limit; `None` when not measured.
    pub met: Option<bool>,
}

/// At most, or at least, a limit; or a figure given for reading only.
enum Limit {
    AtMost(f64),
    AtLeast(f64),
    Reading,
}

fn check(target: &'static str, value: Option<f64>, limit: Limit) -> Check {
    let met = value.and_then(|v| match limit {
        Limit::AtMost(l) => Some(v <= l),
        Limit::AtLeast(l) => Some(v >= l),
        Limit::Reading => None,
    });
    Check { target, value, met }
}

fn row<'a>(report: &'a Report, name: &str) -> Option<&'a Scenario> {
    report
        .scenarios
        .iter()
        .find(|s| s.name == name && s.skipped.is_none())
}

/// `field` of row `a` divided by the same of row `b`.
fn ratio(
    report: &Report,
    a: &str,
    b: &str,
    field: impl Fn(&Scenario) -> Option<f64>,
) -> Option<f64> {
    let (a, b) = (row(report, a)?, row(report, b)?);
    field(a).zip(field(b)).map(|(a, b)| a / b)
}

fn kib(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// Every target this run has the figures for (the others are listed as not measured).
pub fn checks(report: &Report) -> Vec<Check> {
    use Limit::{AtLeast, AtMost, Reading};
    let cpu = |s: &Scenario| s.cpu_us_per_request;
    let rps = |s: &Scenario| s.rps;
    let added_p99 = |name: &str| row(report, name).and_then(|s| s.added_p99_ms_vs_direct);
    let base = |name: &str| format!("{name}{BASELINE}");
    let handshakes_vs_baseline = report
        .handshakes_per_sidecar_cpu_sec
        .zip(report.baseline_handshakes_per_sidecar_cpu_sec)
        .map(|(a, b)| a / b);
    let growth = |after: Option<u64>| {
        after
            .zip(report.gateway_idle_rss_kib)
            .map(|(after, idle)| (after as f64 - idle as f64) / 1024.0)
    };
    // What the same three hops cost when built from nginx or HAProxy: how much of the 2.5 ×
    // is the path itself (three processes, four TLS legs) rather than Warden.
    let peers = [
        (
            "nginx-mesh cpu/req ÷ nginx-mtls cpu/req (the 2.5 × applied to nginx; for reading)",
            "nginx-mesh",
            "nginx-mtls",
        ),
        (
            "haproxy-mesh cpu/req ÷ haproxy-mtls cpu/req (for reading)",
            "haproxy-mesh",
            "haproxy-mtls",
        ),
        (
            "mesh-path cpu/req ÷ nginx-mesh cpu/req (for reading)",
            "mesh-path",
            "nginx-mesh",
        ),
        (
            "mesh-path cpu/req ÷ haproxy-mesh cpu/req (for reading)",
            "mesh-path",
            "haproxy-mesh",
        ),
    ]
    .map(|(target, a, b)| check(target, ratio(report, a, b, cpu), Reading));
    let mut checks = vec![
        check(
            "mesh-path cpu/req ÷ sidecar-mtls cpu/req ≤ 2.5",
            ratio(report, "mesh-path", "sidecar-mtls", cpu),
            AtMost(2.5),
        ),
        check(
            "mesh-path rps ÷ nginx-mtls rps ≥ 0.6",
            ratio(report, "mesh-path", "nginx-mtls", rps),
            AtLeast(0.6),
        ),
        check(
            "sidecar-mtls cpu/req ÷ nginx-mtls cpu/req ≤ 0.75",
            ratio(report, "sidecar-mtls", "nginx-mtls", cpu),
            AtMost(0.75),
        ),
        check(
            "sidecar-mtls cpu/req ÷ haproxy-mtls cpu/req (no target; for reading)",
            ratio(report, "sidecar-mtls", "haproxy-mtls", cpu),
            Reading,
        ),
    ];
    checks.extend(peers);
    checks.extend([
        check(
            "sidecar-mtls added p99 at --rate ≤ 0.15 ms",
            added_p99("sidecar-mtls"),
            AtMost(0.15),
        ),
        check(
            "mesh-path added p99 at --rate ≤ 0.4 ms",
            added_p99("mesh-path"),
            AtMost(0.4),
        ),
        check(
            "sidecar idle RSS ≤ 10 MiB (KiB)",
            kib(report.sidecar_idle_rss_kib),
            AtMost(10240.0),
        ),
        check(
            "gateway idle RSS ≤ 10 MiB (KiB)",
            kib(report.gateway_idle_rss_kib),
            AtMost(10240.0),
        ),
        check(
            "gateway RSS after the burst to a denying target − idle ≤ 20 MiB (MiB)",
            growth(report.gateway_burst_after_rss_kib),
            AtMost(20.0),
        ),
        check(
            "gateway RSS after the burst to an admitting target − idle ≤ 20 MiB (MiB)",
            growth(report.gateway_burst_admitted_after_rss_kib),
            AtMost(20.0),
        ),
        check(
            "full handshakes per sidecar CPU second ≥ 5,100",
            report.handshakes_per_sidecar_cpu_sec,
            AtLeast(5100.0),
        ),
        check(
            "handshakes per sidecar CPU second ÷ baseline's ≥ 0.95",
            handshakes_vs_baseline,
            AtLeast(0.95),
        ),
        check(
            "sidecar-mtls cpu/req ÷ baseline's ≤ 1.05",
            ratio(report, "sidecar-mtls", &base("sidecar-mtls"), cpu),
            AtMost(1.05),
        ),
        check(
            "mesh-path cpu/req ÷ baseline's ≤ 1.05",
            ratio(report, "mesh-path", &base("mesh-path"), cpu),
            AtMost(1.05),
        ),
    ]);
    checks
}

/// The checks as a Markdown table.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::from("\n| target | this run | met |\n|---|---|---|\n");
    for c in checks {
        let (value, met) = match (c.value, c.met) {
            (Some(v), Some(met)) => (format!("{v:.2}"), if met { "yes" } else { "**no**" }),
            (Some(v), None) => (format!("{v:.2}"), "–"),
            _ => ("–".into(), "not measured"),
        };
        out.push_str(&format!("| {} | {value} | {met} |\n", c.target));
    }
    out
}
