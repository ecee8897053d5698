//! Disk space: while this node, or a voter of a shard it leads, is short of disk, new client
//! writes are refused before anything is proposed (kind `disk_full`, naming the node), and
//! they are accepted again by themselves once space returns. Reads are never refused for space.
//!
//! A node is short of disk when either holds:
//! - its write-ahead log could not allocate its next segment ahead of need
//!   ([`StorageHealth::space_short`]); the current segment's allocated room still takes Raft's
//!   own records, so nothing acknowledged depends on space that is not there;
//! - free space on its data directory's filesystem is below `--disk-free-min-mb` (sampled
//!   every [`SAMPLE_EVERY`]). sled's files cannot be allocated ahead, so this headroom is what
//!   keeps sled and the WAL from meeting `ENOSPC` in normal operation (the idea behind etcd's
//!   space-quota alarm and CockroachDB's ballast file). An `ENOSPC` that happens anyway is a
//!   storage failure (fail-stop, `storage::health`).
//!
//! The leader refuses a shard's writes when any voter of it is short, not only itself: a full
//! follower would otherwise keep receiving entries until its disk runs out. Peers' state
//! comes with the `Status` answers the leader polls every second (`readmit`); a peer not
//! heard from for [`PEER_STALE`] counts as not short (it receives nothing meanwhile either).
//!
//! Does not: stop Raft's own traffic (votes, heartbeats, entries of shards led elsewhere), or
//! free space itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::storage::health::StorageHealth;
use crate::typ::NodeId;

/// How often free space is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A peer's reported shortage counts this long after it was last heard.
pub const PEER_STALE: Duration = Duration::from_secs(5);

/// Why a write is refused for space: which node is short, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node {node} is out of disk space: {reason}")]
pub struct DiskFull {
    pub node: NodeId,
    pub reason: String,
}

/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct DiskSpace {
    inner: Arc<Inner>,
}

struct Inner {
    self_id: NodeId,
    dir: PathBuf,
    free_min_bytes: u64,
    health: StorageHealth,
    /// Free bytes at the last sample (`u64::MAX` before the first, or when it failed).
    free_bytes: AtomicU64,
    /// Peers' last reported shortage and when it was heard.
    peers: Mutex<HashMap<NodeId, (String, Instant)>>,
}

