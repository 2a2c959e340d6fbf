//! When etcd's keyspace goes back under the mirror (restored from a snapshot, or another cluster
//! behind the endpoints), every watcher on the stream from before has been sent events etcd no
//! longer has, and waits for revisions that will name other writes. Each is canceled as after a
//! compaction, which is what makes etcd's clients (kube-apiserver's reflectors among them)
//! relist instead of carrying on from a history that is gone.

use super::{Ended, Stream};
use keygate_proto::etcdserverpb::WatchResponse;

impl Stream {
    /// Cancels the stream's watchers if etcd's keyspace went back since they were created.
    pub(super) async fn cancel_if_rewound(&mut self) -> Result<(), Ended> {
        let epoch = self.hub.mirror.epoch();
        if epoch == self.epoch {
            return Ok(());
        }
        self.epoch = epoch;
        let current = self.hub.mirror.revision();
        let mut ids: Vec<i64> = self.watchers.keys().copied().collect();
        self.hub.metrics.watchers.sub(ids.len() as i64);
        self.watchers.clear();
        self.hub
            .metrics
            .upstream_streams
            .sub(self.dedicated.len() as i64);
        ids.extend(self.dedicated.drain().map(|(id, _)| id));
        ids.sort_unstable();
        for id in ids {
            self.send(WatchResponse {
                header: Some(self.hub.mirror.header(current)),
                watch_id: id,
                canceled: true,
                compact_revision: current.max(1),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
