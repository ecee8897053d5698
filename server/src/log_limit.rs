//! Repeated warnings and errors, limited: an operator reading a node's log during an incident
//! sees each kind of trouble, not one line per retry.
//!
//! Each WARN or ERROR callsite (one `warn!`/`error!` in the code, ours or a dependency's) may
//! log [`BURST`] events per [`WINDOW`]; further events from it in that window are dropped and
//! counted. Once the window is over, one summary line says how many were dropped and what the
//! first dropped one said (a background thread writes it, so a callsite that went quiet still
//! gets its summary). Without this, openraft logs two warnings per failed replication attempt
//! (about 33,000 lines in 20 s with one peer down under a light write load).
//!
//! Invariants: INFO and below pass untouched (they are filtered by level, not by rate); the
//! first events of every callsite in every window pass, so a new kind of trouble is always
//! seen at once; the count of what was dropped is never lost while the process runs; the
//! table holds one entry per callsite that warned, so it is bounded by the code, not by load.
//!
//! It does not merge events from different callsites, nor tell apart events of one callsite
//! by their fields (a callsite that warns about two peers shares one budget); the peer
//! transport logs each peer's reachability itself (`network::peer_health`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Events a callsite may log per window before the rest are counted instead.
pub const BURST: u32 = 3;
/// How long a callsite's budget lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often the summary thread looks for windows that ended.
const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// The target of summary lines; never limited themselves.
pub const SUMMARY_TARGET: &str = "ringkv::log_limit";
/// A dropped event's message is kept for the summary up to this many bytes.
const SAMPLE_BYTES_MAX: usize = 300;

/// Dropped events of one callsite in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `module::path:line` of the callsite.
    pub callsite: String,
    pub level: Level,
    pub dropped: u64,
    /// The message of the first event dropped.
    pub sample: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    passed: u32,
    dropped: u64,
    sample: String,
    callsite: String,
    level: Level,
}

/// The rate limit itself: pure, driven by the caller's clock.
#[derive(Debug)]
pub struct RepeatLimiter<K> {
    windows: HashMap<K, Window>,
}

impl<K> Default for RepeatLimiter<K> {
    fn default() -> Self {
        RepeatLimiter {
            windows: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> RepeatLimiter<K> {
    /// Whether an event of `key` at `now` is logged; if not, it is counted (`sample` is asked
    /// for only when the event is the first dropped in its window). When `key`'s window is
    /// over, its drops are moved to `ended` and a new window starts with this event.
    pub fn admit(
        &mut self,
        key: K,
        callsite: impl FnOnce() -> (String, Level),
        now: Instant,
        sample: impl FnOnce() -> String,
        ended: &mut Vec<Summary>,
    ) -> bool {
        let w = self.windows.entry(key).or_insert_with(|| {
            let (callsite, level) = callsite();
            Window {
                started: now,
                passed: 0,
                dropped: 0,
                sample: String::new(),
                callsite,
                level,
            }
        });
        if now.duration_since(w.started) >= WINDOW {
            if let Some(s) = take_summary(w) {
                ended.push(s);
            }
            w.started = now;
            w.passed = 0;
        }
        if w.passed < BURST {
            w.passed += 1;
            return true;
        }
        if w.dropped == 0 {
            w.sample = sample();
        }
        w.dropped += 1;
        false
    }

    /// Summaries of the windows over by `now` that dropped something.
    pub fn ended(&mut self, now: Instant) -> Vec<Summary> {
        self.windows
            .values_mut()
            .filter(|w| now.duration_since(w.started) >= WINDOW)
            .filter_map(take_summary)
            .collect()
    }
}

fn take_summary(w: &mut Window) -> Option<Summary> {
    if w.dropped == 0 {
        return None;
    }
    let s = Summary {
        callsite: w.callsite.clone(),
        level: w.level,
        dropped: w.dropped,
        sample: std::mem::take(&mut w.sample),
    };
    w.dropped = 0;
    Some(s)
}

/// The layer that applies a [`RepeatLimiter`] to every WARN and ERROR event.
#[derive(Clone, Default)]
pub struct RepeatLimitLayer {
    state: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    limiter: RepeatLimiter<Identifier>,
    /// Summaries of windows that ended when an event arrived, waiting for the thread.
    ended: Vec<Summary>,
}

impl RepeatLimitLayer {
    /// Starts the thread that logs summaries every few seconds, for as long as the process
    /// runs.
    pub fn spawn_summaries(&self) -> std::io::Result<()> {
        let state = self.state.clone();
        std::thread::Builder::new()
            .name("ringkv-log-limit".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SUMMARY_EVERY);
                    let due = match state.lock() {
                        Ok(mut s) => {
                            let mut due = std::mem::take(&mut s.ended);
                            due.extend(s.limiter.ended(Instant::now()));
                            due
                        }
                        Err(_) => return,
                    };
                    for s in due {
                        log_summary(&s);
                    }
                }
            })
            .map(|_| ())
    }
}

