//! The flush coordinator: one thread per node that makes sled writes durable in groups.
//!
//! Callers first write to sled (so the data is readable), then hand a waiter to the
//! coordinator. The coordinator takes every waiter queued, runs one `Db::flush`, fsyncs the
//! blob files sled made since the last one (`sled_files`), then an explicit `sync_data` of
//! sled's log file (sled's own flush uses `sync_file_range`, which does not survive power
//! loss), then completes all of them. One fsync thus covers every shard's
//! appends and votes that arrived meanwhile (group commit).
//!
//! Invariants:
//! - A waiter is completed only after a flush that *started after it was queued*, so it covers
//!   every write its owner made before queueing.
//! - Every waiter is completed exactly once; a failed flush completes them with `Err` (never by
//!   dropping them), which openraft treats as fatal for the group.
//! - The queue is bounded; senders wait when it is full.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::IOFlushed;
use tokio::sync::{mpsc, oneshot};

use crate::storage::health::StorageHealth;
use crate::storage::sled_files::Blobs;
use crate::typ::TypeConfig;

/// Waiters queued at most; beyond this, `append` and `save_vote` wait.
const QUEUE_CAPACITY: usize = 16_384;

enum Waiter {
    Log(IOFlushed<TypeConfig>),
    Ticket(oneshot::Sender<io::Result<()>>),
}

/// Handle to the node's flush thread. Cheap to clone.
#[derive(Clone)]
pub struct FlushCoordinator {
    tx: mpsc::Sender<Waiter>,
}

impl FlushCoordinator {
    /// Starts the flush thread for `db`, whose files live in `db_dir`; a failed flush trips
    /// `health` (fail-stop: the node stops, and every later flush fails too).
    pub fn start(db: sled::Db, db_dir: &Path, health: &StorageHealth) -> io::Result<Self> {
        // sled keeps its log in the file `db` inside its directory; fsync works on any
        // descriptor of the inode.
        let log_path = db_dir.join("db");
        let log_file = Arc::new(File::open(&log_path)?);
        let mut blobs = Blobs::new(db_dir);
        let health = health.clone();
        let (tx, mut rx) = mpsc::channel::<Waiter>(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("ringkv-flush".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(1024);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < QUEUE_CAPACITY {
                        match rx.try_recv() {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    // Never retried: once a sync failed, a later one may "succeed" for data the
                    // kernel already dropped.
                    let result = match health.failure() {
                        Some(f) => Err(io::Error::other(format!("storage failed earlier: {f}"))),
                        None => db
                            .flush()
                            .map_err(io::Error::other)
                            .inspect_err(|e| health.fail("sled flush", &log_path, e))
                            .and_then(|_| {
                                // A blob before the log record that points at it.
                                blobs
                                    .sync_new()
                                    .inspect_err(|e| health.fail("sled blob sync", blobs.dir(), e))
                            })
                            .and_then(|_| {
                                log_file
                                    .sync_data()
                                    .inspect_err(|e| health.fail("sled flush", &log_path, e))
                            }),
                    };
                    let err = result.as_ref().err().map(|e| e.to_string());
                    for w in batch.drain(..) {
                        let r = match &err {
                            None => Ok(()),
                            Some(e) => Err(io::Error::other(format!("flush failed: {e}"))),
                        };
                        match w {
                            Waiter::Log(cb) => cb.io_completed(r),
                            Waiter::Ticket(tx) => {
                                let _ = tx.send(r);
                            }
                        }
                    }
                }
            })?;
        Ok(FlushCoordinator { tx })
    }

    /// Completes `callback` after a flush covering everything written before this call.
    pub async fn complete_after_flush(&self, callback: IOFlushed<TypeConfig>) -> io::Result<()> {
        self.tx
            .send(Waiter::Log(callback))
            .await
            .map_err(|_| io::Error::other("flush coordinator stopped"))
    }

    /// Returns once everything written before this call is durable.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Waiter::Ticket(tx))
            .await
            .map_err(|_| io::Error::other("flush coordinator stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("flush coordinator stopped"))?
    }
}
