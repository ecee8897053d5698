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
use std::time::{Duration, Instant};

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use super::record::{
    MetaChange, Record, SEGMENT_HEADER_BYTES, ShardMeta, frame, seal, segment_header,
};
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
    /// Metadata changes among the queued records, in stream order.
    pub(super) meta: Vec<(u32, MetaChange)>,
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
/// The file a segment is prepared in before it is named (never read by replay: not a
/// `<sequence>.wal` name).
const SPARE_NAME: &str = "next-segment.spare";
/// How often a spare segment is tried again while the disk is full.
const SPARE_RETRY: Duration = Duration::from_secs(1);
/// How long the log is idle before the writer follows its last batch with a mark.
pub(super) const MARK_IDLE: Duration = Duration::from_secs(1);

/// Whether `e` means the disk (or the user's quota) is full: the WAL then waits for space
/// instead of failing.
pub(super) fn is_full(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(e.raw_os_error(), Some(c) if c == Errno::ENOSPC as i32 || c == Errno::EDQUOT as i32)
}

/// Removes a spare segment left behind (at open: it never became part of the stream).
pub(super) fn remove_spare(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(SPARE_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The head of segment `sequence`, starting with every shard at `meta`: the segment header,
/// then one checkpoint per shard, sealed as the batch at offset 0 (see `record`).
fn head(sequence: u64, meta: &BTreeMap<u32, ShardMeta>) -> io::Result<Vec<u8>> {
    let mut head = segment_header(sequence).to_vec();
    for (shard, m) in meta {
        frame(&mut head, &encode(&m.checkpoint(*shard))?);
    }
    let at = SEGMENT_HEADER_BYTES as u64;
    seal(&mut head[SEGMENT_HEADER_BYTES..], sequence, at, 0)?;
    Ok(head)
}

/// Creates segment `sequence` headed by its header and every shard's metadata as of the end of
/// the stream before it (`meta`), synced with its directory, and allocated up front to `bytes` (records
/// are then written inside it, and an `fdatasync` need not also record a new file size;
/// 158-193 -> 127-164 us per 400-byte write and sync, measured standalone on this machine's
/// disk). `spare`, when given, is a file at [`SPARE_NAME`] already allocated to `bytes`: it is
/// headed, synced and renamed into place, so a full disk cannot stop the rotation. Returns the
/// file and the bytes of its head.
pub(super) fn start_segment(
    dir: &Path,
    sequence: u64,
    bytes: u64,
    meta: &BTreeMap<u32, ShardMeta>,
    spare: Option<File>,
) -> io::Result<(File, u64)> {
    let path = segment_path(dir, sequence);
    let head = head(sequence, meta)?;
    let bytes = bytes.max(head.len() as u64);
    let file = match spare {
        Some(file) => {
            file.write_all_at(&head, 0)?;
            file.sync_data()?;
            fs::rename(dir.join(SPARE_NAME), &path)?;
            file
        }
        None => {
            let file = OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)?;
            file.write_all_at(&head, 0)?;
            if let Err(e) = reserve(&file, bytes).and_then(|_| file.sync_data()) {
                // Nothing of the stream is in it yet: leave no half-made segment behind.
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            file
        }
    };
    sync_dir(dir)?;
    #[cfg(test)]
    super::tests::synced(&path, head.len() as u64);
    Ok((file, head.len() as u64))
}

/// Allocates a spare segment of `bytes` at [`SPARE_NAME`]; removes it again when that fails.
fn make_spare(dir: &Path, bytes: u64) -> io::Result<File> {
    let path = dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    if let Err(e) = reserve(&file, bytes) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
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
#[derive(Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) max_index: HashMap<u32, u64>,
    pub(super) purged_to: HashMap<u32, u64>,
    pub(super) rewrites: Vec<u32>,
    pub(super) meta: Vec<(u32, MetaChange)>,
    /// Whether it is a mark alone (see [`Writer::marked`]).
    pub(super) mark: bool,
}

impl Batch {
    fn take(p: &mut Pending) -> Batch {
        Batch {
            mark: false,
            buf: std::mem::take(&mut p.buf),
            waiters: std::mem::take(&mut p.waiters),
            max_index: std::mem::take(&mut p.max_index),
            purged_to: std::mem::take(&mut p.purged_to),
            rewrites: std::mem::take(&mut p.rewrites),
            meta: std::mem::take(&mut p.meta),
        }
    }

    /// A batch of one [`Record::Mark`] (see [`Writer::marked`]).
    fn mark() -> Batch {
        Batch {
            buf: MARK_FRAME.clone(),
            mark: true,
            ..Batch::default()
        }
    }
}

/// A [`Record::Mark`], framed.
static MARK_FRAME: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::new();
    // A unit variant always encodes; should it not, no mark is ever written (`mark_due`).
    if let Ok(body) = encode(&Record::<()>::Mark) {
        frame(&mut out, &body);
    }
    out
});

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
    /// Bytes allocated to the current segment: records are written only inside them.
    pub(super) reserved_bytes: u64,
    /// Per shard, the metadata as of the end of what was written (the next segment's head).
    pub(super) meta: BTreeMap<u32, ShardMeta>,
    /// The next segment, allocated ahead of need (`None` while the disk is too full for it).
    pub(super) spare: Option<File>,
    /// When allocating a spare last failed for want of space.
    pub(super) spare_tried: Option<Instant>,
    /// A batch taken for writing that did not fit and could not get a new segment: written
    /// first once space returns.
    pub(super) held: Option<Batch>,
    /// Whether the last batch in the current segment is a mark, so that damage to every batch
    /// before it is told from a torn write at replay (see the module note). False after a
    /// segment's head and after every other batch.
    pub(super) marked: bool,
    /// When the last batch was written (or the segment begun).
    pub(super) last_write: Instant,
}

