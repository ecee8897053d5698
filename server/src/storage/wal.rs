//! The node-wide write-ahead log that holds every shard's Raft log, vote and committed id.
//!
//! Files: `<dir>/<sequence>.wal` segments, replayed in sequence order at start-up; each is
//! allocated at its full size when it is created (`fallocate`) and records are written
//! inside it. A record is
//! `len: u32 LE | xxh3(body): u64 LE | body`, the body a MessagePack `Record`. Every shard's
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
//! - Only the tail of the newest segment can be torn or unused (a full segment is cut to its
//!   last record and synced before the next one is created); replay cuts that tail and treats
//!   damage anywhere else as corruption.
//! - A new segment starts with each shard's vote, committed and purged ids, so a segment is
//!   removable once every entry in it is purged or copied forward into a newer segment (see
//!   `Writer::rewrite_forward`); removal goes oldest first.
//! - Unpurged entries stay in memory (readers never touch the disk); the snapshot policy and
//!   `--log-keep-entries` bound them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::codec::{decode, encode};
use crate::storage::health::StorageHealth;
use crate::typ::{Entry, LogId, TypeConfig, Vote};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes queued but not yet written at most; past this, writers wait for a flush first.
const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;
const HEADER_BYTES: usize = 12;
/// A record body larger than this is damage, not data (entries are capped far below).
const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A shard whose live entries take at most this many bytes is rewritten forward when it pins
/// the oldest segment; a larger one needs a snapshot and purge instead.
const REWRITE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One change to one shard's log, as written to the stream.
#[derive(Serialize, Deserialize)]
pub(crate) enum Record<E> {
    Append {
        shard: u32,
        entries: E,
    },
    Vote {
        shard: u32,
        vote: Vote,
    },
    Committed {
        shard: u32,
        committed: Option<LogId>,
    },
    /// Entries after `after` were removed (all of them when `None`).
    Truncate {
        shard: u32,
        after: Option<LogId>,
    },
    /// Entries up to and including `upto` were removed; the log now starts after it.
    Purge {
        shard: u32,
        upto: LogId,
    },
    /// A shard's metadata at the start of a segment.
    Checkpoint {
        shard: u32,
        vote: Option<Vote>,
        committed: Option<LogId>,
        purged: Option<LogId>,
    },
}

/// Where the writer thread reports each group commit (the node's metrics).
#[derive(Clone)]
pub struct FlushObservers {
    /// Seconds of one write plus `fdatasync`.
    pub flush_seconds: prometheus::Histogram,
    /// Waiters (appends, votes, tickets) one group commit completed.
    pub waiters_per_flush: prometheus::Histogram,
}

/// An encoded [`Record`] on its way into the stream.
pub(crate) struct Queued {
    pub shard: u32,
    pub body: Vec<u8>,
    /// Highest entry index the record appends, if it appends.
    pub max_index: Option<u64>,
    /// The purge point, if the record purges.
    pub purged_to: Option<u64>,
    /// Completed once the record is durable.
    pub waiter: Option<Waiter>,
}

impl Queued {
    pub fn new<E: Serialize>(shard: u32, record: &Record<E>) -> io::Result<Queued> {
        Ok(Queued {
            shard,
            body: encode(record)?,
            max_index: None,
            purged_to: None,
            waiter: None,
        })
    }
}

/// Approximate bytes an entry takes on the wire.
pub(crate) fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(cmd) => match &cmd.op {
            crate::shard::command::Op::Put { key, value } => key.len() + value.len() + 64,
            crate::shard::command::Op::Cas {
                key,
                expected,
                new_value,
            } => {
                let exp = match expected {
                    crate::shard::command::Expected::Value(v) => v.len(),
                    _ => 8,
                };
                key.len() + exp + new_value.as_ref().map_or(0, |v| v.len()) + 64
            }
            op => op.key().len() + 64,
        },
        _ => 256,
    }
}

