//! Per-key TTL in the `Kv` service: what a read sees of keys whose deadline has passed, the
//! `Touch`, `Persist` and `Ttl` handlers, the TTL fields of Put and CompareAndSwap, and the
//! feature gate that keeps TTL commands out of a shard's log until every member can apply them.
//!
//! What a read sees (issue 17 item 2): a key is absent once its deadline has passed in cluster
//! time, before the expiry entry removing it is applied. A linearizable read on the leader
//! judges records by the larger of the applied clock (read before the records) and the
//! leader's current stamp. A deadline between the two has passed only on this leader's clock,
//! which a later leader might not have reached yet (it anchors on the applied clock); the read
//! then first commits an `Expire` for those keys stamped with that time, so every later leader
//! is past the deadline too, and reads again. So no read shows a key absent and a later read
//! shows it present; the price is one commit, only for a read of a key in the moment after its
//! deadline. A serializable read judges by the applied clock alone.
//!
//! Invariants: an absent verdict always rests on a committed clock at or past the deadline; a
//! touch or persist never changes a key's version; nothing here reads a wall clock.
//!
//! It does not expire keys in the background (see [`crate::shard::expirer`]).

use std::time::Instant;

use bytes::Bytes;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{
    PersistRequest, PersistResponse, TouchRequest, TouchResponse, TtlRequest, TtlResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::router::Route;
use crate::service::admission::{Class, deadline_of};
use crate::service::error::KvError;
use crate::service::kv::KvService;
use crate::shard::Shard;
use crate::shard::command::{CommandResponse, Op, TtlChange};
use crate::shard::record::Record;

/// The longest TTL accepted: a year of cluster time.
pub const TTL_MS_MAX: u64 = 366 * 24 * 3600 * 1000;

/// The TTL change a Put or CompareAndSwap asks for: `None` for neither field (a plain write,
/// which clears any TTL).
pub fn ttl_change(ttl_ms: u64, keep_ttl: bool) -> Result<Option<TtlChange>, KvError> {
    match (ttl_ms, keep_ttl) {
        (0, false) => Ok(None),
        (0, true) => Ok(Some(TtlChange::Keep)),
        (_, true) => Err(KvError::Invalid(
            "ttl_ms and keep_ttl exclude each other".into(),
        )),
        (ms, false) => Ok(Some(TtlChange::Set(check_ttl(ms)?))),
    }
}

/// Checks a TTL is within (0, [`TTL_MS_MAX`]].
pub fn check_ttl(ms: u64) -> Result<u64, KvError> {
    if ms == 0 || ms > TTL_MS_MAX {
        return Err(KvError::Invalid(format!(
            "ttl_ms={ms} is outside 1..={TTL_MS_MAX} (a year)"
        )));
    }
    Ok(ms)
}

/// The wire form of a TTL: ms, or -1 for none.
pub fn wire_ttl(ttl_ms: Option<u64>) -> i64 {
    ttl_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

fn internal(e: impl std::fmt::Display) -> KvError {
    KvError::Internal(e.to_string())
}

fn unavailable(shard: &Shard, e: impl std::fmt::Display) -> KvError {
    KvError::NoLeader {
        shard: shard.id,
        reason: e.to_string(),
    }
}

impl KvService {
    /// Reads with `read` from the local replica of `shard` (after the caller's read barrier
    /// when `linearizable`) and returns what it read with the cluster time to judge its
    /// records by ([`Record::live_at`]); `deadlines` lists each record's (key, deadline).
    /// See the module note for why a read may commit an expiry first.
    pub(crate) async fn read_at_cluster_time<T>(
        &self,
        shard: &Shard,
        linearizable: bool,
        read: impl Fn() -> Result<T, KvError>,
        deadlines: impl Fn(&T) -> Vec<(Bytes, u64)>,
    ) -> Result<(T, u64), KvError> {
        let applied_ms = shard.sm.clock_ms().map_err(internal)?;
        let rows = read()?;
        if !linearizable {
            return Ok((rows, applied_ms));
        }
        let due = deadlines(&rows);
        if due.is_empty() {
            return Ok((rows, applied_ms));
        }
        let now_ms = shard.stamp_now().map_err(internal)?.max(applied_ms);
        let settle: Vec<(Bytes, u64)> = due
            .into_iter()
            .filter(|(_, d)| applied_ms < *d && *d <= now_ms)
            .collect();
        if settle.is_empty() {
            return Ok((rows, now_ms));
        }
        shard
            .propose_own(Op::Expire { keys: settle }, now_ms, self.write_timeout)
            .await
            .map_err(|e| unavailable(shard, e))?;
        // The state after the expiry: the applied clock is now at or past `now_ms`.
        let applied_ms = shard.sm.clock_ms().map_err(internal)?;
        Ok((read()?, applied_ms))
    }

    /// Opens `shard` to the command kinds of `wanted` if it is not yet: refuses (naming the
    /// node) while a member has not said it can apply them, else commits `EnableFeatures`.
    /// Called on the leader before proposing a command that needs them.
    pub(crate) async fn ensure_features(&self, shard: &Shard, wanted: u64) -> Result<(), KvError> {
        if wanted == 0 {
            return Ok(());
        }
        let have = shard.sm.features().map_err(internal)?;
        if have & wanted == wanted {
            return Ok(());
        }
        let members: Vec<u64> = {
            let watch = shard.raft.metrics();
            let m = openraft::async_runtime::WatchReceiver::borrow_watched(&watch);
            m.membership_config.nodes().map(|(id, _)| *id).collect()
        };
        self.features
            .check(self.router.self_id, members, wanted, Instant::now())
            .map_err(|l| KvError::Unsupported {
                node: l.node(),
                message: format!("shard {}: {l}", shard.id),
            })?;
        let stamp = shard.stamp_now().map_err(internal)?;
        shard
            .propose_own(
                Op::EnableFeatures {
                    bits: have | wanted,
                },
                stamp,
                self.write_timeout,
            )
            .await
            .map_err(|e| unavailable(shard, e))?;
        tracing::info!(shard = shard.id, features = %crate::features::names(have | wanted),
            "every member supports these command kinds: enabled on the shard");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(op = "touch"))]
    pub(crate) async fn touch_inner(
        &self,
        caller: Caller,
        request: Request<TouchRequest>,
    ) -> Result<Response<TouchResponse>, Status> {
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
        self.limits.check_key(&req.key)?;
        let ttl_ms = req.ttl_ms.map(check_ttl).transpose()?;
        let key = Bytes::copy_from_slice(&req.key);
        // Sliding sessions: a live key with more than half of its TTL left needs no write.
        if let Some(resp) = self.touch_without_write(&key, ttl_ms).await? {
            return Ok(Response::new(resp));
        }
        let header = req.header.clone();
        crate::service::kv::mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            Op::Touch { key, ttl_ms },
            |r| match r {
                CommandResponse::Touch { found, ttl_ms } => Ok(TouchResponse {
                    found,
                    ttl_ms: wire_ttl(ttl_ms),
                }),
                other => Err(crate::service::kv::unexpected(other)),
            },
            |mut c: KvClient<Channel>| async move { c.touch(onward).await },
        )
        .await
    }

    /// The answer to a touch that changes nothing worth a log write, when this node leads the
    /// key's shard: the key is live with more than half of the TTL the touch would give it
    /// left (or absent, or without a TTL and touched without one). `None`: propose the touch.
    async fn touch_without_write(
        &self,
        key: &Bytes,
        ttl_ms: Option<u64>,
    ) -> Result<Option<TouchResponse>, KvError> {
        let shard = self.router.shard_for_key(key);
        let Route::Local(shard) = self.router.route(shard) else {
            return Ok(None);
        };
        self.read_barrier(shard).await?;
        let (record, clock_ms) = self
            .read_at_cluster_time(
                shard,
                true,
                || shard.sm.get(key).map_err(internal),
                |r: &Option<Record>| deadlines_of(key, r.as_ref()),
            )
            .await?;
        let Some(record) = record.filter(|r| r.live_at(clock_ms)) else {
            return Ok(Some(TouchResponse {
                found: false,
                ttl_ms: -1,
            }));
        };
        Ok(match (record.expiry, ttl_ms) {
            (None, None) => Some(TouchResponse {
                found: true,
                ttl_ms: -1,
            }),
            (Some(e), wanted) if wanted.is_none_or(|w| w == e.ttl_ms) => {
                let left_ms = e.deadline_ms.saturating_sub(clock_ms);
                (left_ms > e.ttl_ms / 2).then_some(TouchResponse {
                    found: true,
                    ttl_ms: wire_ttl(Some(e.ttl_ms)),
                })
            }
            _ => None,
        })
    }

    #[tracing::instrument(skip_all, fields(op = "persist"))]
    pub(crate) async fn persist_inner(
        &self,
        caller: Caller,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
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
        self.limits.check_key(&req.key)?;
        let key = Bytes::copy_from_slice(&req.key);
        let header = req.header.clone();
        crate::service::kv::mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            Op::Persist { key },
            |r| match r {
                CommandResponse::Persist { found, had_ttl } => {
                    Ok(PersistResponse { found, had_ttl })
                }
                other => Err(crate::service::kv::unexpected(other)),
            },
            |mut c: KvClient<Channel>| async move { c.persist(onward).await },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(op = "ttl"))]
    pub(crate) async fn ttl_inner(
        &self,
        caller: Caller,
        request: Request<TtlRequest>,
    ) -> Result<Response<TtlResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let class = if req.serializable {
            Class::SerializableRead
        } else {
            Class::LinearizableRead
        };
        let _permit = self
            .admit(
                &req.header,
                prost::Message::encoded_len(&req),
                class,
                deadline,
            )
            .await?;
        self.limits.check_key(&req.key)?;
        let key = Bytes::copy_from_slice(&req.key);
        let shard = self.router.shard_for_key(&key);
        let answer = |record: Option<Record>, clock_ms: u64| match record
            .filter(|r| r.live_at(clock_ms))
        {
            None => TtlResponse {
                found: false,
                remaining_ms: 0,
                ttl_ms: -1,
            },
            Some(r) => TtlResponse {
                found: true,
                remaining_ms: wire_ttl(r.expiry.map(|e| e.deadline_ms.saturating_sub(clock_ms))),
                ttl_ms: wire_ttl(r.expiry.map(|e| e.ttl_ms)),
            },
        };
        let linearizable = !req.serializable;
        let local = match self.router.route(shard) {
            _ if !linearizable => Some(shard),
            Route::Local(shard) => Some(shard),
            Route::Remote { .. } => None,
        };
        if let Some(shard) = local {
            if linearizable {
                self.read_barrier(shard).await?;
            }
            let (record, clock_ms) = self
                .read_at_cluster_time(
                    shard,
                    linearizable,
                    || shard.sm.get(&key).map_err(internal),
                    |r: &Option<Record>| deadlines_of(&key, r.as_ref()),
                )
                .await?;
            // The remaining time is measured on the leader's clock (the applied one only
            // when it is later), never past the deadline.
            let clock_ms = if linearizable {
                shard.stamp_now().map_err(internal)?.max(clock_ms)
            } else {
                clock_ms
            };
            return Ok(Response::new(answer(record, clock_ms)));
        }
        let Route::Remote {
            leader_id, addr, ..
        } = self.router.route(shard)
        else {
            return Err(unavailable(shard, "leadership moved during the read").into());
        };
        if crate::service::kv::forwarded(&req.header) {
            return Err(KvError::NotLeader {
                shard: shard.id,
                leader_id,
                leader_addr: addr,
            }
            .into());
        }
        crate::service::kv::mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.forward(
            shard,
            &addr,
            leader_id,
            crate::service::kv::Effect::Read,
            |mut c| async move { c.ttl(onward).await },
        )
        .await
    }
}

/// The (key, deadline) of a record that has one.
pub(crate) fn deadlines_of(key: &Bytes, record: Option<&Record>) -> Vec<(Bytes, u64)> {
    record
        .and_then(|r| r.expiry)
        .map(|e| vec![(key.clone(), e.deadline_ms)])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_fields_are_checked() {
        assert!(matches!(ttl_change(0, false), Ok(None)));
        assert!(matches!(ttl_change(0, true), Ok(Some(TtlChange::Keep))));
        assert!(matches!(
            ttl_change(500, false),
            Ok(Some(TtlChange::Set(500)))
        ));
        assert!(matches!(ttl_change(500, true), Err(KvError::Invalid(_))));
        assert!(matches!(
            ttl_change(TTL_MS_MAX + 1, false),
            Err(KvError::Invalid(_))
        ));
        assert_eq!(wire_ttl(None), -1);
        assert_eq!(wire_ttl(Some(30_000)), 30_000);
    }
}
