//! Re-admission of a member whose data directory is not the one the membership records: a
//! node that lost its disk (or had it replaced) and came back under its old id, or a member
//! recorded before incarnations existed.
//!
//! Such a node does not vote (`network::server::VoterCheck`) because its old incarnation's
//! votes and entries are gone. It still receives entries like any follower (its acks are
//! honest: it acknowledges only what it stored). This task, on the leader of each shard,
//! polls every member's `Status` for its incarnation; once a member whose incarnation differs
//! from the recorded one has caught up to the leader's last log index as of when the
//! difference was first seen (so it holds every entry its old incarnation could have helped
//! commit), the leader records the new incarnation with a single-entry membership change
//! (`SetNodes`: no voter moves, so no joint configuration). From then on the node votes again.
//!
//! The same poll carries each member's disk-space state to [`DiskSpace`], so the leader
//! refuses writes to a shard while one of its voters is out of space.
//!
//! Does not: add or remove members (`membership`), or decide anything from a node's own
//! claim without the catch-up check; a member that does not answer is left as it is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use ringkv_proto::pb::cluster_client::ClusterClient;
use ringkv_proto::pb::{StatusRequest, StatusResponse};
use tokio_util::sync::CancellationToken;

use crate::network::pool::{ChannelPool, Purpose};
use crate::shard::{Shard, Shards};
use crate::storage::space::DiskSpace;
use crate::typ::NodeId;

const POLL: Duration = Duration::from_secs(1);
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's `Status`, if it answers within a bounded time as node `id` of `cluster_id`
/// with an incarnation.
pub async fn peer_status(
    pool: &ChannelPool,
    cluster_id: &str,
    id: NodeId,
    addr: &str,
) -> Option<StatusResponse> {
    let channel = pool.channel(addr, Purpose::Forward).ok()?;
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(STATUS_TIMEOUT);
    crate::auth::with_node_credentials(&mut request);
    let mut client = ClusterClient::new(channel);
    let call = client.status(request);
    let status = tokio::time::timeout(STATUS_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    (status.node_id == id && status.cluster_id == cluster_id && status.incarnation != 0)
        .then_some(status)
}

/// A member waiting to be re-recorded: (shard, node, its current incarnation) → the leader's
/// last log index when the difference was first seen.
type Waiting = HashMap<(u32, NodeId, u64), u64>;

/// Runs until `cancel` fires.
pub async fn run(
    self_id: NodeId,
    cluster_id: String,
    incarnation: u64,
    shards: Shards,
    pool: Arc<ChannelPool>,
    space: DiskSpace,
    cancel: CancellationToken,
) {
    let mut waiting = Waiting::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let led: Vec<&Shard> = shards
            .iter()
            .filter(|s| s.metrics().state == ServerState::Leader)
            .collect();
        if led.is_empty() {
            waiting.clear();
            continue;
        }
        let mut addrs: BTreeMap<NodeId, String> = BTreeMap::new();
        for shard in &led {
            let m = shard.metrics();
            for (id, node) in m.membership_config.membership().nodes() {
                if *id != self_id {
                    addrs.insert(*id, node.addr.clone());
                }
            }
        }
        let answers = futures::future::join_all(addrs.iter().map(|(id, addr)| {
            let (pool, cluster_id) = (&pool, &cluster_id);
            async move {
                let status = peer_status(pool, cluster_id, *id, addr).await;
                (*id, status.map(|s| (s.incarnation, s.disk_full)))
            }
        }))
        .await;
        let mut observed: HashMap<NodeId, u64> = HashMap::new();
        for (id, answer) in answers {
            if let Some((incarnation, disk_full)) = answer {
                observed.insert(id, incarnation);
                space.note_peer(id, (!disk_full.is_empty()).then_some(disk_full));
            }
        }
        observed.insert(self_id, incarnation);
        for shard in led {
            if cancel.is_cancelled() {
                return;
            }
            readmit_caught_up(self_id, shard, &observed, &mut waiting).await;
        }
    }
}

/// One pass over one shard this node leads.
async fn readmit_caught_up(
    self_id: NodeId,
    shard: &Shard,
    observed: &HashMap<NodeId, u64>,
    waiting: &mut Waiting,
) {
    let m = shard.metrics();
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership().clone();
    for (id, node) in membership.nodes() {
        let Some(&now) = observed.get(id) else {
            continue;
        };
        if now == node.incarnation {
            waiting.retain(|(s, n, _), _| !(*s == shard.id && n == id));
            continue;
        }
        let since = *waiting.entry((shard.id, *id, now)).or_insert_with(|| {
            if node.incarnation != 0 {
                tracing::warn!(shard = shard.id, node = id, recorded = %format!("{:016x}", node.incarnation),
                    now = %format!("{now:016x}"), catch_up_to = last,
                    "member came back with a new data directory (lost disk?): it does not vote until it has caught up");
            }
            last
        });
        let matched = if *id == self_id {
            Some(last)
        } else {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|l| l.as_ref().map(|l| l.index()))
        };
        if matched.is_none_or(|i| i < since) {
            continue;
        }
        let change = ChangeMembers::SetNodes(BTreeMap::from([(*id, node.with_incarnation(now))]));
        match tokio::time::timeout(CHANGE_TIMEOUT, shard.raft.change_membership(change, true)).await
        {
            Ok(Ok(_)) => {
                waiting.remove(&(shard.id, *id, now));
                tracing::info!(shard = shard.id, node = id, incarnation = %format!("{now:016x}"),
                    "membership changed: member's data directory recorded; it votes again");
            }
            Ok(Err(e)) => {
                tracing::debug!(shard = shard.id, node = id, error = %e, "recording an incarnation failed; retrying")
            }
            Err(_) => {
                tracing::debug!(
                    shard = shard.id,
                    node = id,
                    "recording an incarnation timed out; retrying"
                )
            }
        }
    }
}