/// One shard's Raft log as it stands (entries contiguous by index).
#[derive(Default)]
pub struct ShardLog {
    pub entries: VecDeque<Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl ShardLog {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index())
    }

    /// Index of the entry at `index`, if held.
    pub fn position(&self, index: u64) -> Option<usize> {
        let first = self.first_index()?;
        let pos = index.checked_sub(first)? as usize;
        (pos < self.entries.len()).then_some(pos)
    }

    pub(crate) fn truncate_after(&mut self, after: Option<&LogId>) {
        match after {
            None => self.entries.clear(),
            Some(l) => {
                while self.entries.back().is_some_and(|e| e.index() > l.index()) {
                    self.entries.pop_back();
                }
            }
        }
    }

    pub(crate) fn purge(&mut self, upto: &LogId) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.index() <= upto.index())
        {
            self.entries.pop_front();
        }
        if self.purged.as_ref().is_none_or(|p| p < upto) {
            self.purged = Some(*upto);
        }
    }

    /// Appends `entries`, replacing any held entries from the first new index on. A gap before
    /// them (only possible in replay, after an older segment was removed) drops what came
    /// before; [`ShardLog::check`] later verifies a purge covers it.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            let index = entry.index();
            if self.purged.as_ref().is_some_and(|p| index <= p.index()) {
                continue;
            }
            match self.entries.back().map(|e| e.index()) {
                Some(last) if index <= last => {
                    while self.entries.back().is_some_and(|e| e.index() >= index) {
                        self.entries.pop_back();
                    }
                    if self.entries.back().is_some_and(|e| e.index() + 1 != index) {
                        self.entries.clear();
                    }
                }
                Some(last) if index > last + 1 => self.entries.clear(),
                _ => {}
            }
            self.entries.push_back(entry);
        }
    }

    /// After replay: the entries must follow the purged id with no hole.
    fn check(&self, shard: u32) -> io::Result<()> {
        if let (Some(first), Some(p)) = (self.first_index(), self.purged.as_ref())
            && first != p.index() + 1
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "write-ahead log of shard {shard}: entries start at {first} but the log was purged up to {}",
                    p.index()
                ),
            ));
        }
        Ok(())
    }
}

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
struct Pending {
    buf: Vec<u8>,
    waiters: Vec<Waiter>,
    /// Highest entry index per shard among the queued records.
    max_index: HashMap<u32, u64>,
    /// Purge points among the queued records, per shard (segments are removed only behind
    /// purges that are durable).
    purged_to: HashMap<u32, u64>,
    closed: bool,
    /// Set once a write failed; every later operation fails with it.
    failed: Option<String>,
    /// Shards whose live entries were queued again as one record (rewritten forward).
    rewrites: Vec<u32>,
}

struct Segment {
    sequence: u64,
    path: PathBuf,
    /// Highest entry index per shard written into this segment.
    max_index: HashMap<u32, u64>,
    /// Bytes the file takes (its records once closed; its reservation while current).
    bytes: u64,
}

