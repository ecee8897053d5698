//! Core-cluster acceptance against real `ringkv-server` processes on loopback (issue 2):
//! start-up and leader spread, key placement, failover after SIGKILL, catch-up of a restarted
//! node, full-cluster restart, and the CLI's answers and exit codes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use ringkv_client::{Client, ReadConsistency};
use ringkv_proto::pb::ScanRequest;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_tests::{Cluster, cli};

const SHARDS: u32 = 8;

fn key(i: usize) -> String {
    format!("user:{i:05}")
}

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 50))
}

/// Writes keys `range` with 32 concurrent writers; every write must be acknowledged.
async fn write_keys(client: &Client, range: std::ops::Range<usize>) {
    let results: Vec<_> = stream::iter(range)
        .map(|i| {
            let c = client.clone();
            async move { (i, c.put(key(i), value(i)).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (i, r) in results {
        assert!(r.is_ok(), "write of {} failed: {r:?}", key(i));
    }
}

/// Reads keys `range` and checks each value.
async fn check_keys(
    client: &Client,
    range: std::ops::Range<usize>,
    consistency: ReadConsistency,
) -> Result<(), String> {
    let results: Vec<_> = stream::iter(range)
        .map(|i| {
            let c = client.clone();
            async move { (i, c.get(key(i), consistency).await) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (i, r) in results {
        match r {
            Ok(Some(v)) if v.value == value(i) => {}
            other => return Err(format!("{}: {other:?}", key(i))),
        }
    }
    Ok(())
}

fn leader_counts(leaders: &[u64]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for l in leaders {
        *m.entry(*l).or_default() += 1;
    }
    m
}

fn spread_ok(leaders: &[u64], nodes: u64) -> bool {
    let counts = leader_counts(leaders);
    let lo = leaders.len() / nodes as usize;
    let hi = leaders.len().div_ceil(nodes as usize);
    counts.len() == nodes as usize && counts.values().all(|&c| c >= lo && c <= hi)
}

/// Waits until every node leads 2 or 3 of the 8 shards (the balancer's target).
async fn wait_for_spread(cluster: &Cluster) {
    let spread = cluster
        .wait_until("leaders spread 3/3/2", Duration::from_secs(20), || async {
            cluster
                .agreed_leaders_public()
                .await
                .is_some_and(|l| spread_ok(&l, 3))
        })
        .await;
    assert_eq!(spread, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_spreads_leaders_places_keys_evenly_and_serves_through_any_node() {
    let started = Instant::now();
    let cluster = Cluster::start(3, SHARDS);
    let leaders = cluster.wait_for_leaders(Duration::from_secs(10)).await;
    assert!(leaders.is_ok(), "{leaders:?}");
    eprintln!(
        "every shard had a leader {:?} after spawn",
        started.elapsed()
    );

    // The CLI, through each node's endpoint.
    let eps = cluster.endpoints();
    let (code, _, err) = cli(&eps[..1], &["put", "greeting", "hello ringkv"]);
    assert_eq!(code, 0, "{err}");
    for ep in &eps {
        let (code, out, err) = cli(std::slice::from_ref(ep), &["get", "greeting"]);
        assert_eq!(
            (code, out.as_str()),
            (0, "hello ringkv\n"),
            "via {ep}: {err}"
        );
    }

    // 1,000 keys, all readable.
    let client = cluster.client();
    write_keys(&client, 0..1000).await;
    assert_eq!(
        check_keys(&client, 0..1000, ReadConsistency::Linearizable).await,
        Ok(())
    );

    // Placement, measured on the servers: each shard's own scan.
    let mut kv = KvClient::connect(format!("http://{}", eps[0]))
        .await
        .expect("connect");
    let mut per_shard = Vec::new();
    for shard in 0..SHARDS {
        let req = ScanRequest {
            prefix: "user:".into(),
            limit: 10_000,
            shard: Some(shard),
            ..Default::default()
        };
        // The balancer may be moving this shard's leader right now; the raw gRPC client has no
        // retries of its own, so retry the retryable answer within a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let items = loop {
            match kv.scan(req.clone()).await {
                Ok(r) => break r.into_inner().items.len(),
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    eprintln!("shard {shard} scan: {} (retrying)", s.message());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("shard {shard} scan: {s:?}"),
            }
        };
        per_shard.push(items);
    }
    assert_eq!(per_shard.iter().sum::<usize>(), 1000, "{per_shard:?}");
    let mean = 1000.0 / SHARDS as f64;
    assert!(
        per_shard.iter().all(|&n| (n as f64) <= 2.0 * mean),
        "uneven placement: {per_shard:?}"
    );
    eprintln!("keys per shard: {per_shard:?}");

    // Leaders spread: every node leads 2 or 3 of the 8 shards.
    wait_for_spread(&cluster).await;

    // A scan across all shards comes back merged in key order.
    let page = client
        .scan("user:0001", 0, ReadConsistency::Linearizable)
        .await
        .expect("scan");
    let keys: Vec<String> = page
        .items
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    let want: Vec<String> = (10..20).map(key).collect();
    assert_eq!(keys, want);
}

/// Leadership moves while readers and writers run without pause: the client follows each move,
/// so not one request may fail. The moves are the balancer's transfers right after start-up and
/// back to a restarted node (killed and failed over with the load stopped first). A transfer is
/// the moment nodes briefly disagree on the leader and redirect to each other; a client that
/// followed such redirects without pausing used up its attempts in milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_transfers_under_load_fail_no_request() {
    let mut cluster = Cluster::start(3, SHARDS);
    let mut moved_total = 0;
    for round in 0..3u64 {
        let before = cluster
            .wait_for_leaders(Duration::from_secs(20))
            .await
            .expect("leaders");
        let (moved, ok, errors) = load_until_spread(&cluster, &before).await;
        eprintln!("round {round}: {moved} leaders moved; {ok} requests succeeded");
        if !errors.is_empty() {
            cluster.dump_logs();
        }
        assert!(
            errors.is_empty(),
            "round {round}: {} requests failed during leader transfers, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        moved_total += moved;
        if round == 2 {
            break;
        }
        // The next round's moves: one node dies (the load is stopped), the others take over its
        // shards, and once it is back the balancer hands them back to it under load.
        let victim = round + 2;
        cluster.kill(victim);
        cluster
            .wait_for_leaders(Duration::from_secs(20))
            .await
            .expect("failover");
        cluster.restart(victim);
    }
    assert!(
        moved_total > 0,
        "no leader moved, so the test exercised nothing"
    );
}

/// Runs 12 request loops (a third writing) until leaders are spread, plus half a second.
/// Returns how many shards changed leader, the successes, and the failures.
async fn load_until_spread(cluster: &Cluster, before: &[u64]) -> (usize, u64, Vec<String>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let client = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..12usize {
        let (client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            // Bounded: the load ends on `stop` or after this many requests.
            for n in 0..50_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = (t * 7_919 + n * 13) % 400;
                let r = if t % 3 == 0 {
                    client.put(key(i), value(i)).await.map(|_| ())
                } else {
                    client
                        .get(key(i), ReadConsistency::Linearizable)
                        .await
                        .map(|_| ())
                };
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => errors.push(format!("{}: {e}", key(i))),
                }
            }
            (ok, errors)
        }));
    }
    wait_for_spread(cluster).await;
    let after = cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders after spreading");
    // Keep the load on a little past the last transfer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut errors) = (0u64, Vec::new());
    for task in tasks {
        let (o, e) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("load task ends within its request deadline")
            .expect("load task");
        ok += o;
        errors.extend(e);
    }
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    (moved, ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_busiest_leader_fails_over_and_the_node_catches_up() {
    let mut cluster = Cluster::start(3, SHARDS);
    assert!(
        cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .is_ok()
    );
    let client = cluster.client();
    write_keys(&client, 0..300).await;
    wait_for_spread(&cluster).await;

    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(5))
        .await
        .expect("leaders");
    let counts = leader_counts(&leaders);
    let victim = counts
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(id, _)| *id)
        .expect("a leader");
    eprintln!(
        "killing node {victim}, leader of {} shards",
        counts[&victim]
    );
    cluster.kill(victim);
    let killed_at = Instant::now();
    let failover = cluster.wait_for_leaders(Duration::from_secs(5)).await;
    assert!(failover.is_ok(), "{failover:?}");
    eprintln!(
        "every shard had a live leader {:?} after SIGKILL",
        killed_at.elapsed()
    );

    // Writes succeed on the survivors; every acknowledged key is readable.
    let survivors: Vec<String> = cluster
        .endpoints()
        .into_iter()
        .filter(|e| *e != cluster.addr(victim))
        .collect();
    let client = Client::new(ringkv_client::ClientOptions::new(survivors)).expect("client");
    write_keys(&client, 300..600).await;
    assert_eq!(
        check_keys(&client, 0..600, ReadConsistency::Linearizable).await,
        Ok(())
    );

    // The restarted node catches up and serves serializable reads of every key.
    cluster.restart(victim);
    let own = cluster.client_of(victim);
    let caught_up = cluster
        .wait_until(
            "restarted node serves every key",
            Duration::from_secs(30),
            || async {
                check_keys(&own, 0..600, ReadConsistency::Serializable)
                    .await
                    .is_ok()
            },
        )
        .await;
    assert_eq!(caught_up, Ok(()));
    // And through the CLI, on that node only.
    let (code, out, err) = cli(
        &[cluster.addr(victim)],
        &["get", "--serializable", &key(599)],
    );
    assert_eq!((code, out.trim_end()), (0, value(599).as_str()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cluster_restart_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, SHARDS);
    assert!(
        cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .is_ok()
    );
    write_keys(&cluster.client(), 0..200).await;
    for id in 1..=3 {
        let status = cluster.stop(id);
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM"
        );
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    assert!(
        cluster
            .wait_for_leaders(Duration::from_secs(15))
            .await
            .is_ok()
    );
    assert_eq!(
        check_keys(&cluster.client(), 0..200, ReadConsistency::Linearizable).await,
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_answers_compare_and_swap_and_exit_codes() {
    let cluster = Cluster::start(3, SHARDS);
    assert!(
        cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .is_ok()
    );
    let eps = cluster.endpoints();
    let run = |args: &[&str]| cli(&eps, args);

    // An order's life: created → paid → shipped, guarded by value and by version.
    assert_eq!(
        run(&["cas", "order:{42}:state", "created", "--expect-absent"]).0,
        0
    );
    let (code, _, err) = run(&["cas", "order:{42}:state", "shipped", "--expect", "paid"]);
    assert_eq!(code, 1, "compare must fail: {err}");
    assert!(err.contains("compare failed"), "{err}");
    assert_eq!(
        run(&["cas", "order:{42}:state", "paid", "--expect", "created"]).0,
        0
    );
    let client = cluster.client();
    let v = client
        .get("order:{42}:state", ReadConsistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(v.value, Bytes::from_static(b"paid"));
    assert_eq!(
        run(&[
            "cas",
            "order:{42}:state",
            "shipped",
            "--expect-version",
            &(v.version + 1).to_string()
        ])
        .0,
        1
    );
    assert_eq!(
        run(&[
            "cas",
            "order:{42}:state",
            "shipped",
            "--expect-version",
            &v.version.to_string()
        ])
        .0,
        0
    );
    assert_eq!(run(&["get", "order:{42}:state"]).1, "shipped\n");

    // Not found is a negative answer: exit 1.
    assert_eq!(run(&["get", "no-such-key"]).0, 1);
    assert_eq!(run(&["del", "no-such-key"]).0, 1);
    assert_eq!(run(&["del", "order:{42}:state"]).0, 0);

    // Scan prints key<TAB>value lines in key order.
    for i in [3, 1, 2] {
        assert_eq!(run(&["put", &format!("scan:{i}"), &format!("v{i}")]).0, 0);
    }
    assert_eq!(
        run(&["scan", "scan:"]).1,
        "scan:1\tv1\nscan:2\tv2\nscan:3\tv3\n"
    );
    assert_eq!(
        run(&["scan", "scan:", "--limit", "2"]).1,
        "scan:1\tv1\nscan:2\tv2\n"
    );

    // Status as JSON, in the pinned shape.
    let (code, out, _) = run(&["status", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("status json");
    assert_eq!(
        json["shards"].as_array().map(Vec::len),
        Some(SHARDS as usize)
    );
    assert!(json["shards"][0]["leader"].is_u64());
    assert!(json["shards"][0]["term"].is_u64());
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["nodes"][0]["reachable"], serde_json::Value::Bool(true));

    // The status table is plain when piped, coloured on a terminal (a pseudo-terminal made by
    // util-linux `script`), and plain again with NO_COLOR.
    let (code, plain, _) = run(&["status"]);
    assert_eq!(code, 0);
    assert!(
        plain.contains("leader") && !plain.contains('\x1b'),
        "{plain}"
    );
    let on_tty = |no_color: bool| {
        let line = format!(
            "{} --endpoints {} status",
            ringkv_tests::binary("ringkv").display(),
            eps.join(",")
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        cmd.output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match on_tty(false) {
        Some(tty) => {
            assert!(
                tty.contains("\x1b[") && tty.contains("leader"),
                "no colour on a terminal: {tty:?}"
            );
            let tty_plain = on_tty(true).unwrap_or_default();
            assert!(
                !tty_plain.contains('\x1b'),
                "NO_COLOR ignored: {tty_plain:?}"
            );
        }
        None => {
            ringkv_tests::skip("the terminal colour check: `script` (util-linux) not installed")
        }
    }

    // Usage errors exit 2.
    assert_eq!(run(&["cas", "k", "v"]).0, 2);
    assert_eq!(run(&["frobnicate"]).0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_loses_nothing() {
    let cluster = Cluster::start(3, SHARDS);
    assert!(
        cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .is_ok()
    );
    let eps = cluster.endpoints();
    let client = cluster.client();
    client.put("kept", "safe").await.expect("put");

    let big_key = "k".repeat(4097);
    let (code, _, err) = cli(&eps, &["put", &big_key, "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key_bytes_max=4096"), "{err}");
    let (code, _, err) = cli(&eps, &["put", "", "v"]);
    assert_eq!(code, 2, "{err}");

    let big_value = vec![b'v'; 65_537];
    let e = client
        .put("k", big_value)
        .await
        .expect_err("oversized value");
    assert!(
        matches!(&e, ringkv_client::Error::Invalid(m) if m.contains("value_bytes_max=65536")),
        "{e}"
    );
    // Exactly at the limit is fine.
    client
        .put("max", vec![b'v'; 65_536])
        .await
        .expect("value at the limit");

    // A client that names another cluster is refused.
    let mut opts = ringkv_client::ClientOptions::new(eps.clone());
    opts.cluster_id = "someone-else".into();
    let foreign = Client::new(opts).expect("client");
    let e = foreign.put("x", "y").await.expect_err("wrong cluster");
    assert!(
        matches!(&e, ringkv_client::Error::Invalid(m) if m.contains("wrong cluster id")),
        "{e}"
    );

    // An unknown shard id is refused by name.
    let mut kv = KvClient::connect(format!("http://{}", eps[0]))
        .await
        .expect("connect");
    let s = kv
        .scan(ScanRequest {
            shard: Some(99),
            ..Default::default()
        })
        .await
        .expect_err("unknown shard");
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().contains("unknown shard id 99"),
        "{}",
        s.message()
    );

    // Nothing was lost and the cluster still serves.
    let v = client
        .get("kept", ReadConsistency::Linearizable)
        .await
        .expect("get");
    assert_eq!(v.map(|v| v.value), Some(Bytes::from_static(b"safe")));
    assert!(
        client
            .get("x", ReadConsistency::Linearizable)
            .await
            .expect("get")
            .is_none()
    );
}

#[test]
fn cli_reports_an_unreachable_cluster_with_exit_3() {
    let dead = format!("127.0.0.1:{}", ringkv_tests::free_port());
    let out = std::process::Command::new(ringkv_tests::binary("ringkv"))
        .args([
            "--endpoints",
            &dead,
            "--timeout-ms",
            "1500",
            "put",
            "k",
            "v",
        ])
        .output()
        .expect("run ringkv");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
