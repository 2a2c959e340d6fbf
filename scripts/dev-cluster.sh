#!/usr/bin/env bash
# Quick start, command 1: a local 3-member etcd cluster under ./.dev/ and keygate in front of
# it on 127.0.0.1:2379, in the foreground. Ctrl-C stops keygate and the members started here.
# Fixed ports on purpose: this is the interactive dev setup, not a test.
# KEYGATE_BIN=path skips the release build; extra arguments go to `keygate serve`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

ETCD_BIN_DIR=$(bash scripts/install-deps.sh | tail -n1)
etcd="$ETCD_BIN_DIR/etcd"
etcdctl="$ETCD_BIN_DIR/etcdctl"

# KEYGATE_BIN runs a binary you built yourself instead.
if [[ -n "${KEYGATE_BIN:-}" ]]; then
  keygate=$KEYGATE_BIN
else
  cargo build --release -p keygate
  keygate="${CARGO_TARGET_DIR:-$root/target}/release/keygate"
fi

dev="$root/.dev"
mkdir -p "$dev"

names=(m0 m1 m2)
# Below 32768, so they do not collide with ephemeral ports other programs hold.
client_ports=(12379 22379 23379)
peer_ports=(12380 22380 23380)

initial_cluster=""
for i in 0 1 2; do
  initial_cluster+="${initial_cluster:+,}${names[$i]}=http://127.0.0.1:${peer_ports[$i]}"
done

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  echo "stopped keygate and the dev etcd members (data kept in $dev)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

endpoints=""
for i in 0 1 2; do
  name=${names[$i]}
  client="http://127.0.0.1:${client_ports[$i]}"
  peer="http://127.0.0.1:${peer_ports[$i]}"
  state=new
  [[ -d "$dev/$name.data/member" ]] && state=existing
  "$etcd" --name "$name" --data-dir "$dev/$name.data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$initial_cluster" --initial-cluster-state "$state" \
    --initial-cluster-token keygate-dev \
    >"$dev/$name.log" 2>&1 &
  pids+=($!)
  endpoints+="${endpoints:+,}$client"
done

echo "waiting for the etcd members (logs in $dev/m*.log) ..." >&2
for i in 0 1 2; do
  healthy=
  for _ in $(seq 1 300); do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "etcd member ${names[$i]} exited; last lines of $dev/${names[$i]}.log:" >&2
      tail -n 5 "$dev/${names[$i]}.log" >&2
      exit 1
    fi
    if ETCDCTL_API=3 "$etcdctl" --endpoints "127.0.0.1:${client_ports[$i]}" \
      --command-timeout=1s endpoint health >/dev/null 2>&1; then
      healthy=1
      break
    fi
    sleep 0.1
  done
  if [[ -z $healthy ]]; then
    echo "etcd member ${names[$i]} is not healthy after 30s; see $dev/${names[$i]}.log" >&2
    exit 1
  fi
done

cat <<MSG

keygate on 127.0.0.1:2379 in front of $endpoints
Try, in another shell:
  export ETCDCTL_API=3 PATH="$ETCD_BIN_DIR:\$PATH"
  etcdctl --endpoints 127.0.0.1:2379 put a 1
  etcdctl --endpoints 127.0.0.1:2379 get a
  etcdctl --endpoints 127.0.0.1:2379 watch a --prefix
  curl http://127.0.0.1:2379/health
  curl http://127.0.0.1:2379/metrics
etcdctl is at $etcdctl
Ctrl-C stops keygate and the three etcd members.

MSG

"$keygate" serve --listen 127.0.0.1:2379 --endpoints "$endpoints" "$@" &
pids+=($!)
wait "${pids[-1]}"
