//! openraft generics, aliased once. Every other module names these types, never the generics.
//! Also the member record the cluster keeps per node ([`Node`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::shard::command::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// RingKV's Raft type configuration: node ids are `u64`, nodes carry their gRPC address
    /// and data-directory incarnation.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = crate::typ::Node,
);

pub type NodeId = u64;

/// A member as every shard's membership records it.
///
/// `incarnation` names the data directory the member's votes and entries live in (random,
/// chosen when the directory was created; see `identity`). A node whose directory is another
/// incarnation than the one recorded lost what the membership counts on, and does not vote
/// until the leader re-records it after it caught up (`readmit`). 0: not recorded (members
/// written before incarnations existed, learners not yet caught up). Encoded as a MessagePack
/// array, so records without the field (older data) decode with 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub addr: String,
    #[serde(default)]
    pub incarnation: u64,
}

impl Node {
    pub fn new(addr: impl Into<String>, incarnation: u64) -> Node {
        Node {
            addr: addr.into(),
            incarnation,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (incarnation {:016x})", self.addr, self.incarnation)
    }
}
pub type Raft = openraft::Raft<TypeConfig, crate::shard::state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::shard::snapshot::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Membership written before incarnations (openraft's `BasicNode`, one field) still
    /// decodes, with no incarnation recorded.
    #[test]
    fn a_node_record_without_incarnation_decodes_as_unrecorded() -> std::io::Result<()> {
        let old = crate::codec::encode(&openraft::BasicNode::new("10.0.0.1:7001"))?;
        let node: Node = crate::codec::decode(&old)?;
        assert_eq!(node, Node::new("10.0.0.1:7001", 0));
        let new = crate::codec::encode(&Node::new("a:1", 7))?;
        assert_eq!(crate::codec::decode::<Node>(&new)?, Node::new("a:1", 7));
        Ok(())
    }
}
