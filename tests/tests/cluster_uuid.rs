//! The cluster UUID (issue 16, item 2): a new cluster chooses one at bootstrap, every member
//! learns it and records it in its identity file, it survives restarts, and a Raft message
//! stamped with another cluster's UUID is refused on every path (unary calls and append
//! streams) without disturbing the cluster. (That a restored cluster gets a new one is checked
//! in `backup.rs`.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_proto::pb::RaftRequest;
use ringkv_proto::pb::raft_client::RaftClient;
use ringkv_tests::Cluster;
use tonic::Code;

const SHARDS: u32 = 2;

/// Every node's reported UUID, once all report the same non-empty one (bounded wait).
async fn agreed_uuid(cluster: &Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let uuids: Vec<String> = cluster
            .statuses()
            .await
            .into_values()
            .map(|s| s.map(|s| s.cluster_uuid).unwrap_or_default())
            .collect();
        if !uuids[0].is_empty() && uuids.iter().all(|u| *u == uuids[0]) {
            return uuids[0].clone();
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("after 15 s the nodes do not report one cluster UUID: {uuids:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every shard's term as node `id` reports it.
async fn terms_of(cluster: &Cluster, id: u64) -> Vec<u64> {
    cluster.statuses().await[&id]
        .as_ref()
        .expect("the node answers Status")
        .shards
        .iter()
        .map(|s| s.term)
        .collect()
}

fn vote_envelope(to: u64, uuid: &str) -> RaftRequest {
    RaftRequest {
        cluster_id: "ringkv".to_string(),
        shard_id: 0,
        from: 2,
        to,
        // Not a valid vote: a message that passed the envelope checks is refused for its body
        // (INVALID_ARGUMENT), one that did not for its envelope (FAILED_PRECONDITION).
        payload: Bytes::from_static(b"\xc1"),
        to_incarnation: 0,
        cluster_uuid: uuid.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_agree_on_one_uuid_keep_it_across_restarts_and_refuse_other_clusters() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    eprintln!("{:?}: leaders", t0.elapsed());
    let uuid = agreed_uuid(&cluster).await;
    eprintln!("{:?}: every node reports cluster UUID {uuid}", t0.elapsed());
    for (id, node) in &cluster.nodes {
        let file = std::fs::read_to_string(node.data_dir.join("ringkv.json")).expect("identity");
        assert!(
            file.contains(&uuid),
            "node {id}'s identity file does not record the UUID {uuid}: {file}"
        );
    }
    let terms_before = terms_of(&cluster, 1).await;

    // A message from another cluster of the same name: refused for its UUID, by kind.
    let foreign = "6f1c2a3e-0000-4000-8000-000000000001";
    let peer1 = cluster.peer_addr(1);
    let mut raft = RaftClient::connect(format!("http://{peer1}"))
        .await
        .expect("connect to node 1's peer port");
    for method in ["vote", "pre_vote", "append", "transfer_leader"] {
        let req = vote_envelope(1, foreign);
        let r = match method {
            "vote" => raft.vote(req).await,
            "pre_vote" => raft.pre_vote(req).await,
            "append" => raft.append(req).await,
            _ => raft.transfer_leader(req).await,
        };
        let status = r.expect_err("a foreign cluster's message is refused");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{method} from another cluster UUID: {status:?}"
        );
    }
    let stream = raft
        .append_stream(futures::stream::iter(vec![vote_envelope(1, foreign)]))
        .await;
    let refused = match stream {
        Err(s) => s,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .expect_err("a foreign append stream is refused"),
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // The same message with the cluster's own UUID (or none, from a peer that has not learned
    // it) passes the envelope check and is refused only for its body.
    for u in [uuid.as_str(), ""] {
        let status = raft
            .vote(vote_envelope(1, u))
            .await
            .expect_err("an undecodable vote is refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "uuid {u:?}: {status:?}"
        );
    }
    let terms_after = terms_of(&cluster, 1).await;
    assert_eq!(terms_before, terms_after, "refused messages changed a term");
    eprintln!("{:?}: foreign messages refused", t0.elapsed());

    // Restarts keep it.
    for id in 1..=3 {
        cluster.kill(id);
        cluster.restart(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders after restarts");
    assert_eq!(
        agreed_uuid(&cluster).await,
        uuid,
        "the UUID changed across restarts"
    );
}
