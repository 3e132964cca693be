#!/usr/bin/env bash
# Builds the node's container runtime into bin/ (the node suite's kubelet,
# kube-scheduler and kube-proxy come from tests/controlplane):
#   containerd, containerd-shim-runc-v2, ctr   github.com/containerd/containerd/v2
#   bin/cni/{loopback,bridge,host-local}         github.com/containernetworking/plugins
#   bin/pause-oci.tar   the sandbox ("pause") image, built from pause.c in the
#                       pinned k8s.io/kubernetes module, as an oci-archive
# runc, iptables and conntrack come from Debian (installed when missing):
# crun cannot run containers on this machine's cgroup v1 hybrid hierarchy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../bin}
mkdir -p "$out/cni"
out=$(cd "$out" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

say() { printf '== node build: %s\n' "$*" >&2; }

missing=()
for tool in runc iptables conntrack umoci gcc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "node build: needs the Debian packages ${missing[*]}, and root to install them" >&2; exit 1; }
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$here"
build() {
  local path=$1 target=$2 start=$SECONDS
  say "building ${path#"$out/"}..."
  go build -trimpath -ldflags "-s -w" -o "$path" "$target"
  say "built ${path} in $((SECONDS - start))s"
}
containerd=github.com/containerd/containerd/v2
plugins=github.com/containernetworking/plugins
build "$out/containerd" "$containerd/cmd/containerd"
build "$out/containerd-shim-runc-v2" "$containerd/cmd/containerd-shim-runc-v2"
build "$out/ctr" "$containerd/cmd/ctr"
for plugin in main/loopback main/bridge ipam/host-local; do
  build "$out/cni/${plugin#*/}" "$plugins/plugins/$plugin"
done

# ---- the pause image ----------------------------------------------------------
kubernetes_dir=$(cd "$here/../controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
pause_source="$kubernetes_dir/build/pause/linux/pause.c"
[ -f "$pause_source" ] || { echo "node build: no $pause_source" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:pause"
umoci unpack --image "$layout:pause" "$work/bundle"
gcc -Os -static -DVERSION=keymint-node -o "$work/bundle/rootfs/pause" "$pause_source"
strip "$work/bundle/rootfs/pause"
umoci repack --image "$layout:pause" "$work/bundle"
umoci config --image "$layout:pause" --no-history --config.user 65535:65535 --config.entrypoint /pause
umoci gc --layout "$layout"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out/pause-oci.tar" .
say "built $out/pause-oci.tar"
