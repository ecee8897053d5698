//! Certificate rotation onto a new CA by rolling restarts under write load (issue 16), the
//! procedure docs/security.md gives: (1) every node trusts the old and the new CA, (2) every
//! node presents its new certificate, (3) every node trusts only the new CA. Each phase
//! restarts the nodes one at a time with SIGTERM (graceful), its files replaced in place as a
//! secret update would, while writers keep putting through a client made from that phase's
//! files. No request may fail except as retriable, every acknowledged write must be readable
//! at the end with the new CA and the new admin certificate only, and no write that failed may
//! have taken effect.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringkv_client::Error;
use ringkv_tests::{Cluster, assert_writes_kept, make_certs};
use tokio::sync::Mutex;

const WRITERS: usize = 4;
const WRITES_PER_WRITER_MAX: usize = 20_000;

type Acked = Arc<Mutex<Vec<(String, String)>>>;
type Failed = Arc<Mutex<Vec<(String, Error)>>>;

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from:?} to {to:?}: {e}"));
}

/// Restarts every node in turn, with writers running on a client made from the current files.
async fn rolling_restart_under_load(
    cluster: &mut Cluster,
    phase: &str,
    acked: &Acked,
    failed: &Failed,
) {
    let client = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, acked, failed) =
            (client.clone(), stop.clone(), acked.clone(), failed.clone());
        let phase = phase.to_string();
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_WRITER_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("rot:{phase}:{w}:{i}"), format!("v{i}"));
                match client.put(k.clone(), v.clone()).await {
                    Ok(_) => acked.lock().await.push((k, v)),
                    Err(e) => failed.lock().await.push((k, e)),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in 1..=3 {
        let status = cluster.stop(id);
        assert!(status.success(), "{phase}: node {id} exited with {status}");
        cluster.restart(id);
        if let Err(e) = cluster.wait_for_leaders(Duration::from_secs(30)).await {
            cluster.dump_logs();
            panic!("{phase}: after restarting node {id}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("writer ends")
            .expect("writer");
    }
    eprintln!(
        "{phase}: {} writes acknowledged so far, {} failed, client retries {}",
        acked.lock().await.len(),
        failed.lock().await.len(),
        client.retries()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_onto_a_new_ca_under_write_load_fails_no_request() {
    let mut cluster = Cluster::start_tls(3, 4, &[]);
    cluster
        .wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let live = cluster.tls_dir().expect("tls").to_path_buf();
    let new = tempfile::tempdir().expect("tempdir");
    make_certs(new.path(), 3);
    let new = new.path();
    let mut bundle = std::fs::read(live.join("ca.pem")).expect("old ca");
    bundle.extend(std::fs::read(new.join("ca.pem")).expect("new ca"));

    let acked: Acked = Arc::default();
    let failed: Failed = Arc::default();
    // 1: trust both CAs (nodes still present the old certificates).
    std::fs::write(live.join("ca.pem"), &bundle).expect("write bundle");
    rolling_restart_under_load(&mut cluster, "trust-both", &acked, &failed).await;
    // 2: present the new certificates.
    for id in 1..=3 {
        for ext in ["pem", "key"] {
            copy(
                &new.join(format!("node-{id}.{ext}")),
                &live.join(format!("node-{id}.{ext}")),
            );
        }
    }
    rolling_restart_under_load(&mut cluster, "new-certificates", &acked, &failed).await;
    // 3: trust only the new CA; clients move to the new CA and admin certificate too.
    for f in ["ca.pem", "client.pem", "client.key"] {
        copy(&new.join(f), &live.join(f));
    }
    rolling_restart_under_load(&mut cluster, "new-ca-only", &acked, &failed).await;

    let acked = acked.lock().await.clone();
    let failed = failed.lock().await.clone();
    assert!(acked.len() > 100, "the load ran: {} writes", acked.len());
    // Read back with the new CA and the new admin certificate only.
    let reader = cluster.client();
    assert_writes_kept(&reader, &acked, &failed, "certificate rotation").await;
    eprintln!(
        "rotation: {} writes acknowledged, {} failed as retriable",
        acked.len(),
        failed.len()
    );
}
