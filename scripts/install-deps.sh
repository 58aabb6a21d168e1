#!/usr/bin/env bash
# Installs the Debian packages Anodyne needs, only those that are missing.
# Services that Debian would start on install are kept stopped (policy-rc.d):
# Anodyne and its tests start their own instances with their own data directories.
set -euo pipefail

PACKAGES=(
  # store: PostgreSQL server for the HA store and its tests
  postgresql
  # local provider: namespaces, networking, firewall, load balancers, node init
  iproute2 iptables util-linux haproxy tini busybox-static
  # container runtime inside each node VM
  containerd runc containernetworking-plugins
  # NetworkPolicy enforcement on workers (kube-router's controller drives ipset)
  ipset
  # identity: LDAP user store option and its tests
  slapd ldap-utils
  # certificates and their verification in tests
  openssl ca-certificates
  # native npm modules (better-sqlite3) build from source when no prebuilt binary can be fetched
  python3 make g++
  # terminal UI tests for the CLI
  tmux
  # the web console's browser tests (Playwright drives Debian's Chromium, headless) and a font for its pages
  chromium fonts-dejavu-core
  # the platform's image registry (CNCF Distribution) and a second client for its tests
  docker-registry skopeo
  # the LXD provider and its tests (a private daemon; dnsmasq-base for its managed bridges)
  lxd dnsmasq-base
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages (${missing[*]}) and not root; install them or run as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt_install() {
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"
}
if ! apt_install >/tmp/anodyne-apt.log 2>&1; then
  # The package lists may be absent or stale on a fresh machine.
  apt-get update -q >>/tmp/anodyne-apt.log 2>&1
  apt_install >>/tmp/anodyne-apt.log 2>&1 || { tail -30 /tmp/anodyne-apt.log >&2; exit 1; }
fi
echo "install-deps: done"
