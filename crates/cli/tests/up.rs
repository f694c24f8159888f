//! `warden up` on the example, then `warden verify`; then a manifest edit that removes the
//! specialist's grant, which `verify` must catch in row 2.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::process::{Running, free_addr};

fn verify(state: &Path) -> (Option<i32>, String) {
    let out = Command::new(WARDEN)
        .args(["--state-dir", state.to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A running `warden up` on a copy of an example directory.
struct Mesh {
    _dir: tempfile::TempDir,
    manifests: std::path::PathBuf,
    state: std::path::PathBuf,
    up: Running,
}

/// Copies `examples/<example>` and runs `warden up` on the copy until `warden status` says
/// ready with `agents` agents; returns the status JSON too.
fn up(example: &str, agents: usize) -> (Mesh, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
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
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = Running(
        Command::new(WARDEN)
            .args([
                "--state-dir",
                state.to_str().unwrap(),
                "up",
                manifests.to_str().unwrap(),
                "--gateway-listen",
                &gateway.to_string(),
                "--no-verify",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    loop {
        let out = Command::new(WARDEN)
            .args([
                "--state-dir",
                state.to_str().unwrap(),
                "status",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if status["agents"]
                .as_array()
                .is_some_and(|a| a.len() == agents)
                && status["ready"] == true
            {
                assert_eq!(status["gateway"]["url"], format!("http://{gateway}"));
                let mesh = Mesh {
                    _dir: dir,
                    manifests,
                    state,
                    up,
                };
                return (mesh, status);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the mesh never became ready"
        );
        assert!(up.alive(), "warden up exited");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent<'s>(status: &'s serde_json::Value, key: &str) -> &'s serde_json::Value {
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

fn condition<'s>(agent: &'s serde_json::Value, kind: &str) -> &'s serde_json::Value {
    agent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {agent}"))
}

/// Every agent has mTLS and its card from its own SPIFFE ID; the rogue's tool reference is
/// refused (Accepted=False, with the reason) and every other agent is accepted.
fn assert_seed_status(status: &serde_json::Value) {
    for agent in status["agents"].as_array().unwrap() {
        assert_eq!(agent["card"]["transportSecurity"], "mtls", "{agent}");
        assert_eq!(agent["card"]["attestedSpiffeId"], agent["spiffeId"]);
        assert_eq!(condition(agent, "MTLSReady")["status"], "True", "{agent}");
        let accepted = condition(agent, "Accepted");
        if agent["name"] == "rogue" {
            assert_eq!(accepted["status"], "False", "{agent}");
            assert_eq!(
                accepted["reason"], "CrossNamespaceReferenceDenied",
                "{agent}"
            );
            assert!(
                accepted["message"]
                    .as_str()
                    .unwrap()
                    .contains("team-beta/specialist"),
                "{agent}"
            );
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

fn assert_verify_passes(state: &Path) {
    let (code, text) = verify(state);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("PASS")).count(),
        6,
        "{text}"
    );
    assert!(text.trim_end().ends_with("6 of 6 checks passed"), "{text}");
}

#[test]
fn up_runs_the_example_and_verify_proves_it_then_catches_a_revoked_grant() {
    let (mesh, status) = up("cross-namespace-a2a", 3);
    assert_seed_status(&status);
    let Mesh {
        _dir: _keep,
        manifests,
        state,
        mut up,
    } = mesh;
    assert_verify_passes(&state);

    // Remove the grant: team-alpha no longer carries the label the specialist selects.
    let mesh = manifests.join("mesh.yaml");
    let text = std::fs::read_to_string(&mesh).unwrap();
    std::fs::write(&mesh, text.replace("    a2a-access: specialist\n", "")).unwrap();
    let start = Instant::now();
    let (code, text) = loop {
        let (code, text) = verify(&state);
        if code != Some(0) || start.elapsed() > Duration::from_secs(10) {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(1), "{text}");
    let row2 = text.lines().find(|l| l.contains(" 2. ")).unwrap();
    assert!(row2.starts_with("FAIL 2. delegation"), "{text}");
    assert!(
        row2.contains("403") && row2.contains("namespace_selector"),
        "{row2}"
    );

    up.terminate();
    assert_eq!(up.wait_exit(Duration::from_secs(15)), Some(0));
}

/// kagent's PR #1908 scenario in kagent's and kagenti's own kinds: `warden up` on the files as
/// they are, and the PR's checks pass (verify's six rows, the rogue's Accepted=False).
#[test]
fn up_runs_the_kagent_example_as_written_and_verify_passes() {
    let (mesh, status) = up("kagent-cross-namespace", 3);
    assert_seed_status(&status);
    // kagenti's resolution: the specialist's AgentRuntime says strict; the orchestrator's sets
    // none, so team-alpha's authbridge-runtime-config ConfigMap decides.
    assert_eq!(agent(&status, "team-beta/specialist")["mtlsMode"], "Strict");
    assert_eq!(
        agent(&status, "team-alpha/orchestrator")["mtlsMode"],
        "Permissive"
    );
    assert_verify_passes(&mesh.state);
    let Mesh {
        _dir: _keep,
        mut up,
        ..
    } = mesh;
    up.terminate();
    assert_eq!(up.wait_exit(Duration::from_secs(15)), Some(0));
}
