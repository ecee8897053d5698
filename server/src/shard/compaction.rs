//! Log compaction by bytes: a per-node task that snapshots a shard once the log entries its next
//! snapshot would cover take more than `--snapshot-log-mb`, and purges further behind a snapshot
//! when the entries `--log-keep-entries` keeps there take more than a quarter of that.
//!
//! Why: openraft's own policy counts entries (`--snapshot-logs`, `--log-keep-entries`). With
//! large values a shard can then hold hundreds of MiB of entries, all in memory and all pinning
//! the node-wide write-ahead log's segments (a segment goes only once every shard's entries in
//! it are purged; see `storage::wal`). This task adds byte bounds beside the counts; whichever
//! is reached first acts.
//!
//! Bytes are counted as the write-ahead log's `entry_bytes` counts them (payload
//! plus 64 per entry): the measure the log keeps running sums of (so a check is O(log n)), and
//! within a few percent of the encoded size for values of a KiB or more.
//!
//! Each check (ten times a second, every shard, leader or not: each replica compacts its own
//! log) reads the replica's snapshot, applied and purged indexes from openraft's metrics and the
//! byte sums from its log, and decides with pure functions:
//! - [`should_snapshot`]: the applied entries after the snapshot (what a new one would cover)
//!   take more than the bound, and no snapshot this task requested is still pending. A request is
//!   pending until the replica's snapshot index moves past where it was at the request, or
//!   [`REQUEST_PENDING_MAX`] has passed (openraft itself drops a request while a build runs, so
//!   asking again is harmless, only wasteful).
//! - [`purge_upto`]: the entries kept behind the snapshot take more than the kept bound, so purge
//!   up to the index that leaves as many of them as fit, never past the snapshot (openraft
//!   clamps a purge to its snapshot too) and only past what was already purged or requested.
//!
//! The kept bound is a quarter of the trigger so a shard's live log stays under about 1.25 ×
//! `--snapshot-log-mb` plus what arrives while a snapshot builds, while a follower that fell a
//! little behind still catches up from the log. The price: with large values fewer entries than
//! `--log-keep-entries` stay behind a snapshot, so a follower further behind than that quarter
//! gets a snapshot instead of the entries.
//!
//! What it does not do: build or purge anything itself (it only asks openraft, which purges on
//! a leader once no replication stream still reads the entries), nor bound the log of a replica
//! that cannot apply (nothing unapplied can be snapshotted), nor react faster than its check
//! interval (a shard can pass the bound by what it receives in one interval).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::shard::{Shard, Shards};
use crate::storage::wal::{ShardLog, Wal};

/// How often every shard is checked: often, because a shard can pass the bound by what it
/// receives in one interval (at 68 MiB/s of large values, a one-second interval let a node's
/// log grow past a whole extra 64 MiB segment); a check only reads counters.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a requested snapshot counts as pending if the snapshot index does not move.
pub const REQUEST_PENDING_MAX: Duration = Duration::from_secs(30);
/// How long one request to openraft may take (it only queues a command).
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(1);

/// The byte bounds (from `--snapshot-log-mb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Snapshot once the applied entries after the snapshot take more than this.
    pub snapshot_log_bytes: u64,
    /// Purge behind a snapshot until the entries kept there take at most this.
    pub kept_log_bytes_max: u64,
}

impl Policy {
    /// The bounds for `--snapshot-log-mb` in bytes; `None` when it is 0 (off).
    pub fn from_snapshot_log_bytes(snapshot_log_bytes: u64) -> Option<Policy> {
        (snapshot_log_bytes > 0).then_some(Policy {
            snapshot_log_bytes,
            kept_log_bytes_max: snapshot_log_bytes / 4,
        })
    }
}

/// One replica as seen at a check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Last index the replica's snapshot covers.
    pub snapshot: Option<u64>,
    /// Bytes of the log entries after the snapshot up to the last applied one.
    pub unsnapshotted_bytes: u64,
    /// Last index purged from the log.
    pub purged: Option<u64>,
    /// The purge (inclusive) that leaves at most the kept bound of entries up to the snapshot;
    /// `None` if they already fit.
    pub fitting_purge: Option<u64>,
}

/// A snapshot this task asked for and has not seen built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requested {
    /// The replica's snapshot index when it was asked.
    pub snapshot: Option<u64>,
    pub at: Instant,
}

/// Whether to ask for a snapshot now. Clears `requested` once it is no longer pending.
pub fn should_snapshot(
    policy: &Policy,
    seen: &Observed,
    requested: &mut Option<Requested>,
    now: Instant,
) -> bool {
    if let Some(r) = requested
        && (seen.snapshot > r.snapshot || now.duration_since(r.at) >= REQUEST_PENDING_MAX)
    {
        *requested = None;
    }
    requested.is_none() && seen.unsnapshotted_bytes > policy.snapshot_log_bytes
}

