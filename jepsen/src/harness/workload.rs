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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, ClientOptions, Error, Expect, ReadConsistency};
use serde_json::{Value, json};

use super::record::Recorder;
use crate::history::{EventType, Function};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Register,
    Set,
}

/// Buckets of the set workload (each final read is one prefix scan).
pub const SET_BUCKETS: u64 = 16;

/// A client for one worker: short deadlines so unknown outcomes do not stall the run.
pub fn client(endpoints: Vec<String>) -> Result<Client, Error> {
    let mut o = ClientOptions::new(endpoints);
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

/// Shared state of the workers.
pub struct Workers {
    pub recorder: Arc<Recorder>,
    pub next_process: AtomicU64,
    pub next_value: AtomicU64,
    pub keys: u64,
    pub consistency: ReadConsistency,
    pub deadline: Instant,
    /// Elements of the set workload whose add was attempted.
    pub set_attempted: AtomicU64,
}

/// Runs one worker until the deadline: register operations.
pub async fn register_worker(w: Arc<Workers>, client: Client, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    let mut last_seen: Vec<Value> = vec![Value::Null; w.keys as usize];
    while Instant::now() < w.deadline {
        let k = rng.random_range(0..w.keys);
        let key = format!("reg:{k}");
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
                    last_seen[k as usize] = value.clone();
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
            match client.put(key.clone(), v.to_string()).await {
                Ok(_) => {
                    last_seen[k as usize] = json!(v);
                    w.recorder
                        .record(process, EventType::Ok, Function::Write, &key, json!(v));
                    false
                }
                Err(e) if e.is_definite() => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Write, &key, json!(v));
                    false
                }
                Err(_) => {
                    w.recorder
                        .record(process, EventType::Info, Function::Write, &key, json!(v));
                    true
                }
            }
        } else {
            let v = w.next_value.fetch_add(1, Ordering::Relaxed);
            let expected = last_seen[k as usize].clone();
            let arg = json!([expected, v]);
            w.recorder
                .record(process, EventType::Invoke, Function::Cas, &key, arg.clone());
            let expect = match &expected {
                Value::Null => Expect::Absent,
                other => Expect::Value(Bytes::from(other.to_string())),
            };
            match client
                .cas(key.clone(), expect, Some(Bytes::from(v.to_string())))
                .await
            {
                Ok(o) if o.succeeded => {
                    last_seen[k as usize] = json!(v);
                    w.recorder
                        .record(process, EventType::Ok, Function::Cas, &key, arg);
                    false
                }
                Ok(_) => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Cas, &key, arg);
                    false
                }
                Err(e) if e.is_definite() => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Cas, &key, arg);
                    false
                }
                Err(_) => {
                    w.recorder
                        .record(process, EventType::Info, Function::Cas, &key, arg);
                    true
                }
            }
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

/// Runs one worker until the deadline: unique adds.
pub async fn set_worker(w: Arc<Workers>, client: Client) {
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    let add = Function::Other("add".into());
    while Instant::now() < w.deadline {
        let e = w.next_value.fetch_add(1, Ordering::Relaxed);
        w.set_attempted.fetch_max(e + 1, Ordering::Relaxed);
        let key = set_key(e);
        w.recorder
            .record(process, EventType::Invoke, add.clone(), &key, json!(e));
        match client.put(key.clone(), "1").await {
            Ok(_) => w
                .recorder
                .record(process, EventType::Ok, add.clone(), &key, json!(e)),
            Err(err) if err.is_definite() => {
                w.recorder
                    .record(process, EventType::Fail, add.clone(), &key, json!(e))
            }
            Err(_) => {
                w.recorder
                    .record(process, EventType::Info, add.clone(), &key, json!(e));
                process = w.next_process.fetch_add(1, Ordering::Relaxed);
            }
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
    for k in 0..w.keys {
        let key = format!("reg:{k}");
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
