//! The supervisor of `warden up`'s children: it starts each in its own process group through
//! `warden exec-child` (which asks the kernel to kill it when `up` dies, then execs the real
//! program), restarts it with backoff when it exits, and keeps what the status needs: its
//! PID, restarts, and the last error it printed (e.g. a bind failure with the OS error).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::sync::watch;

/// What is started, and where its output goes.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// `gateway`, `team-beta/specialist sidecar`, …
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// stdout and stderr, appended.
    pub log: PathBuf,
    /// The OS user it runs as; `None`: `up`'s own (see [`crate::users`]).
    pub run_as: Option<crate::users::OsUser>,
}

/// What the supervisor knows about one child; shared with the status writer.
#[derive(Debug, Clone, Default)]
pub struct ChildState {
    /// The running process, if any.
    pub pid: Option<u32>,
    /// Exits so far (each followed by a restart unless the mesh stops).
    pub restarts: u32,
    /// The last error the child printed before it exited, with its exit status.
    pub last_error: Option<String>,
    /// True between an exit and the restart.
    pub waiting_restart: bool,
}

/// A shared handle on a child's state.
pub type Health = Arc<Mutex<ChildState>>;

fn update(health: &Health, f: impl FnOnce(&mut ChildState)) {
    if let Ok(mut state) = health.lock() {
        f(&mut state);
    }
}

/// The last line of `log` written after byte `from` that looks like an error, else the last
/// line. ANSI escape sequences are dropped.
pub fn last_error_line(log: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())?;
    Some(strip_ansi(line))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~)
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn open_log(path: &Path) -> (Stdio, Stdio, u64) {
    // Logs name ports and peers: the owner's only.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path);
    match file.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((a, b)) => {
            let offset = b.metadata().map_or(0, |m| m.len());
            (Stdio::from(a), Stdio::from(b), offset)
        }
        Err(_) => (Stdio::null(), Stdio::null(), 0),
    }
}

/// Starts `spec` through `warden exec-child`, in a process group of its own.
fn spawn(warden: &Path, spec: &ChildSpec) -> std::io::Result<(tokio::process::Child, u64)> {
    let (out, err, offset) = open_log(&spec.log);
    let mut command = tokio::process::Command::new(warden);
    if let Some(user) = spec.run_as {
        // Supplementary groups are dropped too (std does so when root sets a uid).
        command.uid(user.uid).gid(user.gid);
    }
    let child = command
        .arg("exec-child")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(&spec.program)
        .args(&spec.args)
        .envs(&spec.env)
        .env_remove("MTLS_MODE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, offset))
}

/// Sends `signal` to the process group led by `pid` (the child and anything it started).
pub fn signal_group(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Stops a child: SIGTERM to its group, SIGKILL after 5 s.
async fn stop_child(process: &mut tokio::process::Child) {
    if let Some(pid) = process.id() {
        signal_group(pid, Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(5), process.wait())
            .await
            .is_err()
        {
            signal_group(pid, Signal::KILL);
        }
    }
    let _ = process.wait().await;
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "exited".into(),
        },
        Err(e) => format!("cannot be waited for: {e}"),
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs `spec` until `stop` turns true; restarts it with backoff (200 ms doubling to 5 s,
/// reset after 10 s of running) whenever it exits, recording why in `health`.
pub async fn supervise(
    warden: PathBuf,
    spec: ChildSpec,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return;
        }
        let (mut process, offset) = match spawn(&warden, &spec) {
            Ok(p) => p,
            Err(e) => {
                let error = format!("cannot start {}: {e}", spec.program.display());
                tracing::error!(child = %spec.name, %error);
                update(&health, |s| s.last_error = Some(error));
                return;
            }
        };
        update(&health, |s| {
            s.pid = process.id();
            s.waiting_restart = false;
        });
        let started = Instant::now();
        tokio::select! {
            status = process.wait() => {
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(200);
                }
                let exit = describe_exit(status);
                let line = last_error_line(&spec.log, offset).unwrap_or_default();
                let error = format!("{exit}: {line}");
                tracing::warn!(child = %spec.name, %error, log = %spec.log.display(), "child failed; restarting in {backoff:?}");
                update(&health, |s| {
                    s.pid = None;
                    s.restarts += 1;
                    s.last_error = Some(error);
                    s.waiting_restart = true;
                });
            }
            _ = stopped(&mut stop) => {
                stop_child(&mut process).await;
                update(&health, |s| s.pid = None);
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// `warden exec-child`: asks the kernel to SIGKILL this process when its parent (`warden up`,
/// `parent`) dies — whatever signal ends it — then becomes `program`. Returns only on failure.
pub fn exec_child(parent: u32, program: &Path, args: &[String]) -> std::io::Error {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        return e.into();
    }
    // The parent may have died before the death signal was armed.
    let parent_now = rustix::process::getppid().map(|p| p.as_raw_pid());
    if parent_now != i32::try_from(parent).ok() {
        return std::io::Error::other(format!("the parent process {parent} is gone"));
    }
    std::process::Command::new(program).args(args).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_line_after_the_offset_wins_and_loses_its_colours() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "old error: stale\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("\u{1b}[2mstarting\u{1b}[0m\nerror: binding 127.0.0.1:8083: Address already in use (os error 98)\nbye\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            last_error_line(&log, offset).as_deref(),
            Some("error: binding 127.0.0.1:8083: Address already in use (os error 98)")
        );
        assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m ok"), "INFO ok");
    }
}