/// The log's footprint, as the writer last saw it (the node's metrics).
#[derive(Clone, Debug, Default)]
pub struct WalStats {
    /// Bytes of every segment file (the current one at its reserved size).
    pub bytes: u64,
    pub segments: u64,
    /// Per shard, how many segments it keeps from removal (entries neither purged nor
    /// rewritten into a newer segment).
    pub segments_pinned: BTreeMap<u32, u64>,
    /// Live entries copied forward so far, as records (see the module note).
    pub rewrites: u64,
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

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
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

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&ringkv_proto::checksum::digest(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Reads one framed record at `pos`; `Ok(None)` when the bytes there are not a whole, intact
/// record (a torn tail, or damage).
fn read_record(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = data.get(pos..pos + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().ok()?);
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let body = data.get(pos + HEADER_BYTES..pos + HEADER_BYTES + len)?;
    (ringkv_proto::checksum::digest(body) == sum).then_some((body, pos + HEADER_BYTES + len))
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
        for (i, &sequence) in sequences.iter().enumerate() {
            let path = segment_path(dir, sequence);
            let last = i + 1 == sequences.len();
            let max_index = replay_segment(&path, last, &mut shards)?;
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
        let durable_purged: HashMap<u32, u64> = shards
            .iter()
            .filter_map(|(k, v)| v.purged.as_ref().map(|p| (*k, p.index())))
            .collect();
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
        let (file, file_bytes) = start_segment(&shared, next, segment_bytes)?;
        segments.push_back(Segment {
            sequence: next,
            path: segment_path(dir, next),
            max_index: HashMap::new(),
            bytes: segment_bytes.max(file_bytes),
        });
        let writer = Writer {
            shared: shared.clone(),
            segments,
            durable_purged,
            rewritten_in: HashMap::new(),
            rewrite_checked: None,
            purges_durable: 0,
            segment_bytes,
            file_bytes,
            file,
            path: segment_path(dir, next),
        };
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

/// Creates segment `sequence` headed by every shard's metadata, synced with its directory, and
/// sized to `segment_bytes` up front (a sparse file: records are then written inside it, and
/// an `fdatasync` need not also record a new file size; 158-193 -> 127-164 us per 400-byte
/// write and sync, measured standalone on this machine's disk). Returns the file and the bytes
/// of its head. Called with no other writer running (at open) or under the pending lock
/// (rotation).
fn start_segment(shared: &Shared, sequence: u64, segment_bytes: u64) -> io::Result<(File, u64)> {
    let path = segment_path(&shared.dir, sequence);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut head = Vec::new();
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
    file.write_all_at(&head, 0)?;
    reserve(&file, segment_bytes.max(head.len() as u64))?;
    file.sync_data()?;
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

/// Whether the bad bytes at `pos` look like a write cut short at the end of the written data
/// (zeroes to the end of the file are the segment's unused space): a record whose header or
/// body runs past the written data, the very last record failing its checksum, or nothing but
/// zeroes. Anything else (a bad record followed by more data) is damage to data that was
/// synced, and is refused rather than cut away.
fn torn_tail(data: &[u8], pos: usize) -> bool {
    let written = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let rest = &data[pos..written.max(pos)];
    if rest.len() < HEADER_BYTES {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    HEADER_BYTES.saturating_add(len) >= rest.len()
}

/// Replays one segment into `shards`; returns the highest entry index per shard in it.
fn replay_segment(
    path: &Path,
    last: bool,
    shards: &mut BTreeMap<u32, ShardLog>,
) -> io::Result<HashMap<u32, u64>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut max_index = HashMap::new();
    let mut pos = 0;
    while pos < data.len() {
        let Some((body, next)) = read_record(&data, pos) else {
            if !last || !torn_tail(&data, pos) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "write-ahead log segment {} is damaged at byte {pos} (not a torn tail); \
                         this node's Raft log cannot be trusted: start it from an empty data \
                         directory so it catches up from the others",
                        path.display()
                    ),
                ));
            }
            if data[pos..].iter().all(|b| *b == 0) {
                tracing::debug!(segment = %path.display(), at = pos, "dropping the unused end of the newest segment");
            } else {
                tracing::warn!(segment = %path.display(), at = pos, dropped_bytes = data.len() - pos,
                    "truncating a torn write-ahead log tail (writes never acknowledged)");
            }
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(pos as u64)?;
            f.sync_all()?;
            break;
        };
        match decode::<Record<Vec<Entry>>>(body)? {
            Record::Append { shard, entries } => {
                if let Some(e) = entries.last() {
                    merge_max(&mut max_index, [(shard, e.index())]);
                }
                shards.entry(shard).or_default().append(entries);
            }
            Record::Vote { shard, vote } => shards.entry(shard).or_default().vote = Some(vote),
            Record::Committed { shard, committed } => {
                shards.entry(shard).or_default().committed = committed;
            }
            Record::Truncate { shard, after } => {
                shards
                    .entry(shard)
                    .or_default()
                    .truncate_after(after.as_ref());
            }
            Record::Purge { shard, upto } => shards.entry(shard).or_default().purge(&upto),
            Record::Checkpoint {
                shard,
                vote,
                committed,
                purged,
            } => {
                let log = shards.entry(shard).or_default();
                if vote.is_some() {
                    log.vote = vote;
                }
                if committed.is_some() {
                    log.committed = committed;
                }
                if let Some(p) = purged {
                    log.purge(&p);
                }
            }
        }
        pos = next;
    }
    Ok(max_index)
}

/// Records taken from [`Pending`] for one write.
struct Batch {
    buf: Vec<u8>,
    waiters: Vec<Waiter>,
    max_index: HashMap<u32, u64>,
    purged_to: HashMap<u32, u64>,
    rewrites: Vec<u32>,
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

fn merge_max(into: &mut HashMap<u32, u64>, from: impl IntoIterator<Item = (u32, u64)>) {
    for (k, v) in from {
        let m = into.entry(k).or_insert(0);
        *m = (*m).max(v);
    }
}

/// The writer thread: writes queued records, syncs, completes waiters, rotates and removes
/// segments.
/// A failed write or sync, and the file it failed on.
type Failure = (PathBuf, io::Error);

struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// The current segment's path (named when it fails).
    path: PathBuf,
    segments: VecDeque<Segment>,
    /// Per shard, the highest purge point whose record is durable.
    durable_purged: HashMap<u32, u64>,
    /// Per shard, the segment holding its latest durable copy of all its live entries:
    /// older segments hold nothing of it that is still needed.
    rewritten_in: HashMap<u32, u64>,
    /// (oldest segment, durable purges) when copying forward was last considered.
    rewrite_checked: Option<(u64, u64)>,
    /// Batches with purges made durable so far.
    purges_durable: u64,
    segment_bytes: u64,
    /// Bytes in the current segment.
    file_bytes: u64,
}

impl Writer {
    fn run(mut self) {
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
    fn write_out(&mut self, batch: Batch) -> (Result<(), Failure>, Vec<Waiter>) {
        #[cfg(test)]
        tests::write_gate(batch.buf.len());
        let started = Instant::now();
        let result = if batch.buf.is_empty() {
            Ok(())
        } else {
            self.file
                .write_all_at(&batch.buf, self.file_bytes)
                .and_then(|_| sync_records(&self.file))
                .map_err(|e| (self.path.clone(), e))
        };
        if let Some(o) = self.shared.observers.get() {
            o.flush_seconds.observe(started.elapsed().as_secs_f64());
            o.waiters_per_flush.observe(batch.waiters.len() as f64);
        }
        if result.is_ok() {
            self.file_bytes += batch.buf.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::log_store::LogStore;
    use crate::typ::TypeConfig;
    use openraft::RaftLogReader;
    use openraft::storage::RaftLogStorage;
    use openraft::type_config::TypeConfigExt;

    fn entry(term: u64, index: u64) -> Entry {
        openraft::testing::blank_ent::<TypeConfig>(term, 1, index)
    }

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
        let (tx, rx) = TypeConfig::oneshot();
        let cb = IOFlushed::<TypeConfig>::signal(tx);
        store.append(entries, cb).await?;
        rx.await.map_err(io::Error::other)?
    }

    async fn indexes(store: &mut LogStore) -> io::Result<Vec<u64>> {
        Ok(store
            .try_get_log_entries(0..u64::MAX)
            .await?
            .iter()
            .map(|e| e.index())
            .collect())
    }

    /// Where the records of a segment end (the rest is unused space).
    fn data_end(path: &Path) -> io::Result<usize> {
        let data = fs::read(path)?;
        let mut pos = 0;
        while let Some((_, next)) = read_record(&data, pos) {
            pos = next;
        }
        Ok(pos)
    }

    fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    }

    #[tokio::test]
    async fn replay_rebuilds_entries_vote_committed_truncation_and_purge() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let wal = Wal::open(dir.path(), &StorageHealth::default())?;
            let mut a = LogStore::open(&wal, 0)?;
            let mut b = LogStore::open(&wal, 7)?;
            append(&mut a, (1..=10).map(|i| entry(1, i)).collect()).await?;
            append(&mut b, (1..=3).map(|i| entry(2, i)).collect()).await?;
            a.truncate_after(Some(log_id(1, 8))).await?;
            append(&mut a, vec![entry(3, 9)]).await?;
            a.purge(log_id(1, 4)).await?;
            a.save_committed(Some(log_id(3, 9))).await?;
            b.save_vote(&Vote::new(5, 2)).await?;
        }
        let wal = Wal::open(dir.path(), &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 7)?;
        assert_eq!(indexes(&mut a).await?, (5..=9).collect::<Vec<_>>());
        let state = a.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(3, 9)));
        assert_eq!(a.read_committed().await?, Some(log_id(3, 9)));
        assert_eq!(indexes(&mut b).await?, vec![1, 2, 3]);
        assert_eq!(b.read_vote().await?, Some(Vote::new(5, 2)));
        Ok(())
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_everything_before_it_kept() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let wal = Wal::open(dir.path(), &StorageHealth::default())?;
            let mut a = LogStore::open(&wal, 0)?;
            append(&mut a, (1..=5).map(|i| entry(1, i)).collect()).await?;
        }
        // A record cut short by a crash, after the good ones, in the segment's unused space.
        let last = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
        let end = data_end(&last)?;
        assert!(
            fs::metadata(&last)?.len() > end as u64,
            "the newest segment is sized ahead of its records"
        );
        let mut torn = Vec::new();
        frame(&mut torn, b"0123456789");
        torn.truncate(torn.len() - 3);
        OpenOptions::new()
            .write(true)
            .open(&last)?
            .write_all_at(&torn, end as u64)?;
        {
            let wal = Wal::open(dir.path(), &StorageHealth::default())?;
            let mut a = LogStore::open(&wal, 0)?;
            assert_eq!(indexes(&mut a).await?, vec![1, 2, 3, 4, 5]);
        }
        assert_eq!(
            fs::metadata(&last)?.len(),
            end as u64,
            "cut at the torn record"
        );
        Ok(())
    }

    #[tokio::test]
    async fn damage_before_the_newest_segment_is_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let wal = Wal::open(dir.path(), &StorageHealth::default())?;
            let mut a = LogStore::open(&wal, 0)?;
            append(&mut a, (1..=5).map(|i| entry(1, i)).collect()).await?;
            append(&mut a, (6..=7).map(|i| entry(1, i)).collect()).await?;
        }
        // Damage in the middle of the newest segment (good records after it): refused.
        let first = segments(dir.path())?
            .into_iter()
            .find(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .ok_or(io::ErrorKind::NotFound)?;
        let mut good = fs::read(&first)?;
        good.truncate(data_end(&first)?);
        let mut bytes = good.clone();
        bytes[HEADER_BYTES + 1] ^= 0xff;
        fs::write(&first, &bytes)?;
        let err = Wal::open(dir.path(), &StorageHealth::default())
            .err()
            .ok_or(io::ErrorKind::Other)?;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // Damage at the very end of a segment that is no longer the newest: refused too.
        fs::write(&first, &good)?;
        drop(Wal::open(dir.path(), &StorageHealth::default())?);
        let mut bytes = good;
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        fs::write(&first, bytes)?;
        let err = Wal::open(dir.path(), &StorageHealth::default())
            .err()
            .ok_or(io::ErrorKind::Other)?;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn full_segments_rotate_and_purged_ones_are_removed() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        {
            let wal = Wal::open_with(dir.path(), 512, &StorageHealth::default())?;
            let mut a = LogStore::open(&wal, 0)?;
            let mut b = LogStore::open(&wal, 1)?;
            b.save_vote(&Vote::new(3, 1)).await?;
            for i in 1..=200 {
                append(&mut a, vec![entry(1, i)]).await?;
            }
            let newest = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
            let sequence: u64 = newest
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .ok_or(io::ErrorKind::InvalidData)?;
            assert!(sequence > 3, "segments rotate");
            a.purge(log_id(1, 150)).await?;
            // One more durable write lets the writer act on the now-durable purge.
            append(&mut a, vec![entry(1, 201)]).await?;
            let left = segments(dir.path())?;
            assert!(
                left.len() < 10,
                "purged segments are removed ({} left)",
                left.len()
            );
            // A full segment is cut to its last record; only the newest has unused space.
            for p in &left[..left.len() - 1] {
                assert_eq!(
                    fs::metadata(p)?.len(),
                    data_end(p)? as u64,
                    "{}",
                    p.display()
                );
            }
        }
        let wal = Wal::open_with(dir.path(), 512, &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 1)?;
        assert_eq!(indexes(&mut a).await?, (151..=201).collect::<Vec<_>>());
        assert_eq!(b.read_vote().await?, Some(Vote::new(3, 1)));
        Ok(())
    }

    /// A shard that wrote once and never again (so never snapshots or purges) does not keep
    /// every later segment: its live entries are copied forward, old segments go as the busy
    /// shard purges, and replay still finds both shards' logs intact.
    #[tokio::test]
    async fn an_idle_shard_does_not_pin_the_log() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let health = StorageHealth::default();
        {
            let wal = Wal::open_with(dir.path(), 4096, &health)?;
            let mut idle = LogStore::open(&wal, 3)?;
            let mut busy = LogStore::open(&wal, 0)?;
            append(&mut idle, vec![entry(1, 1), entry(1, 2)]).await?;
            let mut most = 0;
            for i in 1..=1500 {
                append(&mut busy, vec![entry(1, i)]).await?;
                if i % 20 == 0 {
                    busy.purge(log_id(1, i - 10)).await?;
                }
                most = most.max(segments(dir.path())?.len());
            }
            assert!(
                most <= 6,
                "at most a few segments at any time, not one per 4 KiB written ({most})"
            );
            let stats = wal.stats();
            assert!(stats.rewrites > 0, "{stats:?}");
            assert!(stats.segments <= 6, "{stats:?}");
            wal.flush().await?;
        }
        let wal = Wal::open_with(dir.path(), 4096, &health)?;
        let mut idle = LogStore::open(&wal, 3)?;
        let mut busy = LogStore::open(&wal, 0)?;
        assert_eq!(indexes(&mut idle).await?, vec![1, 2]);
        assert_eq!(indexes(&mut busy).await?, (1491..=1500).collect::<Vec<_>>());
        Ok(())
    }

    /// A test can hold the writer before it writes a batch of at least `n` bytes, until it
    /// says go (so it can queue records behind a write that is about to fail).
    static WRITE_GATE: Mutex<Option<(usize, std::sync::mpsc::Receiver<()>)>> = Mutex::new(None);

    pub(super) fn write_gate(bytes: usize) {
        let gate = match WRITE_GATE.lock() {
            Ok(mut g) if g.as_ref().is_some_and(|(n, _)| bytes >= *n) => g.take(),
            _ => None,
        };
        if let Some((_, go)) = gate {
            let _ = go.recv_timeout(std::time::Duration::from_secs(10));
        }
    }

    fn big_entry(index: u64, value_bytes: usize) -> Entry {
        let mut e = entry(1, index);
        e.payload = openraft::EntryPayload::Normal(crate::shard::command::Command {
            client_id: 1,
            sequence: index,
            acked_below: 0,
            stamped_ms: 0,
            op: crate::shard::command::Op::Put {
                key: bytes::Bytes::from_static(b"k"),
                value: bytes::Bytes::from(vec![7u8; value_bytes]),
            },
        });
        e
    }

    /// Fail-stop on a real write error (ENOSPC past the segment's reserved end on a full
    /// tmpfs): the failed batch is not acknowledged, and neither is anything queued behind it,
    /// although writing that would succeed (it would land over the failed batch).
    #[tokio::test]
    async fn nothing_queued_behind_a_failed_write_is_written_or_acknowledged() -> io::Result<()> {
        let Some(disk) = SmallDisk::mount("1m") else {
            return Ok(());
        };
        let dir = disk.dir.path().join("wal");
        let health = StorageHealth::default();
        let wal = Wal::open_with(&dir, 256 * 1024, &health)?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 1)?;
        for i in 1..=4 {
            append(&mut a, vec![big_entry(i, 40 * 1024)]).await?;
        }
        // Leave 8 KiB free on the disk, then write far past the segment's reserved end.
        let free = nix::sys::statvfs::statvfs(disk.dir.path()).map_err(io::Error::from)?;
        let free_bytes = free.blocks_available() * free.fragment_size();
        fs::write(
            disk.dir.path().join("ballast"),
            vec![0u8; (free_bytes - 8192) as usize],
        )?;
        let (go, wait) = std::sync::mpsc::channel();
        *WRITE_GATE.lock().map_err(|_| io::Error::other("gate"))? = Some((200 * 1024, wait));
        let (tx, failing) = TypeConfig::oneshot();
        let big: Vec<Entry> = (5..=9).map(|i| big_entry(i, 40 * 1024)).collect();
        a.append(big, IOFlushed::<TypeConfig>::signal(tx)).await?;
        // The writer holds that batch at the gate; queue a small record behind it.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (tx, behind) = TypeConfig::oneshot();
        b.append(vec![entry(1, 1)], IOFlushed::<TypeConfig>::signal(tx))
            .await?;
        go.send(()).map_err(io::Error::other)?;
        let failed = failing.await.map_err(io::Error::other)?;
        assert!(failed.is_err(), "the write past the free space fails");
        let behind = behind.await.map_err(io::Error::other)?;
        assert!(
            behind.is_err(),
            "a record queued behind a failed write is never acknowledged"
        );
        let reason = health.failure().unwrap_or_default().to_string();
        assert!(reason.contains("No space left"), "{reason}");
        drop((a, b, wal));
        fs::remove_file(disk.dir.path().join("ballast"))?;
        assert!(disk.resize("8m"), "remount with space");
        let wal = Wal::open_with(&dir, 256 * 1024, &StorageHealth::default())?;
        let mut b = LogStore::open(&wal, 1)?;
        assert_eq!(
            indexes(&mut b).await?,
            Vec::<u64>::new(),
            "nothing behind the failure reached the disk"
        );
        Ok(())
    }

    /// A tmpfs of `size` mounted on a fresh directory, unmounted on drop: a real filesystem
    /// that answers `ENOSPC` when full. `None` (after saying why) where mounting is not
    /// possible; under `CI=true` that is a failure, never a skip.
    struct SmallDisk {
        dir: tempfile::TempDir,
    }

    impl SmallDisk {
        fn mount(size: &str) -> Option<SmallDisk> {
            let dir = tempfile::tempdir().ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let why = "cannot mount a tmpfs (needs root)";
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("skipped: {why}");
                return None;
            }
            Some(SmallDisk { dir })
        }

        fn resize(&self, size: &str) -> bool {
            std::process::Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    /// Fail-stop on a real full disk: once a segment cannot be allocated, the failure names
    /// the file, trips the health latch, and nothing is accepted or written after it; a
    /// restart (with space back) replays every acknowledged entry and nothing refused.
    #[tokio::test]
    async fn a_failed_write_stops_the_log_for_good() -> io::Result<()> {
        let Some(disk) = SmallDisk::mount("1m") else {
            return Ok(());
        };
        let dir = disk.dir.path().join("wal");
        let health = StorageHealth::default();
        let mut acked = 0;
        {
            let wal = Wal::open_with(&dir, 400 * 1024, &health)?;
            let mut a = LogStore::open(&wal, 0)?;
            let mut failed = None;
            for i in 1..=500u64 {
                match append(&mut a, vec![big_entry(i, 8 * 1024)]).await {
                    Ok(()) => acked = i,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let err = failed.ok_or_else(|| io::Error::other("the full disk was never noticed"))?;
            let reason = health.failure().unwrap_or_default().to_string();
            assert!(
                reason.contains(".wal"),
                "the failure names the file: {reason}"
            );
            assert!(reason.contains("No space left"), "{reason} / {err}");
            // Nothing after the failure is accepted, let alone written.
            assert!(append(&mut a, vec![entry(1, acked + 2)]).await.is_err());
            assert!(a.save_vote(&Vote::new(9, 1)).await.is_err());
            assert!(wal.flush().await.is_err());
        }
        assert!(disk.resize("8m"), "remount with space");
        let wal = Wal::open_with(&dir, 400 * 1024, &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        let got = indexes(&mut a).await?;
        assert!(acked > 10, "some entries were acknowledged first ({acked})");
        assert!(
            got.len() as u64 >= acked && got.len() as u64 <= acked + 1,
            "replay holds every acknowledged entry and at most the batch that hit the failure: {acked} acked, {} replayed",
            got.len()
        );
        assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            a.read_vote().await?,
            None,
            "the refused vote never reached the disk"
        );
        Ok(())
    }
}
