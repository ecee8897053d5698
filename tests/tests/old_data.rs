//! Old data stays readable (issue 15 item 9): data directories written by the release before
//! the storage-fault work (commit 2f795d7, built from git by
//! `tests/fixtures/make-old-data.sh`, nodes SIGKILLed after the writes) open with the current
//! binaries, replay, elect leaders and serve every key exactly as written; new writes work,
//! each node gets an incarnation and the voters' incarnations are recorded, and a restart
//! keeps everything. A directory whose identity names a newer format is refused with a
//! message naming that format, and left untouched.
//!
//! The committed fixture `tests/fixtures/data-2f795d7.tar.gz` is checked on every run; the
//! ignored test rebuilds it from git first (a fresh debug build of the old workspace: 53 min
//! measured on a busy 2-core machine; `OLD_DATA_TARGET_DIR` reuses an earlier build).
//!
//! Reads go through the client (linearizable unless said otherwise), never to sled directly.
//! The fixture's nodes listen on the fixed loopback ports their membership records
//! (`node.<id>=` in its MANIFEST: 127.0.0.1:27101–27103; the rebuilt one 27111–27113), outside
//! Linux's ephemeral range.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringkv_client::{Client, ReadConsistency};
use ringkv_tests::{Cluster, binary};

const FIXTURE: &str = "data-2f795d7.tar.gz";
const OLD_COMMIT: &str = "2f795d7";

fn fixtures_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// What the fixture's MANIFEST says: node addresses, shard count, key count.
struct Manifest {
    commit: String,
    addrs: BTreeMap<u64, String>,
    shards: u32,
    keys: u32,
}

fn read_manifest(dir: &Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join("MANIFEST")).expect("MANIFEST in the fixture");
    let mut m = Manifest {
        commit: String::new(),
        addrs: BTreeMap::new(),
        shards: 0,
        keys: 0,
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "commit" => m.commit = v.to_string(),
            "shards" => m.shards = v.parse().expect("shards"),
            "keys" => m.keys = v.parse().expect("keys"),
            _ => {
                if let Some(id) = k.strip_prefix("node.") {
                    m.addrs.insert(id.parse().expect("node id"), v.to_string());
                }
            }
        }
    }
    assert!(
        m.addrs.len() == 3 && m.shards > 0 && m.keys > 0,
        "incomplete MANIFEST"
    );
    m
}

/// Unpacks `archive` (with its sparse WAL segments) into a new temporary directory.
fn unpack(archive: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "unpacking {} failed", archive.display());
    dir
}

/// The value the fixture's rule gives key `k/NNNN` (`None`: deleted).
fn expected_k(n: u32) -> Option<String> {
    let key = format!("k/{n:04}");
    if n.is_multiple_of(11) {
        None
    } else if n.is_multiple_of(13) {
        Some(format!("v3:{key}"))
    } else if n.is_multiple_of(7) {
        Some(format!("v2:{key}"))
    } else {
        Some(format!("v1:{key}"))
    }
}

/// Every key of the fixture with its expected value (`None`: must be absent).
fn expected(keys: u32) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = (0..keys)
        .map(|n| (format!("k/{n:04}"), expected_k(n)))
        .collect();
    out.extend((0..20).map(|n| (format!("c/{n:02}"), Some(format!("c:{n:02}")))));
    out
}

