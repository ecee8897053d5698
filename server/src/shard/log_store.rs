//! One shard's Raft log on sled: entries, vote, committed id and last purged id in one tree.
//!
//! Layout of tree `log/<shard>`: `e` + big-endian index → encoded entry; `m:vote`,
//! `m:committed`, `m:purged` → encoded ids. Keeping all of it in one tree of one `Db` makes
//! every write ordered (sled recovers a prefix of its log), so a durable `committed` implies
//! durable entries up to it, and vote and log writes are never reordered.
//!
//! Durability: `append` writes the entries synchronously (readable on return) and hands the
//! callback to the [`FlushCoordinator`]; `save_vote` waits for a flush. `truncate_after` and
//! `purge` are not flushed themselves: any later flush (vote or append) covers them in order,
//! and openraft never acknowledges anything that depends on them before such a flush.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::codec::{decode, encode};
use crate::storage::flush::FlushCoordinator;
use crate::typ::{Entry, LogId, TypeConfig, Vote};

const ENTRY_PREFIX: u8 = b'e';
const KEY_VOTE: &[u8] = b"m:vote";
const KEY_COMMITTED: &[u8] = b"m:committed";
const KEY_PURGED: &[u8] = b"m:purged";
/// Bytes of entries one read returns at most (replication payloads stay bounded).
const READ_BYTES_MAX: usize = 4 * 1024 * 1024;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn sled_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

/// A shard's log store; clones share the tree.
#[derive(Clone)]
pub struct LogStore {
    tree: sled::Tree,
    flush: FlushCoordinator,
}

impl LogStore {
    pub fn open(db: &sled::Db, shard: u32, flush: FlushCoordinator) -> io::Result<Self> {
        let tree = db.open_tree(format!("log/{shard}")).map_err(sled_err)?;
        Ok(LogStore { tree, flush })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.tree.get(key).map_err(sled_err)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Entries in `[start, end)`, stopping early (never before the first) past
    /// [`READ_BYTES_MAX`].
    fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if start >= end {
            return Ok(out);
        }
        for item in self.tree.range(entry_key(start)..entry_key(end)) {
            let (k, v) = item.map_err(sled_err)?;
            let entry: Entry = decode(&v)?;
            let index = u64::from_be_bytes(k[1..9].try_into().map_err(io::Error::other)?);
            if entry.index() != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry at key {index} has index {}", entry.index()),
                ));
            }
            bytes += v.len();
            out.push(entry);
            if bytes >= READ_BYTES_MAX {
                break;
            }
        }
        Ok(out)
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&x) => x.saturating_add(1),
        Bound::Excluded(&x) => x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        // The full range is required here: openraft relies on getting every entry asked for.
        let mut out = Vec::new();
        let mut next = start;
        while next < end {
            let part = self.read_range(next, end)?;
            let Some(last) = part.last() else { break };
            next = last.index() + 1;
            out.extend(part);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_range(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = match self.tree.scan_prefix([ENTRY_PREFIX]).next_back() {
            Some(item) => {
                let (_, v) = item.map_err(sled_err)?;
                let entry: Entry = decode(&v)?;
                Some(entry.log_id())
            }
            None => None,
        };
        let last_log_id = last.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.tree
            .insert(KEY_VOTE, encode(vote)?)
            .map_err(sled_err)?;
        self.flush.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not awaited: a later flush covers it, and it is ordered after the entries it names.
        self.tree
            .insert(KEY_COMMITTED, encode(&committed)?)
            .map_err(sled_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One insert per entry, in index order, not one `apply_batch`: a batch takes sled's
        // process-wide exclusive lock, which waits for any flush in progress (a flush holds the
        // shared side while its IO completes), so every append would stall behind the group
        // commit. Atomicity is not needed: sled recovers a prefix of its log, so a crash leaves
        // a prefix of these entries, and none of them is acknowledged before the flush below.
        for entry in entries {
            self.tree
                .insert(entry_key(entry.index()), encode(&entry)?)
                .map_err(sled_err)?;
        }
        self.flush.complete_after_flush(callback).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        // Deleting the whole tail in one atomic batch leaves no hole.
        for item in self
            .tree
            .range(entry_key(from)..=entry_key(u64::MAX))
            .keys()
        {
            batch.remove(item.map_err(sled_err)?);
        }
        self.tree.apply_batch(batch).map_err(sled_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut batch = sled::Batch::default();
        batch.insert(KEY_PURGED, encode(&log_id)?);
        for item in self
            .tree
            .range(entry_key(0)..=entry_key(log_id.index()))
            .keys()
        {
            batch.remove(item.map_err(sled_err)?);
        }
        self.tree.apply_batch(batch).map_err(sled_err)
    }
}
