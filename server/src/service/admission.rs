//! Admission of client requests: by count, by class and by time.
//!
//! Every client request takes a [`Permit`] before it does any work and holds it until it is
//! answered. Permits are bounded by an adaptive limit ([`Limit`]) that never exceeds the hard
//! ceiling `--inflight-requests-max`. A request that finds the limit reached waits in a bounded
//! queue, served in [`Class`] order (writes first, scans and backups last; first come, first
//! served within a class), and is refused once it has waited `--queue-time-max-ms`, so the node
//! answers overload by refusing early instead of queueing work nobody will wait for.
//!
//! Invariants:
//! - `in_flight <= ceiling`, and `in_flight < limit` holds whenever a request waits only
//!   transiently: every change of `in_flight` or of the limit hands free permits to waiters
//!   (highest class first) before the lock is released.
//! - The wait queue holds at most `queue_max` requests. A full queue refuses at once; a request
//!   of a higher class arriving at a full queue takes the place of the newest waiter of the
//!   lowest class below it, which is refused at once.
//! - A refusal happens before any work: nothing was proposed, so it is a definite failure
//!   (`RESOURCE_EXHAUSTED`, kind `overloaded`) and carries a retry-after hint.
//! - A request whose own deadline (`grpc-timeout`) leaves no time to wait and be served is
//!   refused at once; one whose deadline comes while waiting is refused then.
//! - A waiter that goes away (its caller hung up) leaves the queue, and a permit granted to it
//!   in that instant is returned: no permit is ever lost.
//!
//! The adaptive limit grows by one per window of completions while the mean service time
//! (admission to answer) stays near the lowest mean seen, and shrinks by a tenth when it rises
//! beyond that. Queue time is deliberately not fed back into the limit: under overload requests
//! always wait, and shrinking the limit then would only refuse more of what the node can do;
//! the queue-time bound alone keeps waiting short.
//!
//! It does not see Raft traffic (its own service), and has no class yet for lease or health
//! requests (they would rank above writes: see [`Class`]). It does not budget client retries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{Histogram, IntCounterVec, IntGauge};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The limit a node starts with (then adapted), unless the ceiling is lower.
pub const LIMIT_INITIAL: usize = 1024;
/// The limit never shrinks below this (or the ceiling, if lower). High on purpose: Raft
/// commits writes in groups, so a node finishes more the more it has in flight, and a noisy
/// service time (a busy 2-core machine) once drove a floor of 8 down to where it cost 40 % of
/// capacity. The queue-time limit, not this, is what refuses the excess.
pub const LIMIT_FLOOR: usize = 256;
/// The wait queue holds at least this many requests (else as many as the ceiling).
pub const QUEUE_MAX_MIN: usize = 1024;
/// Completions per adjustment window at least (a window is otherwise one limit's worth).
const WINDOW_COMPLETIONS_MIN: usize = 16;
/// Service time counts as "near the lowest seen" up to this factor of it ...
const LATENCY_TOLERANCE_FACTOR: u32 = 2;
/// ... or up to the lowest seen plus this fraction of the queue-time limit, whichever is more
/// (group commit makes service time grow with concurrency long before throughput stops
/// growing, so a factor alone would hold the limit far below what the node finishes).
const LATENCY_SLACK_OF_QUEUE_TIME: u32 = 2;
/// Bounds of the retry-after hint.
const RETRY_AFTER_MIN: Duration = Duration::from_millis(10);
const RETRY_AFTER_MAX: Duration = Duration::from_millis(2_000);

/// Request classes, in the order permits are handed out. A class for lease renewals and health
/// probes would come before `Write`; no such request passes through here yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Puts, deletes, compare-and-swaps.
    Write = 0,
    LinearizableRead = 1,
    SerializableRead = 2,
    /// Scans and backups.
    Bulk = 3,
}

const CLASSES: usize = 4;

impl Class {
    pub const ALL: [Class; CLASSES] = [
        Class::Write,
        Class::LinearizableRead,
        Class::SerializableRead,
        Class::Bulk,
    ];

