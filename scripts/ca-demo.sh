#!/usr/bin/env bash
# The embedded-CA demo: a root for warden.local, SVIDs for two agents in two namespaces,
# each checked by Warden's SPIFFE rules and by openssl, then a mutual-TLS handshake between
# them with openssl, and a certificate from a foreign CA refused by name.
# (This becomes `warden up` with the cross-namespace example once the local mesh lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p warden-cli
warden() { target/debug/warden "$@"; }
state=$(mktemp -d -t warden-demo.XXXXXX)
trap 'rm -rf "$state"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "create the embedded CA (trust domain warden.local)"
warden ca init --dir "$state/ca"
ls -l "$state/ca"

step "issue SVIDs for an orchestrator in team-alpha and a specialist in team-beta"
warden ca issue --dir "$state/ca" --id spiffe://warden.local/ns/team-alpha/sa/orchestrator --out "$state/orchestrator" --ttl 1h
warden ca issue --dir "$state/ca" --id spiffe://warden.local/ns/team-beta/sa/specialist --out "$state/specialist" --ttl 1h

step "inspect the orchestrator's SVID against the trust bundle"
warden ca inspect "$state/orchestrator/svid.pem" --bundle "$state/orchestrator/svid_bundle.pem"

step "openssl agrees"
openssl verify -CAfile "$state/ca/ca.pem" "$state/orchestrator/svid.pem" "$state/specialist/svid.pem"

step "mutual TLS between the two agents' SVIDs (openssl s_server / s_client on 127.0.0.1)"
port=$((20000 + RANDOM % 20000))
openssl s_server -quiet -accept "127.0.0.1:$port" -naccept 1 -Verify 1 -verify_return_error \
  -cert "$state/specialist/svid.pem" -key "$state/specialist/svid_key.pem" \
  -CAfile "$state/ca/ca.pem" </dev/null >"$state/s_server.log" 2>&1 &
server=$!
sleep 0.5
echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -verify_return_error \
  -cert "$state/orchestrator/svid.pem" -key "$state/orchestrator/svid_key.pem" \
  -CAfile "$state/ca/ca.pem" 2>&1 | grep -E "^(subject|Verification|Verify return code)" || true
wait "$server" || true

step "a certificate from another CA is refused, with the rule named"
warden ca init --dir "$state/rogue-ca" --trust-domain warden.local >/dev/null
warden ca issue --dir "$state/rogue-ca" --id spiffe://warden.local/ns/team-alpha/sa/orchestrator --out "$state/rogue" >/dev/null
if warden ca inspect "$state/rogue/svid.pem" --bundle "$state/ca/ca.pem" | tail -n 1; then
  echo "unexpected: the rogue SVID was accepted" >&2
  exit 1
fi

step "done: serve these identities over the SPIFFE Workload API with"
echo "  warden ca serve --dir <ca-dir> --socket /tmp/agent.sock --id spiffe://warden.local/ns/team-alpha/sa/orchestrator"
