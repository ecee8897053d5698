//! The `Kv` gRPC service: validate, pick the shard, serve locally when this replica leads it,
//! otherwise forward one hop to the leader.
//!
//! Writes go through `client_write` (majority fsync, then apply); linearizable reads pass a
//! ReadIndex barrier (`ensure_linearizable`) and then read the local state machine;
//! serializable reads read the local replica directly. A forwarded request carries
//! `forwarded = true` and is never forwarded again. Every wait is bounded by a deadline.
//!
//! Every request first waits (bounded) for an admission permit of its class
//! ([`crate::service::admission`]), its caller's `grpc-timeout` bounding the wait; a refusal is
//! a definite overload. A write whose caller's deadline passed meanwhile is neither proposed
//! nor forwarded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use prost::Message;
use ringkv_proto::meta;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::kv_server::Kv;
use ringkv_proto::pb::{
    BatchRequest, BatchResponse, CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest,
    DeleteResponse, GetRequest, GetResponse, KeyValue, PersistRequest, PersistResponse, PutRequest,
    PutResponse, RequestHeader, ScanRequest, ScanResponse, TouchRequest, TouchResponse, TtlRequest,
    TtlResponse, TxnRequest, TxnResponse, compare_and_swap_request,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{self, Action, Caller};
use crate::metrics::Metrics;
use crate::router::{Route, Router};
use crate::service::admission::{Admission, Class, Permit, deadline_of};
use crate::service::error::KvError;
use crate::service::limits::Limits;
use crate::service::ttl::{ttl_change, wire_ttl};
use crate::shard::Shard;
use crate::shard::command::{Command, CommandResponse, Expected, Op};
use crate::storage::space::DiskSpace;

/// Bytes of items one scan response carries at most; beyond it the scan is truncated.
const SCAN_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

pub struct KvService {
    pub cluster_id: String,
    pub router: Arc<Router>,
    pub limits: Limits,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    /// Permits for client requests, by class and time (see [`crate::service::admission`]).
    pub admission: Arc<Admission>,
    pub shutting_down: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Refuses writes while this node or a voter of the shard is out of disk space.
    pub space: DiskSpace,
    /// What each peer supports: new command kinds wait until every member does.
    pub features: Arc<crate::features::PeerFeatures>,
}

pub(crate) fn forwarded(header: &Option<RequestHeader>) -> bool {
    header.as_ref().is_some_and(|h| h.forwarded)
}

pub(crate) fn mark_forwarded(header: &mut Option<RequestHeader>) {
    header.get_or_insert_with(RequestHeader::default).forwarded = true;
}

/// Whether a failed forward may have executed (writes) or certainly did not matter (reads).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Effect {
    Read,
    Write,
}

