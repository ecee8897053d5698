//! Replay: rebuilds every shard's log from one segment at start-up, and at the first bad
//! record decides whether it is a torn tail (cut, with a warning naming the bytes dropped) or
//! damage to synced data (the start is refused). The format and why the rule holds: `record`.
//!
//! By what a segment's first bytes say:
//! - nothing: an empty file (a newest segment cut to nothing earlier);
//! - a version-2 header: records from byte 32. At the first bad record, at offset p: damage in
//!   any segment but the newest; in the newest, damage if an intact record of a later batch
//!   (one whose batch began after p) follows anywhere, else a torn tail cut at p. An intact
//!   record that claims a batch start other than its own batch's or its own offset is damage;
//! - a version-2 header failing its checksum: the head batch's first record is bad, so the
//!   same rule with p = 0 (a crash while the segment was being created is cut to nothing); a
//!   header naming another segment is damage;
//! - no magic, after a version-2 segment: version 2 with a bad header (a segment after a
//!   version-2 one is always version 2), the same rule;
//! - no magic otherwise, in the newest segment, where version 1 would refuse byte 0 but
//!   intact version-2 records are there: version 2 with a bad header, the same rule (version-1
//!   bytes never hold an intact version-2 record). Left over: the first version-2 segment
//!   after version-1 ones, torn while it was created so that its header is lost and no whole
//!   checkpoint survives, is read as version 1 and may be refused: the safe direction, never a
//!   misread;
//! - version 1 (no header): exactly as the release before versions replayed it;
//! - another version: refused, naming the file, its version and the versions read here.
//!
//! Replay repairs nothing but a torn tail and never guesses past damage: the node refuses to
//! start and the message says what to do (see [`RECOVERY`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use openraft::entry::RaftEntry;

use super::log::ShardLog;
use super::merge_max;
use super::record::{
    FORMAT_VERSION, Format, LEGACY_VERSION, Record, SEGMENT_HEADER_BYTES, find_intact,
    legacy_torn_tail, read_legacy_record, read_record, segment_format,
};
use crate::codec::decode;
use crate::typ::Entry;

/// What an operator does about a damaged log (part of the refusal's message).
pub const RECOVERY: &str = "this node's write-ahead log cannot be trusted. Stop the node, move \
its data directory aside (keep it for inspection) and start it with the same --id and an empty \
data directory: it gets a new incarnation and cannot vote until it has caught up from the others \
(docs/operations.md, \"A node lost its disk\"). If a majority of the nodes are damaged as well, \
delete none of their data: restore from a backup (\"Backup and restore\")";

/// Why replay refused a segment; carried inside the `io::Error` (kind `InvalidData`) that
/// [`super::Wal::open`] returns (`get_ref()` and `downcast_ref` find it).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Synced data is damaged (never a torn write).
    #[error("write-ahead log segment {} is damaged at byte {offset}: {detail}; {recovery}",
        path.display(), recovery = RECOVERY)]
    Damaged {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The segment's header names a format version this binary cannot read.
    #[error("write-ahead log segment {} has format version {version}, and this binary reads \
        versions {legacy} (segments without a header) and {current}: start the node with the \
        release that wrote it (or a newer one)",
        path.display(), legacy = LEGACY_VERSION, current = FORMAT_VERSION)]
    UnsupportedVersion { path: PathBuf, version: u32 },
}

fn refused(e: ReplayError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn damaged(path: &Path, offset: usize, detail: String) -> io::Error {
    refused(ReplayError::Damaged {
        path: path.to_path_buf(),
        offset: offset as u64,
        detail,
    })
}

/// Replays segment `sequence` (at `path`; `last` when it is the newest; `after_v2` when the
/// segment before it is version 2) into `shards`; returns the highest entry index per shard
/// in it, and whether it is version 2 (an empty one is what the one before it was).
pub(super) fn replay_segment(
    path: &Path,
    sequence: u64,
    last: bool,
    after_v2: bool,
    shards: &mut BTreeMap<u32, ShardLog>,
) -> io::Result<(HashMap<u32, u64>, bool)> {
    let data = fs::read(path)?;
    let mut into = Replayed {
        shards,
        max_index: HashMap::new(),
    };
    let mut v2 = true;
    match segment_format(&data, sequence) {
        Format::Empty => v2 = after_v2,
        Format::Current => replay_current(path, &data, sequence, last, &mut into)?,
        Format::Legacy if after_v2 => {
            head_torn(path, &data, sequence, last, "the header is missing")?;
        }
        Format::Legacy
            if last
                && read_legacy_record(&data, 0).is_none()
                && !legacy_torn_tail(&data, 0)
                && find_intact(&data, sequence, 0, 0).is_some() =>
        {
            head_torn(path, &data, sequence, last, "the header is missing")?;
        }
        Format::Legacy => {
            v2 = false;
            replay_legacy(path, &data, last, &mut into)?;
        }
        Format::Unsupported(version) => {
            return Err(refused(ReplayError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            }));
        }
        Format::Misnamed(named) => {
            return Err(damaged(
                path,
                0,
                format!("its header names segment {named}, not {sequence}"),
            ));
        }
        Format::BadHeader => head_torn(path, &data, sequence, last, "the header is not intact")?,
    }
    Ok((into.max_index, v2))
}

