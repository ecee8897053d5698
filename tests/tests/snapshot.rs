//! Snapshots and log compaction against real servers (issue 5, acceptance 1, 2 and 5): the
//! Raft log stays bounded under writes, a restarted node starts from snapshot plus tail, a node
//! that missed more than the retained log catches up through snapshot install, and SIGKILL in
//! the middle of snapshot transfer and install always recovers to a consistent replica.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use prometheus_parse::{Scrape, Value};
use ringkv_client::{Client, ReadConsistency};
use ringkv_tests::{Cluster, http_get};

const SHARDS: u32 = 8;
const SNAPSHOT_LOGS: &str = "1000";

fn key(i: usize) -> String {
    format!("snap:{i:06}")
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("v{i}"))
}

async fn write_range(client: &Client, range: std::ops::Range<usize>) {
    let failures: Vec<String> = stream::iter(range)
        .map(|i| {
            let c = client.clone();
            async move {
                c.put(key(i), value(i))
                    .await
                    .err()
                    .map(|e| format!("{}: {e}", key(i)))
            }
        })
        .buffer_unordered(64)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "writes failed: {:?}",
        &failures[..failures.len().min(5)]
    );
}

async fn check_range(client: &Client, range: std::ops::Range<usize>, consistency: ReadConsistency) {
    let wrong: Vec<String> = stream::iter(range)
        .map(|i| {
            let c = client.clone();
            async move {
                match c.get(key(i), consistency).await {
                    Ok(Some(v)) if v.value == value(i) => None,
                    other => Some(format!("{}: {other:?}", key(i))),
                }
            }
        })
        .buffer_unordered(64)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(
        wrong.is_empty(),
        "{} keys wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Per-shard values of a gauge on node `id`.
async fn shard_gauge(cluster: &Cluster, id: u64, metric: &str) -> Vec<f64> {
    let (code, body) = http_get(&cluster.admin_addr(id), "/metrics")
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("prometheus text");
    let mut out = vec![0.0; SHARDS as usize];
    for s in scrape.samples.iter().filter(|s| s.metric == metric) {
        let shard: usize = s
            .labels
            .get("shard")
            .and_then(|v| v.parse().ok())
            .expect("shard label");
        if let Value::Gauge(v) | Value::Untyped(v) = s.value {
            out[shard] = v;
        }
    }
    out
}

/// Waits until node `id` has applied, on every shard, what the other nodes report committed.
async fn wait_caught_up(cluster: &Cluster, id: u64, timeout: Duration) {
    let statuses = cluster.statuses().await;
    let mut target = vec![0u64; SHARDS as usize];
    for (other, s) in &statuses {
        if *other == id {
            continue;
        }
        for sh in s.as_ref().map(|s| s.shards.as_slice()).unwrap_or_default() {
            target[sh.shard as usize] = target[sh.shard as usize].max(sh.committed_index);
        }
    }
    let client = cluster.client();
    let addr = cluster.addr(id);
    let result = cluster
        .wait_until(
            &format!("node {id} caught up to {target:?}"),
            timeout,
            || {
                let (client, addr, target) = (client.clone(), addr.clone(), target.clone());
                async move {
                    client.status_of(&addr).await.is_ok_and(|s| {
                        s.shards
                            .iter()
                            .all(|sh| sh.applied_index >= target[sh.shard as usize])
                    })
                }
            },
        )
        .await;
    if result.is_err() {
        cluster.dump_logs();
    }
    assert_eq!(result, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_stays_bounded_and_a_restarted_node_starts_from_its_snapshot() {
    const KEYS: usize = 50_000;
    let mut cluster = Cluster::start_with(3, SHARDS, &["--snapshot-logs", SNAPSHOT_LOGS]);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let started = Instant::now();
    write_range(&cluster.client(), 0..KEYS).await;
    eprintln!("wrote {KEYS} keys in {:?}", started.elapsed());

    for id in 1..=3 {
        let entries = shard_gauge(&cluster, id, "ringkv_shard_log_entries").await;
        let built = shard_gauge(&cluster, id, "ringkv_shard_snapshots_built").await;
        let disk = {
            let (_, body) = http_get(&cluster.admin_addr(id), "/metrics")
                .await
                .expect("metrics");
            body.lines()
                .find(|l| l.starts_with("ringkv_sled_disk_bytes "))
                .map(str::to_string)
                .unwrap_or_default()
        };
        eprintln!(
            "node {id}: log entries per shard {entries:?}, snapshots built {built:?}, {disk}"
        );
        // Policy: a snapshot every 1,000 entries, and 1,000 entries kept behind it, purged in
        // batches of 256: never much more than 2,000 + 256 entries per shard.
        assert!(
            entries.iter().all(|&e| e <= 2_600.0),
            "node {id}: log not bounded: {entries:?}"
        );
        assert!(
            built.iter().all(|&b| b >= 1.0),
            "node {id}: a shard never snapshotted: {built:?}"
        );
    }

    let status = cluster.stop(2);
    assert!(status.success(), "node 2 exited with {status}");
    cluster.restart(2);
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders after restart");
    wait_caught_up(&cluster, 2, Duration::from_secs(30)).await;
    check_range(
        &cluster.client_of(2),
        0..KEYS,
        ReadConsistency::Serializable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_the_retained_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start_with(3, SHARDS, &["--snapshot-logs", SNAPSHOT_LOGS]);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let client = cluster.client();
    write_range(&client, 0..1_000).await;
    let behind = last_log_indexes(&cluster, 3).await;
    let status = cluster.stop(3);
    assert!(status.success(), "node 3 exited with {status}");
    // Write until every shard's leader has purged the entries node 3 would need next (keys
    // spread unevenly, so a fixed count left the smallest shard short now and then).
    let written = write_until_purged_past(&cluster, &client, &behind, 1_000, 4_000, 15).await;
    eprintln!("{written} keys written before every leader purged past node 3's logs");
    cluster.restart(3);
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders");
    wait_caught_up(&cluster, 3, Duration::from_secs(60)).await;
    let installed = shard_gauge(&cluster, 3, "ringkv_shard_snapshots_installed").await;
    eprintln!("node 3 snapshots installed per shard: {installed:?}");
    assert!(
        installed.iter().all(|&n| n >= 1.0),
        "every shard caught up by snapshot: {installed:?}"
    );
    let log = std::fs::read_to_string(&cluster.nodes[&3].log).unwrap_or_default();
    assert!(
        log.contains("snapshot installed"),
        "node 3's log shows the install"
    );
    check_range(
        &cluster.client_of(3),
        0..written,
        ReadConsistency::Serializable,
    )
    .await;
}

/// Each shard's last log index on node `id`.
async fn last_log_indexes(cluster: &Cluster, id: u64) -> Vec<u64> {
    cluster.statuses().await[&id]
        .as_ref()
        .expect("node status")
        .shards
        .iter()
        .map(|sh| sh.last_log_index)
        .collect()
}

/// Writes keys from `written` on, `batch` at a time and at most `batches_max` batches, until
/// every shard's leader has purged its log beyond `behind[shard]`; returns the next key.
///
/// A leader purges only at moments when no replication to the stopped node is in flight, so
/// purging trails the writes by a time as well as by a count: after each batch the purge is
/// awaited for a while before more is written.
async fn write_until_purged_past(
    cluster: &Cluster,
    client: &Client,
    behind: &[u64],
    mut written: usize,
    batch: usize,
    batches_max: usize,
) -> usize {
    const PURGE_WAIT: Duration = Duration::from_secs(2);
    let mut batches = 0;
    loop {
        let deadline = Instant::now() + PURGE_WAIT;
        loop {
            if purged_past(cluster, behind).await {
                return written;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            batches < batches_max,
            "leaders have not purged past {behind:?} after {written} writes"
        );
        write_range(client, written..written + batch).await;
        written += batch;
        batches += 1;
    }
}

/// True when, for every shard, its leader has purged its log beyond `behind[shard]`.
async fn purged_past(cluster: &Cluster, behind: &[u64]) -> bool {
    let Ok(leaders) = cluster.wait_for_leaders(Duration::from_secs(10)).await else {
        return false;
    };
    let mut purged = std::collections::BTreeMap::new();
    for id in leaders
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        purged.insert(
            id,
            shard_gauge(cluster, id, "ringkv_shard_purged_index").await,
        );
    }
    leaders
        .iter()
        .enumerate()
        .all(|(shard, leader)| purged[leader][shard] > behind[shard] as f64)
}

/// The log's text from byte `offset` on.
fn log_from(path: &std::path::Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// The shard named by a log line's `shard=` field.
fn shard_of(line: &str) -> Option<u32> {
    let rest = &line[line.find(" shard=")? + " shard=".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Shards whose snapshot `log` shows received (logged right before the install is handed to
/// Raft) but not yet installed (logged when the state machine finished it).
fn installs_under_way(log: &str) -> std::collections::BTreeSet<u32> {
    let mut under_way = std::collections::BTreeSet::new();
    for line in log.lines() {
        if line.contains("snapshot received") {
            under_way.extend(shard_of(line));
        } else if line.contains("snapshot installed")
            && let Some(shard) = shard_of(line)
        {
            under_way.remove(&shard);
        }
    }
    under_way
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_snapshot_install_always_recovers() {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 3_000;
    // Snapshot often and keep little log, so each round's ~375 writes per shard put node 3
    // beyond the retained log and every shard needs a snapshot.
    let mut cluster = Cluster::start_with(
        3,
        SHARDS,
        &["--snapshot-logs", "100", "--log-keep-entries", "100"],
    );
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let client = cluster.client();
    let log_path = cluster.nodes[&3].log.clone();
    let mut written = 0;
    let mut killed_mid_install = 0;
    for round in 0..ROUNDS {
        let behind = last_log_indexes(&cluster, 3).await;
        let status = cluster.stop(3);
        assert!(
            status.success(),
            "round {round}: node 3 exited with {status}"
        );
        write_range(&client, written..written + PER_ROUND).await;
        written += PER_ROUND;
        // Every shard's leader must have purged past node 3's log, so nothing but a snapshot
        // can catch it up; keep writing (bounded) until they have.
        written = write_until_purged_past(&cluster, &client, &behind, written, 500, 10).await;
        let start_offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        cluster.restart(3);
        // SIGKILL as soon as some shard's install is under way (received, not yet installed).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !installs_under_way(&log_from(&log_path, start_offset)).is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no snapshot install began within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cluster.kill(3);
        // The process is gone, so its log is complete: did the kill land before an install
        // finished?
        let interrupted = installs_under_way(&log_from(&log_path, start_offset));
        if !interrupted.is_empty() {
            killed_mid_install += 1;
        }
        cluster.restart(3);
        cluster
            .wait_for_leaders(Duration::from_secs(15))
            .await
            .expect("leaders");
        wait_caught_up(&cluster, 3, Duration::from_secs(60)).await;
        // Node 3 serves every write from its own state: an interrupted install that left a
        // shard claiming an index whose records it lacks (or lost older ones) fails here.
        check_range(
            &cluster.client_of(3),
            0..written,
            ReadConsistency::Serializable,
        )
        .await;
        eprintln!(
            "round {round}: node 3 killed with installs of shards {interrupted:?} under way, \
             restarted, caught up and serves all {written} keys"
        );
    }
    // Each round's kill came while an install ran (the poll above stops at the first sign of
    // one; installs take long enough that a 2 ms poll sees them almost every time).
    assert!(
        killed_mid_install * 5 >= ROUNDS * 4,
        "only {killed_mid_install} of {ROUNDS} kills landed during an install"
    );
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "node 3 panicked");
}
