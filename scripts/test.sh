#!/usr/bin/env bash
# Quick start, command 2: everything CI checks. Installs etcd if missing, builds every target,
# then fmt, clippy and the whole test suite against real etcd. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEYGATE_ETCD_BIN_DIR=$(bash scripts/install-deps.sh | tail -n1)
export KEYGATE_ETCD_BIN_DIR
echo "etcd binaries: ${KEYGATE_ETCD_BIN_DIR}"

step() { echo; echo "==> $*"; }

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast
else
  step "cargo test --workspace (cargo-nextest not installed)"
  # One test binary at a time, two tests at a time: each starts real etcd clusters.
  cargo test --workspace --no-fail-fast -- --test-threads=2
fi

echo
echo "all checks passed"
