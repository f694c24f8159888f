#!/usr/bin/env bash
# Installs the third-party peers Warden's tests run against.
#
# - System tools (openssl, curl, python3 for the stdlib WSGI app of the attack tests) from
#   Debian, when missing.
# - Real peers built from their Go modules at pinned versions, into a cache outside the clone
#   (no third-party source is ever committed):
#     spire-server, spire-agent   github.com/spiffe/spire
#     spiffe-helper               github.com/spiffe/spiffe-helper
#     etcd                        go.etcd.io/etcd/server/v3 (a two-line main around etcdmain)
#     kube-apiserver, kube-controller-manager, kubectl
#                                 k8s.io/kubernetes, built as a dependency of a throwaway module
#                                 whose `replace`s aim each staging module at its v0.x release.
#
# Idempotent: a versioned stamp per tool; a second run builds nothing. One progress line per
# tool, each build's duration, and a summary of versions and paths at the end.
# Without a Go toolchain it says so in one line and exits 0: the tiers that need these tools
# skip loudly, naming what is missing.
#
# Usage: scripts/install-test-deps.sh [kube|etcd|spire|spiffe-helper ...]   (default: all)
# Cache: $WARDEN_TEST_DEPS, else ${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps
#        (binaries in bin/, stamps in stamps/). crates/testkit looks in the same place.
set -euo pipefail

KUBERNETES_VERSION=v1.35.4
ETCD_VERSION=v3.6.16
SPIRE_VERSION=v1.13.3
SPIFFE_HELPER_VERSION=v0.11.0

system_tools() {
  local missing=()
  for tool in openssl curl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing test dependencies: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

system_tools
# The SDK peers of the interop tests (a2a-sdk, spiffe, @a2a-js/sdk, promtool, go-spiffe client).
"$(dirname "$0")/install-sdk-deps.sh"

CACHE="${WARDEN_TEST_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps}"
BIN="$CACHE/bin"
STAMPS="$CACHE/stamps"

if ! command -v go >/dev/null 2>&1; then
  echo "install-test-deps: SKIPPED the Go-built peers (spire-server, spire-agent, spiffe-helper, etcd, kube-apiserver, kube-controller-manager, kubectl): no 'go' toolchain on PATH; their test tiers will skip loudly"
  exit 0
fi
mkdir -p "$BIN" "$STAMPS"

export GOFLAGS="-trimpath -buildvcs=false"
LDFLAGS="-s -w"

# Runs "$@" and prints how long it took, under the tool's name.
timed() {
  local name="$1"
  shift
  local start=$SECONDS
  "$@"
  echo "  $name: built in $((SECONDS - start))s"
}

# True when the tool's stamp says this version is already installed and its binaries exist.
installed() {
  local stamp="$STAMPS/$1" version="$2"
  shift 2
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] || return 1
  for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}

# A scratch directory removed when the script exits.
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

build_kube() {
  local v="$KUBERNETES_VERSION" staged="${KUBERNETES_VERSION/#v1./v0.}"
  if installed kubernetes "$v" kube-apiserver kube-controller-manager kubectl; then
    echo "kubernetes $v: cached"
    return
  fi
  echo "kubernetes $v: building kube-apiserver, kube-controller-manager, kubectl (slowest step)"
  local dir="$WORK/kube"
  mkdir -p "$dir"
  local kmod
  kmod="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$v" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module warden.test/kube-build"
    grep -E '^(go|godebug) ' "$kmod"
    echo "require k8s.io/kubernetes $v"
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staged"'#p' "$kmod"
    echo ")"
  } >"$dir/go.mod"
  local minor="${v#v1.}"
  minor="${minor%%.*}"
  local xv="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    timed "$cmd" bash -c "cd '$dir' && GOFLAGS='$GOFLAGS -mod=mod' go build -ldflags='$LDFLAGS $xv' -o '$BIN/$cmd' k8s.io/kubernetes/cmd/$cmd"
  done
  echo "$v" >"$STAMPS/kubernetes"
}

build_etcd() {
  local v="$ETCD_VERSION"
  if installed etcd "$v" etcd; then
    echo "etcd $v: cached"
    return
  fi
  echo "etcd $v: building from go.etcd.io/etcd/server/v3"
  local dir="$WORK/etcd"
  mkdir -p "$dir"
  cat >"$dir/main.go" <<'EOF'
// The etcd binary: the same two lines as etcd's own main.go, around its server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  printf 'module warden.test/etcd-build\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$v" >"$dir/go.mod"
  timed etcd bash -c "cd '$dir' && go mod tidy >/dev/null && go build -ldflags='$LDFLAGS' -o '$BIN/etcd' ."
  echo "$v" >"$STAMPS/etcd"
}

# Builds each main package NAME of MODULE@VERSION (MODULE/cmd/NAME) from a throwaway module
# that requires it (rather than `go install pkg@version`, which also asks the proxy for the
# module's version list; a curated proxy may refuse that).
go_build_from() {
  local module="$1" v="$2"
  shift 2
  local dir="$WORK/${module//\//_}"
  mkdir -p "$dir"
  printf 'module warden.test/build\n\ngo 1.25\n\nrequire %s %s\n' "$module" "$v" >"$dir/go.mod"
  # The module's own go.sum: its dependencies are verified against the hashes its authors
  # pinned (the checksum database may not answer for every one of them through the proxy).
  local src
  src="$(cd "$dir" && go mod download -json "$module@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp "$src/go.sum" "$dir/go.sum"
  chmod u+w "$dir/go.sum"
  for name in "$@"; do
    timed "$name" bash -c "cd '$dir' && GOFLAGS='$GOFLAGS -mod=mod' go build -ldflags='$LDFLAGS' -o '$BIN/$name' '$module/cmd/$name'"
  done
}

build_spire() {
  local v="$SPIRE_VERSION"
  if installed spire "$v" spire-server spire-agent; then
    echo "spire $v: cached"
    return
  fi
  echo "spire $v: building spire-server, spire-agent"
  go_build_from github.com/spiffe/spire "$v" spire-server spire-agent
  echo "$v" >"$STAMPS/spire"
}

build_spiffe_helper() {
  local v="$SPIFFE_HELPER_VERSION"
  if installed spiffe-helper "$v" spiffe-helper; then
    echo "spiffe-helper $v: cached"
    return
  fi
  echo "spiffe-helper $v: building"
  go_build_from github.com/spiffe/spiffe-helper "$v" spiffe-helper
  echo "$v" >"$STAMPS/spiffe-helper"
}

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(kube etcd spire spiffe-helper)
total_start=$SECONDS
for t in "${tools[@]}"; do
  case "$t" in
    kube) build_kube ;;
    etcd) build_etcd ;;
    spire) build_spire ;;
    spiffe-helper) build_spiffe_helper ;;
    *)
      echo "install-test-deps: unknown tool '$t' (known: kube etcd spire spiffe-helper)" >&2
      exit 2
      ;;
  esac
done

echo "test deps ready in $((SECONDS - total_start))s, $BIN ($(go version | cut -d' ' -f3)):"
for s in kubernetes etcd spire spiffe-helper; do
  [ -f "$STAMPS/$s" ] && echo "  $s $(cat "$STAMPS/$s")"
done
for b in spire-server spire-agent spiffe-helper etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$BIN/$b" ] && echo "  $BIN/$b"
done
exit 0