impl KvService {
    /// Checks the request, then waits (bounded) for a permit of `class`. A refusal is a
    /// definite overload: nothing was done.
    pub(crate) async fn admit(
        &self,
        header: &Option<RequestHeader>,
        encoded_len: usize,
        class: Class,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Permit, KvError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(KvError::ShuttingDown);
        }
        if let Some(h) = header
            && !h.cluster_id.is_empty()
            && h.cluster_id != self.cluster_id
        {
            return Err(KvError::Invalid(format!(
                "wrong cluster id {:?}: this node belongs to cluster {:?}",
                h.cluster_id, self.cluster_id
            )));
        }
        self.limits.check_request(encoded_len)?;
        Ok(self.admission.acquire(class, deadline).await?)
    }

    /// Refuses a write whose caller's deadline has passed: it is not proposed (or forwarded),
    /// so the refusal is definite.
    fn check_deadline(&self, deadline: Option<tokio::time::Instant>) -> Result<(), KvError> {
        match deadline {
            Some(d) if tokio::time::Instant::now() >= d => {
                Err(self.admission.refuse_late(Class::Write).into())
            }
            _ => Ok(()),
        }
    }

    /// Proposes `op` on its shard. `Err(NotLeader)` means it certainly was not applied.
    async fn propose(
        &self,
        shard: &Shard,
        header: &Option<RequestHeader>,
        op: Op,
    ) -> Result<CommandResponse, KvError> {
        let h = header.clone().unwrap_or_default();
        let cmd = Command {
            client_id: h.client_id,
            sequence: h.sequence,
            acked_below: h.acked_below,
            stamped_ms: shard
                .stamp_ms()
                .map_err(|e| KvError::Internal(e.to_string()))?,
            op,
        };
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.write_timeout, shard.raft.client_write(cmd)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(KvError::OutcomeUnknown(format!(
                        "no commit within write_timeout_ms={}",
                        self.write_timeout.as_millis()
                    )));
                }
            };
        match result {
            Ok(resp) => {
                self.metrics.observe_proposal(started);
                Ok(resp.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.router.self_id => {
                        Err(KvError::NotLeader {
                            shard: shard.id,
                            leader_id: id,
                            leader_addr: node.addr,
                        })
                    }
                    _ => Err(KvError::NoLeader {
                        shard: shard.id,
                        reason: "election in progress".into(),
                    }),
                }
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(
                KvError::OutcomeUnknown("leadership changed before the write committed".into()),
            ),
            // Anything else after the proposal left: the entry may already be in logs that
            // go on to commit it (a storage failure here stops only this node), so neither
            // "failed" nor a blind retry is true.
            Err(RaftError::APIError(e)) => {
                Err(KvError::OutcomeUnknown(format!("shard {}: {e}", shard.id)))
            }
            Err(RaftError::Fatal(e)) => Err(KvError::OutcomeUnknown(format!(
                "shard {} stopped on this node after the write was proposed: {e}",
                shard.id
            ))),
        }
    }

    /// Waits until a linearizable read of `shard` may be served from the local replica.
    pub(crate) async fn read_barrier(&self, shard: &Shard) -> Result<(), KvError> {
        let started = Instant::now();
        let barrier = shard.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        let result = match tokio::time::timeout(self.read_timeout, barrier).await {
            Ok(r) => r,
            Err(_) => {
                return Err(KvError::NoLeader {
                    shard: shard.id,
                    reason: format!(
                        "read barrier not confirmed within read_timeout_ms={}",
                        self.read_timeout.as_millis()
                    ),
                });
            }
        };
        match result {
            Ok(_) => {
                self.metrics.observe_read_barrier(started);
                Ok(())
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.router.self_id => {
                        Err(KvError::NotLeader {
                            shard: shard.id,
                            leader_id: id,
                            leader_addr: node.addr,
                        })
                    }
                    _ => Err(KvError::NoLeader {
                        shard: shard.id,
                        reason: "election in progress".into(),
                    }),
                }
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(KvError::NoLeader {
                    shard: shard.id,
                    reason: e.to_string(),
                })
            }
            Err(RaftError::Fatal(e)) => Err(KvError::Internal(format!(
                "shard {} stopped: {e}",
                shard.id
            ))),
        }
    }

    /// Forwards a request for `shard` to its leader `leader_id` at `addr`; the leader's own
    /// errors pass through. Abandoned as soon as this node learns of another leader for the
    /// shard (itself included): the one forwarded to was deposed, frozen or cut off, and
    /// waiting on it for the forward's whole timeout would hold the client's request at a
    /// node that now knows better. A write abandoned so may still apply, so it is answered
    /// outcome-unknown (the client retries it under the same sequence); a read is answered
    /// "no leader" (definite: a read changes nothing).
    pub(crate) async fn forward<T, F, Fut>(
        &self,
        shard: &Shard,
        addr: &str,
        leader_id: u64,
        effect: Effect,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let client = self.router.kv_client(addr)?;
        let label = match effect {
            Effect::Read => "read",
            Effect::Write => "write",
        };
        self.metrics.forwarded.with_label_values(&[label]).inc();
        let timeout = self.write_timeout.max(self.read_timeout) + Duration::from_millis(500);
        let result = tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, call(client)) => match r {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("forwarded request timed out")),
            },
            now = leader_moved(shard, leader_id) => {
                let moved = match now {
                    Some(id) if id == self.router.self_id => "to this node".to_string(),
                    Some(id) => format!("to node {id}"),
                    None => "elsewhere".to_string(),
                };
                return Err(match effect {
                    Effect::Write => KvError::OutcomeUnknown(format!(
                        "shard {}: leadership moved {moved} while the write was forwarded to node \
                         {leader_id}; it may still apply there",
                        shard.id
                    )),
                    Effect::Read => KvError::NoLeader {
                        shard: shard.id,
                        reason: format!(
                            "leadership moved {moved} while the read was forwarded to node {leader_id}"
                        ),
                    },
                }
                .into());
            }
        };
        match result {
            Ok(mut resp) => {
                let md = resp.metadata_mut();
                md.insert(meta::LEADER_ID, leader_id.into());
                if let Ok(v) = addr.parse() {
                    md.insert(meta::LEADER_ADDR, v);
                }
                Ok(resp)
            }
            // The leader answered with a RingKV error: pass it on as it is.
            Err(s) if s.metadata().contains_key(meta::ERROR_KIND) => Err(s),
            Err(s) => Err(match effect {
                Effect::Read => KvError::NoLeader {
                    shard: 0,
                    reason: format!("leader {addr} unreachable: {}", s.message()),
                },
                Effect::Write => KvError::OutcomeUnknown(format!(
                    "lost contact with leader {addr}: {}",
                    s.message()
                )),
            }
            .into()),
        }
    }

    /// Refuses a write to `shard` while this node or one of its voters is out of disk space:
    /// before anything is proposed, so nothing was written.
    fn admit_space(&self, shard: &Shard) -> Result<(), KvError> {
        // Read the voters in place: cloning the metrics on every write costs more than the
        // check itself.
        let watch = shard.raft.metrics();
        let m = watch.borrow_watched();
        self.space
            .check_write(m.membership_config.membership().voter_ids())
            .map_err(|e| {
                self.metrics.count_disk_full_refusal();
                KvError::DiskFull(e)
            })
    }

    /// Runs a write locally or at the leader.
    pub(crate) async fn write<T, F, Fut>(
        &self,
        header: &Option<RequestHeader>,
        deadline: Option<tokio::time::Instant>,
        op: Op,
        local: impl FnOnce(CommandResponse) -> Result<T, KvError>,
        remote: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        write_identity(header)?;
        let shard = self.router.shard_for_key(op.key());
        let err = match self.router.route(shard) {
            Route::Remote {
                leader_id, addr, ..
            } => KvError::NotLeader {
                shard: shard.id,
                leader_id,
                leader_addr: addr,
            },
            Route::Local(shard) => match self
                .admit_space(shard)
                .and_then(|()| self.check_deadline(deadline))
            {
                Err(e) => e,
                Ok(()) => match async {
                    self.ensure_features(shard, op.features()).await?;
                    self.propose(shard, header, op).await
                }
                .await
                {
                    Ok(CommandResponse::Expired) => {
                        return Err(KvError::Invalid(
                            "sequence already acknowledged to this client; stale duplicate ignored"
                                .into(),
                        )
                        .into());
                    }
                    Ok(resp) => return Ok(Response::new(local(resp)?)),
                    Err(e) => e,
                },
            },
        };
        match err {
            KvError::NotLeader {
                leader_id,
                leader_addr,
                ..
            } if !forwarded(header) => {
                self.check_deadline(deadline)?;
                self.forward(shard, &leader_addr, leader_id, Effect::Write, remote)
                    .await
            }
            e => Err(e.into()),
        }
    }
}

