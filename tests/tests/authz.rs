//! Client authentication and authorization against real servers started with
//! `--auth-tokens`: the permission matrix (every client RPC × every role, with and without a
//! prefix, plus no credentials and a wrong token × a key inside and outside the prefix × every
//! node, so each request is also tried through a node that must forward it), the side paths
//! (whole-key-space scans by prefixed identities, batches mixing allowed and refused keys,
//! status and membership without credentials), SIGHUP reloads of the tokens file, the start-up
//! refusal of a bad file, and the CLI's exit code 4.
//!
//! The expected answers come from a table written here, independently of the server's policy
//! code.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::ReadConsistency;
use ringkv_proto::meta;
use ringkv_proto::pb::cluster_client::ClusterClient;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{
    BackupRequest, BatchItem, BatchRequest, CompareAndSwapRequest, DeleteRequest, GetRequest,
    MemberChangeRequest, PersistRequest, PutRequest, RequestHeader, ScanRequest, StatusRequest,
    TouchRequest, TtlRequest, TxnCompare, TxnOp, TxnPut, TxnRequest, batch_item, batch_result,
    compare_and_swap_request, txn_compare, txn_op,
};
use ringkv_tests::{Cluster, binary, cli};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const SHARDS: u32 = 2;
const PREFIX: &str = "p:";
const INSIDE: &str = "p:k";
const OUTSIDE: &str = "q:k";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    Admin,
    Readwrite,
    Readonly,
}

/// Who calls: a tokens-file identity, no credentials, or a token the file does not have.
#[derive(Clone, Copy, Debug)]
enum Who {
    Id { role: Role, prefixed: bool },
    Anonymous,
    WrongToken,
}

impl Who {
    fn all() -> Vec<Who> {
        let mut v = Vec::new();
        for role in [Role::Admin, Role::Readwrite, Role::Readonly] {
            for prefixed in [false, true] {
                v.push(Who::Id { role, prefixed });
            }
        }
        v.push(Who::Anonymous);
        v.push(Who::WrongToken);
        v
    }

    fn name(&self) -> String {
        match self {
            Who::Id { role, prefixed } => {
                format!("{role:?}{}", if *prefixed { "-p" } else { "" }).to_lowercase()
            }
            Who::Anonymous => "anonymous".into(),
            Who::WrongToken => "wrong-token".into(),
        }
    }

