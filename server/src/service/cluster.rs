//! The `Cluster` gRPC service: this node's view of every shard (role, term, leader, log
//! positions) and of the cluster's nodes. Read-only and served from local metrics, so it
//! answers even when the node has no quorum.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::ServerState;
use ringkv_proto::pb::cluster_server::Cluster;
use ringkv_proto::pb::{NodeInfo, ShardStatus, StatusRequest, StatusResponse};
use tonic::{Request, Response, Status};

use crate::router::Router;

pub struct ClusterService {
    pub cluster_id: String,
    pub router: Arc<Router>,
    /// Node id → client address, as given at start (`--peers`).
    pub peers: BTreeMap<u64, String>,
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
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.snapshot()))
    }
}

impl ClusterService {
    /// This node's view right now (also served by the admin `/status`).
    pub fn snapshot(&self) -> StatusResponse {
        let mut nodes = self.peers.clone();
        let mut shards = Vec::with_capacity(self.router.shards.len());
        for shard in self.router.shards.iter() {
            let m = shard.metrics();
            for (id, node) in m.membership_config.membership().nodes() {
                nodes.entry(*id).or_insert_with(|| node.addr.clone());
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
            });
        }
        StatusResponse {
            cluster_id: self.cluster_id.clone(),
            node_id: self.router.self_id,
            shard_count: self.router.ring.shard_count(),
            ring_vnodes: self.router.ring.vnodes(),
            nodes: nodes
                .into_iter()
                .map(|(id, addr)| NodeInfo { id, addr })
                .collect(),
            shards,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
