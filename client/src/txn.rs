//! Single-shard transactions: a builder ([`Txn`]) and [`Client::txn`].
//!
//! A transaction compares keys against values, versions or absence; when every compare holds
//! the `then_*` ops run, otherwise the `else_*` ops, atomically, in one log entry, every write
//! getting the same version. All its keys must be in one shard (give them one hash tag:
//! `order:{42}:state`, `order:{42}:lines`); the server refuses anything else before writing.
//! It is deduplicated like every write: a retry after an unknown outcome returns the first
//! answer, never applies twice.

use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::pb::{
    TxnCompare, TxnDelete, TxnGet, TxnOp, TxnPut, TxnRequest, txn_compare, txn_op, txn_result,
};

use crate::client::{Client, Versioned};
use crate::error::Error;

/// A transaction under construction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    req: TxnRequest,
}

/// What one op of the branch that ran answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The key's new version (the transaction's).
    Put {
        version: u64,
    },
    Delete {
        existed: bool,
    },
    /// The key as the op saw it (after the branch's earlier ops).
    Get(Option<Versioned>),
    /// In the answer to a retry of a transaction whose gets returned more than 64 KiB in all:
    /// the transaction's outcome is as reported, the value was not kept; read it again.
    GetElided,
}

/// A transaction's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Every compare held, so the `then_*` ops ran (else the `else_*` ops).
    pub succeeded: bool,
    /// One per op of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
    /// The version of every key the transaction wrote.
    pub version: u64,
}

fn put_op(key: Bytes, value: Bytes, ttl: Option<Duration>) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Put(TxnPut {
            key,
            value,
            ttl_ms: ttl.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })),
    }
}

fn del_op(key: Bytes) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Del(TxnDelete { key })),
    }
}

fn get_op(key: Bytes) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Get(TxnGet { key })),
    }
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    fn compare(mut self, key: Bytes, target: txn_compare::Target) -> Self {
        self.req.compare.push(TxnCompare {
            key,
            target: Some(target),
        });
        self
    }

    /// Holds when `key`'s value is `value`.
    pub fn compare_value(self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.compare(key.into(), txn_compare::Target::Value(value.into()))
    }

    /// Holds when `key`'s version is `version` (0: absent).
    pub fn compare_version(self, key: impl Into<Bytes>, version: u64) -> Self {
        self.compare(key.into(), txn_compare::Target::Version(version))
    }

    /// Holds when `key` is absent.
    pub fn compare_absent(self, key: impl Into<Bytes>) -> Self {
        self.compare(key.into(), txn_compare::Target::Absent(true))
    }

    /// Adds `op` to the success branch (`then`) or the failure branch.
    fn push(mut self, then: bool, op: TxnOp) -> Self {
        if then {
            self.req.success.push(op);
        } else {
            self.req.failure.push(op);
        }
        self
    }

    /// When the compares hold: write `key` (clearing any TTL it had).
    pub fn then_put(self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.push(true, put_op(key.into(), value.into(), None))
    }

    /// When the compares hold: write `key` with a TTL.
    pub fn then_put_ttl(
        self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Self {
        self.push(true, put_op(key.into(), value.into(), Some(ttl)))
    }

    pub fn then_del(self, key: impl Into<Bytes>) -> Self {
        self.push(true, del_op(key.into()))
    }

    pub fn then_get(self, key: impl Into<Bytes>) -> Self {
        self.push(true, get_op(key.into()))
    }

    /// When a compare fails: write `key`.
    pub fn else_put(self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.push(false, put_op(key.into(), value.into(), None))
    }

    pub fn else_put_ttl(
        self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Self {
        self.push(false, put_op(key.into(), value.into(), Some(ttl)))
    }

    pub fn else_del(self, key: impl Into<Bytes>) -> Self {
        self.push(false, del_op(key.into()))
    }

    pub fn else_get(self, key: impl Into<Bytes>) -> Self {
        self.push(false, get_op(key.into()))
    }

    /// The key the transaction is routed by: its first.
    fn routing_key(&self) -> Option<Bytes> {
        let op_key = |op: &TxnOp| match &op.op {
            Some(txn_op::Op::Put(p)) => Some(p.key.clone()),
            Some(txn_op::Op::Del(d)) => Some(d.key.clone()),
            Some(txn_op::Op::Get(g)) => Some(g.key.clone()),
            None => None,
        };
        self.req
            .compare
            .first()
            .map(|c| c.key.clone())
            .or_else(|| self.req.success.iter().find_map(op_key))
            .or_else(|| self.req.failure.iter().find_map(op_key))
    }
}

fn result_of(r: ringkv_proto::pb::TxnResult) -> Result<TxnOpResult, Error> {
    Ok(match r.result {
        Some(txn_result::Result::Put(p)) => TxnOpResult::Put { version: p.version },
        Some(txn_result::Result::Del(d)) => TxnOpResult::Delete { existed: d.existed },
        Some(txn_result::Result::GetElided(_)) => TxnOpResult::GetElided,
        Some(txn_result::Result::Get(g)) => TxnOpResult::Get(g.found.then_some(Versioned {
            value: g.value,
            version: g.version,
        })),
        // A committed transaction whose answer this client cannot read: its effect is real.
        None => {
            return Err(Error::OutcomeUnknown(
                "the transaction's answer had an empty result".into(),
            ));
        }
    })
}

impl Client {
    /// Runs a transaction (see [`Txn`]).
    pub async fn txn(&self, txn: &Txn) -> Result<TxnOutcome, Error> {
        let Some(key) = txn.routing_key() else {
            return Err(Error::Invalid(
                "an empty transaction: give it at least one compare or op".into(),
            ));
        };
        let r = self
            .write(&key, |c, header| {
                let mut req = txn.req.clone();
                req.header = header;
                async move { c.txn(req).await }
            })
            .await?;
        Ok(TxnOutcome {
            succeeded: r.succeeded,
            results: r
                .results
                .into_iter()
                .map(result_of)
                .collect::<Result<_, _>>()?,
            version: r.version,
        })
    }
}
