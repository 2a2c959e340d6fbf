#!/usr/bin/env bash
# JSON gateway benchmark (issue #8): etcd's own grpc-gateway and keygate's /v3 in one run,
# with wrk (HTTP/1.1 keep-alive), POST /v3/kv/range and /v3/kv/put of a 192-byte value.
#
#   scripts/bench-json.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-8}
conns=${2:-64}
etcd_bin=$(bash scripts/install-deps.sh | tail -n1)
command -v wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
cargo build --release -p keygate >/dev/null

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port); peer=$(free_port)
"$etcd_bin/etcd" --name bench --data-dir "$work/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
target/release/keygate serve --listen 127.0.0.1:0 --ready-file "$work/ready" \
  --endpoints "http://127.0.0.1:$client" >"$work/keygate.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [[ -s "$work/ready" ]] && curl -sf "http://127.0.0.1:$client/health" >/dev/null && break
  sleep 0.1
done
keygate=$(cat "$work/ready")

value=$(head -c 192 /dev/zero | base64 -w0)
curl -sf -X POST "http://127.0.0.1:$client/v3/kv/put" -d "{\"key\":\"Zm9v\",\"value\":\"$value\"}" >/dev/null
printf 'wrk.method = "POST"\nwrk.body = %s\n' "'{\"key\":\"Zm9v\"}'" >"$work/range.lua"
printf 'wrk.method = "POST"\nwrk.body = %s\n' "'{\"key\":\"Zm9v\",\"value\":\"$value\"}'" >"$work/put.lua"

echo "wrk -t1 -c$conns -d${secs}s, etcd 3.5 (1 member, --unsafe-no-fsync) vs keygate (release) in front of it"
for op in range put; do
  etcd_rps=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$work/$op.lua" "http://127.0.0.1:$client/v3/kv/$op" | awk '/Requests\/sec/ {print $2}')
  kg_rps=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$work/$op.lua" "http://$keygate/v3/kv/$op" | awk '/Requests\/sec/ {print $2}')
  awk -v op="$op" -v e="$etcd_rps" -v k="$kg_rps" \
    'BEGIN { printf "%-6s etcd gateway %9.0f req/s   keygate %9.0f req/s   %.2fx\n", op, e, k, k / e }'
done
