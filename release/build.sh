#!/usr/bin/env bash
# Builds Anodyne's releases into a cache directory outside the repository, one per Kubernetes
# version, side by side, keyed by version and the hash of every source:
#
#   kubernetes/go.mod         the newest Kubernetes (and etcd) the releases carry
#   kubernetes/go.<minor>.mod older ones, built from the same sources with `go build -modfile`
#
#   $ANODYNE_CACHE/releases/kubernetes-<k8s version>-<source hash>/
#     bin/kube                  multi-call binary: kube-apiserver, kube-controller-manager,
#                               kube-scheduler, kubelet, kube-proxy, kubectl, etcd, etcdctl, etcdutl
#     bin/<program> -> kube     one symlink per program
#     bin/helm                  helm v3 client
#     bin/coredns               cluster DNS (CoreDNS with selected plugins, no forwarding)
#     bin/flanneld              pod network across nodes (flannel: kube subnet manager, host-gw)
#     bin/network-policy        NetworkPolicy enforcement on workers (kube-router's network policy controller)
#     images/pause.tar          OCI archive: anodyne.local/pause
#     images/busybox.tar        OCI archive: anodyne.local/busybox (test workloads)
#     images/coredns.tar        OCI archive: anodyne.local/coredns (the cluster DNS add-on)
#     images/metrics-server.tar OCI archive: anodyne.local/metrics-server (resource metrics API add-on)
#     jobs.json                 the job catalog: the jobs' definitions (templates) clusters on this release render
#     agent/anodyne-agent       the Anodyne agent every VM of a cluster on this release starts
#                               (packages/agent/go: one static Go program)
#     manifest.json             component, version, file, sha256 of every file
#
#   $ANODYNE_CACHE/releases/index.json   the releases of the current sources, newest first
#   $ANODYNE_CACHE/releases/current      -> the newest
#
# A no-op for each release whose directory for the current sources is complete. The newest
# release's directory is the last line of the output. Go build and module caches are kept between builds
# (GOCACHE, GOMODCACHE), so a source change relinks in a minute or two; a change of the agent alone
# reuses the programs and images already built (hard links from $ANODYNE_CACHE/releases/.parts).
# Needs the TypeScript build (packages/clusters/dist, for the job catalog): `make release` runs it first.
set -euo pipefail
cd "$(dirname "$0")"
RELEASE_SRC=$(pwd)

CACHE=${ANODYNE_CACHE:-/var/cache/anodyne}
export GOFLAGS=${GOFLAGS:-}
export CGO_ENABLED=0
export GOTOOLCHAIN=local

command -v go >/dev/null || { echo "release: go is not installed" >&2; exit 1; }

COREDNS_VERSION=$(awk '$1=="require" && $2=="github.com/coredns/coredns" {print $3; exit} $1=="github.com/coredns/coredns" {print $2; exit}' coredns/go.mod)
HELM_VERSION=$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3; exit} $1=="helm.sh/helm/v3" {print $2; exit}' helm/go.mod)
FLANNEL_VERSION=$(awk '$1=="github.com/flannel-io/flannel" {print $2; exit}' flannel/go.mod)
METRICS_VERSION=$(awk '$1=="sigs.k8s.io/metrics-server" {print $2; exit}' metrics-server/go.mod)
NETPOL_VERSION=$(awk '$1=="require" && $2=="github.com/cloudnativelabs/kube-router/v2" {print $3; exit} $1=="github.com/cloudnativelabs/kube-router/v2" {print $2; exit}' network-policy/go.mod)
[ -n "$HELM_VERSION" ] && [ -n "$COREDNS_VERSION" ] && [ -n "$FLANNEL_VERSION" ] && [ -n "$METRICS_VERSION" ] && [ -n "$NETPOL_VERSION" ] || { echo "release: cannot read versions from go.mod files" >&2; exit 1; }
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || { echo "release: $BUSYBOX missing (Debian package busybox-static; run scripts/install-deps.sh)" >&2; exit 1; }
BUSYBOX_VERSION=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)

BB_TAG=$(echo "$BUSYBOX_VERSION" | sed -E 's/^[0-9]+://; s/-.*//')

