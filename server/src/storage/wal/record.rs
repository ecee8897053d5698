//! The write-ahead log's on-disk format: what a record says ([`Record`]), how segments and
//! records are framed, and the tests replay uses to tell a torn tail from damage.
//!
//! **Format version 2** (every segment this binary creates). A segment starts with a 32-byte
//! header, then records:
//!
//! ```text
//! header: 20: u32 LE | "RingKVwl" | version = 2: u32 LE | sequence: u64 LE
//!         | xxh3(header bytes 0..24): u64 LE                                  (32 bytes)
//! record: len: u32 LE | back: u32 LE | sum: u64 LE | body (len bytes, a MessagePack Record)
//!         sum = xxh3(sequence: u64 LE | offset: u64 LE | len: u32 LE | back: u32 LE | body)
//! ```
//!
//! `offset` is where the record starts in its segment and `sequence` the segment's own (the
//! file name's), so a record that is moved, copied into another segment or given another
//! length fails its checksum. `back` is how many bytes before the record its *batch* (one
//! write of the writer thread, then one `fdatasync`) began: every record knows where its batch
//! starts. The segment's head (header and every shard's checkpoint) is the batch at offset 0.
//! The header's leading 20 makes a binary from before versions see a record that fails its
//! checksum with data after it, so it refuses the segment instead of cutting it. Bytes 0..32
//! keep this layout in every version (a later one may lengthen the header, saying so in its
//! first field), so a header is checked against its checksum before its version is believed.
//!
//! **Format version 1** (the release before versions): no header, records
//! `len: u32 LE | xxh3(body): u64 LE | body` from byte 0. Replayed exactly as that release
//! did, torn-tail test included ([`legacy_torn_tail`]). A segment whose header carries another
//! version is refused (see `replay`).
//!
//! **Torn or damaged** (version 2). The writer writes batch k+1 only after batch k's
//! `fdatasync` returned, always at the end of the previous batch, and never writes into a
//! segment again once the next exists (a full one is cut to its records and synced first). So
//! when replay meets the first bad record at offset p of the newest segment: an intact record
//! *after* p whose batch began *after* p (a later batch) proves that the data at p was synced,
//! and the segment is refused as damaged; if the rest holds only zeroes, garbage or intact
//! records of the same batch as p (page writeback may persist a later page of an unsynced
//! write before an earlier one), the batch at p was never synced, so never acknowledged, and
//! is cut. A bad record in any other segment is damage. Why a batch *start* and not a batch
//! number: the bad record's own batch is unknown, but batches are contiguous, so an intact
//! record after p whose batch began at or before p is in p's batch, and one whose batch began
//! after p was written after p's batch was synced. Damage to the newest segment's last batch,
//! with nothing written after it, would look exactly like a torn write, so the writer follows
//! the last batch with a [`Record::Mark`] batch once the log has been idle for `MARK_IDLE` or
//! closes (and after a segment's head). What is left unseen: damage to a batch written less
//! than `MARK_IDLE` before a crash, which is cut like the torn write it may well be.
//!
//! Framing never fails, sealing fails only on a buffer that is not whole records, and reading
//! never panics: any bytes are either a whole, intact record or `None`.

use std::io;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::writer::Waiter;
use crate::codec::encode;
use crate::typ::{Entry, LogId, Vote};

/// A record body larger than this is damage, not data (entries are capped far below).
const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

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
    /// Changes nothing: a batch of its own that the writer puts after the last batch once the
    /// log has been idle a while or closes, so that batch is no longer the last one and damage
    /// to it is told from a torn write (see the module note).
    Mark,
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
    /// What the record changes of the shard's vote, committed or purged id.
    pub meta: Option<MetaChange>,
}

impl Queued {
    pub fn new<E: Serialize>(shard: u32, record: &Record<E>) -> io::Result<Queued> {
        let meta = match record {
            Record::Vote { vote, .. } => Some(MetaChange::Vote(*vote)),
            Record::Committed { committed, .. } => Some(MetaChange::Committed(*committed)),
            Record::Purge { upto, .. } => Some(MetaChange::Purged(*upto)),
            Record::Append { .. }
            | Record::Truncate { .. }
            | Record::Checkpoint { .. }
            | Record::Mark => None,
        };
        Ok(Queued {
            shard,
            body: encode(record)?,
            max_index: None,
            purged_to: None,
            waiter: None,
            meta,
        })
    }
}

/// A change a record makes to a shard's metadata (see [`ShardMeta`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum MetaChange {
    Vote(Vote),
    Committed(Option<LogId>),
    Purged(LogId),
}

