//! The Raft transport between real servers: replication travels on pipelined append streams
//! (each follower's `ringkv_raft_appends_received_total{transport="stream"}` grows with
//! writes), and an append stream whose messages do not belong on the node (wrong cluster id,
//! wrong receiver, unknown shard, undecodable payload, no message at all) is refused with a
//! clear status while the cluster keeps serving every acknowledged write. Raft is served only
//! on the peer port (`--peer-listen`), the client API only on the client port.

use std::time::Duration;

use bytes::Bytes;
use ringkv_client::ReadConsistency;
use ringkv_proto::pb::cluster_client::ClusterClient;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::raft_client::RaftClient;
use ringkv_proto::pb::{GetRequest, RaftRequest, StatusRequest};
use ringkv_tests::{Cluster, metric_sum};
use tonic::Code;

const SHARDS: u32 = 4;
const WRITES: usize = 200;

/// `ringkv_raft_appends_received_total{transport}` on one node.
async fn appends_received(cluster: &Cluster, id: u64, transport: &str) -> f64 {
    let labels = [("transport", transport)];
    metric_sum(
        &cluster.admin_addr(id),
        "ringkv_raft_appends_received_total",
        &labels,
    )
    .await
}

/// Sends `messages` on one `AppendStream` to `addr` and returns the status that ended it.
async fn refused(addr: &str, messages: Vec<RaftRequest>) -> tonic::Status {
    let mut raft = RaftClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let call = tokio::time::timeout(
        Duration::from_secs(10),
        raft.append_stream(futures::stream::iter(messages)),
    )
    .await
    .expect("the node answers an append stream within 10 s");
    let mut replies = match call {
        Err(status) => return status,
        Ok(r) => r.into_inner(),
    };
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), replies.message())
            .await
            .expect("the node ends a refused append stream within 10 s");
        match next {
            Err(status) => return status,
            Ok(None) => panic!("the append stream ended without an error"),
            Ok(Some(_)) => {}
        }
    }
}

fn envelope(cluster_id: &str, shard_id: u32, to: u64, payload: &[u8]) -> RaftRequest {
    RaftRequest {
        cluster_id: cluster_id.to_string(),
        shard_id,
        from: 2,
        to,
        payload: Bytes::copy_from_slice(payload),
        to_incarnation: 0,
        cluster_uuid: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_streams_and_foreign_append_streams_are_refused() {
    let cluster = Cluster::start(3, SHARDS);
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let client = cluster.client();
    for i in 0..WRITES {
        client
            .put(format!("stream:{i:03}"), format!("v{i}"))
            .await
            .expect("put");
    }

    // Every node that follows a shard got that shard's entries on a stream.
    for id in 1..=3u64 {
        if leaders.iter().all(|&l| l == id) {
            continue;
        }
        let streamed = appends_received(&cluster, id, "stream").await;
        assert!(
            streamed > 0.0,
            "node {id} follows a shard (leaders {leaders:?}) but received no append on a stream"
        );
    }

    let addr = cluster.peer_addr(1);
    let cases: Vec<(&str, Vec<RaftRequest>, Code, &str)> = vec![
        (
            "wrong cluster id",
            vec![envelope("someone-else", 0, 1, b"")],
            Code::FailedPrecondition,
            "wrong cluster id",
        ),
        (
            "wrong receiver",
            vec![envelope("ringkv", 0, 3, b"")],
            Code::FailedPrecondition,
            "reached node 1",
        ),
        (
            "unknown shard",
            vec![envelope("ringkv", SHARDS + 100, 1, b"")],
            Code::InvalidArgument,
            "unknown shard id",
        ),
        (
            "undecodable payload",
            vec![envelope("ringkv", 0, 1, b"\xc1 not messagepack")],
            Code::InvalidArgument,
            "bad payload",
        ),
        (
            "no message",
            vec![],
            Code::InvalidArgument,
            "empty append stream",
        ),
    ];
    for (what, messages, code, text) in cases {
        let status = refused(&addr, messages).await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(text),
            "{what}: expected {text:?} in {status:?}"
        );
    }

    // Nothing was lost, and the cluster still takes writes.
    client.put("stream:after", "x").await.expect("put after");
    for i in 0..WRITES {
        let got = client
            .get(format!("stream:{i:03}"), ReadConsistency::Linearizable)
            .await
            .expect("get")
            .map(|v| v.value);
        assert_eq!(got, Some(Bytes::from(format!("v{i}"))), "key stream:{i:03}");
    }
}

/// The client port does not serve Raft (a scan of it never reaches a Raft group, and client
/// load there cannot hold up appends), and the peer port serves nothing but Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_is_served_only_on_the_peer_port_and_the_client_api_only_on_the_client_port() {
    let cluster = Cluster::start(1, 1);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let (client_addr, peer_addr) = (cluster.addr(1), cluster.peer_addr(1));

    // Raft on the client port: the service does not exist there.
    let mut raft = RaftClient::connect(format!("http://{client_addr}"))
        .await
        .expect("connect to the client port");
    let vote = tokio::time::timeout(
        Duration::from_secs(10),
        raft.vote(envelope("ringkv", 0, 1, b"")),
    )
    .await;
    let status = vote
        .expect("the client port answers within 10 s")
        .expect_err("a vote on the client port must not be served");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        raft.append_stream(futures::stream::iter(vec![envelope("ringkv", 0, 1, b"")])),
    )
    .await;
    let status = stream
        .expect("the client port answers within 10 s")
        .expect_err("an append stream on the client port must not be served");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Raft on the peer port: served (this envelope is refused by the service itself).
    let mut raft = RaftClient::connect(format!("http://{peer_addr}"))
        .await
        .expect("connect to the peer port");
    let vote = tokio::time::timeout(
        Duration::from_secs(10),
        raft.vote(envelope("someone-else", 0, 1, b"")),
    )
    .await;
    let status = vote
        .expect("the peer port answers within 10 s")
        .expect_err("a vote for another cluster is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // The client API on the peer port: not there.
    let mut kv = KvClient::connect(format!("http://{peer_addr}"))
        .await
        .expect("connect to the peer port");
    let get = tokio::time::timeout(Duration::from_secs(10), kv.get(GetRequest::default())).await;
    let status = get
        .expect("the peer port answers within 10 s")
        .expect_err("a get on the peer port must not be served");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let mut admin = ClusterClient::connect(format!("http://{peer_addr}"))
        .await
        .expect("connect to the peer port");
    let status = tokio::time::timeout(Duration::from_secs(10), admin.status(StatusRequest {}))
        .await
        .expect("the peer port answers within 10 s")
        .expect_err("cluster status on the peer port must not be served");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // And the client API still works on the client port, reporting the peer address.
    let mut admin = ClusterClient::connect(format!("http://{client_addr}"))
        .await
        .expect("connect to the client port");
    let view = admin
        .status(StatusRequest {})
        .await
        .expect("status on the client port")
        .into_inner();
    let me = view
        .nodes
        .iter()
        .find(|n| n.id == 1)
        .expect("node 1 listed");
    assert_eq!((&me.addr, &me.peer_addr), (&client_addr, &peer_addr));
}
