#!/usr/bin/env bash
# Builds the control plane and node binaries declared as `tool`s in go.mod into bin/
# (static, trimmed, stamped with the real Kubernetes version so `kubectl
# version` and Helm's kubeVersion checks see e.g. v1.37.2, not v0.0.0-master).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$here"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

version=$(cat KUBERNETES_VERSION)
minor=$(echo "$version" | cut -d. -f2)
pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"

build() {
  local name=$1 target=$2 start=$SECONDS
  echo "building ${name} (${version})..."
  go build -trimpath -ldflags "$ldflags" -o "$out/$name" "$target"
  echo "built ${out}/${name} in $((SECONDS - start))s"
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
# The node's Kubernetes parts (the node suite; `make run` needs none of them).
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubelet k8s.io/kubernetes/cmd/kubelet
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy
