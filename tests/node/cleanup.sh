#!/usr/bin/env bash
# Removes everything a node run leaves on this machine, whatever state it
# was left in (normal exit, failed start, killed test process): the node's
# processes, the containers and their shims, kubepods cgroups, mounts, the
# CNI bridge and the host address, kube-proxy's rules, and the node's
# directories. Safe to run at any time and more than once; testenv runs it
# before a node starts, when it stops, and (from a watchdog that outlives the
# test process) after the test process has died.
#
#   cleanup.sh [BIN_DIR]    BIN_DIR holds kube-proxy (for --cleanup)
set -uo pipefail
root=/var/lib/keymint-node
run=/run/keymint-node
bin=${1:-$(cd "$(dirname "$0")/../.." && pwd)/bin}
bridge=keymint-cni0
host_link=keymint-host
deadline=$((SECONDS + 30))

# Processes that name the node's directories: kubelet, containerd, its
# shims, kube-proxy, kube-scheduler (their configuration lives there).
node_pids() {
  local proc cmdline
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" = "$$" ] && continue
    cmdline=$(tr '\0' ' ' < "$proc/cmdline" 2>/dev/null) || continue
    case "$cmdline" in
      *cleanup.sh*) ;;
      *"$root/"*|*"$run/"*) echo "${proc#/proc/}" ;;
    esac
  done
}

# Every cgroup directory named kubepods (and below), deepest first.
kubepods_cgroups() {
  find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d -name kubepods -prune -print 2>/dev/null |
    while read -r top; do find "$top" -depth -type d; done
}

# The containers: every process in a kubepods cgroup.
container_pids() {
  kubepods_cgroups | while read -r dir; do cat "$dir/cgroup.procs" 2>/dev/null; done | sort -u
}

kill_all() {
  local pids
  while :; do
    pids=$("$@")
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
    [ $SECONDS -ge $deadline ] && { echo "cleanup: processes still alive: $pids" >&2; return 1; }
    sleep 0.1
  done
}

status=0
kill_all node_pids || status=1
kill_all container_pids || status=1

# Frozen cgroups would keep their processes: thaw before removing.
kubepods_cgroups | while read -r dir; do
  [ -f "$dir/freezer.state" ] && echo THAWED > "$dir/freezer.state" 2>/dev/null
done
while :; do
  left=$(kubepods_cgroups | while read -r dir; do rmdir "$dir" 2>/dev/null || echo "$dir"; done)
  [ -z "$left" ] && break
  [ $SECONDS -ge $deadline ] && { echo "cleanup: cgroups not removed: $left" >&2; status=1; break; }
  sleep 0.1
done

# Mounts below the node's directories (netns, tokens, overlays), deepest first.
awk -v root="$root" -v run="$run" '
  index($5, root "/") == 1 || $5 == root || index($5, run "/") == 1 || $5 == run { print length($5), $5 }
' /proc/self/mountinfo | sort -rn | cut -d' ' -f2- | while read -r mountpoint; do
  umount -l "$(printf '%b' "$mountpoint")" 2>/dev/null || { echo "cleanup: cannot unmount $mountpoint" >&2; }
done

for link in "$bridge" "$host_link"; do
  ip link show "$link" >/dev/null 2>&1 && { ip link delete "$link" || status=1; }
done
# Veths left on the bridge go with their network namespaces; any left over:
ip -o link show type veth 2>/dev/null | awk -F': ' '/master '"$bridge"'/ {split($2, a, "@"); print a[1]}' |
  while read -r veth; do ip link delete "$veth" 2>/dev/null; done

if [ -x "$bin/kube-proxy" ]; then
  "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi

rm -rf "$root" "$run" 2>/dev/null || { echo "cleanup: cannot remove $root or $run" >&2; status=1; }
exit $status
