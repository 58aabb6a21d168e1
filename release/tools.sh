#!/usr/bin/env bash
# Builds the tools that tests and the platform use but no Kubernetes release carries, into a cache
# directory outside the repository, keyed by the hash of their sources and the Go toolchain:
#
#   seaweedfs/go.mod   SeaweedFS, whose `weed server -s3` is the S3-compatible store of the backup tests
#
#   $ANODYNE_CACHE/tools/seaweedfs-<source hash>/weed
#
# A no-op when the directory for the current sources exists. Each tool is built in a temporary
# directory and published with one mv, so a reader never sees half of it. Builds run under
# `nice -n 19`: they must not disturb timing-sensitive tests on the same cores. Go build and module
# caches are kept between builds (GOCACHE, GOMODCACHE). The path of weed is the last line of the output.
set -euo pipefail
cd "$(dirname "$0")"

CACHE=${ANODYNE_CACHE:-/var/cache/anodyne}
export GOFLAGS=${GOFLAGS:-}
export CGO_ENABLED=0
export GOTOOLCHAIN=local

command -v go >/dev/null || { echo "tools: go is not installed" >&2; exit 1; }

SEAWEED_VERSION=$(awk '$1=="github.com/seaweedfs/seaweedfs" {print $2; exit}' seaweedfs/go.mod)
[ -n "$SEAWEED_VERSION" ] || { echo "tools: cannot read the SeaweedFS version from seaweedfs/go.mod" >&2; exit 1; }
SEAWEED_HASH=$( (cd seaweedfs && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 | sort -z | xargs -0 sha256sum; go version) | sha256sum | cut -c1-12)
OUT="$CACHE/tools/seaweedfs-$SEAWEED_HASH"

if [ ! -x "$OUT/weed" ]; then
  mkdir -p "$CACHE/tools"
  WORK=$(mktemp -d "$CACHE/tools/.build-XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  start=$(date +%s)
  echo "tools: building seaweedfs $SEAWEED_VERSION (cold: several minutes on 2 cores; warm: a relink)" >&2
  (cd seaweedfs && nice -n 19 go build -trimpath -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=${SEAWEED_VERSION##*-}" \
      -o "$WORK/weed" github.com/seaweedfs/seaweedfs/weed)
  chmod 0755 "$WORK"
  rm -rf "$OUT"
  mv "$WORK" "$OUT"
  trap - EXIT
  echo "tools: built seaweedfs-$SEAWEED_HASH in $(( $(date +%s) - start ))s ($(du -h "$OUT/weed" | cut -f1))" >&2
  # Older builds of other sources are not used again.
  find "$CACHE/tools" -mindepth 1 -maxdepth 1 -name 'seaweedfs-*' ! -name "seaweedfs-$SEAWEED_HASH" -exec rm -rf {} + 2>/dev/null || true
fi
echo "$OUT/weed"
