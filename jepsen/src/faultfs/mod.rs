//! A fault filesystem for the harness: an in-memory FUSE file system that keeps what was
//! written apart from what was made durable, so a *power cut* can drop every write that was
//! not fsynced (which SIGKILL cannot do: the page cache survives a process), and that answers
//! ENOSPC past a settable capacity and EIO on demand.
//!
//! - [`pages`]: a file's bytes as sparse, copy-on-write pages.
//! - [`faults`]: capacity and EIO injection.
//! - [`model`]: the pure core: current and durable trees, the durability rules, power cut.
//! - [`fuse`]: the kernel's requests onto the model (errno mapping in one place).
//! - [`mount`]: a mounted instance and the handle the harness controls it with.
//!
//! Invariants: durability follows fsync strictly (a file's data with the file's fsync, a
//! directory's entries with the directory's fsync, nothing else); an injected failure changes
//! nothing; every mount is unmounted when its handle is dropped.
//!
//! It does not persist anything to a real disk (a harness process that dies loses the data,
//! which is fine: a run's data dies with the run), and it is not fast (every operation takes
//! one lock); RingKV's data directory needs a few thousand operations a second at most.

pub mod faults;
pub mod fuse;
pub mod model;
pub mod mount;
pub mod pages;

pub use mount::{FaultFs, prerequisites};

/// Why a fault filesystem could not be mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum FaultFsError {
    #[error("fault filesystem unavailable: {0}")]
    Unsupported(String),
    #[error("mounting a fault filesystem on {0}: {1}")]
    Mount(std::path::PathBuf, std::io::Error),
    #[error(
        "fault filesystem on {0}: unmount still refused (EBUSY) after the wait; detached lazily"
    )]
    Busy(std::path::PathBuf),
}
