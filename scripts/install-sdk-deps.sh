#!/usr/bin/env bash
# Installs the third-party peers of the SDK tests, pinned, outside the clone:
#   - a Python venv with a2a-sdk (JSON-RPC, HTTP+JSON and gRPC), the `spiffe` package and
#     uvicorn: crates/cli/tests/sdk/python/requirements.txt;
#   - a node_modules with @a2a-js/sdk and express: crates/cli/tests/sdk/js/package-lock.json;
#   - promtool (Debian's `prometheus` package), for the metrics format tests;
#   - the go-spiffe test client (our crates/cli/tests/sdk/go-spiffe, built against
#     github.com/spiffe/go-spiffe/v2 as pinned in its go.sum), when Go is installed.
# Everything lands in $WARDEN_TEST_DEPS/sdk (default ${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps/sdk). Idempotent: a part
# whose pins did not change since it was installed is left alone. One line per tool.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sdk_src="$repo/crates/cli/tests/sdk"
dest="${WARDEN_TEST_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps}/sdk"
mkdir -p "$dest"

# The pins of a part, hashed: a part is reinstalled only when this changes.
pins_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$dest/$1.stamp" ] && [ "$(cat "$dest/$1.stamp")" = "$2" ]; }

python_sdks() {
  local req="$sdk_src/python/requirements.txt" hash
  hash="$(pins_hash "$req")"
  if up_to_date python "$hash" && [ -x "$dest/venv/bin/python" ]; then
    echo "python SDKs (a2a-sdk, spiffe): up to date in $dest/venv"
    return
  fi
  command -v python3 >/dev/null || { echo "python SDKs: python3 not found, skipped" >&2; return; }
  echo "python SDKs (a2a-sdk, spiffe): installing into $dest/venv"
  rm -rf "$dest/venv"
  python3 -m venv "$dest/venv"
  "$dest/venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$hash" > "$dest/python.stamp"
}

js_sdk() {
  local hash
  hash="$(pins_hash "$sdk_src/js/package.json" "$sdk_src/js/package-lock.json")"
  if up_to_date js "$hash" && [ -d "$dest/js/node_modules/@a2a-js/sdk" ]; then
    echo "js SDK (@a2a-js/sdk): up to date in $dest/js"
    return
  fi
  command -v npm >/dev/null || { echo "js SDK: npm not found, skipped" >&2; return; }
  echo "js SDK (@a2a-js/sdk): installing into $dest/js"
  rm -rf "$dest/js"
  mkdir -p "$dest/js"
  cp "$sdk_src/js/package.json" "$sdk_src/js/package-lock.json" "$dest/js/"
  (cd "$dest/js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$hash" > "$dest/js.stamp"
}

promtool_tool() {
  if command -v promtool >/dev/null; then
    echo "promtool: present ($(command -v promtool))"
    return
  fi
  echo "promtool: installing Debian's prometheus package"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Only promtool is wanted: where the machine's policy lets the package start its server, stop it.
  $sudo service prometheus stop >/dev/null 2>&1 || true
}

go_spiffe_client() {
  if ! command -v go >/dev/null; then
    echo "go-spiffe client: go not found, skipped (its test will say so)" >&2
    return
  fi
  echo "go-spiffe client: building into $dest/bin/go-spiffe-client"
  (cd "$sdk_src/go-spiffe" && go build -o "$dest/bin/go-spiffe-client" .)
}

python_sdks
js_sdk
promtool_tool
go_spiffe_client
