//! Child processes and ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process that is killed when the test ends, pass or fail.
pub struct Running(pub Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (through `kill`, to stay free of unsafe code).
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    /// SIGTERM first, so that a supervisor (`warden up`) stops its own children; SIGKILL only
    /// if it has not exited within 5 s.
    fn drop(&mut self) {
        if self.alive() {
            self.terminate();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.0.kill();
            }
        }
        let _ = self.0.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listening on {addr} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns `command` with stdout and stderr appended to `log`, so that a peer that fails to
/// start can be diagnosed from its own words (see [`log_tail`]).
pub fn spawn_logged(command: &mut std::process::Command, log: &std::path::Path) -> Running {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = file.try_clone().expect("clone log handle");
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    Running(child)
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(log: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `ready` every 100 ms until it holds; panics after `limit` with `what` and `log`'s tail.
pub fn wait_until(
    what: &str,
    limit: Duration,
    log: &std::path::Path,
    mut ready: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "{what} not ready after {limit:?}; last lines of {}:\n{}",
            log.display(),
            log_tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
