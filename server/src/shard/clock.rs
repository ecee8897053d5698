//! The leader's stamp of cluster time on the commands it proposes.
//!
//! Cluster time is the shard's committed log clock (design §9): apply keeps the largest stamp
//! it has seen (`apply::advance_clock`), snapshots carry it, and leaders stamp from a
//! monotonic clock anchored on it. When this node starts leading a term it anchors on the
//! clock its state machine has applied; each stamp is that plus the monotonic time since.
//! So a node's wall clock, set an hour ahead or back, changes nothing; time never runs
//! backwards (apply keeps the maximum); and the time while a shard has no leader does not
//! count, since the next leader anchors on the last applied stamp again. Deduplication
//! expiry (and later TTLs) measure on it, so it only ever errs late, never early.
//!
//! Pure: the caller passes the monotonic instant and the applied clock; no I/O here.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    term: u64,
    base_ms: u64,
    at: Instant,
}

/// One shard's stamping state on this node.
#[derive(Debug, Default)]
pub struct LeaderClock {
    anchor: Mutex<Option<Anchor>>,
}

impl LeaderClock {
    /// The stamp for a command this node proposes as leader of `term` at `now`;
    /// `applied_ms` is read only when a new term needs an anchor.
    pub fn stamp<E>(
        &self,
        term: u64,
        now: Instant,
        applied_ms: impl FnOnce() -> Result<u64, E>,
    ) -> Result<u64, E> {
        let mut anchor = self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        let current = match *anchor {
            Some(a) if a.term == term && now >= a.at => a,
            _ => {
                let a = Anchor {
                    term,
                    base_ms: applied_ms()?,
                    at: now,
                };
                *anchor = Some(a);
                a
            }
        };
        let elapsed_ms =
            u64::try_from(now.duration_since(current.at).as_millis()).unwrap_or(u64::MAX);
        Ok(current.base_ms.saturating_add(elapsed_ms))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stamps_run_from_the_applied_clock_and_restart_from_it_each_term() {
        let clock = LeaderClock::default();
        let t0 = Instant::now();
        let ok = |v: u64| move || Ok::<u64, ()>(v);
        assert_eq!(clock.stamp(3, t0, ok(5_000)), Ok(5_000));
        // Within the term the applied clock is not consulted again; monotonic time counts.
        let later = t0 + Duration::from_millis(1_500);
        assert_eq!(clock.stamp(3, later, || Err(())), Ok(6_500));
        // A new term anchors again on what was applied: the leaderless gap does not count.
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(clock.stamp(4, much_later, ok(6_600)), Ok(6_600));
        assert_eq!(
            clock.stamp(4, much_later + Duration::from_millis(10), ok(0)),
            Ok(6_610)
        );
    }
}
