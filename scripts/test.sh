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
# ports, so suites never share host objects. Files start in this order as a slot frees
# (scripts/run-tests.mjs; `node --test` itself would sort them by path). The two zero-downtime 3+3
# suites must not run beside anything that starts VMs: the CA rotation first, beside the unit suites
# and the platform suites that start none; every suite that creates clusters waits while the rotation
# holds the host (holdQuietHost / awaitQuietHost, docs/adr/0001), so an early free slot idles. Then the
# platform suites that make clusters, the clusters suite, the backup and isolation suites (the heaviest
# disk writes and CPU), the LXD suites, and the upgrade last (it holds the host too).
rank() {
  case "$1" in
    packages/platform/dist/rotation.test.js) echo 0 ;;
    packages/platform/dist/upgrade.test.js) echo 9 ;;
    packages/platform/dist/faults.test.js | packages/platform/dist/fuzz.test.js | packages/platform/dist/contract.test.js) echo 2 ;;
    packages/platform/dist/renewal.test.js | packages/platform/dist/recorder-route.test.js) echo 2 ;;
    packages/clusters/dist/clusters.test.js) echo 4 ;;
    packages/platform/dist/backup.test.js | packages/platform/dist/isolation.test.js) echo 5 ;;
    packages/platform/dist/lxd.test.js | packages/providers/dist/lxd/*) echo 6 ;;
    packages/platform/* | packages/cli/*) echo 3 ;;
    *) echo 1 ;;
  esac
}
ordered=()
while IFS= read -r line; do ordered+=("${line#* }"); done < <(for f in "${files[@]}"; do echo "$(rank "$f") $f"; done | sort -s -k1,1n)

# `node --test` would sort the files by path: scripts/run-tests.mjs keeps this order.
exec node scripts/run-tests.mjs "${ordered[@]}"
