#!/usr/bin/env bash
# Quick start, command 2: everything CI checks. Installs etcd (and Node.js) if missing, builds every target,
# then fmt, clippy and the whole test suite against real etcd. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEYGATE_ETCD_BIN_DIR=$(bash scripts/install-deps.sh | tail -n1)
export KEYGATE_ETCD_BIN_DIR
echo "etcd binaries: ${KEYGATE_ETCD_BIN_DIR}"

step() { echo; echo "==> $*"; }

# The suite is built once per run: incremental caches would only add gigabytes of disk (CI
# machines have little). Set CARGO_INCREMENTAL=1 to keep them while iterating.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Node.js and npm, for the end-to-end test with Node's etcd3 client (tests/node).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "apt-get install nodejs npm"
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y nodejs npm
fi
step "npm ci (tests/node: Node's etcd3 client)"
(cd tests/node && { test -e node_modules/etcd3/package.json || npm ci --no-audit --no-fund; })

# A build failure stops everything; fmt, clippy and the tests all run so one report shows
# every problem, and the exit status is non-zero if any of them failed.
failed=()
check() {
  step "$*"
  if ! "$@"; then
    failed+=("$*")
  fi
}

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "scripts/build-plugins.sh (wasm32-wasip2)"
bash scripts/build-plugins.sh

check cargo fmt --all -- --check
check cargo fmt --all --manifest-path plugins/Cargo.toml -- --check
# The plugin SDK's own tests (key-range arithmetic the example plugins decide with), on the host.
check cargo test --manifest-path plugins/Cargo.toml -p keygate-plugin-sdk \
  --target-dir "${CARGO_TARGET_DIR:-target}/plugins-host"
check cargo clippy --workspace --all-targets -- -D warnings
check cargo clippy --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --all-targets \
  --target-dir "${CARGO_TARGET_DIR:-target}" -- -D warnings

# A failing test's own message first: errors returned by tests carry no backtrace (panics
# still do when RUST_BACKTRACE is set), so CI logs show why, not a page of frames.
export RUST_LIB_BACKTRACE=0
if cargo nextest --version >/dev/null 2>&1; then
  check cargo nextest run --workspace --no-fail-fast
else
  # Two tests at a time: each starts real etcd clusters.
  check cargo test --workspace --no-fail-fast -- --test-threads=2
fi

# The tests that compare keygate with the etcd behind it, again against etcd 3.4 (Debian's
# etcd-server, unpacked by scripts/etcd34.sh). The rest of the suite asserts 3.5's version
# strings, its JSON gateway's error layout and its list speed.
ETCD34_TESTS=(grpc_differential grpc_differential_txn grpc_differential_random mirror_differential
  mirror_consistency mirror_faults watch_conformance watch_failover etcdctl_e2e_kv node_client
  tenant_differential mirror_auth mirror_rewind watch_no_leader)
if etcd34_dir=$(bash scripts/etcd34.sh "$KEYGATE_ETCD_BIN_DIR" | tail -n1); then
  # The suite is one test binary whose modules are the subjects (tests/tests/suite.rs).
  if cargo nextest --version >/dev/null 2>&1; then
    subjects=$(IFS='|'; echo "${ETCD34_TESTS[*]}")
    check env KEYGATE_ETCD_BIN_DIR="$etcd34_dir" cargo nextest run -p keygate-tests --no-fail-fast \
      -E "test(/^(${subjects})::/)"
  else
    check env KEYGATE_ETCD_BIN_DIR="$etcd34_dir" cargo test -p keygate-tests --no-fail-fast \
      --test suite -- --test-threads=2 "${ETCD34_TESTS[@]/%/::}"
  fi
else
  failed+=("scripts/etcd34.sh (etcd 3.4 from Debian's etcd-server)")
fi

echo
if ((${#failed[@]})); then
  echo "FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "all checks passed"
