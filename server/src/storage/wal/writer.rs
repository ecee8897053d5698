//! The writer thread: takes what is queued, writes and `fdatasync`s it into the current
//! segment, completes the waiters, rotates full segments, removes segments no shard needs
//! and copies forward the few live entries that would otherwise keep the oldest one.
//!
//! Fail-stop: the first failed write or sync trips the node's storage health and marks the
//! queue failed; from then on nothing is written and every waiter fails.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use super::record::{Record, SEGMENT_HEADER_BYTES, entry_bytes, frame, seal, segment_header};
use super::{PENDING_BYTES_MAX, Shared, lock, merge_max, segment_path};
use crate::codec::encode;
use crate::typ::TypeConfig;

/// A shard whose live entries take at most this many bytes is rewritten forward when it pins
/// the oldest segment; a larger one needs a snapshot and purge instead.
const REWRITE_BYTES_MAX: usize = 4 * 1024 * 1024;

pub(crate) enum Waiter {
    Log(IOFlushed<TypeConfig>),
    Ticket(oneshot::Sender<io::Result<()>>),
}

impl Waiter {
    fn complete(self, result: &Result<(), String>) {
        let r = result
            .clone()
            .map_err(|e| io::Error::other(format!("write-ahead log write failed: {e}")));
        match self {
            Waiter::Log(cb) => cb.io_completed(r),
            Waiter::Ticket(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Records queued for the next write, with the waiters they carry.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) buf: Vec<u8>,
    pub(super) waiters: Vec<Waiter>,
    /// Highest entry index per shard among the queued records.
    pub(super) max_index: HashMap<u32, u64>,
    /// Purge points among the queued records, per shard (segments are removed only behind
    /// purges that are durable).
    pub(super) purged_to: HashMap<u32, u64>,
    pub(super) closed: bool,
    /// Set once a write failed; every later operation fails with it.
    pub(super) failed: Option<String>,
    /// Shards whose live entries were queued again as one record (rewritten forward).
    pub(super) rewrites: Vec<u32>,
}
pub(super) struct Segment {
    pub(super) sequence: u64,
    pub(super) path: PathBuf,
    /// Highest entry index per shard written into this segment.
    pub(super) max_index: HashMap<u32, u64>,
    /// Bytes the file takes (its records once closed; its reservation while current).
    pub(super) bytes: u64,
}

/// `fdatasync` of the records just written. Builds with the test-only `fault-injection`
/// feature skip it while `RINGKV_FAULT_WAL_SKIP_SYNC=1` is set, so the power-loss tests can show
/// that they find the writes such a node loses; no other build can skip it.
fn sync_records(file: &File) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let skip = *SKIP.get_or_init(|| {
            let on = std::env::var_os("RINGKV_FAULT_WAL_SKIP_SYNC").is_some_and(|v| v == "1");
            if on {
                tracing::error!("RINGKV_FAULT_WAL_SKIP_SYNC=1: write-ahead log records are NOT synced (test build)");
            }
            on
        });
        if skip {
            return Ok(());
        }
    }
    file.sync_data()
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
/// Creates segment `sequence` headed by its header and every shard's metadata (the batch at
/// offset 0, see `record`), synced with its directory, and
/// sized to `segment_bytes` up front (a sparse file: records are then written inside it, and
/// an `fdatasync` need not also record a new file size; 158-193 -> 127-164 us per 400-byte
/// write and sync, measured standalone on this machine's disk). Returns the file and the bytes
/// of its head. Called with no other writer running (at open) or under the pending lock
/// (rotation).
pub(super) fn start_segment(
    shared: &Shared,
    sequence: u64,
    segment_bytes: u64,
) -> io::Result<(File, u64)> {
    let path = segment_path(&shared.dir, sequence);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut head = segment_header(sequence).to_vec();
    for (shard, log) in lock(&shared.shards)?.iter() {
        let log = lock(log)?;
        let record: Record<()> = Record::Checkpoint {
            shard: *shard,
            vote: log.vote,
            committed: log.committed,
            purged: log.purged,
        };
        frame(&mut head, &encode(&record)?);
    }
    let at = SEGMENT_HEADER_BYTES as u64;
    seal(&mut head[SEGMENT_HEADER_BYTES..], sequence, at, 0)?;
    file.write_all_at(&head, 0)?;
    reserve(&file, segment_bytes.max(head.len() as u64))?;
    file.sync_data()?;
    #[cfg(test)]
    super::tests::synced(&path, head.len() as u64);
    sync_dir(&shared.dir)?;
    Ok((file, head.len() as u64))
}

/// Allocates the segment's blocks up front (`fallocate`), so a full disk shows as `ENOSPC`
/// here, while no record waits on the segment, and never in the middle of a group commit. A
/// filesystem without `fallocate` gets a sparse file instead (logged once).
fn reserve(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = i64::try_from(bytes).map_err(io::Error::other)?;
    match nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("the filesystem of the write-ahead log has no fallocate: segments are sparse, and a full disk shows only when a record is written");
            });
            file.set_len(bytes)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}