/// How often a forwarded request looks at its shard's leader (see [`KvService::forward`]).
const LEADER_LOOK_EVERY: Duration = Duration::from_millis(50);

/// Resolves once this node sees a leader of `shard` other than `leader_id` (`Some` of it; the
/// shard stopping on this node resolves with `None`), looking every [`LEADER_LOOK_EVERY`]: a
/// timer, not a wake-up on every metrics change (which come with every apply). While no
/// leader is known (an election) it keeps waiting: there is nowhere better to go yet.
async fn leader_moved(shard: &Shard, leader_id: u64) -> Option<u64> {
    loop {
        {
            let metrics = shard.raft.metrics();
            let m = metrics.borrow_watched();
            if m.running_state.is_err() {
                return None;
            }
            if let Some(now) = m.current_leader
                && now != leader_id
            {
                return Some(now);
            }
        }
        tokio::time::sleep(LEADER_LOOK_EVERY).await;
    }
}

/// Every write carries its at-most-once identity, so a retry can never apply twice: a write
/// without one is refused before anything is proposed.
fn write_identity(header: &Option<RequestHeader>) -> Result<(), KvError> {
    match header {
        Some(h) if h.client_id != 0 && h.sequence != 0 => Ok(()),
        _ => Err(KvError::Invalid(
            "a write needs header.client_id and header.sequence (both non-zero): they make \
             retries apply at most once"
                .into(),
        )),
    }
}

