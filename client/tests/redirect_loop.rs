//! The client's retry loop against two fake nodes that redirect to each other, as real nodes do
//! for a moment while a shard's leadership moves (each still names the other as leader). The
//! fakes are pure logic on real loopback sockets; the client under test is the real one.
//!
//! A client that followed such redirects without pausing spent all its attempts within
//! milliseconds and failed the request although the handover ended shortly after.
//!
//! The same fakes answer as a server from before TTLs, for the client's side of a rolling
//! upgrade.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientOptions, Error, ReadConsistency, Ttl};
use ringkv_proto::meta;
use ringkv_proto::pb::kv_server::{Kv, KvServer};
use ringkv_proto::pb::{
    BatchRequest, BatchResponse, CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest,
    DeleteResponse, GetRequest, GetResponse, PersistRequest, PersistResponse, PutRequest,
    PutResponse, ScanRequest, ScanResponse, TouchRequest, TouchResponse, TtlRequest, TtlResponse,
    TxnRequest, TxnResponse,
};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A node that, until `handover_ends`, redirects every request to `peer`; afterwards it
/// serves (when `serves_after_handover`) or keeps redirecting.
struct FakeNode {
    peer: Arc<OnceLock<String>>,
    handover_ends: Instant,
    serves_after_handover: bool,
}

impl FakeNode {
    fn check(&self) -> Result<(), Status> {
        if self.serves_after_handover && Instant::now() >= self.handover_ends {
            return Ok(());
        }
        let mut s = Status::failed_precondition("not the leader of shard 0");
        let peer = self.peer.get().cloned().unwrap_or_default();
        let md = s.metadata_mut();
        md.insert(
            meta::ERROR_KIND,
            meta::KIND_NOT_LEADER.parse().expect("ascii"),
        );
        md.insert(meta::LEADER_ADDR, peer.parse().expect("ascii"));
        Err(s)
    }
}

#[tonic::async_trait]
impl Kv for FakeNode {
    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.check()?;
        Ok(Response::new(GetResponse {
            found: true,
            value: "v".into(),
            version: 7,
        }))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.check()?;
        // As a server from before TTLs: no TTL echo (it ignored the TTL fields).
        Ok(Response::new(PutResponse {
            version: 8,
            ttl_ms: 0,
        }))
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn compare_and_swap(
        &self,
        _: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    /// As a server from before the Batch RPC: the client falls back to unary RPCs.
    async fn batch(&self, _: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    /// As a server from before TTLs (no such RPC).
    async fn touch(&self, _: Request<TouchRequest>) -> Result<Response<TouchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn persist(
        &self,
        _: Request<PersistRequest>,
    ) -> Result<Response<PersistResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn ttl(&self, _: Request<TtlRequest>) -> Result<Response<TtlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Starts nodes A and B on free loopback ports; A serves after `handover`, B never does.
/// Returns A's address (the client's only endpoint).
fn start_pair(handover: Duration) -> String {
    let handover_ends = Instant::now() + handover;
    let (a_peer, b_peer): (Arc<OnceLock<String>>, Arc<OnceLock<String>>) =
        (Arc::default(), Arc::default());
    let mut addrs = Vec::new();
    for (peer, serves) in [(&a_peer, true), (&b_peer, false)] {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        addrs.push(incoming.local_addr().expect("local addr").to_string());
        let node = FakeNode {
            peer: Arc::clone(peer),
            handover_ends,
            serves_after_handover: serves,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(node))
                .serve_with_incoming(incoming),
        );
    }
    a_peer.set(addrs[1].clone()).expect("set once");
    b_peer.set(addrs[0].clone()).expect("set once");
    addrs[0].clone()
}

#[tokio::test]
async fn a_redirect_loop_during_a_leader_handover_is_waited_out() {
    let a = start_pair(Duration::from_millis(400));
    let client = Client::new(ClientOptions::new(vec![a])).expect("client");
    let started = Instant::now();
    let got = client
        .get("k", ReadConsistency::Linearizable)
        .await
        .expect("the read succeeds once the handover ends");
    assert_eq!(got.map(|v| v.version), Some(7));
    assert!(started.elapsed() >= Duration::from_millis(400));
    let version = client
        .put("k", "v")
        .await
        .expect("a write succeeds too (the handover is over)");
    assert_eq!(version, 8);
}

#[tokio::test]
async fn an_endless_redirect_loop_ends_within_the_request_timeout() {
    let a = start_pair(Duration::from_secs(3600));
    let mut opts = ClientOptions::new(vec![a]);
    opts.request_timeout = Duration::from_secs(2);
    let client = Client::new(opts).expect("client");
    let started = Instant::now();
    let err = client
        .get("k", ReadConsistency::Linearizable)
        .await
        .expect_err("nobody ever serves");
    assert!(err.to_string().contains("redirected"), "{err}");
    // Bounded by the request timeout (plus one attempt's slack), not by luck.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A node from before the Batch RPC answers a batch UNIMPLEMENTED: concurrent requests, which
/// the client would batch, fall back to unary RPCs within their first attempt and all succeed.
#[tokio::test]
async fn concurrent_requests_to_a_node_without_batching_fall_back_to_unary() {
    let a = start_pair(Duration::ZERO);
    let client = Client::new(ClientOptions::new(vec![a])).expect("client");
    assert!(client.options().batch_requests);
    let puts: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
        })
        .collect();
    for (i, p) in puts.into_iter().enumerate() {
        assert_eq!(p.await.expect("task").expect("put"), 8, "put {i}");
    }
    // The fallback happens within the attempt: not one request needed a second one.
    assert_eq!(client.retries(), 0);
}

/// A node from before TTLs ignores a put's TTL fields and has no Touch RPC: the client says
/// so ([`Error::Unsupported`]) instead of reporting a TTL that is not there, and a touch is a
/// definite refusal, not an unknown outcome.
#[tokio::test]
async fn a_server_without_ttls_is_reported_as_unsupported() {
    let a = start_pair(Duration::ZERO);
    let client = Client::new(ClientOptions::new(vec![a])).expect("client");
    let put = client
        .put_with_ttl("k", "v", Ttl::Set(Duration::from_secs(30)))
        .await;
    assert!(
        matches!(put, Err(Error::Unsupported { .. })),
        "put with a TTL: {put:?}"
    );
    // Without a TTL the same answer is fine.
    assert_eq!(client.put("k", "v").await.ok(), Some(8));
    let touch = client.touch("k", None).await;
    assert!(
        matches!(&touch, Err(e @ Error::Unsupported { .. }) if e.is_definite()),
        "touch: {touch:?}"
    );
}
