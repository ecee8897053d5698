//! Which command kinds each node can apply, so a rolling upgrade never puts an entry in a log
//! that one of its members cannot read.
//!
//! Every Raft reply carries the replying node's bits ([`RaftReply::features`], 0 from versions
//! before the field). [`PeerFeatures`] keeps what each peer last answered with and when. A
//! leader that is asked for a command needing a feature its shard has not enabled yet checks
//! that every member (voters and learners) answered with that bit recently, then commits an
//! `EnableFeatures` entry and only then the command; once applied, the shard's state machine
//! records the bits for good (they travel in snapshots), so later commands need no check.
//! A member that lacks the bit, or has not answered recently, gets the command refused before
//! anything is proposed, naming that node.
//!
//! It does not stop an older binary from joining a shard that has enabled a feature later
//! (`member add` of a downgraded node): operators upgrade, never downgrade, a running cluster.
//!
//! [`RaftReply::features`]: ringkv_proto::pb::RaftReply::features

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::typ::NodeId;

/// Per-key TTL: `PutTtl`, `CasTtl`, `Touch`, `Persist`, `Expire` commands and TTL records.
pub const TTL: u64 = 1;

/// Single-shard transactions: `Txn` commands.
pub const TXN: u64 = 2;

/// Every feature this build can apply.
pub const ALL: u64 = TTL | TXN;

/// A peer's answer older than this does not vouch for it (it may have been replaced by an
/// older binary since).
pub const FRESH_FOR: Duration = Duration::from_secs(10);

/// The feature names, for messages.
pub fn names(bits: u64) -> String {
    let mut out = Vec::new();
    if bits & TTL != 0 {
        out.push("ttl");
    }
    if bits & TXN != 0 {
        out.push("txn");
    }
    if out.is_empty() {
        "none".to_string()
    } else {
        out.join(",")
    }
}

/// The bits this node advertises: [`ALL`], or in builds with the test-only `fault-injection`
/// feature, `RINGKV_TEST_FEATURES` when set (a decimal bit set), so a test can play a node of
/// an older version without building one.
pub fn own() -> u64 {
    static OWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        #[cfg(feature = "fault-injection")]
        if let Some(bits) = std::env::var("RINGKV_TEST_FEATURES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return bits & ALL;
        }
        ALL
    })
}

/// What each peer last said it supports, and when.
#[derive(Debug, Default)]
pub struct PeerFeatures {
    seen: Mutex<HashMap<NodeId, (u64, Instant)>>,
}

/// Why a member cannot be counted on for a feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lacking {
    #[error("node {node} runs a version without {} (it supports: {})", names(*.wanted), names(*.has))]
    Older { node: NodeId, wanted: u64, has: u64 },
    #[error("node {node} has not answered in the last {}s, so it cannot be known to support {}", FRESH_FOR.as_secs(), names(*.wanted))]
    Silent { node: NodeId, wanted: u64 },
}

impl Lacking {
    pub fn node(&self) -> NodeId {
        match self {
            Lacking::Older { node, .. } | Lacking::Silent { node, .. } => *node,
        }
    }
}

impl PeerFeatures {
    /// Records a reply from `peer`.
    pub fn record(&self, peer: NodeId, bits: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(peer, (bits, Instant::now()));
    }

    /// Checks that every one of `members` supports `wanted`; `self_id` is this node.
    pub fn check(
        &self,
        self_id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        wanted: u64,
        now: Instant,
    ) -> Result<(), Lacking> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for node in members {
            let has = if node == self_id {
                own()
            } else {
                match seen.get(&node) {
                    Some((bits, at)) if now.saturating_duration_since(*at) <= FRESH_FOR => *bits,
                    _ => return Err(Lacking::Silent { node, wanted }),
                }
            };
            if has & wanted != wanted {
                return Err(Lacking::Older { node, wanted, has });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_must_have_answered_recently_with_the_bit() {
        let f = PeerFeatures::default();
        let now = Instant::now();
        assert_eq!(
            f.check(1, [1, 2], TTL, now),
            Err(Lacking::Silent {
                node: 2,
                wanted: TTL
            })
        );
        f.record(2, 0);
        assert_eq!(
            f.check(1, [1, 2], TTL, now + Duration::from_millis(1)),
            Err(Lacking::Older {
                node: 2,
                wanted: TTL,
                has: 0
            })
        );
        f.record(2, TTL);
        let later = Instant::now();
        assert_eq!(f.check(1, [1, 2], TTL, later), Ok(()));
        assert_eq!(
            f.check(1, [1, 2], TTL, later + FRESH_FOR + Duration::from_secs(1)),
            Err(Lacking::Silent {
                node: 2,
                wanted: TTL
            })
        );
    }
}
