//! Leader watch: while an attempt waits on a node that has stopped answering (frozen, paused,
//! cut off), notice as soon as the rest of the cluster has moved the shard's leadership
//! elsewhere, so the request goes to the new leader instead of waiting out its attempt timeout
//! (issue 18: "a request never waits on a frozen node for longer than it takes the cluster to
//! route around it").
//!
//! How: once an attempt has gone [`ClientOptions::leader_check_after`] unanswered, the client
//! asks another node for its status (which leader it follows for each shard), and again every
//! [`CHECK_EVERY`] while the attempt still waits. A node other than the one waited on that
//! names another leader for the shard ends the wait: the caller retries there. A write's
//! abandoned attempt may still apply, so the caller treats it like a timed-out one (outcome
//! unknown until a retry under the same sequence answers).
//!
//! Invariants:
//! - Bounded: one status call in flight per client at a time (a request that finds one in
//!   flight does not queue behind it: it looks again at its next check), and a new one only
//!   [`CHECK_EVERY`] after the last ended, answered or not; every waiting request shares the
//!   answer (a frozen node under 256 waiting requests costs the cluster about ten status calls
//!   a second, not 2,560).
//! - The node waited on is never asked: its word is what is in doubt. A node that does not
//!   answer the status call within [`CHECK_TIMEOUT`] is passed over like any node that failed
//!   an attempt, so the next check asks another.
//!
//! What it does not do: compare terms (a stale node naming an old leader can move a request
//! once; the old leader then redirects it back), or watch requests that are not routed to a
//! shard (fan-out scans, serializable reads).
//!
//! [`ClientOptions::leader_check_after`]: crate::ClientOptions::leader_check_after

use std::collections::HashMap;
use std::time::Duration;

use ringkv_proto::pb::StatusResponse;
use tokio::time::Instant;

/// How often the waiting requests of one client ask again (and how long one answer is reused).
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long one status call may take before the check gives up on it (and tries another node
/// at the next check).
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// The last answer: who `from` says leads each shard.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub at: Instant,
    pub from: String,
    /// shard → leader's client address (absent: no leader known to `from`).
    pub leaders: HashMap<u32, String>,
}

impl View {
    /// Reads a status answer of node `from`.
    pub(crate) fn of(from: &str, status: &StatusResponse, at: Instant) -> View {
        let addrs: HashMap<u64, &str> = status
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.as_str()))
            .collect();
        let leaders = status
            .shards
            .iter()
            .filter_map(|s| {
                let addr = addrs.get(&s.leader?)?;
                Some((s.shard, addr.to_string()))
            })
            .collect();
        View {
            at,
            from: from.to_string(),
            leaders,
        }
    }

    /// Whether this answer may stand in for a new check, for a wait on `waiting_on`.
    pub(crate) fn usable(&self, waiting_on: &str, now: Instant) -> bool {
        self.from != waiting_on && now.saturating_duration_since(self.at) < CHECK_EVERY
    }

    /// The leader `shard` has moved to, if this answer names one other than `waiting_on`.
    pub(crate) fn moved(&self, shard: u32, waiting_on: &str) -> Option<&str> {
        self.leaders
            .get(&shard)
            .map(String::as_str)
            .filter(|l| *l != waiting_on)
    }
}

/// Shared by a client's requests, behind an async lock so that only one status call is in
/// flight (taken with `try_lock`: nobody waits for it).
#[derive(Debug, Default)]
pub(crate) struct LeaderWatch {
    pub state: tokio::sync::Mutex<WatchState>,
}

#[derive(Debug, Default)]
pub(crate) struct WatchState {
    /// The last answer.
    pub view: Option<View>,
    /// When the last status call ended (answered or not), and whom it asked.
    pub tried: Option<(Instant, String)>,
}

impl WatchState {
    /// Whether a new status call is due for a wait on `waiting_on`: no usable answer, and no
    /// call of another node ended within [`CHECK_EVERY`].
    pub(crate) fn due(&self, waiting_on: &str, now: Instant) -> bool {
        let usable = self
            .view
            .as_ref()
            .is_some_and(|v| v.usable(waiting_on, now));
        let tried_lately = self.tried.as_ref().is_some_and(|(at, asked)| {
            asked != waiting_on && now.saturating_duration_since(*at) < CHECK_EVERY
        });
        !usable && !tried_lately
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_proto::pb::{NodeInfo, ShardStatus};

    fn status(leaders: &[(u32, Option<u64>)]) -> StatusResponse {
        StatusResponse {
            nodes: (1..=3)
                .map(|id| NodeInfo {
                    id,
                    addr: format!("n{id}:7001"),
                    ..Default::default()
                })
                .collect(),
            shards: leaders
                .iter()
                .map(|(shard, leader)| ShardStatus {
                    shard: *shard,
                    leader: *leader,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn another_leader_named_by_another_node_moves_the_wait() {
        let now = Instant::now();
        let v = View::of(
            "n2:7001",
            &status(&[(0, Some(2)), (1, Some(1)), (2, None)]),
            now,
        );
        // Shard 0 is led by n2 now, not n1 that the attempt waits on.
        assert_eq!(v.moved(0, "n1:7001"), Some("n2:7001"));
        // Shard 1 is still led by the node waited on: keep waiting.
        assert_eq!(v.moved(1, "n1:7001"), None);
        // No leader known (an election under way): keep waiting.
        assert_eq!(v.moved(2, "n1:7001"), None);
        // A shard the answer does not mention.
        assert_eq!(v.moved(7, "n1:7001"), None);
    }

    #[test]
    fn a_call_is_due_only_without_a_fresh_answer_or_a_recent_try() {
        let now = Instant::now();
        let mut st = WatchState::default();
        assert!(st.due("n1:7001", now), "nothing asked yet");
        // A call of n3 that went unanswered just now: nobody asks again within CHECK_EVERY...
        st.tried = Some((now, "n3:7001".into()));
        assert!(!st.due("n1:7001", now + CHECK_EVERY / 2));
        assert!(st.due("n1:7001", now + CHECK_EVERY));
        // ...except a wait on n3 itself, whose own word cannot count.
        assert!(st.due("n3:7001", now));
        // A fresh answer of n2 serves a wait on n1, not a wait on n2.
        st.view = Some(View::of("n2:7001", &status(&[(0, Some(2))]), now));
        st.tried = Some((now, "n2:7001".into()));
        assert!(!st.due("n1:7001", now));
        assert!(st.due("n2:7001", now));
    }

    #[test]
    fn an_answer_is_reused_briefly_and_never_from_the_node_waited_on() {
        let now = Instant::now();
        let v = View::of("n2:7001", &status(&[(0, Some(2))]), now);
        assert!(v.usable("n1:7001", now + CHECK_EVERY / 2));
        assert!(!v.usable("n1:7001", now + CHECK_EVERY));
        assert!(!v.usable("n2:7001", now));
    }
}
