#!/usr/bin/env bash
# Runs keygate's load generator: etcd directly, `etcd grpc-proxy` and keygate (release build)
# in one run, and writes the results into docs/benchmarks.md.
#
#   scripts/bench.sh                                   # every mode, 10 s each
#   scripts/bench.sh --modes put,get-linearizable --duration 5
#
# Arguments are passed to loadgen (see `loadgen --help`); set BENCH_MARKDOWN= (empty) to print
# only, or to another file to write there.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYGATE_ETCD_BIN_DIR=$(bash scripts/install-deps.sh | tail -n1)
export KEYGATE_ETCD_BIN_DIR

if ! cargo build --release -p keygate -p keygate-tests --bin keygate --bin loadgen; then
  # The tree may be mid-edit; an existing release build is still worth measuring.
  [[ -x target/release/keygate && -x target/release/loadgen ]] || exit 1
  echo "bench.sh: build failed, measuring the existing target/release binaries" >&2
fi
export KEYGATE_BIN="$PWD/target/release/keygate"

markdown=${BENCH_MARKDOWN-docs/benchmarks.md}
args=()
[[ -n "$markdown" ]] && args+=(--markdown "$markdown")
exec target/release/loadgen "${args[@]}" "$@"
