//! Pre-flight checks (like `linkerd check --pre`): everything `warden up` needs is verified
//! before anything starts, and each failure is one line naming what is wrong and the fix.
//! `warden check` runs the same checks on demand.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use warden_model::MeshSnapshot;

use crate::lock::{LockError, StateLock};
use crate::spire::{Identities, identities};
use crate::up::{UpConfig, UpError, compile};
use crate::users::{OsUser, cannot_reach};

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What was checked, e.g. `gateway port`.
    pub check: String,
    /// What is wrong, with the path, address or OS error.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAIL {}: {} — fix: {}",
            self.check, self.problem, self.fix
        )
    }
}

/// What passed pre-flight: the lock (held until dropped) and the compiled manifests.
#[derive(Debug)]
pub struct Cleared {
    /// The state directory's lock.
    pub lock: StateLock,
    /// The compiled manifests (version 1).
    pub snapshot: MeshSnapshot,
    /// One line per passed check.
    pub passed: Vec<String>,
    /// Where SVIDs come from.
    pub identities: Identities,
}

fn problem(check: &str, problem: String, fix: String) -> Problem {
    Problem {
        check: check.into(),
        problem,
        fix,
    }
}

/// The state directory exists (created if needed) and is writable.
fn writable(dir: &Path) -> Result<(), Problem> {
    let fail = |e: std::io::Error| {
        problem(
            "state directory",
            format!("{}: {e}", dir.display()),
            format!(
                "pass a writable --state-dir, or give yourself write access to {}",
                dir.display()
            ),
        )
    };
    // Not listable by others (a directory the user chose keeps its search bits, so that each
    // workload's user reaches its private directory under `sockets/`); logs the owner's only.
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode() & 0o777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o066)).map_err(fail)?;
    for (sub, mode) in [("logs", 0o700), ("sockets", 0o711)] {
        std::fs::create_dir_all(dir.join(sub)).map_err(fail)?;
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(mode))
            .map_err(fail)?;
    }
    let probe = dir.join(".warden-write-check");
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

fn lock(dir: &Path) -> Result<StateLock, Problem> {
    StateLock::acquire(dir).map_err(|e| match &e {
        LockError::InUse { .. } => problem(
            "state directory lock",
            e.to_string(),
            format!(
                "stop it with `warden --state-dir {} down`, or pass another --state-dir",
                dir.display()
            ),
        ),
        LockError::Io { .. } => problem(
            "state directory lock",
            e.to_string(),
            "give yourself write access to the state directory".into(),
        ),
    })
}

/// `addr` can be bound now (the port is free).
pub fn port_free(what: &str, addr: SocketAddr, flag: &str) -> Result<(), Problem> {
    TcpListener::bind(addr).map(drop).map_err(|e| {
        problem(
            what,
            format!("{addr} cannot be bound: {e}"),
            format!(
                "stop what listens there (`ss -ltnp 'sport = :{}'` shows it), or {flag}",
                addr.port()
            ),
        )
    })
}

/// One problem per line of the loader's or compiler's report.
fn manifests(path: &Path) -> Result<MeshSnapshot, Vec<Problem>> {
    compile(path, 1).map_err(|e| {
        let text = match e {
            UpError::Manifests(lines) => lines,
            other => other.to_string(),
        };
        text.lines()
            .map(|line| {
                problem(
                    "manifests",
                    line.to_owned(),
                    format!("edit the manifests; `warden validate {}`", path.display()),
                )
            })
            .collect()
    })
}

fn ca(config: &UpConfig, snapshot: &MeshSnapshot) -> Result<(), Problem> {
    let dir = config.ca_dir();
    if !dir.join(warden_identity::ca::CA_CERT_FILE).exists() {
        return Ok(());
    }
    crate::up::ensure_ca(&dir, snapshot.trust_domain())
        .map(drop)
        .map_err(|e| {
            problem(
                "CA",
                e.to_string(),
                "pass --ca-dir with a CA for the manifests' trust domain, or remove the CA directory to make a new one".into(),
            )
        })
}

