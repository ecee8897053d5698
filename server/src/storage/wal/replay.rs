//! Replay: rebuilds every shard's log from one segment at start-up. Only the newest segment
//! may end in a torn tail, which is cut (it was never acknowledged); a bad record anywhere
//! else is damage to synced data and refuses the start.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use openraft::entry::RaftEntry;

use super::log::ShardLog;
use super::merge_max;
use super::record::{Record, read_record, torn_tail};
use crate::codec::decode;
use crate::typ::Entry;

/// Replays one segment into `shards`; returns the highest entry index per shard in it.
pub(super) fn replay_segment(
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
