//! Membership changes of one shard, run on that shard's leader: add a node (learner, catch up,
//! promote) and remove a node (move leadership off it, retire its id, drop it).
//!
//! Each call performs at most one step and says whether the change is complete; callers repeat
//! it until it is (`ringkv member add/remove` do, for every shard). Invariants:
//! - one change at a time per shard: every change is guarded by
//!   `Precondition::LastMembershipLogId`, so a concurrent change makes this one retry instead
//!   of producing an unintended joint configuration;
//! - a node leaves only after its id is retired in the shard's state machine, and a retired id
//!   is refused forever (a wiped or rebuilt node must come back under a fresh id);
//! - an id already in use at other addresses, or an address (client or peer) in use under
//!   another id, is refused; a node is promoted only once it is within [`CATCH_UP_LAG_ENTRIES`] of the leader;
//! - every wait is bounded by `STEP_TIMEOUT` (10 s).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{ChangeMembers, Precondition, ServerState};

use crate::config::member;
use crate::service::error::KvError;
use crate::shard::Shard;
use crate::shard::command::{Command, Op};
use crate::typ::{Node, NodeId, RaftMetrics, TypeConfig};

/// A learner is promoted once its log is at most this many entries behind the leader's.
pub const CATCH_UP_LAG_ENTRIES: u64 = 64;
/// Bound on each Raft call a step makes.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The change is complete on this shard.
    Done(String),
    /// Progress was made or is awaited; call again.
    Pending(String),
}

/// The local replica's metrics if it leads the shard, otherwise where the leader is.
pub(crate) fn lead(shard: &Shard, self_id: NodeId) -> Result<RaftMetrics, KvError> {
    let m = shard.metrics();
    if m.state == ServerState::Leader {
        return Ok(m);
    }
    match m.current_leader {
        Some(l) if l != self_id => match m.membership_config.membership().get_node(&l) {
            Some(node) => Err(KvError::NotLeader {
                shard: shard.id,
                leader_id: l,
                leader_addr: node.addr.clone(),
            }),
            None => Err(no_leader(shard, "leader address unknown")),
        },
        _ => Err(no_leader(shard, "no leader elected yet")),
    }
}

fn no_leader(shard: &Shard, reason: &str) -> KvError {
    KvError::NoLeader {
        shard: shard.id,
        reason: reason.to_string(),
    }
}

/// Waits until the local state machine reflects every committed entry (so the retired-id
/// records read next are current).
pub(crate) async fn barrier(shard: &Shard, self_id: NodeId) -> Result<(), KvError> {
    match tokio::time::timeout(
        STEP_TIMEOUT,
        shard.raft.ensure_linearizable(ReadPolicy::ReadIndex),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => {
            lead(shard, self_id).map(|_| ())
        }
        Ok(Err(e)) => Err(no_leader(shard, &e.to_string())),
        Err(_) => Err(no_leader(shard, "read barrier timed out")),
    }
}

fn is_retired(shard: &Shard, node_id: NodeId) -> Result<bool, KvError> {
    shard
        .sm
        .is_retired(node_id)
        .map_err(|e| KvError::Internal(format!("shard {}: {e}", shard.id)))
}

/// Maps a failed membership write to a step answer: routing and races are retriable.
fn write_failed(
    shard: &Shard,
    self_id: NodeId,
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> Result<Step, KvError> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            lead(shard, self_id).map(|_| Step::Pending("leadership moved".into()))
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Ok(Step::Pending(
            "leadership changed during the change; checking again".into(),
        )),
        RaftError::APIError(ClientWriteError::PreconditionFailed(_)) => Ok(Step::Pending(
            "another membership change landed first; checking again".into(),
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => Ok(Step::Pending(
            format!("membership change not possible yet: {c}"),
        )),
        RaftError::Fatal(f) => Err(KvError::Internal(format!(
            "shard {} stopped: {f}",
            shard.id
        ))),
    }
}

/// Bounds a Raft call; a timeout is reported as pending (the call may still complete).
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, Step> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| Step::Pending(format!("{what} still in progress")))
}

/// Why the member record `new` for `node_id` clashes with `membership`'s nodes: one of its
/// addresses (client or peer) is another member's, or `node_id` is a member at other ones.
fn clash<'a>(
    nodes: impl Iterator<Item = (&'a NodeId, &'a Node)>,
    node_id: NodeId,
    new: &Node,
) -> Option<String> {
    let (addr, peer_addr) = (&new.addr, new.peer_addr());
    for (id, n) in nodes {
        if *id == node_id {
            if n.addr != *addr || n.peer_addr() != peer_addr {
                return Some(format!(
                    "node id {node_id} is already a member at {n}; node ids are never reused"
                ));
            }
            continue;
        }
        for a in [addr, &peer_addr] {
            if *a == n.addr || *a == n.peer_addr() {
                return Some(format!(
                    "address {a} belongs to member node {id}; remove it first"
                ));
            }
        }
    }
    None
}

