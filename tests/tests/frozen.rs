//! One frozen node does not stall the others (issue 18, item 5): with a node SIGSTOPped (a GC
//! pause, a stuck VM) the client gives up on it after one attempt timeout, retries elsewhere
//! under the same sequence, and passes it over while it stays frozen, so writes keep being
//! acknowledged the whole time instead of waiting for the node to thaw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_tests::{Cluster, assert_definite_failures_absent};
use tokio::sync::Mutex;

const WRITERS: usize = 16;
const WRITES_PER_WRITER_MAX: usize = 20_000;
const FROZEN: Duration = Duration::from_secs(12);
/// The longest time without any acknowledged write while the node is frozen. Every writer
/// soon waits on a key of a shard the frozen node led, which no one can write until the
/// others elect a new leader (2–4 election timeouts of 1 s with pre-vote), and the client
/// gives up on the frozen node after its attempt timeout (2 s); then all shards take writes
/// again. With the old 12 s attempt timeout the writers wait on the frozen node until it
/// thaws, and the gap is the whole freeze.
const ACK_GAP_MAX: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_one_node_is_frozen() {
    let cluster = Cluster::start(3, 8);
    cluster
        .wait_for_leaders(Duration::from_secs(15))
        .await
        .expect("leaders");
    let client = cluster.client();
    // Learn the ring and the leaders first.
    for i in 0..64 {
        client
            .put(format!("warm:{i}"), "v")
            .await
            .expect("warm-up put");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, acks, failed) =
            (client.clone(), stop.clone(), acks.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            let mut unknown = 0u64;
            for i in 0..WRITES_PER_WRITER_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("frozen:{w}:{i}");
                match client.put(key.clone(), "v").await {
                    Ok(_) => acks.lock().await.push(Instant::now()),
                    Err(ringkv_client::Error::OutcomeUnknown(_)) => unknown += 1,
                    Err(_) => failed.lock().await.push(key),
                }
            }
            unknown
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.pause(3);
    let frozen_at = Instant::now();
    tokio::time::sleep(FROZEN).await;
    let thawed_at = Instant::now();
    cluster.resume(3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut unknown = 0;
    for w in writers {
        unknown += w.await.expect("writer");
    }
    let acks = acks.lock().await.clone();
    let during: Vec<Instant> = acks
        .iter()
        .copied()
        .filter(|t| *t >= frozen_at && *t <= thawed_at)
        .collect();
    let mut edges = vec![frozen_at];
    edges.extend(during.iter().copied());
    edges.push(thawed_at);
    let longest_gap = edges
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or(FROZEN);
    let failed = failed.lock().await.clone();
    let per_s: Vec<usize> = (0..FROZEN.as_secs())
        .map(|s| {
            let from = frozen_at + Duration::from_secs(s);
            during
                .iter()
                .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
                .count()
        })
        .collect();
    println!("acknowledged per second of the freeze: {per_s:?}");
    println!(
        "{} writes acknowledged while node 3 was frozen for {} s ({} in all); longest gap without an ack {longest_gap:?}; {} failed, {unknown} outcome unknown",
        during.len(),
        FROZEN.as_secs(),
        acks.len(),
        failed.len()
    );
    if longest_gap > ACK_GAP_MAX {
        cluster.dump_logs();
    }
    assert!(
        longest_gap <= ACK_GAP_MAX,
        "no write was acknowledged for {longest_gap:?} while one node was frozen (at most {ACK_GAP_MAX:?})"
    );
    assert_definite_failures_absent(&client, &failed, "frozen node").await;
}
