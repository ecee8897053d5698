//! TLS everywhere (issue 16, items 1, 2, 4, 5): a cluster started with `--tls-cert/--tls-key/
//! --tls-ca` serves clients, the CLI and Raft over TLS only; a plaintext connection gets no
//! service on the client, peer or admin port; a peer whose certificate the cluster CA did not
//! sign cannot even connect to the Raft port, and one the CA signed whose names are not on the
//! peer list has every Raft RPC refused (the cluster's terms do not move); a server on a
//! non-loopback address refuses to start without TLS unless `--insecure`; `ringkv-server certs`
//! writes private keys with mode 0600 and never overwrites.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, ClientOptions, Error, TlsFailure, TlsOptions};
use ringkv_proto::meta;
use ringkv_proto::pb::raft_client::RaftClient;
use ringkv_proto::pb::{RaftRequest, SnapshotChunk, SnapshotHead, snapshot_chunk};
use ringkv_tests::{Cluster, binary, cli, free_addr, http_get, make_certs};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const ANSWER: Duration = Duration::from_secs(10);

fn cli_tls(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = cluster.cli_tls_args();
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    cli(&cluster.endpoints(), &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_the_client_library_and_the_cli() {
    let cluster = Cluster::start_tls(3, 2, &[]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders over TLS");
    let client = cluster.client();
    for i in 0..20 {
        client
            .put(format!("tls:{i:02}"), format!("v{i}"))
            .await
            .expect("put over TLS");
    }
    let got = client
        .get("tls:07", ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect("get over TLS");
    assert_eq!(got.map(|v| v.value), Some(Bytes::from("v7")));
    let page = client
        .scan("tls:", 100, ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect("scan over TLS");
    assert_eq!(page.items.len(), 20);

    let (code, out, err) = cli_tls(&cluster, &["status"]);
    assert_eq!(code, 0, "status over TLS: {out}{err}");
    let (code, out, err) = cli_tls(&cluster, &["put", "tls:cli", "x"]);
    assert_eq!(code, 0, "put over TLS: {out}{err}");
    let (code, out, _) = cli_tls(&cluster, &["get", "tls:cli"]);
    assert_eq!((code, out.trim()), (0, "x"));
    // The CA alone (no client certificate, no token) encrypts but proves nobody: exit 4.
    let dir = cluster.tls_dir().expect("tls").to_path_buf();
    let ca = dir.join("ca.pem").display().to_string();
    let (code, out, err) = cli(&cluster.endpoints(), &["--cacert", &ca, "get", "tls:cli"]);
    assert_eq!(code, 4, "CA only: {out}{err}");
    assert!(err.contains("authentication required"), "{err}");
}

/// A TLS channel to `addr` trusting the cluster CA in `dir`, presenting `identity`
/// (`node-1`, `client`, …: the `.pem`/`.key` pair of that name), or no certificate.
async fn tls_channel(addr: &str, dir: &Path, identity: Option<&str>) -> tonic::transport::Channel {
    let read = |p: &Path| std::fs::read(p).expect("read pem");
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&dir.join("ca.pem"))));
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            read(&dir.join(format!("{name}.pem"))),
            read(&dir.join(format!("{name}.key"))),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(ANSWER)
        .connect()
        .await
        .expect("connect")
}

/// With TLS and no tokens file, a client must prove itself with a certificate: the admin
/// certificate does everything through every node (two of three forward it to the leader,
/// on its behalf), a node's certificate reads status and nothing else, and a client with no
/// certificate, or a CA-signed certificate of no known name, is refused as unauthenticated;
/// and a node with such a certificate cannot `--join` (it exits at once, saying why).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_tls_only_certificates_with_a_role_get_in() {
    use ringkv_proto::pb::cluster_client::ClusterClient;
    use ringkv_proto::pb::kv_client::KvClient;
    use ringkv_proto::pb::{PutRequest, RequestHeader, StatusRequest};

    let mut cluster = Cluster::start_tls(3, 2, &["--peer-allowed-names", "node-1,node-2,node-3"]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders over TLS");
    let dir = cluster.tls_dir().expect("tls").to_path_buf();
    let put = |key: String, seq: u64| {
        let mut r = tonic::Request::new(PutRequest {
            header: Some(RequestHeader {
                client_id: 0x7e57_0000 + seq,
                sequence: 1,
                ..Default::default()
            }),
            key: Bytes::from(key),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        });
        r.set_timeout(ANSWER);
        r
    };
    let mut seq = 0;
    for id in 1..=3u64 {
        let addr = cluster.addr(id);
        // The admin certificate, through this node, for keys of both shards.
        let admin = tls_channel(&addr, &dir, Some("client")).await;
        for k in 0..4 {
            seq += 1;
            let key = format!("cert:{id}:{k}");
            let mut r = Err(tonic::Status::unavailable("not tried"));
            for _ in 0..50 {
                r = KvClient::new(admin.clone())
                    .put(put(key.clone(), seq))
                    .await;
                match &r {
                    Err(s) if s.code() == Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    _ => break,
                }
            }
            r.unwrap_or_else(|s| panic!("admin put {key} via node {id}: {s:?}"));
        }
        // A node's certificate: status only.
        let node = tls_channel(&addr, &dir, Some("node-2")).await;
        ClusterClient::new(node.clone())
            .status(StatusRequest::default())
            .await
            .unwrap_or_else(|s| panic!("node status via node {id}: {s:?}"));
        seq += 1;
        let s = KvClient::new(node)
            .put(put(format!("cert:{id}:node"), seq))
            .await
            .expect_err("a node certificate may not write");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert_eq!(kind(&s), meta::KIND_PERMISSION_DENIED, "{s:?}");
        assert!(s.message().contains("role node cannot put"), "{s:?}");
        // No certificate, or a CA-signed one that is neither a role nor a listed peer.
        for who in [None, Some("node-4")] {
            let ch = tls_channel(&addr, &dir, who).await;
            let s = ClusterClient::new(ch.clone())
                .status(StatusRequest::default())
                .await
                .expect_err("status without an identity");
            assert_eq!(s.code(), Code::Unauthenticated, "{who:?}: {s:?}");
            assert_eq!(kind(&s), meta::KIND_UNAUTHENTICATED, "{who:?}: {s:?}");
            seq += 1;
            let s = KvClient::new(ch)
                .put(put(format!("cert:{id}:anon"), seq))
                .await
                .expect_err("a put without an identity");
            assert_eq!(s.code(), Code::Unauthenticated, "{who:?}: {s:?}");
        }
    }
    // Every admin write is there, and nothing else.
    let page = cluster
        .client()
        .scan("cert:", 100, ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect("scan");
    let keys: Vec<String> = page
        .items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.key).into_owned())
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    // A node whose certificate (CA-signed) is off the peer list cannot join: the member refuses
    // its status call, and it stops at once, saying why, instead of retrying for 30 s.
    let started = Instant::now();
    cluster.join(4, 1);
    let status = cluster
        .wait_exit(4, Duration::from_secs(20))
        .expect("the refused joiner exits");
    assert!(!status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(&cluster.nodes[&4].log).expect("log");
    assert!(log.contains("refused this node"), "{log}");
    assert!(
        keys.iter()
            .all(|k| !k.ends_with(":node") && !k.ends_with(":anon")),
        "{keys:?}"
    );
}

/// A Raft client on `addr` speaking TLS with `cert`/`key`, trusting `ca`.
async fn raft_client(
    addr: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<RaftClient<tonic::transport::Channel>, tonic::transport::Error> {
    let read = |p: &Path| std::fs::read(p).expect("read pem");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .identity(Identity::from_pem(read(cert), read(key)));
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(ANSWER)
        .connect()
        .await?;
    Ok(RaftClient::new(channel))
}

fn envelope(shard_id: u32, to: u64) -> RaftRequest {
    RaftRequest {
        cluster_id: "ringkv".into(),
        shard_id,
        from: 2,
        to,
        payload: Bytes::from_static(b""),
        to_incarnation: 0,
        cluster_uuid: String::new(),
    }
}

fn kind(s: &tonic::Status) -> &str {
    s.metadata()
        .get(meta::ERROR_KIND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every Raft RPC on `raft` to node 1, sent as node `from`, each answered with its status.
async fn every_raft_rpc(
    raft: &mut RaftClient<tonic::transport::Channel>,
    from: u64,
) -> Vec<tonic::Status> {
    let mut out = Vec::new();
    let message = || RaftRequest {
        from,
        ..envelope(0, 1)
    };
    macro_rules! unary {
        ($call:ident) => {
            out.push(
                tokio::time::timeout(ANSWER, raft.$call(message()))
                    .await
                    .expect("answer")
                    .expect_err(stringify!($call)),
            )
        };
    }
    unary!(vote);
    unary!(pre_vote);
    unary!(append);
    unary!(transfer_leader);
    let stream = tokio::time::timeout(
        ANSWER,
        raft.append_stream(futures::stream::iter(vec![message()])),
    )
    .await
    .expect("answer");
    out.push(match stream {
        Err(s) => s,
        Ok(r) => {
            let mut r = r.into_inner();
            tokio::time::timeout(ANSWER, r.message())
                .await
                .expect("answer")
                .expect_err("append stream")
        }
    });
    let head = SnapshotChunk {
        part: Some(snapshot_chunk::Part::Head(SnapshotHead {
            cluster_id: "ringkv".into(),
            shard_id: 0,
            from,
            to: 1,
            ..Default::default()
        })),
    };
    out.push(
        tokio::time::timeout(
            ANSWER,
            raft.install_snapshot(futures::stream::iter(vec![head])),
        )
        .await
        .expect("answer")
        .expect_err("install snapshot"),
    );
    out
}

/// Each shard's term on every node, once every node reports the same term for each shard
/// (right after start-up a node may not have heard of the last election yet); at most 20 s.
async fn settled_terms(cluster: &Cluster) -> Vec<(u64, u32, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = terms(cluster).await;
        let mut by_shard = std::collections::BTreeMap::<u32, Vec<u64>>::new();
        for (_, shard, term) in &now {
            by_shard.entry(*shard).or_default().push(*term);
        }
        if by_shard
            .values()
            .all(|t| t.windows(2).all(|w| w[0] == w[1]))
        {
            return now;
        }
        assert!(Instant::now() < deadline, "terms never settled: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each shard's term on every node.
async fn terms(cluster: &Cluster) -> Vec<(u64, u32, u64)> {
    let mut out = Vec::new();
    for (id, s) in cluster.statuses().await {
        let s = s.expect("status");
        for sh in s.shards {
            out.push((id, sh.shard, sh.term));
        }
    }
    out
}

/// A node's own certificate passes the peer check, but it speaks only as its node: node 2's
/// certificate claiming to be node 3 or node 1 is refused on every Raft RPC, and nothing reaches
/// openraft.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_certificate_cannot_speak_as_another_node() {
    let cluster = Cluster::start_tls(3, 2, &[]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders over TLS");
    let before = settled_terms(&cluster).await;
    let dir = cluster.tls_dir().expect("tls").to_path_buf();
    let mut raft = raft_client(
        &cluster.peer_addr(1),
        &dir.join("ca.pem"),
        &dir.join("node-2.pem"),
        &dir.join("node-2.key"),
    )
    .await
    .expect("handshake with node 2's certificate");
    // As itself, a call passes the peer checks and fails on its empty payload.
    let own = RaftRequest {
        from: 2,
        ..envelope(0, 1)
    };
    let own = tokio::time::timeout(ANSWER, raft.vote(own))
        .await
        .expect("answer")
        .expect_err("an empty vote");
    assert_eq!(own.code(), Code::InvalidArgument, "{own:?}");
    for from in [3, 1] {
        let refused = every_raft_rpc(&mut raft, from).await;
        assert_eq!(refused.len(), 6);
        for s in &refused {
            assert!(
                s.code() == Code::PermissionDenied
                    && kind(s) == meta::KIND_PEER_NOT_ALLOWED
                    && s.message().contains("node [2]"),
                "node 2 as node {from}: {s:?}"
            );
        }
    }
    assert_eq!(terms(&cluster).await, before, "no term moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_off_the_list_or_from_another_ca_cannot_call_raft() {
    let cluster = Cluster::start_tls(3, 2, &[]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders over TLS");
    let before = settled_terms(&cluster).await;
    let dir = cluster.tls_dir().expect("tls").to_path_buf();
    let peer = cluster.peer_addr(1);

    // The right CA, a name not on the peer list (the admin client certificate).
    let mut raft = raft_client(
        &peer,
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client.key"),
    )
    .await
    .expect("the handshake succeeds: the CA signed the certificate");
    let refused = every_raft_rpc(&mut raft, 2).await;
    assert_eq!(refused.len(), 6);
    for s in &refused {
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert_eq!(kind(s), meta::KIND_PEER_NOT_ALLOWED, "{s:?}");
    }

    // Another CA's node certificate (with every loopback name): no handshake at all.
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path(), 1);
    let wrong_ca = raft_client(
        &peer,
        &dir.join("ca.pem"),
        &other.path().join("node-1.pem"),
        &other.path().join("node-1.key"),
    )
    .await;
    match wrong_ca {
        Err(_) => {}
        Ok(mut raft) => {
            let r = tokio::time::timeout(ANSWER, raft.vote(envelope(0, 1)))
                .await
                .expect("answer");
            let s = r.expect_err("a certificate from another CA must not be served");
            assert!(
                !matches!(
                    s.code(),
                    Code::PermissionDenied | Code::FailedPrecondition | Code::InvalidArgument
                ),
                "the call reached the Raft service: {s:?}"
            );
        }
    }

    // The cluster did not move: same terms, still serving.
    assert_eq!(terms(&cluster).await, before);
    cluster
        .client()
        .put("after", "x")
        .await
        .expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_gets_no_service_on_the_client_peer_or_admin_port() {
    let cluster = Cluster::start_tls(1, 1, &[]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders over TLS");
    cluster.client().put("k", "v").await.expect("TLS put");

    // Client port: the library and the CLI say the server wants TLS; never "outcome unknown".
    let mut opts = ClientOptions::new(cluster.endpoints());
    opts.request_timeout = Duration::from_secs(5);
    let plain = Client::new(opts).expect("client");
    let err = plain.put("k", "w").await.expect_err("plaintext put");
    assert!(
        matches!(
            err,
            Error::Tls {
                failure: TlsFailure::ServerSpeaksTls,
                ..
            }
        ),
        "{err:?}"
    );
    let err = plain
        .get("k", ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect_err("plaintext get");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let (code, _, stderr) = cli(&cluster.endpoints(), &["get", "k"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");

    // Client port, TLS with another CA: the server is not trusted, and the error says so.
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path(), 1);
    let ca = other.path().join("ca.pem");
    let (code, _, stderr) = cli(
        &cluster.endpoints(),
        &["--cacert", &ca.display().to_string(), "get", "k"],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("not signed by the CA in --cacert"),
        "{stderr}"
    );
    let mut opts = ClientOptions::new(cluster.endpoints());
    opts.tls = Some(TlsOptions {
        ca,
        cert: None,
        key: None,
    });
    let err = Client::new(opts)
        .expect("client")
        .get("k", ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect_err("untrusted");
    assert!(
        matches!(
            err,
            Error::Tls {
                failure: TlsFailure::UntrustedServer,
                ..
            }
        ),
        "{err:?}"
    );

    // Peer port: a plaintext Raft call is not served.
    let peer = cluster.peer_addr(1);
    let plain_raft = async {
        let mut raft = RaftClient::connect(format!("http://{peer}")).await.ok()?;
        Some(raft.vote(envelope(0, 1)).await)
    };
    match tokio::time::timeout(ANSWER, plain_raft)
        .await
        .expect("answer")
    {
        None => {}
        Some(Ok(_)) => panic!("a plaintext vote was served"),
        Some(Err(s)) => assert!(
            !matches!(
                s.code(),
                Code::PermissionDenied
                    | Code::FailedPrecondition
                    | Code::InvalidArgument
                    | Code::Unauthenticated
            ),
            "a plaintext vote reached the Raft service: {s:?}"
        ),
    }

    // Admin port: plaintext HTTP gets no answer.
    let admin = cluster.admin_addr(1);
    match tokio::time::timeout(ANSWER, http_get(&admin, "/health")).await {
        Err(_) | Ok(Err(_)) => {}
        Ok(Ok((code, body))) => panic!("plaintext /health answered {code}: {body}"),
    }
    // The cluster still serves TLS clients.
    let got = cluster
        .client()
        .get("k", ringkv_client::ReadConsistency::Linearizable)
        .await
        .expect("TLS get");
    assert_eq!(got.map(|v| v.value), Some(Bytes::from("v")));
}

#[test]
fn a_non_loopback_listener_needs_tls_or_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_addr()
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("port");
    let listen = format!("0.0.0.0:{port}");
    let data = dir.path().join("data");
    let args = |extra: &[&str]| {
        let mut c = Command::new(binary("ringkv-server"));
        c.args(["--id", "1", "--listen", &listen, "--peers"])
            .arg(format!("1={listen}"))
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .stdin(Stdio::null());
        c
    };
    let out = args(&[]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--tls-cert/--tls-key/--tls-ca") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing written before refusing");
    // Only some of the TLS files: refused too.
    let out = args(&["--tls-cert", "/nonexistent.pem"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    // A garbage PEM file: a clear error naming it, exit 2.
    let bad = dir.path().join("garbage.pem");
    std::fs::write(&bad, "not pem").expect("write");
    let b = bad.display().to_string();
    let out = args(&["--tls-cert", &b, "--tls-key", &b, "--tls-ca", &b])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.pem"));

    // --insecure: starts, and says so in its log.
    let log = dir.path().join("insecure.log");
    let mut child = args(&["--insecure"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let warned = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("--insecure: serving without TLS") {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let running = child.try_wait().ok().flatten().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warned && running,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn certs_writes_private_keys_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c");
    let run = |extra: &[&str]| {
        Command::new(binary("ringkv-server"))
            .args([
                "certs",
                "--nodes",
                "2",
                "--hosts",
                "10.1.0.1,10.1.0.2",
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .output()
            .expect("run certs")
    };
    let first = run(&[]);
    assert_eq!(first.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&first.stdout);
    for f in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "client.pem",
        "client.key",
    ] {
        let meta = std::fs::metadata(out.join(f)).expect(f);
        let mode = meta.permissions().mode() & 0o777;
        if f.ends_with(".key") {
            assert_eq!(mode, 0o600, "{f}");
        } else {
            assert_eq!(mode & 0o077 & !0o044, 0, "{f}");
        }
        assert!(printed.contains(f), "{printed}");
    }
    let ca = std::fs::read(out.join("ca.pem")).expect("ca");
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(std::fs::read(out.join("ca.pem")).expect("ca"), ca);
    let forced = run(&["--force"]);
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(std::fs::read(out.join("ca.pem")).expect("ca"), ca);
}

/// Stops a `ringkv-server dev` process (SIGTERM: it stops its nodes) when dropped.
struct DevGuard(std::process::Child);

impl Drop for DevGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three consecutive free ports at `base`, `base + 100` and `base + 200` (below the kernel's
/// range for outgoing connections, so none is taken by one meanwhile).
fn dev_ports() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed * 7 + attempt * 97) % 9_000) as u16;
        if (0..3).all(|i| free(base + i) && free(base + 100 + i) && free(base + 200 + i)) {
            return base;
        }
    }
    panic!("no free port range for the dev cluster");
}

/// `ringkv-server dev --tls`: a CA and certificates generated on the first run, TLS on every
/// port, and the printed client flags work (put and get); the CA alone proves nobody (exit 4)
/// and plaintext gets a TLS error (exit 4). A second run reuses the same certificates.
#[test]
fn dev_tls_runs_a_tls_cluster_and_prints_flags_that_work() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let base = dev_ports();
    let run = || {
        let mut child = Command::new(binary("ringkv-server"))
            .args([
                "dev",
                "--tls",
                "--nodes",
                "3",
                "--shards",
                "2",
                "--data-dir",
            ])
            .arg(&data)
            .args(["--base-port", &base.to_string()])
            .args(["--peer-base-port", &(base + 100).to_string()])
            .args(["--admin-base-port", &(base + 200).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dev");
        let stdout = child.stdout.take().expect("stdout");
        let guard = DevGuard(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut lines = Vec::new();
        while !lines.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("dev --tls not ready in 90 s: {lines:#?}"),
            }
        }
        (guard, lines)
    };
    let (guard, lines) = run();
    let flags_line = lines
        .iter()
        .find(|l| l.starts_with("TLS on every port"))
        .unwrap_or_else(|| panic!("no TLS line: {lines:#?}"));
    let flags: Vec<String> = flags_line
        .split_once("(client flags:")
        .and_then(|(_, f)| f.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no flags in {flags_line}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(flags.len(), 6, "{flags:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("put hello world") && l.contains("--cacert")),
        "{lines:#?}"
    );
    let eps: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        cli(&eps, &a)
    };
    let (code, out, err) = with(&["put", "hello", "world"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = with(&["get", "hello"]);
    assert_eq!((code, out.trim()), (0, "world"), "{err}");
    let ca = data.join("certs").join("ca.pem").display().to_string();
    let (code, _, err) = cli(&eps, &["--cacert", &ca, "get", "hello"]);
    assert_eq!(code, 4, "CA only: {err}");
    let (code, _, err) = cli(&eps, &["get", "hello"]);
    assert_eq!(code, 4, "plaintext: {err}");
    assert!(err.contains("TLS"), "{err}");
    let ca_pem = std::fs::read(&ca).expect("ca");
    drop(guard);

    // Again on the same directory: the same CA, and the data is still there.
    let (guard, _) = run();
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_pem,
        "certificates regenerated"
    );
    let (code, out, err) = with(&["get", "hello"]);
    assert_eq!((code, out.trim()), (0, "world"), "{err}");
    drop(guard);
}
