//! Single-shard transactions against a real three-node cluster (issue 17 item 5):
//! - `ringkv txn`: JSON in, JSON out, exit 0 when the compares held and 1 when not, 2 for
//!   input refused before anything is written (keys in two shards, too many ops, a key
//!   written twice, bad JSON);
//! - concurrent transfers between accounts of one hash tag, each an optimistic transaction on
//!   the accounts' versions, conserve the total;
//! - a retry of a transaction under the same (client id, sequence) returns the first answer
//!   and applies nothing again.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use ringkv_client::{Client, ReadConsistency, Txn, TxnOpResult};
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{RequestHeader, TxnCompare, TxnOp, TxnPut, TxnRequest, txn_compare, txn_op};
use ringkv_proto::ring::{DEFAULT_VNODES, Ring};
use ringkv_tests::{Cluster, cli_with_stdin};

const SHARDS: u32 = 4;

/// Runs `ringkv txn` with `json` on stdin: (exit code, stdout, stderr).
fn txn_cli(eps: &[String], json: &str) -> (i32, String, String) {
    cli_with_stdin(eps, &["txn"], json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_cli_conservation_and_retries() {
    let cluster = Cluster::start(3, SHARDS);
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let eps = cluster.endpoints();
    let client = cluster.client();
    client.put("order:{7}:state", "new").await.expect("put");

    // Mark paid and reserve stock together, when the order is still new.
    let pay = r#"{"compare":[{"key":"order:{7}:state","value":"new"},
                             {"key":"order:{7}:stock","absent":true}],
                  "success":[{"put":{"key":"order:{7}:state","value":"paid"}},
                             {"put":{"key":"order:{7}:stock","value":"reserved","ttl":"10m"}},
                             {"get":{"key":"order:{7}:state"}}],
                  "failure":[{"get":{"key":"order:{7}:state"}}]}"#;
    let (code, out, err) = txn_cli(&eps, pay);
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON answer");
    assert_eq!(v["succeeded"], true, "{v}");
    let version = v["version"].as_u64().expect("version");
    assert_eq!(v["results"][0]["put"]["version"], version);
    assert_eq!(v["results"][1]["put"]["version"], version);
    assert_eq!(
        v["results"][2]["get"]["value"], "paid",
        "a get sees the put before it"
    );
    for key in ["order:{7}:state", "order:{7}:stock"] {
        let got = client
            .get(key, ReadConsistency::Linearizable)
            .await
            .expect("get")
            .expect("written");
        assert_eq!(got.version, version, "{key}: one version for all writes");
    }
    let ttl = client
        .ttl("order:{7}:stock", ReadConsistency::Linearizable)
        .await
        .expect("ttl")
        .and_then(|t| t.remaining)
        .expect("the stock hold has a TTL");
    assert!(ttl > Duration::from_secs(590), "{ttl:?}");
    // Again: the compares fail, the failure branch runs, exit 1.
    let (code, out, _) = txn_cli(&eps, pay);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON answer");
    assert_eq!(v["succeeded"], false);
    assert_eq!(v["results"][0]["get"]["value"], "paid");

    // Refused before anything is written: keys in two shards, naming them.
    let ring = Ring::new(SHARDS, DEFAULT_VNODES);
    let other = (0..100)
        .map(|i| format!("cart:{i}"))
        .find(|k| ring.shard_for(k.as_bytes()) != ring.shard_for(b"order:{7}:state"))
        .expect("a key in another shard");
    let cross = format!(
        r#"{{"success":[{{"put":{{"key":"order:{{7}}:note","value":"x"}}}},
                        {{"put":{{"key":"{other}","value":"x"}}}}]}}"#
    );
    let (code, _, err) = txn_cli(&eps, &cross);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("one shard") && err.contains("hash tag") && err.contains(&other),
        "{err}"
    );
    let many: Vec<String> = (0..129)
        .map(|i| format!(r#"{{"get":{{"key":"order:{{7}}:{i}"}}}}"#))
        .collect();
    let (code, _, err) = txn_cli(&eps, &format!(r#"{{"success":[{}]}}"#, many.join(",")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("txn_ops_max=128"), "{err}");
    let twice = r#"{"success":[{"put":{"key":"order:{7}:note","value":"a"}},
                               {"del":{"key":"order:{7}:note"}}]}"#;
    let (code, _, err) = txn_cli(&eps, twice);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("twice"), "{err}");
    assert_eq!(txn_cli(&eps, "{not json").0, 2);
    for key in ["order:{7}:note".to_string(), other.clone()] {
        assert!(
            client
                .get(key.clone(), ReadConsistency::Linearizable)
                .await
                .expect("get")
                .is_none(),
            "{key} was written by a refused transaction"
        );
    }

    // Concurrent optimistic transfers between accounts of one hash tag conserve the total.
    const ACCOUNTS: usize = 4;
    let account = |i: usize| format!("bank:{{1}}:acct:{i}");
    for i in 0..ACCOUNTS {
        client.put(account(i), "100").await.expect("open account");
    }
    let transfers = stream::iter(0..8u64)
        .map(|w| {
            let c = cluster.client();
            async move { transfer_loop(&c, w, ACCOUNTS, 25).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<u64>>()
        .await;
    let committed: u64 = transfers.iter().sum();
    assert!(committed > 0, "no transfer committed");
    let mut total = 0i64;
    for i in 0..ACCOUNTS {
        let v = client
            .get(account(i), ReadConsistency::Linearizable)
            .await
            .expect("read account")
            .expect("account");
        total += String::from_utf8_lossy(&v.value)
            .parse::<i64>()
            .expect("a balance");
    }
    assert_eq!(
        total,
        100 * ACCOUNTS as i64,
        "{committed} transfers committed"
    );

    // A retry under the same identity is answered as the first attempt, not applied again.
    let mut kv = KvClient::connect(format!("http://{}", cluster.addr(1)))
        .await
        .expect("connect");
    let create = TxnRequest {
        header: Some(RequestHeader {
            client_id: 777,
            sequence: 1,
            ..Default::default()
        }),
        compare: vec![TxnCompare {
            key: Bytes::from_static(b"once:{1}:k"),
            target: Some(txn_compare::Target::Absent(true)),
        }],
        success: vec![TxnOp {
            op: Some(txn_op::Op::Put(TxnPut {
                key: Bytes::from_static(b"once:{1}:k"),
                value: Bytes::from_static(b"first"),
                ttl_ms: 0,
            })),
        }],
        failure: vec![],
    };
    let first = kv.txn(create.clone()).await.expect("txn").into_inner();
    let again = kv.txn(create).await.expect("retried txn").into_inner();
    assert!(first.succeeded);
    assert_eq!(again, first, "the retry is answered as the first attempt");
}

/// `rounds` transfers of 1 between random accounts, each read-then-transaction on the two
/// accounts' versions (a lost race fails the compare and is simply not retried); returns how
/// many committed.
async fn transfer_loop(c: &Client, worker: u64, accounts: usize, rounds: u64) -> u64 {
    let account = |i: usize| format!("bank:{{1}}:acct:{i}");
    let mut committed = 0;
    for r in 0..rounds {
        let from = ((worker + r) % accounts as u64) as usize;
        let to = (from + 1 + (r as usize % (accounts - 1))) % accounts;
        let (a, b) = (
            c.get(account(from), ReadConsistency::Linearizable)
                .await
                .expect("read")
                .expect("account"),
            c.get(account(to), ReadConsistency::Linearizable)
                .await
                .expect("read")
                .expect("account"),
        );
        let bal = |v: &Bytes| String::from_utf8_lossy(v).parse::<i64>().expect("balance");
        let txn = Txn::new()
            .compare_version(account(from), a.version)
            .compare_version(account(to), b.version)
            .then_put(account(from), (bal(&a.value) - 1).to_string())
            .then_put(account(to), (bal(&b.value) + 1).to_string());
        match c.txn(&txn).await {
            Ok(o) if o.succeeded => {
                assert!(matches!(o.results[0], TxnOpResult::Put { .. }));
                committed += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("transfer {worker}/{r}: {e}"),
        }
    }
    committed
}