    /// The `class` label of the admission metrics.
    pub fn label(self) -> &'static str {
        match self {
            Class::Write => "write",
            Class::LinearizableRead => "linearizable_read",
            Class::SerializableRead => "serializable_read",
            Class::Bulk => "bulk",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It waited `--queue-time-max-ms` without getting a permit.
    QueueTime,
    /// The wait queue was full (on arrival, or a higher class took its place).
    QueueFull,
    /// The caller's deadline left no time to wait and be served, or passed before proposing.
    Deadline,
    /// Waiting is off (`--queue-time-max-ms 0`) and the in-flight limit was reached.
    Ceiling,
}

impl Reason {
    /// The `reason` label of `ringkv_requests_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::QueueTime => "queue_time",
            Reason::QueueFull => "queue_full",
            Reason::Deadline => "deadline",
            Reason::Ceiling => "ceiling",
        }
    }
}

/// A refused request: nothing of it was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub class: Class,
    pub reason: Reason,
    /// When the caller may try again with a fair chance.
    pub retry_after: Duration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            Reason::QueueTime => "waited queue_time_max_ms for admission",
            Reason::QueueFull => "the admission queue is full",
            Reason::Deadline => "the request's deadline leaves no time to serve it",
            Reason::Ceiling => "too many requests in flight and waiting is off",
        };
        write!(
            f,
            "{} request refused: {why}; retry after {} ms",
            self.class.label(),
            self.retry_after.as_millis()
        )
    }
}

/// Settings, from the node's flags.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--inflight-requests-max`: permits never exceed it.
    pub ceiling: usize,
    /// `--queue-time-max-ms`: the longest a request waits for a permit (zero: never waits).
    pub queue_time_max: Duration,
    /// Requests waiting at most.
    pub queue_max: usize,
}

impl Settings {
    /// The settings for `--inflight-requests-max` and `--queue-time-max-ms`: the wait queue
    /// holds as many requests as may be in flight, and at least [`QUEUE_MAX_MIN`] (the queue
    /// time, not its length, is what bounds waiting).
    pub fn new(ceiling: usize, queue_time_max: Duration) -> Settings {
        Settings {
            ceiling,
            queue_time_max,
            queue_max: ceiling.max(QUEUE_MAX_MIN),
        }
    }
}

/// Metric handles the admission records into (registered by `crate::metrics`).
#[derive(Clone)]
pub struct Observers {
    pub admitted: IntCounterVec,
    pub rejected: IntCounterVec,
    pub queue_seconds: Histogram,
    pub limit: IntGauge,
}

/// The adaptive in-flight limit (pure: the caller measures time).
#[derive(Debug, Clone)]
pub struct Limit {
    current: usize,
    floor: usize,
    ceiling: usize,
    slack: Duration,
    /// Lowest window mean of service time seen.
    lowest: Option<Duration>,
    window_count: usize,
    window_sum: Duration,
    /// Whether some request found the limit reached during the window.
    window_saturated: bool,
}

