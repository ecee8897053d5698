//! Leader spreading: each shard has a preferred leader, `voters[shard % voters.len()]` over the
//! sorted voter ids, so a healthy cluster of N nodes gives each node ⌊S/N⌋ or ⌈S/N⌉ leaders.
//!
//! A leader that is not the preferred one hands leadership over (openraft leader transfer), but
//! only once the preferred node has replicated the leader's whole log, and at most once per
//! shard per `TRANSFER_BACKOFF`. The decision ([`preferred_leader`]) is pure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::shard::Shards;
use crate::typ::NodeId;

const CHECK_EVERY: Duration = Duration::from_millis(500);
const TRANSFER_BACKOFF: Duration = Duration::from_secs(3);

/// The preferred leader of `shard` among `voters` (any order).
pub fn preferred_leader(shard: u32, voters: &[NodeId]) -> Option<NodeId> {
    let mut v = voters.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return None;
    }
    Some(v[shard as usize % v.len()])
}

/// Runs until `cancel` fires.
pub async fn run(self_id: NodeId, shards: Shards, cancel: CancellationToken) {
    let mut last_transfer: HashMap<u32, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        for shard in shards.iter() {
            let m = shard.metrics();
            if m.state != ServerState::Leader {
                continue;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            let Some(preferred) = preferred_leader(shard.id, &voters) else {
                continue;
            };
            if preferred == self_id {
                continue;
            }
            let caught_up = match (&m.replication, m.last_log_index) {
                (Some(r), Some(last)) => r
                    .get(&preferred)
                    .and_then(|l| l.as_ref())
                    .is_some_and(|l| l.index() >= last),
                _ => false,
            };
            let recently = last_transfer
                .get(&shard.id)
                .is_some_and(|t| t.elapsed() < TRANSFER_BACKOFF);
            if caught_up && !recently {
                last_transfer.insert(shard.id, Instant::now());
                tracing::info!(
                    shard = shard.id,
                    to = preferred,
                    term = m.current_term,
                    "transferring leadership to preferred node"
                );
                if let Err(e) = shard.raft.trigger().transfer_leader(preferred).await {
                    tracing::warn!(shard = shard.id, error = %e, "leader transfer failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_shards_over_three_nodes_spread_three_three_two() {
        let mut count = HashMap::new();
        for s in 0..8 {
            *count
                .entry(preferred_leader(s, &[3, 1, 2]).unwrap_or(0))
                .or_insert(0) += 1;
        }
        let mut v: Vec<i32> = count.values().copied().collect();
        v.sort();
        assert_eq!(v, vec![2, 3, 3]);
        assert_eq!(preferred_leader(0, &[]), None);
    }
}
