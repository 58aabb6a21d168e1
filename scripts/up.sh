#!/usr/bin/env bash
# `make up`: after deps, npm and build, build (or reuse) the release and start the platform in
# the foreground with its embedded defaults: SQLite and keys under /var/lib/anodyne, the local
# provider, the built-in identity. It prints the API URL, the CA file, the first admin's
# password (first start only) and how to create a cluster. Ctrl-C stops the API; clusters keep
# running and the next start picks them up.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "make up: the local provider needs root (namespaces, cgroups, iptables)" >&2; exit 1; }
release=$(release/build.sh | tail -1)
export ANODYNE_RELEASE_DIR="$release"
exec bin/anodyne server ${ANODYNE_CONFIG_FILE:+--config "$ANODYNE_CONFIG_FILE"}
