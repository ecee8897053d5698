//! The admin HTTP endpoint against real servers: `/health`, `/ready` turning not-ready when a
//! node loses its quorum and ready again when it returns, `/metrics` parsing as Prometheus text
//! with request counters and latency histograms that move under load, and `/status`.

use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use ringkv_tests::{Cluster, http_get};

const SHARDS: u32 = 8;

async fn scrape(cluster: &Cluster, id: u64) -> Vec<Sample> {
    let (code, body) = http_get(&cluster.admin_addr(id), "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// Sum of a counter (or of a histogram's counts) over every label set matching `labels`.
fn total(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map(|b| b.count).unwrap_or(0.0),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn ready(cluster: &Cluster, id: u64) -> (u16, String) {
    http_get(&cluster.admin_addr(id), "/ready")
        .await
        .unwrap_or((0, "no answer".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_under_load_and_status_is_served() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    for id in 1..=3 {
        let (code, body) = http_get(&cluster.admin_addr(id), "/health")
            .await
            .expect("GET /health");
        assert_eq!((code, body.as_str()), (200, "ok\n"));
    }

    let mut before = 0.0;
    for id in 1..=3 {
        before += total(
            &scrape(&cluster, id).await,
            "ringkv_requests_total",
            &[("op", "put"), ("code", "OK")],
        );
    }
    let client = cluster.client();
    for i in 0..200 {
        client.put(format!("m{i}"), "v").await.expect("put");
    }
    let mut after = 0.0;
    let mut latency_count = 0.0;
    let mut proposals = 0.0;
    for id in 1..=3 {
        let samples = scrape(&cluster, id).await;
        after += total(
            &samples,
            "ringkv_requests_total",
            &[("op", "put"), ("code", "OK")],
        );
        latency_count += total(
            &samples,
            "ringkv_request_duration_seconds",
            &[("op", "put")],
        );
        proposals += total(&samples, "ringkv_proposal_duration_seconds", &[]);
        // Every replica applies the writes, leader or not.
        assert!(
            total(&samples, "ringkv_apply_batch_duration_seconds", &[]) > 0.0,
            "node {id}: the apply histogram did not move"
        );
        assert!(total(&samples, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(total(&samples, "ringkv_sled_disk_bytes", &[]) > 0.0);
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.metric == "ringkv_shard_term")
                .count(),
            SHARDS as usize,
            "one term gauge per shard"
        );
    }
    assert!(
        after - before >= 200.0,
        "put counter moved by {}",
        after - before
    );
    assert!(
        latency_count >= 200.0,
        "latency histogram counted {latency_count}"
    );
    assert!(proposals >= 200.0, "proposal histogram counted {proposals}");
    // The nodes are scraped one after another while the balancer may move a leader, so a
    // single pass can count a moving shard twice or not at all: wait for a pass that agrees.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut leaders = 0.0;
        for id in 1..=3 {
            leaders += total(&scrape(&cluster, id).await, "ringkv_shard_is_leader", &[]);
        }
        if leaders == SHARDS as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape pass within 10 s found exactly one leader per shard (last: {leaders})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, body) = http_get(&cluster.admin_addr(2), "/status")
        .await
        .expect("GET /status");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("status json");
    assert_eq!(json["node_id"], 2);
    assert_eq!(
        json["shards"].as_array().map(Vec::len),
        Some(SHARDS as usize)
    );
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_follows_quorum_loss_and_recovery() {
    let mut cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let all_ready = cluster
        .wait_until("every node ready", Duration::from_secs(10), || async {
            let mut ok = true;
            for id in 1..=3 {
                ok &= ready(&cluster, id).await.0 == 200;
            }
            ok
        })
        .await;
    assert_eq!(all_ready, Ok(()));

    // Node 1 alone cannot serve anything: it must say so, shard by shard.
    cluster.kill(2);
    cluster.kill(3);
    let lonely = cluster
        .wait_until(
            "node 1 not ready for every shard",
            Duration::from_secs(15),
            || async {
                let (code, body) = ready(&cluster, 1).await;
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                code == 503
                    && json["not_ready"].as_object().map(|m| m.len()) == Some(SHARDS as usize)
            },
        )
        .await;
    assert_eq!(lonely, Ok(()));
    let (_, body) = ready(&cluster, 1).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("ready json");
    assert_eq!(json["ready"], false);
    eprintln!("node 1 alone: {body}");
    assert_eq!(
        json["not_ready"].as_object().map(|m| m.len()),
        Some(SHARDS as usize),
        "every shard not ready: {body}"
    );

    // With the others back, it is ready again.
    cluster.restart(2);
    cluster.restart(3);
    let back = cluster
        .wait_until(
            "every node ready again",
            Duration::from_secs(20),
            || async {
                let mut ok = true;
                for id in 1..=3 {
                    ok &= ready(&cluster, id).await.0 == 200;
                }
                ok
            },
        )
        .await;
    if back.is_err() {
        for id in 1..=3 {
            eprintln!("node {id}: {:?}", ready(&cluster, id).await);
        }
    }
    assert_eq!(back, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_every_node_and_shard() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let (code, page) = http_get(&cluster.admin_addr(1), "/").await.expect("GET /");
    assert_eq!(code, 200);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
    let url = format!("http://{}/", cluster.admin_addr(1));
    // Keep the screenshot where a person can look at it: target/ringkv-dashboard.png.
    let png = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/ringkv-dashboard.png"
    ));
    let Some(dom) = ringkv_tests::chromium_dom(&url, 3_000, Some(&png)) else {
        return;
    };
    eprintln!("dashboard screenshot: {}", png.display());
    // Header row + one row per node / shard, filled in by the page's script.
    for id in 1..=3 {
        assert!(dom.contains(&format!("node {id}")), "node {id} shown");
    }
    let shard_rows =
        dom.matches("class=\"l leader\"").count() + dom.matches("class=\"l follower\"").count();
    assert_eq!(
        shard_rows, SHARDS as usize,
        "every shard shown: {dom:.2000}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_node_becomes_ready_again_and_the_majority_stays_ready() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    // Node 3 must lead some shards, so pausing it forces elections.
    cluster.wait_until_leads(3, Duration::from_secs(20)).await;
    let led_by_3: Vec<String> = cluster
        .wait_for_leaders(Duration::from_secs(5))
        .await
        .expect("leaders")
        .iter()
        .enumerate()
        .filter(|(_, l)| **l == 3)
        .map(|(s, _)| s.to_string())
        .collect();
    let all_ready = cluster
        .wait_until("every node ready", Duration::from_secs(10), || async {
            let mut ok = true;
            for id in 1..=3 {
                ok &= ready(&cluster, id).await.0 == 200;
            }
            ok
        })
        .await;
    assert_eq!(all_ready, Ok(()));

    // Writes continue while node 3 is frozen, so it has entries to catch up on.
    let client = cluster.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = client.put(format!("p{i}"), "v").await;
            }
        })
    };
    let paused_at = std::time::Instant::now();
    cluster.pause(3);
    // The majority stays ready throughout: the shards node 3 led are re-elected within the
    // readiness window (5× the election timeout), and no other shard is affected.
    let mut last_not_ready = Duration::ZERO;
    let until = paused_at + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        for id in 1..=2 {
            let (code, body) = ready(&cluster, id).await;
            if code != 200 {
                last_not_ready = paused_at.elapsed();
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let shards: Vec<&String> = json["not_ready"]
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                assert!(
                    shards.iter().all(|s| led_by_3.contains(s)),
                    "node {id} not ready for shards node 3 did not lead: {body}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "majority last not ready {last_not_ready:?} after the pause (shards {led_by_3:?} re-elected)"
    );
    assert_eq!(
        last_not_ready,
        Duration::ZERO,
        "the majority reported not ready during node 3's pause"
    );
    cluster.resume(3);
    let resumed_at = std::time::Instant::now();
    let back = cluster
        .wait_until("node 3 ready again", Duration::from_secs(15), || async {
            ready(&cluster, 3).await.0 == 200
        })
        .await;
    eprintln!("node 3 ready {:?} after SIGCONT", resumed_at.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(20), writer).await;
    assert_eq!(back, Ok(()));
}
