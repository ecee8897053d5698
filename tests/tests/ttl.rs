//! Per-key TTL against real three-node clusters (issue 17 items 1, 2, 4 and 7):
//! - the CLI's `put --ttl/--keep-ttl`, `cas --ttl`, `touch`, `persist` and `ttl`, their output
//!   and exit codes;
//! - no read ever misses a key before its TTL has passed, and reads show it absent soon after;
//! - the leader's expiry entries remove due keys on every replica (serializable reads on each
//!   node, which judge by the applied clock only, stop seeing them);
//! - a touch with more than half of the TTL left writes nothing to the log;
//! - a leader frozen mid-TTL (SIGSTOP) does not shorten it;
//! - a wall clock an hour ahead on every node expires nothing early;
//! - TTL commands (and transactions) are refused, naming the node, while a member advertises
//!   no support for them, and work once it does.
//!
//! Times are measured on this machine's monotonic clock around the client calls; cluster time
//! can only run slower than it (it stops while a shard has no leader), so "never absent before
//! the TTL" is checked against the moment the put was sent.

use std::time::{Duration, Instant};

use ringkv_client::{Client, ReadConsistency, Ttl};
use ringkv_tests::{Cluster, cli, cli_with_stdin};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

async fn started(shards: u32) -> Cluster {
    let cluster = Cluster::start(3, shards);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    cluster
}

