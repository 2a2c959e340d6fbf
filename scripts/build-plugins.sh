#!/usr/bin/env bash
# Builds keygate's plugins (plugins/: the SDK, the examples, the test plugins) for
# wasm32-wasip2 into target/wasm32-wasip2/release/*.wasm. Idempotent; cargo skips what is
# up to date. Prints the directory holding the .wasm files as its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
if ! rustup target list --installed 2>/dev/null | grep -x wasm32-wasip2 >/dev/null; then
  rustup target add wasm32-wasip2 >&2
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
(cd plugins && cargo build --release --target wasm32-wasip2 --target-dir "$target_dir" >&2)
echo "$target_dir/wasm32-wasip2/release"