/// The index to ask openraft to purge up to now, if any: the fitting purge, when a snapshot
/// covers it and it goes past both what is purged and what was already asked for.
pub fn purge_upto(seen: &Observed, purge_requested: Option<u64>) -> Option<u64> {
    let snapshot = seen.snapshot?;
    let upto = seen.fitting_purge?.min(snapshot);
    let done = seen.purged.max(purge_requested);
    (Some(upto) > done).then_some(upto)
}

/// Reads what [`Observed`] needs from the replica's log, given its openraft indexes.
fn observe(
    log: &ShardLog,
    policy: &Policy,
    snapshot: Option<u64>,
    applied: Option<u64>,
    purged: Option<u64>,
) -> Observed {
    Observed {
        snapshot,
        unsnapshotted_bytes: log.bytes_between(snapshot, applied),
        purged,
        fitting_purge: snapshot.and_then(|s| log.purge_point(s, policy.kept_log_bytes_max)),
    }
}

/// Where the task reports (the node's metrics).
#[derive(Clone)]
pub struct Observers {
    /// Snapshots requested because of the byte bound, by shard.
    pub snapshots_triggered: prometheus::IntCounterVec,
    /// Purges requested because of the kept bound, by shard.
    pub purges_triggered: prometheus::IntCounterVec,
}

/// The task's memory of one shard between checks.
#[derive(Default)]
struct Tracker {
    requested: Option<Requested>,
    purge_requested: Option<u64>,
}

/// Runs until `cancel` fires: checks every shard ten times a second.
pub async fn run(
    shards: Shards,
    wal: Wal,
    policy: Policy,
    observers: Observers,
    cancel: CancellationToken,
) {
    let mut logs = Vec::with_capacity(shards.len());
    for shard in shards.iter() {
        match wal.shard(shard.id) {
            Ok(log) => logs.push(log),
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "log compaction by bytes is off: cannot read the shard's log");
                return;
            }
        }
    }
    let mut trackers: Vec<Tracker> = shards.iter().map(|_| Tracker::default()).collect();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        for ((shard, log), tracker) in shards.iter().zip(&logs).zip(&mut trackers) {
            let Some(seen) = observe_shard(shard, log, &policy) else {
                continue;
            };
            let label = shard.id.to_string();
            if should_snapshot(&policy, &seen, &mut tracker.requested, Instant::now())
                && ask(&cancel, shard.raft.trigger().snapshot()).await
            {
                tracing::info!(
                    shard = shard.id,
                    log_bytes = seen.unsnapshotted_bytes,
                    snapshot_log_bytes = policy.snapshot_log_bytes,
                    "log entries since the last snapshot passed --snapshot-log-mb; building a snapshot"
                );
                tracker.requested = Some(Requested {
                    snapshot: seen.snapshot,
                    at: Instant::now(),
                });
                observers
                    .snapshots_triggered
                    .with_label_values(&[label.as_str()])
                    .inc();
            }
            if let Some(upto) = purge_upto(&seen, tracker.purge_requested)
                && ask(&cancel, shard.raft.trigger().purge_log(upto)).await
            {
                tracing::debug!(
                    shard = shard.id,
                    upto,
                    kept_log_bytes_max = policy.kept_log_bytes_max,
                    "entries kept behind the snapshot passed a quarter of --snapshot-log-mb; purging"
                );
                tracker.purge_requested = Some(upto);
                observers
                    .purges_triggered
                    .with_label_values(&[label.as_str()])
                    .inc();
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }
}

fn observe_shard(shard: &Shard, log: &Arc<Mutex<ShardLog>>, policy: &Policy) -> Option<Observed> {
    let (snapshot, applied, purged) = {
        let metrics = shard.raft.metrics();
        let m = metrics.borrow_watched();
        if m.running_state.is_err() {
            return None;
        }
        let index = |l: &Option<crate::typ::LogId>| l.as_ref().map(|l| l.index());
        (index(&m.snapshot), index(&m.last_applied), index(&m.purged))
    };
    let log = log.lock().ok()?;
    Some(observe(&log, policy, snapshot, applied, purged))
}

