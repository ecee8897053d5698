//! The harness's own checkers: the set (no acknowledged add lost, nothing unexpected),
//! operation stats (ok / fail / info per function), and availability (the longest stretch
//! with no successful operation, overall and per fault kind).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::nemesis::Applied;
use crate::history::{Event, EventType, Function};

fn fname(f: &Function) -> String {
    match f {
        Function::Read => "read".into(),
        Function::Write => "write".into(),
        Function::Cas => "cas".into(),
        Function::Other(s) => s.clone(),
    }
}

/// Completions per function and outcome.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Stats {
    pub by_function: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

pub fn stats(events: &[Event]) -> Stats {
    let mut s = Stats::default();
    for e in events {
        let outcome = match e.kind {
            EventType::Invoke => continue,
            EventType::Ok => {
                s.ok += 1;
                "ok"
            }
            EventType::Fail => {
                s.fail += 1;
                "fail"
            }
            EventType::Info => {
                s.info += 1;
                "info"
            }
        };
        *s.by_function
            .entry(fname(&e.f))
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
    s
}

/// Longest gaps between successful completions.
#[derive(Debug, Serialize, Clone)]
pub struct Availability {
    pub longest_gap_ms: f64,
    pub longest_gap_start_ms: f64,
    /// Per fault kind: the longest gap overlapping a fault of that kind.
    pub longest_gap_during_ms: BTreeMap<String, f64>,
}

pub fn availability(events: &[Event], faults: &[Applied], end_ns: u64) -> Availability {
    let mut oks: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == EventType::Ok && e.time <= end_ns)
        .map(|e| e.time)
        .collect();
    oks.insert(0, 0);
    oks.push(end_ns);
    let gaps: Vec<(u64, u64)> = oks.windows(2).map(|w| (w[0], w[1])).collect();
    let (mut best, mut best_start) = (0u64, 0u64);
    for &(a, b) in &gaps {
        if b - a > best {
            best = b - a;
            best_start = a;
        }
    }
    let mut during: BTreeMap<String, f64> = BTreeMap::new();
    for f in faults {
        let (fs, fe) = (f.start_ns, f.end_ns.unwrap_or(end_ns));
        let worst = gaps
            .iter()
            .filter(|(a, b)| *a < fe && *b > fs)
            .map(|(a, b)| b - a)
            .max()
            .unwrap_or(0);
        let slot = during.entry(f.kind.name().to_string()).or_insert(0.0);
        *slot = slot.max(worst as f64 / 1e6);
    }
    Availability {
        longest_gap_ms: best as f64 / 1e6,
        longest_gap_start_ms: best_start as f64 / 1e6,
        longest_gap_during_ms: during,
    }
}

/// The set checker's result.
#[derive(Debug, Serialize, Clone)]
pub struct SetResult {
    pub valid: bool,
    pub acknowledged: usize,
    /// Adds with an unknown outcome (allowed to be present or absent).
    pub unknown: usize,
    pub read: usize,
    /// Acknowledged but missing from the final read.
    pub lost: Vec<u64>,
    /// Present although never attempted, or attempted and certainly failed.
    pub unexpected: Vec<u64>,
    /// Unknown-outcome adds that turned out present.
    pub recovered: usize,
}

pub fn check_set(events: &[Event], final_read: &[u64]) -> SetResult {
    let mut outcome: HashMap<u64, EventType> = HashMap::new();
    for e in events {
        if fname(&e.f) != "add" || e.kind == EventType::Invoke {
            continue;
        }
        if let Some(v) = e.value.as_u64() {
            outcome.insert(v, e.kind);
        }
    }
    let read: BTreeSet<u64> = final_read.iter().copied().collect();
    let acked: BTreeSet<u64> = outcome
        .iter()
        .filter(|(_, k)| **k == EventType::Ok)
        .map(|(v, _)| *v)
        .collect();
    let unknown: BTreeSet<u64> = outcome
        .iter()
        .filter(|(_, k)| **k == EventType::Info)
        .map(|(v, _)| *v)
        .collect();
    let lost: Vec<u64> = acked.difference(&read).copied().collect();
    let unexpected: Vec<u64> = read
        .iter()
        .filter(|v| !acked.contains(v) && !unknown.contains(v))
        .copied()
        .collect();
    SetResult {
        valid: lost.is_empty() && unexpected.is_empty(),
        acknowledged: acked.len(),
        unknown: unknown.len(),
        read: read.len(),
        recovered: unknown.intersection(&read).count(),
        lost,
        unexpected,
    }
}
