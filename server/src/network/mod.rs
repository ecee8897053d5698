//! Raft transport between nodes.
//!
//! - [`pool`]: one lazily connected gRPC channel per peer for ordinary traffic and a second one
//!   for snapshots, shared by every shard (HTTP/2 multiplexes the groups), so a large snapshot
//!   stream never starves heartbeats.
//! - [`client`]: openraft's `RaftNetworkV2` for one (target, shard): every message carries the
//!   cluster id, shard id, sender and receiver; every call has a deadline.
//! - [`append_stream`]: pipelined replication on one bidirectional stream per (leader, follower,
//!   shard) session, both sides.
//! - [`server`]: the `Raft` gRPC service, which checks the envelope before touching Raft.

pub mod append_stream;
pub mod client;
pub mod pool;
pub mod server;

use serde::{Deserialize, Serialize};

/// The body of a Raft RPC reply: the remote Raft's answer, or its error as text.
#[derive(Serialize, Deserialize)]
pub enum Reply<T> {
    Ok(T),
    Err(String),
}
