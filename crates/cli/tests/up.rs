//! `warden up` as a user runs it: real `warden` processes, real sockets and TLS. Each test has
//! its own state directory and free ports.
//!
//! - the example: `verify` passes; a second `up` on the same state directory is refused and
//!   the first keeps working; a revoked grant fails the delegation row; after Ctrl-C `status`
//!   and `verify` say the mesh is not running;
//! - a taken gateway port: `up` fails fast with the OS error; `warden check` says the same;
//!   `warden down` stops a mesh from another terminal;
//! - a mesh without tool references: `verify` passes; an agent added while `up` runs is
//!   served within 2 s and stopped when removed; `warden logs`; after SIGKILL of `up` no child
//!   survives.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::up::{text, warden};
use common::*;
use warden_testkit::process::{Running, free_addr};

/// (exit code, stdout then stderr) of `warden verify`; stdout must be the rows alone.
fn verify(state: &Path) -> (Option<i32>, String) {
    let out = warden(state, &["verify"]);
    let rows = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() == Some(0) {
        assert!(rows.trim_end().ends_with("checks passed"), "{}", text(&out));
    }
    (out.status.code(), text(&out))
}

fn start_up(state: &Path, manifests: &Path, gateway: std::net::SocketAddr) -> Running {
    start_up_with(state, manifests, gateway, &[])
}

/// `start_up` with global flags before `up` (e.g. `--log-format json`).
fn start_up_with(
    state: &Path,
    manifests: &Path,
    gateway: std::net::SocketAddr,
    global: &[&str],
) -> Running {
    start_up_from(Path::new(WARDEN), state, manifests, gateway, global, &[])
}

