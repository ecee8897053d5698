//! Retries that do not make an outage or an overload worse: a retry budget per client and
//! full-jitter backoff.
//!
//! - **Budget.** Every request earns a tenth of a retry ([`RETRY_MILLIS_PER_REQUEST`]), and the budget also refills
//!   by [`RETRIES_PER_S_MIN`] a second (so a client that sends little can still ride out a
//!   leader change); it holds at most [`RETRIES_MAX`]. A retry spends one. With the budget
//!   empty a request ends with what its last attempt said (for a write whose outcome is
//!   unknown: unknown), instead of adding load to a cluster that is already failing it. So over
//!   any long stretch, retries are at most about 10 % of requests plus a small constant.
//! - **Backoff.** The pause before a retry is drawn uniformly from zero to the current cap
//!   (full jitter), so clients that failed together do not come back together.
//!
//! Following a leader hint is not a retry in this sense (the node answered, at once, with
//! where to go) and costs nothing here; the attempt count still bounds it.
//!
//! This module does not decide *whether* a failure may be retried (`outcome.rs` does), nor
//! the deadline of a request.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Retries earned per request, in thousandths of a retry (0.1).
pub const RETRY_MILLIS_PER_REQUEST: u64 = 100;
/// Retries the budget earns a second regardless of traffic.
pub const RETRIES_PER_S_MIN: u64 = 10;
/// The most retries the budget holds (also its start: a new client may retry at once). Room
/// for a failover: every request in flight to a node that just died needs a retry or two at
/// once (64 concurrent writers spent a budget of 100 in one leader hand-off).
pub const RETRIES_MAX: u64 = 1_000;
const MILLIS: u64 = 1000;

/// A token bucket of retries, shared by every request of one client.
#[derive(Debug)]
pub struct RetryBudget {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Thousandths of a retry.
    tokens_milli: u64,
    refilled: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(Instant::now())
    }
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        RetryBudget {
            bucket: Mutex::new(Bucket {
                tokens_milli: RETRIES_MAX * MILLIS,
                refilled: now,
            }),
        }
    }

    /// A request began.
    pub fn on_request(&self) {
        if let Ok(mut b) = self.bucket.lock() {
            b.tokens_milli = (b.tokens_milli + RETRY_MILLIS_PER_REQUEST).min(RETRIES_MAX * MILLIS);
        }
    }

    /// Takes one retry from the budget at `now`; false when it is empty.
    pub fn try_retry(&self, now: Instant) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return true;
        };
        // Whole thousandths only; the remainder of the time stays for the next refill.
        let elapsed_ms = now.saturating_duration_since(b.refilled).as_millis();
        let earned = u64::try_from(elapsed_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(RETRIES_PER_S_MIN);
        b.tokens_milli = b
            .tokens_milli
            .saturating_add(earned)
            .min(RETRIES_MAX * MILLIS);
        b.refilled += Duration::from_millis(u64::try_from(elapsed_ms).unwrap_or(u64::MAX));
        if b.tokens_milli >= MILLIS {
            b.tokens_milli -= MILLIS;
            true
        } else {
            false
        }
    }
}

/// A pause drawn uniformly from `[0, cap]`.
pub fn full_jitter(cap: Duration) -> Duration {
    if cap.is_zero() {
        return cap;
    }
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_retries_is_cut_at_the_budget() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        let granted = (0..1000).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted as u64, RETRIES_MAX);
    }

    #[test]
    fn requests_earn_a_tenth_of_a_retry_each() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        while b.try_retry(t0) {}
        for _ in 0..1000 {
            b.on_request();
        }
        let granted = (0..1000).filter(|_| b.try_retry(t0)).count();
        assert_eq!(granted, 100, "1,000 requests earn 100 retries");
    }

    #[test]
    fn the_budget_refills_slowly_with_time_and_is_capped() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        while b.try_retry(t0) {}
        let t1 = t0 + Duration::from_millis(500);
        let granted = (0..1000).filter(|_| b.try_retry(t1)).count();
        assert_eq!(granted, 5, "10 a second");
        let t2 = t1 + Duration::from_secs(3600);
        let granted = (0..1000).filter(|_| b.try_retry(t2)).count();
        assert_eq!(granted as u64, RETRIES_MAX, "capped");
    }

    #[test]
    fn over_a_long_run_retries_stay_near_a_tenth_of_requests() {
        let t0 = Instant::now();
        let b = RetryBudget::new(t0);
        // 1,000 requests a second for 60 s, every one failing and wanting a retry.
        let (mut requests, mut retries) = (0u64, 0u64);
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            b.on_request();
            requests += 1;
            if b.try_retry(now) {
                retries += 1;
            }
        }
        let bound =
            requests * RETRY_MILLIS_PER_REQUEST / MILLIS + 60 * RETRIES_PER_S_MIN + RETRIES_MAX;
        assert!(
            retries <= bound,
            "{retries} retries for {requests} requests"
        );
        assert!(
            retries + 2 >= bound,
            "the budget is spent, not lost: {retries} of {bound}"
        );
    }

    #[test]
    fn jitter_stays_within_its_cap_and_spreads() {
        let cap = Duration::from_millis(100);
        let pauses: Vec<Duration> = (0..1000).map(|_| full_jitter(cap)).collect();
        assert!(pauses.iter().all(|p| *p <= cap));
        let below_half = pauses.iter().filter(|p| **p < cap / 2).count();
        assert!(
            (300..=700).contains(&below_half),
            "{below_half} of 1000 below half"
        );
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }
}
