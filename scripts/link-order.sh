#!/usr/bin/env bash
# Regenerates crates/cli/link-order.txt: the functions a sidecar, an egress and a gateway run,
# which crates/cli/build.rs asks the linker to place together in the release binary (why:
# the comment in build.rs; the effect on resident memory: docs/benchmarks.md).
#
# Builds the release binaries, runs `warden-bench`'s sidecar-mtls, mesh-path and handshakes
# scenarios with every `warden` process under callgrind (loopback only, a few seconds each,
# every process stopped by warden-bench), then a few requests of other kinds to a sidecar under
# callgrind, and keeps the names of the functions callgrind saw
# run that are in the binary's symbol table. Symbol names carry a hash of the crate's build
# settings, so the list is made from a release build (the one it is for), and regenerated
# when dependencies or the toolchain change (stale names are skipped by the linker).
#
# Usage: scripts/link-order.sh   (needs valgrind, python3; ~10 minutes on 2 cores)
#        scripts/link-order.sh --check   (after a release build: how many of the listed
#        functions target/release/warden still has; exits 1 below 99 %, when the list is
#        stale enough to cost idle memory, as renamed functions did in docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --check ]; then
  python3 - target/release/warden crates/cli/link-order.txt <<'PY'
import subprocess, sys
binary, listed = sys.argv[1:]
try:
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
except (OSError, subprocess.CalledProcessError) as e:
    sys.exit(f"link-order --check: cannot read the symbols of {binary} ({e}); build it with cargo build --release -p warden-cli")
text = {p[2] for p in (l.split() for l in nm.stdout.splitlines()) if len(p) == 3 and p[1] in "tTwW"}
names = [l.strip() for l in open(listed) if l.strip() and not l.startswith("#")]
found = sum(n in text for n in names)
share = found / max(len(names), 1)
print(f"link-order --check: {found} of the {len(names)} functions in {listed} are in {binary} ({share:.1%})")
if share < 0.99:
    sys.exit("link-order --check: the list is stale; regenerate it with scripts/link-order.sh")
PY
  exit
fi
command -v valgrind >/dev/null || { echo "link-order: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -p warden-cli -p warden-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
warden=$PWD/target/release/warden
cat >"$work/warden" <<WRAP
#!/usr/bin/env bash
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$work/callgrind.%p" "$warden" "\$@" 2>>"$work/valgrind.log"
WRAP
chmod +x "$work/warden"
target/release/warden-bench --warden "$work/warden" --only sidecar-mtls,mesh-path,handshakes \
  --seconds 2 --connections 2 --rate 50 >"$work/bench.txt"
# Requests warden-bench does not make (HTTP/2, a card GET, a caller without a certificate), to a
# sidecar under callgrind, so that a first request of those kinds finds its code in place too.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$warden" ca init --state-dir "$work/ca" --trust-domain warden.local >/dev/null 2>&1
"$warden" ca issue --state-dir "$work/ca" --id spiffe://warden.local/ns/a/sa/server --out "$work/server" >/dev/null 2>&1
app=$(port) inbound=$(port)
"$warden" agent echo --listen "127.0.0.1:$app" >/dev/null 2>&1 &
echo_pid=$!
"$work/warden" sidecar --inbound "127.0.0.1:$inbound" --app "127.0.0.1:$app" --mode strict --svid-dir "$work/server" >/dev/null 2>&1 &
sidecar_pid=$!
tls=(-s -o /dev/null -m 10 -k --cert "$work/server/svid.pem" --key "$work/server/svid_key.pem")
for _ in $(seq 1 150); do curl "${tls[@]}" "https://127.0.0.1:$inbound/" && break; sleep 0.2; done
body='{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","messageId":"m","parts":[{"kind":"text","text":"x"}]}}}'
for version in --http1.1 --http2; do
  curl "${tls[@]}" "$version" -H 'content-type: application/json' -d "$body" "https://127.0.0.1:$inbound/" || true
  curl "${tls[@]}" "$version" "https://127.0.0.1:$inbound/.well-known/agent-card.json" || true
done
curl -s -o /dev/null -m 10 -k "https://127.0.0.1:$inbound/" || true
kill "$sidecar_pid" "$echo_pid"
wait "$sidecar_pid" 2>/dev/null || true
python3 - "$warden" "$work" crates/cli/link-order.txt <<'PY'
import glob, re, subprocess, sys
binary, work, out = sys.argv[1:]
ran = set()
for path in glob.glob(f"{work}/callgrind.*"):
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"^c?fn=\(\d+\) (\S+?)(?:'\d+)?$", line.rstrip("\n"))
            if m:
                ran.add(m.group(1))
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
text = {p[2] for p in (l.split() for l in nm.stdout.splitlines()) if len(p) == 3 and p[1] in "tTwW"}
kept = sorted(ran & text)
if len(kept) < 500:
    sys.exit(f"link-order: only {len(kept)} functions seen: did the bench run? ({work}/bench.txt)")
with open(out, "w") as f:
    f.write("\n".join(kept) + "\n")
print(f"link-order: {len(kept)} functions written to {out}")
PY
