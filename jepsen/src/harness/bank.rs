//! The `bank` workload: transfers between the accounts of one hash tag per shard, each an
//! optimistic single-shard transaction; the total must never change.
//!
//! Each shard gets [`ACCOUNTS`] accounts `bank:{<tag>}:<i>` (the tag is the first `b<n>` the
//! ring puts on that shard), opened with [`OPENING_BALANCE`] each by one transaction before
//! the workers start. A worker of the shard either reads every account in one transaction of
//! gets (`read`, 30 %) or moves 1–5 from one account to another (`transfer`, 70 %): it reads
//! both accounts, then commits a transaction that compares both versions and writes both new
//! balances; a transfer that would overdraw is not attempted. Outcomes are classified as
//! everywhere: `fail` only when certainly not applied (a failed compare included), `info`
//! when unknown (the process then retires).
//!
//! The check ([`check`]): every acknowledged read, and the final read of each shard after
//! healing, shows the shard's accounts summing to `ACCOUNTS × OPENING_BALANCE` with none
//! negative. A lost or doubled transfer, a torn transaction or a stale snapshot of some
//! accounts would break that. It does not check linearizability of the reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, ReadConsistency, Txn, TxnOpResult};
use ringkv_proto::ring::Ring;
use serde::Serialize;
use serde_json::{Value, json};

use super::workload::Workers;
use crate::history::{Event, EventType, Function};

/// Accounts per shard.
pub const ACCOUNTS: usize = 5;
/// Each account's balance when opened.
pub const OPENING_BALANCE: i64 = 100;

