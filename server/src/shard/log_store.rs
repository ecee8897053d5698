//! One shard's Raft log: a view of the node's write-ahead log ([`Wal`]) for openraft.
//!
//! Reads come from the shard's in-memory log (every unpurged entry is held there); every change
//! is applied in memory and queued to the write-ahead log in one step, so a reader sees an
//! append as soon as `append` returns.
//!
//! Durability: `append` completes openraft's callback after the write-ahead log has synced the
//! record; `save_vote` returns only then. `save_committed`, `truncate_after` and `purge` are not
//! waited for: the stream is ordered, so any later synced record covers them, and openraft
//! never acknowledges anything that depends on them before such a sync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::storage::wal::{Queued, Record, ShardLog, Waiter, Wal, entry_bytes};
use crate::typ::{Entry, LogId, TypeConfig, Vote};

/// Bytes of entries one limited read returns at most (replication payloads stay bounded).
const READ_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A shard's log store; clones share the log.
#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    shard: u32,
    log: Arc<Mutex<ShardLog>>,
}

impl LogStore {
    pub fn open(wal: &Wal, shard: u32) -> io::Result<Self> {
        Ok(LogStore {
            wal: wal.clone(),
            shard,
            log: wal.shard(shard)?,
        })
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, ShardLog>> {
        self.log
            .lock()
            .map_err(|_| io::Error::other("shard log lock poisoned"))
    }

    /// Entries in `[start, end)`, stopping early (never before the first) past
    /// `bytes_max`.
    fn read_range(&self, start: u64, end: u64, bytes_max: usize) -> io::Result<Vec<Entry>> {
        let log = self.lock()?;
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let Some(first) = log.entries().front().map(|e| e.index()) else {
            return Ok(out);
        };
        let from = log
            .position(start.max(first))
            .unwrap_or(log.entries().len());
        let mut bytes = 0usize;
        for e in log.entries().range(from..) {
            if e.index() >= end {
                break;
            }
            bytes += entry_bytes(e);
            out.push(e.clone());
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(out)
    }

    fn change(&self, record: Queued, change: impl FnOnce(&mut ShardLog)) -> io::Result<()> {
        self.wal.change(&self.log, record, change)
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
        self.read_range(start, end, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock()?.vote)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_range(start, end, READ_BYTES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.lock()?;
        let last = log.entries().back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or_else(|| log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let record: Record<()> = Record::Vote {
            shard: self.shard,
            vote: *vote,
        };
        self.change(Queued::new(self.shard, &record)?, |l| l.vote = Some(*vote))?;
        self.wal.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let record: Record<()> = Record::Committed {
            shard: self.shard,
            committed,
        };
        self.change(Queued::new(self.shard, &record)?, |l| {
            l.committed = committed
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock()?.committed)
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
        if self.wal.backlogged() {
            self.wal.flush().await?;
        }
        let entries: Vec<Entry> = entries.into_iter().collect();
        let max_index = entries.last().map(|e| e.index());
        let record = Record::Append {
            shard: self.shard,
            entries: &entries[..],
        };
        let mut queued = Queued::new(self.shard, &record)?;
        queued.max_index = max_index;
        queued.waiter = Some(Waiter::Log(callback));
        self.change(queued, |l| l.append(entries))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let record: Record<()> = Record::Truncate {
            shard: self.shard,
            after: last_log_id,
        };
        self.change(Queued::new(self.shard, &record)?, |l| {
            l.truncate_after(last_log_id.as_ref())
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let record: Record<()> = Record::Purge {
            shard: self.shard,
            upto: log_id,
        };
        let mut queued = Queued::new(self.shard, &record)?;
        queued.purged_to = Some(log_id.index());
        self.change(queued, |l| l.purge(&log_id))
    }
}
