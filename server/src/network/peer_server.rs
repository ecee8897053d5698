//! The peer listener (`--peer-listen`): the `Raft` gRPC service, alone, on its own port and its
//! own small tokio runtime (one worker thread named `ringkv-raft`).
//!
//! Why: appends, heartbeats, votes and snapshots must not wait behind client work. On the
//! client listener they shared its connections, its accept loop and the main runtime's
//! workers with every client request, so under client overload a follower's append replies
//! came late (issue 18: "no append reply within 150 ms"). Here they have their own socket,
//! their own HTTP/2 connections with their own limits, and a runtime client requests never
//! run on.
//!
//! Invariants:
//! - Only `Raft` is served here, and `Raft` is served only here (not on the client port), so a
//!   scan of the client port never reaches Raft and a client can never occupy a peer slot.
//! - Every connection is bounded: at most [`streams_per_connection_max`] concurrent streams
//!   (HTTP/2 refuses more), messages up to the caller's `message_bytes_max` each way, and an
//!   HTTP/2 keepalive that closes a connection whose peer stopped answering.
//! - [`PeerServer::stop`] ends the server within a bounded time (open append streams end at
//!   once through the shutdown token; what is still open after [`STOP_TIMEOUT`] is cut);
//!   dropping it cuts at once.
//!
//! With TLS (`start`'s `tls`) the listener speaks only TLS and requires a client certificate
//! from the cluster CA; which certificates may call Raft is `RaftService`'s peer check.
//!
//! What it does not do: openraft's own tasks (each shard's core, replication and heartbeat
//! workers, the log and state-machine workers) run on the runtime of `raft_runtime`, not
//! here; this runtime only carries the receiving side of the transport.

use std::time::Duration;

use ringkv_proto::pb::raft_server::RaftServer;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::network::server::RaftService;

/// HTTP/2 keepalive pings on peer connections, and how long a ping may go unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`PeerServer::stop`] waits for connections to close before cutting them.
pub const STOP_TIMEOUT: Duration = Duration::from_millis(500);
/// Worker threads of the peer runtime (its blocking pool, for snapshot files, is separate).
const WORKER_THREADS: usize = 1;
/// Blocking threads of the peer runtime: received snapshots are checked and written on them.
const BLOCKING_THREADS_MAX: usize = 4;

/// Concurrent streams one peer connection may hold: each shard's append stream from that peer
/// (one per shard it leads), its unary heartbeats and votes, and a margin for snapshots and
/// leadership transfers.
pub fn streams_per_connection_max(shards: u32) -> u32 {
    shards.saturating_mul(2).saturating_add(64)
}

/// The running peer server.
pub struct PeerServer {
    cancel: CancellationToken,
    /// Resolves when the server's thread has finished serving.
    done: oneshot::Receiver<Result<(), tonic::transport::Error>>,
    /// Asks the thread to drop the server (cutting what is still open).
    cut: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts serving `service` on `listener` on a new `ringkv-raft` runtime. `cancel` is the
/// service's shutdown token: [`PeerServer::stop`] cancels it.
pub fn start(
    listener: std::net::TcpListener,
    service: RaftService,
    cancel: CancellationToken,
    shards: u32,
    message_bytes_max: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> std::io::Result<PeerServer> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .thread_name("ringkv-raft")
        .enable_all()
        .build()?;
    let (done_tx, done) = oneshot::channel();
    let (cut, cut_rx) = oneshot::channel::<()>();
    let token = cancel.clone();
    let thread = std::thread::Builder::new()
        .name("ringkv-raft".into())
        .spawn(move || {
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let server = serve(listener, service, token, shards, message_bytes_max, tls);
                tokio::select! {
                    r = server => r.map_err(Served::Server),
                    _ = cut_rx => Ok(()),
                }
            });
            // Connection tasks still running are dropped with the runtime.
            runtime.shutdown_timeout(STOP_TIMEOUT);
            let _ = done_tx.send(match result {
                Ok(()) => Ok(()),
                Err(Served::Server(e)) => Err(e),
                Err(Served::Listener(e)) => {
                    tracing::error!(error = %e, "peer listener could not be registered");
                    Ok(())
                }
            });
        })?;
    Ok(PeerServer {
        cancel,
        done,
        cut: Some(cut),
        thread: Some(thread),
    })
}

enum Served {
    Listener(std::io::Error),
    Server(tonic::transport::Error),
}

impl From<std::io::Error> for Served {
    fn from(e: std::io::Error) -> Served {
        Served::Listener(e)
    }
}

/// The tonic server of the peer listener, with its limits.
async fn serve(
    listener: tokio::net::TcpListener,
    service: RaftService,
    cancel: CancellationToken,
    shards: u32,
    message_bytes_max: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::network::accept_nodelay(listener);
    let streams = streams_per_connection_max(shards);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(streams))
        .concurrency_limit_per_connection(streams as usize)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            RaftServer::new(service)
                .max_decoding_message_size(message_bytes_max)
                .max_encoding_message_size(message_bytes_max),
        )
        .serve_with_incoming_shutdown(incoming, async move { cancel.cancelled().await })
        .await
}

impl PeerServer {
    /// Stops serving: open append streams end, connections close (those still open after
    /// [`STOP_TIMEOUT`] are cut), and the runtime's thread exits.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.done).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "peer gRPC server ended with an error"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("peer connections did not close in time; cutting them");
                if let Some(cut) = self.cut.take() {
                    let _ = cut.send(());
                }
                let _ = tokio::time::timeout(STOP_TIMEOUT * 2, &mut self.done).await;
            }
        }
        // The thread has sent its result (or is past its bounded runtime shutdown); joining it
        // off the runtime keeps a slow exit from blocking a worker.
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Cuts the server at once (fail-stop: nothing waits).
    pub fn abort(self) {
        drop(self);
    }
}

/// A server dropped without [`PeerServer::stop`] (an error ended the node) stops serving at once:
/// no Raft group here answers peers once the node is gone.
impl Drop for PeerServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_can_hold_an_append_stream_from_a_peer_with_room_to_spare() {
        for shards in [1, 8, 1024] {
            assert!(streams_per_connection_max(shards) >= 2 * shards + 64);
        }
    }
}
