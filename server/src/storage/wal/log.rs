//! One shard's Raft log as held in memory: contiguous entries plus its vote, committed and
//! purged ids. Changed only under the log's lock, together with queueing the record that
//! describes the change (see the parent module), so replay rebuilds exactly this state.
//!
//! Besides the entries it keeps their running byte positions (the sum of `entry_bytes` up to
//! and including each entry), so the bytes between any two held indexes, and how far to purge to
//! keep at most N bytes, are answered in O(1) and O(log n) without walking the entries (the
//! node's compaction task asks both every second). The positions are relative: only
//! differences between them mean anything, and they are not written anywhere.

use std::collections::VecDeque;
use std::io;

use openraft::entry::RaftEntry;

use super::record::entry_bytes;
use crate::typ::{Entry, LogId, Vote};

/// One shard's Raft log as it stands (entries contiguous by index).
#[derive(Default)]
pub struct ShardLog {
    entries: VecDeque<Entry>,
    /// `ends[i]`: the byte position just past `entries[i]` (same length as `entries`).
    ends: VecDeque<u64>,
    /// The byte position just before the first held entry (past the last one when none is).
    base: u64,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl ShardLog {
    /// The held entries, oldest first.
    pub fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    pub(super) fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index())
    }

    /// Index of the entry at `index`, if held.
    pub fn position(&self, index: u64) -> Option<usize> {
        let first = self.first_index()?;
        let pos = index.checked_sub(first)? as usize;
        (pos < self.entries.len()).then_some(pos)
    }

    fn last_end(&self) -> u64 {
        self.ends.back().copied().unwrap_or(self.base)
    }

    /// Bytes of every held entry (all of them are unpurged), as `entry_bytes` counts them.
    pub fn live_bytes(&self) -> u64 {
        self.last_end() - self.base
    }

    /// The byte position just past the entry at `index`: the start of the held log for `None`
    /// or an index before it, the end of the log for an index past it.
    fn end_of(&self, index: Option<u64>) -> u64 {
        let Some(index) = index else {
            return self.base;
        };
        match self.first_index() {
            Some(first) if index >= first => match self.position(index) {
                Some(pos) => self.ends[pos],
                None => self.last_end(),
            },
            _ => self.base,
        }
    }

    /// Bytes of the held entries with an index in `(after, upto]`.
    pub fn bytes_between(&self, after: Option<u64>, upto: Option<u64>) -> u64 {
        self.end_of(upto).saturating_sub(self.end_of(after))
    }

    /// The index to purge up to (inclusive) so that the held entries up to `upto` take at most
    /// `keep_bytes`, keeping as many of them as fit; `None` if they already do.
    pub fn purge_point(&self, upto: u64, keep_bytes: u64) -> Option<u64> {
        let first = self.first_index()?;
        let end = self.end_of(Some(upto));
        if end - self.base <= keep_bytes {
            return None;
        }
        // The first entry whose end leaves at most `keep_bytes` after it; it exists (the entry
        // at `upto`, or the last, ends at `end`) and is not past `upto`.
        let target = end - keep_bytes;
        let pos = self.ends.partition_point(|&e| e < target);
        Some(first + pos as u64)
    }

    fn clear(&mut self) {
        self.base = self.last_end();
        self.entries.clear();
        self.ends.clear();
    }

    fn pop_back(&mut self) {
        self.entries.pop_back();
        self.ends.pop_back();
    }

    fn push_back(&mut self, entry: Entry) {
        let end = self.last_end() + entry_bytes(&entry) as u64;
        self.entries.push_back(entry);
        self.ends.push_back(end);
    }

    pub(crate) fn truncate_after(&mut self, after: Option<&LogId>) {
        match after {
            None => self.clear(),
            Some(l) => {
                while self.entries.back().is_some_and(|e| e.index() > l.index()) {
                    self.pop_back();
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
            if let Some(end) = self.ends.pop_front() {
                self.base = end;
            }
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
                        self.pop_back();
                    }
                    if self.entries.back().is_some_and(|e| e.index() + 1 != index) {
                        self.clear();
                    }
                }
                Some(last) if index > last + 1 => self.clear(),
                _ => {}
            }
            self.push_back(entry);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::command::{Command, Op};
    use crate::typ::TypeConfig;

    /// A put whose `entry_bytes` is exactly `bytes` (at least 65).
    fn put(term: u64, index: u64, bytes: usize) -> Entry {
        let mut e = openraft::testing::blank_ent::<TypeConfig>(term, 1, index);
        e.payload = openraft::EntryPayload::Normal(Command {
            client_id: 1,
            sequence: index,
            acked_below: 0,
            stamped_ms: 0,
            op: Op::Put {
                key: bytes::Bytes::from_static(b"k"),
                value: bytes::Bytes::from(vec![0u8; bytes - 65]),
            },
        });
        e
    }

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    /// Entries 1..=n of 1,000 bytes each.
    fn log_of(n: u64) -> ShardLog {
        let mut log = ShardLog::default();
        log.append((1..=n).map(|i| put(1, i, 1000)));
        log
    }

    #[test]
    fn bytes_between_counts_the_held_entries_in_the_range() {
        let log = log_of(10);
        assert_eq!(entry_bytes(&put(1, 1, 1000)), 1000);
        assert_eq!(log.live_bytes(), 10_000);
        assert_eq!(log.bytes_between(None, Some(10)), 10_000);
        assert_eq!(log.bytes_between(Some(3), Some(7)), 4_000);
        assert_eq!(log.bytes_between(Some(7), Some(3)), 0);
        // Past the end counts to the end; before the start from the start.
        assert_eq!(log.bytes_between(Some(8), Some(99)), 2_000);
        assert_eq!(log.bytes_between(Some(0), Some(2)), 2_000);
        assert_eq!(log.bytes_between(Some(5), None), 0);
    }

    #[test]
    fn byte_positions_follow_purge_truncate_and_overwrite() {
        let mut log = log_of(10);
        log.purge(&log_id(1, 4));
        assert_eq!(log.live_bytes(), 6_000);
        assert_eq!(log.bytes_between(Some(4), Some(10)), 6_000);
        assert_eq!(log.bytes_between(Some(2), Some(6)), 2_000);
        log.truncate_after(Some(&log_id(1, 8)));
        assert_eq!(log.live_bytes(), 4_000);
        // A new leader's entries replace 7.. with bigger ones.
        log.append([put(2, 7, 3000), put(2, 8, 3000), put(2, 9, 3000)]);
        assert_eq!(log.live_bytes(), 2_000 + 9_000);
        assert_eq!(log.bytes_between(Some(6), Some(9)), 9_000);
        log.purge(&log_id(2, 9));
        assert_eq!(log.live_bytes(), 0);
        assert_eq!(log.bytes_between(None, Some(9)), 0);
        log.append([put(2, 10, 500)]);
        assert_eq!(log.live_bytes(), 500);
        log.truncate_after(None);
        assert_eq!(log.live_bytes(), 0);
        // A gap (replay after a removed segment) starts the count afresh.
        log.append([put(2, 20, 700), put(2, 22, 900)]);
        assert_eq!(log.live_bytes(), 900);
    }

    #[test]
    fn purge_point_keeps_as_many_entries_as_fit() {
        let log = log_of(10);
        // Entries up to 8 take 8,000 bytes; 2,500 keep two of them (7 and 8).
        assert_eq!(log.purge_point(8, 2_500), Some(6));
        assert_eq!(log.purge_point(8, 2_000), Some(6));
        assert_eq!(log.purge_point(8, 1_999), Some(7));
        // Nothing fits: purge up to `upto` itself, never past it.
        assert_eq!(log.purge_point(8, 0), Some(8));
        assert_eq!(log.purge_point(8, 999), Some(8));
        // Already small enough.
        assert_eq!(log.purge_point(8, 8_000), None);
        assert_eq!(log.purge_point(3, 5_000), None);
        // `upto` past the log counts to its end.
        assert_eq!(log.purge_point(50, 4_000), Some(6));
        assert_eq!(ShardLog::default().purge_point(5, 0), None);
        let mut purged = log_of(10);
        purged.purge(&log_id(1, 5));
        assert_eq!(purged.purge_point(8, 1_000), Some(7));
        assert_eq!(purged.purge_point(8, 3_000), None);
        assert_eq!(purged.purge_point(4, 0), None);
    }
}
