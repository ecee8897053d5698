//! Whether each peer answers, as this node's Raft transport sees it, shared by every shard.
//!
//! A peer is *down* from the first failed call after it last answered until it answers again.
//! While it is down:
//! - every shard's calls to it wait until [`PROBE_INTERVAL`] after the last failure before
//!   trying again (openraft retries a failed replication at once whenever a new entry
//!   arrives, so without this a dead peer costs a connection attempt per write per shard);
//! - the log has one warning once it has been down for [`REPORT_AFTER`], one summary per
//!   [`SUMMARY_INTERVAL`] (how long, how many attempts failed, the last error) and one line
//!   when it answers again (only if its outage was reported).
//!
//! Invariants: a call is delayed by at most [`PROBE_INTERVAL`], and only while its peer is
//! down, so a peer that comes back is reached within that time by every shard; the table has
//! one entry per peer this node ever called. The state is advice for pacing and logging: it
//! never fails a call by itself and never decides what Raft does.
//!
//! It does not detect a slow peer that still answers, nor share what it knows with clients.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::typ::NodeId;

/// The least time between two attempts to reach a peer that is down.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A peer is reported down once its calls have failed, without one answered, for this long
/// (one timed-out call while a node starts or a leader changes is not an outage).
pub const REPORT_AFTER: Duration = Duration::from_secs(1);
/// How often a peer that stays down is reported.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// What a call's outcome changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The peer has not answered for [`REPORT_AFTER`] (or longer, if no call was made).
    WentDown { down_for: Duration, failed: u64 },
    /// It is still down; time for the periodic summary.
    StillDown { down_for: Duration, failed: u64 },
    /// It answered after being down.
    CameBack { down_for: Duration, failed: u64 },
}

#[derive(Debug)]
struct Down {
    since: Instant,
    last_failure: Instant,
    /// When it was last reported (`None`: not yet, it has not been down long enough).
    reported: Option<Instant>,
    failed: u64,
}

/// The pure state, driven by the caller's clock.
#[derive(Debug, Default)]
pub struct PeerTable {
    down: HashMap<NodeId, Down>,
}

impl PeerTable {
    /// How long a call to `peer` should wait before it tries, at `now`.
    pub fn wait(&self, peer: NodeId, now: Instant) -> Option<Duration> {
        let d = self.down.get(&peer)?;
        (d.last_failure + PROBE_INTERVAL)
            .checked_duration_since(now)
            .filter(|w| !w.is_zero())
    }

    /// A call to `peer` failed at `now`.
    pub fn failed(&mut self, peer: NodeId, now: Instant) -> Option<Change> {
        let d = self.down.entry(peer).or_insert(Down {
            since: now,
            last_failure: now,
            reported: None,
            failed: 0,
        });
        d.failed += 1;
        d.last_failure = now;
        let down_for = now.duration_since(d.since);
        match d.reported {
            None if down_for >= REPORT_AFTER => {
                d.reported = Some(now);
                Some(Change::WentDown {
                    down_for,
                    failed: d.failed,
                })
            }
            Some(at) if now.duration_since(at) >= SUMMARY_INTERVAL => {
                d.reported = Some(now);
                Some(Change::StillDown {
                    down_for,
                    failed: d.failed,
                })
            }
            _ => None,
        }
    }

    /// A call to `peer` was answered at `now`.
    pub fn answered(&mut self, peer: NodeId, now: Instant) -> Option<Change> {
        let d = self.down.remove(&peer)?;
        d.reported?;
        Some(Change::CameBack {
            down_for: now.duration_since(d.since),
            failed: d.failed,
        })
    }
}

/// The node's table, with the logging.
#[derive(Debug, Default)]
pub struct PeerHealth {
    table: Mutex<PeerTable>,
}

