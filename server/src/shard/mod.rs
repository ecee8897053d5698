//! One Raft group ("shard"): its log store, state machine, snapshots and the commands it
//! replicates. A node hosts one replica of every shard; [`Shard`] bundles the replica's Raft
//! handle with the state machine that serves reads.

pub mod apply;
pub mod command;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;

use crate::typ::{NodeId, Raft, RaftMetrics};
use state_machine::StateMachine;

/// A local replica of one shard.
#[derive(Clone)]
pub struct Shard {
    pub id: u32,
    pub raft: Raft,
    pub sm: StateMachine,
}

impl Shard {
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
