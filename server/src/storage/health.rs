//! The node's fail-stop latch for storage: the first failed write or sync of durable state
//! (a write-ahead log record, sled's flush) trips it, and it never resets.
//!
//! Why fail-stop: after a failed `fsync` the kernel may already have dropped the dirty pages
//! and marked them clean, so a retried `fsync` can report success for data that is gone (the
//! PostgreSQL "fsyncgate" lesson). Nothing written after a failure can be trusted either, so
//! the only safe move is to stop and let replay, at the next start, decide what is durable.
//!
//! Invariants: the first failure recorded is the one reported (file and error); `failed()`
//! resolves for every waiter once tripped. It does not stop anything itself: the node watches
//! it, answers `/health` 503 and exits non-zero.
//!
//! Beside the latch it carries one condition that is not a failure and clears by itself: the
//! write-ahead log could not reserve its next segment because the disk is full
//! ([`StorageHealth::space_short`]). Nothing was lost then; the node refuses new writes
//! (`storage::space`) until the reservation succeeds.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

/// Why a node stopped on its own: storage failed (the process exits with
/// [`StorageFailed::EXIT_CODE`] so a supervisor restarts it).
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageFailed(pub String);

impl StorageFailed {
    /// `EX_IOERR` from sysexits.h.
    pub const EXIT_CODE: u8 = 74;
}

/// Cheap to clone; clones share the latch.
#[derive(Clone, Default)]
pub struct StorageHealth {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    failure: OnceLock<String>,
    tripped: CancellationToken,
    /// Why the write-ahead log has no reserved next segment, while it has none.
    space_short: Mutex<Option<String>>,
}

impl StorageHealth {
    /// Trips the latch (the first call wins) and logs one error line naming `what`, the file
    /// and the error.
    pub fn fail(&self, what: &str, path: &Path, error: &io::Error) {
        let text = format!("{what} failed on {}: {error}", path.display());
        if self.inner.failure.set(text.clone()).is_ok() {
            tracing::error!(file = %path.display(), error = %error, kind = ?error.kind(),
                "storage failed ({what}); this node stops now and must be restarted: {text}");
            self.inner.tripped.cancel();
        }
    }

    /// What failed first, if anything has.
    pub fn failure(&self) -> Option<&str> {
        self.inner.failure.get().map(String::as_str)
    }

    /// Resolves once the latch is tripped.
    pub async fn failed(&self) {
        self.inner.tripped.cancelled().await
    }

    /// Records whether the write-ahead log is short of reserved space (`Some(why)`) or has its
    /// next segment reserved again (`None`); logs each change once.
    pub fn set_space_short(&self, why: Option<String>) {
        let mut short = self
            .inner
            .space_short
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (&*short, &why) {
            (None, Some(w)) => tracing::warn!(reason = %w,
                "the disk is full: the write-ahead log cannot reserve its next segment; writes are refused until space returns"),
            (Some(_), None) => {
                tracing::info!(
                    "the write-ahead log reserved its next segment again: writes are accepted"
                )
            }
            _ => {}
        }
        *short = why;
    }

    /// Why the write-ahead log cannot reserve its next segment, if it cannot.
    pub fn space_short(&self) -> Option<String> {
        self.inner
            .space_short
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_wakes_waiters() {
        let health = StorageHealth::default();
        assert!(health.failure().is_none());
        let waiter = tokio::spawn({
            let h = health.clone();
            async move { h.failed().await }
        });
        health.fail("write", Path::new("/d/1.wal"), &io::Error::other("EIO"));
        health.fail("sync", Path::new("/d/2.wal"), &io::Error::other("later"));
        assert!(waiter.await.is_ok());
        assert_eq!(health.failure(), Some("write failed on /d/1.wal: EIO"));
    }
}