/// Records taken from [`Pending`] for one write.
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) max_index: HashMap<u32, u64>,
    pub(super) purged_to: HashMap<u32, u64>,
    pub(super) rewrites: Vec<u32>,
}

impl Batch {
    fn take(p: &mut Pending) -> Batch {
        Batch {
            buf: std::mem::take(&mut p.buf),
            waiters: std::mem::take(&mut p.waiters),
            max_index: std::mem::take(&mut p.max_index),
            purged_to: std::mem::take(&mut p.purged_to),
            rewrites: std::mem::take(&mut p.rewrites),
        }
    }
}
/// A failed write or sync, and the file it failed on.
type Failure = (PathBuf, io::Error);

/// The writer thread's state: writes queued records, syncs, completes waiters, rotates and
/// removes segments.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    /// The current segment's path (named when it fails).
    pub(super) path: PathBuf,
    pub(super) segments: VecDeque<Segment>,
    /// Per shard, the highest purge point whose record is durable.
    pub(super) durable_purged: HashMap<u32, u64>,
    /// Per shard, the segment holding its latest durable copy of all its live entries:
    /// older segments hold nothing of it that is still needed.
    pub(super) rewritten_in: HashMap<u32, u64>,
    /// (oldest segment, durable purges) when copying forward was last considered.
    pub(super) rewrite_checked: Option<(u64, u64)>,
    /// Batches with purges made durable so far.
    pub(super) purges_durable: u64,
    pub(super) segment_bytes: u64,
    /// Bytes in the current segment.
    pub(super) file_bytes: u64,
}