/// One step of adding `node_id` at client address `addr` and peer address `peer_addr` (empty:
/// the default, `addr`'s port + 1000) to the shard.
pub async fn add(
    shard: &Shard,
    self_id: NodeId,
    node_id: NodeId,
    addr: &str,
    peer_addr: &str,
) -> Result<Step, KvError> {
    if node_id == 0 {
        return Err(KvError::Invalid("node id 0 is reserved".into()));
    }
    let node = member(addr, peer_addr).map_err(|e| KvError::Invalid(e.to_string()))?;
    let m = lead(shard, self_id)?;
    let membership = m.membership_config.membership();
    if let Some(reason) = clash(membership.nodes(), node_id, &node) {
        return Err(KvError::Invalid(reason));
    }
    if membership.voter_ids().any(|v| v == node_id) {
        return Ok(Step::Done(format!("node {node_id} is a voter")));
    }
    barrier(shard, self_id).await?;
    if is_retired(shard, node_id)? {
        return Err(KvError::Invalid(format!(
            "node id {node_id} was removed from this cluster before; node ids are never reused, \
             start the new node with a fresh --id"
        )));
    }
    if !membership.learner_ids().any(|v| v == node_id) {
        // Its incarnation is recorded once it has caught up as a voter (`readmit`).
        let r = match bounded(
            "adding the learner",
            shard.raft.add_learner(node_id, node.clone(), false),
        )
        .await
        {
            Ok(r) => r,
            Err(step) => return Ok(step),
        };
        return match r {
            Ok(_) => {
                tracing::info!(shard = shard.id, node = node_id, %addr, peer_addr = %node.peer_addr(),
                    "membership changed: learner added");
                Ok(Step::Pending(format!("node {node_id} added as a learner")))
            }
            Err(e) => write_failed(shard, self_id, e),
        };
    }
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&node_id))
        .and_then(|l| l.as_ref().map(|l| l.index()));
    let last = m.last_log_index.unwrap_or(0);
    let behind = match matched {
        Some(i) => last.saturating_sub(i),
        None => last.max(1),
    };
    if behind > CATCH_UP_LAG_ENTRIES {
        return Ok(Step::Pending(format!(
            "catching up: has entry {} of {last}",
            matched.unwrap_or(0)
        )));
    }
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
    guarded_change(
        shard,
        self_id,
        &m,
        change,
        format!("node {node_id} promoted to voter"),
    )
    .await
}

/// Proposes `change` only if the membership is still the one in `m`; `done` on success.
async fn guarded_change(
    shard: &Shard,
    self_id: NodeId,
    m: &RaftMetrics,
    change: ChangeMembers<NodeId, Node>,
    done: String,
) -> Result<Step, KvError> {
    let pre = Precondition::LastMembershipLogId {
        last_membership_log_id: *m.membership_config.log_id(),
    };
    match bounded(
        "the membership change",
        shard.raft.change_membership_if(change, false, [pre]),
    )
    .await
    {
        Ok(Ok(_)) => {
            tracing::info!(shard = shard.id, "membership changed: {done}");
            Ok(Step::Done(done))
        }
        Ok(Err(e)) => write_failed(shard, self_id, e),
        Err(step) => Ok(step),
    }
}

/// One step of removing `node_id` from the shard.
pub async fn remove(shard: &Shard, self_id: NodeId, node_id: NodeId) -> Result<Step, KvError> {
    let m = lead(shard, self_id)?;
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let is_member = membership.get_node(&node_id).is_some();
    if node_id == self_id {
        // Leadership moves off the node first, so the shard keeps serving while it leaves.
        let target = m
            .replication
            .as_ref()
            .and_then(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self_id && voters.contains(id))
                    .max_by_key(|(_, l)| l.as_ref().map(|l| l.index()))
            })
            .map(|(id, _)| *id);
        let Some(to) = target else {
            return Err(KvError::Invalid(format!(
                "node {node_id} is the only voter of shard {}",
                shard.id
            )));
        };
        if let Err(e) = shard.raft.trigger().transfer_leader(to).await {
            return Err(KvError::Internal(format!("shard {}: {e}", shard.id)));
        }
        return Ok(Step::Pending(format!(
            "moving leadership of shard {} from node {node_id} to node {to}",
            shard.id
        )));
    }
    if voters.contains(&node_id) && voters.len() == 1 {
        return Err(KvError::Invalid(format!(
            "node {node_id} is the only voter of shard {}",
            shard.id
        )));
    }
    barrier(shard, self_id).await?;
    if !is_retired(shard, node_id)? {
        let cmd = Command {
            client_id: 0,
            sequence: 0,
            acked_below: 0,
            stamped_ms: shard
                .stamp_ms()
                .map_err(|e| KvError::Internal(e.to_string()))?,
            op: Op::Retire { node_id },
        };
        match bounded("retiring the id", shard.raft.client_write(cmd)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return write_failed(shard, self_id, e),
            Err(step) => return Ok(step),
        }
    }
    if !is_member {
        return Ok(Step::Done(format!("node {node_id} is not a member")));
    }
    let change = if voters.contains(&node_id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
    };
    guarded_change(
        shard,
        self_id,
        &m,
        change,
        format!("node {node_id} removed"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_member_may_not_take_another_members_client_or_peer_address() {
        let members = [
            (1, Node::new("h:7001", 5)),
            (2, Node::with_peer_addr("h:7002", "h:7102", 6)),
        ];
        let clash = |id, n: Node| clash(members.iter().map(|(i, n)| (i, n)), id, &n);
        assert_eq!(clash(3, Node::new("h:7003", 0)), None);
        assert_eq!(clash(3, Node::with_peer_addr("h:7003", "h:7103", 0)), None);
        // Again the same: an idempotent step.
        assert_eq!(clash(2, Node::with_peer_addr("h:7002", "h:7102", 0)), None);
        // Node 1's derived peer address, node 2's explicit one, node 2's client address.
        assert!(clash(3, Node::with_peer_addr("h:7003", "h:8001", 0)).is_some());
        assert!(clash(3, Node::with_peer_addr("h:7003", "h:7102", 0)).is_some());
        assert!(clash(3, Node::with_peer_addr("h:7003", "h:7002", 0)).is_some());
        // A member id at other addresses.
        assert!(clash(2, Node::new("h:7002", 0)).is_some());
        assert!(clash(1, Node::new("h:7009", 0)).is_some());
    }
}
