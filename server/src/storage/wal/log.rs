//! One shard's Raft log as held in memory: contiguous entries plus its vote, committed and
//! purged ids. Changed only under the log's lock, together with queueing the record that
//! describes the change (see the parent module), so replay rebuilds exactly this state.

use std::collections::VecDeque;
use std::io;

use openraft::entry::RaftEntry;

use crate::typ::{Entry, LogId, Vote};

/// One shard's Raft log as it stands (entries contiguous by index).
#[derive(Default)]
pub struct ShardLog {
    pub entries: VecDeque<Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl ShardLog {
    pub(super) fn first_index(&self) -> Option<u64> {
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
    pub(super) fn check(&self, shard: u32) -> io::Result<()> {
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