impl Writer {
    pub(super) fn run(mut self) {
        loop {
            let (batch, failed) = {
                let Ok(mut p) = self.shared.pending.lock() else {
                    return;
                };
                while p.waiters.is_empty() && p.buf.len() <= PENDING_BYTES_MAX / 2 && !p.closed {
                    p = match self.shared.wake.wait(p) {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                }
                if p.closed && p.buf.is_empty() && p.waiters.is_empty() {
                    return;
                }
                (Batch::take(&mut p), p.failed.clone())
            };
            if let Some(e) = failed {
                // Fail-stop: after a failed write or sync nothing is written (it would land
                // over the failed batch) and nothing is acknowledged.
                let outcome = Err(e);
                for w in batch.waiters {
                    w.complete(&outcome);
                }
                continue;
            }
            // Waiters complete after segment upkeep, so whoever waited sees its effects.
            let (result, waiters) = self.write_out(batch);
            let result = result.and_then(|_| self.maintain());
            if let Err((path, e)) = &result {
                self.shared.health.fail("write-ahead log write", path, e);
                if let Ok(mut p) = self.shared.pending.lock() {
                    p.failed = Some(format!("{}: {e}", path.display()));
                }
            }
            let outcome = result.map_err(|(path, e)| format!("{}: {e}", path.display()));
            for w in waiters {
                w.complete(&outcome);
            }
        }
    }

    /// Writes and syncs one batch into the current segment; returns its waiters, to be
    /// completed with the outcome.
    fn write_out(&mut self, mut batch: Batch) -> (Result<(), Failure>, Vec<Waiter>) {
        #[cfg(test)]
        super::tests::write_gate(batch.buf.len());
        let started = Instant::now();
        let result = if batch.buf.is_empty() {
            Ok(())
        } else {
            // A batch begins where it is written, in the current segment (the newest).
            let sequence = self.segments.back().map_or(0, |s| s.sequence);
            seal(&mut batch.buf, sequence, self.file_bytes, self.file_bytes)
                .and_then(|_| self.file.write_all_at(&batch.buf, self.file_bytes))
                .and_then(|_| sync_records(&self.file))
                .map_err(|e| (self.path.clone(), e))
        };
        if let Some(o) = self.shared.observers.get() {
            o.flush_seconds.observe(started.elapsed().as_secs_f64());
            o.waiters_per_flush.observe(batch.waiters.len() as f64);
        }
        if result.is_ok() {
            self.file_bytes += batch.buf.len() as u64;
            #[cfg(test)]
            if !batch.buf.is_empty() {
                super::tests::synced(&self.path, self.file_bytes);
            }
            if let Some(seg) = self.segments.back_mut() {
                merge_max(&mut seg.max_index, batch.max_index);
                for shard in &batch.rewrites {
                    self.rewritten_in.insert(*shard, seg.sequence);
                }
                seg.bytes = seg.bytes.max(self.file_bytes);
            }
            if !batch.purged_to.is_empty() {
                self.purges_durable += 1;
            }
            merge_max(&mut self.durable_purged, batch.purged_to);
            if !batch.rewrites.is_empty()
                && let Ok(mut stats) = self.shared.stats.lock()
            {
                stats.rewrites += batch.rewrites.len() as u64;
            }
        }
        (result, batch.waiters)
    }

    /// Starts a new segment when the current one is full; removes segments that no shard
    /// needs, oldest first; rewrites forward what keeps the oldest one; refreshes the stats.
    fn maintain(&mut self) -> Result<(), Failure> {
        if self.file_bytes >= self.segment_bytes {
            self.rotate()?;
        }
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            if !self.pinning(oldest).is_empty() {
                break;
            }
            // A segment that cannot be removed now is retried after the next write.
            if let Err(e) = fs::remove_file(&oldest.path) {
                tracing::warn!(segment = %oldest.path.display(), error = %e, "cannot remove a purged write-ahead log segment");
                break;
            }
            #[cfg(test)]
            super::tests::removed(&oldest.path);
            self.segments.pop_front();
        }
        self.rewrite_forward()?;
        self.publish_stats();
        Ok(())
    }

