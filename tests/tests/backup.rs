//! Backup and restore (issue 5, acceptance 4): `ringkv backup save` of a live cluster under a
//! write load, `ringkv backup verify`, `ringkv-server restore` into the data directories of a
//! new cluster, which then serves every key acknowledged before the backup began and takes new
//! writes. One flipped byte makes verify and restore fail with a clear message and leaves no
//! restored directory behind.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::ReadConsistency;
use ringkv_tests::{Cluster, binary, cli};
use tokio::sync::Mutex;

const SHARDS: u32 = 4;
const KEYS_BEFORE: usize = 3_000;

/// The cluster UUID every node of `cluster` reports (they must agree and it must be set).
async fn cluster_uuid_of(cluster: &Cluster) -> String {
    let uuids: Vec<String> = cluster
        .statuses()
        .await
        .into_values()
        .map(|s| s.expect("every node answers Status").cluster_uuid)
        .collect();
    assert!(
        !uuids[0].is_empty() && uuids.iter().all(|u| *u == uuids[0]),
        "nodes disagree on the cluster UUID or do not know it: {uuids:?}"
    );
    uuids[0].clone()
}

/// Runs `ringkv-server restore`; returns (exit code, stderr).
fn restore(from: &Path, id: u64, peers: &str, data_dir: &Path) -> (i32, String) {
    let out = Command::new(binary("ringkv-server"))
        .arg("restore")
        .arg("--from")
        .arg(from)
        .args(["--id", &id.to_string(), "--peers", peers])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run ringkv-server restore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_live_cluster_restores_into_a_new_one_and_corruption_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("cluster.rkvbackup");
    let old = Cluster::start(3, SHARDS);
    old.wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let client = old.client();
    let mut before = Vec::with_capacity(KEYS_BEFORE);
    for chunk in (0..KEYS_BEFORE).collect::<Vec<_>>().chunks(100) {
        let puts = chunk.iter().map(|i| {
            let c = client.clone();
            let (k, v) = (format!("bk:{i}"), format!("value-{i}"));
            async move { c.put(k.clone(), v.clone()).await.map(|_| (k, v)) }
        });
        for r in futures::future::join_all(puts).await {
            before.push(r.expect("put before the backup"));
        }
    }
    // A write load runs through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<u64>> = Arc::default();
    let load = {
        let (client, stop, during) = (client.clone(), stop.clone(), during.clone());
        tokio::spawn(async move {
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if client.put(format!("during:{i}"), "x").await.is_ok() {
                    *during.lock().await += 1;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let endpoints = old.endpoints();
    let file_arg = file.to_string_lossy().into_owned();
    let started = Instant::now();
    let (code, out, err) = tokio::task::spawn_blocking({
        let (e, f) = (endpoints.clone(), file_arg.clone());
        move || cli(&e, &["backup", "save", &f])
    })
    .await
    .expect("backup task");
    eprintln!("backup save ({:?}): {out}{err}", started.elapsed());
    assert_eq!(code, 0, "backup save failed");
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    eprintln!(
        "{} writes acknowledged during the load",
        *during.lock().await
    );
    assert!(*during.lock().await > 0, "the load made no progress");

    let (code, out, err) = cli(&endpoints, &["backup", "verify", &file_arg]);
    assert_eq!(code, 0, "verify failed: {err}");
    assert!(out.contains("valid backup"), "verify said: {out}");
    let old_uuid = cluster_uuid_of(&old).await;
    drop(old);

    // A new cluster, seeded from the backup.
    let mut new = Cluster::prepare(3, SHARDS, &[]);
    for id in 1..=3 {
        let dir = new.nodes[&id].data_dir.clone();
        let (code, msg) = restore(&file, id, new.peers(), &dir);
        assert_eq!(code, 0, "restore of node {id} failed: {msg}");
    }
    for id in 1..=3 {
        new.spawn(id);
    }
    new.wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders in the restored cluster");
    // A restored cluster is a new cluster: every node knows its new UUID from the start.
    let new_uuid = cluster_uuid_of(&new).await;
    assert_ne!(
        new_uuid, old_uuid,
        "the restored cluster must not pass for the one it was copied from"
    );
    let c = new.client();
    for chunk in before.chunks(100) {
        let gets = chunk.iter().map(|(k, _)| {
            let c = c.clone();
            let k = k.clone();
            async move { c.get(k, ReadConsistency::Linearizable).await }
        });
        for ((k, v), r) in chunk.iter().zip(futures::future::join_all(gets).await) {
            let got = r.expect("read in the restored cluster");
            assert_eq!(
                got.map(|g| g.value),
                Some(Bytes::from(v.clone())),
                "key {k} acknowledged before the backup"
            );
        }
    }
    c.put("after-restore", "yes")
        .await
        .expect("write after restore");
    let got = c
        .get("after-restore", ReadConsistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(got.map(|g| g.value), Some(Bytes::from_static(b"yes")));
    // A node of the restored cluster restarts from its restored data.
    new.kill(2);
    new.restart(2);
    new.wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders after restarting node 2");
    let only2 = new.client_of(2);
    new.wait_until(
        "node 2 serves the new write",
        Duration::from_secs(10),
        || {
            let only2 = only2.clone();
            async move {
                matches!(only2.get("after-restore", ReadConsistency::Serializable).await,
                Ok(Some(v)) if v.value == Bytes::from_static(b"yes"))
            }
        },
    )
    .await
    .expect("node 2 caught up");

    // One flipped byte: verify and restore refuse it, and nothing is left half-restored.
    let bytes = std::fs::read(&file).expect("read backup");
    let bad = work.path().join("flipped.rkvbackup");
    for at in [bytes.len() / 3, bytes.len() - 20] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&bad, &b).expect("write flipped");
        let (code, _, err) = cli(&endpoints, &["backup", "verify", &bad.to_string_lossy()]);
        assert_eq!(code, 2, "verify of a flipped byte at {at} must fail: {err}");
        assert!(
            err.contains("corrupt backup"),
            "unclear verify error: {err}"
        );
        let target = work.path().join(format!("restore-into-{at}"));
        let (code, msg) = restore(&bad, 1, new.peers(), &target);
        assert_eq!(
            code, 2,
            "restore of a flipped byte at {at} must fail: {msg}"
        );
        assert!(
            msg.contains("refusing to restore") && msg.contains("corrupt backup"),
            "unclear restore error: {msg}"
        );
        assert!(
            !target.exists(),
            "a refused restore left {}",
            target.display()
        );
        let mut staging = target.clone().into_os_string();
        staging.push(".restoring");
        assert!(
            !Path::new(&staging).exists(),
            "a refused restore left its staging directory"
        );
    }
    // A non-empty data directory is never overwritten.
    let (code, msg) = restore(&file, 1, new.peers(), &new.nodes[&1].data_dir.clone());
    assert_eq!(
        code, 2,
        "restore over a live data directory must be refused: {msg}"
    );
}
