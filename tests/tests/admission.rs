//! Admission by time against a real `ringkv-server` (issue 18, items 2 and 8).
//!
//! A node with room for 4 requests in flight and 20 ms of queue time gets a burst of 500
//! concurrent puts: some are refused at once as overloaded (`RESOURCE_EXHAUSTED`, kind
//! `overloaded`, with a retry-after hint), each refusal is answered quickly, every refused put
//! reads back absent (nothing was written) and every acknowledged one reads back. A put whose
//! caller's deadline has already passed is refused without being proposed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use ringkv_client::ReadConsistency;
use ringkv_proto::meta;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{PutRequest, RequestHeader};
use ringkv_tests::{Cluster, metric_sum};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const SHARDS: u32 = 2;
const BURST: usize = 500;
/// Channels the burst is spread over (HTTP/2 streams per connection are limited).
const CHANNELS: usize = 8;
/// A refusal must come back within this (the queue-time limit is 20 ms).
const REFUSAL_TIME_MAX: Duration = Duration::from_secs(1);

fn key(i: usize) -> String {
    format!("admission:{i:04}")
}

fn put(client_id: u64, i: usize) -> PutRequest {
    PutRequest {
        header: Some(RequestHeader {
            cluster_id: String::new(),
            client_id,
            sequence: i as u64 + 1,
            acked_below: 0,
            forwarded: false,
        }),
        key: Bytes::from(key(i)),
        value: Bytes::from(format!("value-{i}")),
        ..Default::default()
    }
}

/// How one put of the burst ended.
enum Answer {
    Acked,
    /// Refused as overloaded after `took`, with this retry-after hint (ms).
    Refused {
        took: Duration,
        retry_after_ms: u64,
    },
}

async fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// `ringkv_requests_rejected_total{class="write",reason}` on the node.
async fn rejected_writes(cluster: &Cluster, reason: &str) -> f64 {
    let labels = [("class", "write"), ("reason", reason)];
    metric_sum(
        &cluster.admin_addr(1),
        "ringkv_requests_rejected_total",
        &labels,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_beyond_the_limit_is_refused_quickly_and_definitely() {
    let cluster = Cluster::start_with(
        1,
        SHARDS,
        &["--inflight-requests-max", "4", "--queue-time-max-ms", "20"],
    );
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let addr = cluster.addr(1);
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(channel(&addr).await);
    }
    let client_id = 0x5eed_0000_0000_0001;
    let answers = join_all((0..BURST).map(|i| {
        let mut kv = KvClient::new(channels[i % CHANNELS].clone());
        async move {
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), kv.put(put(client_id, i))).await;
            let took = started.elapsed();
            match r {
                Ok(Ok(_)) => Answer::Acked,
                Ok(Err(s)) => {
                    let md = s.metadata();
                    let kind = md.get(meta::ERROR_KIND).and_then(|v| v.to_str().ok());
                    assert_eq!(s.code(), Code::ResourceExhausted, "put {i}: {s:?}");
                    assert_eq!(kind, Some(meta::KIND_OVERLOADED), "put {i}: {s:?}");
                    let retry_after_ms = md
                        .get(meta::RETRY_AFTER_MS)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or_else(|| panic!("put {i}: no retry-after hint: {s:?}"));
                    Answer::Refused {
                        took,
                        retry_after_ms,
                    }
                }
                Err(_) => panic!("put {i}: no answer within 30 s"),
            }
        }
    }))
    .await;
    let mut refused = Vec::new();
    let mut acked = Vec::new();
    let mut slowest_refusal = Duration::ZERO;
    for (i, a) in answers.iter().enumerate() {
        match a {
            Answer::Acked => acked.push(i),
            Answer::Refused {
                took,
                retry_after_ms,
            } => {
                assert!(
                    *retry_after_ms > 0,
                    "put {i}: retry after {retry_after_ms} ms"
                );
                slowest_refusal = slowest_refusal.max(*took);
                refused.push(i);
            }
        }
    }
    eprintln!(
        "{} acknowledged, {} refused (slowest refusal {slowest_refusal:?})",
        acked.len(),
        refused.len()
    );
    assert!(
        !refused.is_empty(),
        "a burst of {BURST} against 4 permits and 20 ms of queue time refused nothing"
    );
    assert!(!acked.is_empty(), "nothing of the burst was admitted");
    assert!(
        slowest_refusal < REFUSAL_TIME_MAX,
        "a refusal took {slowest_refusal:?}"
    );
    assert!(
        rejected_writes(&cluster, "queue_time").await > 0.0,
        "no write was refused for its queue time"
    );
    // Nothing refused was written; everything acknowledged was.
    let client = cluster.client();
    for i in refused {
        let got = client
            .get(key(i), ReadConsistency::Linearizable)
            .await
            .expect("read back");
        assert!(got.is_none(), "refused put {i} is present: {got:?}");
    }
    for i in acked {
        let got = client
            .get(key(i), ReadConsistency::Linearizable)
            .await
            .expect("read back");
        assert_eq!(
            got.map(|v| v.value),
            Some(Bytes::from(format!("value-{i}"))),
            "acknowledged put {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_deadline_has_passed_is_refused_unproposed() {
    let cluster = Cluster::start(1, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let mut kv = KvClient::new(channel(&cluster.addr(1)).await);
    // tonic's own deadline timer may answer first (CANCELLED, no kind) when the request body
    // arrives after the handler's first poll: try a few times, count RingKV's refusals.
    const TRIES: usize = 10;
    let mut ours = 0;
    for i in 0..TRIES {
        let mut req = tonic::Request::new(put(0x5eed_0000_0000_0002, 9_000 + i));
        req.metadata_mut()
            .insert("grpc-timeout", "0n".parse().expect("header value"));
        let s = kv.put(req).await.expect_err("refused");
        match s.metadata().get(meta::ERROR_KIND) {
            Some(kind) => {
                assert_eq!(kind.to_str().ok(), Some(meta::KIND_OVERLOADED), "{s:?}");
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.metadata().get(meta::RETRY_AFTER_MS).is_some(), "{s:?}");
                ours += 1;
            }
            None => assert_eq!(s.code(), Code::Cancelled, "{s:?}"),
        }
    }
    assert!(
        ours > 0,
        "no put with a passed deadline was refused by admission"
    );
    // At least those (tonic's timer can also overtake a refusal already made).
    assert!(rejected_writes(&cluster, "deadline").await >= ours as f64);
    let client = cluster.client();
    for i in 0..TRIES {
        let got = client
            .get(key(9_000 + i), ReadConsistency::Linearizable)
            .await
            .expect("read back");
        assert!(got.is_none(), "the refused put {i} is present: {got:?}");
    }
}
