#!/usr/bin/env bash
# Builds the tools that tests and the platform use but no Kubernetes release carries, into a cache
# directory outside the repository, keyed by the hash of their sources and the Go toolchain:
#
#   seaweedfs/go.mod    SeaweedFS, whose `weed server -s3` is the S3-compatible store of the backup tests
#                       $ANODYNE_CACHE/tools/seaweedfs-<source hash>/weed
#   netpol-e2e/go.mod   upstream Kubernetes' NetworkPolicy e2e suite (test/e2e/network/netpol) and the
#                       image its pods run, for the isolation tests
#                       $ANODYNE_CACHE/tools/netpol-e2e-<source hash>/e2e.test
#                       $ANODYNE_CACHE/tools/netpol-e2e-<source hash>/ginkgo        (runs it in parallel)
#                       $ANODYNE_CACHE/tools/netpol-e2e-<source hash>/agnhost.tar   (OCI archive)
#                       $ANODYNE_CACHE/tools/netpol-e2e-<source hash>/repo-list.yaml (KUBE_TEST_REPO_LIST)
#
#   release/tools.sh [seaweedfs|netpol-e2e]   builds the one named (seaweedfs when none is) and prints
#                                             weed's path, or the netpol-e2e directory, as the last line
#
# A no-op when the directory for the current sources exists. Each tool is built in a temporary
# directory and published with one mv, so a reader never sees half of it. Builds run under
# `nice -n 19`: they must not disturb timing-sensitive tests on the same cores. Go build and module
# caches are kept between builds (GOCACHE, GOMODCACHE).
set -euo pipefail
cd "$(dirname "$0")"

CACHE=${ANODYNE_CACHE:-/var/cache/anodyne}
export GOFLAGS=${GOFLAGS:-}
export CGO_ENABLED=0
export GOTOOLCHAIN=local

command -v go >/dev/null || { echo "tools: go is not installed" >&2; exit 1; }

TOOL=${1:-seaweedfs}

# A temporary $WORK to build in (removed if the build fails), and the build's start time.
begin_build() {
  mkdir -p "$CACHE/tools"
  WORK=$(mktemp -d "$CACHE/tools/.build-XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  start=$(date +%s)
}

# Publishes $WORK as $OUT and removes older builds of the same tool.
publish() { # name
  chmod 0755 "$WORK"
  rm -rf "$OUT"
  mv "$WORK" "$OUT"
  trap - EXIT
  find "$CACHE/tools" -mindepth 1 -maxdepth 1 -name "$1-*" ! -name "$(basename "$OUT")" -exec rm -rf {} + 2>/dev/null || true
}

seaweedfs() {
  SEAWEED_VERSION=$(awk '$1=="github.com/seaweedfs/seaweedfs" {print $2; exit}' seaweedfs/go.mod)
  [ -n "$SEAWEED_VERSION" ] || { echo "tools: cannot read the SeaweedFS version from seaweedfs/go.mod" >&2; exit 1; }
  SEAWEED_HASH=$( (cd seaweedfs && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 | sort -z | xargs -0 sha256sum; go version) | sha256sum | cut -c1-12)
  OUT="$CACHE/tools/seaweedfs-$SEAWEED_HASH"
  if [ ! -x "$OUT/weed" ]; then
    begin_build
    echo "tools: building seaweedfs $SEAWEED_VERSION (cold: several minutes on 2 cores; warm: a relink)" >&2
    (cd seaweedfs && nice -n 19 go build -trimpath -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=${SEAWEED_VERSION##*-}" \
        -o "$WORK/weed" github.com/seaweedfs/seaweedfs/weed)
    publish seaweedfs
    echo "tools: built seaweedfs-$SEAWEED_HASH in $(( $(date +%s) - start ))s ($(du -h "$OUT/weed" | cut -f1))" >&2
  fi
  echo "$OUT/weed"
}

# The NetworkPolicy e2e suite: a `go test -c` of netpol-e2e (upstream's netpol specs and nothing else of
# test/e2e), agnhost packed as the image the suite asks for, and the repo list that points the suite at it.
netpol_e2e() {
  K8S_VERSION=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' netpol-e2e/go.mod)
  [ -n "$K8S_VERSION" ] || { echo "tools: cannot read the Kubernetes version from netpol-e2e/go.mod" >&2; exit 1; }
  AGNHOST_TAG=$(awk -F'"' '/configs\[Agnhost\] = Config/ {print $4; exit}' "$(cd netpol-e2e && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/utils/image/manifest.go")
  [ -n "$AGNHOST_TAG" ] || { echo "tools: cannot read agnhost's tag from k8s.io/kubernetes $K8S_VERSION" >&2; exit 1; }
  E2E_HASH=$( (find netpol-e2e images -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 | sort -z | xargs -0 sha256sum; go version) | sha256sum | cut -c1-12)
  OUT="$CACHE/tools/netpol-e2e-$E2E_HASH"
  if [ ! -f "$OUT/repo-list.yaml" ]; then
    begin_build
    echo "tools: building the NetworkPolicy e2e suite of kubernetes $K8S_VERSION (cold: many minutes on 2 cores; warm: a few)" >&2
    (cd netpol-e2e && nice -n 19 go test -c -trimpath -ldflags "-s -w" -o "$WORK/e2e.test" .)
    mkdir -p "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
    chmod 1777 "$WORK/rootfs/tmp"
    (cd netpol-e2e && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$WORK/rootfs/agnhost" k8s.io/kubernetes/test/images/agnhost)
    (cd netpol-e2e && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$WORK/ginkgo" github.com/onsi/ginkgo/v2/ginkgo)
    (cd images && nice -n 19 go build -trimpath -o "$WORK/ocipack" ./ocipack)
    printf 'root:x:0:0:root:/:/agnhost\nnobody:x:65534:65534:nobody:/:/agnhost\n' > "$WORK/rootfs/etc/passwd"
    "$WORK/ocipack" -name "anodyne.local/agnhost:$AGNHOST_TAG" -rootfs "$WORK/rootfs" -entrypoint /agnhost -cmd pause -out "$WORK/agnhost.tar"
    rm -rf "$WORK/rootfs" "$WORK/ocipack"
    printf 'promoterE2eRegistry: anodyne.local\n' > "$WORK/repo-list.yaml"
    publish netpol-e2e
    echo "tools: built netpol-e2e-$E2E_HASH in $(( $(date +%s) - start ))s ($(du -h "$OUT/e2e.test" | cut -f1) suite)" >&2
  fi
  echo "$OUT"
}

case "$TOOL" in
  seaweedfs) seaweedfs ;;
  netpol-e2e) netpol_e2e ;;
  *) echo "tools: unknown tool '$TOOL' (seaweedfs or netpol-e2e)" >&2; exit 2 ;;
esac
