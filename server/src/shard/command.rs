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
    // The kinds below need [`crate::features::TTL`] on every member (see [`Op::features`]);
    // new kinds go at the end, so older entries keep their encoding.
    /// A put that sets or keeps a time to live (a plain [`Op::Put`] clears it).
    PutTtl {
        key: Bytes,
        value: Bytes,
        ttl: TtlChange,
    },
    /// A compare-and-swap whose written value gets `ttl`.
    CasTtl {
        key: Bytes,
        expected: Expected,
        new_value: Option<Bytes>,
        ttl: TtlChange,
    },
    /// Restarts a live key's TTL from now: `ttl_ms`, or the TTL it has. Version unchanged.
    Touch {
        key: Bytes,
        ttl_ms: Option<u64>,
    },
    /// Removes a live key's TTL. Version unchanged.
    Persist {
        key: Bytes,
    },
    /// Removes each key whose record still has that deadline, once the deadline has passed in
    /// cluster time, and the deadline's index entry in any case. Proposed by the leader only
    /// (its expirer, or a read that saw a deadline pass before the applied clock did). Empty:
    /// only advances the clock to this entry's stamp.
    Expire {
        keys: Vec<(Bytes, u64)>,
    },
    /// Opens the shard to the command kinds of these feature bits (see [`crate::features`]):
    /// proposed once every member has said it can apply them.
    EnableFeatures {
        bits: u64,
    },
    /// An atomic single-shard transaction (see [`Txn`]); `key` is one of its keys, for
    /// routing. Needs [`crate::features::TXN`].
    Txn {
        key: Bytes,
        txn: Box<Txn>,
    },
}

/// A transaction: when every compare holds, `success` runs, else `failure`; in order, each op
/// seeing the ones before it; every write gets the entry's index as its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<(Bytes, Expected)>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// `ttl_ms` None: no TTL (any TTL the key had is cleared).
    Put {
        key: Bytes,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: Bytes,
    },
    Get {
        key: Bytes,
    },
}

impl TxnOp {
    pub fn key(&self) -> &Bytes {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// What one transaction op answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put {
        version: u64,
        ttl_ms: Option<u64>,
    },
    Delete {
        existed: bool,
    },
    Get {
        current: Option<Versioned>,
    },
    /// A get answered to a retry of a transaction whose gets returned more than the
    /// deduplication record keeps (`apply::TXN_KEPT_GET_BYTES_MAX`): the writes' outcome is
    /// as recorded, the values are not; read them again.
    GetElided,
}

/// What a TTL-aware write does to the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlChange {
    /// Expire this many ms of cluster time after the write applies.
    Set(u64),
    /// Keep the key's current TTL (none if it has none or is absent).
    Keep,
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
    Touch {
        found: bool,
        /// The key's TTL after the touch (None: it has none).
        ttl_ms: Option<u64>,
    },
    Persist {
        found: bool,
        had_ttl: bool,
    },
    /// The answer of a `PutTtl` or `CasTtl`: the plain answer, and the key's TTL after it
    /// (None: it has none, or nothing was written).
    WithTtl {
        response: Box<CommandResponse>,
        ttl_ms: Option<u64>,
    },
    Txn {
        succeeded: bool,
        results: Vec<TxnOpResult>,
        /// The entry's log index: the version of every key the transaction wrote.
        version: u64,
    },
}

impl Op {
    /// The user key the operation touches (empty for cluster records such as [`Op::Retire`]).
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. }
            | Op::PutTtl { key, .. }
            | Op::CasTtl { key, .. }
            | Op::Touch { key, .. }
            | Op::Persist { key }
            | Op::Txn { key, .. } => key,
            Op::Retire { .. } | Op::Expire { .. } | Op::EnableFeatures { .. } => &[],
        }
    }

    /// The feature bits every member of the shard needs before this kind enters its log.
    pub fn features(&self) -> u64 {
        match self {
            Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. } | Op::Retire { .. } => 0,
            Op::PutTtl { .. }
            | Op::CasTtl { .. }
            | Op::Touch { .. }
            | Op::Persist { .. }
            | Op::Expire { .. } => crate::features::TTL,
            Op::Txn { .. } => crate::features::TXN,
            // Proposed only after the check it records.
            Op::EnableFeatures { .. } => 0,
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
            Op::PutTtl { .. } => "put-ttl",
            Op::CasTtl { .. } => "cas-ttl",
            Op::Touch { .. } => "touch",
            Op::Persist { .. } => "persist",
            Op::Expire { .. } => "expire",
            Op::EnableFeatures { .. } => "enable-features",
            Op::Txn { .. } => "txn",
        };
        write!(
            f,
            "{kind}(client={}, seq={})",
            self.client_id, self.sequence
        )
    }
}
