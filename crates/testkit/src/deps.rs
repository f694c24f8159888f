//! The third-party peers (SPIRE, spiffe-helper, etcd, Kubernetes) that
//! `scripts/install-test-deps.sh` builds from their Go modules into a cache outside the clone.
//!
//! A tier that needs one asks [`tools`]; when a binary is missing the tier is skipped with one
//! loud line naming it (never a silent pass), unless `WARDEN_TEST_PEERS=require` (CI, where Go
//! is there and the tiers must run), which turns the skip into a failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the installer puts the binaries: `$WARDEN_TEST_DEPS/bin`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps/bin` (the script's own rule).
pub fn bin_dir() -> PathBuf {
    let base = match std::env::var_os("WARDEN_TEST_DEPS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("warden/test-deps")
        }
    };
    base.join("bin")
}

/// The paths of `names` in the cache, in order, or `None` after printing why `tier` is
/// skipped (or panicking, with `WARDEN_TEST_PEERS=require`).
pub fn tools(tier: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let dir = bin_dir();
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, p)| !is_executable(p))
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Some(paths);
    }
    skip(
        tier,
        &format!(
            "missing {} in {} (run scripts/install-test-deps.sh; it needs Go)",
            missing.join(", "),
            dir.display()
        ),
    );
    None
}

/// Reports that `tier` cannot run and why: one line on stderr, or a panic with
/// `WARDEN_TEST_PEERS=require`.
pub fn skip(tier: &str, why: &str) {
    let message = format!("SKIPPED tier '{tier}': {why}");
    if std::env::var("WARDEN_TEST_PEERS").as_deref() == Ok("require") {
        panic!("{message}, and WARDEN_TEST_PEERS=require");
    }
    eprintln!("{message}");
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Prints a tier's duration when dropped, so that every real-peer test reports what it cost.
pub struct TierTimer {
    name: String,
    start: Instant,
}

impl TierTimer {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            start: Instant::now(),
        }
    }
}

impl Drop for TierTimer {
    fn drop(&mut self) {
        eprintln!("tier '{}' took {:?}", self.name, self.start.elapsed());
    }
}
