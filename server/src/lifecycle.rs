//! Lifecycle log lines an operator reads at 3 a.m.: each shard's leadership as this node sees
//! it ("shard 3: node 2 is leader in term 7"), logged at info on every change. Polls local
//! metrics (no Raft calls), every 200 ms, until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shard::Shards;

const POLL: Duration = Duration::from_millis(200);

/// Runs until `cancel` fires.
pub async fn log_leadership(self_id: u64, shards: Shards, cancel: CancellationToken) {
    let mut seen: Vec<Option<(Option<u64>, u64)>> = vec![None; shards.len()];
    loop {
        for (i, shard) in shards.iter().enumerate() {
            let m = shard.metrics();
            let now = (m.current_leader, m.current_term);
            if seen[i] == Some(now) {
                continue;
            }
            seen[i] = Some(now);
            match m.current_leader {
                Some(l) if l == self_id => {
                    tracing::info!(
                        shard = shard.id,
                        term = m.current_term,
                        "this node is leader of the shard"
                    )
                }
                Some(l) => tracing::info!(
                    shard = shard.id,
                    term = m.current_term,
                    leader = l,
                    "shard has a new leader"
                ),
                None => tracing::info!(
                    shard = shard.id,
                    term = m.current_term,
                    "shard has no leader (election)"
                ),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
