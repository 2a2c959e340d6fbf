#!/usr/bin/env bash
# Prints a directory holding etcd 3.4 (Debian's etcd-server package, unpacked under target/ —
# not installed, so no system service starts) beside the etcdctl and etcdutl of the etcd 3.5
# bin dir given as $1. The compatibility tests in scripts/test.sh run against it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
etcd35_bin_dir=$1
dir=target/etcd-3.4
# The version is read whole first: `etcd --version | grep -q` under pipefail fails at random
# when grep exits before etcd has written everything (SIGPIPE).
is_34() { [[ $("$dir/etcd" --version 2>/dev/null || true) == *"etcd Version: 3.4"* ]]; }
if ! is_34; then
  rm -rf "$dir" target/etcd-3.4-deb
  mkdir -p target/etcd-3.4-deb
  if ! (cd target/etcd-3.4-deb && apt-get download etcd-server >&2); then
    sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update >&2
    (cd target/etcd-3.4-deb && apt-get download etcd-server >&2)
  fi
  dpkg-deb -x target/etcd-3.4-deb/etcd-server_*.deb target/etcd-3.4-deb/root
  mkdir -p "$dir"
  ln -s "$PWD/target/etcd-3.4-deb/root/usr/bin/etcd" "$dir/etcd"
  is_34 || { echo "the etcd-server package is not etcd 3.4" >&2; exit 1; }
fi
ln -sf "$etcd35_bin_dir/etcdctl" "$dir/etcdctl"
ln -sf "$etcd35_bin_dir/etcdutl" "$dir/etcdutl"
echo "$PWD/$dir"
