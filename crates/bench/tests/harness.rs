//! The harness end to end, briefly: real `warden` processes on loopback, one second per loop,
//! checking that every figure it reports was measured (timings are never asserted).

use std::path::PathBuf;
use std::process::Command;

/// The `warden` binary next to `warden-bench`, built first if it is not there yet.
fn warden() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_warden-bench"));
    let warden = bench.with_file_name("warden");
    if !warden.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "warden-cli"])
            .status()
            .expect("run cargo build -p warden-cli");
        assert!(status.success(), "cargo build -p warden-cli failed");
    }
    warden
}

fn number(value: &serde_json::Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing or not a number in {value}"))
}

/// Runs `warden-bench --only SCENARIOS` for one second per loop: (its table, its JSON report).
fn short_run(scenarios: &str) -> (String, serde_json::Value) {
    let json = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{scenarios}.json"));
    let _ = std::fs::remove_file(&json);
    let output = Command::new(env!("CARGO_BIN_EXE_warden-bench"))
        .args(["--only", scenarios])
        .args(["--seconds", "1", "--rate", "200", "--connections", "4"])
        .arg("--warden")
        .arg(warden())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run warden-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "warden-bench failed:\n{stderr}");
    let report =
        serde_json::from_slice(&std::fs::read(&json).expect("the --json file")).expect("JSON");
    (String::from_utf8_lossy(&output.stdout).into_owned(), report)
}

#[test]
fn a_short_run_reports_every_figure_of_the_scenarios_it_ran() {
    let (stdout, report) = short_run("direct,sidecar-mtls,mesh-path,handshakes,memory");
    for row in ["| direct |", "| sidecar-mtls |", "| mesh-path |"] {
        assert!(stdout.contains(row), "no {row} row in:\n{stdout}");
    }
    assert!(
        !stdout.contains("| nginx-mtls |"),
        "nginx was not asked for"
    );

    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["direct", "sidecar-mtls", "mesh-path"]);
    for s in scenarios {
        assert!(number(s, "rps") > 0.0, "{s}");
        let (p50, p99, max) = (
            number(s, "p50_ms"),
            number(s, "p99_ms"),
            number(s, "max_ms"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{s}");
        assert!(number(s, "rps_vs_direct") > 0.0, "{s}");
    }
    for proxy in &scenarios[1..] {
        // The proxies' own processes were measured.
        assert!(number(proxy, "cpu_us_per_request") > 0.0, "{proxy}");
        assert!(number(proxy, "rss_kib") > 0.0, "{proxy}");
    }
    assert!(number(&report, "handshakes_per_sec") > 0.0);
    assert!(number(&report, "handshakes_per_sidecar_cpu_sec") > 0.0);
    let idle = number(&report, "sidecar_idle_rss_kib");
    let held = number(&report, "sidecar_1k_conn_rss_kib");
    assert!(
        idle > 0.0 && held > idle,
        "1,000 open connections must show in the sidecar's RSS: idle {idle} KiB, held {held} KiB"
    );
    assert!(
        report["policy_decision_ns"].is_null(),
        "policy was not asked for"
    );
    // The targets table has the figures of the rows that ran, and none of those that did not.
    let targets = report["targets"].as_array().expect("targets");
    let check = |prefix: &str| {
        targets
            .iter()
            .find(|t| t["target"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no target {prefix:?} in {targets:?}"))
    };
    assert!(number(check("mesh-path cpu/req ÷ sidecar-mtls"), "value") > 0.0);
    assert!(check("mesh-path rps ÷ nginx-mtls")["value"].is_null());
}

#[test]
fn an_unknown_scenario_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_warden-bench"))
        .args(["--only", "sidecar-tls", "--warden"])
        .arg(warden())
        .output()
        .expect("run warden-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no scenario \"sidecar-tls\"") && stderr.contains("sidecar-mtls"),
        "{stderr}"
    );
}

/// The mesh path built from nginx and from HAProxy (three chained proxies, mTLS between them,
/// each verifying the next one's certificate) answers through all three hops — or, where the
/// proxy is not installed, the row says so and names the script that installs it.
#[test]
fn the_third_party_mesh_rows_answer_through_three_hops_or_say_why_not() {
    let (_, report) = short_run("direct,nginx-mesh,haproxy-mesh");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    for (row, program) in [("nginx-mesh", "nginx"), ("haproxy-mesh", "haproxy")] {
        let s = scenarios
            .iter()
            .find(|s| s["name"] == row)
            .unwrap_or_else(|| panic!("no {row} row in {report}"));
        let installed = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            let why = s["skipped"].as_str().unwrap_or_default();
            assert!(
                why.contains("not installed (scripts/install-bench-deps.sh)"),
                "{s}"
            );
            eprintln!("SKIPPED {row}: {program} is not installed (scripts/install-bench-deps.sh)");
            continue;
        }
        assert!(number(s, "rps") > 0.0, "{s}");
        // Three proxies' masters and workers were measured.
        assert!(number(s, "cpu_us_per_request") > 0.0, "{s}");
    }
}
