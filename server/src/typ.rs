//! openraft generics, aliased once. Every other module names these types, never the generics.

use crate::shard::command::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// RingKV's Raft type configuration: node ids are `u64`, nodes carry their gRPC address.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig, crate::shard::state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::shard::snapshot::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
