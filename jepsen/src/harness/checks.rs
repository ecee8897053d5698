//! The harness's own checkers: the set (no acknowledged add lost, nothing unexpected),
//! operation stats (ok / fail / info per function), and availability (the longest stretch
//! with no successful operation, overall and per fault kind, and the failover time).
//!
//! **Failover time** (`availability.failover_ms`, [`failover`]): for one fault and one shard,
//! the time from the fault's start to the first acknowledged write (a `write`, a `cas` that
//! swapped, or a set `add`, completed `ok`) on that shard among the writes *invoked at or after
//! the fault's start*. A fault's value is the largest over the shards that had acknowledged
//! writes in the run (unaffected shards add their ordinary latency, so taking all of them only
//! errs on the long side), with the worst shard named; a kind's value is the largest over its
//! faults. The start is the moment the fault was in effect (after the signal was sent or the
//! packet filters were installed), which for a kill, a pause or a partition of a leader is the
//! moment the leader was lost or cut off. It does not matter when
//! the fault ends: a write that first succeeds after the heal still counts from the start. A
//! shard with no such write before the workload ended counts until the workload's end
//! (`unrecovered_shards` says how many). Writes invoked before the fault are left out because
//! their latency is bounded by the client's timeouts, not by the failover; the generator keeps
//! load on every shard independently (`workload`), so a shard's workers are free to invoke new
//! writes as soon as their earlier ones end.

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

/// Longest gaps between successful completions, and failover times.
#[derive(Debug, Serialize, Clone)]
pub struct Availability {
    pub longest_gap_ms: f64,
    pub longest_gap_start_ms: f64,
    /// Per fault kind: the longest gap overlapping a fault of that kind.
    pub longest_gap_during_ms: BTreeMap<String, f64>,
    /// Per fault kind: the longest failover (module note).
    pub failover_ms: BTreeMap<String, f64>,
    /// Per fault, in order: its failover and the worst shard.
    pub failover_by_fault: Vec<FaultFailover>,
}

/// One fault's failover time (module note).
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct FaultFailover {
    pub kind: String,
    pub detail: String,
    pub start_ms: f64,
    /// The largest over the shards.
    pub failover_ms: f64,
    /// The shard with the largest value (none when no shard had writes).
    pub worst_shard: Option<u32>,
    /// Shards without an acknowledged write invoked after the start before the workload ended.
    pub unrecovered_shards: usize,
}

fn is_write(f: &Function) -> bool {
    match f {
        Function::Write | Function::Cas => true,
        Function::Read => false,
        Function::Other(s) => s == "add",
    }
}

/// Failover time per fault and per kind (module note). `shard_of` maps a key to its shard;
/// events must be in time order, one operation in flight per process (as recorded).
pub fn failover(
    events: &[Event],
    faults: &[Applied],
    shard_of: &dyn Fn(&str) -> Option<u32>,
    end_ns: u64,
) -> (BTreeMap<String, f64>, Vec<FaultFailover>) {
    // Acknowledged writes: (invoked, acknowledged, shard).
    let mut invoked: HashMap<u64, u64> = HashMap::new();
    let mut acked: Vec<(u64, u64, u32)> = Vec::new();
    for e in events {
        match e.kind {
            EventType::Invoke => {
                invoked.insert(e.process, e.time);
            }
            kind => {
                let start = invoked.remove(&e.process);
                if kind != EventType::Ok || !is_write(&e.f) || e.time > end_ns {
                    continue;
                }
                if let (Some(start), Some(shard)) = (start, e.key.as_deref().and_then(shard_of)) {
                    acked.push((start, e.time, shard));
                }
            }
        }
    }
    let shards: BTreeSet<u32> = acked.iter().map(|a| a.2).collect();
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_fault = Vec::new();
    for f in faults {
        let s = f.start_ns;
        let mut first: BTreeMap<u32, u64> = BTreeMap::new();
        for &(inv, ack, shard) in &acked {
            if inv >= s {
                let slot = first.entry(shard).or_insert(ack);
                *slot = (*slot).min(ack);
            }
        }
        let mut worst: Option<(u64, u32)> = None;
        let mut unrecovered = 0;
        for &shard in &shards {
            let t = match first.get(&shard) {
                Some(&ack) => ack.saturating_sub(s),
                None => {
                    unrecovered += 1;
                    end_ns.saturating_sub(s)
                }
            };
            if worst.is_none_or(|(w, _)| t > w) {
                worst = Some((t, shard));
            }
        }
        let ms = worst.map_or(0.0, |(t, _)| t as f64 / 1e6);
        let slot = by_kind.entry(f.kind.name().to_string()).or_insert(0.0);
        *slot = slot.max(ms);
        by_fault.push(FaultFailover {
            kind: f.kind.name().to_string(),
            detail: f.detail.clone(),
            start_ms: s as f64 / 1e6,
            failover_ms: ms,
            worst_shard: worst.map(|(_, shard)| shard),
            unrecovered_shards: unrecovered,
        });
    }
    (by_kind, by_fault)
}

