//! The sending side of the Raft transport: openraft's `RaftNetworkV2` for one (target, shard).
//!
//! Errors map to openraft's by kind in `errors.rs` (it decides openraft's backoff): a peer that is
//! down, refuses the envelope, or whose Raft group has stopped is `Unreachable` (openraft backs
//! off); a call that timed out or broke mid-way is a `NetworkError` (openraft retries soon).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use ringkv_proto::pb::raft_client::RaftClient;
use ringkv_proto::pb::{RaftReply, RaftRequest, SnapshotChunk, SnapshotHead, snapshot_chunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::cluster_uuid::ClusterUuid;
use crate::codec::{decode, encode};
use crate::network::Reply;
use crate::network::append_stream;
use crate::network::errors::{TransportError, map_status, network, unreachable};
use crate::network::peer_health::PeerHealth;
use crate::network::pool::{ChannelPool, Purpose};
use crate::shard::snapshot::SnapshotFile;
use crate::typ::{Node, NodeId, Snapshot, TypeConfig, Vote};

/// Bytes per snapshot chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// A whole snapshot transfer must finish within this.
const SNAPSHOT_TRANSFER_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Chunks buffered between the file reader and the gRPC stream.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

/// What every Raft client of this node shares.
pub struct NetContext {
    pub cluster_id: String,
    /// Stamped on every envelope (empty while this node does not know it).
    pub cluster_uuid: Arc<ClusterUuid>,
    pub self_id: NodeId,
    pub pool: ChannelPool,
    pub message_bytes_max: usize,
    /// Which peers answer (paces calls to a peer that is down, and logs its outages).
    pub peers: PeerHealth,
    /// What each peer's replies say it supports (see [`crate::features`]).
    pub features: Arc<crate::features::PeerFeatures>,
    /// Deadline of an append, unary or on a stream (`node::append_timeout`: half the election
    /// timeout), used where it is longer than the one openraft passes (its heartbeat interval).
    pub append_timeout: Duration,
}

/// Builds clients for one shard.
#[derive(Clone)]
pub struct NetworkFactory {
    pub ctx: Arc<NetContext>,
    pub shard: u32,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient::new(self, target, node, Purpose::Raft)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient::new(self, target, node, Purpose::Snapshot)
    }
}

/// A client for one target node and one shard. Construction never touches the network.
pub struct PeerClient {
    ctx: Arc<NetContext>,
    shard: u32,
    target: NodeId,
    /// The target's peer address ([`Node::peer_addr`]): Raft is not served on client ports.
    addr: String,
    /// The target's incarnation as this shard's membership records it (sent with votes).
    target_incarnation: u64,
    purpose: Purpose,
    /// Set once the target answered `AppendStream` with `Unimplemented` (an older version):
    /// replication then uses unary appends.
    stream_unsupported: bool,
}

#[derive(Clone, Copy)]
enum Method {
    Vote,
    PreVote,
    Append,
    TransferLeader,
}

impl PeerClient {
    fn new(f: &NetworkFactory, target: NodeId, node: &Node, purpose: Purpose) -> Self {
        PeerClient {
            ctx: f.ctx.clone(),
            shard: f.shard,
            target,
            addr: node.peer_addr(),
            target_incarnation: node.incarnation,
            purpose,
            stream_unsupported: false,
        }
    }

