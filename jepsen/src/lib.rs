//! RingKV's Jepsen-style tooling.
//!
//! - [`history`]: the pinned JSON-lines history format (design §8) and readers for the
//!   Jepsen/Knossos/Porcupine logs the checker is validated against.
//! - [`checker`]: the linearizability checker behind `ringkv-jepsen check`; its [`checker::check`]
//!   is also the library API the fault harness calls.
//! - [`harness`]: the fault harness behind `ringkv-jepsen test`, which drives the real
//!   `ringkv-server` binary as a black box (it never links the server crate).
//! - [`faultfs`]: the in-memory FUSE file system under the harness's power-loss and disk-full
//!   faults.

pub mod checker;
pub mod faultfs;
pub mod harness;
pub mod history;
