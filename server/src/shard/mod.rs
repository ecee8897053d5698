//! One Raft group ("shard"): its log store, state machine, snapshots and the commands it
//! replicates. A node hosts one replica of every shard; [`Shard`] bundles the replica's Raft
//! handle with the state machine that serves reads.

pub mod apply;
pub mod buffer;
pub mod clock;
pub mod command;
pub mod compaction;
pub mod cut;
pub mod log_store;
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

impl Shard {
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
