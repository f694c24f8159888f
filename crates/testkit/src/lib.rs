//! Helpers for Warden's tests: certificates made by openssl (not by Warden), a small upstream
//! app to put behind a sidecar, and guards for child processes. Test-only; never shipped.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod openssl;
pub mod process;
pub mod sdk;