    fn token(&self) -> Option<String> {
        match self {
            Who::Id { .. } => Some(format!("token-of-{}", self.name())),
            Who::Anonymous => None,
            Who::WrongToken => Some("not-a-token-anyone-has".into()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rpc {
    Get,
    Put,
    Delete,
    Cas,
    Scan,
    BatchPut,
    BatchGet,
    Touch,
    Persist,
    Ttl,
    Txn,
    Status,
    MemberAdd,
    MemberRemove,
    Backup,
}

const RPCS: [Rpc; 15] = [
    Rpc::Get,
    Rpc::Put,
    Rpc::Delete,
    Rpc::Cas,
    Rpc::Scan,
    Rpc::BatchPut,
    Rpc::BatchGet,
    Rpc::Touch,
    Rpc::Persist,
    Rpc::Ttl,
    Rpc::Txn,
    Rpc::Status,
    Rpc::MemberAdd,
    Rpc::MemberRemove,
    Rpc::Backup,
];

impl Rpc {
    fn touches_keys(self) -> bool {
        !matches!(
            self,
            Rpc::Status | Rpc::MemberAdd | Rpc::MemberRemove | Rpc::Backup
        )
    }
}

/// The expected decision, from the table.
fn allowed(who: Who, rpc: Rpc, key: &str) -> bool {
    let Who::Id { role, prefixed } = who else {
        return false;
    };
    let in_prefix = !prefixed || key.starts_with(PREFIX);
    let role_ok = match (role, rpc) {
        (Role::Admin, _) => true,
        (_, Rpc::Status) => true,
        (Role::Readwrite, Rpc::MemberAdd | Rpc::MemberRemove | Rpc::Backup) => false,
        (Role::Readwrite, _) => true,
        (Role::Readonly, Rpc::Get | Rpc::Scan | Rpc::BatchGet | Rpc::Ttl) => true,
        (Role::Readonly, _) => false,
    };
    role_ok && (!rpc.touches_keys() || in_prefix)
}

fn tokens_file(extra: &str) -> String {
    let mut s = String::new();
    for who in Who::all() {
        let Who::Id { role, prefixed } = who else {
            continue;
        };
        let hash: String = Sha256::digest(who.token().unwrap_or_default().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        s.push_str(&format!(
            "[[token]]\nname = \"{}\"\nsha256 = \"{hash}\"\nrole = \"{}\"\n",
            who.name(),
            format!("{role:?}").to_lowercase()
        ));
        if prefixed {
            s.push_str(&format!("prefix = \"{PREFIX}\"\n"));
        }
    }
    s.push_str(extra);
    s
}

fn admin_token() -> String {
    Who::Id {
        role: Role::Admin,
        prefixed: false,
    }
    .token()
    .unwrap_or_default()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(Duration::from_secs(10));
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    r
}

fn header(seq: u64) -> Option<RequestHeader> {
    Some(RequestHeader {
        client_id: 0x5eed_0000 + seq,
        sequence: seq,
        ..Default::default()
    })
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// What one call came to.
#[derive(Debug)]
enum Outcome {
    /// Served (or refused for a reason other than authentication or permission).
    Passed(String),
    /// Refused as unauthenticated or permission denied, with a typed kind.
    Refused(Code, String),
    /// Not served for now (no leader, a leader that moved, unavailable): made again by
    /// [`call_settled`]; it says nothing about authorization.
    Transient(String),
}

fn judge(r: Result<String, Status>) -> Outcome {
    match r {
        Ok(s) => Outcome::Passed(s),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            let kind = s
                .metadata()
                .get(meta::ERROR_KIND)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let want = if s.code() == Code::Unauthenticated {
                meta::KIND_UNAUTHENTICATED
            } else {
                meta::KIND_PERMISSION_DENIED
            };
            assert_eq!(kind, want, "refusal without its typed kind: {s:?}");
            Outcome::Refused(s.code(), s.message().to_string())
        }
        Err(s) => {
            let detail = format!("{:?}: {}", s.code(), s.message());
            if is_transient(&s) {
                Outcome::Transient(detail)
            } else {
                Outcome::Passed(detail)
            }
        }
    }
}

/// An answer that says nothing about authorization: no leader for now, a leader that moved,
/// unavailable (decided by code and typed kind).
fn is_transient(s: &Status) -> bool {
    let kind = s
        .metadata()
        .get(meta::ERROR_KIND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    s.code() == Code::Unavailable || kind == meta::KIND_NOT_LEADER || kind == meta::KIND_NO_LEADER
}

/// A batch's item-level refusal counts as the batch's.
fn batch_outcome(
    r: Result<tonic::Response<ringkv_proto::pb::BatchResponse>, Status>,
) -> Result<String, Status> {
    let resp = r?.into_inner();
    for res in &resp.results {
        if let Some(batch_result::Result::Error(e)) = &res.result {
            let code = Code::from_i32(e.code);
            if matches!(code, Code::Unauthenticated | Code::PermissionDenied) {
                let mut md = tonic::metadata::MetadataMap::new();
                if let Some(k) = res.metadata.get(meta::ERROR_KIND) {
                    md.insert(meta::ERROR_KIND, k.parse().expect("ascii"));
                }
                return Err(Status::with_metadata(code, e.message.clone(), md));
            }
        }
    }
    Ok(format!("{} results", resp.results.len()))
}

/// Makes the call `rpc` on `key` as `who` at node `addr`. Returns the outcome and, for scans,
/// the keys that came back.
async fn call(addr: &str, who: Who, rpc: Rpc, key: &str, seq: u64) -> (Outcome, Vec<Bytes>) {
    let ch = channel(addr).await;
    let mut kv = KvClient::new(ch.clone());
    let mut cl = ClusterClient::new(ch);
    let token = who.token();
    let t = token.as_deref();
    let k = Bytes::from(key.to_string());
    let mut scanned = Vec::new();
    let r: Result<String, Status> = match rpc {
        Rpc::Get => kv
            .get(with_token(
                GetRequest {
                    key: k,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| format!("found={}", r.get_ref().found)),
        Rpc::Put => kv
            .put(with_token(
                PutRequest {
                    header: header(seq),
                    key: k,
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|_| "put".into()),
        Rpc::Touch => kv
            .touch(with_token(
                TouchRequest {
                    header: header(seq),
                    key: k,
                    ttl_ms: Some(60_000),
                },
                t,
            ))
            .await
            .map(|r| format!("touched found={}", r.get_ref().found)),
        Rpc::Persist => kv
            .persist(with_token(
                PersistRequest {
                    header: header(seq),
                    key: k,
                },
                t,
            ))
            .await
            .map(|r| format!("persisted found={}", r.get_ref().found)),
        Rpc::Ttl => kv
            .ttl(with_token(
                TtlRequest {
                    key: k,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| format!("ttl found={}", r.get_ref().found)),
        Rpc::Txn => kv
            .txn(with_token(
                TxnRequest {
                    header: header(seq),
                    compare: vec![TxnCompare {
                        key: k.clone(),
                        target: Some(txn_compare::Target::Version(0)),
                    }],
                    success: vec![TxnOp {
                        op: Some(txn_op::Op::Put(TxnPut {
                            key: k,
                            value: Bytes::from_static(b"t"),
                            ttl_ms: 0,
                        })),
                    }],
                    failure: vec![],
                },
                t,
            ))
            .await
            .map(|r| format!("txn succeeded={}", r.get_ref().succeeded)),
        Rpc::Delete => kv
            .delete(with_token(
                DeleteRequest {
                    header: header(seq),
                    key: k,
                },
                t,
            ))
            .await
            .map(|_| "deleted".into()),
        Rpc::Cas => kv
            .compare_and_swap(with_token(
                CompareAndSwapRequest {
                    header: header(seq),
                    key: k,
                    expected: Some(compare_and_swap_request::Expected::ExpectedVersion(0)),
                    new_value: Some(Bytes::from_static(b"c")),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| format!("swapped={}", r.get_ref().succeeded)),
        Rpc::Scan => {
            // A scan "on a key" scans that key's prefix (everything before the last byte).
            let prefix = Bytes::from(key[..2].to_string());
            kv.scan(with_token(
                ScanRequest {
                    prefix,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| {
                scanned = r.get_ref().items.iter().map(|i| i.key.clone()).collect();
                format!("{} items", scanned.len())
            })
        }
        Rpc::BatchPut | Rpc::BatchGet => {
            let op = if rpc == Rpc::BatchPut {
                batch_item::Op::Put(PutRequest {
                    header: header(seq),
                    key: k,
                    value: Bytes::from_static(b"b"),
                    ..Default::default()
                })
            } else {
                batch_item::Op::Get(GetRequest {
                    key: k,
                    ..Default::default()
                })
            };
            batch_outcome(
                kv.batch(with_token(
                    BatchRequest {
                        items: vec![BatchItem { op: Some(op) }],
                    },
                    t,
                ))
                .await,
            )
        }
        Rpc::Status => cl
            .status(with_token(StatusRequest {}, t))
            .await
            .map(|r| format!("node {}", r.get_ref().node_id)),
        // Node id 0 is refused as invalid after authorization: nothing changes.
        Rpc::MemberAdd => cl
            .add_member(with_token(
                MemberChangeRequest {
                    shard: 0,
                    node_id: 0,
                    addr: "127.0.0.1:1".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| r.get_ref().detail.clone()),
        Rpc::MemberRemove => cl
            .remove_member(with_token(
                MemberChangeRequest {
                    shard: 0,
                    node_id: 0,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(|r| r.get_ref().detail.clone()),
        Rpc::Backup => match cl
            .backup(with_token(
                BackupRequest {
                    shard: 0,
                    ..Default::default()
                },
                t,
            ))
            .await
        {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                let mut bytes = 0usize;
                loop {
                    match stream.message().await {
                        Ok(Some(c)) => bytes += c.data.len(),
                        Ok(None) => break Ok(format!("{bytes} backup bytes")),
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        },
    };
    (judge(r), scanned)
}

/// `call`, made again (up to 50 times, 100 ms apart) while its outcome is
/// [`Outcome::Transient`] for a key RPC: a leadership move (the balancer hands a shard to its
/// preferred node shortly after the start) says nothing about authorization, and such a
/// refusal is definite.
/// A call still transient after the last attempt counts as served with that error, which
/// fails the matrix's check that allowed key RPCs were served.
async fn call_settled(
    addr: &str,
    who: Who,
    rpc: Rpc,
    key: &str,
    seq: u64,
) -> (Outcome, Vec<Bytes>) {
    let mut attempt = 0;
    loop {
        let (got, scanned) = call(addr, who, rpc, key, seq).await;
        attempt += 1;
        match got {
            // Key RPCs are routed to the shard's leader, which can move; membership changes
            // and backups answer `not_leader` on every node but the one they need, every
            // time, so asking the same node again would only wait.
            Outcome::Transient(_) if attempt < 50 && rpc.touches_keys() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Outcome::Transient(detail) => return (Outcome::Passed(detail), scanned),
            got => return (got, scanned),
        }
    }
}

async fn start(dir: &Path, extra: &str) -> Cluster {
    let file = dir.join("tokens.toml");
    std::fs::write(&file, tokens_file(extra)).expect("write tokens");
    let path = file.to_str().expect("utf-8 path").to_string();
    let mut c = Cluster::prepare(3, SHARDS, &["--auth-tokens", &path]);
    let node_token = Who::Id {
        role: Role::Readonly,
        prefixed: true,
    }
    .token()
    .unwrap_or_default();
    for id in 1..=3 {
        c.set_env(id, "RINGKV_NODE_TOKEN", &node_token);
        c.spawn(id);
    }
    c.token = Some(admin_token());
    if let Err(e) = c.wait_for_leaders(Duration::from_secs(30)).await {
        c.dump_logs();
        panic!("{e}");
    }
    c
}

fn admin_of(c: &Cluster) -> ringkv_client::Client {
    c.client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permission_matrix_has_no_unauthorized_success_and_no_refused_authorized_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), "").await;
    let admin = admin_of(&c);
    // Keys inside and outside the prefix, written by the admin, for reads and scans to find.
    admin.put("p:seed", "s").await.expect("seed inside");
    admin.put("q:seed", "s").await.expect("seed outside");

    let mut calls = 0u32;
    let mut unauthorized_successes: Vec<String> = Vec::new();
    let mut refused_authorized: Vec<String> = Vec::new();
    let mut seq = 1u64;
    let started = Instant::now();
    for id in 1..=3u64 {
        let addr = c.addr(id);
        for who in Who::all() {
            for rpc in RPCS {
                let keys: &[&str] = if rpc.touches_keys() {
                    &[INSIDE, OUTSIDE]
                } else {
                    &[INSIDE]
                };
                for &key in keys {
                    seq += 1;
                    calls += 1;
                    let want = allowed(who, rpc, key);
                    let (got, scanned) = call_settled(&addr, who, rpc, key, seq).await;
                    let line = format!("node {id} {} {rpc:?} {key}: {got:?}", who.name());
                    match (&got, want) {
                        (Outcome::Passed(_), false) => unauthorized_successes.push(line.clone()),
                        (Outcome::Refused(..), true) => refused_authorized.push(line.clone()),
                        (Outcome::Passed(detail), true) if rpc.touches_keys() => {
                            // A key RPC that was allowed must also have been served.
                            assert!(!detail.contains(':') || detail.contains("items"), "{line}");
                        }
                        (Outcome::Refused(code, msg), false) => {
                            assert!(!msg.contains("token-of"), "a token in a message: {line}");
                            if matches!(who, Who::Anonymous | Who::WrongToken) {
                                assert_eq!(*code, Code::Unauthenticated, "{line}");
                            } else {
                                assert_eq!(*code, Code::PermissionDenied, "{line}");
                                assert!(
                                    msg.starts_with("permission denied: ") && msg.contains("role "),
                                    "{line}"
                                );
                            }
                        }
                        _ => {}
                    }
                    // A scan never returns a key outside the caller's prefix.
                    if let Who::Id { prefixed: true, .. } = who {
                        for k in &scanned {
                            if !k.starts_with(PREFIX.as_bytes()) {
                                unauthorized_successes.push(format!("{line}: scan leaked {k:?}"));
                            }
                        }
                    }
                }
            }
            // Side path: a scan of the whole key space (and of a prefix shorter than the
            // identity's) by a prefixed identity returns only keys in its prefix, and finds
            // them.
            if let Who::Id {
                role,
                prefixed: true,
            } = who
            {
                for asked in ["", "p"] {
                    calls += 1;
                    let mut kv = KvClient::new(channel(&addr).await);
                    // Made again while the answer is transient, as in `call_settled`.
                    let mut attempt = 0;
                    let items = loop {
                        attempt += 1;
                        let r = kv
                            .scan(with_token(
                                ScanRequest {
                                    prefix: Bytes::from(asked),
                                    ..Default::default()
                                },
                                who.token().as_deref(),
                            ))
                            .await
                            .map(|r| r.into_inner().items);
                        match r {
                            Err(e) if attempt < 50 && is_transient(&e) => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            r => break r,
                        }
                    };
                    match items {
                        Ok(items) => {
                            let keys: Vec<&Bytes> = items.iter().map(|i| &i.key).collect();
                            for k in &keys {
                                if !k.starts_with(PREFIX.as_bytes()) {
                                    unauthorized_successes.push(format!(
                                        "node {id} {role:?}-p scan {asked:?} leaked {k:?}"
                                    ));
                                }
                            }
                            assert!(
                                keys.iter().any(|k| k.as_ref() == b"p:seed"),
                                "node {id} {role:?}-p scan {asked:?}: {keys:?}"
                            );
                        }
                        Err(e) => refused_authorized
                            .push(format!("node {id} {role:?}-p scan {asked:?}: {e:?}")),
                    }
                }
            }
        }
    }

    // Side path: a batch mixing an allowed and a refused key is refused as a whole, naming the
    // refused item, and writes nothing (on every node: leader and forwarding ones).
    let rw_p = Who::Id {
        role: Role::Readwrite,
        prefixed: true,
    };
    for id in 1..=3u64 {
        calls += 1;
        seq += 2;
        let allowed_key = format!("p:mix-{id}");
        let refused_key = format!("q:mix-{id}");
        let mut kv = KvClient::new(channel(&c.addr(id)).await);
        let items = [&allowed_key, &refused_key]
            .iter()
            .enumerate()
            .map(|(i, k)| BatchItem {
                op: Some(batch_item::Op::Put(PutRequest {
                    header: header(seq + i as u64),
                    key: Bytes::from(k.to_string()),
                    value: Bytes::from_static(b"m"),
                    ..Default::default()
                })),
            })
            .collect();
        match kv
            .batch(with_token(BatchRequest { items }, rw_p.token().as_deref()))
            .await
        {
            Err(s) if s.code() == Code::PermissionDenied => {
                assert!(
                    s.message().contains("batch item 1") && s.message().contains(&refused_key),
                    "{s:?}"
                );
            }
            other => unauthorized_successes.push(format!("node {id} mixed batch: {other:?}")),
        }
        for k in [&allowed_key, &refused_key] {
            if admin
                .get(k.clone(), ReadConsistency::Linearizable)
                .await
                .expect("admin get")
                .is_some()
            {
                unauthorized_successes.push(format!("node {id} mixed batch wrote {k}"));
            }
        }
    }

    // Side path: through a node that is not the shard's leader, a readonly token cannot write
    // and a readwrite one can (the forwarded request carries the client's identity).
    let leaders = c
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let shard = c
        .client()
        .status_of(&c.addr(1))
        .await
        .expect("status")
        .shard_count;
    assert_eq!(shard, SHARDS);
    let ro = Who::Id {
        role: Role::Readonly,
        prefixed: false,
    };
    let rw = Who::Id {
        role: Role::Readwrite,
        prefixed: false,
    };
    let ring = ringkv_proto::ring::Ring::new(SHARDS, ringkv_proto::ring::DEFAULT_VNODES);
    let fkey = "p:forwarded";
    let leader = leaders[ring.shard_for(fkey.as_bytes()) as usize];
    let follower = (1..=3u64).find(|&i| i != leader).expect("a follower");
    for (who, want_ok) in [(ro, false), (rw, true)] {
        calls += 1;
        seq += 1;
        let (got, _) = call_settled(&c.addr(follower), who, Rpc::Put, fkey, seq).await;
        match (&got, want_ok) {
            (Outcome::Passed(d), true) => assert_eq!(d, "put", "follower {follower}"),
            (Outcome::Refused(Code::PermissionDenied, _), false) => {}
            _ => panic!("{} put through follower {follower}: {got:?}", who.name()),
        }
    }
    assert_eq!(
        admin
            .get(fkey, ReadConsistency::Linearizable)
            .await
            .expect("get")
            .map(|v| v.value),
        Some(Bytes::from_static(b"v")),
        "the readwrite put through a follower landed"
    );

    println!(
        "permission matrix: {calls} calls in {:?}: {} unauthorized successes, {} refused authorized calls",
        started.elapsed(),
        unauthorized_successes.len(),
        refused_authorized.len()
    );
    assert!(
        unauthorized_successes.is_empty(),
        "unauthorized successes:\n{}",
        unauthorized_successes.join("\n")
    );
    assert!(
        refused_authorized.is_empty(),
        "refused authorized calls:\n{}",
        refused_authorized.join("\n")
    );

    // The CLI: exit code 4 with the server's message, for a refused put and a missing token.
    let ro_token = ro.token().unwrap_or_default();
    let (code, _, err) = cli(
        &c.endpoints(),
        &["--token", &ro_token, "put", "order:{42}:state", "x"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("permission denied: role readonly cannot put order:{42}:state"),
        "{err}"
    );
    let (code, _, err) = cli(&c.endpoints(), &["put", "p:cli", "x"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    let (code, _, err) = cli(&c.endpoints(), &["status"]);
    assert_eq!(code, 4, "status without a token: {err}");
    let admin_token = admin_token();
    let out = Command::new(binary("ringkv"))
        .args(["--endpoints", &c.endpoints().join(","), "put", "p:cli", "x"])
        .env("RINGKV_TOKEN", &admin_token)
        .output()
        .expect("run ringkv");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No token reached any log.
    for n in c.nodes.values() {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(!log.contains("token-of-"), "node {} logged a token", n.id);
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn late_entry() -> String {
    let hash: String = Sha256::digest(b"late-token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[token]]\nname = \"late\"\nsha256 = \"{hash}\"\nrole = \"readwrite\"\n")
}

async fn late_can_put(c: &Cluster, seq: u64) -> Option<bool> {
    let mut kv = KvClient::new(channel(&c.addr(1)).await);
    match kv
        .put(with_token(
            PutRequest {
                header: header(seq),
                key: Bytes::from_static(b"late:k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            },
            Some("late-token"),
        ))
        .await
    {
        Ok(_) => Some(true),
        Err(s) if s.code() == Code::Unauthenticated => Some(false),
        Err(_) => None,
    }
}

fn log_lines(c: &Cluster, id: u64, needle: &str) -> usize {
    std::fs::read_to_string(&c.nodes[&id].log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_tokens_file_and_a_bad_one_keeps_the_old_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), "").await;
    let file = dir.path().join("tokens.toml");
    let mut seq = 1_000u64;
    assert_eq!(late_can_put(&c, seq).await, Some(false));

    // Add an identity, SIGHUP every node: it works.
    std::fs::write(&file, tokens_file(&late_entry())).expect("write");
    for id in 1..=3 {
        c.hangup(id);
    }
    eventually("the added identity works", || {
        seq += 1;
        let s = seq;
        let c = &c;
        async move { late_can_put(c, s).await == Some(true) }
    })
    .await;
    for id in 1..=3 {
        eventually("every node logged the reload", || async {
            log_lines(&c, id, "auth tokens file reloaded") >= 1
        })
        .await;
    }

    // A broken file: refused, one error logged, the previous table (with `late`) stays.
    std::fs::write(
        &file,
        "[[token]]\nname = \"x\"\nrole = \"admin\"\nsurprise = 1\n",
    )
    .expect("write");
    c.hangup(1);
    eventually("node 1 logged the refusal", || async {
        log_lines(&c, 1, "auth tokens file refused") == 1
    })
    .await;
    assert!(
        log_lines(&c, 1, "unknown field `surprise`") == 1,
        "the refusal names the field"
    );
    seq += 1;
    assert_eq!(late_can_put(&c, seq).await, Some(true), "old table kept");

    // Remove the identity again: refused.
    std::fs::write(&file, tokens_file("")).expect("write");
    for id in 1..=3 {
        c.hangup(id);
    }
    eventually("the removed identity is refused", || {
        seq += 1;
        let s = seq;
        let c = &c;
        async move { late_can_put(c, s).await == Some(false) }
    })
    .await;
    for n in c.nodes.values() {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(!log.contains("late-token"), "node {} logged a token", n.id);
    }
}

#[test]
fn a_bad_tokens_file_stops_the_start_with_exit_2_naming_the_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad-tokens.toml");
    std::fs::write(
        &file,
        "[[token]]\nname = \"a\"\nsha256 = \"abc\"\nrole = \"admin\"\n",
    )
    .expect("write");
    let addr = ringkv_tests::free_addr();
    let out = Command::new(binary("ringkv-server"))
        .args([
            "--id",
            "1",
            "--listen",
            &addr,
            "--peers",
            &format!("1={addr}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--auth-tokens")
        .arg(&file)
        .output()
        .expect("run ringkv-server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad-tokens.toml") && err.contains("field sha256"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let missing = dir.path().join("missing.toml");
    let out = Command::new(binary("ringkv-server"))
        .args([
            "--id",
            "1",
            "--listen",
            &addr,
            "--peers",
            &format!("1={addr}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--auth-tokens")
        .arg(&missing)
        .output()
        .expect("run ringkv-server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}
