#!/usr/bin/env bash
# Quick start, command 2: everything CI checks. Installs etcd (and Node.js) if missing, builds every target,
# then fmt, clippy and the whole test suite against real etcd. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEYGATE_ETCD_BIN_DIR=$(bash scripts/install-deps.sh | tail -n1)
export KEYGATE_ETCD_BIN_DIR
echo "etcd binaries: ${KEYGATE_ETCD_BIN_DIR}"

step() { echo; echo "==> $*"; }

# Node.js and npm, for the end-to-end test with Node's etcd3 client (tests/node).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "apt-get install nodejs npm"
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y nodejs npm
fi

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
check cargo clippy --workspace --all-targets -- -D warnings

# A failing test's own message first: errors returned by tests carry no backtrace (panics
# still do when RUST_BACKTRACE is set), so CI logs show why, not a page of frames.
export RUST_LIB_BACKTRACE=0
if cargo nextest --version >/dev/null 2>&1; then
  check cargo nextest run --workspace --no-fail-fast
else
  # Two tests at a time: each starts real etcd clusters.
  check cargo test --workspace --no-fail-fast -- --test-threads=2
fi

echo
if ((${#failed[@]})); then
  echo "FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "all checks passed"
