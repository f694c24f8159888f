#!/usr/bin/env bash
# Everything CI checks, in the order a reviewer would: install what the tests need, then
# formatting, lints, and the whole test suite (unit tests and end-to-end tests that start real
# `warden` processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
