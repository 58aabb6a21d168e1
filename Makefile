# Anodyne: the two commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export ANODYNE_CACHE ?= /var/cache/anodyne
NPM_STAMP := node_modules/.anodyne-installed

.PHONY: help up test deps npm release build lint typecheck bench clean-env

help:
	@echo "make up     install what is missing, build, start the platform"
	@echo "make test   install what is missing, build, lint and run every test"
	@echo "make release  build the Kubernetes release into \$$ANODYNE_CACHE (prints its directory last)"
	@echo "make bench   run bench/ and write docs/benchmarks.md (needs root; several minutes)"

## Debian packages (only the missing ones)
deps:
	@scripts/install-deps.sh

## npm dependencies, installed from package-lock.json when it or a package.json changes
## (npm install, not npm ci: npm ci rejects this lock over optional bindings of other platforms)
$(NPM_STAMP): package-lock.json package.json $(wildcard packages/*/package.json)
	@echo "npm: installing dependencies"
	@npm install --no-audit --no-fund --loglevel=error
	@touch $@

npm: deps $(NPM_STAMP)

release: deps npm build
	@release/build.sh

build: npm
	@npx tsc --build
	@packages/agent/build.sh
	@node packages/console/build.mjs

typecheck: npm
	@npx tsc --build

lint: build
	@npx eslint .
	@test -z "$$(gofmt -l packages/agent/go)" || { echo "gofmt: $$(gofmt -l packages/agent/go)" >&2; exit 1; }
	@cd packages/agent/go && GOTOOLCHAIN=local go vet ./...
	@npx prettier --check --log-level warn .

up: deps npm build
	@scripts/up.sh

bench: deps npm build
	@release_dir=$$(release/build.sh | tail -1); \
	ANODYNE_RELEASE_DIR="$$release_dir" node --expose-gc bench/run.mjs

## Test and platform tools that no Kubernetes release carries (SeaweedFS for the backup tests, upstream's
## NetworkPolicy e2e suite for the isolation tests); prints weed's path and the suite's directory last
.PHONY: tools
tools: deps
	@release/tools.sh seaweedfs
	@release/tools.sh netpol-e2e

test: deps npm build lint
	@release_dir=$$(release/build.sh | tee /dev/stderr | tail -1); \
	weed=$$(release/tools.sh seaweedfs | tail -1); \
	netpol_e2e=$$(release/tools.sh netpol-e2e | tail -1); \
	ANODYNE_RELEASE_DIR="$$release_dir" ANODYNE_SEAWEEDFS="$$weed" ANODYNE_NETPOL_E2E="$$netpol_e2e" scripts/test.sh all
