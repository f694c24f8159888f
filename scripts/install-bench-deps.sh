#!/usr/bin/env bash
# Installs the third-party proxies `warden-bench` compares Warden with, from Debian:
#   nginx   (package nginx-light)  the nginx-mtls and nginx-mesh rows
#   haproxy (package haproxy)      the haproxy-mtls and haproxy-mesh rows
# Idempotent: installs only what is missing (apt-get update once, only then), and prints the
# versions in use. Not part of CI (scripts/test.sh): the bench is run by hand.
# Usage: scripts/install-bench-deps.sh
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install-bench-deps: installing ${missing[*]} from Debian"
  $sudo apt-get update -qq
  # The packages' own services are not wanted: the bench starts its own instances on loopback.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts the packaged services on port 80 (where there is an init system); stop them.
  for svc in nginx haproxy; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi

echo "install-bench-deps: nginx:   $(nginx -v 2>&1 | sed 's/^nginx version: //') ($(command -v nginx))"
echo "install-bench-deps: haproxy: $(haproxy -v 2>&1 | head -1) ($(command -v haproxy))"