    /// The deadline of an append: openraft's, or [`NetContext::append_timeout`] if longer. A
    /// heartbeat is still bounded by openraft's own timeout around it (the heartbeat
    /// interval; the next heartbeat carries the same facts); appends on a replication stream
    /// are not, so a busy follower's late reply no longer breaks the stream.
    fn append_ttl(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().max(self.ctx.append_timeout)
    }

    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        let channel = self
            .ctx
            .pool
            .channel(&self.addr, self.purpose)
            .map_err(unreachable)?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(self.ctx.message_bytes_max)
            .max_encoding_message_size(self.ctx.message_bytes_max))
    }

    /// One call, paced and recorded by the node's [`PeerHealth`].
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.ctx.peers.pace(self.target, timeout).await;
        let r = self.call_once(method, req, timeout).await;
        self.ctx.peers.record(self.target, &self.addr, &r);
        r
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let envelope = RaftRequest {
            cluster_id: self.ctx.cluster_id.clone(),
            shard_id: self.shard,
            from: self.ctx.self_id,
            to: self.target,
            payload: encode(req).map_err(network)?.into(),
            to_incarnation: self.target_incarnation,
            cluster_uuid: self.ctx.cluster_uuid.get().to_string(),
        };
        let mut request = tonic::Request::new(envelope);
        request.set_timeout(timeout);
        let mut client = self.client()?;
        let fut = async move {
            match method {
                Method::Vote => client.vote(request).await,
                Method::PreVote => client.pre_vote(request).await,
                Method::Append => client.append(request).await,
                Method::TransferLeader => client.transfer_leader(request).await,
            }
        };
        // The gRPC deadline normally fires first; this bounds the call even if it does not.
        let reply = match tokio::time::timeout(timeout + Duration::from_millis(50), fut).await {
            Ok(r) => r.map_err(map_status)?,
            Err(e) => return Err(network(e)),
        };
        let reply = reply.into_inner();
        self.ctx.features.record(self.target, reply.features);
        match decode::<Reply<Resp>>(&reply.payload).map_err(network)? {
            Reply::Ok(r) => Ok(r),
            Reply::Err(e) => Err(unreachable(TransportError::RemoteRaft(e))),
        }
    }

    /// Opens an append stream to the target; resolves once it answered the stream's head.
    async fn open_append_stream<S>(
        &mut self,
        input: S,
        ttl: Duration,
    ) -> Result<append_stream::ResultStream<'static>, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let client = self.client()?;
        let (ctx, cluster_id, shard_id, from, to, to_incarnation) = (
            self.ctx.clone(),
            self.ctx.cluster_id.clone(),
            self.shard,
            self.ctx.self_id,
            self.target,
            self.target_incarnation,
        );
        let envelope = move |payload: bytes::Bytes| RaftRequest {
            cluster_id: cluster_id.clone(),
            shard_id,
            from,
            to,
            payload,
            to_incarnation,
            cluster_uuid: ctx.cluster_uuid.get().to_string(),
        };
        let (outbound, tracker) = append_stream::outbound(input, envelope);
        let inbound = match tokio::time::timeout(ttl, open_stream(client, outbound)).await {
            Ok(Ok(r)) => r,
            Ok(Err(s)) => {
                if s.code() == Code::Unimplemented {
                    tracing::info!(
                        target_node = to,
                        "peer has no AppendStream; replicating with unary appends"
                    );
                    self.stream_unsupported = true;
                }
                return Err(map_status(s));
            }
            Err(e) => return Err(network(e)),
        };
        Ok(append_stream::replies(inbound, tracker, ttl))
    }
}

/// Opens an `AppendStream` call; resolves once the follower's response headers arrive.
async fn open_stream(
    mut client: RaftClient<Channel>,
    outbound: append_stream::OutboundStream,
) -> Result<Streaming<RaftReply>, tonic::Status> {
    client.append_stream(outbound).await.map(|r| r.into_inner())
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::Append, &rpc, self.append_ttl(&option))
            .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        // A heartbeat is a one-message stream: one unary call costs less than opening a stream.
        if input.size_hint().1 == Some(1) || self.stream_unsupported {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let ttl = self.append_ttl(&option);
            self.ctx.peers.pace(self.target, ttl).await;
            let opened = self.open_append_stream(input, ttl).await;
            self.ctx.peers.record(self.target, &self.addr, &opened);
            opened
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::PreVote, &rpc, option.hard_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::TransferLeader, &req, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&other)),
        };
        let net_err = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        let size_bytes = snapshot.snapshot.size_bytes().map_err(net_err)?;
        let head = SnapshotHead {
            cluster_id: self.ctx.cluster_id.clone(),
            shard_id: self.shard,
            from: self.ctx.self_id,
            to: self.target,
            vote: encode(&vote).map_err(net_err)?.into(),
            meta: encode(&snapshot.meta).map_err(net_err)?.into(),
            size_bytes,
            cluster_uuid: self.ctx.cluster_uuid.get().to_string(),
        };
        let std_file = snapshot.snapshot.file.try_clone().map_err(net_err)?;
        let mut file = tokio::fs::File::from_std(std_file);
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncSeekExt;
            let head = SnapshotChunk {
                part: Some(snapshot_chunk::Part::Head(head)),
            };
            if tx.send(head).await.is_err() {
                return;
            }
            if file.seek(std::io::SeekFrom::Start(0)).await.is_err() {
                return;
            }
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = match file.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.truncate(n);
                let chunk = SnapshotChunk {
                    part: Some(snapshot_chunk::Part::Data(buf.into())),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut client = self.client().map_err(to_streaming)?;
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let timeout = Duration::from_millis(SNAPSHOT_TRANSFER_TIMEOUT_MS);
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, send) => r,
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        reader.abort();
        let reply = match result {
            Ok(r) => r.map_err(|s| to_streaming(map_status(s)))?,
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        match decode::<Reply<SnapshotResponse<TypeConfig>>>(&reply.into_inner().payload)
            .map_err(net_err)?
        {
            Reply::Ok(r) => Ok(r),
            Reply::Err(e) => Err(StreamingError::Unreachable(Unreachable::new(
                &TransportError::RemoteRaft(e),
            ))),
        }
    }
}