/// Runs every check; on success the lock is held. Every failure is reported, not just the
/// first (except that nothing else is checked on a state directory that cannot be used).
pub fn preflight(config: &UpConfig) -> Result<Cleared, Vec<Problem>> {
    let dir = &config.state_dir;
    writable(dir).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut passed = vec![format!("state directory {} is writable", dir.display())];
    let lock = lock(dir).map_err(|p| problems.push(p)).ok();
    if lock.is_some() {
        passed.push("no other `warden up` runs on it".into());
    }
    match port_free(
        "gateway port",
        config.gateway_listen,
        "pass --gateway-listen with a free address",
    ) {
        Ok(()) => passed.push(format!("gateway port {} is free", config.gateway_listen)),
        Err(p) => problems.push(p),
    }
    let snapshot = manifests(&config.manifests)
        .map_err(|p| problems.extend(p))
        .ok();
    if let Some(snapshot) = &snapshot {
        passed.push(format!(
            "manifests {} are valid ({} agents)",
            config.manifests.display(),
            snapshot.agents().len()
        ));
        for agent in snapshot.agents() {
            if let Some(port) = agent.local.as_ref().and_then(|l| l.port) {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let flag = format!("change spec.local.port of {}", agent.key());
                match port_free(&format!("{} app port", agent.key()), addr, &flag) {
                    Ok(()) => passed.push(format!("{} app port {port} is free", agent.key())),
                    Err(p) => problems.push(p),
                }
            }
        }
        match ca(config, snapshot) {
            Ok(()) => passed.push(format!("CA {} is usable", config.ca_dir().display())),
            Err(p) => problems.push(p),
        }
    }
    let identities = identity_source(config, snapshot.as_ref(), &mut passed, &mut problems);
    match (lock, snapshot, identities) {
        (Some(lock), Some(snapshot), Some(identities)) if problems.is_empty() => Ok(Cleared {
            lock,
            snapshot,
            passed,
            identities,
        }),
        _ => Err(problems),
    }
}

/// `spec.identity` and the users workloads run as (`spec.local.user`): who may run as whom,
/// and, on SPIRE, that the agent can tell every workload apart by its uid.
fn identity_source(
    config: &UpConfig,
    snapshot: Option<&MeshSnapshot>,
    passed: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Option<Identities> {
    let fix = format!(
        "edit the manifests; `warden validate {}`",
        config.manifests.display()
    );
    let identities = match identities(&config.manifests) {
        Ok(identities) => identities,
        Err(lines) => {
            problems.extend(
                lines
                    .into_iter()
                    .map(|l| problem("identity", l, fix.clone())),
            );
            return None;
        }
    };
    if let Identities::Spire(sockets) = &identities {
        let named = [
            ("agentSocket", &sockets.agent_socket, "spire-agent"),
            ("serverSocket", &sockets.server_socket, "spire-server"),
        ];
        for (field, path, program) in named.into_iter().filter(|(_, p, _)| !p.exists()) {
            problems.push(problem(
                "identity",
                format!("spec.identity.{field} {}: no such socket", path.display()),
                format!("start {program}, or correct spec.identity.{field}"),
            ));
        }
    }
    let snapshot = snapshot?;
    let spire = matches!(identities, Identities::Spire(_));
    match crate::users::workload_users(snapshot, spire) {
        Ok(users) => {
            let me = OsUser::current();
            let sockets = config.state_dir.join("sockets");
            let others: std::collections::BTreeSet<u32> = users
                .values()
                .filter(|u| **u != me)
                .map(|u| u.uid)
                .collect();
            for uid in others {
                let user = users.values().find(|u| u.uid == uid).copied().unwrap_or(me);
                if let Some(why) = cannot_reach(&config.warden, user) {
                    problems.push(problem(
                        "warden binary",
                        format!("{}: {why}", config.warden.display()),
                        "install warden where every user can run it (e.g. /usr/local/bin)".into(),
                    ));
                }
                if let Some(why) = cannot_reach(&sockets, user) {
                    problems.push(problem(
                        "state directory",
                        format!("{}: {why}", sockets.display()),
                        "pass a --state-dir whose parent directories every agent's user can \
                         search (o+x)"
                            .into(),
                    ));
                }
            }
            passed.push(format!(
                "identities: {}; every agent's user is usable",
                if spire { "SPIRE" } else { "embedded CA" }
            ));
        }
        Err(lines) => {
            problems.extend(lines.into_iter().map(|l| problem("users", l, fix.clone())));
        }
    }
    Some(identities)
}
