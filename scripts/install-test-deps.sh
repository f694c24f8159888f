#!/usr/bin/env bash
# Installs the system tools Warden's tests use as third-party peers (openssl, curl).
# Idempotent: does nothing when they are already there.
set -euo pipefail
# The SDK peers of the interop tests (a2a-sdk, spiffe, @a2a-js/sdk, promtool, go-spiffe client).
"$(dirname "$0")/install-sdk-deps.sh"
missing=()
for tool in openssl curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing test dependencies: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
