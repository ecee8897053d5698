//! Serving a backup of one shard: the leader passes a read barrier, builds a snapshot that
//! covers everything applied by then, and streams that snapshot file in bounded chunks.
//!
//! Invariants: every write acknowledged before the request arrived is in the streamed file
//! (the barrier waits for the commit index of that moment to be applied, and the snapshot is
//! taken at or after it); the file is a consistent cut (built while apply is blocked, see
//! `shard::state_machine`) and carries its own checksum; the stream holds an open handle, so a
//! newer snapshot replacing the file name does not disturb it; chunks travel through a bounded
//! channel, so a slow reader slows the sender instead of filling memory.

use std::io::Read;
use std::time::Duration;

use ringkv_proto::pb::BackupChunk;
use tokio::sync::mpsc;
use tonic::Status;

use crate::membership;
use crate::service::error::KvError;
use crate::shard::Shard;
use crate::shard::snapshot::{self, SnapshotFile};
use crate::typ::NodeId;

/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks buffered ahead of the reader.
const CHUNKS_IN_FLIGHT: usize = 4;
/// How long the snapshot may take to build.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds (or reuses) a snapshot of `shard` that covers every write acknowledged so far.
pub async fn snapshot_for_backup(shard: &Shard, self_id: NodeId) -> Result<SnapshotFile, KvError> {
    membership::lead(shard, self_id)?;
    membership::barrier(shard, self_id).await?;
    let target = shard
        .metrics()
        .last_applied
        .as_ref()
        .map(|l| l.index())
        .unwrap_or(0);
    let covered = |shard: &Shard| {
        shard
            .metrics()
            .snapshot
            .as_ref()
            .is_some_and(|l| l.index() >= target)
    };
    let deadline = tokio::time::Instant::now() + BUILD_TIMEOUT;
    while !covered(shard) {
        if tokio::time::Instant::now() >= deadline {
            return Err(KvError::NoLeader {
                shard: shard.id,
                reason: "snapshot for the backup not built in time".into(),
            });
        }
        // Asked again each round: a request made while another dump runs is refused.
        shard
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| KvError::Internal(format!("shard {}: {e}", shard.id)))?;
        let round_end = tokio::time::Instant::now() + Duration::from_secs(1);
        while !covered(shard) && tokio::time::Instant::now() < round_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let dir = shard.sm.snapshot_dir().to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<SnapshotFile> {
        let path = snapshot::newest(&dir)?
            .ok_or_else(|| std::io::Error::other("snapshot file missing"))?;
        SnapshotFile::open(path)
    })
    .await
    .map_err(|e| KvError::Internal(e.to_string()))?
    .map_err(|e| KvError::Internal(format!("shard {}: {e}", shard.id)))?;
    tracing::info!(shard = shard.id, index = target, "backup snapshot ready");
    Ok(opened)
}

/// Streams `file` as chunks on a bounded channel (read on a blocking thread).
pub fn stream(mut file: SnapshotFile) -> mpsc::Receiver<Result<BackupChunk, Status>> {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match read_full(&mut file.file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .blocking_send(Err(Status::internal(format!("reading the snapshot: {e}"))));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if tx
                .blocking_send(Ok(BackupChunk { data: buf.into() }))
                .is_err()
            {
                // The client went away.
                return;
            }
        }
    });
    rx
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
