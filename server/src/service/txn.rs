//! Single-shard transactions in the `Kv` service (issue 17 item 5): validation, then one
//! `Txn` log entry through the ordinary write path (deduplicated, forwarded to the leader,
//! refused while a member cannot apply it).
//!
//! Everything is checked before anything is proposed, so a refused transaction wrote
//! nothing: at least one compare or op and at most `--txn-ops-max` of them together, key and
//! value limits, TTLs, no key written twice in one branch, and every key in one shard (the
//! refusal names the shards and suggests a hash tag).
//!
//! It does not run transactions across shards.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{
    DeleteResponse, GetResponse, PutResponse, TxnRequest, TxnResponse, TxnResult, txn_compare,
    txn_op, txn_result,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{Action, Caller};
use crate::service::admission::{Class, deadline_of};
use crate::service::error::KvError;
use crate::service::kv::KvService;
use crate::shard::command::{CommandResponse, Expected, Op, Txn, TxnOp, TxnOpResult};

/// The authorization a transaction needs: read for every compared or read key, write for
/// every written one.
pub fn actions(req: &TxnRequest) -> Vec<Action<'_>> {
    let mut out: Vec<Action<'_>> = req
        .compare
        .iter()
        .map(|c| Action::Get { key: &c.key })
        .collect();
    for op in req.success.iter().chain(&req.failure) {
        out.push(match &op.op {
            Some(txn_op::Op::Put(p)) => Action::Put { key: &p.key },
            Some(txn_op::Op::Del(d)) => Action::Delete { key: &d.key },
            Some(txn_op::Op::Get(g)) => Action::Get { key: &g.key },
            None => continue,
        });
    }
    out
}

fn detached(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl KvService {
    /// The command for `req`, or why it is refused (nothing written).
    fn txn_command(&self, req: &TxnRequest) -> Result<Op, KvError> {
        let count = req.compare.len() + req.success.len() + req.failure.len();
        if count == 0 {
            return Err(KvError::Invalid(
                "an empty transaction: give it at least one compare or op".into(),
            ));
        }
        if count > self.limits.txn_ops_max {
            return Err(KvError::Invalid(format!(
                "the transaction has {count} compares and ops, over the limit txn_ops_max={}",
                self.limits.txn_ops_max
            )));
        }
        let mut compare = Vec::with_capacity(req.compare.len());
        for c in &req.compare {
            self.limits.check_key(&c.key)?;
            let expected = match &c.target {
                Some(txn_compare::Target::Value(v)) => {
                    self.limits.check_value(v)?;
                    Expected::Value(detached(v))
                }
                Some(txn_compare::Target::Version(n)) => Expected::Version(*n),
                Some(txn_compare::Target::Absent(true)) => Expected::Absent,
                Some(txn_compare::Target::Absent(false)) | None => {
                    return Err(KvError::Invalid(
                        "a compare needs a value, a version or absent=true".into(),
                    ));
                }
            };
            compare.push((detached(&c.key), expected));
        }
        let success = self.txn_branch(&req.success, "success")?;
        let failure = self.txn_branch(&req.failure, "failure")?;
        // Every key in one shard.
        let mut shards: BTreeMap<u32, &Bytes> = BTreeMap::new();
        let keys = compare
            .iter()
            .map(|(k, _)| k)
            .chain(success.iter().chain(&failure).map(TxnOp::key));
        for k in keys {
            shards.entry(self.router.shard_for_key(k).id).or_insert(k);
        }
        if shards.len() > 1 {
            let named: Vec<String> = shards
                .iter()
                .map(|(s, k)| format!("shard {s} ({})", String::from_utf8_lossy(k)))
                .collect();
            return Err(KvError::Invalid(format!(
                "a transaction stays within one shard, but its keys are in {}: give them one \
                 hash tag, e.g. order:{{42}}:state and order:{{42}}:lines",
                named.join(", ")
            )));
        }
        let key = shards
            .values()
            .next()
            .map(|k| (*k).clone())
            .unwrap_or_default();
        Ok(Op::Txn {
            key,
            txn: Box::new(Txn {
                compare,
                success,
                failure,
            }),
        })
    }

    fn txn_branch(
        &self,
        ops: &[ringkv_proto::pb::TxnOp],
        branch: &str,
    ) -> Result<Vec<TxnOp>, KvError> {
        let mut written: HashSet<&[u8]> = HashSet::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, parsed) = match &op.op {
                Some(txn_op::Op::Put(p)) => {
                    self.limits.check_value(&p.value)?;
                    let ttl_ms = match p.ttl_ms {
                        0 => None,
                        ms => Some(crate::service::ttl::check_ttl(ms)?),
                    };
                    (
                        &p.key,
                        TxnOp::Put {
                            key: detached(&p.key),
                            value: detached(&p.value),
                            ttl_ms,
                        },
                    )
                }
                Some(txn_op::Op::Del(d)) => (
                    &d.key,
                    TxnOp::Delete {
                        key: detached(&d.key),
                    },
                ),
                Some(txn_op::Op::Get(g)) => (
                    &g.key,
                    TxnOp::Get {
                        key: detached(&g.key),
                    },
                ),
                None => {
                    return Err(KvError::Invalid(format!(
                        "an op of the {branch} branch is empty: give it put, del or get"
                    )));
                }
            };
            self.limits.check_key(key)?;
            if !matches!(parsed, TxnOp::Get { .. }) && !written.insert(key) {
                return Err(KvError::Invalid(format!(
                    "the {branch} branch writes {} twice",
                    String::from_utf8_lossy(key)
                )));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(op = "txn"))]
    pub(crate) async fn txn_inner(
        &self,
        caller: Caller,
        request: Request<TxnRequest>,
    ) -> Result<Response<TxnResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let _permit = self
            .admit(
                &req.header,
                prost::Message::encoded_len(&req),
                Class::Write,
                deadline,
            )
            .await?;
        let op = self.txn_command(&req)?;
        let header = req.header.clone();
        crate::service::kv::mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            op,
            |r| match r {
                CommandResponse::Txn {
                    succeeded,
                    results,
                    version,
                } => Ok(TxnResponse {
                    succeeded,
                    results: results.into_iter().map(wire_result).collect(),
                    version,
                }),
                other => Err(crate::service::kv::unexpected(other)),
            },
            |mut c: KvClient<Channel>| async move { c.txn(onward).await },
        )
        .await
    }
}

fn wire_result(r: TxnOpResult) -> TxnResult {
    let result = match r {
        TxnOpResult::Put { version, ttl_ms } => txn_result::Result::Put(PutResponse {
            version,
            ttl_ms: crate::service::ttl::wire_ttl(ttl_ms),
        }),
        TxnOpResult::Delete { existed } => txn_result::Result::Del(DeleteResponse { existed }),
        TxnOpResult::GetElided => txn_result::Result::GetElided(true),
        TxnOpResult::Get { current } => txn_result::Result::Get(match current {
            Some(v) => GetResponse {
                found: true,
                value: v.value,
                version: v.version,
            },
            None => GetResponse {
                found: false,
                value: Bytes::new(),
                version: 0,
            },
        }),
    };
    TxnResult {
        result: Some(result),
    }
}
