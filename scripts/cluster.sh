#!/usr/bin/env bash
# cluster.sh up|down DIR: a long-lived local control plane for people.
set -euo pipefail
action=${1:?usage: cluster.sh up|down DIR}
dir=${2:?usage: cluster.sh up|down DIR}
pidfile="$dir/testenv.pid"
case "$action" in
  up)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "already running (pid $(cat "$pidfile")); KUBECONFIG=$dir/kubeconfig"; exit 0
    fi
    mkdir -p "$dir"
    rm -f "$dir/kubeconfig"
    # Its own session: a terminal Ctrl-C reaches `make run`, which stops the
    # operator first and then this control plane.
    setsid nohup target/debug/keymint-testenv up "$dir" > "$dir/testenv.out" 2>&1 &
    echo $! > "$pidfile"
    deadline=$((SECONDS + 120))
    until grep -q '^export KUBECONFIG=' "$dir/testenv.out" 2>/dev/null; do
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then cat "$dir/testenv.out" >&2; exit 1; fi
      if [ $SECONDS -ge $deadline ]; then echo "control plane not ready in 120s" >&2; cat "$dir/testenv.out" >&2; exit 1; fi
      sleep 0.5
    done
    cat "$dir/testenv.out"
    ;;
  down)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      # The launcher stops etcd, kube-apiserver and the controller-manager before it exits.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      rm -f "$pidfile"
      echo "control plane stopped"
    else
      echo "no control plane running from $dir"
    fi
    ;;
  *) echo "usage: cluster.sh up|down DIR" >&2; exit 2 ;;
esac
