//! The receiving side of the Raft transport: the `Raft` gRPC service.
//!
//! Every call, and every message of an append stream, is checked before it reaches openraft:
//! with TLS, the caller's certificate must name a host on the peer list (`tls::peers`); the
//! cluster id must be ours, the receiver must be this node, and the shard must exist. A
//! local Raft that failed is answered with a typed status (`errors.rs`), never as text in the
//! reply body. A received snapshot is written to a temporary
//! file, fsynced and verified (checksum, framing, meta) before `install_full_snapshot` sees it,
//! because openraft treats a bad snapshot as fatal.

use std::sync::Arc;

use futures::StreamExt;
use openraft::raft::AppendEntriesResponse;
use ringkv_proto::pb::raft_server::Raft as RaftRpc;
use ringkv_proto::pb::{RaftReply, RaftRequest, SnapshotChunk, snapshot_chunk};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster_uuid::{ClusterUuid, UuidError};
use crate::codec::{decode, encode};
use crate::network::Reply;
use crate::network::append_stream::{self, EnvelopeCheck, ReplyStream};
use crate::network::errors::{SnapshotRefusal, fatal_status, raft_error_status};
use crate::shard::snapshot::{self, SnapshotFile};
use crate::shard::{Shard, Shards};
use crate::typ::{NodeId, Snapshot, SnapshotMeta, Vote};

/// The largest snapshot a node accepts.
const SNAPSHOT_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;

pub struct RaftService {
    pub cluster_id: String,
    /// Checked on (and, while unknown, adopted from) every envelope.
    pub cluster_uuid: Arc<ClusterUuid>,
    pub self_id: NodeId,
    /// Who may count on this node's vote (see [`VoterCheck`]).
    pub voter: VoterCheck,
    pub shards: Shards,
    /// Cancelled when the gRPC server shuts down: open append streams end then, so the
    /// graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// `ringkv_raft_appends_received_total`, by transport.
    pub appends: prometheus::IntCounterVec,
    /// With TLS: whose certificates may call Raft here (every RPC is checked first).
    pub peer_check: Option<Arc<crate::tls::peers::PeerCheck>>,
}

/// The answer to a Raft call: the local Raft's result in the body, or the status that says
/// why it failed (see `errors.rs`).
fn reply<T: Serialize>(r: Result<T, Status>) -> Result<Response<RaftReply>, Status> {
    let payload = encode(&Reply::Ok(r?)).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply {
        payload: payload.into(),
        features: crate::features::own(),
    }))
}

