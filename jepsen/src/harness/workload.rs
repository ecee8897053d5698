//! Workloads: logical client processes on the `ringkv-client` library, each with one operation
//! in flight, recording every operation. Outcomes are classified strictly: `ok`; `fail` only
//! when the operation certainly took no effect (a definite error, a CAS whose comparison
//! failed, any failed read); `info` when unknown — the process then retires and a fresh
//! process id continues in its place.
//!
//! - `register`: read / write / cas on a few keys per shard (`reg:<n>`), unique written values;
//!   checked for linearizability per key.
//! - `set`: unique adds (`set:<bucket>:<element>`); after healing, a final read of every bucket
//!   must contain every acknowledged add.
//! - `bank`: single-shard transactions moving money between accounts (see `bank.rs`).
//! - `session`: keys with TTLs; no read may miss one before its TTL (see `session.rs`).
//!
//! Load is kept on every shard independently: each worker serves one shard (worker `w` the
//! shard `w mod shards`) and only touches keys that the ring (`ringkv_proto::ring`, the same
//! map the client routes by) puts on that shard. A shard stalled by a fault then holds up only
//! its own workers, so the others keep measuring, and each shard's recovery after a fault is
//! visible on its own (`checks::failover`). The checks do not depend on this: keys and values
//! are as before, only which worker uses which key changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, ClientOptions, Error, Expect, ReadConsistency, TlsOptions};
use ringkv_proto::ring::Ring;
use serde_json::{Value, json};

use super::record::Recorder;
use crate::history::{EventType, Function};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Register,
    Set,
    /// Transfers between accounts of one hash tag per shard (see `bank.rs`).
    Bank,
    /// Keys with TTLs, read while they live and after (see `session.rs`).
    Session,
}

/// Buckets of the set workload (each final read is one prefix scan).
pub const SET_BUCKETS: u64 = 16;

/// A client for one worker: a 2 s deadline per request (what a service answering people would
/// give a database write), 1 s per attempt, at most 4 attempts, 0.5 s to connect. A request
/// waiting on a leader that has gone leaves it as soon as the client learns of the new leader
/// (the client library's leader watch), not only when the attempt times out. With `tls`, over
/// TLS with those files (a run with `--tls`).
pub fn client(endpoints: Vec<String>, tls: Option<TlsOptions>) -> Result<Client, Error> {
    let mut o = ClientOptions::new(endpoints);
    o.tls = tls;
    o.request_timeout = Duration::from_millis(2_000);
    o.attempt_timeout = Duration::from_millis(1_000);
    o.max_attempts = 4;
    o.connect_timeout = Duration::from_millis(500);
    Client::new(o)
}

fn decode(b: &Bytes) -> Value {
    let s = String::from_utf8_lossy(b);
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or(Value::String(s.into_owned()))
}

/// How a write ended: `Ok(true)` took effect; `Ok(false)` (a comparison that failed) and
/// definite errors certainly took no effect; anything else is unknown.
fn outcome(r: Result<bool, Error>) -> EventType {
    match r {
        Ok(true) => EventType::Ok,
        Ok(false) => EventType::Fail,
        Err(e) if e.is_definite() => EventType::Fail,
        Err(_) => EventType::Info,
    }
}

/// The register keys of each shard: `keys` keys in all, `reg:<n>` with the smallest `n` the
/// ring puts on each shard, dealt out so every shard gets `keys / shards` or one more (and at
/// least one).
pub fn register_keys_by_shard(ring: &Ring, keys: u64) -> Vec<Vec<String>> {
    let shards = ring.shard_count() as usize;
    let keys = (keys as usize).max(shards);
    let want = |s: usize| keys / shards + usize::from(s < keys % shards);
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards];
    let mut n = 0u64;
    // The ring spreads names evenly, so this ends after a few times `keys` names; the bound
    // only guards against a broken ring.
    while (0..shards).any(|s| by_shard[s].len() < want(s)) && n < 1_000 * keys as u64 {
        let key = format!("reg:{n}");
        let s = ring.shard_for(key.as_bytes()) as usize;
        if by_shard[s].len() < want(s) {
            by_shard[s].push(key);
        }
        n += 1;
    }
    by_shard
}

/// Shared state of the workers.
pub struct Workers {
    pub recorder: Arc<Recorder>,
    pub next_process: AtomicU64,
    pub next_value: AtomicU64,
    /// The ring the servers use (learned from their Status).
    pub ring: Ring,
    /// Register keys per shard (`register_keys_by_shard`).
    pub keys_by_shard: Vec<Vec<String>>,
    pub consistency: ReadConsistency,
    pub deadline: Instant,
}

impl Workers {
    /// Every register key, shard by shard.
    pub fn all_keys(&self) -> impl Iterator<Item = &String> {
        self.keys_by_shard.iter().flatten()
    }
}

