//! Running `warden up` from a test: the commands a user types, against one state directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_testkit::process::Running;

use super::WARDEN;

/// `warden --state-dir STATE ARGS…`, run to completion.
pub fn warden(state: &Path, args: &[&str]) -> Output {
    Command::new(WARDEN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run warden")
}

/// stdout then stderr, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `warden up MANIFESTS --gateway-listen GATEWAY --no-verify` in the background, its output in
/// `STATE/../up.log`.
pub fn start(state: &Path, manifests: &Path, gateway: SocketAddr) -> Running {
    std::fs::create_dir_all(state).expect("state directory");
    let log = std::fs::File::create(state.with_extension("log")).expect("up log");
    Running(
        Command::new(WARDEN)
            .arg("--state-dir")
            .arg(state)
            .arg("up")
            .arg(manifests)
            .args(["--gateway-listen", &gateway.to_string(), "--no-verify"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn warden up"),
    )
}

/// Waits (at most `limit`) until `status -o json` says ready with `agents` agents; returns it.
pub fn wait_ready(
    state: &Path,
    up: &mut Running,
    agents: usize,
    limit: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let out = warden(state, &["status", "-o", "json"]);
        if out.status.success() {
            let status: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("status -o json is JSON");
            if status["agents"]
                .as_array()
                .is_some_and(|a| a.len() == agents)
                && status["ready"] == true
            {
                return status;
            }
        }
        assert!(
            start.elapsed() < limit,
            "the mesh never became ready: {}\nup's log: {}",
            text(&out),
            std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
        );
        assert!(up.alive(), "warden up exited");
        std::thread::sleep(Duration::from_millis(200));
    }
}