impl Limit {
    pub fn new(ceiling: usize, queue_time_max: Duration) -> Limit {
        let ceiling = ceiling.max(1);
        Limit {
            current: LIMIT_INITIAL.min(ceiling),
            floor: LIMIT_FLOOR.min(ceiling),
            ceiling,
            slack: queue_time_max / LATENCY_SLACK_OF_QUEUE_TIME,
            lowest: None,
            window_count: 0,
            window_sum: Duration::ZERO,
            window_saturated: false,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The lowest window mean of service time seen (zero before the first window).
    pub fn lowest(&self) -> Duration {
        self.lowest.unwrap_or_default()
    }

    /// A request found the limit reached (more would have been admitted under a higher one).
    pub fn saturated(&mut self) {
        self.window_saturated = true;
    }

    /// Service time above which the limit shrinks.
    fn threshold(&self, lowest: Duration) -> Duration {
        (lowest * LATENCY_TOLERANCE_FACTOR).max(lowest + self.slack)
    }

    /// Records one request's service time; at the end of a window adjusts the limit and returns
    /// true when it changed.
    pub fn observe(&mut self, service: Duration) -> bool {
        self.window_count += 1;
        self.window_sum += service;
        if self.window_count < self.current.max(WINDOW_COMPLETIONS_MIN) {
            return false;
        }
        let mean = self.window_sum / self.window_count as u32;
        let lowest = self.lowest.map_or(mean, |l| l.min(mean));
        self.lowest = Some(lowest);
        let before = self.current;
        if mean > self.threshold(lowest) {
            self.current = (self.current - (self.current / 10).max(1)).max(self.floor);
        } else if self.window_saturated {
            self.current = (self.current + 1).min(self.ceiling);
        }
        self.window_count = 0;
        self.window_sum = Duration::ZERO;
        self.window_saturated = false;
        self.current != before
    }
}

enum Grant {
    Admitted,
    /// Displaced from a full queue by a request of a higher class.
    Shed,
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<Grant>,
}

/// The queue and counts (pure: no clock, no metrics).
struct State {
    in_flight: usize,
    waiting: usize,
    queues: [VecDeque<Waiter>; CLASSES],
    next_id: u64,
    limit: Limit,
}

enum Enqueued {
    Waiting(u64, oneshot::Receiver<Grant>),
    Full,
}

impl State {
    fn new(settings: &Settings) -> State {
        State {
            in_flight: 0,
            waiting: 0,
            queues: Default::default(),
            next_id: 0,
            limit: Limit::new(settings.ceiling, settings.queue_time_max),
        }
    }

    /// Takes a permit if one is free (no one waits then, see the invariants).
    fn try_admit(&mut self) -> bool {
        if self.in_flight < self.limit.current() && self.waiting == 0 {
            self.in_flight += 1;
            return true;
        }
        self.limit.saturated();
        false
    }

    /// Queues a request of `class`; a full queue displaces the newest waiter of the lowest
    /// class below `class`, if any.
    fn enqueue(&mut self, class: Class, queue_max: usize) -> Enqueued {
        if self.waiting >= queue_max {
            let lower = (class.index() + 1..CLASSES)
                .rev()
                .find(|&c| !self.queues[c].is_empty());
            let Some(victim) = lower.and_then(|c| self.queues[c].pop_back()) else {
                return Enqueued::Full;
            };
            self.waiting -= 1;
            let _ = victim.grant.send(Grant::Shed);
        }
        let (grant, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        self.queues[class.index()].push_back(Waiter { id, grant });
        self.waiting += 1;
        Enqueued::Waiting(id, rx)
    }

    /// Takes waiter `id` out of the queue; false when it is no longer there (granted or shed).
    fn remove(&mut self, class: Class, id: u64) -> bool {
        let q = &mut self.queues[class.index()];
        match q.iter().position(|w| w.id == id) {
            Some(i) => {
                q.remove(i);
                self.waiting -= 1;
                true
            }
            None => false,
        }
    }

    /// Hands free permits to waiters, highest class first.
    fn dispatch(&mut self) {
        while self.in_flight < self.limit.current() {
            let Some(w) = self.queues.iter_mut().find_map(|q| q.pop_front()) else {
                return;
            };
            self.waiting -= 1;
            if w.grant.send(Grant::Admitted).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// A permit came back after `service`.
    fn release(&mut self, service: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.limit.observe(service);
        self.dispatch();
    }

    /// When a refused caller may retry: the queue time, plus roughly how long the requests
    /// waiting now take to get through.
    fn retry_after(&self, queue_time_max: Duration) -> Duration {
        let drain = self.limit.lowest() * (self.waiting / self.limit.current().max(1)) as u32;
        (queue_time_max + drain).clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
    }
}

/// The node's admission control (cheap to share behind an `Arc`).
pub struct Admission {
    settings: Settings,
    state: Mutex<State>,
    observers: Option<Observers>,
}

/// The right to run one request; returned when dropped (also when the handler is cancelled).
pub struct Permit {
    admission: Arc<Admission>,
    admitted_at: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let service = self.admitted_at.elapsed();
        let mut s = self.admission.lock();
        s.release(service);
        let limit = s.limit.current();
        drop(s);
        if let Some(o) = &self.admission.observers {
            o.limit.set(limit as i64);
        }
    }
}

/// A waiter's place in the queue while its caller waits; leaves it when dropped.
struct Place<'a> {
    admission: &'a Arc<Admission>,
    class: Class,
    id: u64,
    grant: oneshot::Receiver<Grant>,
    armed: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut s = self.admission.lock();
        if !s.remove(self.class, self.id) && matches!(self.grant.try_recv(), Ok(Grant::Admitted)) {
            // Granted in the instant its caller went away: give the permit back.
            s.in_flight = s.in_flight.saturating_sub(1);
            s.dispatch();
        }
    }
}

impl Admission {
    pub fn new(settings: Settings, observers: Option<Observers>) -> Arc<Admission> {
        let state = State::new(&settings);
        if let Some(o) = &observers {
            o.limit.set(state.limit.current() as i64);
        }
        Arc::new(Admission {
            settings,
            state: Mutex::new(state),
            observers,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every panic-free path; a poisoned lock only means
        // another request panicked, and its counts are still the best there is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The adaptive limit now.
    pub fn limit(&self) -> usize {
        self.lock().limit.current()
    }

    /// Waits for a permit for a request of `class` whose caller gives up at `deadline`.
    pub async fn acquire(
        self: &Arc<Self>,
        class: Class,
        deadline: Option<Instant>,
    ) -> Result<Permit, Refusal> {
        let arrived = Instant::now();
        let (id, grant, until, bound_by_deadline) = {
            let mut s = self.lock();
            if deadline.is_some_and(|d| d <= arrived) {
                return Err(self.refused(&s, class, Reason::Deadline));
            }
            if s.try_admit() {
                drop(s);
                return Ok(self.admitted(class, arrived));
            }
            if self.settings.queue_time_max.is_zero() {
                return Err(self.refused(&s, class, Reason::Ceiling));
            }
            // Wait only as long as still leaves the caller time to be served.
            let by_queue = arrived + self.settings.queue_time_max;
            let by_deadline = deadline.map(|d| d.checked_sub(s.limit.lowest()).unwrap_or(d));
            let (until, bound_by_deadline) = match by_deadline {
                Some(d) if d < by_queue => (d, true),
                _ => (by_queue, false),
            };
            if until <= arrived {
                return Err(self.refused(&s, class, Reason::Deadline));
            }
            match s.enqueue(class, self.settings.queue_max) {
                Enqueued::Full => return Err(self.refused(&s, class, Reason::QueueFull)),
                Enqueued::Waiting(id, grant) => (id, grant, until, bound_by_deadline),
            }
        };
        let mut place = Place {
            admission: self,
            class,
            id,
            grant,
            armed: true,
        };
        let granted = match tokio::time::timeout_at(until, &mut place.grant).await {
            Ok(Ok(g)) => Some(g),
            // The sender went away without a grant: only if the admission itself did.
            Ok(Err(_)) => Some(Grant::Shed),
            Err(_) => None,
        };
        let granted = match granted {
            Some(g) => g,
            None => {
                let mut s = self.lock();
                if s.remove(class, id) {
                    place.armed = false;
                    let reason = if bound_by_deadline {
                        Reason::Deadline
                    } else {
                        Reason::QueueTime
                    };
                    return Err(self.refused(&s, class, reason));
                }
                // Granted or shed just as the time ran out: the answer is in the channel.
                match place.grant.try_recv() {
                    Ok(Grant::Admitted) => Grant::Admitted,
                    _ => Grant::Shed,
                }
            }
        };
        place.armed = false;
        match granted {
            Grant::Admitted => Ok(self.admitted(class, arrived)),
            Grant::Shed => {
                let s = self.lock();
                Err(self.refused(&s, class, Reason::QueueFull))
            }
        }
    }

    /// Refuses a request already admitted whose deadline passed before it could propose.
    pub fn refuse_late(&self, class: Class) -> Refusal {
        let s = self.lock();
        self.refused(&s, class, Reason::Deadline)
    }

    fn admitted(self: &Arc<Self>, class: Class, arrived: Instant) -> Permit {
        let now = Instant::now();
        if let Some(o) = &self.observers {
            o.admitted.with_label_values(&[class.label()]).inc();
            o.queue_seconds
                .observe(now.duration_since(arrived).as_secs_f64());
        }
        Permit {
            admission: self.clone(),
            admitted_at: now,
        }
    }

    fn refused(&self, s: &State, class: Class, reason: Reason) -> Refusal {
        if let Some(o) = &self.observers {
            o.rejected
                .with_label_values(&[class.label(), reason.label()])
                .inc();
        }
        Refusal {
            class,
            reason,
            retry_after: s.retry_after(self.settings.queue_time_max),
        }
    }
}

/// The caller's deadline from its `grpc-timeout` header, if it sent a valid one.
pub fn deadline_of(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    now.checked_add(parse_grpc_timeout(value)?)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(ceiling: usize, queue_time_max_ms: u64, queue_max: usize) -> Arc<Admission> {
        Admission::new(
            Settings {
                ceiling,
                queue_time_max: Duration::from_millis(queue_time_max_ms),
                queue_max,
            },
            None,
        )
    }

    fn waiting(a: &Admission) -> usize {
        a.lock().waiting
    }

    /// Lets spawned tasks run until `a` has `n` waiters (bounded: the test fails otherwise).
    async fn until_waiting(a: &Admission, n: usize) {
        for _ in 0..1000 {
            if waiting(a) == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("expected {n} waiters, have {}", waiting(a));
    }

    #[tokio::test(start_paused = true)]
    async fn permits_go_to_waiters_in_class_order() {
        let a = admission(1, 1_000, 16);
        let held = a.acquire(Class::Bulk, None).await.expect("free permit");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Arrival order is the reverse of the class order.
        for (i, class) in Class::ALL.into_iter().rev().enumerate() {
            let (a2, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = a2.acquire(class, None).await;
                order.lock().expect("order").push(class);
                drop(permit);
            }));
            until_waiting(&a, i + 1).await;
        }
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().expect("order"), Class::ALL.to_vec());
        assert_eq!(a.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_refused_once_it_waited_the_queue_time() {
        let a = admission(1, 50, 16);
        let _held = a.acquire(Class::Write, None).await.expect("free permit");
        let started = Instant::now();
        let r = a.acquire(Class::Write, None).await.err().expect("refused");
        assert_eq!(r.reason, Reason::QueueTime);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert!(r.retry_after >= RETRY_AFTER_MIN, "{r:?}");
        assert_eq!(waiting(&a), 0);
        assert_eq!(a.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_admitted_before_the_queue_time_runs_out_is_served() {
        let a = admission(1, 50, 16);
        let held = a.acquire(Class::Write, None).await.expect("free permit");
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire(Class::Write, None).await.is_ok() });
        until_waiting(&a, 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(held);
        assert!(waiter.await.expect("task"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let a = admission(1, 1_000, 2);
        let _held = a.acquire(Class::Write, None).await.expect("free permit");
        let mut tasks = Vec::new();
        for i in 0..2 {
            let a2 = a.clone();
            tasks.push(tokio::spawn(async move {
                a2.acquire(Class::Write, None).await.err()
            }));
            until_waiting(&a, i + 1).await;
        }
        let started = Instant::now();
        let r = a.acquire(Class::Write, None).await.err().expect("refused");
        assert_eq!(r.reason, Reason::QueueFull);
        assert_eq!(started.elapsed(), Duration::ZERO);
        for t in tasks {
            let r = t.await.expect("task").expect("refused later");
            assert_eq!(r.reason, Reason::QueueTime);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_class_displaces_the_newest_lower_waiter_from_a_full_queue() {
        let a = admission(1, 1_000, 2);
        let held = a.acquire(Class::Write, None).await.expect("free permit");
        let mut tasks = Vec::new();
        for (i, class) in [Class::Bulk, Class::Bulk].into_iter().enumerate() {
            let a2 = a.clone();
            tasks.push(tokio::spawn(async move {
                a2.acquire(class, None).await.err().map(|r| r.reason)
            }));
            until_waiting(&a, i + 1).await;
        }
        let a2 = a.clone();
        let write = tokio::spawn(async move { a2.acquire(Class::Write, None).await.is_ok() });
        // The newest bulk waiter is refused at once, without waiting out the queue time.
        let newest = tasks.pop().expect("task");
        let started = Instant::now();
        assert_eq!(newest.await.expect("task"), Some(Reason::QueueFull));
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop(held);
        assert!(write.await.expect("task"), "the write is admitted first");
        // The oldest bulk waiter got the permit after the write.
        assert_eq!(tasks.pop().expect("task").await.expect("task"), None);
        // Equal classes never displace each other.
        let _held = a.acquire(Class::Write, None).await.expect("free permit");
        let mut tasks = Vec::new();
        for i in 0..2 {
            let a2 = a.clone();
            tasks.push(tokio::spawn(async move {
                a2.acquire(Class::Write, None).await.err().map(|r| r.reason)
            }));
            until_waiting(&a, i + 1).await;
        }
        let r = a.acquire(Class::Write, None).await.err().expect("refused");
        assert_eq!(r.reason, Reason::QueueFull);
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_bounds_the_wait() {
        let a = admission(1, 1_000, 16);
        // A passed deadline is refused at once, even with a permit free.
        let r = a.acquire(Class::Write, Some(Instant::now())).await.err();
        assert_eq!(r.map(|r| r.reason), Some(Reason::Deadline));
        assert_eq!(a.in_flight(), 0);
        let _held = a.acquire(Class::Write, None).await.expect("free permit");
        let started = Instant::now();
        let deadline = started + Duration::from_millis(20);
        let r = a.acquire(Class::Write, Some(deadline)).await.err();
        assert_eq!(r.map(|r| r.reason), Some(Reason::Deadline));
        assert!(started.elapsed() <= Duration::from_millis(20));
        assert_eq!(waiting(&a), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_queue_time_the_limit_refuses_at_once() {
        let a = admission(1, 0, 16);
        let _held = a.acquire(Class::Write, None).await.expect("free permit");
        let r = a.acquire(Class::Write, None).await.err();
        assert_eq!(r.map(|r| r.reason), Some(Reason::Ceiling));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_leaves_the_queue_and_loses_no_permit() {
        let a = admission(1, 1_000, 16);
        let held = a.acquire(Class::Write, None).await.expect("free permit");
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire(Class::Write, None).await.is_ok() });
        until_waiting(&a, 1).await;
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(waiting(&a), 0);
        drop(held);
        assert_eq!(a.in_flight(), 0);
        // Granted, then dropped before its caller looked: the permit comes back.
        let held = a.acquire(Class::Write, None).await.expect("free permit");
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire(Class::Write, None).await.is_ok() });
        until_waiting(&a, 1).await;
        {
            let mut s = a.lock();
            s.in_flight -= 1;
            s.dispatch();
            assert_eq!(s.in_flight, 1, "granted to the waiter");
        }
        std::mem::forget(held);
        waiter.abort();
        let _ = waiter.await;
        // Aborted before it ran again: its permit went back (or it ran and dropped it).
        assert_eq!(a.in_flight(), 0);
    }

    fn window(limit: &mut Limit, service: Duration, saturated: bool) -> bool {
        let n = limit.current().max(WINDOW_COMPLETIONS_MIN);
        let mut changed = false;
        for _ in 0..n {
            if saturated {
                limit.saturated();
            }
            changed |= limit.observe(service);
        }
        changed
    }

    #[test]
    fn the_limit_grows_by_one_per_saturated_window_while_service_time_stays_low() {
        let ms = Duration::from_millis;
        let mut l = Limit::new(4096, ms(50));
        assert_eq!(l.current(), LIMIT_INITIAL);
        assert!(window(&mut l, ms(2), true));
        assert_eq!(l.current(), LIMIT_INITIAL + 1);
        assert_eq!(l.lowest(), ms(2));
        // Within the slack (lowest + queue time / 2): still growing.
        window(&mut l, ms(20), true);
        assert_eq!(l.current(), LIMIT_INITIAL + 2);
        // Not saturated: nothing to gain from more permits.
        assert!(!window(&mut l, ms(2), false));
        assert_eq!(l.current(), LIMIT_INITIAL + 2);
        // A partial window changes nothing.
        assert!(!l.observe(ms(500)));
    }

    #[test]
    fn the_limit_shrinks_by_a_tenth_when_service_time_rises_and_stays_in_bounds() {
        let ms = Duration::from_millis;
        let mut l = Limit::new(4096, ms(50));
        window(&mut l, ms(2), true);
        let before = l.current();
        // Above max(2 × 2 ms, 2 ms + 25 ms).
        window(&mut l, ms(28), true);
        assert_eq!(l.current(), before - before / 10);
        for _ in 0..100 {
            window(&mut l, ms(100), true);
        }
        assert_eq!(l.current(), LIMIT_FLOOR);
        let mut l = Limit::new(3, ms(50));
        assert_eq!(l.current(), 3);
        for _ in 0..10 {
            window(&mut l, ms(1), true);
        }
        assert_eq!(l.current(), 3, "never above the ceiling");
        window(&mut l, ms(100), true);
        assert_eq!(
            l.current(),
            3,
            "the floor is the ceiling when that is lower"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_limit_admits_waiters_and_a_lowered_one_holds_them() {
        let a = admission(64, 1_000, 64);
        a.lock().limit.current = 1;
        let held = a.acquire(Class::Write, None).await.expect("free permit");
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire(Class::Write, None).await.is_ok() });
        until_waiting(&a, 1).await;
        {
            let mut s = a.lock();
            s.limit.current = 2;
            s.dispatch();
        }
        assert!(waiter.await.expect("task"));
        drop(held);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "12x", "-1m", "1.5S", "१m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
