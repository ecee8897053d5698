//! The `session` workload: keys written with a TTL and read back while they live and after;
//! the checker knows TTLs.
//!
//! Each worker of a shard creates sessions (`sess:<n>` keys the ring puts on its shard, each
//! written once, with a unique value and a TTL of 1, 2 or 4 s) and reads the sessions it
//! created, linearizably, until a while after they should have expired. Writes are classified
//! as everywhere (`info` when unknown: such sessions are left out of the check).
//!
//! The check ([`check`]), for every acknowledged session and every acknowledged read of it
//! that began after the write was acknowledged:
//! - **early**: the read missed the key although it ended less than the TTL after the write
//!   began. Cluster time advances at most as fast as real time (leaders stamp from a monotonic
//!   clock anchored on the committed clock, and it stops while a shard has no leader), so the
//!   key's TTL cannot have passed; any early expiry makes the run invalid.
//! - **late**: the read found the key although it began more than the TTL plus
//!   [`LATE_BOUND_MS`] after the write was acknowledged. Faults stop cluster time while a shard
//!   has no leader, so lateness is expected under them and is reported (count, worst); it makes
//!   the run invalid only when no fault was applied.
//! - a read that returns a value other than the session's own makes the run invalid.
//!
//! It does not exercise touches or leases yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, ReadConsistency, Ttl};
use serde::Serialize;
use serde_json::{Value, json};

use super::workload::Workers;
use crate::history::{Event, EventType, Function};

/// How long after the TTL a read may still find the key in a run without faults.
pub const LATE_BOUND_MS: u64 = 1_000;
/// TTLs the sessions get, ms.
const TTLS_MS: [u64; 3] = [1_000, 2_000, 4_000];
/// A session is read until this long after its TTL.
const READ_PAST_TTL_MS: u64 = 3_000;

fn put_ttl_f() -> Function {
    Function::Other("put-ttl".into())
}

/// Runs one worker on the keys of `shard` until the deadline.
pub async fn worker(w: Arc<Workers>, client: Client, seed: u64, shard: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    // Sessions this worker created and acknowledged: (key, value, acknowledged at, ttl).
    let mut live: Vec<(String, u64, Instant, u64)> = Vec::new();
    while Instant::now() < w.deadline {
        live.retain(|(_, _, at, ttl)| at.elapsed() < Duration::from_millis(ttl + READ_PAST_TTL_MS));
        if live.is_empty() || rng.random_range(0..10) < 3 {
            // A new session on this shard.
            let mut drawn = None;
            for _ in 0..10_000 {
                let n = w.next_value.fetch_add(1, Ordering::Relaxed);
                let key = format!("sess:{n}");
                if w.ring.shard_for(key.as_bytes()) as usize == shard {
                    drawn = Some((key, n));
                    break;
                }
            }
            let Some((key, v)) = drawn else { return };
            let ttl = TTLS_MS[rng.random_range(0..TTLS_MS.len())];
            let arg = json!({"value": v, "ttl_ms": ttl});
            w.recorder
                .record(process, EventType::Invoke, put_ttl_f(), &key, arg.clone());
            let r = client
                .put_with_ttl(
                    key.clone(),
                    v.to_string(),
                    Ttl::Set(Duration::from_millis(ttl)),
                )
                .await;
            let kind = match r {
                Ok(_) => EventType::Ok,
                Err(e) if e.is_definite() => EventType::Fail,
                Err(_) => EventType::Info,
            };
            w.recorder.record(process, kind, put_ttl_f(), &key, arg);
            match kind {
                EventType::Ok => live.push((key, v, Instant::now(), ttl)),
                EventType::Info => process = w.next_process.fetch_add(1, Ordering::Relaxed),
                _ => {}
            }
            continue;
        }
        let (key, _, _, _) = live[rng.random_range(0..live.len())].clone();
        w.recorder.record(
            process,
            EventType::Invoke,
            Function::Read,
            &key,
            Value::Null,
        );
        match client.get(key.clone(), ReadConsistency::Linearizable).await {
            Ok(v) => {
                let value = v
                    .map(|v| {
                        String::from_utf8_lossy(&v.value)
                            .parse::<u64>()
                            .map(Value::from)
                            .unwrap_or(Value::String("?".into()))
                    })
                    .unwrap_or(Value::Null);
                w.recorder
                    .record(process, EventType::Ok, Function::Read, &key, value);
            }
            Err(_) => {
                w.recorder
                    .record(process, EventType::Fail, Function::Read, &key, Value::Null)
            }
        }
    }
}

/// The session checker's result.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct SessionResult {
    pub valid: bool,
    pub sessions: usize,
    pub reads: usize,
    /// Reads that missed a key before its TTL could have passed: (key, ms after the write
    /// began that the read ended, ttl ms), the first 20.
    pub early: Vec<(String, u64, u64)>,
    pub early_count: usize,
    /// Reads that found a key more than the TTL plus [`LATE_BOUND_MS`] after its write.
    pub late_count: usize,
    /// The latest such read: ms past the TTL.
    pub late_max_ms: u64,
    /// Whether lateness counts against validity (only in runs without faults).
    pub late_counts: bool,
    /// Reads that returned a value the session never had.
    pub wrong_values: usize,
}

