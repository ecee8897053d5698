//! The `Cluster` gRPC service: this node's view of every shard (role, term, leader, log
//! positions) and of the cluster's nodes, served from local metrics so it answers even when
//! the node has no quorum; plus the operator's cluster changes, each for one shard and served
//! by that shard's leader: membership steps (see [`crate::membership`]) and backups (see
//! [`crate::backup`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::ServerState;
use ringkv_proto::pb::cluster_server::Cluster;
use ringkv_proto::pb::{
    BackupChunk, BackupRequest, MemberChangeRequest, MemberChangeResponse, NodeInfo, ShardStatus,
    StatusRequest, StatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{self, Action};
use crate::membership::{self, Step};
use crate::router::Router;
use crate::service::error::KvError;
use crate::shard::Shard;

pub struct ClusterService {
    pub cluster_id: String,
    pub router: Arc<Router>,
    /// Node id → member record (addresses), as given at start (`--peers`); used until the
    /// shards know their membership.
    pub peers: BTreeMap<u64, crate::typ::Node>,
    /// This node's data-directory incarnation (reported in `Status`).
    pub incarnation: u64,
    /// The cluster's UUID as this node knows it (reported in `Status`).
    pub cluster_uuid: Arc<crate::cluster_uuid::ClusterUuid>,
    /// Whether this node is out of disk space (reported in `Status`).
    pub space: crate::storage::space::DiskSpace,
}

pub fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        auth::authorize(&request, [Action::Status])?;
        Ok(Response::new(self.snapshot()))
    }

    async fn add_member(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        auth::authorize(&request, [Action::MemberAdd])?;
        let req = request.into_inner();
        let shard = self.shard(&req.cluster_id, req.shard)?;
        let step = membership::add(
            shard,
            self.router.self_id,
            req.node_id,
            &req.addr,
            &req.peer_addr,
        )
        .await?;
        Ok(Response::new(answer(step)))
    }

    async fn remove_member(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        auth::authorize(&request, [Action::MemberRemove])?;
        let req = request.into_inner();
        let shard = self.shard(&req.cluster_id, req.shard)?;
        let step = membership::remove(shard, self.router.self_id, req.node_id).await?;
        Ok(Response::new(answer(step)))
    }

    type BackupStream = ReceiverStream<Result<BackupChunk, Status>>;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        auth::authorize(&request, [Action::Backup])?;
        let req = request.into_inner();
        let shard = self.shard(&req.cluster_id, req.shard)?;
        let file = crate::backup::snapshot_for_backup(shard, self.router.self_id).await?;
        Ok(Response::new(ReceiverStream::new(crate::backup::stream(
            file,
        ))))
    }
}

fn answer(step: Step) -> MemberChangeResponse {
    match step {
        Step::Done(detail) => MemberChangeResponse { done: true, detail },
        Step::Pending(detail) => MemberChangeResponse {
            done: false,
            detail,
        },
    }
}

impl ClusterService {
    fn shard(&self, cluster_id: &str, shard: u32) -> Result<&Shard, KvError> {
        if !cluster_id.is_empty() && cluster_id != self.cluster_id {
            return Err(KvError::Invalid(format!(
                "wrong cluster id {cluster_id:?}: this node belongs to {:?}",
                self.cluster_id
            )));
        }
        self.router.shard(shard)
    }

    /// This node's view right now (also served by the admin `/status`).
    pub fn snapshot(&self) -> StatusResponse {
        // The nodes are the members of any shard; `--peers` only until a membership is known.
        let mut nodes = BTreeMap::new();
        let mut shards = Vec::with_capacity(self.router.shards.len());
        for shard in self.router.shards.iter() {
            let m = shard.metrics();
            for (id, node) in m.membership_config.membership().nodes() {
                nodes.entry(*id).or_insert_with(|| node.clone());
            }
            let min_matched = m.replication.as_ref().map(|r| {
                r.values()
                    .map(|l| l.as_ref().map(|l| l.index()).unwrap_or(0))
                    .min()
                    .unwrap_or(0)
            });
            shards.push(ShardStatus {
                shard: shard.id,
                leader: m.current_leader,
                term: m.current_term,
                role: role(m.state).to_string(),
                last_log_index: m.last_log_index.unwrap_or(0),
                committed_index: m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0),
                applied_index: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
                min_matched_index: min_matched,
                voters: m.membership_config.membership().voter_ids().collect(),
                voter_incarnations: m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .map(|id| {
                        m.membership_config
                            .membership()
                            .get_node(&id)
                            .map_or(0, |n| n.incarnation)
                    })
                    .collect(),
                learners: m.membership_config.membership().learner_ids().collect(),
            });
        }
        if nodes.is_empty() {
            nodes = self.peers.clone();
        }
        StatusResponse {
            cluster_id: self.cluster_id.clone(),
            node_id: self.router.self_id,
            shard_count: self.router.ring.shard_count(),
            ring_vnodes: self.router.ring.vnodes(),
            nodes: nodes
                .into_iter()
                .map(|(id, node)| NodeInfo {
                    id,
                    peer_addr: node.peer_addr(),
                    addr: node.addr,
                })
                .collect(),
            shards,
            version: env!("CARGO_PKG_VERSION").to_string(),
            incarnation: self.incarnation,
            disk_full: self.space.shortage().unwrap_or_default(),
            cluster_uuid: self.cluster_uuid.get().to_string(),
        }
    }
}
