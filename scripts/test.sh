#!/usr/bin/env bash
# Runs the compiled node:test files of the named areas (packages) in one runner, so the
# output ends with one summary line. `all` means every package.
#   scripts/test.sh store common
set -euo pipefail
cd "$(dirname "$0")/.."

areas=("$@")
if [ ${#areas[@]} -eq 0 ] || [ "${areas[0]}" = all ]; then
  areas=()
  for d in packages/*/; do areas+=("$(basename "$d")"); done
fi

files=()
for a in "${areas[@]}"; do
  dir="packages/$a/dist"
  if [ ! -d "$dir" ]; then
    echo "test: no build output for $a (run npm run build)" >&2
    exit 2
  fi
  while IFS= read -r f; do files+=("$f"); done < <(find "$dir" -name '*.test.js' | sort)
done

if [ ${#files[@]} -eq 0 ]; then
  echo "test: no test files found for: ${areas[*]}" >&2
  exit 2
fi

# Two files at a time (ANODYNE_TEST_CONCURRENCY): every suite has its own tag, VM network and
# ports, so suites never share host objects. Files start in this order as a slot frees: the CA
# rotation suite first and the upgrade suite last — the two zero-downtime 3+3 suites must not
# overlap (side by side, one request in thousands waited more than 5 s) — the clusters suite next
# to the rotation, then the platform's lighter suites, then the backup and isolation suites (the
# run's heaviest disk writes, etcd restores, and its heaviest CPU, upstream's netpol e2e: beside the
# rotation, an etcd fsync stall once left one of its requests unanswered for 10 s, and a loaded run
# stretched it to 11 minutes), then clusters on LXD (a 1+1 on its own daemon, a 1+2 on its own 3-member LXD cluster), then the rest.
rank() {
  case "$1" in
    */rotation.test.js) echo 0 ;;
    */clusters.test.js) echo 1 ;;
    */upgrade.test.js) echo 9 ;;
    packages/platform/dist/backup.test.js | packages/platform/dist/isolation.test.js) echo 3 ;;
    packages/platform/dist/lxd.test.js) echo 4 ;;
    packages/platform/* | packages/cli/*) echo 2 ;;
    *) echo 5 ;;
  esac
}
ordered=()
while IFS= read -r line; do ordered+=("${line#* }"); done < <(for f in "${files[@]}"; do echo "$(rank "$f") $f"; done | sort -s -k1,1n)

# `node --test` would sort the files by path: scripts/run-tests.mjs keeps this order.
exec node scripts/run-tests.mjs "${ordered[@]}"
