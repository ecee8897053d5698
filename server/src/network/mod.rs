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
//! - [`peer_health`]: which peers answer, shared by every shard: paces calls to a peer that is
//!   down and logs each outage once, with a periodic summary, instead of once per attempt.
//! - [`peer_server`]: the peer listener serving it, on its own port and runtime.
//! - [`errors`]: the transport's errors and their mapping, both sides (statuses with kinds to
//!   openraft's `Unreachable`/`NetworkError`; a failed Raft to a status with its kind).

pub mod append_stream;
pub mod client;
pub mod errors;
pub mod peer_health;
pub mod peer_server;
pub mod pool;
pub mod server;

use serde::{Deserialize, Serialize};

/// The connections a listener we bound accepts, with `TCP_NODELAY` set on each. The server's
/// own `tcp_nodelay` applies only to listeners it binds itself; without this, Nagle holds back
/// the second small write of every HTTP/2 answer until the peer's delayed ACK (~40 ms on
/// Linux).
pub fn accept_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        },
    )
}

/// The body of a Raft RPC reply. This version sends only `Ok`: a failed Raft is answered
/// with a status that carries its kind (see [`errors`]).
#[derive(Serialize, Deserialize)]
pub enum Reply<T> {
    Ok(T),
    /// A failure as text, as versions before typed statuses sent it; still decoded (it means
    /// the peer is unreachable) so a rolling upgrade keeps replicating.
    Err(String),
}
