//! The OS users `warden up` runs workloads as.
//!
//! On one machine the OS user is the only boundary the kernel enforces between processes: a
//! process of the same user can read another's memory, files and sockets. So when `up` runs
//! as root, an agent with `spec.local.user` runs its app and its sidecar as that user, with a
//! private directory (0700, owned by it) holding its Workload API socket and its copy of the
//! snapshot; its sidecar's egress serves that user only (and `up`'s own user, which can
//! become any user anyway). An agent without `spec.local.user` runs as the user running `up`,
//! as before: explicit, and nothing allocated behind the user's back.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use warden_model::MeshSnapshot;
use warden_model::snapshot::CompiledAgent;

/// A uid and its primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// The user id.
    pub uid: u32,
    /// Its primary group (the uid itself for a bare number with no passwd entry).
    pub gid: u32,
}

impl OsUser {
    /// The user running this process.
    pub fn current() -> Self {
        Self {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    /// Whether this is the superuser (who may start processes as other users).
    pub fn is_root(self) -> bool {
        self.uid == 0
    }

    /// `spec.local.user`: a user name from `/etc/passwd`, or a numeric uid (with its passwd
    /// entry's group when it has one, else the group of the same number).
    pub fn resolve(text: &str) -> Result<Self, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Self::resolve_in(text, &passwd)
    }

    fn resolve_in(text: &str, passwd: &str) -> Result<Self, String> {
        let text = text.trim();
        let entries = passwd.lines().filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (uid, gid) = (fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?);
            Some((*fields.first()?, OsUser { uid, gid }))
        });
        if let Ok(uid) = text.parse::<u32>() {
            let found = entries.map(|(_, u)| u).find(|u| u.uid == uid);
            return Ok(found.unwrap_or(OsUser { uid, gid: uid }));
        }
        let mut entries = entries;
        entries
            .find(|(name, _)| *name == text)
            .map(|(_, u)| u)
            .ok_or_else(|| {
                format!("no user {text:?} in /etc/passwd; give an existing user name or a uid")
            })
    }
}

/// The user `agent`'s processes run as: `spec.local.user`, else `up`'s own. Starting them as
/// another user needs root; the error names the field and says why.
pub fn run_as(agent: &CompiledAgent) -> Result<OsUser, String> {
    let me = OsUser::current();
    let Some(text) = agent.local.as_ref().and_then(|l| l.user.as_deref()) else {
        return Ok(me);
    };
    let field = format!("{}: spec.local.user {text:?}", agent.key());
    let user = OsUser::resolve(text).map_err(|e| format!("{field}: {e}"))?;
    if user.uid != me.uid && !me.is_root() {
        return Err(format!(
            "{field} is uid {}, but `warden up` runs as uid {}, not root, and only root can start \
             processes as another user: run `warden up` as root, or remove spec.local.user",
            user.uid, me.uid
        ));
    }
    Ok(user)
}

/// The user of every agent of `snapshot`, by `namespace/name`, or every problem. On SPIRE
/// (`spire`), which identifies a workload by its uid alone, every agent needs a uid of its own
/// that is not `up`'s (the gateway's).
pub fn workload_users(
    snapshot: &MeshSnapshot,
    spire: bool,
) -> Result<BTreeMap<String, OsUser>, Vec<String>> {
    let me = OsUser::current();
    if spire && !me.is_root() {
        return Err(vec![format!(
            "identity provider Spire: `warden up` runs as uid {}, not root, so every workload \
             would run as uid {} and SPIRE, whose unix attestor tells workloads apart by their \
             uid alone, could not tell them apart (each would get every identity): run \
             `warden up` as root and give each agent its own spec.local.user",
            me.uid, me.uid
        )]);
    }
    let mut users = BTreeMap::new();
    let mut problems = Vec::new();
    let mut by_uid: BTreeMap<u32, String> = BTreeMap::new();
    for agent in snapshot.agents() {
        let user = match run_as(agent) {
            Ok(user) => user,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if spire && user.uid == me.uid {
            problems.push(format!(
                "{}: spec.local.user is required with identity provider Spire and must not be \
                 uid {} (`warden up` and the gateway): SPIRE tells workloads apart by their uid",
                agent.key(),
                me.uid
            ));
        } else if let Some(other) = by_uid.insert(user.uid, agent.key()).filter(|_| spire) {
            problems.push(format!(
                "{}: spec.local.user is uid {}, as is {other}'s: SPIRE would give both agents' \
                 processes both identities; give each agent its own user",
                agent.key(),
                user.uid
            ));
        }
        users.insert(agent.key(), user);
    }
    match problems.is_empty() {
        true => Ok(users),
        false => Err(problems),
    }
}

/// Creates `dir` (if needed) as a directory only `owner` can open: 0700, owned by it.
pub fn private_dir(dir: &Path, owner: OsUser) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != owner.uid || meta.gid() != owner.gid {
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Replaces `path` with `contents`, 0600 and `owner`'s from the start: written to a sibling,
/// given to `owner`, then renamed, so that `owner` (watching the file) never meets a version
/// it cannot read.
pub fn write_owned(path: &Path, contents: &[u8], owner: OsUser) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
    std::fs::rename(&tmp, path)
}

/// Why `owner` cannot reach `path`: a directory above it is not searchable, or `path`
/// itself not executable (a program) or searchable (a directory), by that user (a `target/`
/// or state directory under root's 0700 home is the usual case).
pub fn cannot_reach(path: &Path, owner: OsUser) -> Option<String> {
    let path = path.canonicalize().ok()?;
    path.ancestors().find_map(|p| {
        let meta = std::fs::metadata(p).ok()?;
        let mode = meta.permissions().mode();
        let allowed = match (meta.uid() == owner.uid, meta.gid() == owner.gid) {
            (true, _) => mode & 0o100 != 0,
            (false, true) => mode & 0o010 != 0,
            (false, false) => mode & 0o001 != 0,
        };
        (!allowed).then(|| format!("uid {} cannot open {}", owner.uid, p.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          alice:x:1001:100::/home/alice:/bin/sh\n";

    #[test]
    fn names_and_uids_resolve_with_their_group() {
        let user = |t| OsUser::resolve_in(t, PASSWD);
        assert_eq!(
            user("alice"),
            Ok(OsUser {
                uid: 1001,
                gid: 100
            })
        );
        assert_eq!(
            user("1001"),
            Ok(OsUser {
                uid: 1001,
                gid: 100
            })
        );
        assert_eq!(
            user("64001"),
            Ok(OsUser {
                uid: 64001,
                gid: 64001
            }),
            "a bare uid"
        );
        let missing = user("mallory").unwrap_err();
        assert!(missing.contains("mallory") && missing.contains("/etc/passwd"));
    }

    #[test]
    fn a_private_dir_is_0700_and_a_binary_under_it_cannot_be_run_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let me = OsUser::current();
        let private = dir.path().join("agent");
        private_dir(&private, me).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let binary = private.join("tool");
        std::fs::write(&binary, b"").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(cannot_reach(&binary, me), None);
        let other = OsUser {
            uid: me.uid.wrapping_add(4242),
            gid: me.gid.wrapping_add(4242),
        };
        let why = cannot_reach(&binary, other).expect("another uid is kept out");
        assert!(why.contains(&private.display().to_string()), "{why}");
    }
}