/// One shard's vote, committed and purged ids as of a point in the stream: what replaying the
/// stream up to that point yields, and so what a segment starting there must record in its
/// head ([`Record::Checkpoint`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShardMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl ShardMeta {
    /// The state after `change`, as replay applies it.
    pub fn apply(&mut self, change: &MetaChange) {
        match change {
            MetaChange::Vote(v) => self.vote = Some(*v),
            MetaChange::Committed(c) => self.committed = *c,
            MetaChange::Purged(p) => {
                if self.purged.as_ref().is_none_or(|have| have < p) {
                    self.purged = Some(*p);
                }
            }
        }
    }

    /// The head record of a segment that starts with this state.
    pub fn checkpoint(&self, shard: u32) -> Record<()> {
        Record::Checkpoint {
            shard,
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
        }
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

/// The format version of the segments this binary writes.
pub(super) const FORMAT_VERSION: u32 = 2;
/// The version of segments without a header (the release before versions).
pub(super) const LEGACY_VERSION: u32 = 1;
/// Bytes of a version-2 segment header.
pub(super) const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of a version-2 record header (`len`, `back`, `sum`).
pub(super) const RECORD_HEADER_BYTES: usize = 16;
/// Bytes of a version-1 record header (`len`, `sum`).
pub(super) const LEGACY_HEADER_BYTES: usize = 12;
const MAGIC: [u8; 8] = *b"RingKVwl";
/// The header's first field: what follows the first 12 bytes, read as a version-1 length.
const HEADER_TAIL_BYTES: u32 = (SEGMENT_HEADER_BYTES - LEGACY_HEADER_BYTES) as u32;

/// The header of segment `sequence`, in the current format.
pub(super) fn segment_header(sequence: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..4].copy_from_slice(&HEADER_TAIL_BYTES.to_le_bytes());
    h[4..12].copy_from_slice(&MAGIC);
    h[12..16].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&sequence.to_le_bytes());
    let sum = ringkv_proto::checksum::digest(&h[..24]);
    h[24..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// What a segment's first bytes say about its format.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// No bytes at all.
    Empty,
    /// An intact current header naming this segment; records start after it.
    Current,
    /// An intact header of another version (bytes after it are not read).
    Unsupported(u32),
    /// An intact current header naming another segment (the file was renamed or copied).
    Misnamed(u64),
    /// The magic, but the header fails its checksum or is cut short.
    BadHeader,
    /// No magic: version 1 (the first bytes are a record's length), or a version-2 segment
    /// whose header never reached the disk (see `replay`).
    Legacy,
}

/// Reads the format of segment `sequence` from its first bytes.
pub(super) fn segment_format(data: &[u8], sequence: u64) -> Format {
    if data.is_empty() {
        return Format::Empty;
    }
    if data.get(4..12) != Some(&MAGIC[..]) {
        return Format::Legacy;
    }
    // The checksum first: a torn header's version field is not a version.
    let Some(header) = data.get(..SEGMENT_HEADER_BYTES) else {
        return Format::BadHeader;
    };
    if ringkv_proto::checksum::digest(&header[..24]) != u64_at(header, 24) {
        return Format::BadHeader;
    }
    let version = u32_at(header, 12);
    if version != FORMAT_VERSION {
        return Format::Unsupported(version);
    }
    if u32_at(header, 0) != HEADER_TAIL_BYTES {
        return Format::BadHeader;
    }
    match u64_at(header, 16) {
        s if s == sequence => Format::Current,
        s => Format::Misnamed(s),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends `body` as a record whose place is not known yet: [`seal`] fills in its batch and
/// checksum once the writer knows where the batch goes.
pub(super) fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES - 4]);
    out.extend_from_slice(body);
}

fn record_sum(sequence: u64, offset: u64, len: u32, back: u32, body: &[u8]) -> u64 {
    let mut place = [0u8; 24];
    place[..8].copy_from_slice(&sequence.to_le_bytes());
    place[8..16].copy_from_slice(&offset.to_le_bytes());
    place[16..20].copy_from_slice(&len.to_le_bytes());
    place[20..].copy_from_slice(&back.to_le_bytes());
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&place);
    h.update(body);
    h.digest()
}

