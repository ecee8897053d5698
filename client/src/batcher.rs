//! Request batching: requests waiting for the same node and shard travel in one `Batch` RPC.
//!
//! One task per (node, shard) takes the requests queued for it and sends them as one batch
//! (one shard only: the server answers a batch when its slowest item is done, so a shard held
//! up by a leader change must not hold back other shards' requests); up to [`IN_FLIGHT_MAX`]
//! batches per queue are in flight at once, and while they are, new requests
//! queue and leave together in the next batch. There is no timer: a request while none other
//! of this client is in flight through its queue goes out at once as a unary RPC, and under load
//! batches grow by themselves. Every caller gets its own
//! item's answer, shaped exactly as the unary RPC's (a `Response` with its metadata, or a
//! `Status` with its code, message and RingKV metadata), so routing, retries and outcome
//! classification above this layer do not change. A batch that fails as a whole (transport
//! error, timeout) fails each of its items with that same status: for a write, outcome
//! unknown, as for a unary RPC that failed the same way.
//!
//! Bounded everywhere: the queue ([`QUEUE_MAX`]), items and bytes per batch, batches in
//! flight, and each batch RPC's time (the client's attempt timeout). A server without the
//! `Batch` RPC answers UNIMPLEMENTED; the caller then falls back to unary RPCs for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{BatchItem, BatchRequest, BatchResult, batch_result};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Response, Status};

use crate::client::Svc;

/// Requests queued for one (node, shard) at most; beyond it callers wait for room.
pub const QUEUE_MAX: usize = 4096;
/// Items one batch carries at most (the server accepts up to 1,024).
pub const ITEMS_MAX: usize = 256;
/// Encoded bytes one batch carries at most (one item may exceed it alone).
pub const BYTES_MAX: usize = 1024 * 1024;
/// Batch RPCs in flight from one queue at most.
pub const IN_FLIGHT_MAX: usize = 2;

struct Pending {
    item: BatchItem,
    reply: oneshot::Sender<Result<BatchResult, Status>>,
}

/// The batching queue of one (node, shard). Dropping it ends its task once the batches in flight end.
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
    /// Set when the node answered UNIMPLEMENTED: it predates the `Batch` RPC.
    unsupported: AtomicBool,
    /// Requests of this client in flight through this queue, batched or not (see [`Busy`]).
    active: AtomicUsize,
}

/// One request in flight through a queue, counted in [`Batcher`]'s `active` while it lives.
pub struct Busy(Arc<Batcher>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Batcher {
    /// Starts the queue's batching task (needs a Tokio runtime).
    pub fn spawn(kv: KvClient<Svc>, rpc_timeout: Duration) -> Arc<Batcher> {
        let (queue, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(kv, rx, rpc_timeout));
        Arc::new(Batcher {
            queue,
            unsupported: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        })
    }

    /// Counts a request in flight until the returned guard drops; true when it is the only
    /// one. A lone request is better sent as a unary RPC right away: the batching task's hops
    /// would only add latency when there is nothing to batch it with.
    pub fn enter(self: &Arc<Self>) -> (Busy, bool) {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        (Busy(self.clone()), before == 0)
    }

    /// Whether the node is known to lack the `Batch` RPC.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends `item` in the queue's next batch and waits for its own answer.
    pub async fn call(&self, item: BatchItem) -> Result<BatchResult, Status> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { item, reply })
            .await
            .map_err(|_| Status::unavailable("the node's batching task stopped"))?;
        let result = answer
            .await
            .map_err(|_| Status::unavailable("the node's batching task dropped the request"))?;
        if let Err(s) = &result
            && s.code() == Code::Unimplemented
            && s.metadata().get(ringkv_proto::meta::ERROR_KIND).is_none()
        {
            self.unsupported.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Splits a batch result into the unary RPC's shape: `Ok` with the item's answer and
/// metadata, or `Err` with the status the unary RPC would have failed with.
pub fn unpack(r: BatchResult) -> Result<Response<batch_result::Result>, Status> {
    let md = metadata(r.metadata);
    match r.result {
        Some(batch_result::Result::Error(e)) => {
            Err(Status::with_metadata(Code::from_i32(e.code), e.message, md))
        }
        Some(other) => {
            let mut resp = Response::new(other);
            *resp.metadata_mut() = md;
            Ok(resp)
        }
        None => Err(Status::internal(
            "the server answered a batch item with nothing",
        )),
    }
}

fn metadata(entries: std::collections::HashMap<String, String>) -> MetadataMap {
    let mut md = MetadataMap::new();
    for (k, v) in entries {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(k, v);
        }
    }
    md
}

async fn run(kv: KvClient<Svc>, mut rx: mpsc::Receiver<Pending>, rpc_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        // Wait for a slot first: requests arriving meanwhile join this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.item.encoded_len();
        let mut batch = vec![first];
        while batch.len() < ITEMS_MAX && bytes < BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.item.encoded_len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let mut kv = kv.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (items, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.item, p.reply)).unzip();
            let n = items.len();
            // The server sees the batch's deadline too (each item inherits it).
            let mut request = tonic::Request::new(BatchRequest { items });
            request.set_timeout(rpc_timeout);
            let outcome = match tokio::time::timeout(rpc_timeout, kv.batch(request)).await {
                Ok(Ok(resp)) => {
                    let results = resp.into_inner().results;
                    if results.len() == n {
                        Ok(results)
                    } else {
                        Err(Status::internal(format!(
                            "the server answered {} results to a batch of {n}",
                            results.len()
                        )))
                    }
                }
                Ok(Err(s)) => Err(s),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer to a batch within {rpc_timeout:?}"
                ))),
            };
            match outcome {
                Ok(results) => {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(s) => {
                    for reply in replies {
                        let _ = reply.send(Err(s.clone()));
                    }
                }
            }
        });
    }
}
