//! Pipelined replication: openraft's `stream_append` carried on one bidirectional gRPC stream
//! (`Raft.AppendStream`) per (leader, follower, shard) replication session.
//!
//! The leader's request stream stays open while it leads: each new run of entries becomes one
//! message on it as soon as it is submitted, without waiting for the previous one's answer,
//! and the follower answers each message in order (openraft's `Raft::stream_append` keeps the
//! order). Compared with one unary `Append` per batch, a message costs one HTTP/2 DATA frame
//! instead of a whole request (headers, data, end of stream, trailers, a tower buffer hop),
//! and a follower's next batch no longer waits a round trip plus its previous fsync.
//!
//! Invariants:
//! - Replies are yielded in request order, one per request; a reply the follower could not
//!   produce (its Raft failed) ends the stream with a typed status (`errors::fatal_status`),
//!   which the leader maps to `Unreachable`.
//! - While any request is unanswered, each wait for the next reply is bounded by the RPC's
//!   deadline (half the election timeout, as for unary appends; see `node::append_timeout`,
//!   not openraft's `hard_ttl`, the heartbeat interval); a stream with nothing
//!   outstanding may idle (the follower side is bounded by HTTP/2 keepalive).
//! - Every message of a stream carries the full envelope and is checked like a unary call; a
//!   message for another shard, cluster or node ends the stream with an error.
//! - A single-message stream (openraft's heartbeat) goes as a unary `Append`, and a peer that
//!   does not know `AppendStream` (older version) is sent unary appends from then on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::error::RPCError;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use ringkv_proto::pb::{RaftReply, RaftRequest};
use tokio::sync::Notify;
use tonic::{Status, Streaming};

use crate::codec::{decode, encode};
use crate::network::Reply;
use crate::network::errors::{TransportError, fatal_status, map_status, network, unreachable};
use crate::shard::Shard;
use crate::typ::TypeConfig;

/// What the follower sends back: one reply per request, or the error that ended the stream.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

/// The leader's view of the replies.
pub type ResultStream<'s> = Pin<
    Box<
        dyn Stream<Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> + Send + 's,
    >,
>;

/// The leader's messages, as a named type: handing tonic a boxed `dyn Stream` makes the call's
/// future fail rustc's `Send` proof (a higher-ranked lifetime error).
pub struct OutboundStream(Pin<Box<dyn Stream<Item = RaftRequest> + Send>>);

impl Stream for OutboundStream {
    type Item = RaftRequest;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RaftRequest>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// Checks one message's envelope; `Ok` when it is for `shard_id` on this node and cluster.
pub type EnvelopeCheck = Arc<dyn Fn(&RaftRequest) -> Result<(), Status> + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Follower side.

/// Serves one `AppendStream` call: the first message names the shard; every message is checked
/// with `check` and decoded; the replies come from the shard's Raft in order. Returns at once
/// (the response headers do not wait for the first message).
pub fn serve(
    mut inbound: Streaming<RaftRequest>,
    open: impl FnOnce(&RaftRequest) -> Result<(Shard, EnvelopeCheck), Status> + Send + 'static,
) -> ReplyStream {
    let start = async move {
        let first = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return error_stream(Status::invalid_argument("empty append stream")),
            Err(s) => return error_stream(s),
        };
        let (shard, check) = match open(&first) {
            Ok(x) => x,
            Err(s) => return error_stream(s),
        };
        // The first error on the input (bad message, broken stream) ends the input and is sent
        // after the replies to the requests before it.
        let failure: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let input_failure = failure.clone();
        let input = futures::stream::iter([Ok(first)])
            .chain(inbound)
            .map(move |m| {
                let m = m?;
                check(&m)?;
                decode::<AppendEntriesRequest<TypeConfig>>(&m.payload)
                    .map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
            })
            .take_while(move |r| {
                let keep = match r {
                    Ok(_) => true,
                    Err(s) => {
                        if let Ok(mut f) = input_failure.lock() {
                            f.get_or_insert_with(|| s.clone());
                        }
                        false
                    }
                };
                futures::future::ready(keep)
            })
            .filter_map(|r| futures::future::ready(r.ok()));
        let contact = shard.clone();
        let replies = shard.raft.stream_append(input).map(move |r| {
            // A failed Raft ends the stream with a status that says so (see `errors.rs`).
            let result = r.map_err(|fatal| fatal_status(&fatal))?;
            if result.is_ok() {
                contact.leader_contact.touch();
            }
            encode(&Reply::Ok(result))
                .map(|payload| RaftReply {
                    payload: payload.into(),
                    features: crate::features::own(),
                })
                .map_err(|e| Status::internal(e.to_string()))
        });
        let tail =
            futures::stream::once(async move { failure.lock().ok().and_then(|mut f| f.take()) })
                .filter_map(|f| futures::future::ready(f.map(Err)));
        Box::pin(replies.chain(tail)) as ReplyStream
    };
    Box::pin(futures::stream::once(start).flatten())
}

