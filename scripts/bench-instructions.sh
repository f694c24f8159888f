#!/usr/bin/env bash
# User-space instructions per request of a Strict sidecar, for one or more `warden` binaries,
# counted by valgrind (callgrind). CPU time on two shared cores moves by ±20 % between runs
# (docs/benchmarks.md); instruction counts move far less: ±1.5 % for one binary between runs
# (how often the runtime polls and parks depends on timing; WARDEN_WORKERS=1 in the
# environment removes the idle worker), so over a few runs a 5 % regression between two
# builds shows when `warden-bench` cannot resolve it. Kernel time (syscalls, context switches)
# is not counted: compare those with `strace -c` if the code path changed.
#
# For each binary: an echo app, the sidecar under callgrind in front of it, then N1 and N2
# keep-alive mTLS POSTs (the bench's 1 KiB SendMessage) on one curl connection; the sidecar's
# instructions per request are (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and the handshake
# cancel out. Loopback only; every process is stopped before the script ends.
#
# Usage: scripts/bench-instructions.sh WARDEN [WARDEN...]   (env N1, N2: request counts)
# Needs: valgrind, curl (Debian packages).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 WARDEN [WARDEN...]" >&2; exit 2; }
for tool in valgrind curl; do
  command -v "$tool" >/dev/null || { echo "bench-instructions: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
n1=${N1:-1000}
n2=${N2:-3000}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

first=$1
"$first" ca init --state-dir "$work/ca" --trust-domain warden.local >/dev/null 2>&1
"$first" ca issue --state-dir "$work/ca" --id spiffe://warden.local/ns/bench-a/sa/server --out "$work/server" >/dev/null 2>&1
"$first" ca issue --state-dir "$work/ca" --id spiffe://warden.local/ns/bench-b/sa/client --out "$work/client" >/dev/null 2>&1
python3 -c 'import json; print(json.dumps({"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","messageId":"bench","parts":[{"kind":"text","text":"x"*900}]}}}))' > "$work/body.json"
tls=(--cert "$work/client/svid.pem" --key "$work/client/svid_key.pem" -k)

# instructions BIN N: total Ir of a sidecar from `BIN` that served N requests.
instructions() {
  local bin=$1 n=$2 app sidecar out
  app=$(free_port)
  sidecar=$(free_port)
  out="$work/callgrind.$n.$RANDOM"
  "$first" agent echo --listen "127.0.0.1:$app" >/dev/null 2>&1 &
  local echo_pid=$!
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" sidecar --inbound "127.0.0.1:$sidecar" \
    --app "127.0.0.1:$app" --mode strict --svid-dir "$work/server" >"$out.log" 2>&1 &
  local vg_pid=$!
  pids=("$echo_pid" "$vg_pid")
  for _ in $(seq 1 300); do
    curl -s -o /dev/null -m 2 "${tls[@]}" "https://127.0.0.1:$sidecar/" && break
    sleep 0.2
  done
  local urls=()
  for _ in $(seq 1 "$n"); do urls+=("https://127.0.0.1:$sidecar/"); done
  local ok
  ok=$(curl -s -m 600 -w '%{stderr}%{http_code}\n' "${tls[@]}" -H 'content-type: application/json' \
    --data-binary @"$work/body.json" "${urls[@]}" 2>&1 >/dev/null | grep -c '^200$' || true)
  kill -TERM "$vg_pid"
  wait "$vg_pid" 2>/dev/null || true
  kill "$echo_pid" 2>/dev/null || true
  wait "$echo_pid" 2>/dev/null || true
  [ "$ok" -eq "$n" ] || { echo "bench-instructions: $bin answered $ok of $n requests with 200" >&2; exit 1; }
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

printf '| binary | Ir/request (user space) | ÷ first |\n|---|---|---|\n'
base=""
for bin in "$@"; do
  a=$(instructions "$bin" "$n1")
  b=$(instructions "$bin" "$n2")
  per=$(( (b - a) / (n2 - n1) ))
  [ -n "$base" ] || base=$per
  printf '| %s | %d | %s |\n' "$bin" "$per" "$(python3 -c "print(f'{$per/$base:.3f}')")"
done
