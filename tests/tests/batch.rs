//! Request batching against real servers: a burst of concurrent requests from one client
//! travels in `Batch` RPCs (the servers' `ringkv_batch_items` shows batches of more than one),
//! and every request still gets its own answer: writes that were acknowledged read back, a bad
//! request in the middle of a batch fails alone with its own clear error, compare-and-swaps and
//! deletes answer per key. The server refuses an oversized batch and an empty item clearly.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use prometheus_parse::{Scrape, Value};
use ringkv_client::{Client, ClientOptions, Error, Expect, ReadConsistency};
use ringkv_proto::meta;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{BatchItem, BatchRequest, GetRequest, batch_item, batch_result};
use ringkv_tests::{Cluster, http_get};

const SHARDS: u32 = 8;
const BURST: usize = 300;

/// What request `i` of the burst does.
enum Step {
    Put,
    /// A value one byte over the limit: must fail alone, as invalid.
    Oversized,
    /// Compare-and-swap expecting a value the key never had: must answer "not swapped".
    CasMiss,
    /// Delete of a key never written: must answer "did not exist".
    DeleteAbsent,
}

fn step(i: usize) -> Step {
    match i % 10 {
        3 => Step::Oversized,
        6 => Step::CasMiss,
        9 => Step::DeleteAbsent,
        _ => Step::Put,
    }
}

fn key(i: usize) -> String {
    format!("batch:{i:04}")
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("v{i}-{}", "y".repeat(i % 40)))
}

/// Sum and count of `ringkv_batch_items` on one node.
async fn batch_items(cluster: &Cluster, id: u64) -> (f64, f64) {
    let (code, body) = http_get(&cluster.admin_addr(id), "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let mut out = (0.0, 0.0);
    for s in scrape.samples {
        if s.metric == "ringkv_batch_items" {
            if let Value::Histogram(buckets) = &s.value {
                out.1 += buckets.last().map(|b| b.count).unwrap_or(0.0);
            }
        } else if s.metric == "ringkv_batch_items_sum"
            && let Value::Untyped(v) | Value::Gauge(v) | Value::Counter(v) = s.value
        {
            out.0 += v;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_travels_in_batches_and_each_request_gets_its_own_answer() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let client = cluster.client();
    assert!(client.options().batch_requests, "batching is the default");
    // Learn the leaders first, so the burst goes straight to them.
    client.put("warm-up", "x").await.expect("warm-up put");

    let outcomes = join_all((0..BURST).map(|i| {
        let client = client.clone();
        async move {
            match step(i) {
                Step::Put => client.put(key(i), value(i)).await.map(|_| ()),
                Step::Oversized => match client.put(key(i), vec![b'o'; 65_537]).await {
                    Err(Error::Invalid(m)) if m.contains("value_bytes_max") => Ok(()),
                    other => Err(Error::Invalid(format!(
                        "oversized put {i} answered {other:?}"
                    ))),
                },
                Step::CasMiss => {
                    let r = client
                        .cas(key(i), Expect::Value(Bytes::from("never")), Some(value(i)))
                        .await?;
                    if r.succeeded || r.current.is_some() {
                        return Err(Error::Invalid(format!("cas {i} answered {r:?}")));
                    }
                    Ok(())
                }
                Step::DeleteAbsent => match client.delete(key(i)).await? {
                    false => Ok(()),
                    true => Err(Error::Invalid(format!("delete {i} found a key"))),
                },
            }
        }
    }))
    .await;
    let failed: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("{i}: {e}")))
        .collect();
    if !failed.is_empty() {
        cluster.dump_logs();
    }
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Read everything back through a client that does not batch.
    let mut opts = ClientOptions::new(cluster.endpoints());
    opts.batch_requests = false;
    let reader = Client::new(opts).expect("client");
    for i in 0..BURST {
        let got = reader
            .get(key(i), ReadConsistency::Linearizable)
            .await
            .expect("get");
        match step(i) {
            Step::Put => assert_eq!(got.map(|v| v.value), Some(value(i)), "key {i}"),
            _ => assert_eq!(got, None, "key {i} must be absent"),
        }
    }

    let mut sum = 0.0;
    let mut count = 0.0;
    for id in 1..=3 {
        let (s, c) = batch_items(&cluster, id).await;
        sum += s;
        count += c;
    }
    eprintln!("{count} batches carried {sum} requests");
    assert!(count >= 1.0, "no Batch RPC reached any node");
    assert!(
        sum > count,
        "no batch carried more than one request ({count} batches, {sum} requests)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_refuses_an_oversized_batch_and_an_empty_item_clearly() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let mut kv = KvClient::connect(format!("http://{}", cluster.addr(1)))
        .await
        .expect("connect");

    let get = |k: &str| BatchItem {
        op: Some(batch_item::Op::Get(GetRequest {
            header: None,
            key: Bytes::from(k.to_string()),
            serializable: true,
        })),
    };
    let too_many = BatchRequest {
        items: (0..1025).map(|i| get(&format!("k{i}"))).collect(),
    };
    let e = kv.batch(too_many).await.expect_err("1,025 items");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("at most 1024"), "{e:?}");
    assert_eq!(
        e.metadata()
            .get(meta::ERROR_KIND)
            .and_then(|v| v.to_str().ok()),
        Some(meta::KIND_INVALID)
    );

    // An empty item fails alone; the item beside it is served.
    let r = kv
        .batch(BatchRequest {
            items: vec![BatchItem { op: None }, get("absent")],
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(r.results.len(), 2);
    match &r.results[0].result {
        Some(batch_result::Result::Error(e)) => {
            assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{e:?}");
            assert_eq!(
                r.results[0]
                    .metadata
                    .get(meta::ERROR_KIND)
                    .map(String::as_str),
                Some(meta::KIND_INVALID)
            );
        }
        other => panic!("empty item answered {other:?}"),
    }
    match &r.results[1].result {
        Some(batch_result::Result::Get(g)) => assert!(!g.found),
        other => panic!("get answered {other:?}"),
    }
}
