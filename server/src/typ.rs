//! openraft generics, aliased once. Every other module names these types, never the generics.
//! Also the member record the cluster keeps per node ([`Node`]) and where its peer port is.

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

/// Added to a client port to give the default peer port (`--peer-listen`).
pub const PEER_PORT_OFFSET: u16 = 1000;

/// A member as every shard's membership records it.
///
/// `addr` is the member's client address (`--listen`: `Kv` and `Cluster`); Raft traffic goes to
/// [`Node::peer_addr`], its peer listener (`--peer-listen`), which by default is the client
/// port plus [`PEER_PORT_OFFSET`] on the same host.
///
/// `incarnation` names the data directory the member's votes and entries live in (random,
/// chosen when the directory was created; see `identity`). A node whose directory is another
/// incarnation than the one recorded lost what the membership counts on, and does not vote
/// until the leader re-records it after it caught up (`readmit`). 0: not recorded (members
/// written before incarnations existed, learners not yet caught up).
///
/// Encoded as a MessagePack array. Records without `incarnation` (older data) decode with 0;
/// `peer_addr` is written only when it is not the derived default, so a member on the default
/// peer port writes exactly the two-field record of versions before peer listeners, and a
/// record without it decodes as "derived".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub addr: String,
    #[serde(default)]
    pub incarnation: u64,
    /// The explicit peer address; empty: derived from `addr` (see [`Node::peer_addr`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_addr: String,
}

/// The default peer address of client address `addr` (`HOST:PORT`): the same host, the port
/// plus [`PEER_PORT_OFFSET`]. `None` when `addr` has no port or the sum is not a port.
pub fn derived_peer_addr(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?.checked_add(PEER_PORT_OFFSET)?;
    Some(format!("{host}:{port}"))
}

impl Node {
    /// A member on the default peer address.
    pub fn new(addr: impl Into<String>, incarnation: u64) -> Node {
        Node {
            addr: addr.into(),
            incarnation,
            peer_addr: String::new(),
        }
    }

    /// A member whose peer address is `peer_addr` (empty: the default). A `peer_addr` equal to
    /// the default is recorded as the default, so the record stays the two-field one.
    pub fn with_peer_addr(addr: impl Into<String>, peer_addr: &str, incarnation: u64) -> Node {
        let mut node = Node::new(addr, incarnation);
        if derived_peer_addr(&node.addr).as_deref() != Some(peer_addr) {
            node.peer_addr = peer_addr.to_string();
        }
        node
    }

    /// Where this member serves Raft: the explicit peer address, or the derived one. A client
    /// address whose port has no derived peer port (validation refuses such members unless
    /// they name their peer address) yields the client address itself, which does not serve
    /// Raft: the member is then unreachable for Raft, never mistaken for another.
    pub fn peer_addr(&self) -> String {
        if !self.peer_addr.is_empty() {
            return self.peer_addr.clone();
        }
        derived_peer_addr(&self.addr).unwrap_or_else(|| self.addr.clone())
    }

    /// The same member with another incarnation (its addresses kept).
    pub fn with_incarnation(&self, incarnation: u64) -> Node {
        Node {
            incarnation,
            ..self.clone()
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (peer {}, incarnation {:016x})",
            self.addr,
            self.peer_addr(),
            self.incarnation
        )
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

    /// The two-field record of versions before peer listeners.
    #[derive(Serialize)]
    struct TwoFieldNode<'a> {
        addr: &'a str,
        incarnation: u64,
    }

    /// A member on the default peer port writes exactly the record older versions write (and
    /// read); one with an explicit peer address writes a third field, which decodes back.
    #[test]
    fn a_default_peer_node_writes_the_two_field_record() -> std::io::Result<()> {
        let two = crate::codec::encode(&TwoFieldNode {
            addr: "10.0.0.1:7001",
            incarnation: 7,
        })?;
        let derived = Node::with_peer_addr("10.0.0.1:7001", "10.0.0.1:8001", 7);
        assert_eq!(derived.peer_addr, "", "the default is not recorded");
        assert_eq!(crate::codec::encode(&derived)?, two);
        assert_eq!(crate::codec::encode(&Node::new("10.0.0.1:7001", 7))?, two);
        let decoded: Node = crate::codec::decode(&two)?;
        assert_eq!(decoded.peer_addr(), "10.0.0.1:8001");

        let explicit = Node::with_peer_addr("10.0.0.1:7001", "10.0.0.9:7101", 7);
        let three = crate::codec::encode(&explicit)?;
        assert_ne!(three, two);
        let decoded: Node = crate::codec::decode(&three)?;
        assert_eq!(decoded, explicit);
        assert_eq!(decoded.peer_addr(), "10.0.0.9:7101");
        assert_eq!(decoded.with_incarnation(9).peer_addr(), "10.0.0.9:7101");
        Ok(())
    }

    #[test]
    fn the_peer_address_derives_from_the_client_port() {
        assert_eq!(derived_peer_addr("h:7001").as_deref(), Some("h:8001"));
        assert_eq!(
            derived_peer_addr("[::1]:7001").as_deref(),
            Some("[::1]:8001")
        );
        assert_eq!(derived_peer_addr("h:64535").as_deref(), Some("h:65535"));
        assert_eq!(derived_peer_addr("h:64536"), None);
        assert_eq!(derived_peer_addr("h"), None);
        assert_eq!(Node::new("h:65000", 0).peer_addr(), "h:65000");
    }
}