/// Seals the framed records in `buf`, which is written at offset `at` of segment `sequence`
/// as part of the batch that begins at `batch_start`: each record gets its `back` and its
/// checksum. Fails (and nothing should be written) if `buf` is not a run of whole records.
pub(super) fn seal(buf: &mut [u8], sequence: u64, at: u64, batch_start: u64) -> io::Result<()> {
    let bad = |what: &str| io::Error::other(format!("write-ahead log batch not sealed: {what}"));
    let mut pos = 0usize;
    while pos < buf.len() {
        let header = buf
            .get(pos..pos + RECORD_HEADER_BYTES)
            .ok_or_else(|| bad("a record header is cut short"))?;
        let len = u32_at(header, 0);
        if len == 0 || len as usize > RECORD_BYTES_MAX {
            return Err(bad("a record body is empty or too large"));
        }
        let offset = at + pos as u64;
        let back = offset
            .checked_sub(batch_start)
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(|| bad("the batch is too large"))?;
        let end = pos + RECORD_HEADER_BYTES + len as usize;
        let body = buf
            .get(pos + RECORD_HEADER_BYTES..end)
            .ok_or_else(|| bad("a record body is cut short"))?;
        let sum = record_sum(sequence, offset, len, back, body);
        buf[pos + 4..pos + 8].copy_from_slice(&back.to_le_bytes());
        buf[pos + 8..pos + 16].copy_from_slice(&sum.to_le_bytes());
        pos = end;
    }
    Ok(())
}

/// An intact record read from a segment.
pub(super) struct Framed<'a> {
    pub body: &'a [u8],
    /// Offset where the record's batch began.
    pub batch_start: usize,
    /// Offset just after the record.
    pub next: usize,
}

/// Reads one sealed record at `pos` of segment `sequence`; `None` when the bytes there are not
/// a whole, intact record written at this place (a torn tail, unused space, or damage).
pub(super) fn read_record(data: &[u8], sequence: u64, pos: usize) -> Option<Framed<'_>> {
    let header = data.get(pos..pos.checked_add(RECORD_HEADER_BYTES)?)?;
    let len = u32_at(header, 0);
    let back = u32_at(header, 4);
    if len == 0 || len as usize > RECORD_BYTES_MAX {
        return None;
    }
    let batch_start = pos.checked_sub(back as usize)?;
    let next = pos + RECORD_HEADER_BYTES + len as usize;
    let body = data.get(pos + RECORD_HEADER_BYTES..next)?;
    (record_sum(sequence, pos as u64, len, back, body) == u64_at(header, 8)).then_some(Framed {
        body,
        batch_start,
        next,
    })
}

/// The first offset at or after `from` where an intact record of segment `sequence` starts
/// whose batch began at or after `batch_start_min`, looking at every byte offset (records
/// are found by their checksum, not by walking lengths from a bad one).
pub(super) fn find_intact(
    data: &[u8],
    sequence: u64,
    from: usize,
    batch_start_min: usize,
) -> Option<usize> {
    // A record holds a non-zero byte (its length), so none starts past the last one.
    let written = data.iter().rposition(|b| *b != 0)?;
    let last = data
        .len()
        .checked_sub(RECORD_HEADER_BYTES + 1)?
        .min(written);
    (from..=last).find(|&q| {
        // Cheap tests first: most offsets fail them without hashing anything.
        let len = u32_at(data, q) as usize;
        let back = u32_at(data, q + 4) as usize;
        len != 0
            && len <= data.len() - q - RECORD_HEADER_BYTES
            && q.checked_sub(back).is_some_and(|s| s >= batch_start_min)
            && read_record(data, sequence, q).is_some()
    })
}

/// Appends `body` as a version-1 record (tests write segments of the previous release).
#[cfg(test)]
pub(super) fn legacy_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&ringkv_proto::checksum::digest(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Reads one version-1 record at `pos`; `None` when the bytes there are not a whole, intact
/// record (a torn tail, or damage).
pub(super) fn read_legacy_record(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = data.get(pos..pos + LEGACY_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().ok()?);
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let body = data.get(pos + LEGACY_HEADER_BYTES..pos + LEGACY_HEADER_BYTES + len)?;
    (ringkv_proto::checksum::digest(body) == sum).then_some((body, pos + LEGACY_HEADER_BYTES + len))
}

/// Version 1's torn-tail test, unchanged: whether the bad bytes at `pos` look like a write cut
/// short at the end of the written data (zeroes to the end of the file are the segment's
/// unused space): a record whose header or body runs past the written data, the very last
/// record failing its checksum, or nothing but zeroes. Anything else (a bad record followed by
/// more data) is damage to data that was synced, and is refused rather than cut away.
pub(super) fn legacy_torn_tail(data: &[u8], pos: usize) -> bool {
    let written = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let rest = &data[pos..written.max(pos)];
    if rest.len() < LEGACY_HEADER_BYTES {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    LEGACY_HEADER_BYTES.saturating_add(len) >= rest.len()
}