/// Runs one worker until the deadline: register operations on the keys of `shard`.
pub async fn register_worker(w: Arc<Workers>, client: Client, seed: u64, shard: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    let keys = match w.keys_by_shard.get(shard) {
        Some(k) if !k.is_empty() => k.clone(),
        _ => return,
    };
    let mut last_seen: Vec<Value> = vec![Value::Null; keys.len()];
    while Instant::now() < w.deadline {
        let k = rng.random_range(0..keys.len());
        let key = keys[k].clone();
        let roll = rng.random_range(0..100);
        let retired = if roll < 50 {
            w.recorder.record(
                process,
                EventType::Invoke,
                Function::Read,
                &key,
                Value::Null,
            );
            match client.get(key.clone(), w.consistency).await {
                Ok(v) => {
                    let value = v.map(|v| decode(&v.value)).unwrap_or(Value::Null);
                    last_seen[k] = value.clone();
                    w.recorder
                        .record(process, EventType::Ok, Function::Read, &key, value);
                }
                Err(_) => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Read, &key, Value::Null)
                }
            }
            false
        } else if roll < 75 {
            let v = w.next_value.fetch_add(1, Ordering::Relaxed);
            w.recorder
                .record(process, EventType::Invoke, Function::Write, &key, json!(v));
            let outcome = outcome(client.put(key.clone(), v.to_string()).await.map(|_| true));
            if outcome == EventType::Ok {
                last_seen[k] = json!(v);
            }
            w.recorder
                .record(process, outcome, Function::Write, &key, json!(v));
            outcome == EventType::Info
        } else {
            let v = w.next_value.fetch_add(1, Ordering::Relaxed);
            let expected = last_seen[k].clone();
            let arg = json!([expected, v]);
            w.recorder
                .record(process, EventType::Invoke, Function::Cas, &key, arg.clone());
            let expect = match &expected {
                Value::Null => Expect::Absent,
                other => Expect::Value(Bytes::from(other.to_string())),
            };
            let result = client
                .cas(key.clone(), expect, Some(Bytes::from(v.to_string())))
                .await;
            let outcome = outcome(result.map(|o| o.succeeded));
            if outcome == EventType::Ok {
                last_seen[k] = json!(v);
            }
            w.recorder
                .record(process, outcome, Function::Cas, &key, arg);
            outcome == EventType::Info
        };
        if retired {
            process = w.next_process.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The key of set element `e`.
pub fn set_key(e: u64) -> String {
    format!("set:{}:{e}", e % SET_BUCKETS)
}

/// Runs one worker until the deadline: unique adds of elements whose keys are on `shard`.
/// Elements drawn for other shards are skipped (never attempted, so never expected).
pub async fn set_worker(w: Arc<Workers>, client: Client, shard: usize) {
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    let add = Function::Other("add".into());
    'run: while Instant::now() < w.deadline {
        // The ring spreads keys evenly: a few draws find one of this shard.
        let mut drawn = None;
        for _ in 0..10_000 {
            let e = w.next_value.fetch_add(1, Ordering::Relaxed);
            if w.ring.shard_for(set_key(e).as_bytes()) as usize == shard {
                drawn = Some(e);
                break;
            }
        }
        let Some(e) = drawn else { break 'run };
        let key = set_key(e);
        w.recorder
            .record(process, EventType::Invoke, add.clone(), &key, json!(e));
        let outcome = outcome(client.put(key.clone(), "1").await.map(|_| true));
        w.recorder
            .record(process, outcome, add.clone(), &key, json!(e));
        if outcome == EventType::Info {
            process = w.next_process.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Final reads of the register workload: every key once, linearizably, recorded in the
/// history like any other read. Retries (bounded) until each read succeeds.
pub async fn register_final_reads(
    w: &Workers,
    client: &Client,
    deadline: Instant,
) -> Result<(), String> {
    let process = w.next_process.fetch_add(1, Ordering::Relaxed);
    for key in w.all_keys() {
        let key = key.clone();
        loop {
            w.recorder.record(
                process,
                EventType::Invoke,
                Function::Read,
                &key,
                Value::Null,
            );
            match client.get(key.clone(), ReadConsistency::Linearizable).await {
                Ok(v) => {
                    let value = v.map(|v| decode(&v.value)).unwrap_or(Value::Null);
                    w.recorder
                        .record(process, EventType::Ok, Function::Read, &key, value);
                    break;
                }
                Err(e) => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Read, &key, Value::Null);
                    if Instant::now() > deadline {
                        return Err(format!("final read of {key} kept failing: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Ok(())
}

/// Final read of the set: every bucket by prefix scan; the elements found.
pub async fn set_final_read(client: &Client, deadline: Instant) -> Result<Vec<u64>, String> {
    let mut found = Vec::new();
    for b in 0..SET_BUCKETS {
        let prefix = format!("set:{b}:");
        let page = loop {
            match client
                .scan(prefix.clone(), 0, ReadConsistency::Linearizable)
                .await
            {
                Ok(p) => break p,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("final read of {prefix}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if page.truncated {
            return Err(format!(
                "bucket {prefix} holds more elements than one scan returns"
            ));
        }
        for item in page.items {
            let key = String::from_utf8_lossy(&item.key);
            if let Some(e) = key.rsplit(':').next().and_then(|s| s.parse().ok()) {
                found.push(e);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_register_keys_of_its_own() {
        let ring = Ring::new(8, ringkv_proto::ring::DEFAULT_VNODES);
        let by_shard = register_keys_by_shard(&ring, 16);
        assert_eq!(by_shard.len(), 8);
        for (s, keys) in by_shard.iter().enumerate() {
            assert_eq!(keys.len(), 2, "shard {s}: {keys:?}");
            for k in keys {
                assert_eq!(ring.shard_for(k.as_bytes()) as usize, s);
            }
        }
        // Fewer keys than shards: still one each; uneven counts differ by one at most.
        assert!(
            register_keys_by_shard(&ring, 3)
                .iter()
                .all(|k| k.len() == 1)
        );
        let lens: Vec<usize> = register_keys_by_shard(&ring, 20)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(lens.iter().sum::<usize>(), 20);
        assert!(lens.iter().all(|&l| l == 2 || l == 3));
    }
}