/// Checks the history; `faults` is whether any fault was applied.
pub fn check(events: &[Event], faults: bool) -> SessionResult {
    // key → (value, write invoked ns, write acknowledged ns, ttl ms); only acknowledged ones.
    let mut invoked: HashMap<(u64, &str), u64> = HashMap::new();
    let mut sessions: HashMap<&str, (u64, u64, u64, u64)> = HashMap::new();
    for e in events {
        let key = e.key.as_deref().unwrap_or("");
        if e.f != put_ttl_f() {
            continue;
        }
        match e.kind {
            EventType::Invoke => {
                invoked.insert((e.process, key), e.time);
            }
            EventType::Ok => {
                let (Some(v), Some(ttl)) = (e.value["value"].as_u64(), e.value["ttl_ms"].as_u64())
                else {
                    continue;
                };
                if let Some(inv) = invoked.get(&(e.process, key)) {
                    sessions.insert(key, (v, *inv, e.time, ttl));
                }
            }
            _ => {}
        }
    }
    let mut r = SessionResult {
        valid: true,
        sessions: sessions.len(),
        reads: 0,
        early: Vec::new(),
        early_count: 0,
        late_count: 0,
        late_max_ms: 0,
        late_counts: !faults,
        wrong_values: 0,
    };
    let mut read_invoked: HashMap<u64, u64> = HashMap::new();
    for e in events {
        if e.f != Function::Read {
            continue;
        }
        match e.kind {
            EventType::Invoke => {
                read_invoked.insert(e.process, e.time);
                continue;
            }
            EventType::Ok => {}
            _ => continue,
        }
        let key = e.key.as_deref().unwrap_or("");
        let (Some(&(v, w_inv, w_ok, ttl)), Some(&r_inv)) =
            (sessions.get(key), read_invoked.get(&e.process))
        else {
            continue;
        };
        if r_inv < w_ok {
            continue;
        }
        r.reads += 1;
        let ttl_ns = ttl * 1_000_000;
        match e.value.as_u64() {
            None if e.value.is_null() => {
                if e.time < w_inv + ttl_ns {
                    r.early_count += 1;
                    if r.early.len() < 20 {
                        r.early
                            .push((key.to_string(), (e.time - w_inv) / 1_000_000, ttl));
                    }
                }
            }
            Some(got) if got == v => {
                let past_ns = r_inv.saturating_sub(w_ok + ttl_ns);
                if past_ns > LATE_BOUND_MS * 1_000_000 {
                    r.late_count += 1;
                    r.late_max_ms = r.late_max_ms.max(past_ns / 1_000_000);
                }
            }
            _ => r.wrong_values += 1,
        }
    }
    r.valid = r.early_count == 0 && r.wrong_values == 0 && !(r.late_counts && r.late_count > 0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: u64, kind: EventType, f: Function, key: &str, value: Value, ms: u64) -> Event {
        Event {
            process,
            kind,
            f,
            key: Some(key.to_string()),
            value,
            time: ms * 1_000_000,
        }
    }

    fn session(key: &str, ttl: u64) -> Vec<Event> {
        let arg = json!({"value": 7, "ttl_ms": ttl});
        vec![
            ev(1, EventType::Invoke, put_ttl_f(), key, arg.clone(), 0),
            ev(1, EventType::Ok, put_ttl_f(), key, arg, 10),
        ]
    }

    fn read(key: &str, value: Value, from_ms: u64, to_ms: u64) -> Vec<Event> {
        vec![
            ev(
                2,
                EventType::Invoke,
                Function::Read,
                key,
                Value::Null,
                from_ms,
            ),
            ev(2, EventType::Ok, Function::Read, key, value, to_ms),
        ]
    }

    #[test]
    fn early_expiry_is_invalid_lateness_only_without_faults() {
        let mut h = session("sess:1", 2_000);
        h.extend(read("sess:1", json!(7), 100, 110));
        h.extend(read("sess:1", Value::Null, 2_100, 2_110));
        let r = check(&h, true);
        assert!(r.valid && r.reads == 2 && r.early_count == 0, "{r:?}");
        // Absent 1.9 s after the write began, with a 2 s TTL: early.
        let mut bad = h.clone();
        bad.extend(read("sess:1", Value::Null, 1_800, 1_900));
        let r = check(&bad, true);
        assert!(!r.valid && r.early_count == 1, "{r:?}");
        // Found 4 s after the write (TTL 2 s + bound 1 s passed): late.
        let mut late = h.clone();
        late.extend(read("sess:1", json!(7), 4_000, 4_010));
        assert!(
            check(&late, true).valid,
            "lateness under faults is reported only"
        );
        let r = check(&late, false);
        assert!(
            !r.valid && r.late_count == 1 && r.late_max_ms >= 1_990,
            "{r:?}"
        );
        // Another value: invalid; a read that began before the write was acknowledged: ignored.
        let mut wrong = h.clone();
        wrong.extend(read("sess:1", json!(8), 200, 210));
        assert!(!check(&wrong, true).valid);
        let mut before = session("sess:2", 1_000);
        before.extend(read("sess:2", Value::Null, 5, 20));
        assert_eq!(check(&before, true).reads, 0);
    }
}