impl RaftService {
    /// The peer check (TLS only): the caller's certificate names a host on the peer list.
    /// The caller's certificate names, when peers are checked (TLS), after the peer check.
    fn authenticate<T>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
    ) -> Result<Option<Vec<String>>, Status> {
        match &self.peer_check {
            Some(p) => p.check(request, rpc).map(Some),
            None => Ok(None),
        }
    }

    /// Refuses a message whose sender id is not the caller's own (see `tls::peers`).
    fn bind(
        &self,
        names: Option<&[String]>,
        from: NodeId,
        rpc: &'static str,
    ) -> Result<(), Status> {
        bind_sender(self.peer_check.as_deref(), names, from, rpc)
    }

    fn check(
        &self,
        cluster_id: &str,
        cluster_uuid: &str,
        shard_id: u32,
        to: NodeId,
    ) -> Result<&Shard, Status> {
        check_envelope(&self.ours(), cluster_id, cluster_uuid, to)?;
        find_shard(&self.shards, shard_id)
    }

    fn ours(&self) -> Ours {
        Ours {
            cluster_id: self.cluster_id.clone(),
            cluster_uuid: self.cluster_uuid.clone(),
            self_id: self.self_id,
        }
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        req: &RaftRequest,
    ) -> Result<(&Shard, T), Status> {
        let shard = self.check(&req.cluster_id, &req.cluster_uuid, req.shard_id, req.to)?;
        let body = decode(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))?;
        Ok((shard, body))
    }

    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
        names: Option<&[String]>,
    ) -> Result<Response<RaftReply>, Status> {
        let head = match stream.message().await? {
            Some(SnapshotChunk {
                part: Some(snapshot_chunk::Part::Head(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "snapshot stream must start with its head",
                ));
            }
        };
        self.bind(names, head.from, "install_snapshot")?;
        let shard = self
            .check(&head.cluster_id, &head.cluster_uuid, head.shard_id, head.to)?
            .clone();
        if head.size_bytes > SNAPSHOT_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "snapshot of {} bytes is over the limit of {SNAPSHOT_BYTES_MAX}",
                head.size_bytes
            )));
        }
        let vote: Vote = decode(&head.vote).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let meta: SnapshotMeta =
            decode(&head.meta).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dir = shard
            .sm
            .snapshot_dir()
            .join(crate::shard::state_machine::INCOMING_DIR);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // The received file is fsynced before it is verified and installed; its directory's
        // entry must be durable too.
        crate::storage::dirs::sync_tree(&dir, 0).map_err(|e| Status::internal(e.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("from-{}-{nanos}.tmp", head.from));
        let result = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let mut written = 0u64;
            while let Some(chunk) = stream.message().await? {
                let Some(snapshot_chunk::Part::Data(data)) = chunk.part else {
                    return Err(SnapshotRefusal::SecondHead);
                };
                written += data.len() as u64;
                if written > head.size_bytes {
                    return Err(SnapshotRefusal::Longer {
                        announced_bytes: head.size_bytes,
                    });
                }
                file.write_all(&data).await?;
            }
            if written != head.size_bytes {
                return Err(SnapshotRefusal::Shorter {
                    written_bytes: written,
                    announced_bytes: head.size_bytes,
                });
            }
            file.sync_all().await?;
            drop(file);
            let p = path.clone();
            let file =
                tokio::task::spawn_blocking(move || -> Result<SnapshotFile, SnapshotRefusal> {
                    let mut f = SnapshotFile::open(p)?;
                    let file_meta =
                        snapshot::verify(&mut f.file).map_err(SnapshotRefusal::Invalid)?;
                    if file_meta != meta {
                        return Err(SnapshotRefusal::MetaDiffers);
                    }
                    Ok(f)
                })
                .await
                .map_err(|e| SnapshotRefusal::Io(std::io::Error::other(e)))??;
            Ok(file)
        }
        .await;
        let file = match result {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                tracing::warn!(shard = shard.id, from = head.from, error = %e, "snapshot refused");
                return Err(Status::invalid_argument(format!("snapshot refused: {e}")));
            }
        };
        tracing::info!(
            shard = shard.id,
            from = head.from,
            bytes = head.size_bytes,
            "snapshot received"
        );
        let snap = Snapshot {
            meta: file_meta_of(&file)?,
            snapshot: file,
        };
        let result = shard
            .raft
            .install_full_snapshot(vote, snap)
            .await
            .map_err(|f| fatal_status(&f));
        // An installed file was moved into the snapshot directory; one openraft declined (a
        // newer vote, an older snapshot) is still here and nothing will read it.
        if tokio::fs::try_exists(&path).await.unwrap_or(false)
            && let Err(e) = tokio::fs::remove_file(&path).await
        {
            tracing::warn!(shard = shard.id, file = %path.display(), error = %e, "cannot remove a declined snapshot");
        }
        reply(result)
    }
}

/// Whether this node may vote: only for a candidate whose membership records this node's
/// data-directory incarnation (or records none, where the directory predates incarnations).
/// A node that lost its disk and came back under its old id answers every vote with
/// `FAILED_PRECONDITION` until the leader re-records it after it caught up, so it never helps
/// elect a leader that lacks writes its old incarnation acknowledged, and never votes twice in
/// a term it forgot.
#[derive(Clone, Copy, Debug)]
pub struct VoterCheck {
    pub incarnation: u64,
    pub accepts_unrecorded: bool,
}

impl VoterCheck {
    pub fn check(&self, shard: u32, req: &RaftRequest) -> Result<(), Status> {
        let recorded = req.to_incarnation;
        if recorded == self.incarnation || (recorded == 0 && self.accepts_unrecorded) {
            return Ok(());
        }
        tracing::debug!(shard, candidate = req.from, recorded = %format!("{recorded:016x}"),
            "vote refused: this data directory is not the incarnation the membership records");
        Err(Status::failed_precondition(format!(
            "node {} does not vote in shard {shard}: the candidate's membership records its data \
             directory as incarnation {recorded:016x}, this one is {:016x} (a lost or replaced \
             disk); it votes again once the leader re-admits it after catching up",
            req.to, self.incarnation
        )))
    }
}

fn find_shard(shards: &Shards, shard_id: u32) -> Result<&Shard, Status> {
    shards
        .get(shard_id as usize)
        .ok_or_else(|| Status::invalid_argument(format!("unknown shard id {shard_id}")))
}

/// Who this node is, as envelopes are checked against it.
#[derive(Clone)]
struct Ours {
    cluster_id: String,
    cluster_uuid: Arc<ClusterUuid>,
    self_id: NodeId,
}