/// Sends one request to openraft; whether it was taken (not when shut down, failed or slow).
async fn ask<E: std::fmt::Display>(
    cancel: &CancellationToken,
    request: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        r = tokio::time::timeout(TRIGGER_TIMEOUT, request) => match r {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "raft did not take a compaction request");
                false
            }
            Err(_) => {
                tracing::debug!("raft did not take a compaction request in time");
                false
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn policy() -> Policy {
        Policy::from_snapshot_log_bytes(4 * MIB).expect("on")
    }

    #[test]
    fn zero_turns_the_byte_bounds_off() {
        assert_eq!(Policy::from_snapshot_log_bytes(0), None);
        assert_eq!(policy().kept_log_bytes_max, MIB);
    }

    #[test]
    fn a_snapshot_is_asked_for_past_the_bound_and_not_again_while_pending() {
        let p = policy();
        let t0 = Instant::now();
        let mut requested = None;
        let mut seen = Observed {
            snapshot: Some(100),
            unsnapshotted_bytes: 4 * MIB,
            ..Observed::default()
        };
        // At the bound: not yet.
        assert!(!should_snapshot(&p, &seen, &mut requested, t0));
        seen.unsnapshotted_bytes = 4 * MIB + 1;
        assert!(should_snapshot(&p, &seen, &mut requested, t0));
        requested = Some(Requested {
            snapshot: Some(100),
            at: t0,
        });
        // Still pending: the snapshot index has not moved.
        let later = t0 + Duration::from_secs(5);
        seen.unsnapshotted_bytes = 40 * MIB;
        assert!(!should_snapshot(&p, &seen, &mut requested, later));
        assert!(requested.is_some());
        // Built: the index moved; asked again only if still past the bound.
        seen.snapshot = Some(700);
        seen.unsnapshotted_bytes = MIB;
        assert!(!should_snapshot(&p, &seen, &mut requested, later));
        assert_eq!(requested, None);
        seen.unsnapshotted_bytes = 5 * MIB;
        assert!(should_snapshot(&p, &seen, &mut requested, later));
    }

    #[test]
    fn a_request_that_never_lands_is_repeated_after_a_while() {
        let p = policy();
        let t0 = Instant::now();
        let seen = Observed {
            snapshot: None,
            unsnapshotted_bytes: 8 * MIB,
            ..Observed::default()
        };
        let mut requested = Some(Requested {
            snapshot: None,
            at: t0,
        });
        let before = t0 + REQUEST_PENDING_MAX - Duration::from_millis(1);
        assert!(!should_snapshot(&p, &seen, &mut requested, before));
        assert!(should_snapshot(
            &p,
            &seen,
            &mut requested,
            t0 + REQUEST_PENDING_MAX
        ));
    }

    #[test]
    fn the_purge_goes_to_the_fitting_point_never_past_the_snapshot_or_back() {
        let seen = Observed {
            snapshot: Some(500),
            unsnapshotted_bytes: 0,
            purged: Some(100),
            fitting_purge: Some(480),
        };
        assert_eq!(purge_upto(&seen, None), Some(480));
        assert_eq!(purge_upto(&seen, Some(300)), Some(480));
        // Already asked for, or already purged that far: nothing new.
        assert_eq!(purge_upto(&seen, Some(480)), None);
        let purged = Observed {
            purged: Some(490),
            ..seen
        };
        assert_eq!(purge_upto(&purged, None), None);
        // Never past the snapshot, and nothing without one or when the tail fits.
        let past = Observed {
            fitting_purge: Some(900),
            ..seen
        };
        assert_eq!(purge_upto(&past, None), Some(500));
        let unsnapshotted = Observed {
            snapshot: None,
            ..seen
        };
        assert_eq!(purge_upto(&unsnapshotted, None), None);
        let fits = Observed {
            fitting_purge: None,
            ..seen
        };
        assert_eq!(purge_upto(&fits, None), None);
        let fresh = Observed {
            purged: None,
            ..seen
        };
        assert_eq!(purge_upto(&fresh, None), Some(480));
    }

    #[test]
    fn observe_measures_what_a_snapshot_would_cover_and_the_fitting_purge() {
        use crate::shard::command::{Command, Op};
        use crate::typ::TypeConfig;
        let mut log = ShardLog::default();
        // 20 entries of 64 KiB (value plus key plus 64).
        let entry = |i: u64| {
            let mut e = openraft::testing::blank_ent::<TypeConfig>(1, 1, i);
            e.payload = openraft::EntryPayload::Normal(Command {
                client_id: 1,
                sequence: i,
                acked_below: 0,
                stamped_ms: 0,
                op: Op::Put {
                    key: bytes::Bytes::from_static(b"k"),
                    value: bytes::Bytes::from(vec![0u8; 64 * 1024 - 65]),
                },
            });
            e
        };
        log.append((1..=20).map(entry));
        let p = Policy::from_snapshot_log_bytes(256 * 1024).expect("on");
        // Snapshot at 10, applied to 18: 8 entries since; 64 KiB kept of the 10 behind it.
        let seen = observe(&log, &p, Some(10), Some(18), None);
        assert_eq!(seen.unsnapshotted_bytes, 8 * 64 * 1024);
        assert_eq!(seen.fitting_purge, Some(9));
        let none = observe(&log, &p, None, Some(2), None);
        assert_eq!(none.unsnapshotted_bytes, 2 * 64 * 1024);
        assert_eq!(none.fitting_purge, None);
    }
}
