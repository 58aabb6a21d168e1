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

# One file at a time: suites start real servers, namespaces and clusters that must not race.
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
