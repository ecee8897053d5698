//! Crash and retry acceptance against real `ringkv-server` processes (issue 2, items 4–6):
//! SIGKILL of every node in the middle of a write load (five rounds) loses no acknowledged
//! write and applies no write answered as definitely failed; a write retried with the same `(client_id, sequence)` applies exactly once; malformed
//! requests are refused without harming the server or the data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use ringkv_client::{Client, ClientOptions, ReadConsistency};
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{CompareAndSwapRequest, RequestHeader, compare_and_swap_request};
use ringkv_tests::{Cluster, assert_definite_failures_absent, cli};
use tokio::sync::Mutex;

const SHARDS: u32 = 8;
const ROUNDS: usize = 5;
const WRITERS: usize = 16;
/// Each writer stops after this many attempts even if the kill never comes.
const WRITES_PER_WRITER_MAX: usize = 2_000;
/// Acknowledged writes to wait for before pulling the plug, each round.
const ACKS_BEFORE_KILL: usize = 150;

/// A client that gives up quickly once the cluster is gone, so writers end soon after the kill.
fn impatient_client(cluster: &Cluster) -> Client {
    let mut opts = ClientOptions::new(cluster.endpoints());
    opts.request_timeout = Duration::from_secs(3);
    opts.attempt_timeout = Duration::from_secs(2);
    opts.max_attempts = 4;
    Client::new(opts).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_every_node_during_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // Keys whose one put was answered "certainly not applied".
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();

    for round in 0..ROUNDS {
        let client = impatient_client(&cluster);
        let stop = Arc::new(AtomicBool::new(false));
        let round_acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (client, stop, acked, failed, round_acked) = (
                client.clone(),
                stop.clone(),
                acked.clone(),
                failed.clone(),
                round_acked.clone(),
            );
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES_PER_WRITER_MAX {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (k, v) = (
                        format!("crash:{round}:{w}:{i}"),
                        format!("r{round}w{w}i{i}"),
                    );
                    // Errors are expected once the nodes die; a definite one promises the
                    // write took no effect, an unknown one promises nothing.
                    match client.put(k.clone(), v.clone()).await {
                        Ok(_) => {
                            acked.lock().await.push((k, v));
                            round_acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_definite() => failed.lock().await.push(k),
                        Err(_) => {}
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while round_acked.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} writes acknowledged in 30 s",
                round_acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in 1..=3 {
            cluster.kill(id);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .expect("writer ends within its request deadline")
                .expect("writer task");
        }
        eprintln!(
            "round {round}: SIGKILLed all nodes after {} acknowledged writes this round",
            round_acked.load(Ordering::Relaxed)
        );

        for id in 1..=3 {
            cluster.restart(id);
        }
        let started = Instant::now();
        cluster
            .wait_for_leaders(Duration::from_secs(20))
            .await
            .expect("leaders after restart");
        eprintln!(
            "round {round}: every shard had a leader {:?} after restart",
            started.elapsed()
        );

        let reader = cluster.client();
        let all = acked.lock().await.clone();
        for (k, v) in &all {
            let got = reader
                .get(k.clone(), ReadConsistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("round {round}: read of {k}: {e}"));
            assert_eq!(
                got.map(|g| g.value),
                Some(Bytes::from(v.clone())),
                "round {round}: acknowledged write {k} lost or changed"
            );
        }
        eprintln!(
            "round {round}: all {} acknowledged writes so far are present",
            all.len()
        );
        let failed_so_far = failed.lock().await.clone();
        assert_definite_failures_absent(&reader, &failed_so_far, &format!("round {round}")).await;
    }
}

fn cas_request(client_id: u64, sequence: u64, expected: &str, new: &str) -> CompareAndSwapRequest {
    CompareAndSwapRequest {
        header: Some(RequestHeader {
            client_id,
            sequence,
            ..Default::default()
        }),
        key: Bytes::from_static(b"order:{7}:payments"),
        expected: Some(compare_and_swap_request::Expected::ExpectedValue(
            Bytes::from(expected.to_string()),
        )),
        new_value: Some(Bytes::from(new.to_string())),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_retried_with_the_same_sequence_applies_once() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let client = cluster.client();
    client.put("order:{7}:payments", "0").await.expect("put");

    // A CAS-increment 0 → 1 as client 77, sequence 1, whose response is "lost": the client
    // sends the very same request again, each time through a different node (so once through
    // forwarding).
    let client_id = 77;
    let mut first = None;
    for id in 1..=3 {
        let mut kv = KvClient::connect(format!("http://{}", cluster.addr(id)))
            .await
            .expect("connect");
        let r = kv
            .compare_and_swap(cas_request(client_id, 1, "0", "1"))
            .await
            .expect("cas")
            .into_inner();
        assert!(
            r.succeeded,
            "attempt via node {id}: a retry must get the original answer"
        );
        assert_eq!(
            first.get_or_insert_with(|| r.clone()),
            &r,
            "attempt via node {id}: a retry must get the original answer"
        );
    }
    let v = client
        .get("order:{7}:payments", ReadConsistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(v.value, Bytes::from_static(b"1"), "the counter moved once");

    // The next increment, then a very late duplicate of the first: still applied once.
    let mut kv = KvClient::connect(format!("http://{}", cluster.addr(1)))
        .await
        .expect("connect");
    let r = kv
        .compare_and_swap(cas_request(client_id, 2, "1", "2"))
        .await
        .expect("cas")
        .into_inner();
    assert!(r.succeeded);
    // Sequence 1 is not acknowledged yet (every header here says `acked_below` 0), so the
    // late duplicate gets sequence 1's recorded answer. Executed again it would fail its
    // comparison ("0" against "2"), which the value alone could not tell apart.
    let late = kv
        .compare_and_swap(cas_request(client_id, 1, "0", "1"))
        .await
        .expect("a late duplicate is answered")
        .into_inner();
    assert_eq!(
        Some(&late),
        first.as_ref(),
        "a late duplicate gets the original answer"
    );
    let after = client
        .get("order:{7}:payments", ReadConsistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(after.value, Bytes::from_static(b"2"));
    assert!(after.version > v.version);

    // Once the client has acknowledged sequences below 3, a duplicate of 1 is refused as
    // invalid (its answer is forgotten) and changes nothing.
    let mut third = cas_request(client_id, 3, "2", "3");
    if let Some(h) = third.header.as_mut() {
        h.acked_below = 3;
    }
    assert!(
        kv.compare_and_swap(third)
            .await
            .expect("cas")
            .into_inner()
            .succeeded
    );
    let stale = kv
        .compare_and_swap(cas_request(client_id, 1, "0", "1"))
        .await
        .expect_err("a duplicate of an acknowledged sequence is refused");
    assert_eq!(stale.code(), tonic::Code::InvalidArgument, "{stale:?}");
    assert_eq!(
        stale
            .metadata()
            .get(ringkv_proto::meta::ERROR_KIND)
            .and_then(|v| v.to_str().ok()),
        Some(ringkv_proto::meta::KIND_INVALID),
        "{stale:?}"
    );
    let last = client
        .get("order:{7}:payments", ReadConsistency::Linearizable)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(last.value, Bytes::from_static(b"3"));
}

/// A gRPC codec that sends and receives raw bytes, to put malformed messages on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_oversized_requests_are_refused_and_nothing_is_written() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let eps = cluster.endpoints();
    let client = cluster.client();
    client.put("kept", "safe").await.expect("put");

    // Through the CLI: empty key, 5,000-byte key, 100 KiB value → exit 2 naming the limit.
    let (code, _, err) = cli(&eps, &["put", "", "v"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&eps, &["put", &"k".repeat(5_000), "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key_bytes_max"), "{err}");
    let (code, _, err) = cli(&eps, &["put", "big", &"v".repeat(100 * 1024)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("value_bytes_max"), "{err}");

    // On the wire: bytes that are not a protobuf message, to every node.
    for id in 1..=3 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(id)))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let garbage = vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let r = grpc
            .unary(
                tonic::Request::new(garbage),
                tonic::codegen::http::uri::PathAndQuery::from_static("/ringkv.v1.Kv/Put"),
                RawCodec,
            )
            .await;
        let status = r.expect_err("a malformed message must be refused");
        // The codec refuses it before any handler runs: INTERNAL, as gRPC specifies for a
        // message that does not parse, and no RingKV kind (so a client treats a write that
        // meets it as of unknown outcome, never as certainly refused by RingKV).
        assert_eq!(
            status.code(),
            tonic::Code::Internal,
            "node {id} refused garbage: {status:?}"
        );
        assert!(
            status
                .metadata()
                .get(ringkv_proto::meta::ERROR_KIND)
                .is_none(),
            "node {id}: {status:?}"
        );
    }
    // A well-formed message that means nothing: CAS without an expectation.
    let mut kv = KvClient::connect(format!("http://{}", eps[0]))
        .await
        .expect("connect");
    let mut req = cas_request(5, 1, "x", "y");
    req.key = Bytes::from_static(b"kept");
    req.expected = None;
    let s = kv.compare_and_swap(req).await.expect_err("no expectation");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
    // A write without its at-most-once identity (no header, or client id or sequence 0):
    // refused as invalid, so no write ever goes undeduplicated.
    for header in [
        None,
        Some(RequestHeader {
            client_id: 0,
            sequence: 1,
            ..Default::default()
        }),
        Some(RequestHeader {
            client_id: 9,
            sequence: 0,
            ..Default::default()
        }),
    ] {
        let put = ringkv_proto::pb::PutRequest {
            header,
            key: Bytes::from_static(b"anonymous"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        let s = kv.put(put).await.expect_err("a write without identity");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
        assert_eq!(
            s.metadata()
                .get(ringkv_proto::meta::ERROR_KIND)
                .and_then(|v| v.to_str().ok()),
            Some(ringkv_proto::meta::KIND_INVALID)
        );
        assert!(s.message().contains("client_id"), "{}", s.message());
    }

    // Every node still serves, and nothing was written.
    for id in 1..=3 {
        let (code, out, err) = cli(&[cluster.addr(id)], &["get", "kept"]);
        assert_eq!((code, out.as_str()), (0, "safe\n"), "node {id}: {err}");
    }
    assert!(
        client
            .get("big", ReadConsistency::Linearizable)
            .await
            .expect("get")
            .is_none()
    );
    let (code, out, _) = cli(&eps, &["scan", ""]);
    assert_eq!(
        (code, out.as_str()),
        (0, "kept\tsafe\n"),
        "nothing else, \"anonymous\" included"
    );
}
