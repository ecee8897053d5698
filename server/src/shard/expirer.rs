//! The leader's expiry of keys whose TTL has passed (design §9, issue 17 item 2).
//!
//! Every [`EXPIRE_EVERY`], for each shard this node leads, the due entries of the expiry index
//! (deadline not after the leader's cluster-time stamp) are proposed as one `Expire` command of
//! at most [`EXPIRE_BATCH_KEYS`] keys, stamped with that same time, so apply removes exactly
//! the keys whose deadline has passed in cluster time. Replicas never expire anything on
//! their own clocks; a follower, a leaderless shard or a node with its wall clock set an hour
//! ahead expires nothing. Reads do not wait for this: they treat a key as absent once its
//! deadline has passed (see `service::ttl`), so the removal only reclaims space and makes the
//! absence visible to serializable reads and snapshots.
//!
//! Invariants: proposals are bounded (keys per command, commands per round, a timeout each);
//! an `Expire` is idempotent (an entry whose key was rewritten or already removed removes
//! only its index entry), so a proposal whose outcome is unknown is simply proposed again in
//! a later round if still due. It does not decide what a read sees.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shard::command::Op;
use crate::shard::{OwnProposalError, Shard, Shards};
use crate::typ::NodeId;

/// How often a leader looks for due keys: with the commit that follows, the expiry entry
/// trails a deadline by well under the 1 s the design allows.
pub const EXPIRE_EVERY: Duration = Duration::from_millis(200);
/// Keys in one `Expire` command.
pub const EXPIRE_BATCH_KEYS: usize = 1024;
/// Commands per shard per round (so 20,480 expirations/s per shard at most).
const BATCHES_PER_ROUND: usize = 4;
/// One expiry proposal waits this long at most.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `cancel`.
/// Runs until `cancel`; `lateness` gets, per removed key, the cluster time from its deadline
/// to the commit of its removal.
pub async fn run(
    self_id: NodeId,
    shards: Shards,
    lateness: prometheus::Histogram,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        for shard in shards.iter() {
            if shard.leader() != Some(self_id) {
                continue;
            }
            for _ in 0..BATCHES_PER_ROUND {
                match expire_due(shard, &lateness).await {
                    Ok(n) if n == EXPIRE_BATCH_KEYS => continue,
                    Ok(_) => {}
                    Err(OwnProposalError::NotLeader(_)) => {}
                    Err(e) => {
                        tracing::debug!(shard = shard.id, error = %e, "expiry round failed; next round retries");
                    }
                }
                break;
            }
        }
    }
}

/// Proposes the removal of up to [`EXPIRE_BATCH_KEYS`] due keys of `shard`; the number of
/// index entries it covered. Each covered deadline's lateness goes to `lateness` once the
/// removal committed (stale index entries included: their keys were rewritten, not late).
pub async fn expire_due(
    shard: &Shard,
    lateness: &prometheus::Histogram,
) -> Result<usize, OwnProposalError> {
    let now_ms = shard.stamp_now()?;
    let due = shard
        .sm
        .due_expiries(now_ms, EXPIRE_BATCH_KEYS)
        .map_err(|e| OwnProposalError::Raft {
            shard: shard.id,
            reason: format!("reading the expiry index: {e}"),
        })?;
    if due.is_empty() {
        return Ok(0);
    }
    let n = due.len();
    let deadlines: Vec<u64> = due.iter().map(|(_, d)| *d).collect();
    let keys = due.into_iter().map(|(k, d)| (k.into(), d)).collect();
    shard
        .propose_own(Op::Expire { keys }, now_ms, PROPOSE_TIMEOUT)
        .await?;
    if let Ok(done_ms) = shard.stamp_now() {
        for d in deadlines {
            lateness.observe(done_ms.saturating_sub(d) as f64 / 1000.0);
        }
    }
    Ok(n)
}