impl PeerHealth {
    /// Waits, if `peer` is down, until it is time for the next attempt, but for at most half
    /// of `ttl` (the call's deadline), so the attempt itself still has time.
    pub async fn pace(&self, peer: NodeId, ttl: Duration) {
        let wait = match self.table.lock() {
            Ok(t) => t.wait(peer, Instant::now()),
            Err(_) => None,
        };
        if let Some(w) = wait.map(|w| w.min(ttl / 2)) {
            tokio::time::sleep(w).await;
        }
    }

    /// Records a call's outcome and logs what changed.
    pub fn record<T, E: Display>(&self, peer: NodeId, addr: &str, outcome: &Result<T, E>) {
        let now = Instant::now();
        let change = match self.table.lock() {
            Ok(mut t) => match outcome {
                Ok(_) => t.answered(peer, now),
                Err(_) => t.failed(peer, now),
            },
            Err(_) => None,
        };
        let error = outcome.as_ref().err().map(|e| e.to_string());
        let error = error.as_deref().unwrap_or("");
        match change {
            None => {}
            Some(Change::WentDown { down_for, failed }) => tracing::warn!(
                peer,
                addr,
                down_ms = down_for.as_millis() as u64,
                failed_attempts = failed,
                error,
                "peer unreachable; retrying every {} ms, reported every {} s until it answers",
                PROBE_INTERVAL.as_millis(),
                SUMMARY_INTERVAL.as_secs()
            ),
            Some(Change::StillDown { down_for, failed }) => tracing::warn!(
                peer,
                addr,
                down_s = down_for.as_secs(),
                failed_attempts = failed,
                last_error = error,
                "peer still unreachable"
            ),
            Some(Change::CameBack { down_for, failed }) => tracing::info!(
                peer,
                addr,
                down_ms = down_for.as_millis() as u64,
                failed_attempts = failed,
                "peer reachable again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reported_down_once_summarized_periodically_and_back_once() {
        let mut t = PeerTable::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut changes = Vec::new();
        for ms in (0..=65_000).step_by(100) {
            changes.extend(t.failed(2, at(ms)));
        }
        assert_eq!(
            changes,
            vec![
                Change::WentDown {
                    down_for: REPORT_AFTER,
                    failed: 11
                },
                Change::StillDown {
                    down_for: REPORT_AFTER + SUMMARY_INTERVAL,
                    failed: 311
                },
                Change::StillDown {
                    down_for: REPORT_AFTER + SUMMARY_INTERVAL * 2,
                    failed: 611
                },
            ]
        );
        assert_eq!(
            t.answered(2, at(65_050)),
            Some(Change::CameBack {
                down_for: Duration::from_millis(65_050),
                failed: 651
            })
        );
        assert_eq!(t.answered(2, at(65_050)), None, "once");
        assert_eq!(
            t.failed(2, at(65_100)),
            None,
            "a new outage starts unreported"
        );
    }

    #[test]
    fn a_short_blip_is_not_an_outage() {
        let mut t = PeerTable::default();
        let t0 = Instant::now();
        assert_eq!(t.failed(2, t0), None);
        assert_eq!(t.failed(2, t0 + Duration::from_millis(500)), None);
        assert_eq!(t.answered(2, t0 + Duration::from_millis(600)), None);
        assert_eq!(
            t.failed(2, t0 + Duration::from_millis(1200)),
            None,
            "counted afresh"
        );
    }

    #[test]
    fn calls_to_a_down_peer_wait_for_the_probe_interval_and_others_do_not() {
        let mut t = PeerTable::default();
        let t0 = Instant::now();
        assert_eq!(t.wait(2, t0), None, "never failed");
        t.failed(2, t0);
        assert_eq!(t.wait(2, t0), Some(PROBE_INTERVAL));
        assert_eq!(
            t.wait(2, t0 + Duration::from_millis(30)),
            Some(Duration::from_millis(70))
        );
        assert_eq!(t.wait(2, t0 + PROBE_INTERVAL), None);
        assert_eq!(t.wait(3, t0), None, "another peer");
        t.answered(2, t0 + PROBE_INTERVAL);
        assert_eq!(t.wait(2, t0 + PROBE_INTERVAL), None, "back");
    }
}
