//! The Jepsen-style fault harness behind `ringkv-jepsen test`.
//!
//! It drives the real `ringkv-server` binary as a black box (this crate never links the
//! server): [`net`] puts each node in its own network namespace so partitions really drop
//! packets, [`db`] starts, kills, pauses and restarts the processes, [`workload`] runs client
//! processes on the `ringkv-client` library ([`bank`]: transactions between accounts; [`session`]: keys with TTLs) and
//! [`record`]s every operation, [`nemesis`]
//! applies a seeded fault schedule, and at the end the history is checked ([`checks`] and the
//! linearizability checker) and written up as a [`report`].
//!
//! Invariants: every loop is bounded by the time limit plus bounded recovery waits; everything
//! the run creates (processes, namespaces, bridge) is removed when it ends, also on error or
//! Ctrl-C; the same seed gives the same fault schedule.

pub mod bank;
pub mod checks;
pub mod cli;
pub mod db;
pub mod nemesis;
pub mod net;
pub mod record;
pub mod report;
pub mod session;
pub mod workload;

/// Why a run could not complete (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("bad arguments: {0}")]
    Usage(String),
    #[error("network setup: {0} (needs root, iproute2 and iptables)")]
    Net(String),
    #[error("cluster control: {0}")]
    Db(String),
    #[error("cluster never became healthy: {0}")]
    Unhealthy(String),
    #[error("report: {0}")]
    Report(String),
    /// A workload worker panicked: its operations may be missing from the history, so the run
    /// proves nothing (a harness bug, never a verdict on the server).
    #[error("workload: {0}")]
    Worker(String),
    #[error("interrupted")]
    Interrupted,
}
