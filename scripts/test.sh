#!/usr/bin/env bash
# Everything CI checks, in the order a reviewer would: install what the tests need, then
# formatting, lints, and the whole test suite (unit tests and end-to-end tests that start real
# `warden` processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# With Go the real peers (SPIRE, etcd, kube-apiserver) were just built: their tiers must run,
# so a missing binary fails them instead of skipping them.
command -v go >/dev/null 2>&1 && export WARDEN_TEST_PEERS=require
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