# The agent: a static Go program (packages/agent/go, standard library only), reproducible from its sources.
REPO=$(cd .. && pwd)
[ -f "$REPO/packages/clusters/dist/jobs.js" ] || {
  echo "release: the job catalog is not built (run make build: npm dependencies and packages/clusters/dist)" >&2
  exit 1
}
AGENT_TMP=$(mktemp -d)
trap 'rm -rf "$AGENT_TMP"' EXIT
"$REPO/packages/agent/build.sh" "$AGENT_TMP/anodyne-agent"
AGENT_SHA=$(sha256sum "$AGENT_TMP/anodyne-agent" | cut -d' ' -f1)
# The job catalog: the release's jobs (templates of their files, processes and scripts) as this source defines
# them, so a cluster on this release keeps rendering them after the platform's code moves on.
node --input-type=module -e 'const m = await import(process.argv[1]); process.stdout.write(JSON.stringify(m.KUBERNETES_JOBS, null, 1));' \
  "$REPO/packages/clusters/dist/jobs.js" > "$AGENT_TMP/jobs.json"
JOBS_SHA=$(sha256sum "$AGENT_TMP/jobs.json" | cut -d' ' -f1)

# The programs' key covers their inputs: our Go sources and scripts, the Go toolchain, and the busybox
# we pack; the release's key adds the agent and the job catalog.
# (only what a release is built from: other tools beside it, such as release/seaweedfs, are not part of it)
SRC_HASH=$( (find build.sh kubernetes helm coredns flannel metrics-server network-policy images -type f \( -name '*.go' -o -name 'go.*mod' -o -name 'go.*sum' -o -name '*.sh' \) -print0 | sort -z | xargs -0 sha256sum; go version; echo "$BUSYBOX_VERSION") | sha256sum | cut -c1-12)
RELEASE_HASH=$(echo "$SRC_HASH $AGENT_SHA $JOBS_SHA" | sha256sum | cut -c1-12)
# One release: the Kubernetes version of one go.mod file, with everything else built alongside.
build_release() {
  MODFILE=$1
  K8S_VERSION=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "kubernetes/$MODFILE")
  ETCD_VERSION=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2; exit}' "kubernetes/$MODFILE")
  [ -n "$K8S_VERSION" ] && [ -n "$ETCD_VERSION" ] || { echo "release: cannot read versions from kubernetes/$MODFILE" >&2; exit 1; }
  KEY="kubernetes-${K8S_VERSION}-${RELEASE_HASH}"
  OUT="$CACHE/releases/$KEY"

  if [ -f "$OUT/manifest.json" ]; then
    echo "release: $KEY is current"
    BUILT+=("$KEY")
    return 0
  fi

  mkdir -p "$CACHE/releases"
  WORK=$(mktemp -d "$CACHE/releases/.build-XXXXXX")
  chmod 0755 "$WORK"
  trap 'rm -rf "$WORK" "$AGENT_TMP"' EXIT
  start=$(date +%s)
  PARTS="$CACHE/releases/.parts/${K8S_VERSION}-${SRC_HASH}"
  if [ -f "$PARTS/complete" ]; then
    echo "release: $K8S_VERSION programs and images of these sources are built; adding the agent"
    cp -al "$PARTS/bin" "$PARTS/images" "$WORK/"
  else
    build_programs
    rm -rf "$PARTS"
    mkdir -p "$PARTS"
    cp -al "$WORK/bin" "$WORK/images" "$PARTS/"
    touch "$PARTS/complete"
  fi
  mkdir -p "$WORK/agent"
  install -m 0755 "$AGENT_TMP/anodyne-agent" "$WORK/agent/anodyne-agent"
  install -m 0644 "$AGENT_TMP/jobs.json" "$WORK/jobs.json"
  write_manifest
  rm -rf "$WORK/rootfs" "$WORK/tools"
  mv "$WORK/manifest.json.tmp" "$WORK/manifest.json"

  # Publish atomically; an interrupted build leaves only a .build-* directory, removed on exit.
  rm -rf "$OUT"
  mv "$WORK" "$OUT"
  trap 'rm -rf "$AGENT_TMP"' EXIT
  echo "release: built $KEY in $(( $(date +%s) - start ))s"
  BUILT+=("$KEY")
}

