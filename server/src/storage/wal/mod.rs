//! The node-wide write-ahead log that holds every shard's Raft log, vote and committed id.
//!
//! Files: `<dir>/<sequence>.wal` segments, replayed in sequence order at start-up; each is
//! allocated at its full size when it is created (`fallocate`) and records are written
//! inside it. A segment starts with a header (magic, format version 2, its own sequence,
//! checksummed), then records `len | back | xxh3(sequence, offset, len, back, body) | body`,
//! the body a MessagePack `Record` and `back` the distance to the start of the record's batch
//! (details and the version-1 format of the release before versions: `record`). Every shard's
//! appends, votes, truncations and purges go into one stream, so one `fdatasync` makes all of
//! them durable (group commit across shards), and no sled lock is ever taken on the Raft path.
//!
//! Invariants:
//! - A shard's in-memory log is changed and its record queued under one lock, so the order of
//!   records in the stream is the order of the changes; replay rebuilds exactly that state.
//! - A waiter (an append's `IOFlushed`, a vote's ticket) completes only after the buffer that
//!   holds its record is written and `fdatasync`ed. Fail-stop: the first failed write or sync
//!   completes its waiters with `Err`, trips the node's [`StorageHealth`], and from then on
//!   nothing is written (not even what was already queued) and every waiter fails; a sync is
//!   never retried. Replay at the next start decides what is durable.
//! - What replay read is durable before the log is used: the newest segment is synced first,
//!   since a crash between a batch's write and its `fdatasync` leaves the batch whole in the
//!   page cache, where replay reads it back.
//! - Only the tail of the newest segment can be torn or unused (a full segment is cut to its
//!   last record and synced before the next one is created, and a segment is never written
//!   again once the next exists); damage in any other segment refuses the start.
//! - Batch k+1 is written only after batch k's `fdatasync` returned, right after batch k's
//!   last record, and every record names its segment, its offset and where its batch began.
//!   So at the first bad record of the newest segment, an intact record of a later batch
//!   after it proves the bad one was synced (damage: the start is refused, naming file, offset
//!   and the recovery); with none, the bad one's batch was never acknowledged and is cut (a
//!   torn tail, logged with the bytes dropped). So that the newest segment's last batch is
//!   followed by one too, the writer adds a mark (a record that changes nothing) once the log
//!   has been idle for a second, when it closes, and after a new segment's head: only damage
//!   to a batch written within a second of a crash is cut like a torn write.
//! - Segments are written only in the current format; version-1 segments replay as before;
//!   any other version refuses the start, naming the file and the versions read.
//! - A new segment starts with each shard's vote, committed and purged ids, so a segment is
//!   removable once every entry in it is purged or copied forward into a newer segment (see
//!   `Writer::rewrite_forward`); removal goes oldest first.
//! - Unpurged entries stay in memory (readers never touch the disk); the snapshot policy,
//!   `--log-keep-entries` and the byte bounds of `--snapshot-log-mb` (`shard::compaction`)
//!   bound them.
//!
//! Parts: `record` (the on-disk format: segment header, framing, checksum, versions),
//! `replay` (rebuilding the logs from the segments at start, torn tail or damage), `writer`
//! (the thread that writes, syncs, rotates and removes segments), `log` (one shard's
//! in-memory log). This file holds the handle the shards use.

mod log;
mod record;
mod replay;
mod writer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::storage::health::StorageHealth;

pub use log::ShardLog;
pub(crate) use record::{Queued, Record, entry_bytes};
pub use replay::{RECOVERY, ReplayError};
pub(crate) use writer::Waiter;

use record::{ShardMeta, frame};
use replay::replay_segment;
use writer::{Pending, Segment, Writer, remove_spare, start_segment};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes queued but not yet written at most; past this, writers wait for a flush first.
const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Where the writer thread reports each group commit (the node's metrics).
#[derive(Clone)]
pub struct FlushObservers {
    /// Seconds of one write plus `fdatasync`.
    pub flush_seconds: prometheus::Histogram,
    /// Waiters (appends, votes, tickets) one group commit completed.
    pub waiters_per_flush: prometheus::Histogram,
}

struct Shared {
    dir: PathBuf,
    pending: Mutex<Pending>,
    wake: Condvar,
    shards: Mutex<BTreeMap<u32, Arc<Mutex<ShardLog>>>>,
    observers: std::sync::OnceLock<FlushObservers>,
    /// Tripped by the first failed write or sync.
    health: StorageHealth,
    stats: Mutex<WalStats>,
}

/// Handle to the node's write-ahead log. Cheap to clone; the writer thread stops when the last
/// handle is dropped, after writing what is queued, and the drop waits for it.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Stops the writer thread and waits for it, so the files are quiet once the last handle is
/// gone (a reopen never races a final write).
struct Closer {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.closed = true;
        }
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the write-ahead log writer thread panicked");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| io::Error::other("write-ahead log lock poisoned"))
}

