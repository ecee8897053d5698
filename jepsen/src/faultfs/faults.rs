//! The faults a fault filesystem injects on demand: a byte capacity (ENOSPC past it) and EIO
//! on writes or syncs (the next N of them, or every one while switched on).
//!
//! Invariants: counters only count down, one per operation that would have succeeded; a
//! refused operation changes nothing in the file system. Capacity counts allocated pages, as a
//! real disk counts blocks: sparse holes cost nothing, `fallocate` costs its pages up front.
//!
//! It does not corrupt or reorder data (torn writes, misdirected writes, bit flips): the
//! harness only needs "the disk said no" and "the power went out".

use super::pages::PAGE_BYTES;

/// Which kind of operation an EIO counter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// `write`, `fallocate`, `truncate`.
    Write,
    /// `fsync`, `fdatasync` of a file or a directory.
    Sync,
}

/// What is injected right now.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Bytes the file system may allocate at most (`None`: unlimited).
    pub capacity_bytes: Option<u64>,
    /// The next this many writes answer EIO.
    pub eio_writes: u64,
    /// The next this many syncs answer EIO.
    pub eio_syncs: u64,
    /// Every write and sync answers EIO while set.
    pub eio_all: bool,
}

impl Faults {
    /// Whether this operation must fail with EIO (and counts it when it does).
    pub fn take_eio(&mut self, kind: IoKind) -> bool {
        if self.eio_all {
            return true;
        }
        let counter = match kind {
            IoKind::Write => &mut self.eio_writes,
            IoKind::Sync => &mut self.eio_syncs,
        };
        if *counter > 0 {
            *counter -= 1;
            return true;
        }
        false
    }

    /// Whether `more_pages` fit next to `used_pages`.
    pub fn fits(&self, used_pages: u64, more_pages: u64) -> bool {
        match self.capacity_bytes {
            None => true,
            Some(cap) => (used_pages + more_pages).saturating_mul(PAGE_BYTES) <= cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_down_and_capacity_counts_pages() {
        let mut f = Faults {
            eio_writes: 2,
            capacity_bytes: Some(3 * PAGE_BYTES),
            ..Faults::default()
        };
        assert!(f.take_eio(IoKind::Write));
        assert!(!f.take_eio(IoKind::Sync));
        assert!(f.take_eio(IoKind::Write));
        assert!(!f.take_eio(IoKind::Write));
        assert!(f.fits(1, 2));
        assert!(!f.fits(2, 2));
        f.eio_all = true;
        assert!(f.take_eio(IoKind::Sync));
    }
}
