//! The runtime openraft's own tasks run on: every shard's core loop, its replication and
//! heartbeat workers, its log and state-machine workers, and the outgoing peer connections
//! they open (threads named `ringkv-raft-core`).
//!
//! Why (issue 18, "Raft first"): `Raft::new` spawns those tasks on whatever runtime awaits it.
//! On the main runtime they queued behind client requests (decoding, admission, forwarding,
//! TLS), so under client overload a leader's heartbeats and a follower's election timer ran
//! late, and lowering the election timeout caused spurious elections. Here client work never
//! runs: the tasks compete with it only for the CPU, through the OS scheduler, not in one
//! run queue.
//!
//! Invariants:
//! - A shard is started only through [`RaftRuntime::start_shard`], so no openraft task is ever
//!   spawned on the main runtime.
//! - Dropping the runtime never blocks (`shutdown_background`), so it may be dropped inside
//!   the main runtime. A graceful stop shuts every `Raft` down first, so nothing is cut that
//!   matters; a fail-stop (storage failed) drops it with the tasks running, on purpose: replay
//!   at the next start decides what is durable.
//!
//! What it does not do: it carries no gRPC server (the peer listener has its own runtime, see
//! `network::peer_server`) and no client request; it sets no thread priority.

use std::future::Future;

/// Worker threads: two, so one shard's apply (sled writes, on this runtime's blocking pool or
/// inline) never holds up another shard's heartbeats on a single thread.
const WORKER_THREADS: usize = 2;

/// Owns the runtime; see the module note.
pub struct RaftRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl RaftRuntime {
    pub fn new() -> std::io::Result<RaftRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("ringkv-raft-core")
            .enable_all()
            .build()?;
        Ok(RaftRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `start` (a shard's `Raft::new`) on this runtime, so every task it spawns lives
    /// here, and waits for it from any runtime.
    pub async fn start_shard<T, F>(&self, start: F) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the Raft runtime has stopped"))?;
        match runtime.spawn(start).await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("starting a shard on the Raft runtime: {e}")),
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