/// The hash tag of each shard's accounts.
pub fn tags_by_shard(ring: &Ring) -> Vec<String> {
    let shards = ring.shard_count() as usize;
    let mut tags: Vec<Option<String>> = vec![None; shards];
    let mut n = 0u64;
    while tags.iter().any(Option::is_none) && n < 100_000 {
        let tag = format!("b{n}");
        let s = ring.shard_for(account(&tag, 0).as_bytes()) as usize;
        if tags[s].is_none() {
            tags[s] = Some(tag);
        }
        n += 1;
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
}

/// Account `i` of the accounts tagged `tag`.
pub fn account(tag: &str, i: usize) -> String {
    format!("bank:{{{tag}}}:{i}")
}

fn balance(v: Option<&ringkv_client::Versioned>) -> Option<i64> {
    v.and_then(|v| String::from_utf8_lossy(&v.value).parse().ok())
}

/// Opens every shard's accounts (a transaction that writes them all when the first is
/// absent), retrying until `deadline`.
pub async fn open_accounts(
    client: &Client,
    tags: &[String],
    deadline: Instant,
) -> Result<(), String> {
    for tag in tags {
        let mut txn = Txn::new().compare_absent(account(tag, 0));
        for i in 0..ACCOUNTS {
            txn = txn.then_put(account(tag, i), OPENING_BALANCE.to_string());
        }
        loop {
            match client.txn(&txn).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("opening the accounts of {tag}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Every account of `tag` in one transaction of gets: the balances, or why not.
async fn read_all(client: &Client, tag: &str) -> Result<Vec<Option<i64>>, Error> {
    let txn = (0..ACCOUNTS).fold(Txn::new(), |t, i| t.then_get(account(tag, i)));
    let o = client.txn(&txn).await?;
    Ok(o.results
        .iter()
        .map(|r| match r {
            TxnOpResult::Get(v) => balance(v.as_ref()),
            _ => None,
        })
        .collect())
}

fn wire(balances: &[Option<i64>]) -> Value {
    Value::Array(
        balances
            .iter()
            .map(|b| b.map_or(Value::Null, Value::from))
            .collect(),
    )
}

/// Runs one worker on the accounts of `tag` until the deadline.
pub async fn worker(w: Arc<Workers>, client: Client, seed: u64, tag: String) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
    let read_f = Function::Read;
    let transfer_f = Function::Other("transfer".into());
    while Instant::now() < w.deadline {
        if rng.random_range(0..10) < 3 {
            w.recorder.record(
                process,
                EventType::Invoke,
                read_f.clone(),
                &tag,
                Value::Null,
            );
            let (kind, value) = match read_all(&client, &tag).await {
                Ok(b) => (EventType::Ok, wire(&b)),
                // A read that wrote nothing: certainly nothing to check, whatever the error.
                Err(_) => (EventType::Fail, Value::Null),
            };
            w.recorder
                .record(process, kind, read_f.clone(), &tag, value);
            continue;
        }
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount: i64 = rng.random_range(1..=5);
        let (a, b) = match (
            client
                .get(account(&tag, from), ReadConsistency::Linearizable)
                .await,
            client
                .get(account(&tag, to), ReadConsistency::Linearizable)
                .await,
        ) {
            (Ok(Some(a)), Ok(Some(b))) => (a, b),
            _ => continue,
        };
        let (Some(fb), Some(tb)) = (balance(Some(&a)), balance(Some(&b))) else {
            continue;
        };
        if fb < amount {
            continue;
        }
        let arg = json!([from, to, amount]);
        w.recorder.record(
            process,
            EventType::Invoke,
            transfer_f.clone(),
            &tag,
            arg.clone(),
        );
        let txn = Txn::new()
            .compare_version(account(&tag, from), a.version)
            .compare_version(account(&tag, to), b.version)
            .then_put(account(&tag, from), (fb - amount).to_string())
            .then_put(account(&tag, to), (tb + amount).to_string());
        let kind = match client.txn(&txn).await {
            Ok(o) if o.succeeded => EventType::Ok,
            Ok(_) => EventType::Fail,
            Err(e) if e.is_definite() => EventType::Fail,
            Err(_) => EventType::Info,
        };
        w.recorder
            .record(process, kind, transfer_f.clone(), &tag, arg);
        if kind == EventType::Info {
            process = w.next_process.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The final read of every shard's accounts (recorded like any read), retried until
/// `deadline`.
pub async fn final_reads(
    w: &Workers,
    client: &Client,
    tags: &[String],
    deadline: Instant,
) -> Result<(), String> {
    let process = w.next_process.fetch_add(1, Ordering::Relaxed);
    for tag in tags {
        loop {
            w.recorder
                .record(process, EventType::Invoke, Function::Read, tag, Value::Null);
            match read_all(client, tag).await {
                Ok(b) => {
                    w.recorder
                        .record(process, EventType::Ok, Function::Read, tag, wire(&b));
                    break;
                }
                Err(e) => {
                    w.recorder
                        .record(process, EventType::Fail, Function::Read, tag, Value::Null);
                    if Instant::now() > deadline {
                        return Err(format!("final read of {tag} kept failing: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Ok(())
}

/// The bank checker's result.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct BankResult {
    pub valid: bool,
    pub reads: usize,
    pub transfers_ok: usize,
    pub transfers_unknown: usize,
    /// Acknowledged reads whose balances do not add up (or show a negative or missing
    /// account): (tag, balances), the first 20.
    pub bad_reads: Vec<(String, Value)>,
    /// Shards with no acknowledged read after the workload (the final read failed).
    pub unread_shards: Vec<String>,
}

/// Checks every acknowledged read of `tags`' accounts.
pub fn check(events: &[Event], tags: &[String]) -> BankResult {
    let total = ACCOUNTS as i64 * OPENING_BALANCE;
    let mut r = BankResult {
        valid: true,
        reads: 0,
        transfers_ok: 0,
        transfers_unknown: 0,
        bad_reads: Vec::new(),
        unread_shards: Vec::new(),
    };
    let mut last_read: BTreeMap<&str, u64> = BTreeMap::new();
    let mut bad = 0usize;
    for e in events {
        let key = e.key.as_deref().unwrap_or("");
        match (&e.f, e.kind) {
            (Function::Read, EventType::Ok) => {
                r.reads += 1;
                last_read.insert(key, e.time);
                let balances: Vec<Option<i64>> = e
                    .value
                    .as_array()
                    .map(|a| a.iter().map(Value::as_i64).collect())
                    .unwrap_or_default();
                let sane = balances.len() == ACCOUNTS
                    && balances.iter().all(|b| b.is_some_and(|b| b >= 0))
                    && balances.iter().flatten().sum::<i64>() == total;
                if !sane {
                    bad += 1;
                    if r.bad_reads.len() < 20 {
                        r.bad_reads.push((key.to_string(), e.value.clone()));
                    }
                }
            }
            (Function::Other(f), EventType::Ok) if f == "transfer" => r.transfers_ok += 1,
            (Function::Other(f), EventType::Info) if f == "transfer" => r.transfers_unknown += 1,
            _ => {}
        }
    }
    r.unread_shards = tags
        .iter()
        .filter(|t| !last_read.contains_key(t.as_str()))
        .cloned()
        .collect();
    r.valid = bad == 0 && r.unread_shards.is_empty();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, f: Function, key: &str, value: Value, time: u64) -> Event {
        Event {
            process: 0,
            kind,
            f,
            key: Some(key.to_string()),
            value,
            time,
        }
    }

    #[test]
    fn reads_must_add_up_and_every_shard_must_be_read() {
        let tags = vec!["b0".to_string(), "b1".to_string()];
        let good = json!([100, 95, 105, 100, 100]);
        let mut events = vec![
            ev(EventType::Ok, Function::Read, "b0", good.clone(), 1),
            ev(EventType::Ok, Function::Read, "b1", good.clone(), 2),
            ev(
                EventType::Ok,
                Function::Other("transfer".into()),
                "b0",
                json!([0, 1, 5]),
                3,
            ),
        ];
        let r = check(&events, &tags);
        assert!(r.valid, "{r:?}");
        assert_eq!((r.reads, r.transfers_ok), (2, 1));
        // Money created, a negative balance, a missing account: each is caught.
        for bad in [
            json!([100, 100, 105, 100, 100]),
            json!([-5, 105, 100, 100, 200]),
            json!([100, null, 100, 100, 200]),
        ] {
            events.push(ev(EventType::Ok, Function::Read, "b1", bad, 4));
            let r = check(&events, &tags);
            assert!(!r.valid, "{r:?}");
            events.pop();
        }
        // A shard never read (its final read failed) makes the run invalid too.
        let r = check(&events[..1], &tags);
        assert_eq!(r.unread_shards, vec!["b1".to_string()]);
        assert!(!r.valid);
    }

    #[test]
    fn every_shard_gets_a_tag_of_its_own() {
        let ring = Ring::new(8, ringkv_proto::ring::DEFAULT_VNODES);
        let tags = tags_by_shard(&ring);
        for (s, tag) in tags.iter().enumerate() {
            for i in 0..ACCOUNTS {
                assert_eq!(ring.shard_for(account(tag, i).as_bytes()) as usize, s);
            }
        }
    }
}