impl DiskSpace {
    /// `free_min_bytes` 0 turns the free-space check off (the WAL's allocation still counts).
    pub fn new(self_id: NodeId, dir: &Path, free_min_bytes: u64, health: &StorageHealth) -> Self {
        DiskSpace {
            inner: Arc::new(Inner {
                self_id,
                dir: dir.to_path_buf(),
                free_min_bytes,
                health: health.clone(),
                free_bytes: AtomicU64::new(u64::MAX),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Free bytes on the data directory's filesystem at the last sample, if known.
    pub fn free_bytes(&self) -> Option<u64> {
        let free = self.inner.free_bytes.load(Ordering::Relaxed);
        (free != u64::MAX).then_some(free)
    }

    /// Why this node is short of disk, if it is.
    pub fn shortage(&self) -> Option<String> {
        if let Some(why) = self.inner.health.space_short() {
            return Some(why);
        }
        let free = self.free_bytes()?;
        (free < self.inner.free_min_bytes).then(|| {
            format!(
                "{} MiB free on the filesystem of {}, below --disk-free-min-mb {}",
                free / (1024 * 1024),
                self.inner.dir.display(),
                self.inner.free_min_bytes / (1024 * 1024)
            )
        })
    }

    /// Records what peer `node` reported (`None`: not short).
    pub fn note_peer(&self, node: NodeId, shortage: Option<String>) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        match shortage {
            Some(why) => {
                if !peers.contains_key(&node) {
                    tracing::warn!(node, reason = %why, "a peer is out of disk space: writes to the shards it votes in are refused");
                }
                peers.insert(node, (why, Instant::now()));
            }
            None => {
                if peers.remove(&node).is_some() {
                    tracing::info!(node, "a peer has disk space again");
                }
            }
        }
    }

    /// `Err` when this node or any of `voters` is short of disk: a write to their shard must
    /// be refused. This node is checked first, then the peers in id order.
    pub fn check_write(&self, voters: impl IntoIterator<Item = NodeId>) -> Result<(), DiskFull> {
        if let Some(reason) = self.shortage() {
            return Err(DiskFull {
                node: self.inner.self_id,
                reason,
            });
        }
        let peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut short: Vec<(NodeId, &String)> = voters
            .into_iter()
            .filter(|v| *v != self.inner.self_id)
            .filter_map(|v| {
                peers
                    .get(&v)
                    .filter(|(_, at)| at.elapsed() < PEER_STALE)
                    .map(|(why, _)| (v, why))
            })
            .collect();
        short.sort_unstable_by_key(|(v, _)| *v);
        match short.first() {
            Some((node, why)) => Err(DiskFull {
                node: *node,
                reason: (*why).clone(),
            }),
            None => Ok(()),
        }
    }

    /// Samples free space now.
    pub fn sample(&self) {
        let free = match nix::sys::statvfs::statvfs(&self.inner.dir) {
            Ok(s) => s.blocks_available().saturating_mul(s.fragment_size()),
            Err(e) => {
                tracing::debug!(dir = %self.inner.dir.display(), error = %e, "cannot read free disk space");
                u64::MAX
            }
        };
        let was_low = self.below_min();
        self.inner.free_bytes.store(free, Ordering::Relaxed);
        match (was_low, self.below_min()) {
            (false, true) => tracing::warn!(
                free_bytes = free,
                min_bytes = self.inner.free_min_bytes,
                "free disk space is below --disk-free-min-mb: writes are refused until space returns"
            ),
            (true, false) => {
                tracing::info!(
                    free_bytes = free,
                    "free disk space is above --disk-free-min-mb again: writes are accepted"
                )
            }
            _ => {}
        }
    }

    fn below_min(&self) -> bool {
        self.free_bytes()
            .is_some_and(|f| f < self.inner.free_min_bytes)
    }

    /// Samples free space every [`SAMPLE_EVERY`] until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            self.sample();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(free_min_bytes: u64) -> (DiskSpace, StorageHealth, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = StorageHealth::default();
        (
            DiskSpace::new(1, dir.path(), free_min_bytes, &health),
            health,
            dir,
        )
    }

    #[test]
    fn a_wal_that_cannot_allocate_refuses_writes_until_it_can() {
        let (space, health, _dir) = space(0);
        space.sample();
        assert_eq!(space.check_write([1, 2, 3]), Ok(()));
        health.set_space_short(Some("ENOSPC".into()));
        let e = space.check_write([1, 2, 3]).expect_err("refused");
        assert_eq!(e.node, 1);
        assert!(e.reason.contains("ENOSPC"));
        health.set_space_short(None);
        assert_eq!(space.check_write([1, 2, 3]), Ok(()));
    }

    #[test]
    fn free_space_below_the_minimum_refuses_writes() {
        let (space, _health, _dir) = space(u64::MAX - 1);
        assert_eq!(space.check_write([1]), Ok(()), "unknown before a sample");
        space.sample();
        let e = space.check_write([1]).expect_err("below any free space");
        assert!(e.reason.contains("--disk-free-min-mb"), "{}", e.reason);
    }

    #[test]
    fn a_short_voter_refuses_writes_to_its_shards_only() {
        let (space, _health, _dir) = space(0);
        space.note_peer(3, Some("full".into()));
        space.note_peer(2, Some("also full".into()));
        let e = space.check_write([1, 2, 3]).expect_err("refused");
        assert_eq!((e.node, e.reason.as_str()), (2, "also full"));
        assert_eq!(
            space.check_write([1, 4]),
            Ok(()),
            "not a voter of this shard"
        );
        space.note_peer(2, None);
        space.note_peer(3, None);
        assert_eq!(space.check_write([1, 2, 3]), Ok(()));
    }
}
