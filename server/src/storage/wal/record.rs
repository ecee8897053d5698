//! The write-ahead log's record format: what a record says ([`Record`]), how it is framed
//! on disk, and how replay tells a torn tail from damage.
//!
//! A record is `len: u32 LE | xxh3(body): u64 LE | body`, the body a MessagePack [`Record`].
//! Framing never fails and reading never panics: any bytes are either a whole, intact record
//! or `None`.

use std::io;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use super::writer::Waiter;
use crate::codec::encode;
use crate::typ::{Entry, LogId, Vote};

pub(super) const HEADER_BYTES: usize = 12;
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
            Record::Append { .. } | Record::Truncate { .. } | Record::Checkpoint { .. } => None,
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

pub(super) fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&ringkv_proto::checksum::digest(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Reads one framed record at `pos`; `Ok(None)` when the bytes there are not a whole, intact
/// record (a torn tail, or damage).
pub(super) fn read_record(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = data.get(pos..pos + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().ok()?);
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let body = data.get(pos + HEADER_BYTES..pos + HEADER_BYTES + len)?;
    (ringkv_proto::checksum::digest(body) == sum).then_some((body, pos + HEADER_BYTES + len))
}

/// Whether the bad bytes at `pos` look like a write cut short at the end of the written data
/// (zeroes to the end of the file are the segment's unused space): a record whose header or
/// body runs past the written data, the very last record failing its checksum, or nothing but
/// zeroes. Anything else (a bad record followed by more data) is damage to data that was
/// synced, and is refused rather than cut away.
pub(super) fn torn_tail(data: &[u8], pos: usize) -> bool {
    let written = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let rest = &data[pos..written.max(pos)];
    if rest.len() < HEADER_BYTES {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    HEADER_BYTES.saturating_add(len) >= rest.len()
}