/// `Err` unless a message for node `to` of cluster `cluster_id` (UUID `cluster_uuid`) belongs
/// on this node (see [`crate::cluster_uuid`] for the UUID: adopted here while unknown).
/// [`RaftService::bind`] without the service (for the append stream's per-message check).
fn bind_sender(
    check: Option<&crate::tls::peers::PeerCheck>,
    names: Option<&[String]>,
    from: NodeId,
    rpc: &'static str,
) -> Result<(), Status> {
    match (check, names) {
        (Some(check), Some(names)) => check.check_sender(names, from, rpc),
        _ => Ok(()),
    }
}

fn check_envelope(
    ours: &Ours,
    cluster_id: &str,
    cluster_uuid: &str,
    to: NodeId,
) -> Result<(), Status> {
    if cluster_id != ours.cluster_id {
        return Err(Status::failed_precondition(format!(
            "wrong cluster id {cluster_id:?}: this node belongs to {:?}",
            ours.cluster_id
        )));
    }
    if to != ours.self_id {
        return Err(Status::failed_precondition(format!(
            "message for node {to} reached node {}",
            ours.self_id
        )));
    }
    match ours.cluster_uuid.check(cluster_uuid) {
        Ok(_) => Ok(()),
        Err(e @ (UuidError::Foreign { .. } | UuidError::Malformed(_))) => {
            Err(Status::failed_precondition(e.to_string()))
        }
        Err(e @ UuidError::Persist(_)) => Err(Status::unavailable(e.to_string())),
    }
}

fn file_meta_of(file: &SnapshotFile) -> Result<SnapshotMeta, Status> {
    let mut f = file
        .file
        .try_clone()
        .map_err(|e| Status::internal(e.to_string()))?;
    let reader = snapshot::Reader::open(&mut f).map_err(|e| Status::internal(e.to_string()))?;
    Ok(reader.meta)
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let names = self.authenticate(&request, "vote")?;
        self.bind(names.as_deref(), request.get_ref().from, "vote")?;
        let (shard, body) = self.open(request.get_ref())?;
        self.voter.check(shard.id, request.get_ref())?;
        reply(
            shard
                .raft
                .vote(body)
                .await
                .map_err(|e| raft_error_status(&e)),
        )
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let names = self.authenticate(&request, "pre_vote")?;
        self.bind(names.as_deref(), request.get_ref().from, "pre_vote")?;
        let (shard, body) = self.open(request.get_ref())?;
        self.voter.check(shard.id, request.get_ref())?;
        reply(
            shard
                .raft
                .pre_vote(body)
                .await
                .map_err(|e| raft_error_status(&e)),
        )
    }

    async fn append(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let names = self.authenticate(&request, "append")?;
        self.bind(names.as_deref(), request.get_ref().from, "append")?;
        let (shard, body) = self.open(request.get_ref())?;
        self.appends.with_label_values(&["unary"]).inc();
        let result = shard
            .raft
            .append_entries(body)
            .await
            .map_err(|e| raft_error_status(&e));
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
        ) {
            shard.leader_contact.touch();
        }
        reply(result)
    }

    type AppendStreamStream = ReplyStream;

    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let names = self.authenticate(&request, "append_stream")?;
        let (ours, shards) = (self.ours(), self.shards.clone());
        let peer_check = self.peer_check.clone();
        let received = self.appends.with_label_values(&["stream"]);
        let open = move |first: &RaftRequest| {
            check_envelope(&ours, &first.cluster_id, &first.cluster_uuid, first.to)?;
            bind_sender(
                peer_check.as_deref(),
                names.as_deref(),
                first.from,
                "append_stream",
            )?;
            let (shard_id, from) = (first.shard_id, first.from);
            let shard = find_shard(&shards, shard_id)?.clone();
            let check: EnvelopeCheck = Arc::new(move |m: &RaftRequest| {
                received.inc();
                check_envelope(&ours, &m.cluster_id, &m.cluster_uuid, m.to)?;
                if m.shard_id != shard_id {
                    return Err(Status::invalid_argument(format!(
                        "message for shard {} on the append stream of shard {shard_id}",
                        m.shard_id
                    )));
                }
                // One stream, one sender: the one bound when it opened.
                if m.from != from {
                    return Err(Status::invalid_argument(format!(
                        "message from node {} on the append stream of node {from}",
                        m.from
                    )));
                }
                Ok(())
            });
            Ok((shard, check))
        };
        let stream = append_stream::serve(request.into_inner(), open)
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let names = self.authenticate(&request, "transfer_leader")?;
        self.bind(names.as_deref(), request.get_ref().from, "transfer_leader")?;
        let (shard, body) = self.open(request.get_ref())?;
        reply(
            shard
                .raft
                .handle_transfer_leader(body)
                .await
                .map_err(|f| fatal_status(&f)),
        )
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let names = self.authenticate(&request, "install_snapshot")?;
        self.receive_snapshot(request.into_inner(), names.as_deref())
            .await
    }
}
