//! The commands a shard's log carries and the responses apply computes.
//!
//! A [`Command`] is deterministic input: everything apply needs is inside it, including the
//! proposing leader's cluster-time stamp (`stamped_ms`, see [`crate::shard::clock`]), which
//! apply uses only to expire idle clients' deduplication records. Apply never reads a clock or
//! a random source.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One client write, with its at-most-once identity `(client_id, sequence)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// 0 means anonymous: the write is not deduplicated.
    pub client_id: u64,
    pub sequence: u64,
    /// The client has received answers for every sequence below this one.
    pub acked_below: u64,
    /// Cluster time of the proposing leader, in ms (see [`crate::shard::clock`]; entries
    /// written before it carry the leader's wall clock, ms since the Unix epoch).
    pub stamped_ms: u64,
    pub op: Op,
}

/// The mutation itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Cas {
        key: Bytes,
        expected: Expected,
        new_value: Option<Bytes>,
    },
    /// Records that a node id left the cluster for good (issued by `member remove` before the
    /// membership change), so the id is never accepted again. No user key is touched.
    Retire {
        node_id: u64,
    },
}

/// What a compare-and-swap compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expected {
    Value(Bytes),
    Absent,
    /// The key's version; 0 means absent.
    Version(u64),
}

/// A value with its version (the log index of the write that produced it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// What apply answers. Blank and membership entries answer [`CommandResponse::None`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    None,
    Put {
        version: u64,
    },
    Delete {
        existed: bool,
    },
    Cas {
        succeeded: bool,
        current: Option<Versioned>,
        new_version: u64,
    },
    /// The sequence is below the client's acknowledged watermark: a stale duplicate that was
    /// already answered; nothing was applied now.
    Expired,
}

impl Op {
    /// The user key the operation touches (empty for cluster records such as [`Op::Retire`]).
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
            Op::Retire { .. } => &[],
        }
    }
}

impl fmt::Display for Command {
    /// Never prints keys or values (they may hold user data).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.op {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Cas { .. } => "cas",
            Op::Retire { .. } => "retire",
        };
        write!(
            f,
            "{kind}(client={}, seq={})",
            self.client_id, self.sequence
        )
    }
}
