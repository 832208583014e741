# tierscale — the two commands that matter are `make demo` and `make test` (see README.md).
# Every target installs what it needs on a fresh machine; slow builds are cached under
# $(TIERSCALE_CACHE) (default ~/.cache/tierscale) so a second run builds nothing.

SHELL := /bin/bash
export TIERSCALE_CACHE ?= $(HOME)/.cache/tierscale
PYTHON = $(shell hack/venv.sh all)

.PHONY: help deps venv tools cluster-up cluster-down test test-unit

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## Debian packages: Prometheus (apt-get update first)
	hack/install-deps.sh

venv: ## the Python environment (in the cache), with this checkout installed
	@hack/venv.sh all

tools: ## build the control plane, etcd, kwok and helm from Go modules (cached by version)
	hack/build-tools.sh

cluster-up: deps tools ## start the local cluster; prints the kubeconfig path last
	@$(PYTHON) -m tierscale_localcluster up

cluster-down: ## stop the local cluster and every process it started
	@$(PYTHON) -m tierscale_localcluster down

test: deps tools ## all tests (unit, server, and on the real local cluster)
	$(PYTHON) -m pytest -ra

test-unit: ## only the tests that need no cluster
	$(PYTHON) -m pytest -ra -m "not cluster"

# Component targets (model server, causal adjustment, policy) live beside each other here.
include $(wildcard hack/make/*.mk)

DEMO_MINUTES ?= 10
.PHONY: demo
demo: deps tools ## the main job: the operator on the local cluster under MovieLens load (DEMO_MINUTES=10)
	$(PYTHON) -m tierscale_server train
	$(PYTHON) -m tierscale_demo --minutes $(DEMO_MINUTES)