impl Writer {
    pub(super) fn run(mut self) {
        loop {
            let (batch, failed) = match self.held.take() {
                Some(batch) => {
                    let failed = lock(&self.shared.pending)
                        .map(|p| p.failed.clone())
                        .unwrap_or_else(|e| Some(e.to_string()));
                    (batch, failed)
                }
                None => {
                    let Ok(mut p) = self.shared.pending.lock() else {
                        return;
                    };
                    while p.waiters.is_empty()
                        && p.buf.len() <= PENDING_BYTES_MAX / 2
                        && !p.closed
                        && !self.spare_due()
                        && !(p.buf.is_empty() && self.mark_due(MARK_IDLE))
                    {
                        let wait = match p.buf.is_empty() && self.mark_due(Duration::ZERO) {
                            true => MARK_IDLE.saturating_sub(self.last_write.elapsed()),
                            false => SPARE_RETRY,
                        };
                        p = match self.shared.wake.wait_timeout(p, wait.min(SPARE_RETRY)) {
                            Ok((p, _)) => p,
                            Err(_) => return,
                        };
                    }
                    let idle = p.buf.is_empty() && p.waiters.is_empty();
                    if p.closed && idle {
                        let failed = p.failed.is_some();
                        drop(p);
                        // A clean close leaves a mark after the last batch.
                        if !failed && self.mark_due(Duration::ZERO) {
                            let (result, _) = self.write_out(Batch::mark());
                            if let Err(failure) = result {
                                self.fail(&failure);
                            }
                        }
                        return;
                    }
                    let mut batch = Batch::take(&mut p);
                    if idle && p.failed.is_none() && self.mark_due(MARK_IDLE) {
                        batch = Batch::mark();
                    }
                    (batch, p.failed.clone())
                }
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
            // Room first: a batch is written only inside allocated space, so a full disk
            // shows when space is allocated, never halfway through a record.
            match self.make_room(batch.buf.len() as u64) {
                Ok(true) => {}
                Ok(false) => {
                    if self.wait_for_space(batch) {
                        continue;
                    }
                    return;
                }
                Err(failure) => {
                    self.fail(&failure);
                    let outcome = Err(format!("{}: {}", failure.0.display(), failure.1));
                    for w in batch.waiters {
                        w.complete(&outcome);
                    }
                    continue;
                }
            }
            // Waiters complete after segment upkeep, so whoever waited sees its effects.
            let (result, waiters) = self.write_out(batch);
            let result = result.and_then(|_| self.maintain());
            if let Err(failure) = &result {
                self.fail(failure);
            }
            let outcome = result.map_err(|(path, e)| format!("{}: {e}", path.display()));
            for w in waiters {
                w.complete(&outcome);
            }
        }
    }

    /// Whether a mark should follow the last batch once the log has been idle for `idle`:
    /// the last batch is not one, nothing waits for space, and a mark fits in the segment's
    /// allocation (a mark never starts a segment).
    fn mark_due(&self, idle: Duration) -> bool {
        !self.marked
            && self.held.is_none()
            && !MARK_FRAME.is_empty()
            && self.file_bytes + MARK_FRAME.len() as u64 <= self.reserved_bytes
            && self.last_write.elapsed() >= idle
    }

    /// Trips fail-stop: the node's storage health and the queue.
    fn fail(&self, (path, e): &Failure) {
        self.shared.health.fail("write-ahead log write", path, e);
        if let Ok(mut p) = self.shared.pending.lock() {
            p.failed = Some(format!("{}: {e}", path.display()));
        }
    }

    /// Keeps `batch` until the disk has room for it: waits a retry interval (or until the log
    /// closes). Returns false when the log closed meanwhile; the batch's waiters, and every
    /// queued one, then fail (nothing of them was written).
    fn wait_for_space(&mut self, batch: Batch) -> bool {
        let Ok(p) = self.shared.pending.lock() else {
            return false;
        };
        let mut p = match self
            .shared
            .wake
            .wait_timeout_while(p, SPARE_RETRY, |p| !p.closed)
        {
            Ok((p, _)) => p,
            Err(_) => return false,
        };
        if !p.closed {
            self.held = Some(batch);
            return true;
        }
        let outcome = Err("the write-ahead log closed while the disk was full".to_string());
        let queued = std::mem::take(&mut p.waiters);
        p.buf.clear();
        drop(p);
        for w in batch.waiters.into_iter().chain(queued) {
            w.complete(&outcome);
        }
        false
    }

    /// Whether a spare segment should be tried now (none is held, and the last try for want
    /// of space is a retry interval old).
    fn spare_due(&self) -> bool {
        self.spare.is_none() && self.spare_tried.is_none_or(|t| t.elapsed() >= SPARE_RETRY)
    }

    /// Allocates the next segment ahead of need when none is held and a try is due. For want
    /// of space it reports the shortage to the node (which refuses new writes) and tries
    /// again later; any other error is a storage failure.
    pub(super) fn keep_spare(&mut self) -> Result<(), Failure> {
        if !self.spare_due() {
            return Ok(());
        }
        match make_spare(&self.shared.dir, self.segment_bytes) {
            Ok(file) => {
                self.spare = Some(file);
                self.spare_tried = None;
                self.shared.health.set_space_short(None);
                Ok(())
            }
            Err(e) if is_full(&e) => {
                self.spare_tried = Some(Instant::now());
                self.shared.health.set_space_short(Some(format!(
                    "cannot allocate the next {}-byte write-ahead log segment in {}: {e}",
                    self.segment_bytes,
                    self.shared.dir.display()
                )));
                Ok(())
            }
            Err(e) => Err((self.shared.dir.join(SPARE_NAME), e)),
        }
    }

    /// Makes sure `bytes` more fit inside the current segment's allocation, starting the next
    /// segment if they do not. `Ok(false)`: no space for it now (nothing was changed).
    fn make_room(&mut self, bytes: u64) -> Result<bool, Failure> {
        if self.file_bytes + bytes <= self.reserved_bytes {
            return Ok(true);
        }
        self.rotate(bytes)
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
        if let Some(o) = self.shared.observers.get()
            && !(batch.buf.is_empty() && batch.waiters.is_empty())
        {
            o.flush_seconds.observe(started.elapsed().as_secs_f64());
            o.waiters_per_flush.observe(batch.waiters.len() as f64);
        }
        if result.is_ok() {
            if !batch.buf.is_empty() {
                self.marked = batch.mark;
                self.last_write = Instant::now();
            }
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
            for (shard, change) in &batch.meta {
                self.meta.entry(*shard).or_default().apply(change);
            }
            if !batch.rewrites.is_empty()
                && let Ok(mut stats) = self.shared.stats.lock()
            {
                stats.rewrites += batch.rewrites.len() as u64;
            }
        }
        (result, batch.waiters)
    }

    /// Removes segments that no shard needs, oldest first; rewrites forward what keeps the
    /// oldest one; allocates the next segment ahead of need; refreshes the stats.
    fn maintain(&mut self) -> Result<(), Failure> {
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
        self.keep_spare()?;
        self.publish_stats();
        Ok(())
    }

    /// Closes the current segment and starts the next one, allocated for at least `bytes`
    /// more. The new head records the metadata as of the end of the closed segment, which is
    /// exactly what replay has seen by then (a durable `committed` never names entries that
    /// are not durable). `Ok(false)`: the disk has no room for a new segment; nothing changed.
    fn rotate(&mut self, bytes: u64) -> Result<bool, Failure> {
        let next = self.segments.back().map(|s| s.sequence + 1).unwrap_or(1);
        let head_bytes = head(next, &self.meta)
            .map_err(|e| (self.path.clone(), e))?
            .len() as u64;
        let size = self.segment_bytes.max(head_bytes + bytes);
        let dir = self.shared.dir.clone();
        let spare_path = dir.join(SPARE_NAME);
        let spare = match self.spare.take() {
            Some(spare) => spare,
            None => match make_spare(&dir, size) {
                Ok(spare) => spare,
                Err(e) if is_full(&e) => {
                    self.spare_tried = Some(Instant::now());
                    self.shared.health.set_space_short(Some(format!(
                        "the write-ahead log segment {} is full and the next one cannot be allocated: {e}",
                        self.path.display()
                    )));
                    return Ok(false);
                }
                Err(e) => return Err((spare_path, e)),
            },
        };
        if size > self.segment_bytes
            && let Err(e) = reserve(&spare, size)
        {
            if is_full(&e) {
                self.spare = Some(spare);
                self.shared.health.set_space_short(Some(format!(
                    "cannot allocate {size} bytes for a write-ahead log segment: {e}"
                )));
                return Ok(false);
            }
            return Err((spare_path, e));
        }
        // The closed segment ends at its last record (only the newest may have a tail).
        self.file
            .set_len(self.file_bytes)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| (self.path.clone(), e))?;
        #[cfg(test)]
        super::tests::synced(&self.path, self.file_bytes);
        if let Some(closed) = self.segments.back_mut() {
            closed.bytes = self.file_bytes;
        }
        let next_path = segment_path(&dir, next);
        let (file, head_bytes) = start_segment(&dir, next, size, &self.meta, Some(spare))
            .map_err(|e| (next_path.clone(), e))?;
        self.file = file;
        self.file_bytes = head_bytes;
        self.reserved_bytes = size;
        self.marked = false;
        self.last_write = Instant::now();
        self.path = next_path.clone();
        self.segments.push_back(Segment {
            sequence: next,
            path: next_path,
            max_index: HashMap::new(),
            bytes: size,
        });
        self.keep_spare()?;
        Ok(true)
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
            let live_bytes: usize = log.live_bytes() as usize;
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
                entries: log.entries(),
            };
            frame(&mut pending.buf, &encode(&record).map_err(at)?);
            if let Some(last) = log.entries().back() {
                merge_max(&mut pending.max_index, [(shard, last.index())]);
            }
            pending.rewrites.push(shard);
        }
        Ok(())
    }

    pub(super) fn publish_stats(&self) {
        let mut pinned: BTreeMap<u32, u64> = BTreeMap::new();
        for segment in &self.segments {
            for shard in self.pinning(segment) {
                *pinned.entry(shard).or_default() += 1;
            }
        }
        if let Ok(mut stats) = self.shared.stats.lock() {
            let spare_bytes = self.spare.as_ref().map_or(0, |_| self.segment_bytes);
            stats.bytes = self.segments.iter().map(|s| s.bytes).sum::<u64>() + spare_bytes;
            stats.segments = self.segments.len() as u64;
            stats.segments_pinned = pinned;
        }
    }
}
