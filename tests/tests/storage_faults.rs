//! Storage faults against real `ringkv-server` processes (issue 15).
//!
//! A member that lost its disk and comes back under its old id must not vote as if it still
//! had its votes and entries: with the only node holding the acknowledged writes down, the
//! wiped node and a stale node must not elect the stale one (reads would find acknowledged
//! keys absent). Once a full member is back, the wiped node catches up, is re-admitted, and
//! votes again.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, ClientOptions, ReadConsistency};
use ringkv_tests::Cluster;

const SHARDS: u32 = 4;
const KEYS: usize = 60;

fn client_of(cluster: &Cluster, ids: &[u64], timeout: Duration) -> Client {
    let mut opts = ClientOptions::new(ids.iter().map(|id| cluster.addr(*id)).collect());
    opts.request_timeout = timeout;
    opts.attempt_timeout = Duration::from_millis(800).min(timeout);
    Client::new(opts).expect("client")
}

/// Every shard's recorded incarnation of `node`, as each shard's leader reports it, equals
/// the incarnation `node` reports for its own data directory.
async fn recorded_everywhere(cluster: &Cluster, node: u64) -> bool {
    let statuses = cluster.statuses().await;
    let Some(Some(own)) = statuses.get(&node) else {
        return false;
    };
    let mut shards_ok = 0;
    for s in statuses.values().flatten() {
        for sh in &s.shards {
            if sh.role != "leader" {
                continue;
            }
            let recorded = sh
                .voters
                .iter()
                .zip(&sh.voter_incarnations)
                .find(|(v, _)| **v == node)
                .map(|(_, i)| *i);
            if recorded != Some(own.incarnation) {
                return false;
            }
            shards_ok += 1;
        }
    }
    shards_ok == SHARDS as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_never_helps_elect_a_leader_that_lacks_acknowledged_writes() {
    let mut cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders");

    // Node 2 goes down (SIGKILL rather than SIGSTOP: a frozen process still receives appends
    // into its socket buffers and may hold the writes after all); nodes 1 and 3 acknowledge
    // every write.
    cluster.kill(2);
    let writer = client_of(&cluster, &[1, 3], Duration::from_secs(20));
    let mut acked = Vec::new();
    for i in 0..KEYS {
        let (k, v) = (format!("wiped:{i}"), format!("v{i}"));
        writer
            .put(k.clone(), v.clone())
            .await
            .unwrap_or_else(|e| panic!("write {k} with nodes 1 and 3 up: {e}"));
        acked.push((k, v));
    }
    drop(writer);

    // Node 3 loses its disk and comes back empty under its id; node 1, the only other node
    // with the writes, goes down; stale node 2 comes back.
    cluster.kill(3);
    let dir = cluster.nodes[&3].data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe node 3");
    cluster.kill(1);
    cluster.restart(3);
    cluster.restart(2);

    // For a while (several election timeouts), no acknowledged key may read as absent or
    // changed: the reads either fail (no leader) or see the writes.
    let reader = client_of(&cluster, &[2, 3], Duration::from_millis(1500));
    let until = Instant::now() + Duration::from_secs(8);
    let (mut reads_ok, mut reads_failed) = (0, 0);
    while Instant::now() < until {
        for (k, v) in acked.iter().step_by(5) {
            match reader.get(k.clone(), ReadConsistency::Linearizable).await {
                Ok(got) => {
                    if got.as_ref().map(|g| &g.value) != Some(&Bytes::from(v.clone())) {
                        cluster.dump_logs();
                        panic!(
                            "acknowledged {k} read as {:?} while node 1 was down",
                            got.map(|g| g.value)
                        );
                    }
                    reads_ok += 1;
                }
                Err(_) => reads_failed += 1,
            }
        }
    }
    eprintln!("with node 1 down: {reads_ok} reads saw the writes, {reads_failed} failed");
    assert!(
        reads_failed > 0,
        "no read failed: nodes 2 and 3 served a leader"
    );

    // Node 1 returns: every key is back, node 3 catches up and is re-admitted.
    cluster.restart(1);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders with node 1 back");
    let all = cluster.client();
    for (k, v) in &acked {
        let got = all
            .get(k.clone(), ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("read {k}: {e}"));
        assert_eq!(got.map(|g| g.value), Some(Bytes::from(v.clone())), "{k}");
    }
    if let Err(e) = cluster
        .wait_until(
            "node 3's new data directory recorded in every shard",
            Duration::from_secs(30),
            || recorded_everywhere(&cluster, 3),
        )
        .await
    {
        cluster.dump_logs();
        panic!("{e}");
    }

    // Re-admitted, node 3 votes again: without node 1, nodes 2 and 3 elect leaders that have
    // every write.
    cluster.kill(1);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("nodes 2 and 3 elect leaders once node 3 is re-admitted");
    let reader = client_of(&cluster, &[2, 3], Duration::from_secs(20));
    for (k, v) in &acked {
        let got = reader
            .get(k.clone(), ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("read {k} from nodes 2 and 3: {e}"));
        assert_eq!(got.map(|g| g.value), Some(Bytes::from(v.clone())), "{k}");
    }
}

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A raw put under a fixed `(client_id, sequence)`: what a client's retry of one write sends.
fn identified_put(key: &str, value: &str) -> ringkv_proto::pb::PutRequest {
    ringkv_proto::pb::PutRequest {
        header: Some(ringkv_proto::pb::RequestHeader {
            client_id: 4242,
            sequence: 1,
            ..Default::default()
        }),
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

/// Every node's wall clock jumps an hour ahead (libfaketime) after a write: nothing expires
/// early, so a late retry of that write is still recognised and applies nothing. Before
/// cluster time, leaders stamped wall-clock time, the next expiry pass (every 1,024 entries)
/// dropped every client's records, and the retry applied a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wall_clock_an_hour_ahead_expires_no_deduplication_record() {
    if !std::path::Path::new(FAKETIME_LIB).exists() {
        ringkv_tests::skip("libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let mut cluster = Cluster::start(3, 1);
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders");
    let mut kv =
        ringkv_proto::pb::kv_client::KvClient::connect(format!("http://{}", cluster.addr(1)))
            .await
            .expect("connect");
    // Any node forwards to the leader; retried until a leader answers.
    let first = kv
        .put(identified_put("clock:order", "paid-once"))
        .await
        .expect("first put")
        .into_inner();

    for id in 1..=3 {
        cluster.stop(id);
        cluster.set_env(id, "LD_PRELOAD", FAKETIME_LIB);
        cluster.set_env(id, "FAKETIME", "+1h");
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders with clocks an hour ahead");
    // Past the next expiry pass (every 1,024 log indexes).
    let writer = cluster.client();
    for i in 0..1_100 {
        writer
            .put(format!("clock:filler:{}", i % 50), "x")
            .await
            .unwrap_or_else(|e| panic!("filler write {i}: {e}"));
    }
    let mut kv =
        ringkv_proto::pb::kv_client::KvClient::connect(format!("http://{}", cluster.addr(1)))
            .await
            .expect("connect");
    let retry = kv
        .put(identified_put("clock:order", "paid-twice"))
        .await
        .expect("late retry")
        .into_inner();
    assert_eq!(
        retry.version, first.version,
        "the retry was answered as the write it repeats, not applied again"
    );
    let got = cluster
        .client()
        .get("clock:order", ReadConsistency::Linearizable)
        .await
        .expect("read")
        .map(|g| g.value);
    assert_eq!(got, Some(Bytes::from_static(b"paid-once")));
}
