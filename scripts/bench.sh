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

cargo build --release -p keygate -p keygate-tests --bin keygate --bin loadgen
export KEYGATE_BIN="$PWD/target/release/keygate"

markdown=${BENCH_MARKDOWN-docs/benchmarks.md}
args=()
[[ -n "$markdown" ]] && args+=(--markdown "$markdown")
exec target/release/loadgen "${args[@]}" "$@"
