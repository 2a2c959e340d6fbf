//! keygate's plugins (plugins/), built for wasm32-wasip2 once per test process by
//! scripts/build-plugins.sh, which cargo makes a no-op when they are up to date.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Mutex;

static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The directory holding the built plugins (`tenant_isolation.wasm`, ...).
pub fn plugins_dir() -> Result<PathBuf> {
    let mut dir = DIR
        .lock()
        .map_err(|_| anyhow::anyhow!("plugin build lock poisoned"))?;
    if let Some(dir) = dir.as_ref() {
        return Ok(dir.clone());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/build-plugins.sh"))
        .output()
        .context("running scripts/build-plugins.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/build-plugins.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let built = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    *dir = Some(built.clone());
    Ok(built)
}

/// The path of one built plugin, e.g. `plugin_path("tenant_isolation")`, as TOML string text.
pub fn plugin_path(name: &str) -> Result<String> {
    let path = plugins_dir()?.join(format!("{name}.wasm"));
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(format!("{:?}", path.display().to_string()))
}
