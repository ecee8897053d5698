//! A rolling restart under a steady write load (issue 6): each node in turn gets SIGTERM
//! (graceful: leadership handed off, Raft stopped, flushed, exit 0), is restarted, and must
//! report `/ready` before the next one goes. No acknowledged write may be lost, no request may
//! fail except as retriable, and no write that failed may have taken effect; the largest
//! latency spike and the client's retries are reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::Error;
use ringkv_tests::{Cluster, assert_writes_kept, http_get};
use tokio::sync::Mutex;

const WRITERS: usize = 8;
const WRITES_PER_WRITER_MAX: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3, 8);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let client = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let worst_us = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<(String, Error)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, acked, worst_us, errors) = (
            client.clone(),
            stop.clone(),
            acked.clone(),
            worst_us.clone(),
            errors.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_WRITER_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (k, v) = (format!("roll:{w}:{i}"), format!("v{i}"));
                let t = Instant::now();
                let r = client.put(k.clone(), v.clone()).await;
                worst_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                match r {
                    Ok(_) => acked.lock().await.push((k, v)),
                    Err(e) => errors.lock().await.push((k, e)),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3 {
        let started = Instant::now();
        let status = cluster.stop(id);
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM"
        );
        cluster.restart(id);
        let admin = cluster.admin_addr(id);
        let ready = cluster
            .wait_until(&format!("node {id} ready"), Duration::from_secs(30), || {
                let admin = admin.clone();
                async move { matches!(http_get(&admin, "/ready").await, Ok((200, _))) }
            })
            .await;
        assert_eq!(ready, Ok(()));
        eprintln!(
            "node {id}: stopped, restarted and ready in {:?}",
            started.elapsed()
        );
        if started.elapsed() > Duration::from_secs(5) {
            cluster.dump_logs();
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
    let acked = acked.lock().await.clone();
    let errors = errors.lock().await.clone();
    eprintln!(
        "{} writes acknowledged, {} failed, worst latency {:?}, client retries {}",
        acked.len(),
        errors.len(),
        Duration::from_micros(worst_us.load(Ordering::Relaxed)),
        client.retries()
    );
    assert!(acked.len() > 100, "the load ran");
    let reader = cluster.client();
    assert_writes_kept(&reader, &acked, &errors, "rolling restart").await;
}