/// The log's footprint, as the writer last saw it (the node's metrics).
#[derive(Clone, Debug, Default)]
pub struct WalStats {
    /// Bytes of every segment file (the current one at its reserved size) and the spare.
    pub bytes: u64,
    pub segments: u64,
    /// Per shard, how many segments it keeps from removal (entries neither purged nor
    /// rewritten into a newer segment).
    pub segments_pinned: BTreeMap<u32, u64>,
    /// Live entries copied forward so far, as records (see the module note).
    pub rewrites: u64,
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
}

/// Makes the newest replayed segment durable before the log is used. Replay reads through the
/// page cache, so after a crash between a batch's write and its `fdatasync` the batch reads
/// back whole although it is not on the disk; once replayed, this node's log holds its entries
/// and tells the leader so, and a power cut later must not take them back. Older segments were
/// synced before the next one was created (`Writer::rotate`).
fn sync_replayed(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()?;
    #[cfg(test)]
    tests::synced(path, fs::metadata(path)?.len());
    Ok(())
}

fn merge_max(into: &mut HashMap<u32, u64>, from: impl IntoIterator<Item = (u32, u64)>) {
    for (k, v) in from {
        let m = into.entry(k).or_insert(0);
        *m = (*m).max(v);
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`: replays every segment, truncates a torn tail,
    /// starts a new segment and the writer thread. A failed write or sync later trips
    /// `health` (and fails every write after it).
    pub fn open(dir: &Path, health: &StorageHealth) -> io::Result<Wal> {
        Self::open_with(dir, SEGMENT_BYTES, health)
    }

    /// [`Wal::open`] with segments of `segment_bytes` (tests use small ones).
    pub fn open_with(dir: &Path, segment_bytes: u64, health: &StorageHealth) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        let mut sequences: Vec<u64> = Vec::new();
        for item in fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
                sequences.push(seq);
            }
        }
        sequences.sort_unstable();
        let mut shards: BTreeMap<u32, ShardLog> = BTreeMap::new();
        let mut segments = VecDeque::new();
        let mut after_v2 = false;
        for (i, &sequence) in sequences.iter().enumerate() {
            let path = segment_path(dir, sequence);
            let last = i + 1 == sequences.len();
            let max_index;
            (max_index, after_v2) = replay_segment(&path, sequence, last, after_v2, &mut shards)?;
            let bytes = fs::metadata(&path)?.len();
            segments.push_back(Segment {
                sequence,
                path,
                max_index,
                bytes,
            });
        }
        for (shard, log) in &shards {
            log.check(*shard)?;
        }
        if let Some(newest) = segments.back() {
            sync_replayed(&newest.path)?;
        }
        let durable_purged: HashMap<u32, u64> = shards
            .iter()
            .filter_map(|(k, v)| v.purged.as_ref().map(|p| (*k, p.index())))
            .collect();
        let meta: BTreeMap<u32, ShardMeta> = shards
            .iter()
            .map(|(k, v)| {
                let m = ShardMeta {
                    vote: v.vote,
                    committed: v.committed,
                    purged: v.purged,
                };
                (*k, m)
            })
            .collect();
        // A spare left by a crash before it became a segment holds nothing.
        remove_spare(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            shards: Mutex::new(
                shards
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(Mutex::new(v))))
                    .collect(),
            ),
            observers: std::sync::OnceLock::new(),
            health: health.clone(),
            stats: Mutex::default(),
        });
        let next = sequences.last().map(|s| s + 1).unwrap_or(1);
        let path = segment_path(dir, next);
        let (file, file_bytes) = start_segment(dir, next, segment_bytes, &meta, None)
            .map_err(|e| {
                if writer::is_full(&e) {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot reserve a {segment_bytes}-byte write-ahead log segment at {}: the disk is full ({e}); free space and start again",
                            path.display()
                        ),
                    )
                } else {
                    e
                }
            })?;
        let reserved_bytes = segment_bytes.max(file_bytes);
        segments.push_back(Segment {
            sequence: next,
            path: path.clone(),
            max_index: HashMap::new(),
            bytes: reserved_bytes,
        });
        let mut writer = Writer {
            shared: shared.clone(),
            segments,
            durable_purged,
            rewritten_in: HashMap::new(),
            rewrite_checked: None,
            purges_durable: 0,
            segment_bytes,
            file_bytes,
            reserved_bytes,
            file,
            path,
            meta,
            spare: None,
            spare_tried: None,
            held: None,
            marked: false,
            last_write: std::time::Instant::now(),
        };
        writer
            .keep_spare()
            .map_err(|(path, e)| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        writer.publish_stats();
        let writer = std::thread::Builder::new()
            .name("ringkv-wal".into())
            .spawn(move || writer.run())?;
        Ok(Wal {
            _closer: Arc::new(Closer {
                shared: shared.clone(),
                writer: Some(writer),
            }),
            shared,
        })
    }

    /// Starts reporting write timings to `observers` (first call wins).
    pub fn observe(&self, observers: FlushObservers) {
        let _ = self.shared.observers.set(observers);
    }

    /// The in-memory log of `shard` (created empty if the stream never named it).
    pub fn shard(&self, shard: u32) -> io::Result<Arc<Mutex<ShardLog>>> {
        Ok(lock(&self.shared.shards)?.entry(shard).or_default().clone())
    }

    /// Applies `change` to the shard's log and queues `record`, atomically with respect to
    /// every other change (so the stream order is the change order).
    pub(crate) fn change(
        &self,
        log: &Mutex<ShardLog>,
        record: Queued,
        change: impl FnOnce(&mut ShardLog),
    ) -> io::Result<()> {
        let mut pending = lock(&self.shared.pending)?;
        if let Some(e) = &pending.failed {
            return Err(io::Error::other(format!(
                "write-ahead log failed earlier: {e}"
            )));
        }
        if pending.closed {
            return Err(io::Error::other("write-ahead log closed"));
        }
        change(&mut *lock(log)?);
        frame(&mut pending.buf, &record.body);
        if let Some(i) = record.max_index {
            merge_max(&mut pending.max_index, [(record.shard, i)]);
        }
        if let Some(i) = record.purged_to {
            merge_max(&mut pending.purged_to, [(record.shard, i)]);
        }
        if let Some(m) = record.meta {
            pending.meta.push((record.shard, m));
        }
        // Records nobody waits for (committed, truncate, purge) ride along with the next
        // waited-for write instead of costing an fsync of their own.
        let wake = record.waiter.is_some() || pending.buf.len() > PENDING_BYTES_MAX / 2;
        if let Some(w) = record.waiter {
            pending.waiters.push(w);
        }
        drop(pending);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Bytes of `shard`'s unpurged entries (as `entry_bytes` counts them); 0 for a shard the
    /// log does not hold.
    pub fn live_bytes(&self, shard: u32) -> u64 {
        let log = match self.shared.shards.lock() {
            Ok(shards) => shards.get(&shard).cloned(),
            Err(_) => None,
        };
        log.and_then(|log| log.lock().ok().map(|l| l.live_bytes()))
            .unwrap_or(0)
    }

    /// The log's footprint as of the last write.
    pub fn stats(&self) -> WalStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Whether queued bytes are past the bound (callers then wait for a flush first).
    pub(crate) fn backlogged(&self) -> bool {
        self.shared
            .pending
            .lock()
            .map(|p| p.buf.len() > PENDING_BYTES_MAX)
            .unwrap_or(false)
    }

    /// Returns once everything queued before this call is durable.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending)?;
            if let Some(e) = &pending.failed {
                return Err(io::Error::other(format!(
                    "write-ahead log failed earlier: {e}"
                )));
            }
            pending.waiters.push(Waiter::Ticket(tx));
        }
        self.shared.wake.notify_one();
        rx.await
            .map_err(|_| io::Error::other("write-ahead log writer stopped"))?
    }
}

#[cfg(test)]
mod tests;
