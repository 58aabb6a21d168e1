#!/bin/sh
# Builds the agent (the Go program under go/: standard library only) into the file named by $1
# (default: dist/anodyne-agent beside this script). Static and reproducible: the same sources and Go
# toolchain give the same bytes, so release/build.sh can key releases on the binary's sha256.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/dist/anodyne-agent}
case "$out" in /*) ;; *) out=$(pwd)/$out ;; esac
mkdir -p "$(dirname "$out")"
cd "$here/go"
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o "$out.tmp" .
mv "$out.tmp" "$out"
