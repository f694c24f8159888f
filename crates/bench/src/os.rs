//! The processes the harness starts and what it reads of them: loopback ports, start-up
//! waits, CPU time and RSS from /proc.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Child processes, killed on drop: a failed start stops what it started.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Procs {
    /// Takes over `other`'s processes.
    pub fn adopt(&mut self, mut other: Procs) {
        self.0.append(&mut other.0);
    }

    /// The processes' PIDs and their children's (nginx's and HAProxy's workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for child in &self.0 {
            pids.push(child.id());
            pids.extend(children_of(child.id()));
        }
        pids
    }
}

impl Drop for Procs {
    /// SIGTERM (nginx's master then stops its workers; sidecars drain), SIGKILL after 5 s.
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free loopback port.
pub fn free() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits up to 15 s for something to listen on `addr`.
pub fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "nothing listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `program` on the PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn children_of(pid: u32) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Resident set size from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// User + system CPU seconds of the processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
}