fn log_summary(s: &Summary) {
    let window_s = WINDOW.as_secs();
    if s.level == Level::ERROR {
        tracing::error!(target: SUMMARY_TARGET, callsite = %s.callsite, dropped = s.dropped,
            first = %s.sample, "{} more like this in the last {window_s} s, not logged", s.dropped);
    } else {
        tracing::warn!(target: SUMMARY_TARGET, callsite = %s.callsite, dropped = s.dropped,
            first = %s.sample, "{} more like this in the last {window_s} s, not logged", s.dropped);
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimitLayer {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        let Shared { limiter, ended } = &mut *s;
        limiter.admit(
            meta.callsite(),
            || {
                let at = format!(
                    "{}:{}",
                    meta.module_path().unwrap_or(meta.target()),
                    meta.line().unwrap_or(0)
                );
                (at, *meta.level())
            },
            Instant::now(),
            || message_of(event),
            ended,
        )
    }
}

/// The event's `message` field (its format string, rendered), cut to [`SAMPLE_BYTES_MAX`].
fn message_of(event: &Event<'_>) -> String {
    struct Message(String);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    let mut m = Message(String::new());
    event.record(&mut m);
    let mut s = m.0;
    if s.len() > SAMPLE_BYTES_MAX {
        let mut cut = SAMPLE_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(
        l: &mut RepeatLimiter<&'static str>,
        site: &'static str,
        now: Instant,
        ended: &mut Vec<Summary>,
    ) -> bool {
        l.admit(
            site,
            || (site.to_string(), Level::WARN),
            now,
            || format!("sample of {site}"),
            ended,
        )
    }
    #[test]
    fn a_callsite_logs_its_burst_then_is_counted_until_its_window_ends() {
        let mut l = RepeatLimiter::default();
        let mut ended = Vec::new();
        let t0 = Instant::now();
        let passed = (0..1000)
            .filter(|i| admit(&mut l, "a", t0 + Duration::from_millis(*i), &mut ended))
            .count();
        assert_eq!(passed, BURST as usize);
        assert!(ended.is_empty());
        assert!(l.ended(t0 + WINDOW - Duration::from_millis(1)).is_empty());
        let due = l.ended(t0 + WINDOW);
        assert_eq!(
            due,
            vec![Summary {
                callsite: "a".into(),
                level: Level::WARN,
                dropped: 1000 - BURST as u64,
                sample: "sample of a".into(),
            }]
        );
        assert!(
            l.ended(t0 + WINDOW * 2).is_empty(),
            "a summary is given once"
        );
    }

    #[test]
    fn callsites_have_budgets_of_their_own() {
        let mut l = RepeatLimiter::default();
        let mut ended = Vec::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            admit(&mut l, "a", t0, &mut ended);
        }
        assert!(admit(&mut l, "b", t0, &mut ended), "b is not silenced by a");
    }

    #[test]
    fn a_new_window_passes_a_new_burst_and_hands_over_the_old_count() {
        let mut l = RepeatLimiter::default();
        let mut ended = Vec::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            admit(&mut l, "a", t0, &mut ended);
        }
        let t1 = t0 + WINDOW + Duration::from_secs(1);
        assert!(admit(&mut l, "a", t1, &mut ended));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].dropped, 10 - BURST as u64);
        let passed = (0..10)
            .filter(|_| admit(&mut l, "a", t1, &mut ended))
            .count();
        assert_eq!(passed, BURST as usize - 1);
    }

    #[test]
    fn a_quiet_window_has_no_summary() {
        let mut l = RepeatLimiter::default();
        let mut ended = Vec::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert!(admit(&mut l, "a", t0, &mut ended));
        }
        assert!(l.ended(t0 + WINDOW).is_empty());
    }
}