# Kubernetes, etcd and the add-ons of one release, and their images, into $WORK.
build_programs() {
  mkdir -p "$WORK/bin" "$WORK/images"

  K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
  LDFLAGS="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  echo "release: building kubernetes $K8S_VERSION + etcd $ETCD_VERSION (cold: tens of minutes on 2 cores; warm: a relink)"
  (cd kubernetes && go build -modfile="$MODFILE" -tags "kube_minor_$K8S_MINOR" -trimpath -ldflags "$LDFLAGS" -o "$WORK/bin/kube" .)
  for p in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd etcdctl etcdutl; do
    ln -s kube "$WORK/bin/$p"
  done

  echo "release: building helm $HELM_VERSION"
  (cd helm && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" -o "$WORK/bin/helm" helm.sh/helm/v3/cmd/helm)

  echo "release: building coredns $COREDNS_VERSION"
  (cd coredns && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$WORK/bin/coredns" .)

  echo "release: building flanneld $FLANNEL_VERSION"
  (cd flannel && go build -trimpath -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" -o "$WORK/bin/flanneld" .)

  echo "release: building network-policy (kube-router $NETPOL_VERSION network policy controller)"
  (cd network-policy && go build -trimpath -ldflags "-s -w -X main.version=$NETPOL_VERSION" -o "$WORK/bin/network-policy" .)

  echo "release: building metrics-server $METRICS_VERSION"
  (cd metrics-server && go build -trimpath -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_VERSION -X k8s.io/client-go/pkg/version.gitTreeState=clean" -o "$WORK/tools/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)

  echo "release: building images"
  (cd images && go build -trimpath -ldflags "-s -w" -o "$WORK/tools/pause" ./pause && go build -trimpath -o "$WORK/tools/ocipack" ./ocipack)

  # pause: the pod sandbox image.
  mkdir -p "$WORK/rootfs/pause"
  cp "$WORK/tools/pause" "$WORK/rootfs/pause/pause"
  "$WORK/tools/ocipack" -name anodyne.local/pause:1.0 -rootfs "$WORK/rootfs/pause" -entrypoint /pause -out "$WORK/images/pause.tar"

  # busybox: test workloads (httpd, sh, wget, nslookup).
  BB="$WORK/rootfs/busybox"
  mkdir -p "$BB/bin" "$BB/etc" "$BB/tmp" "$BB/www" "$BB/root"
  chmod 1777 "$BB/tmp"
  cp "$BUSYBOX" "$BB/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$BB/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$BB/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$BB/etc/group"
  echo 'hello from anodyne busybox' > "$BB/www/index.html"
  "$WORK/tools/ocipack" -name "anodyne.local/busybox:$BB_TAG" -rootfs "$BB" \
    -cmd httpd -cmd -f -cmd -p -cmd 8080 -cmd -h -cmd /www -out "$WORK/images/busybox.tar"

  # coredns: the cluster DNS add-on (a static binary is the whole image).
  mkdir -p "$WORK/rootfs/coredns/etc"
  cp "$WORK/bin/coredns" "$WORK/rootfs/coredns/coredns"
  printf 'root:x:0:0:root:/:/coredns\n' > "$WORK/rootfs/coredns/etc/passwd"
  "$WORK/tools/ocipack" -name "anodyne.local/coredns:${COREDNS_VERSION#v}" -rootfs "$WORK/rootfs/coredns" -entrypoint /coredns -out "$WORK/images/coredns.tar"

  # metrics-server: the resource metrics API add-on (static binary; it runs as a non-root user).
  mkdir -p "$WORK/rootfs/metrics-server/etc" "$WORK/rootfs/metrics-server/tmp"
  chmod 1777 "$WORK/rootfs/metrics-server/tmp"
  cp "$WORK/tools/metrics-server" "$WORK/rootfs/metrics-server/metrics-server"
  printf 'root:x:0:0:root:/:/metrics-server\nmetrics:x:1000:1000:metrics:/:/metrics-server\n' > "$WORK/rootfs/metrics-server/etc/passwd"
  "$WORK/tools/ocipack" -name "anodyne.local/metrics-server:${METRICS_VERSION#v}" -rootfs "$WORK/rootfs/metrics-server" -entrypoint /metrics-server -out "$WORK/images/metrics-server.tar"
}

# The manifest: every file with its component, version and sha256.
write_manifest() {

  {
    echo '{'
    echo "  \"release\": \"$KEY\","
    echo "  \"kubernetes\": \"$K8S_VERSION\","
    echo "  \"etcd\": \"$ETCD_VERSION\","
    echo "  \"helm\": \"$HELM_VERSION\","
    echo "  \"coredns\": \"$COREDNS_VERSION\","
    echo "  \"flannel\": \"$FLANNEL_VERSION\","
    echo "  \"metrics_server\": \"$METRICS_VERSION\","
    echo "  \"network_policy\": \"kube-router $NETPOL_VERSION\","
    echo "  \"images\": {\"pause\": \"anodyne.local/pause:1.0\", \"busybox\": \"anodyne.local/busybox:$BB_TAG\", \"coredns\": \"anodyne.local/coredns:${COREDNS_VERSION#v}\", \"metrics-server\": \"anodyne.local/metrics-server:${METRICS_VERSION#v}\"},"
    echo '  "files": ['
    first=1
    emit() { # component version file
      local sum; sum=$(sha256sum "$WORK/$3" | cut -d' ' -f1)
      [ $first -eq 1 ] || echo ','
      first=0
      printf '    {"component": "%s", "version": "%s", "file": "%s", "sha256": "%s"}' "$1" "$2" "$3" "$sum"
    }
    emit kubernetes "$K8S_VERSION" bin/kube
    emit helm "$HELM_VERSION" bin/helm
    emit coredns "$COREDNS_VERSION" bin/coredns
    emit coredns "$COREDNS_VERSION" images/coredns.tar
    emit flannel "$FLANNEL_VERSION" bin/flanneld
    emit network-policy "$NETPOL_VERSION" bin/network-policy
    emit metrics-server "$METRICS_VERSION" images/metrics-server.tar
    emit pause 1.0 images/pause.tar
    emit busybox "$BB_TAG" images/busybox.tar
    emit anodyne-agent "${AGENT_SHA:0:12}" agent/anodyne-agent
    emit anodyne-jobs "${JOBS_SHA:0:12}" jobs.json
    echo
    echo '  ],'
    echo "  \"debian\": {"
    n=0
    for p in containerd runc containernetworking-plugins haproxy iptables ipset tini busybox-static; do
      v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo missing)
      [ $n -eq 0 ] || echo ','
      n=1
      printf '    "%s": "%s"' "$p" "$v"
    done
    echo
    echo '  },'
    echo "  \"built_in_seconds\": $(( $(date +%s) - start ))"
    echo '}'
  } > "$WORK/manifest.json.tmp"
}

BUILT=()
for modfile in $(cd kubernetes && ls go.mod go.*.mod 2>/dev/null); do
  build_release "$modfile"
done
# Programs built from other sources are not reused again (the releases keep their own links).
find "$CACHE/releases/.parts" -mindepth 1 -maxdepth 1 ! -name "*-$SRC_HASH" -exec rm -rf {} + 2>/dev/null || true
# Releases of earlier sources stay for clusters that may run them, up to the three newest per version.
for v in $(printf '%s\n' "${BUILT[@]}" | sed -E 's/^kubernetes-(v[^-]+)-.*/\1/' | sort -u); do
  ls -dt "$CACHE/releases/kubernetes-$v-"* 2>/dev/null | tail -n +4 | while read -r old; do
    case " ${BUILT[*]} " in *" $(basename "$old") "*) ;; *) rm -rf "$old" ;; esac
  done
done
# The index of the releases for these sources, newest Kubernetes first; `current` is the newest.
mapfile -t SORTED < <(printf '%s\n' "${BUILT[@]}" | sort -t- -k2,2Vr)
{
  echo '{'
  echo "  \"releases\": [$(printf '"%s",' "${SORTED[@]}" | sed 's/,$//')]"
  echo '}'
} > "$CACHE/releases/index.json.tmp"
mv "$CACHE/releases/index.json.tmp" "$CACHE/releases/index.json"
ln -sfn "${SORTED[0]}" "$CACHE/releases/current"
echo "$CACHE/releases/${SORTED[0]}"
