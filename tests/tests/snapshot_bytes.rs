//! Snapshots by bytes (issue 15): with large values, `--snapshot-log-mb` bounds each shard's
//! Raft log, and with it the write-ahead log on every node, long before `--snapshot-logs`
//! entries; and the entries `--log-keep-entries` keeps behind a snapshot stay within a quarter
//! of it.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use prometheus_parse::{Scrape, Value};
use ringkv_client::ReadConsistency;
use ringkv_tests::{Cluster, http_get};

const SHARDS: u32 = 2;
const SNAPSHOT_LOG_MB: u64 = 4;
const MIB: f64 = 1024.0 * 1024.0;
const VALUE_BYTES: usize = 60 * 1024;
/// Writes to the one key: about 300 MiB, past four 64 MiB write-ahead log segments.
const WRITES: usize = 5_000;
/// A bound on the write loop (it took 4-40 s on a loaded 2-core machine in a debug build).
const WRITE_TIME_MAX: Duration = Duration::from_secs(120);
/// Live write-ahead log segments a node may hold with the bound: the current one and the one
/// before it (the bound keeps a shard's live entries to a few MiB). Without it, every segment
/// written stays.
const SEGMENTS_MAX: usize = 2;

/// The sum and the largest of the samples of metric `name` on node `id` (over its labels).
async fn metric(cluster: &Cluster, id: u64, name: &str) -> (f64, f64) {
    let (code, body) = http_get(&cluster.admin_addr(id), "/metrics")
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("prometheus text");
    let mut sum = 0.0;
    let mut max = 0.0f64;
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if let Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) = s.value {
            sum += v;
            max = max.max(v);
        }
    }
    (sum, max)
}

/// Write-ahead log segment files in a node's data directory (the spare is not one).
fn segments(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("wal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0)
}

fn value(i: usize) -> Bytes {
    let mut v = vec![(i % 251) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_values_to_one_shard_snapshot_by_bytes_and_keep_the_log_small() {
    let mb = SNAPSHOT_LOG_MB.to_string();
    let cluster = Cluster::start_with(
        3,
        SHARDS,
        &["--snapshot-log-mb", &mb, "--snapshot-logs", "1000000"],
    );
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders");
    let client = cluster.client();
    let started = Instant::now();
    let mut peak_segments = 0;
    let mut written = 0usize;
    let mut chunks = stream::iter(0..WRITES).chunks(200);
    while let Some(chunk) = chunks.next().await {
        assert!(
            started.elapsed() < WRITE_TIME_MAX,
            "only {written} writes in {WRITE_TIME_MAX:?}"
        );
        let failures: Vec<String> = stream::iter(chunk)
            .map(|i| {
                let c = client.clone();
                async move { c.put("big", value(i)).await.err().map(|e| e.to_string()) }
            })
            .buffer_unordered(16)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        assert!(failures.is_empty(), "writes failed: {:?}", &failures[..1]);
        written += 200;
        for node in cluster.nodes.values() {
            peak_segments = peak_segments.max(segments(&node.data_dir));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{written} writes of {VALUE_BYTES} bytes in {elapsed:?} ({:.1} MiB/s); peak segments on a node {peak_segments}",
        (written * VALUE_BYTES) as f64 / MIB / elapsed.as_secs_f64()
    );
    // The last write, alone, so it is the value read back.
    let last = value(WRITES);
    client.put("big", last.clone()).await.expect("last write");

    // Once the last snapshot and purge have landed: the shard's log holds at most the bound
    // since the snapshot plus a quarter of it behind, on every node.
    let log_bytes_max = SNAPSHOT_LOG_MB as f64 * MIB * 1.25 + 2.0 * (VALUE_BYTES + 64) as f64;
    let settled = cluster
        .wait_until(
            "every node's log within the byte bounds",
            Duration::from_secs(20),
            || {
                let cluster = &cluster;
                async move {
                    for id in 1..=3 {
                        let (_, log_bytes) = metric(cluster, id, "ringkv_shard_log_bytes").await;
                        if log_bytes > log_bytes_max {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
    for id in 1..=3 {
        let (_, log_bytes) = metric(&cluster, id, "ringkv_shard_log_bytes").await;
        let (triggered, _) =
            metric(&cluster, id, "ringkv_snapshots_triggered_by_bytes_total").await;
        let (_, built) = metric(&cluster, id, "ringkv_shard_snapshots_built").await;
        let (wal_bytes, _) = metric(&cluster, id, "ringkv_wal_bytes").await;
        let node = &cluster.nodes[&id];
        eprintln!(
            "node {id}: log {:.1} MiB, snapshots triggered by bytes {triggered}, built {built}, \
             wal {:.0} MiB in {} segments",
            log_bytes / MIB,
            wal_bytes / MIB,
            segments(&node.data_dir)
        );
        assert!(
            triggered >= 1.0 && built >= 1.0,
            "node {id}: no snapshot by bytes"
        );
    }
    if settled.is_err() {
        cluster.dump_logs();
    }
    assert_eq!(settled, Ok(()));
    // Segments go once their entries are purged: poll until every node is down to the bound.
    let wal_bounded = cluster
        .wait_until(
            "every node's write-ahead log down to its bound",
            Duration::from_secs(20),
            || {
                let nodes = &cluster.nodes;
                async move {
                    nodes
                        .values()
                        .all(|n| segments(&n.data_dir) <= SEGMENTS_MAX)
                }
            },
        )
        .await;
    assert_eq!(wal_bounded, Ok(()), "peak segments {peak_segments}");
    assert!(
        peak_segments <= SEGMENTS_MAX + 1,
        "a node held {peak_segments} write-ahead log segments during the writes"
    );
    let read = client
        .get("big", ReadConsistency::Linearizable)
        .await
        .expect("read back");
    assert_eq!(read.map(|v| v.value), Some(last));
}
