#!/usr/bin/env bash
# Builds Argo CD for keymint's Argo CD suite (tests/node_suite/argocd.rs):
#   bin/argocd             the multi-call binary (ARGOCD_BINARY_NAME selects
#                          argocd-server, argocd-repo-server,
#                          argocd-application-controller; plain: the CLI)
#   bin/argocd-hack/       git-verify-wrapper.sh and gpg-wrapper.sh, which
#                          the repo-server runs from PATH on every generation
#   bin/argocd-crds/       Application, AppProject, ApplicationSet CRDs
# from github.com/argoproj/argo-cd/v3 at the version pinned in go.mod.
# Argo CD 3.6 needs Go >= 1.27: the toolchain comes from the module proxy
# (this machine's Go says GOTOOLCHAIN=local). redis-server and socat come
# from Debian (installed when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export GOTOOLCHAIN=go1.27.3 CGO_ENABLED=0 GOFLAGS=-mod=mod

say() { printf '== argocd build: %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v socat >/dev/null || missing+=(socat)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "argocd build: needs the Debian packages ${missing[*]}, and root to install them" >&2; exit 1; }
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$here"
go mod download github.com/argoproj/argo-cd/v3
module_dir=$(go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
version=$(cat "$module_dir/VERSION")
start=$SECONDS
say "building argocd $version (5 to 10 minutes cold on 2 cores)..."
go build -trimpath -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=$version" \
  -o "$out/argocd" github.com/argoproj/argo-cd/v3/cmd
say "built $out/argocd in $((SECONDS - start))s"

rm -rf "$out/argocd-hack" "$out/argocd-crds"
mkdir -p "$out/argocd-hack" "$out/argocd-crds"
install -m 0755 "$module_dir/hack/git-verify-wrapper.sh" "$module_dir/hack/gpg-wrapper.sh" "$out/argocd-hack/"
for crd in application appproject applicationset; do
  install -m 0644 "$module_dir/manifests/crds/$crd-crd.yaml" "$out/argocd-crds/"
done
"$out/argocd" version --client --short
