//! One Raft group ("shard"): its log store, state machine, snapshots and the commands it
//! replicates. A node hosts one replica of every shard; [`Shard`] bundles the replica's Raft
//! handle with the state machine that serves reads.

pub mod apply;
pub mod buffer;
pub mod clock;
pub mod command;
pub mod compaction;
pub mod cut;
pub mod expirer;
pub mod log_store;
pub mod record;
pub mod snapshot;
pub mod state_machine;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use crate::typ::{NodeId, Raft, RaftMetrics};
use state_machine::StateMachine;

/// A local replica of one shard.
#[derive(Clone)]
pub struct Shard {
    pub id: u32,
    pub raft: Raft,
    pub sm: StateMachine,
    pub leader_contact: Arc<LeaderContact>,
    /// Stamps cluster time on the commands this node proposes as leader.
    pub clock: Arc<clock::LeaderClock>,
}

/// When this replica last accepted entries or a heartbeat from a leader: the follower-side
/// signal of "still connected" behind `/ready` (openraft only tracks it on leaders).
#[derive(Debug, Default)]
pub struct LeaderContact {
    at: Mutex<Option<Instant>>,
}

impl LeaderContact {
    pub fn touch(&self) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Time since the last contact; `None` if there was none since start.
    pub fn elapsed(&self) -> Option<Duration> {
        self.at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }
}

/// Why a command this node proposed on its own behalf (not a client's) did not apply. None
/// of them says the command did not commit; the commands proposed this way are idempotent.
#[derive(Debug, thiserror::Error)]
pub enum OwnProposalError {
    #[error("this node does not lead shard {0}")]
    NotLeader(u32),
    #[error("shard {shard}: not committed within {timeout_ms} ms")]
    TimedOut { shard: u32, timeout_ms: u128 },
    #[error("shard {shard}: {reason}")]
    Raft { shard: u32, reason: String },
    #[error("shard {shard}: reading the applied clock: {source}")]
    Clock {
        shard: u32,
        #[source]
        source: std::io::Error,
    },
}

impl Shard {
    /// Proposes `op` as this node (client id 0: not deduplicated; only for idempotent
    /// commands such as expiry), stamped `stamped_ms`, and waits at most `timeout` for it to
    /// apply.
    pub async fn propose_own(
        &self,
        op: command::Op,
        stamped_ms: u64,
        timeout: Duration,
    ) -> Result<command::CommandResponse, OwnProposalError> {
        let cmd = command::Command {
            client_id: 0,
            sequence: 0,
            acked_below: 0,
            stamped_ms,
            op,
        };
        match tokio::time::timeout(timeout, self.raft.client_write(cmd)).await {
            Err(_) => Err(OwnProposalError::TimedOut {
                shard: self.id,
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            ))) => Err(OwnProposalError::NotLeader(self.id)),
            Ok(Err(e)) => Err(OwnProposalError::Raft {
                shard: self.id,
                reason: e.to_string(),
            }),
        }
    }

    /// The cluster-time stamp, as [`Shard::stamp_ms`], with the error typed.
    pub fn stamp_now(&self) -> Result<u64, OwnProposalError> {
        self.stamp_ms().map_err(|source| OwnProposalError::Clock {
            shard: self.id,
            source,
        })
    }

    /// The cluster-time stamp for a command this node proposes now (see [`clock`]).
    pub fn stamp_ms(&self) -> std::io::Result<u64> {
        let term = self.raft.metrics().borrow_watched().current_term;
        self.clock
            .stamp(term, std::time::Instant::now(), || self.sm.clock_ms())
    }

    /// A snapshot of the replica's Raft metrics (never holds the watch guard across awaits).
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The leader this replica currently believes in, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }
}

/// All local replicas, indexed by shard id.
pub type Shards = Arc<Vec<Shard>>;
