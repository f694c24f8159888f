//! `/status` on the admin port: what this process itself says about its health — whether it
//! is ready (holds an SVID) and which policy snapshot version it has loaded — so that
//! `warden status` reports the processes' own word (like `istioctl proxy-status`) instead of
//! what the supervisor wrote, and `warden verify` can wait until every proxy runs the current
//! snapshot.
//!
//! The loaded version is process-wide state on purpose: a process holds exactly one policy
//! snapshot at a time, and recording it here keeps the request path free of admin concerns.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// The version of the snapshot in force; 0 while none is loaded (versions start at 1).
static LOADED_VERSION: AtomicU64 = AtomicU64::new(0);

/// Records that the snapshot with `version` is now the one requests are decided by.
pub fn snapshot_loaded(version: u64) {
    LOADED_VERSION.store(version, Ordering::Relaxed);
}

/// The version of the snapshot in force, if one was loaded.
pub fn loaded_snapshot() -> Option<u64> {
    match LOADED_VERSION.load(Ordering::Relaxed) {
        0 => None,
        v => Some(v),
    }
}

/// The `/status` body: `{"ready": bool, "snapshotVersion": n|null, "pid": n}`.
pub fn body(ready: bool) -> Bytes {
    let status = serde_json::json!({
        "ready": ready,
        "snapshotVersion": loaded_snapshot(),
        "pid": std::process::id(),
    });
    Bytes::from(format!("{status}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_readiness_and_the_loaded_version() {
        let before: serde_json::Value = serde_json::from_slice(&body(false)).unwrap();
        assert_eq!(before["ready"], false);
        assert_eq!(before["pid"], std::process::id());
        snapshot_loaded(7);
        let after: serde_json::Value = serde_json::from_slice(&body(true)).unwrap();
        assert_eq!(after["ready"], true);
        assert_eq!(after["snapshotVersion"], 7);
    }
}
