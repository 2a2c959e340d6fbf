//! A one-member cluster restored from a snapshot in place, as an operator recovers etcd: the
//! member stops, its data dir is replaced by one restored from the snapshot (same name, peer
//! URL and cluster token, so the same cluster id), and it starts again on the same ports.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use keygate_proto::etcdserverpb::SnapshotRequest;

use super::{EtcdCluster, START_TIMEOUT};
use crate::bins::etcd_tool;
use crate::Clients;

impl EtcdCluster {
    /// Writes member `i`'s snapshot (etcd's Snapshot stream, as `etcdctl snapshot save` does)
    /// to `path`.
    pub async fn save_snapshot(&self, i: usize, path: &Path) -> Result<()> {
        let mut c = Clients::connect(&self.endpoint(i)).await?;
        let mut stream = c
            .maintenance
            .snapshot(SnapshotRequest {})
            .await?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.blob);
        }
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Stops the only member, restores `snapshot` in place of its data and starts it again.
    pub async fn restore(&mut self, snapshot: &Path) -> Result<()> {
        if self.len() != 1 {
            bail!("restore is for one-member clusters");
        }
        if self.members[0].child.is_some() {
            self.kill(0)?;
        }
        let data_dir = self.members[0].data_dir.clone();
        std::fs::remove_dir_all(&data_dir).context("removing the old data dir")?;
        // etcdutl where there is one (3.5); etcd 3.4's etcdctl restores itself.
        let tool = etcd_tool("etcdutl").or_else(|_| etcd_tool("etcdctl"))?;
        let out = Command::new(tool)
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--name", &self.members[0].name])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-advertise-peer-urls", &self.peer_url(0)])
            .output()
            .context("running snapshot restore")?;
        if !out.status.success() {
            bail!(
                "snapshot restore failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.spawn(0)?;
        self.wait_healthy(0, START_TIMEOUT).await
    }
}