/// A copy of `b` that owns exactly its bytes. A request's `bytes` fields are slices of the
/// buffer the whole message was decoded into (several KiB); a command keeping such a slice pins
/// that buffer for as long as its log entry stays in memory (thousands of entries per shard),
/// which multiplied resident memory several times over under write load.
fn detached(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// A TTL-aware write's answer as the plain one and the key's TTL after it.
fn split_ttl(r: CommandResponse) -> (CommandResponse, Option<u64>) {
    match r {
        CommandResponse::WithTtl { response, ttl_ms } => (*response, ttl_ms),
        other => (other, None),
    }
}

pub(crate) fn unexpected(r: CommandResponse) -> KvError {
    KvError::Internal(format!("state machine answered {r:?}"))
}

/// The handlers; [`Kv`] wraps each with request metrics.
impl KvService {
    #[tracing::instrument(skip_all, fields(op = "get"))]
    async fn get_inner(
        &self,
        caller: Caller,
        request: Request<GetRequest>,
    ) -> Result<Response<GetResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let class = if req.serializable {
            Class::SerializableRead
        } else {
            Class::LinearizableRead
        };
        let _permit = self
            .admit(&req.header, req.encoded_len(), class, deadline)
            .await?;
        self.limits.check_key(&req.key)?;
        let shard = self.router.shard_for_key(&req.key);
        let key = Bytes::copy_from_slice(&req.key);
        let read = async |shard: &Shard, linearizable: bool| -> Result<GetResponse, KvError> {
            let (record, clock_ms) = self
                .read_at_cluster_time(
                    shard,
                    linearizable,
                    || {
                        shard
                            .sm
                            .get(&key)
                            .map_err(|e| KvError::Internal(e.to_string()))
                    },
                    |r| crate::service::ttl::deadlines_of(&key, r.as_ref()),
                )
                .await?;
            Ok(match record.filter(|r| r.live_at(clock_ms)) {
                Some(r) => GetResponse {
                    found: true,
                    value: r.versioned.value,
                    version: r.versioned.version,
                },
                None => GetResponse {
                    found: false,
                    value: Bytes::new(),
                    version: 0,
                },
            })
        };
        if req.serializable {
            return Ok(Response::new(read(shard, false).await?));
        }
        let err = match self.router.route(shard) {
            Route::Remote {
                leader_id, addr, ..
            } => KvError::NotLeader {
                shard: shard.id,
                leader_id,
                leader_addr: addr,
            },
            Route::Local(shard) => match self.read_barrier(shard).await {
                Ok(()) => return Ok(Response::new(read(shard, true).await?)),
                Err(e) => e,
            },
        };
        match err {
            KvError::NotLeader {
                leader_id,
                leader_addr,
                ..
            } if !forwarded(&req.header) => {
                mark_forwarded(&mut req.header);
                let onward = caller.onward(req);
                self.forward(
                    shard,
                    &leader_addr,
                    leader_id,
                    Effect::Read,
                    |mut c| async move { c.get(onward).await },
                )
                .await
            }
            e => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(op = "put"))]
    async fn put_inner(
        &self,
        caller: Caller,
        request: Request<PutRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let _permit = self
            .admit(&req.header, req.encoded_len(), Class::Write, deadline)
            .await?;
        self.limits.check_key(&req.key)?;
        self.limits.check_value(&req.value)?;
        let (key, value) = (detached(&req.key), detached(&req.value));
        let op = match ttl_change(req.ttl_ms, req.keep_ttl)? {
            None => Op::Put { key, value },
            Some(ttl) => Op::PutTtl { key, value, ttl },
        };
        let header = req.header.clone();
        mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            op,
            |r| {
                let (r, ttl_ms) = split_ttl(r);
                match r {
                    CommandResponse::Put { version } => Ok(PutResponse {
                        version,
                        ttl_ms: wire_ttl(ttl_ms),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |mut c| async move { c.put(onward).await },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(op = "delete"))]
    async fn delete_inner(
        &self,
        caller: Caller,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let _permit = self
            .admit(&req.header, req.encoded_len(), Class::Write, deadline)
            .await?;
        self.limits.check_key(&req.key)?;
        let op = Op::Delete {
            key: detached(&req.key),
        };
        let header = req.header.clone();
        mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            op,
            |r| match r {
                CommandResponse::Delete { existed } => Ok(DeleteResponse { existed }),
                other => Err(unexpected(other)),
            },
            |mut c| async move { c.delete(onward).await },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(op = "cas"))]
    async fn compare_and_swap_inner(
        &self,
        caller: Caller,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let _permit = self
            .admit(&req.header, req.encoded_len(), Class::Write, deadline)
            .await?;
        self.limits.check_key(&req.key)?;
        let expected = match &req.expected {
            Some(compare_and_swap_request::Expected::ExpectedValue(v)) => {
                self.limits.check_value(v)?;
                Expected::Value(detached(v))
            }
            Some(compare_and_swap_request::Expected::ExpectAbsent(_)) => Expected::Absent,
            Some(compare_and_swap_request::Expected::ExpectedVersion(v)) => Expected::Version(*v),
            None => {
                return Err(KvError::Invalid(
                    "compare-and-swap needs an expected value, version or absence".into(),
                )
                .into());
            }
        };
        if let Some(v) = &req.new_value {
            self.limits.check_value(v)?;
        }
        let (key, new_value) = (detached(&req.key), req.new_value.as_ref().map(detached));
        let op = match ttl_change(req.ttl_ms, req.keep_ttl)? {
            None => Op::Cas {
                key,
                expected,
                new_value,
            },
            Some(ttl) => Op::CasTtl {
                key,
                expected,
                new_value,
                ttl,
            },
        };
        let header = req.header.clone();
        mark_forwarded(&mut req.header);
        let onward = caller.onward(req);
        self.write(
            &header,
            deadline,
            op,
            |r| {
                let (r, ttl_ms) = split_ttl(r);
                match r {
                    CommandResponse::Cas {
                        succeeded,
                        current,
                        new_version,
                    } => Ok(CompareAndSwapResponse {
                        succeeded,
                        found: current.is_some(),
                        current_version: current.as_ref().map(|c| c.version).unwrap_or(0),
                        current_value: current.map(|c| c.value).unwrap_or_default(),
                        new_version,
                        ttl_ms: wire_ttl(ttl_ms),
                    }),
                    other => Err(unexpected(other)),
                }
            },
            |mut c| async move { c.compare_and_swap(onward).await },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(op = "scan"))]
    async fn scan_inner(
        &self,
        caller: Caller,
        request: Request<ScanRequest>,
    ) -> Result<Response<ScanResponse>, Status> {
        let deadline = deadline_of(request.metadata(), tokio::time::Instant::now());
        let mut req = request.into_inner();
        let _permit = self
            .admit(&req.header, req.encoded_len(), Class::Bulk, deadline)
            .await?;
        // Every part of the scan (local or forwarded, any shard) reads the clipped prefix, so
        // no key outside the caller's prefix can come back.
        let clipped = caller.scan_prefix(&req.prefix)?;
        if clipped.len() != req.prefix.len() {
            req.prefix = Bytes::copy_from_slice(clipped);
        }
        if req.prefix.len() > self.limits.key_bytes_max {
            return Err(KvError::Invalid(format!(
                "prefix is {} bytes, over the limit key_bytes_max={}",
                req.prefix.len(),
                self.limits.key_bytes_max
            ))
            .into());
        }
        let limit = match req.limit as usize {
            0 => self.limits.scan_limit_max,
            n => n.min(self.limits.scan_limit_max),
        };
        let shard_ids: Vec<u32> = match req.shard {
            Some(id) => vec![self.router.shard(id)?.id],
            None => (0..self.router.shards.len() as u32).collect(),
        };
        let mut items: Vec<KeyValue> = Vec::new();
        for id in shard_ids {
            items.extend(self.scan_shard(&caller, &req, id, limit).await?);
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        let mut truncated = items.len() > limit;
        items.truncate(limit);
        let mut bytes = 0usize;
        let mut keep = items.len();
        for (i, it) in items.iter().enumerate() {
            bytes += it.key.len() + it.value.len();
            if bytes > SCAN_RESPONSE_BYTES_MAX {
                keep = i;
                truncated = true;
                break;
            }
        }
        items.truncate(keep);
        Ok(Response::new(ScanResponse { items, truncated }))
    }
}

impl KvService {
    /// One shard's part of a scan, served locally or by its leader.
    async fn scan_shard(
        &self,
        caller: &Caller,
        req: &ScanRequest,
        id: u32,
        limit: usize,
    ) -> Result<Vec<KeyValue>, Status> {
        let shard = self.router.shard(id)?;
        let local = async |shard: &Shard, linearizable: bool| -> Result<Vec<KeyValue>, KvError> {
            let (rows, clock_ms) = self
                .read_at_cluster_time(
                    shard,
                    linearizable,
                    || {
                        shard
                            .sm
                            .scan(&req.prefix, limit + 1)
                            .map_err(|e| KvError::Internal(e.to_string()))
                    },
                    |rows| {
                        rows.iter()
                            .filter_map(|(k, r)| {
                                r.expiry.map(|e| (Bytes::copy_from_slice(k), e.deadline_ms))
                            })
                            .collect()
                    },
                )
                .await?;
            // Expired records are skipped; the limit counts them, so a scan over many keys
            // due for expiry may come back truncated early (the caller continues after it).
            Ok(rows
                .into_iter()
                .filter(|(_, r)| r.live_at(clock_ms))
                .map(|(k, r)| KeyValue {
                    key: k.into(),
                    value: r.versioned.value,
                    version: r.versioned.version,
                })
                .collect())
        };
        if req.serializable {
            return Ok(local(shard, false).await?);
        }
        let err = match self.router.route(shard) {
            Route::Remote {
                leader_id, addr, ..
            } => KvError::NotLeader {
                shard: id,
                leader_id,
                leader_addr: addr,
            },
            Route::Local(shard) => match self.read_barrier(shard).await {
                Ok(()) => return Ok(local(shard, true).await?),
                Err(e) => e,
            },
        };
        match err {
            KvError::NotLeader {
                leader_id,
                leader_addr,
                ..
            } if !forwarded(&req.header) => {
                let mut sub = req.clone();
                sub.shard = Some(id);
                sub.limit = (limit + 1).min(u32::MAX as usize) as u32;
                mark_forwarded(&mut sub.header);
                let onward = caller.onward(sub);
                let resp = self
                    .forward(
                        shard,
                        &leader_addr,
                        leader_id,
                        Effect::Read,
                        |mut c| async move { c.scan(onward).await },
                    )
                    .await?;
                Ok(resp.into_inner().items)
            }
            e => Err(e.into()),
        }
    }
}

impl KvService {
    /// One RPC as every `Kv` handler runs it: counted in flight and in the request metrics
    /// under `op`, authorized for `actions` (which borrow from the request), then `inner`.
    async fn serve<'s, Req, Resp, Fut>(
        &'s self,
        op: &'static str,
        request: Request<Req>,
        actions: impl for<'r> FnOnce(&'r Req) -> Vec<Action<'r>>,
        inner: impl FnOnce(&'s Self, Caller, Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let _inflight = Inflight::new(&self.metrics);
        let started = Instant::now();
        let r = match auth::authorize(&request, actions(request.get_ref())) {
            Ok(caller) => inner(self, caller, request).await,
            Err(e) => Err(e.into()),
        };
        self.metrics.observe_request(op, started, &r);
        r
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.serve(
            "get",
            request,
            |r: &GetRequest| vec![Action::Get { key: &r.key }],
            Self::get_inner,
        )
        .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.serve(
            "put",
            request,
            |r: &PutRequest| vec![Action::Put { key: &r.key }],
            Self::put_inner,
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.serve(
            "delete",
            request,
            |r: &DeleteRequest| vec![Action::Delete { key: &r.key }],
            Self::delete_inner,
        )
        .await
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.serve(
            "cas",
            request,
            |r: &CompareAndSwapRequest| vec![Action::Cas { key: &r.key }],
            Self::compare_and_swap_inner,
        )
        .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.serve(
            "scan",
            request,
            |r: &ScanRequest| vec![Action::Scan { prefix: &r.prefix }],
            Self::scan_inner,
        )
        .await
    }

    /// A touch rewrites the key's TTL: a write.
    async fn touch(
        &self,
        request: Request<TouchRequest>,
    ) -> Result<Response<TouchResponse>, Status> {
        self.serve(
            "touch",
            request,
            |r: &TouchRequest| vec![Action::Put { key: &r.key }],
            Self::touch_inner,
        )
        .await
    }

    async fn persist(
        &self,
        request: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        self.serve(
            "persist",
            request,
            |r: &PersistRequest| vec![Action::Put { key: &r.key }],
            Self::persist_inner,
        )
        .await
    }

    async fn ttl(&self, request: Request<TtlRequest>) -> Result<Response<TtlResponse>, Status> {
        self.serve(
            "ttl",
            request,
            |r: &TtlRequest| vec![Action::Get { key: &r.key }],
            Self::ttl_inner,
        )
        .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.serve(
            "txn",
            request,
            crate::service::txn::actions,
            Self::txn_inner,
        )
        .await
    }

    /// Each item is counted as its own request (see [`crate::service::batch`]); the batch is
    /// refused as a whole, before any item runs, when any item is not allowed.
    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        let caller = crate::service::batch::authorize_items(&request)?;
        self.batch_inner(caller, request).await
    }
}

/// Counts a request in `ringkv_inflight_requests` for as long as it lives (also when the
/// client goes away and the handler is dropped mid-way).
struct Inflight<'a>(&'a Metrics);

impl<'a> Inflight<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.inflight.inc();
        Inflight(m)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}