/// Version 2: every record from the header on, up to the first bad one.
fn replay_current(
    path: &Path,
    data: &[u8],
    sequence: u64,
    last: bool,
    into: &mut Replayed<'_>,
) -> io::Result<()> {
    let mut pos = SEGMENT_HEADER_BYTES;
    // The head (header and checkpoints) is the batch at 0.
    let mut batch_start = 0;
    while pos < data.len() {
        match read_record(data, sequence, pos) {
            Some(r) if r.batch_start == batch_start || r.batch_start == pos => {
                batch_start = r.batch_start;
                into.apply(r.body)?;
                pos = r.next;
            }
            Some(r) => {
                return Err(damaged(
                    path,
                    pos,
                    format!(
                        "the record there says its batch began at byte {}, but the batch before \
                         it began at byte {batch_start}",
                        r.batch_start
                    ),
                ));
            }
            None => return torn_or_damaged(path, data, sequence, last, pos),
        }
    }
    Ok(())
}

/// The bytes at `pos` of a version-2 segment are not an intact record: cuts them if they are
/// a torn tail, refuses otherwise (see the module note).
fn torn_or_damaged(
    path: &Path,
    data: &[u8],
    sequence: u64,
    last: bool,
    pos: usize,
) -> io::Result<()> {
    if !last {
        return Err(damaged(
            path,
            pos,
            "no intact record there, in a closed segment (only the newest can end in a torn \
             write)"
                .into(),
        ));
    }
    if let Some(later) = find_intact(data, sequence, pos + 1, pos + 1) {
        return Err(damaged(
            path,
            pos,
            format!(
                "no intact record there, and an intact record of a later batch follows at byte \
                 {later}, so this data had been synced"
            ),
        ));
    }
    cut(path, data, pos)
}

/// The header of a version-2 segment is bad (`what`): the head batch was torn when nothing of
/// a later batch follows in the newest segment (cut to nothing), else damage.
fn head_torn(path: &Path, data: &[u8], sequence: u64, last: bool, what: &str) -> io::Result<()> {
    if !last {
        return Err(damaged(path, 0, format!("{what}, in a closed segment")));
    }
    if let Some(later) = find_intact(data, sequence, 1, 1) {
        return Err(damaged(
            path,
            0,
            format!("{what}, and an intact record of a later batch follows at byte {later}"),
        ));
    }
    cut(path, data, 0)
}

/// Version 1, exactly as the release before versions replayed it.
fn replay_legacy(path: &Path, data: &[u8], last: bool, into: &mut Replayed<'_>) -> io::Result<()> {
    let mut pos = 0;
    while pos < data.len() {
        let Some((body, next)) = read_legacy_record(data, pos) else {
            if !last || !legacy_torn_tail(data, pos) {
                return Err(damaged(
                    path,
                    pos,
                    "no intact record there, and it is not a torn tail (format version 1)".into(),
                ));
            }
            return cut(path, data, pos);
        };
        into.apply(body)?;
        pos = next;
    }
    Ok(())
}

/// Cuts the newest segment's torn tail (or unused end) at `pos`, durably.
fn cut(path: &Path, data: &[u8], pos: usize) -> io::Result<()> {
    let written = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if written <= pos {
        tracing::debug!(segment = %path.display(), at = pos, "dropping the unused end of the newest segment");
    } else {
        tracing::warn!(segment = %path.display(), at = pos, dropped_bytes = written - pos,
            "truncating a torn write-ahead log tail (writes never acknowledged)");
    }
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(pos as u64)?;
    f.sync_all()
}

/// Where replayed records go.
struct Replayed<'a> {
    shards: &'a mut BTreeMap<u32, ShardLog>,
    max_index: HashMap<u32, u64>,
}

impl Replayed<'_> {
    fn apply(&mut self, body: &[u8]) -> io::Result<()> {
        let shards = &mut *self.shards;
        match decode::<Record<Vec<Entry>>>(body)? {
            Record::Append { shard, entries } => {
                if let Some(e) = entries.last() {
                    merge_max(&mut self.max_index, [(shard, e.index())]);
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
            Record::Mark => {}
        }
        Ok(())
    }
}