    /// Closes the full segment and starts the next one.
    fn rotate(&mut self) -> Result<(), Failure> {
        let next = self.segments.back().map(|s| s.sequence + 1).unwrap_or(1);
        let next_path = segment_path(&self.shared.dir, next);
        // Under the pending lock, with everything queued written into the old segment
        // first: the new head's metadata then describes exactly the stream before it (a
        // durable `committed` never names entries that are not durable).
        let shared = self.shared.clone();
        let mut pending = lock(&shared.pending).map_err(|e| (self.path.clone(), e))?;
        if pending.failed.is_some() {
            return Ok(());
        }
        let batch = Batch::take(&mut pending);
        let (result, waiters) = self.write_out(batch);
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|(path, e)| format!("{}: {e}", path.display()));
        for w in waiters {
            w.complete(&outcome);
        }
        result?;
        // The full segment ends at its last record (only the newest may have a tail).
        self.file
            .set_len(self.file_bytes)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| (self.path.clone(), e))?;
        #[cfg(test)]
        super::tests::synced(&self.path, self.file_bytes);
        if let Some(closed) = self.segments.back_mut() {
            closed.bytes = self.file_bytes;
        }
        let (file, head_bytes) = start_segment(&self.shared, next, self.segment_bytes)
            .map_err(|e| (next_path.clone(), e))?;
        self.file = file;
        self.file_bytes = head_bytes;
        self.path = next_path.clone();
        drop(pending);
        self.segments.push_back(Segment {
            sequence: next,
            path: next_path,
            max_index: HashMap::new(),
            bytes: self.segment_bytes.max(head_bytes),
        });
        Ok(())
    }

    /// The shards that still need entries in `segment`: neither purged past them nor
    /// rewritten into a newer segment since.
    fn pinning(&self, segment: &Segment) -> Vec<u32> {
        segment
            .max_index
            .iter()
            .filter(|(shard, max)| {
                let purged = self.durable_purged.get(shard).is_some_and(|p| p >= max);
                let rewritten = self
                    .rewritten_in
                    .get(shard)
                    .is_some_and(|s| *s > segment.sequence);
                !(purged || rewritten)
            })
            .map(|(shard, _)| *shard)
            .collect()
    }

    /// When the oldest closed segment is kept only by shards with few live entries, queues
    /// each such shard's whole live log again as one record, so the segment can go once that
    /// record is durable. Without this, a shard that rarely writes, and so never reaches its
    /// snapshot threshold, would keep every segment written after its last entry, however
    /// fast other shards purge. Replay applies the copy like any append: it replaces the same
    /// entries with themselves.
    ///
    /// Bounds: nothing is copied while a shard with more than [`REWRITE_BYTES_MAX`] of live
    /// entries also keeps the segment (it goes with that shard's next snapshot and purge), and
    /// one round copies at most a quarter of a segment, so copies never fill segments by
    /// themselves. Checked again only when the oldest segment or the durable purges change.
    fn rewrite_forward(&mut self) -> Result<(), Failure> {
        let Some(oldest) = self.segments.front().filter(|_| self.segments.len() > 1) else {
            return Ok(());
        };
        let state = (oldest.sequence, self.purges_durable);
        if self.rewrite_checked == Some(state) {
            return Ok(());
        }
        self.rewrite_checked = Some(state);
        let pinning = self.pinning(oldest);
        if pinning.is_empty() {
            return Ok(());
        }
        let at = |e: io::Error| (self.path.clone(), e);
        let mut pending = lock(&self.shared.pending).map_err(at)?;
        if pending.failed.is_some() || pending.closed {
            return Ok(());
        }
        let shards = lock(&self.shared.shards).map_err(at)?;
        let mut logs = Vec::with_capacity(pinning.len());
        let mut total_bytes = 0usize;
        for shard in pinning {
            let Some(log) = shards.get(&shard) else {
                continue;
            };
            let log = lock(log).map_err(at)?;
            let live_bytes: usize = log.entries.iter().map(entry_bytes).sum();
            if live_bytes > REWRITE_BYTES_MAX {
                return Ok(());
            }
            total_bytes += live_bytes;
            logs.push((shard, log));
        }
        if total_bytes as u64 > self.segment_bytes / 4 {
            return Ok(());
        }
        for (shard, log) in logs {
            let record = Record::Append {
                shard,
                entries: &log.entries,
            };
            frame(&mut pending.buf, &encode(&record).map_err(at)?);
            if let Some(last) = log.entries.back() {
                merge_max(&mut pending.max_index, [(shard, last.index())]);
            }
            pending.rewrites.push(shard);
        }
        Ok(())
    }

    fn publish_stats(&self) {
        let mut pinned: BTreeMap<u32, u64> = BTreeMap::new();
        for segment in &self.segments {
            for shard in self.pinning(segment) {
                *pinned.entry(shard).or_default() += 1;
            }
        }
        if let Ok(mut stats) = self.shared.stats.lock() {
            stats.bytes = self.segments.iter().map(|s| s.bytes).sum();
            stats.segments = self.segments.len() as u64;
            stats.segments_pinned = pinned;
        }
    }
}
