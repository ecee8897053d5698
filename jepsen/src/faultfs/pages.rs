//! A file's bytes as a sparse map of fixed-size pages, shared copy-on-write between the
//! current state and the durable snapshot taken at the last `fsync`.
//!
//! Invariants: a page index is present exactly when the file has that block allocated (written
//! or reserved by `fallocate`); a reserved page holds no buffer (`None`) and reads as zeroes;
//! bytes past the file size are never returned, and every page past the size is dropped when
//! the file shrinks. Cloning the map clones `Arc`s, not bytes: a page is copied only when one
//! side writes it after a snapshot shares it.
//!
//! It does not know about sizes beyond what callers pass in, capacity, or durability: the
//! [`super::model`] decides those.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes per page (and per block reported to `stat`/`statfs`).
pub const PAGE_BYTES: u64 = 4096;
const PAGE: usize = PAGE_BYTES as usize;

/// One allocated page: `None` while it is reserved but never written (reads as zeroes).
pub type Page = Option<Arc<[u8; PAGE]>>;

/// The allocated pages of one file, by page index.
#[derive(Debug, Clone, Default)]
pub struct Pages {
    map: BTreeMap<u64, Page>,
}

/// Page indexes touched by bytes `[offset, offset + len)`.
pub fn span(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    offset / PAGE_BYTES..(offset + len).div_ceil(PAGE_BYTES)
}

impl Pages {
    /// Allocated pages.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many pages of `range` are not allocated yet.
    pub fn missing(&self, range: std::ops::Range<u64>) -> u64 {
        let have = self.map.range(range.clone()).count() as u64;
        (range.end - range.start) - have
    }

    pub fn get(&self, index: u64) -> Option<&Page> {
        self.map.get(&index)
    }

    /// Puts `page` at `index` (or removes it with `None` outer): the durable side's update.
    pub fn set(&mut self, index: u64, page: Option<Page>) {
        match page {
            Some(p) => {
                self.map.insert(index, p);
            }
            None => {
                self.map.remove(&index);
            }
        }
    }

    /// Reads `len` bytes at `offset`, holes as zeroes; the caller clips to the file size.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        for (&index, page) in self.map.range(span(offset, len)) {
            let Some(buf) = page else { continue };
            let page_start = index * PAGE_BYTES;
            let from = offset.max(page_start);
            let to = (offset + len).min(page_start + PAGE_BYTES);
            let src = &buf[(from - page_start) as usize..(to - page_start) as usize];
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
        out
    }

    /// Writes `data` at `offset`, allocating pages as needed; returns the pages it touched.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::ops::Range<u64> {
        let range = span(offset, data.len() as u64);
        for index in range.clone() {
            let page_start = index * PAGE_BYTES;
            let from = offset.max(page_start);
            let to = (offset + data.len() as u64).min(page_start + PAGE_BYTES);
            let slot = self.map.entry(index).or_insert(None);
            let buf = Arc::make_mut(slot.get_or_insert_with(|| Arc::new([0u8; PAGE])));
            buf[(from - page_start) as usize..(to - page_start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        }
        range
    }

    /// Reserves every page of `range` that is not allocated; returns those it added.
    pub fn reserve(&mut self, range: std::ops::Range<u64>) -> Vec<u64> {
        let mut added = Vec::new();
        for index in range {
            if let std::collections::btree_map::Entry::Vacant(v) = self.map.entry(index) {
                v.insert(None);
                added.push(index);
            }
        }
        added
    }

    /// Zeroes bytes `[offset, offset + len)`: whole pages in the range are freed, partial ones
    /// zeroed in place. Returns the indexes it changed (freed or zeroed).
    pub fn punch(&mut self, offset: u64, len: u64) -> Vec<u64> {
        let end = offset + len;
        let touched: Vec<u64> = self.map.range(span(offset, len)).map(|(i, _)| *i).collect();
        for &index in &touched {
            let page_start = index * PAGE_BYTES;
            if offset <= page_start && end >= page_start + PAGE_BYTES {
                self.map.remove(&index);
            } else if let Some(Some(buf)) = self.map.get_mut(&index) {
                let from = (offset.max(page_start) - page_start) as usize;
                let to = (end.min(page_start + PAGE_BYTES) - page_start) as usize;
                Arc::make_mut(buf)[from..to].fill(0);
            }
        }
        touched
    }

    /// Cuts the file to `size` bytes: drops pages past it and zeroes the tail of the last one.
    /// Returns the indexes it changed.
    pub fn truncate(&mut self, size: u64) -> Vec<u64> {
        let first_gone = size.div_ceil(PAGE_BYTES);
        let mut changed: Vec<u64> = self.map.range(first_gone..).map(|(i, _)| *i).collect();
        for index in &changed {
            self.map.remove(index);
        }
        if !size.is_multiple_of(PAGE_BYTES) {
            let index = size / PAGE_BYTES;
            if let Some(Some(buf)) = self.map.get_mut(&index) {
                Arc::make_mut(buf)[(size % PAGE_BYTES) as usize..].fill(0);
                changed.push(index);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_reads_writes_and_truncation() {
        let mut p = Pages::default();
        p.write(10_000, b"hello");
        assert_eq!(p.len(), 1);
        assert_eq!(p.read(9_998, 9), b"\0\0hello\0\0");
        p.write(4094, b"abcd");
        assert_eq!(p.len(), 3);
        assert_eq!(p.read(4094, 4), b"abcd");
        assert_eq!(p.truncate(4095), vec![1, 2, 0]);
        assert_eq!(p.read(4094, 2), b"a\0");
        assert_eq!(p.missing(0..4), 3);
        assert_eq!(p.reserve(0..3), vec![1, 2]);
        assert_eq!(p.read(8192, 4), b"\0\0\0\0");
        p.punch(0, 8192);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_clone_shares_pages_until_written() {
        let mut p = Pages::default();
        p.write(0, b"one");
        let snapshot = p.clone();
        p.write(0, b"two");
        assert_eq!(snapshot.read(0, 3), b"one");
        assert_eq!(p.read(0, 3), b"two");
    }
}