/// Polls `key` with linearizable reads until it reads absent or `give_up` passes; returns
/// when it was first seen absent (None: never within `give_up`). Every read before that must
/// have returned `value`.
async fn first_absent(
    client: &Client,
    key: &str,
    value: &str,
    give_up: Duration,
) -> Option<Instant> {
    let until = Instant::now() + give_up;
    while Instant::now() < until {
        match client
            .get(key.to_string(), ReadConsistency::Linearizable)
            .await
        {
            Ok(None) => return Some(Instant::now()),
            Ok(Some(v)) => assert_eq!(v.value, value.as_bytes(), "{key}"),
            // A failed read says nothing either way; it is retried.
            Err(e) => eprintln!("read of {key} failed (retried): {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn ttl_ms_of(eps: &[String], key: &str) -> (i32, i64) {
    let (code, out, err) = cli(eps, &["ttl", key]);
    let ms = out.trim().parse().unwrap_or(i64::MIN);
    assert!(code != 0 || ms != i64::MIN, "ttl {key}: {out:?} {err:?}");
    (code, ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_commands_expiry_and_cheap_touches() {
    let cluster = started(2).await;
    let eps = cluster.endpoints();
    let client = cluster.client();

    // The CLI: set, read, keep, clear, persist, refuse.
    let (code, _, err) = cli(&eps, &["put", "session:a", "v", "--ttl", "30s"]);
    assert_eq!(code, 0, "{err}");
    let (code, ms) = ttl_ms_of(&eps, "session:a");
    assert!(
        code == 0 && (25_000..=30_000).contains(&ms),
        "ttl after --ttl 30s: {ms}"
    );
    let (code, out, _) = cli(&eps, &["get", "session:a"]);
    assert_eq!((code, out.trim()), (0, "v"));
    assert_eq!(cli(&eps, &["put", "session:a", "v2", "--keep-ttl"]).0, 0);
    let (_, kept) = ttl_ms_of(&eps, "session:a");
    assert!(
        (20_000..=ms).contains(&kept),
        "--keep-ttl kept {kept} of {ms}"
    );
    assert_eq!(cli(&eps, &["put", "session:a", "v3"]).0, 0);
    assert_eq!(
        ttl_ms_of(&eps, "session:a"),
        (0, -1),
        "a plain put clears the TTL"
    );
    assert_eq!(cli(&eps, &["put", "session:b", "v", "--ttl", "10m"]).0, 0);
    assert_eq!(cli(&eps, &["persist", "session:b"]).0, 0);
    assert_eq!(
        ttl_ms_of(&eps, "session:b"),
        (0, -1),
        "persist removes the TTL"
    );
    let (code, _, _) = cli(
        &eps,
        &["cas", "session:c", "new", "--expect-absent", "--ttl", "1h"],
    );
    assert_eq!(code, 0);
    let (_, ms) = ttl_ms_of(&eps, "session:c");
    assert!((3_500_000..=3_600_000).contains(&ms), "cas --ttl 1h: {ms}");
    let (code, _, _) = cli(&eps, &["ttl", "session:none"]);
    assert_eq!(code, 1, "ttl of an absent key exits 1");
    assert_eq!(cli(&eps, &["touch", "session:none"]).0, 1);
    assert_eq!(cli(&eps, &["persist", "session:none"]).0, 1);
    for bad in [
        vec!["put", "k", "v", "--ttl", "30"],
        vec!["put", "k", "v", "--ttl", "0s"],
        vec!["put", "k", "v", "--ttl", "1s", "--keep-ttl"],
        vec!["touch", "k", "--ttl", "1.5s"],
    ] {
        let (code, _, err) = cli(&eps, &bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }

    // Never absent before the TTL; absent within the bound after it.
    let ttl = Duration::from_millis(1_500);
    let sent = Instant::now();
    client
        .put_with_ttl("order:{1}:hold", "held", Ttl::Set(ttl))
        .await
        .expect("put with ttl");
    let acked = Instant::now();
    let gone = first_absent(&client, "order:{1}:hold", "held", Duration::from_secs(10))
        .await
        .expect("the key expired");
    assert!(
        gone >= sent + ttl,
        "absent {:?} after the put was sent, before its TTL of {ttl:?}",
        gone - sent
    );
    assert!(
        gone <= acked + ttl + Duration::from_secs(1),
        "still present {:?} after the put was acknowledged",
        gone - acked
    );

    // Nobody reads this one: only the leader's expiry entries can make followers' replicas
    // (serializable reads, judged by the applied clock) stop showing it.
    client
        .put_with_ttl(
            "order:{2}:hold",
            "held",
            Ttl::Set(Duration::from_millis(800)),
        )
        .await
        .expect("put with ttl");
    let removed_everywhere = Instant::now() + Duration::from_secs(6);
    for id in 1..=3 {
        let local = cluster.client_of(id);
        loop {
            let got = local
                .get("order:{2}:hold", ReadConsistency::Serializable)
                .await
                .expect("serializable read");
            if got.is_none() {
                break;
            }
            assert!(
                Instant::now() < removed_everywhere,
                "node {id} still holds the expired key"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A touch with less than half left restarts the TTL.
    client
        .put_with_ttl("session:slide", "s", Ttl::Set(Duration::from_secs(2)))
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        client.touch("session:slide", None).await.expect("touch"),
        Some(Some(Duration::from_secs(2)))
    );
    let left = client
        .ttl("session:slide", ReadConsistency::Linearizable)
        .await
        .expect("ttl")
        .and_then(|t| t.remaining)
        .expect("a TTL");
    assert!(
        left > Duration::from_millis(1_500),
        "touched, {left:?} left"
    );

    // Touches with more than half left write nothing: 20 of them add (almost) no log entries.
    client
        .put_with_ttl("session:cheap", "s", Ttl::Set(Duration::from_secs(60)))
        .await
        .expect("put");
    let shard = ringkv_proto::ring::Ring::new(2, ringkv_proto::ring::DEFAULT_VNODES)
        .shard_for(b"session:cheap");
    let last_index = async || {
        let leaders = cluster
            .wait_for_leaders(Duration::from_secs(10))
            .await
            .expect("leaders");
        let leader = leaders[shard as usize];
        let s = client
            .status_of(&cluster.addr(leader))
            .await
            .expect("status");
        s.shards
            .iter()
            .find(|x| x.shard == shard)
            .map(|x| x.last_log_index)
            .expect("shard status")
    };
    let before = last_index().await;
    for _ in 0..20 {
        assert!(matches!(
            client.touch("session:cheap", None).await,
            Ok(Some(Some(_)))
        ));
    }
    let after = last_index().await;
    assert!(
        after - before <= 3,
        "20 touches with more than half the TTL left added {} log entries",
        after - before
    );
}

/// The leader of the key's shard is frozen (SIGSTOP) a second into a 4 s TTL and resumed 3 s
/// later: the TTL is not shortened (the next leader's time starts from the committed clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_does_not_shorten_a_ttl() {
    let cluster = started(1).await;
    let leader = cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders")[0];
    let others: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.addr(id))
        .collect();
    let client = Client::new(cluster.client_options(others)).expect("client");
    let ttl = Duration::from_secs(4);
    let sent = Instant::now();
    client
        .put_with_ttl("session:frozen", "s", Ttl::Set(ttl))
        .await
        .expect("put with ttl");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.pause(leader);
    let resume_at = Instant::now() + Duration::from_secs(3);
    let mut gone = None;
    let until = Instant::now() + Duration::from_secs(20);
    let mut resumed = false;
    while Instant::now() < until {
        if !resumed && Instant::now() >= resume_at {
            cluster.resume(leader);
            resumed = true;
        }
        match client
            .get("session:frozen", ReadConsistency::Linearizable)
            .await
        {
            Ok(None) => {
                gone = Some(Instant::now());
                break;
            }
            Ok(Some(_)) => {}
            Err(e) => eprintln!("read failed (retried): {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !resumed {
        cluster.resume(leader);
    }
    let gone = gone.expect("the key expired within 20 s");
    assert!(
        gone >= sent + ttl,
        "absent {:?} after the put, before its TTL of {ttl:?}",
        gone - sent
    );
}

/// Every node restarts with its wall clock an hour ahead (libfaketime) while a key has 30 s
/// of TTL left: the key is still there, with at most its TTL left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wall_clock_an_hour_ahead_expires_no_ttl_early() {
    if !std::path::Path::new(FAKETIME_LIB).exists() {
        ringkv_tests::skip("libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let mut cluster = started(1).await;
    cluster
        .client()
        .put_with_ttl("session:clock", "s", Ttl::Set(Duration::from_secs(30)))
        .await
        .expect("put with ttl");
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
    let client = cluster.client();
    let t = client
        .ttl("session:clock", ReadConsistency::Linearizable)
        .await
        .expect("ttl")
        .expect("the key is still there");
    let left = t.remaining.expect("a TTL");
    assert!(
        left > Duration::ZERO && left <= Duration::from_secs(30),
        "{left:?} left"
    );
    // Expiry still works on cluster time.
    client
        .put_with_ttl("session:clock2", "s", Ttl::Set(Duration::from_millis(500)))
        .await
        .expect("put");
    assert!(
        first_absent(&client, "session:clock2", "s", Duration::from_secs(10))
            .await
            .is_some()
    );
}

/// A member that advertises no TTL support (as a node of the release before TTLs would) keeps
/// TTL commands out of every shard's log: they are refused with the node named, nothing
/// written; plain writes go on. Once it supports them, TTLs work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_commands_wait_until_every_member_supports_them() {
    let mut cluster = Cluster::prepare(3, 2, &[]);
    cluster.set_env(3, "RINGKV_TEST_FEATURES", "0");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let eps = cluster.endpoints();
    // Node 3's replies must have been seen: heartbeats carry them within a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, _, err) = cli(&eps, &["put", "session:gated", "v", "--ttl", "30s"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("node 3"), "the refusal names the node: {err}");
    assert_eq!(
        cli(&eps, &["get", "session:gated"]).0,
        1,
        "nothing was written"
    );
    assert_eq!(cli(&eps, &["put", "session:plain", "v"]).0, 0);
    let (code, _, err) = cli(&eps, &["touch", "session:plain", "--ttl", "1m"]);
    assert_eq!(code, 3, "{err}");
    let txn = r#"{"success":[{"put":{"key":"order:{9}:state","value":"paid"}}]}"#;
    let (code, _, err) = cli_with_stdin(&eps, &["txn"], txn);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("node 3") && err.contains("txn"), "{err}");

    cluster.stop(3);
    // TTLs only (bit 0): TTL commands work then, transactions are still refused.
    cluster.set_env(3, "RINGKV_TEST_FEATURES", "1");
    cluster.restart(3);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, err) = cli(&eps, &["put", "session:gated", "v", "--ttl", "30s"]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < until, "TTL put still refused: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, ms) = ttl_ms_of(&eps, "session:gated");
    assert!(code == 0 && ms > 0, "{ms}");
    let (code, _, err) = cli_with_stdin(&eps, &["txn"], txn);
    assert_eq!(code, 3, "{err}");
}