pub fn availability(
    events: &[Event],
    faults: &[Applied],
    shard_of: &dyn Fn(&str) -> Option<u32>,
    end_ns: u64,
) -> Availability {
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
    let (failover_ms, failover_by_fault) = failover(events, faults, shard_of, end_ns);
    Availability {
        longest_gap_ms: best as f64 / 1e6,
        longest_gap_start_ms: best_start as f64 / 1e6,
        longest_gap_during_ms: during,
        failover_ms,
        failover_by_fault,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::nemesis::FaultKind;
    use serde_json::Value;

    const MS: u64 = 1_000_000;

    fn ev(process: u64, kind: EventType, f: Function, key: &str, t_ms: u64) -> Event {
        Event {
            process,
            kind,
            f,
            key: Some(key.to_string()),
            value: Value::Null,
            time: t_ms * MS,
        }
    }

    fn fault(kind: FaultKind, start_ms: u64, end_ms: u64) -> Applied {
        Applied {
            kind,
            detail: format!("{} at {start_ms}", kind.name()),
            nodes: vec![1],
            start_ns: start_ms * MS,
            end_ns: Some(end_ms * MS),
        }
    }

    /// Keys `a…` are on shard 0, `b…` on shard 1.
    fn shard_of(k: &str) -> Option<u32> {
        match k.as_bytes().first() {
            Some(b'a') => Some(0),
            Some(b'b') => Some(1),
            _ => None,
        }
    }

    /// A synthetic history: a pause at 1,000 ms stalls shard 0 while shard 1 keeps going.
    /// Shard 1's first write after the start is acknowledged at 1,010 ms, shard 0's at
    /// 1,750 ms, so the pause's failover is 750 ms, on shard 0. The write invoked before the
    /// fault (acknowledged at 1,900 ms), reads, failed and unknown writes are ignored.
    #[test]
    fn failover_is_the_first_ack_of_a_write_invoked_after_the_start_worst_shard() {
        use EventType::{Fail, Info, Invoke, Ok};
        use Function::{Cas, Read, Write};
        let events = vec![
            ev(1, Invoke, Write.clone(), "a1", 990), // invoked before the fault
            ev(2, Invoke, Write.clone(), "b1", 1_001),
            ev(2, Ok, Write.clone(), "b1", 1_010), // shard 1: 10 ms
            ev(3, Invoke, Read.clone(), "a2", 1_020),
            ev(3, Ok, Read.clone(), "a2", 1_030), // a read: not a write
            ev(4, Invoke, Write.clone(), "a2", 1_040),
            ev(4, Fail, Write.clone(), "a2", 1_100), // failed: not acknowledged
            ev(5, Invoke, Cas.clone(), "a1", 1_200),
            ev(5, Info, Cas.clone(), "a1", 1_300), // unknown: not acknowledged
            ev(6, Invoke, Cas.clone(), "a2", 1_400),
            ev(7, Invoke, Function::Other("add".into()), "a3", 1_500),
            ev(6, Ok, Cas.clone(), "a2", 1_800), // shard 0: 800 ms
            ev(7, Ok, Function::Other("add".into()), "a3", 1_750), // shard 0: 750 ms (first)
            ev(1, Ok, Write.clone(), "a1", 1_900), // invoked before: ignored
        ];
        let mut events = events;
        events.sort_by_key(|e| e.time);
        let faults = vec![fault(FaultKind::Pause, 1_000, 1_200)];
        let (by_kind, by_fault) = failover(&events, &faults, &shard_of, 3_000 * MS);
        assert_eq!(by_kind.get("pause"), Some(&750.0));
        assert_eq!(by_fault.len(), 1);
        assert_eq!(by_fault[0].worst_shard, Some(0));
        assert_eq!(by_fault[0].unrecovered_shards, 0);
        // The pause ended at 1,200 ms, before shard 0 recovered: it still counts from 1,000.
        assert!(by_fault[0].failover_ms > 200.0);
    }

    /// Per kind, the worst fault; a shard that never recovers counts until the end; a fault
    /// with writes invoked only before it is not mistaken for a fast one.
    #[test]
    fn failover_per_kind_is_the_worst_fault_and_unrecovered_shards_count_to_the_end() {
        use EventType::{Invoke, Ok};
        use Function::Write;
        let mut events = Vec::new();
        // Both shards write steadily every 100 ms (invoke at t, ack at t + 5), except shard 1
        // between 4,000 and 4,600 ms (kill 1 recovers at 4,605) and shard 0 after 8,000 ms.
        let mut p = 0;
        for t in (0..10_000).step_by(100) {
            for (key, down) in [("a", t >= 8_000), ("b", (4_000..4_600).contains(&t))] {
                if down {
                    continue;
                }
                p += 1;
                events.push(ev(p, Invoke, Write.clone(), key, t));
                events.push(ev(p, Ok, Write.clone(), key, t + 5));
            }
        }
        events.sort_by_key(|e| e.time);
        let faults = vec![
            fault(FaultKind::Kill, 1_000, 2_000),
            fault(FaultKind::Kill, 4_000, 5_000),
            fault(FaultKind::Partition, 7_990, 9_000),
        ];
        let (by_kind, by_fault) = failover(&events, &faults, &shard_of, 10_000 * MS);
        assert_eq!(by_fault[0].failover_ms, 5.0);
        assert_eq!(by_fault[1].failover_ms, 605.0);
        assert_eq!(by_fault[1].worst_shard, Some(1));
        assert_eq!(by_kind.get("kill"), Some(&605.0));
        // Shard 0's last write invoked at 7,900 does not count for the fault at 7,990.
        assert_eq!(by_fault[2].unrecovered_shards, 1);
        assert_eq!(by_fault[2].worst_shard, Some(0));
        assert_eq!(by_kind.get("partition"), Some(&2_010.0));
    }
}
