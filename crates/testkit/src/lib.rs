//! Helpers for Warden's tests: certificates made by openssl (not by Warden), a small upstream
//! app to put behind a sidecar, guards for child processes, and fixtures for the real
//! third-party peers (SPIRE, kube-apiserver) built by scripts/install-test-deps.sh. Test-only; never shipped.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod deps;
pub mod kube_api;
pub mod openssl;
pub mod process;
pub mod spire;
pub mod sdk;