/// `warden up` from the binary `warden`, with `global` flags before `up` and `extra` after.
fn start_up_from(
    warden: &Path,
    state: &Path,
    manifests: &Path,
    gateway: std::net::SocketAddr,
    global: &[&str],
    extra: &[&str],
) -> Running {
    Running(
        Command::new(warden)
            .arg("--state-dir")
            .arg(state)
            .args(global)
            .arg("up")
            .arg(manifests)
            .args(["--gateway-listen", &gateway.to_string(), "--no-verify"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until `status -o json` says ready with `agents` agents; returns it.
fn wait_ready(state: &Path, up: &mut Running, agents: usize) -> serde_json::Value {
    common::up::wait_ready(state, up, agents, Duration::from_secs(30))
}

fn example_copy(dir: &Path) -> PathBuf {
    copy_of(dir, "cross-namespace-a2a")
}

/// A copy of `examples/<example>`'s manifests, so a test may edit them.
fn copy_of(dir: &Path, example: &str) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
        }
    }
    manifests
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

fn status_json(state: &Path) -> serde_json::Value {
    let out = warden(state, &["status", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn process<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {status}"))
}

fn pids(status: &serde_json::Value) -> Vec<u64> {
    status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect()
}

fn condition<'s>(agent: &'s serde_json::Value, kind: &str) -> &'s serde_json::Value {
    agent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {agent}"))
}

/// The seed scenario's status: every agent has mTLS and its card from its own SPIFFE ID; the
/// rogue's tool reference to the specialist is refused (Accepted=False with the reason) and
/// every other agent's conditions are all True.
fn assert_seed_status(status: &serde_json::Value) {
    for agent in status["agents"].as_array().unwrap() {
        assert_eq!(agent["card"]["transportSecurity"], "mtls", "{agent}");
        assert_eq!(agent["card"]["attestedSpiffeId"], agent["spiffeId"]);
        assert_eq!(condition(agent, "MTLSReady")["status"], "True", "{agent}");
        if agent["name"] == "rogue" {
            let accepted = condition(agent, "Accepted");
            assert_eq!(accepted["status"], "False", "{agent}");
            assert_eq!(
                accepted["reason"], "CrossNamespaceReferenceDenied",
                "{agent}"
            );
            let message = accepted["message"].as_str().unwrap_or_default();
            assert!(message.contains("team-beta/specialist"), "{agent}");
        } else {
            assert!(
                agent["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["status"] == "True"),
                "{agent}"
            );
        }
    }
}

/// kagent's PR #1908 scenario in kagent's and kagenti's own kinds, run as written: the rogue's
/// Agent is Accepted=False with the reason; verify's rows for cards, delegation with the
/// token, the rogue's 403, the direct call refused, mTLS and audit pass (see below for the
/// one that does not).
#[test]
fn the_kagent_example_runs_as_written_and_refuses_the_rogue() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = copy_of(dir.path(), "kagent-cross-namespace");
    let state = dir.path().join("state");
    let mut up = start_up(&state, &manifests, free_addr());
    let status = wait_ready(&state, &mut up, 3);
    assert_seed_status(&status);
    // kagenti's resolution: the specialist's AgentRuntime says strict; the orchestrator's sets
    // none, so team-alpha's authbridge-runtime-config ConfigMap decides.
    let mode = |key: &str| agent_status(&status, key)["mtlsMode"].clone();
    assert_eq!(mode("team-beta/specialist"), "Strict");
    assert_eq!(mode("team-alpha/orchestrator"), "Permissive");
    // Every row passes: the rogue's reference, which the manifests refuse (Accepted=False
    // above), is checked for its refusal (403 naming the rule), not as a delegation.
    let (code, out) = verify(&state);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PASS")
            && l.contains("team-gamma/rogue")
            && l.contains("not accepted")
            && l.contains("403")
            && l.contains("namespace_selector")),
        "{out}"
    );
    for row in [
        "PASS 1. every process is Ready",
        "cards are served through the gateway",
        "delegation: team-alpha/orchestrator calls team-beta/specialist",
        "team-gamma/rogue → team-beta/specialist: 403 namespace_selector",
        "a direct call to team-beta/specialist's sidecar that skips the gateway is refused",
        "the audit log holds this run's allowed and denied calls",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(row)),
            "no passing row {row:?} in\n{out}"
        );
    }
    signal(up.pid(), "-INT");
    assert_eq!(up.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn the_example_verifies_refuses_a_second_up_catches_a_revoked_grant_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = example_copy(dir.path());
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start_up(&state, &manifests, gateway);
    let status = wait_ready(&state, &mut up, 3);
    for agent in status["agents"].as_array().unwrap() {
        assert_eq!(agent["card"]["transportSecurity"], "mtls", "{agent}");
        assert_eq!(agent["card"]["attestedSpiffeId"], agent["spiffeId"]);
        // The rogue's tool reference is refused by the specialist's policy: it is not
        // Accepted, and so not Ready, each with its reason; everything else holds.
        let rogue = agent["name"] == "rogue";
        for c in agent["conditions"].as_array().unwrap() {
            let expected = match (rogue, c["type"].as_str().unwrap()) {
                (true, "Accepted") => ("False", "CrossNamespaceReferenceDenied"),
                (true, "Ready") => ("False", "NotAccepted"),
                _ => ("True", c["reason"].as_str().unwrap()),
            };
            assert_eq!(
                (c["status"].as_str().unwrap(), c["reason"].as_str().unwrap()),
                expected,
                "{agent}"
            );
        }
    }
    // Seven processes, each reporting itself; the proxies on snapshot v1.
    let processes = status["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 7, "{status}");
    for p in processes {
        assert_eq!(p["health"], "Ready", "{p}");
        if p["role"] != "app" {
            assert_eq!(p["snapshotVersion"], 1, "{p}");
        }
    }
    assert_eq!(status["gateway"]["url"], format!("http://{gateway}"));
    // Every process's metrics address, for scrapers.
    let admin = status["gateway"]["adminAddress"]
        .as_str()
        .unwrap_or_default();
    assert!(admin.parse::<std::net::SocketAddr>().is_ok(), "{status}");
    for agent in status["agents"].as_array().unwrap() {
        let admin = agent["sidecarAdminAddress"].as_str().unwrap_or_default();
        assert!(admin.parse::<std::net::SocketAddr>().is_ok(), "{agent}");
    }

    let (code, out) = verify(&state);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for row in [
        "every process is Ready and every proxy runs snapshot v1",
        "cards are served through the gateway",
        "delegation: team-alpha/orchestrator calls team-beta/specialist",
        "team-gamma/rogue → team-beta/specialist: 403 namespace_selector",
        "a direct call to team-beta/specialist's sidecar that skips the gateway is refused",
        "the audit log holds this run's allowed and denied calls",
    ] {
        assert!(out.contains(row), "no row {row:?} in\n{out}");
    }

    // A second `up` on the same state directory is refused, naming the first's PID, and
    // starts nothing; the first keeps working.
    let second = Command::new(WARDEN)
        .arg("--state-dir")
        .arg(&state)
        .arg("up")
        .arg(&manifests)
        .args(["--gateway-listen", &free_addr().to_string(), "--no-verify"])
        .output()
        .unwrap();
    let said = text(&second);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("in use by `warden up` (pid {})", up.pid())),
        "{said}"
    );
    assert!(said.contains("warden") && said.contains("down"), "{said}");
    let (code, out) = verify(&state);
    assert_eq!(code, Some(0), "the first mesh broke: {out}");

    // Remove the grant: team-alpha no longer carries the label the specialist selects.
    let mesh = manifests.join("mesh.yaml");
    let yaml = std::fs::read_to_string(&mesh).unwrap();
    std::fs::write(&mesh, yaml.replace("    a2a-access: specialist\n", "")).unwrap();
    // `verify` waits until `up` has compiled the edit and every proxy has loaded it.
    let (code, out) = verify(&state);
    assert!(
        out.contains("every proxy runs snapshot v2"),
        "verify did not wait for the new snapshot: {out}"
    );
    assert_eq!(code, Some(0), "{out}");
    let row = out
        .lines()
        .find(|l| {
            l.contains(
                "team-alpha/orchestrator's tool reference to team-beta/specialist is not accepted",
            )
        })
        .unwrap_or_else(|| panic!("no refused-reference row in {out}"));
    assert!(
        row.starts_with("PASS") && row.contains("403 namespace_selector"),
        "{row}"
    );
    assert!(!out.contains("delegation:"), "{out}");
    let revoked = status_json(&state);
    let orchestrator = revoked["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "orchestrator")
        .unwrap();
    assert_eq!(
        condition(orchestrator, "Accepted")["status"],
        "False",
        "{orchestrator}"
    );

    // An edit that does not compile is refused: the last good snapshot stays in force, and
    // status and verify say so at once.
    let agents = manifests.join("agents.yaml");
    let good = std::fs::read_to_string(&agents).unwrap();
    std::fs::write(&agents, good.replace("kind: Agent", "kind: Agnet")).unwrap();
    let start = Instant::now();
    let table = loop {
        let table = text(&warden(&state, &["status"]));
        if table.contains("was NOT applied") {
            break table;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{table}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(table.contains("Agnet"), "{table}");
    let (code, out) = verify(&state);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("FAIL 1.") && out.contains("the last manifest edit was not applied"),
        "{out}"
    );
    std::fs::write(&agents, good).unwrap();

    // The logs are there, without colour codes.
    let logs = warden(&state, &["logs", "gateway"]);
    assert!(logs.status.success(), "{}", text(&logs));
    let gateway_log = String::from_utf8_lossy(&logs.stdout);
    assert!(gateway_log.contains("gateway listening"), "{gateway_log}");
    assert!(!gateway_log.contains('\u{1b}'), "ANSI codes in the log");

    // Ctrl-C: `up` stops everything; status and verify say so instead of showing leftovers.
    let children = pids(&status);
    signal(up.pid(), "-INT");
    assert_eq!(up.wait_exit(Duration::from_secs(15)), Some(0));
    for pid in children {
        assert!(!alive(pid), "child {pid} survived Ctrl-C");
    }
    let out = warden(&state, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
    let (code, out) = verify(&state);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn a_taken_gateway_port_fails_fast_with_the_os_error_and_down_stops_a_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = example_copy(dir.path());
    let state = dir.path().join("state");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = taken.local_addr().unwrap();

    let check = warden(
        &state,
        &[
            "check",
            manifests.to_str().unwrap(),
            "--gateway-listen",
            &gateway.to_string(),
        ],
    );
    let said = text(&check);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("FAIL gateway port: {gateway} cannot be bound"))
            && said.contains("Address already in use"),
        "{said}"
    );

    let start = Instant::now();
    let out = Command::new(WARDEN)
        .arg("--state-dir")
        .arg(&state)
        .arg("up")
        .arg(&manifests)
        .args(["--gateway-listen", &gateway.to_string()])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(start.elapsed() < Duration::from_secs(5), "not fast: {said}");
    assert!(said.contains("Address already in use"), "{said}");
    assert!(said.contains("--gateway-listen"), "no fix named: {said}");
    assert!(!said.contains("the mesh is up"), "{said}");
    assert!(
        !state.join("logs").join("gateway.log").exists(),
        "something was started"
    );

    // With the port free the mesh starts; `warden down` stops it from another terminal.
    drop(taken);
    let mut up = start_up(&state, &manifests, gateway);
    let status = wait_ready(&state, &mut up, 3);
    let out = warden(&state, &["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("pid {}", up.pid())));
    assert_eq!(up.wait_exit(Duration::from_secs(5)), Some(0));
    for pid in pids(&status) {
        assert!(!alive(pid), "child {pid} survived `warden down`");
    }
    let out = warden(&state, &["down"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not running"), "{}", text(&out));
}

const NO_TOOLS: &str = "\
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
spec:
  trustDomain: warden.local
  defaultMtlsMode: Permissive
---
apiVersion: v1
kind: Namespace
metadata:
  name: red
---
apiVersion: v1
kind: Namespace
metadata:
  name: blue
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata:
  name: vault
  namespace: red
spec:
  description: Strict, callable only from its own namespace.
  mtls:
    mode: Strict
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata:
  name: desk
  namespace: blue
spec:
  description: Permissive, no tool references.
";

const NEWCOMER: &str = "\
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata:
  name: newcomer
  namespace: blue
spec:
  description: Added while the mesh runs.
  allowedNamespaces:
    from: All
";

/// (HTTP status, body) of an anonymous card request through the gateway.
fn anonymous_card(gateway: std::net::SocketAddr, agent: &str) -> (String, String) {
    let url = format!("http://{gateway}/api/a2a/{agent}/.well-known/agent-card.json");
    curl_status(&[&url])
}

/// (HTTP status, body) of `curl args`.
fn curl_status(args: &[&str]) -> (String, String) {
    let out = curl(&[args, &["-w", "\n%{http_code}"]].concat());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[test]
fn a_mesh_without_tool_references_verifies_adds_and_removes_agents_and_dies_with_up() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("mesh.yaml"), NO_TOOLS).unwrap();
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start_up(&state, &manifests, gateway);
    let status = wait_ready(&state, &mut up, 2);

    // The built-in app serves its own user (its sidecar's, `up`'s) and nobody else: no other
    // local user reaches it around the sidecar with a made-up XFCC.
    if running_as_root() {
        let app = agent_status(&status, "red/vault")["appAddress"]
            .as_str()
            .unwrap()
            .to_owned();
        let card = format!("http://{app}/.well-known/agent-card.json");
        assert_eq!(curl_status(&[&card]).0, "200");
        let args = [
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "x-forwarded-client-cert: URI=spiffe://warden.local/ns/red/sa/x",
            &card,
        ];
        let out = run_as(STRANGER_UID, "curl", &args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "000",
            "another uid reached the app"
        );
    }

    let (code, out) = verify(&state);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("delegation"), "{out}");
    assert!(
        out.contains("blue/desk → red/vault: 403 same_namespace"),
        "{out}"
    );
    assert!(
        out.contains("a direct call to red/vault's sidecar that skips the gateway is refused"),
        "{out}"
    );

    // An agent added while `up` runs is served within 2 s.
    assert_eq!(anonymous_card(gateway, "blue/newcomer").0, "404");
    std::fs::write(manifests.join("newcomer.yaml"), NEWCOMER).unwrap();
    let start = Instant::now();
    loop {
        let (code, body) = anonymous_card(gateway, "blue/newcomer");
        if code == "200" {
            assert!(body.contains("newcomer"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "blue/newcomer not served 2 s after it was added: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = wait_ready(&state, &mut up, 3);
    let newcomer: Vec<u64> = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["agent"] == "blue/newcomer")
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(newcomer.len(), 2, "{status}");
    let logs = warden(&state, &["logs", "blue/newcomer"]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("[blue/newcomer sidecar]"),
        "{}",
        text(&logs)
    );

    // Removed: no longer served, its processes stopped.
    std::fs::remove_file(manifests.join("newcomer.yaml")).unwrap();
    let start = Instant::now();
    while anonymous_card(gateway, "blue/newcomer").0 != "404"
        || newcomer.iter().any(|pid| alive(*pid))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "blue/newcomer still running after its removal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = wait_ready(&state, &mut up, 2);

    // A process that does not answer is Unknown, and its agent not Ready.
    let desk_sidecar = process(&status, "blue/desk sidecar")["pid"]
        .as_u64()
        .unwrap();
    signal(desk_sidecar as u32, "-STOP");
    let silent = status_json(&state);
    signal(desk_sidecar as u32, "-CONT");
    assert_eq!(
        process(&silent, "blue/desk sidecar")["health"],
        "Unknown",
        "{silent}"
    );
    assert_eq!(silent["ready"], false);
    let desk = silent["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "desk")
        .unwrap();
    let condition = |kind: &str| {
        desk["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(condition("MTLSReady"), "Unknown", "{desk}");
    assert_eq!(condition("Ready"), "False", "{desk}");

    // An app added with a port someone else holds: Failing, restarts, the OS error.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    std::fs::write(
        manifests.join("squatter.yaml"),
        format!(
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: squatter\n  namespace: blue\n\
             spec:\n  description: Its port is taken.\n  local:\n    command: python3\n\
             \x20   args: [\"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\n    port: {port}\n"
        ),
    )
    .unwrap();
    let start = Instant::now();
    let failing = loop {
        let status = status_json(&state);
        let app = status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "blue/squatter app");
        if app.is_some_and(|app| {
            app["health"] == "Failing"
                && app["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("Address already in use"))
        }) {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the squatter never showed as failing: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(failing["ready"], false);
    assert!(process(&failing, "blue/squatter app")["restarts"].as_u64() >= Some(1));
    let table = text(&warden(&state, &["status"]));
    assert!(
        table.contains("blue/squatter app") && table.contains("Failing"),
        "{table}"
    );
    std::fs::remove_file(manifests.join("squatter.yaml")).unwrap();
    drop(squatter);
    let status = wait_ready(&state, &mut up, 2);

    // SIGKILL of `up` alone: no child survives, the gateway port is free again.
    let children = pids(&status);
    assert_eq!(children.len(), 5, "{status}");
    signal(up.pid(), "-KILL");
    let _ = up.wait_exit(Duration::from_secs(5));
    let start = Instant::now();
    while children.iter().any(|pid| alive(*pid)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "children survived SIGKILL of up: {:?}",
            children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ss = Command::new("ss")
        .args(["-ltnpa"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        TcpListener::bind(gateway).is_ok(),
        "{gateway} still taken: {ss}"
    );
    let out = warden(&state, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

/// A JSON-RPC SendMessage saying "hi".
const SEND: &str = r#"{"jsonrpc":"2.0","id":"j1","method":"message/send","params":{"message":{"role":"user","messageId":"m1","parts":[{"kind":"text","text":"hi"}]}}}"#;

/// A JSON-RPC SendMessage to the specialist through the gateway, as the holder of a JWT-SVID
/// for `id` from `up`'s CA; (HTTP status, body).
fn send_with_jwt_svid(state: &Path, gateway: std::net::SocketAddr, id: &str) -> (String, String) {
    let ca = state.join("ca");
    let token = warden(
        state,
        &[
            "ca",
            "jwt",
            "--dir",
            ca.to_str().unwrap(),
            "--id",
            id,
            "--audience",
            "warden-gateway",
        ],
    );
    assert!(token.status.success(), "{}", text(&token));
    let bearer = format!(
        "authorization: Bearer {}",
        String::from_utf8_lossy(&token.stdout).trim()
    );
    let url = format!("http://{gateway}/api/a2a/team-beta/specialist/");
    curl_status(&[
        "-H",
        &bearer,
        "-H",
        "content-type: application/json",
        "-d",
        SEND,
        &url,
    ])
}

/// `warden --log-format json up`: every line of every child's log is JSON; the gateway admits
/// JWT-SVIDs from the embedded CA (`warden ca jwt`): team-alpha's reaches the specialist,
/// team-gamma's is refused by the specialist's policy; an egress used as an HTTP proxy toward
/// the gateway originates mTLS.
#[test]
fn json_logs_reach_every_child_and_the_gateway_admits_the_embedded_cas_jwt_svids() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = example_copy(dir.path());
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start_up_with(&state, &manifests, gateway, &["--log-format", "json"]);
    let status = wait_ready(&state, &mut up, 3);

    let (code, body) = send_with_jwt_svid(&state, gateway, ORCHESTRATOR);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("specialist echoes: hi"), "{body}");
    let (code, body) = send_with_jwt_svid(&state, gateway, ROGUE);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("namespace_selector"), "{body}");

    // The orchestrator's egress used as an HTTP proxy toward the gateway originates mTLS:
    // the gateway sees team-alpha's SVID (anonymous, the specialist would refuse it).
    let orchestrator = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "orchestrator")
        .unwrap();
    let proxy = format!("http://{}", orchestrator["egressAddress"].as_str().unwrap());
    let url = format!("http://{gateway}/api/a2a/team-beta/specialist/");
    let (code, body) = curl_status(&[
        "-x",
        &proxy,
        "-H",
        "content-type: application/json",
        "-d",
        SEND,
        &url,
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("specialist echoes: hi"), "{body}");

    signal(up.pid(), "-INT");
    assert_eq!(up.wait_exit(Duration::from_secs(15)), Some(0));
    let logs: Vec<PathBuf> = std::fs::read_dir(state.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The gateway, and a sidecar and an app per agent.
    assert_eq!(logs.len(), 7, "{logs:?}");
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.trim().is_empty(), "{} is empty", log.display());
        for line in text.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
                "{}: not a JSON object: {line}",
                log.display()
            );
        }
    }
}

// ---- Local-mode OS-user isolation (issue 11.15) and `warden up` on SPIRE (issue 13.4) ----

use warden_testkit::spire::{Spire, as_uid, readable_copy, running_as_root};

/// Two agents, each with its own `spec.local.user` (a bare uid) running `warden agent echo`
/// from `warden` (a binary every uid can run) through `sh`; the specialist admits every
/// namespace.
/// `identity` is the MeshConfig's `spec.identity` block (indented), or empty.
fn users_mesh(warden: &Path, users: [u32; 2], identity: &str) -> String {
    let agent = |name: &str, namespace: &str, uid: u32, extra: &str| {
        user_agent(warden, (name, namespace), uid, extra)
    };
    [
        format!(
            "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  trustDomain: warden.local\n{identity}"
        ),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-alpha\n".into(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-beta\n".into(),
        agent("orchestrator", "team-alpha", users[0], ""),
        agent(
            "specialist",
            "team-beta",
            users[1],
            "  allowedNamespaces:\n    from: All\n",
        ),
    ]
    .join("---\n")
}

/// An Agent `namespace/name` running `warden agent echo` from `warden` as `uid`; `extra` are
/// more (indented) spec lines.
fn user_agent(warden: &Path, (name, namespace): (&str, &str), uid: u32, extra: &str) -> String {
    // The app listens on the port `up` gives it in $PORT.
    format!(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  description: Runs as uid {uid}.\n{extra}  local:\n    command: /bin/sh\n\
         \x20   args: [\"-c\", \"exec {} agent echo --listen 127.0.0.1:$PORT --name {name}\"]\n\
         \x20   user: \"{uid}\"\n",
        warden.display()
    )
}

/// A directory any uid can search (0755), for state and binaries the agents' users reach.
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The real uid of a running process.
fn uid_of(pid: u64) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `program args` as `uid` (setpriv, no groups).
fn run_as(uid: u32, program: &str, args: &[&str]) -> Output {
    as_uid(uid, Path::new(program)).args(args).output().unwrap()
}

/// Whether `uid` can connect to the Unix socket `path` (curl's exit code 7 is "could not
/// connect"; anything else means it connected and then failed to speak HTTP/1 to gRPC).
fn connects(uid: u32, path: &Path) -> bool {
    let socket = path.to_str().unwrap();
    let out = run_as(
        uid,
        "curl",
        &["-s", "-m", "5", "--unix-socket", socket, "http://x/"],
    );
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(126),
        "curl as uid {uid}: {}",
        text(&out)
    );
    code != Some(7)
}

/// curl's run of a SendMessage to the specialist through `egress`, sent as `uid`; `output`
/// are curl's flags for what it prints.
fn egress_send_as(uid: u32, egress: &str, output: &[&str]) -> Output {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","messageId":"m1","parts":[{"kind":"text","text":"hi"}]}}}"#;
    let url = format!("http://{egress}/api/a2a/team-beta/specialist/");
    let mut args = vec![
        "-s",
        "-m",
        "10",
        "-H",
        "content-type: application/json",
        "-d",
        body,
    ];
    args.extend(output);
    args.push(&url);
    run_as(uid, "curl", &args)
}

/// (exit code, HTTP status) of a SendMessage to the specialist through `egress`, sent as `uid`.
fn egress_call_as(uid: u32, egress: &str) -> (Option<i32>, String) {
    let out = egress_send_as(uid, egress, &["-o", "/dev/null", "-w", "%{http_code}"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// (HTTP status, body) of the same call.
fn egress_reply_as(uid: u32, egress: &str) -> (String, String) {
    let out = egress_send_as(uid, egress, &["-w", "\n%{http_code}"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// The agent `namespace/name` of a `status -o json`.
fn agent_status<'a>(status: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            format!(
                "{}/{}",
                a["namespace"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            ) == key
        })
        .unwrap_or_else(|| panic!("no agent {key} in {status}"))
}

const ALPHA_UID: u32 = 42101;
const BETA_UID: u32 = 42102;
const STRANGER_UID: u32 = 42103;

/// `up` (as root) of [`users_mesh`], the orchestrator as `ALPHA_UID` and the specialist as
/// `BETA_UID`, ready. Fields drop in order: `up` stops before its directory goes.
struct UsersMesh {
    _up: Running,
    status: serde_json::Value,
    state: PathBuf,
    dir: tempfile::TempDir,
}

fn start_users_mesh() -> UsersMesh {
    let dir = shared_dir();
    let warden_bin = readable_copy(Path::new(WARDEN), dir.path());
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("mesh.yaml"),
        users_mesh(&warden_bin, [ALPHA_UID, BETA_UID], ""),
    )
    .unwrap();
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start_up_from(&warden_bin, &state, &manifests, gateway, &[], &[]);
    let status = wait_ready(&state, &mut up, 2);
    UsersMesh {
        _up: up,
        status,
        state,
        dir,
    }
}

#[test]
fn agents_run_as_their_own_users_and_other_users_cannot_use_their_egress_sockets_or_state() {
    if !running_as_root() {
        warden_testkit::deps::skip("local users", "not root: agents cannot run as other uids");
        return;
    }
    let mesh = start_users_mesh();
    let (status, state) = (mesh.status.clone(), mesh.state.clone());

    // Each agent's app and sidecar run as its user; the gateway as `up`'s.
    for (key, uid) in [
        ("team-alpha/orchestrator", ALPHA_UID),
        ("team-beta/specialist", BETA_UID),
    ] {
        assert_eq!(agent_status(&status, key)["uid"], uid, "{status}");
        for role in ["sidecar", "app"] {
            let pid = process(&status, &format!("{key} {role}"))["pid"]
                .as_u64()
                .unwrap();
            assert_eq!(uid_of(pid), Some(uid), "{key} {role} (pid {pid})");
        }
    }
    let gateway_pid = process(&status, "gateway")["pid"].as_u64().unwrap();
    assert_eq!(uid_of(gateway_pid), Some(0));

    // (a) The orchestrator's egress serves its own user, and nobody else.
    let orchestrator = agent_status(&status, "team-alpha/orchestrator");
    let egress = orchestrator["egressAddress"].as_str().unwrap();
    assert_eq!(egress_call_as(ALPHA_UID, egress), (Some(0), "200".into()));
    for stranger in [STRANGER_UID, BETA_UID] {
        let (code, http) = egress_call_as(stranger, egress);
        assert_eq!(
            http, "000",
            "uid {stranger} got an answer from the orchestrator's egress"
        );
        assert_ne!(code, Some(0), "uid {stranger}");
    }
    let admin = orchestrator["sidecarAdminAddress"].as_str().unwrap();
    let metrics = curl_status(&[&format!("http://{admin}/metrics")]).1;
    assert!(
        metrics.contains("warden_connections_closed_total{reason=\"peer_uid\"} 2"),
        "{metrics}"
    );

    // (c)+(d) Workload API sockets: each agent's only its own; the gateway's nobody's but
    // `up`'s user.
    let sockets = state.join("sockets");
    let alpha_socket = sockets.join("team-alpha.orchestrator/agent.sock");
    let beta_socket = sockets.join("team-beta.specialist/agent.sock");
    let gateway_socket = sockets.join("warden-gateway/agent.sock");
    for socket in [&alpha_socket, &beta_socket, &gateway_socket] {
        assert!(connects(0, socket), "{} is not served", socket.display());
    }
    assert!(connects(ALPHA_UID, &alpha_socket));
    assert!(!connects(ALPHA_UID, &beta_socket));
    assert!(!connects(STRANGER_UID, &alpha_socket));
    for uid in [ALPHA_UID, BETA_UID, STRANGER_UID] {
        assert!(
            !connects(uid, &gateway_socket),
            "uid {uid} reached the gateway's socket"
        );
    }

    // (b) State that reveals ports: its owner's only; an agent reads its own snapshot copy.
    let status_file = state.join("status.json");
    let sidecar_log = state.join("logs/team-alpha.orchestrator.sidecar.log");
    for file in [
        &status_file,
        &state.join("snapshot.json"),
        &sidecar_log,
        &state.join("audit.log"),
    ] {
        let out = run_as(STRANGER_UID, "cat", &[file.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "uid {STRANGER_UID} read {}",
            file.display()
        );
    }
    let own = sockets.join("team-alpha.orchestrator/snapshot.json");
    assert!(
        run_as(ALPHA_UID, "cat", &[own.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        !run_as(BETA_UID, "cat", &[own.to_str().unwrap()])
            .status
            .success()
    );

    // And the mesh still proves itself.
    let (code, out) = verify(&state);
    assert_eq!(code, Some(0), "{out}");
}

/// A listener on 127.0.0.1:`argv[1]` that takes the port as soon as it is free (retrying the
/// bind for 10 s), creates `argv[2].bound` once listening, and appends every byte any
/// connection sends it to `argv[2]`.
const IMPOSTOR: &str = r#"
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.time() + 10
while True:
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError:
        if time.time() > deadline:
            sys.exit(3)
        time.sleep(0.005)
s.listen(16)
open(out + ".bound", "w").close()
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        while True:
            data = c.recv(65536)
            if not data:
                break
            with open(out, "ab") as f:
                f.write(data)
    except OSError:
        pass
    c.close()
"#;

/// Issue 11.15, the app's port: while the specialist's app is down, another user takes its
/// port. The sidecar connects, finds the listening socket is not the agent's uid's, and closes
/// before writing a byte: the caller gets 502 `app_not_owned`, the impostor nothing (not the
/// verified caller's XFCC, not a delegation header), the sidecar counts and logs it. Once the
/// impostor goes, `up` restarts the app and the agent is served again.
#[test]
fn another_user_holding_a_down_apps_port_gets_no_byte_and_the_caller_a_502() {
    if !running_as_root() {
        warden_testkit::deps::skip("local users", "not root: agents cannot run as other uids");
        return;
    }
    let mesh = start_users_mesh();
    let (status, state, dir) = (mesh.status.clone(), mesh.state.clone(), &mesh.dir);
    let egress = agent_status(&status, "team-alpha/orchestrator")["egressAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let specialist = agent_status(&status, "team-beta/specialist");
    let app: std::net::SocketAddr = specialist["appAddress"].as_str().unwrap().parse().unwrap();
    let admin = specialist["sidecarAdminAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(egress_call_as(ALPHA_UID, &egress), (Some(0), "200".into()));

    // Another user waits for the port; the app is killed until the impostor holds it.
    let loot = dir.path().join("impostor");
    std::fs::create_dir_all(&loot).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loot, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let received = loot.join("received");
    let bound = loot.join("received.bound");
    let mut impostor = Running(
        // The system's python (a pyenv shim in $PATH may be root's only).
        as_uid(STRANGER_UID, Path::new("/usr/bin/python3"))
            .args(["-c", IMPOSTOR, &app.port().to_string()])
            .arg(&received)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bound.exists() {
        assert!(Instant::now() < deadline, "the impostor never got the port");
        assert!(
            impostor.alive(),
            "the impostor gave up waiting for the port"
        );
        if let Some(pid) = process(&status_json(&state), "team-beta/specialist app")["pid"].as_u64()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let (http, body) = egress_reply_as(ALPHA_UID, &egress);
    std::thread::sleep(Duration::from_millis(300));
    let stolen = std::fs::read(&received).unwrap_or_default();
    assert!(
        stolen.is_empty(),
        "the impostor received {} bytes: {}",
        stolen.len(),
        String::from_utf8_lossy(&stolen)
    );
    assert_eq!(http, "502", "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["rule"], "app_not_owned", "{body}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&app.to_string())
            && message.contains(&STRANGER_UID.to_string())
            && message.contains(&BETA_UID.to_string()),
        "{message}"
    );
    let metrics = curl_status(&[&format!("http://{admin}/metrics")]).1;
    assert!(
        metrics.contains("warden_connections_closed_total{reason=\"app_uid\"} 1"),
        "{metrics}"
    );
    let log = std::fs::read_to_string(state.join("logs/team-beta.specialist.sidecar.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("app_not_owned") && l.contains(&STRANGER_UID.to_string())),
        "{log}"
    );
    let audit = std::fs::read_to_string(state.join("audit.log")).unwrap();
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("team-beta/specialist") && l.contains("\"status\":502"))
        .collect();
    assert_eq!(refused.len(), 1, "{audit}");
    let record: serde_json::Value = serde_json::from_str(refused[0]).unwrap();
    assert_eq!(record["upstream_rule"], "app_not_owned", "{record}");
    assert_eq!(record["decision"], "allow", "{record}");

    // The impostor goes; `up` restarts the app (its backoff is at most 5 s) and it is served.
    drop(impostor);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, http) = egress_call_as(ALPHA_UID, &egress);
        if (code, http.as_str()) == (Some(0), "200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the app was not served again: {http}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_root_a_local_user_and_spire_are_refused_naming_the_field_and_why() {
    if !running_as_root() {
        warden_testkit::deps::skip("local users", "not root: cannot act as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = shared_dir();
    let warden_bin = readable_copy(Path::new(WARDEN), dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(STRANGER_UID), Some(STRANGER_UID)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spire = "  identity:\n    provider: Spire\n    agentSocket: /nonexistent/agent.sock\n    serverSocket: /nonexistent/server.sock\n";
    for (name, identity, expected) in [
        (
            "users",
            "",
            "spec.local.user \"42101\" is uid 42101, but `warden up` runs as uid 42103, not root",
        ),
        (
            "spire",
            spire,
            "SPIRE, whose unix attestor tells workloads apart by their uid alone, could not tell them apart",
        ),
    ] {
        let manifests = work.join(format!("{name}.yaml"));
        std::fs::write(
            &manifests,
            users_mesh(&warden_bin, [ALPHA_UID, BETA_UID], identity),
        )
        .unwrap();
        let state = work.join(format!("{name}-state"));
        let out = run_as(
            STRANGER_UID,
            warden_bin.to_str().unwrap(),
            &[
                "--state-dir",
                state.to_str().unwrap(),
                "up",
                manifests.to_str().unwrap(),
                "--gateway-listen",
                &free_addr().to_string(),
                "--no-verify",
            ],
        );
        let said = text(&out);
        assert_ne!(out.status.code(), Some(0), "{said}");
        assert!(
            said.contains("nothing was started") && said.contains(expected),
            "{name}: {said}"
        );
        if name == "spire" {
            let missing = "spec.identity.serverSocket /nonexistent/server.sock: no such socket";
            assert!(said.contains(missing), "{said}");
        }
    }
}

#[test]
fn up_on_spire_registers_each_workload_under_its_uid_and_verifies_on_spire_identities() {
    let Some(spire) = Spire::start("warden.local", &[]) else {
        return;
    };
    let _timer = warden_testkit::deps::TierTimer::new("up on SPIRE");
    let dir = spire.dir();
    let warden_bin = spire.readable_copy(Path::new(WARDEN));
    let spire_server = warden_testkit::deps::bin_dir().join("spire-server");
    let identity = format!(
        "  identity:\n    provider: Spire\n    agentSocket: unix://{}\n    serverSocket: {}\n",
        spire.agent_socket().display(),
        spire.server_socket().display()
    );
    let (alpha, beta) = (42111, 42112);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("mesh.yaml"),
        users_mesh(&warden_bin, [alpha, beta], &identity),
    )
    .unwrap();
    let state = dir.join("state");
    let gateway = free_addr();
    let spire_flag = ["--spire-server", spire_server.to_str().unwrap()];
    let mut up = start_up_from(&warden_bin, &state, &manifests, gateway, &[], &spire_flag);
    let status = common::up::wait_ready(&state, &mut up, 2, Duration::from_secs(90));

    // Entries: one per workload, each under the agent, selected by the workload's uid; the
    // gateway's with its host names, the agents' with none.
    let entries = spire.server_cli(&["entry", "show"]);
    for (id, uid) in [(ORCHESTRATOR, alpha), (SPECIALIST, beta), (GATEWAY, 0)] {
        let block = entry_block(&entries, id);
        assert!(block.contains(&format!("unix:uid:{uid}")), "{block}");
        assert!(block.contains(&spire.agent_id), "{block}");
        assert_eq!(block.contains("DNS name"), id == GATEWAY, "{block}");
    }
    let gateway_entry = entry_block(&entries, GATEWAY);
    for ns in ["team-alpha", "team-beta"] {
        let line = format!("DNS name         : *.{ns}.a2a.localhost");
        assert!(gateway_entry.contains(&line), "{gateway_entry}");
    }

    // Status shows SPIRE and the IDs the sidecars proved with SPIRE's SVIDs.
    assert_eq!(
        status["spire"]["agentSocket"],
        spire.agent_socket().display().to_string()
    );
    for (key, id) in [
        ("team-alpha/orchestrator", ORCHESTRATOR),
        ("team-beta/specialist", SPECIALIST),
    ] {
        let agent = agent_status(&status, key);
        assert_eq!(agent["card"]["attestedSpiffeId"], id, "{agent}");
        assert_eq!(agent["card"]["transportSecurity"], "mtls", "{agent}");
    }
    let table = text(&warden(&state, &["status"]));
    assert!(table.contains("identities: SPIRE"), "{table}");

    // The agent's own uid calls out through its egress on its SPIRE identity.
    let egress = agent_status(&status, "team-alpha/orchestrator")["egressAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(egress_call_as(alpha, &egress), (Some(0), "200".into()));

    let out = Command::new(&warden_bin)
        .arg("--state-dir")
        .arg(&state)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The gateway's SPIRE SVID names every namespace's agent hosts, so a client that checks
    // the host name (curl with SPIRE's bundle, no -k) accepts the gateway at an agent's host.
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, spire.bundle_pem()).unwrap();
    let served = served_names(gateway, "specialist.team-beta.a2a.localhost");
    assert_names_namespaces(&served, &["team-alpha", "team-beta"]);
    let (code, card) = host_card(gateway, &bundle, "specialist.team-beta");
    assert_eq!(code, "200", "{card}");

    // An agent in a new namespace: the gateway's entry, then the SVID it serves, name it too.
    let (gamma, started) = (42113, Instant::now());
    let analyst = user_agent(
        &warden_bin,
        ("analyst", "team-gamma"),
        gamma,
        "  allowedNamespaces:\n    from: All\n",
    );
    std::fs::write(
        manifests.join("gamma.yaml"),
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-gamma\n---\n{analyst}"),
    )
    .unwrap();
    common::up::wait_ready(&state, &mut up, 3, Duration::from_secs(90));
    let served = wait_served_name(gateway, "analyst.team-gamma", Duration::from_secs(60));
    eprintln!(
        "the new namespace's name served after {:?}",
        started.elapsed()
    );
    assert_names_namespaces(&served, &["team-alpha", "team-beta"]);
    let (code, card) = host_card(gateway, &bundle, "analyst.team-gamma");
    assert_eq!(code, "200", "{card}");

    // A second `up` finds its entries, DNS names included, and writes none.
    let entries = spire.server_cli(&["entry", "show"]);
    drop(up);
    let mut up = start_up_from(&warden_bin, &state, &manifests, gateway, &[], &spire_flag);
    common::up::wait_ready(&state, &mut up, 3, Duration::from_secs(90));
    let again = spire.server_cli(&["entry", "show"]);
    assert_eq!(
        again.matches("Entry ID").count(),
        entries.matches("Entry ID").count(),
        "{again}"
    );
    // Same revision: not rewritten.
    assert_eq!(entry_block(&again, GATEWAY), entry_block(&entries, GATEWAY));
}

/// The block of `spire-server entry show`'s output for `id`.
fn entry_block<'a>(entries: &'a str, id: &str) -> &'a str {
    entries
        .split("\n\n")
        .find(|b| b.contains(&format!("SPIFFE ID        : {id}\n")))
        .unwrap_or_else(|| panic!("no entry for {id}: {entries}"))
}

/// The subjectAltName of the certificate the gateway serves to a TLS client (no client
/// certificate) that asks for `host` (openssl's `DNS:…, URI:…`).
fn served_names(gateway: std::net::SocketAddr, host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {gateway} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -ext subjectAltName"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most `limit`) until the gateway serves a certificate naming `*.{namespace}` of
/// `agent_ns` (`{agent}.{namespace}`): SPIRE's agent brings an updated entry at its next sync.
fn wait_served_name(gateway: std::net::SocketAddr, agent_ns: &str, limit: Duration) -> String {
    let host = format!("{agent_ns}.a2a.localhost");
    let (_, domain) = host.split_once('.').unwrap_or_default();
    let wanted = format!("DNS:*.{domain}");
    let started = Instant::now();
    loop {
        let served = served_names(gateway, &host);
        if served.contains(&wanted) {
            return served;
        }
        assert!(
            started.elapsed() < limit,
            "the gateway never served {wanted}: {served}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `served` (openssl's subjectAltName) names every agent host of each of `namespaces`.
fn assert_names_namespaces(served: &str, namespaces: &[&str]) {
    for ns in namespaces {
        let name = format!("DNS:*.{ns}.a2a.localhost");
        assert!(served.contains(&name), "no {name} in {served}");
    }
}

/// (HTTP status, body) of the card at the root of `{agent_ns}.a2a.localhost` through the
/// gateway, over https checked against `ca` — host name included (no -k).
fn host_card(gateway: std::net::SocketAddr, ca: &Path, agent_ns: &str) -> (String, String) {
    let authority = format!("{agent_ns}.a2a.localhost:{}", gateway.port());
    let resolve = format!("{authority}:{}", gateway.ip());
    let url = format!("https://{authority}/.well-known/agent-card.json");
    curl_status(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ])
}
