#!/usr/bin/env bash
# `make up`: after deps, npm, release and build, bring the platform up with embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
release=$(release/build.sh | tail -1)
exec node scripts/up.mjs "$release"
