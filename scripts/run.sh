#!/usr/bin/env bash
# `make run`: a local control plane, keymint's CRDs, the operator, the examples.
# Ctrl-C stops the operator and the control plane; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${KEYMINT_CLUSTER_DIR:-$PWD/.cluster}
operator_pid=

stop() {
  trap - EXIT INT TERM
  echo
  if [ -n "$operator_pid" ]; then
    kill -TERM "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  scripts/cluster.sh down "$dir"
}
trap stop EXIT INT TERM

scripts/cluster.sh up "$dir"
export KUBECONFIG=$dir/kubeconfig

echo "== CRDs"
kubectl apply --server-side -f crds/
kubectl wait --for condition=Established --timeout=60s -f crds/
kubectl create namespace keymint-system --dry-run=client -o yaml | kubectl apply -f -

echo "== operator (log: $dir/operator.log)"
target/debug/keymint run \
  --kubeconfig "$dir/operator.kubeconfig" \
  --operator-namespace keymint-system \
  --metrics-address "${KEYMINT_METRICS_ADDRESS:-127.0.0.1:8080}" \
  > "$dir/operator.log" 2>&1 &
operator_pid=$!

echo "== examples"
kubectl apply -f examples/
for kind in apikeys serviceaccountkeys rootkeys keyrings; do
  kubectl wait --for condition=Ready --timeout=60s "$kind" --all -A
done
echo
kubectl get keymint -A
echo
kubectl get secrets -A -l app.kubernetes.io/managed-by=keymint
echo
echo "keymint is running. Try: KUBECONFIG=$KUBECONFIG kubectl describe apikey billing-export"
echo "Press Ctrl-C to stop the operator and the control plane."
wait "$operator_pid"