/// Reads every expected key with `consistency` through `client` (16 at a time); returns the
/// mismatches as text.
async fn mismatches(
    client: &Client,
    want: &[(String, Option<String>)],
    consistency: ReadConsistency,
) -> Vec<String> {
    let reads = futures::stream::iter(want.iter().cloned())
        .map(|(key, value)| {
            let client = client.clone();
            async move {
                let got = client.get(key.clone(), consistency).await;
                match got {
                    Ok(got) => {
                        let got = got.map(|v| String::from_utf8_lossy(&v.value).into_owned());
                        (got != value).then(|| format!("{key}: want {value:?}, got {got:?}"))
                    }
                    Err(e) => Some(format!("{key}: read failed: {e}")),
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    reads.into_iter().flatten().collect()
}

/// Asserts that every key reads its expected value and that a scan finds no other key.
async fn assert_all_data(cluster: &Cluster, want: &[(String, Option<String>)], what: &str) {
    let client = cluster.client();
    let bad = mismatches(&client, want, ReadConsistency::Linearizable).await;
    assert!(
        bad.is_empty(),
        "{what}: {} of {} keys wrong, e.g. {:?}",
        bad.len(),
        want.len(),
        &bad[..bad.len().min(10)]
    );
    for prefix in ["k/", "c/"] {
        let page = client
            .scan(prefix, 5_000, ReadConsistency::Linearizable)
            .await
            .expect("scan");
        assert!(!page.truncated, "{what}: scan of {prefix} truncated");
        let mut got: Vec<(String, String)> = page
            .items
            .iter()
            .map(|i| {
                (
                    String::from_utf8_lossy(&i.key).into_owned(),
                    String::from_utf8_lossy(&i.value).into_owned(),
                )
            })
            .collect();
        got.sort();
        let mut present: Vec<(String, String)> = want
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        present.sort();
        assert!(
            got == present,
            "{what}: scan of {prefix} finds {} keys, want {}",
            got.len(),
            present.len()
        );
    }
}

/// Waits until every node reports an incarnation and every shard's leader records, for each
/// voter, the incarnation that voter reports; returns node → incarnation.
async fn wait_incarnations_recorded(cluster: &Cluster, timeout: Duration) -> BTreeMap<u64, u64> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let statuses = cluster.statuses().await;
        let own: BTreeMap<u64, u64> = statuses
            .iter()
            .filter_map(|(id, s)| s.as_ref().map(|s| (*id, s.incarnation)))
            .collect();
        let mut ok = own.len() == cluster.nodes.len() && own.values().all(|i| *i != 0);
        if !ok {
            last = format!("incarnations reported: {own:?}");
        }
        for s in statuses.values().flatten() {
            for sh in s.shards.iter().filter(|sh| sh.role == "leader") {
                let recorded: BTreeMap<u64, u64> = sh
                    .voters
                    .iter()
                    .copied()
                    .zip(sh.voter_incarnations.iter().copied())
                    .collect();
                if sh.voters.len() != 3
                    || sh.voter_incarnations.len() != 3
                    || recorded.iter().any(|(id, i)| own.get(id) != Some(i))
                {
                    ok = false;
                    last = format!(
                        "shard {} (leader {}) records {recorded:?}, nodes report {own:?}",
                        sh.shard, s.node_id
                    );
                }
            }
        }
        let leaders = statuses
            .values()
            .flatten()
            .flat_map(|s| s.shards.iter().filter(|sh| sh.role == "leader"))
            .count();
        if ok && leaders == cluster.shards as usize {
            return own;
        }
        if Instant::now() > deadline {
            panic!("voter incarnations not recorded within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checks on old data in `dir` (an unpacked fixture): start the current binaries on it,
/// read everything, write, see incarnations recorded, restart a node, read everything again.
async fn check_old_data(dir: tempfile::TempDir) {
    let manifest = read_manifest(dir.path());
    let want = expected(manifest.keys);
    let started = Instant::now();
    let mut cluster = Cluster::prepare_on(dir, &manifest.addrs, manifest.shards, &[]);
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("old data of {}: {e}", manifest.commit));
    eprintln!("leaders on every shard after {:?}", started.elapsed());

    assert_all_data(&cluster, &want, "after the first start").await;
    eprintln!(
        "{} keys read back after {:?}",
        want.len(),
        started.elapsed()
    );

    // New writes go through and read back.
    let client = cluster.client();
    for n in 0..50 {
        client
            .put(format!("new/{n:02}"), format!("new:{n:02}"))
            .await
            .expect("new write on old data");
    }
    client
        .put("k/0001", "v4:k/0001")
        .await
        .expect("overwrite an old key");
    let mut want = want;
    want.retain(|(k, _)| k != "k/0001");
    want.push(("k/0001".into(), Some("v4:k/0001".into())));
    want.extend((0..50).map(|n| (format!("new/{n:02}"), Some(format!("new:{n:02}")))));
    let bad = mismatches(&client, &want, ReadConsistency::Linearizable).await;
    assert!(bad.is_empty(), "after new writes: {bad:?}");

    // The legacy directories got incarnations at their first start; the leaders record them.
    let incarnations = wait_incarnations_recorded(&cluster, Duration::from_secs(30)).await;
    eprintln!(
        "incarnations recorded after {:?}: {incarnations:x?}",
        started.elapsed()
    );

    // A restart (unclean) of the node leading most shards keeps everything, and its
    // incarnation.
    let leaders = cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let busiest = (1..=3u64)
        .max_by_key(|id| leaders.iter().filter(|l| *l == id).count())
        .unwrap_or(1);
    cluster.kill(busiest);
    cluster.restart(busiest);
    cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await
        .expect("leaders after the restart");
    assert_all_data(&cluster, &want, "after restarting a node").await;
    let after = wait_incarnations_recorded(&cluster, Duration::from_secs(30)).await;
    assert_eq!(
        after, incarnations,
        "an incarnation changed across a restart"
    );
    // The restarted node itself serves every key once it has caught up with the last write.
    let own = cluster.client_of(busiest);
    let last = want.last().cloned().expect("keys");
    cluster
        .wait_until(
            "the restarted node to catch up",
            Duration::from_secs(30),
            || {
                let (own, last) = (own.clone(), last.clone());
                async move {
                    own.get(last.0, ReadConsistency::Serializable)
                        .await
                        .ok()
                        .flatten()
                        .map(|v| v.value)
                        == last.1.map(Into::into)
                }
            },
        )
        .await
        .expect("catch up");
    let bad = mismatches(&own, &want, ReadConsistency::Serializable).await;
    assert!(bad.is_empty(), "node {busiest} after its restart: {bad:?}");
    eprintln!("all checks done after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_written_by_the_previous_release_opens_replays_and_serves() {
    let dir = unpack(&fixtures_dir().join(FIXTURE));
    let manifest = read_manifest(dir.path());
    assert!(
        manifest.commit.starts_with(OLD_COMMIT),
        "fixture written by {}, not {OLD_COMMIT}",
        manifest.commit
    );
    check_old_data(dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds commit 2f795d7 from git (~10 min)"]
async fn data_written_by_the_previous_release_built_from_git_now_opens() {
    let out = tempfile::tempdir().expect("tempdir");
    let archive = out.path().join("old.tar.gz");
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(fixtures_dir().join("make-old-data.sh"))
        .arg(OLD_COMMIT)
        .arg(&archive)
        // Other ports than the committed fixture's, so both tests can run at once.
        .env("BASE_PORT", "27110")
        .stdin(Stdio::null())
        .status()
        .expect("run make-old-data.sh");
    assert!(status.success(), "make-old-data.sh failed: {status}");
    eprintln!(
        "old binaries built and data written in {:?}",
        started.elapsed()
    );
    check_old_data(unpack(&archive)).await;
}

/// A data directory whose identity names a format newer than this binary reads: the server
/// exits non-zero naming both formats, before touching the directory.
#[test]
fn a_newer_format_version_is_refused_naming_the_version() {
    let dir = unpack(&fixtures_dir().join(FIXTURE));
    let manifest = read_manifest(dir.path());
    let data_dir = dir.path().join("node-1");
    let identity_path = data_dir.join("ringkv.json");
    let mut identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&identity_path).expect("ringkv.json"))
            .expect("identity JSON");
    let current = identity["format_version"].as_u64().expect("format_version");
    // Far past any format this binary could read.
    let newer = current + 1000;
    identity["format_version"] = newer.into();
    let written = serde_json::to_vec_pretty(&identity).expect("json");
    std::fs::write(&identity_path, &written).expect("write ringkv.json");
    let listing = |d: &Path| {
        let mut names: Vec<_> = walk(d);
        names.sort();
        names
    };
    let before = listing(&data_dir);

    let (addr, peer_addr) = (ringkv_tests::free_addr(), ringkv_tests::free_addr());
    let own = format!("{addr}@{peer_addr}");
    let peers: Vec<String> = manifest
        .addrs
        .iter()
        .map(|(id, a)| format!("{id}={}", if *id == 1 { &own } else { a }))
        .collect();
    let mut child = Command::new(binary("ringkv-server"))
        .args(["--id", "1", "--listen", &addr, "--peer-listen", &peer_addr])
        .args(["--peers", &peers.join(",")])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--shards", &manifest.shards.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit within 20 s on a newer format");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "the server started on format {newer}");
    assert!(
        stderr.contains(&format!("format {newer}")),
        "the refusal does not name format {newer}: {stderr}"
    );
    assert_eq!(
        std::fs::read(&identity_path).expect("ringkv.json"),
        written,
        "the refused directory's identity was rewritten"
    );
    assert_eq!(listing(&data_dir), before, "the refused directory changed");
}

/// Every file under `dir` with its size, relative to `dir`.
fn walk(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.push((rel, len));
            }
        }
    }
    out
}