fn error_stream(s: Status) -> ReplyStream {
    Box::pin(futures::stream::iter([Err(s)]))
}

// ---------------------------------------------------------------------------------------------
// Leader side.

/// Counts the requests handed to the transport, so the reply side knows when one is owed.
#[derive(Default)]
pub struct Tracker {
    sent: AtomicU64,
    sent_notify: Notify,
    encode_failed: AtomicBool,
}

/// The messages to send for `input`, each wrapped by `envelope`, and their tracker.
pub fn outbound<S>(
    input: S,
    envelope: impl Fn(bytes::Bytes) -> RaftRequest + Send + 'static,
) -> (OutboundStream, Arc<Tracker>)
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let tracker = Arc::new(Tracker::default());
    let (t1, t2) = (tracker.clone(), tracker.clone());
    let messages = input
        .map(move |req| encode(&req).map(|p| envelope(p.into())))
        .take_while(move |r| {
            if r.is_err() {
                t1.encode_failed.store(true, Ordering::Release);
            }
            futures::future::ready(r.is_ok())
        })
        .filter_map(move |r| {
            let m = r.ok();
            if m.is_some() {
                t2.sent.fetch_add(1, Ordering::AcqRel);
                t2.sent_notify.notify_one();
            }
            futures::future::ready(m)
        });
    (OutboundStream(Box::pin(messages)), tracker)
}

/// The follower's replies on `inbound` as openraft wants them; `reply_ttl` bounds each wait
/// while a request is unanswered.
pub fn replies(
    inbound: Streaming<RaftReply>,
    tracker: Arc<Tracker>,
    reply_ttl: Duration,
) -> ResultStream<'static> {
    let state = Receiver {
        inbound,
        tracker,
        received: 0,
        reply_ttl,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, Receiver::next))
}

struct Receiver {
    inbound: Streaming<RaftReply>,
    tracker: Arc<Tracker>,
    received: u64,
    reply_ttl: Duration,
    done: bool,
}

type Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

impl Receiver {
    async fn next(mut self) -> Option<(Item, Receiver)> {
        if self.done {
            return None;
        }
        loop {
            let outstanding = self.tracker.sent.load(Ordering::Acquire) > self.received;
            let message = if outstanding {
                match tokio::time::timeout(self.reply_ttl, self.inbound.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let ttl_ms = self.reply_ttl.as_millis();
                        return self.fail(network(TransportError::ReplyTimeout { ttl_ms }));
                    }
                }
            } else {
                tokio::select! {
                    m = self.inbound.message() => m,
                    _ = self.tracker.sent_notify.notified() => continue,
                }
            };
            return match message {
                Ok(Some(reply)) => {
                    self.received += 1;
                    match decode::<Reply<StreamAppendResult<TypeConfig>>>(&reply.payload) {
                        Ok(Reply::Ok(r)) => Some((Ok(r), self)),
                        Ok(Reply::Err(e)) => self.fail(unreachable(TransportError::RemoteRaft(e))),
                        Err(e) => self.fail(network(e)),
                    }
                }
                Ok(None) if self.tracker.encode_failed.load(Ordering::Acquire) => {
                    self.fail(network(TransportError::Encode))
                }
                Ok(None) => None,
                Err(status) => self.fail(map_status(status)),
            };
        }
    }

    fn fail(mut self, e: RPCError<TypeConfig>) -> Option<(Item, Receiver)> {
        self.done = true;
        Some((Err(e), self))
    }
}
