//! A full disk against real `ringkv-server` processes whose data directories are small tmpfs
//! mounts (issue 15, item 3).
//!
//! A node short of disk makes the leaders of the shards it votes in refuse writes before
//! anything is proposed (`RESOURCE_EXHAUSTED`, kind `disk_full`, naming the node; the CLI exits
//! 3), reads are still served, and writes are accepted again by themselves once space is freed.
//! With every node full nothing acknowledged is lost, and nothing fails over to a storage
//! failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, ClientOptions, Error, ReadConsistency};
use ringkv_tests::Cluster;

const SHARDS: u32 = 2;
/// Each node's filesystem.
const DISK_MB: u64 = 400;
/// `--disk-free-min-mb` of every node.
const FREE_MIN_MB: u64 = 100;

/// A tmpfs mounted on a node's data directory; lazily unmounted on drop (the node may still
/// hold files open when a failed test unwinds).
struct Disk {
    dir: PathBuf,
}

impl Disk {
    fn mount(dir: &Path) -> Option<Disk> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MB}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Disk {
            dir: dir.to_path_buf(),
        })
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("ballast")
    }

    /// Fills the disk until `free_mb` MiB are left.
    fn fill_to(&self, free_mb: u64) {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        let free = s.blocks_available() * s.fragment_size();
        let ballast = free.saturating_sub(free_mb * 1024 * 1024);
        let ok = Command::new("fallocate")
            .args(["-l", &ballast.to_string()])
            .arg(self.ballast())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "fallocate a {ballast}-byte ballast in {}",
            self.dir.display()
        );
    }

    fn free(&self) {
        std::fs::remove_file(self.ballast()).expect("remove the ballast");
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn client(cluster: &Cluster, timeout: Duration) -> Client {
    let mut opts = ClientOptions::new(cluster.endpoints());
    opts.request_timeout = timeout;
    opts.attempt_timeout = Duration::from_millis(1500).min(timeout);
    Client::new(opts).expect("client")
}

fn key(i: usize) -> String {
    format!("order-{i:04}")
}

/// Puts keys `from..to` until one is refused; returns the acknowledged ones and the refusal.
async fn put_until_refused(c: &Client, from: usize, to: usize) -> (Vec<usize>, Option<Error>) {
    let mut acked = Vec::new();
    for i in from..to {
        match c.put(key(i), Bytes::from(format!("v{i}"))).await {
            Ok(_) => acked.push(i),
            Err(e) => return (acked, Some(e)),
        }
    }
    (acked, None)
}

/// Keys `probe..probe + PROBES`: enough to land on every shard.
const PROBES: usize = 16;

/// Waits (bounded) until a put of every probe key is refused with `disk_full` (so writes to
/// every shard are, whichever node leads it); returns one refusal. Probes that were still
/// accepted meanwhile are added to `acked`.
async fn wait_refused(c: &Client, probe: usize, acked: &mut Vec<usize>) -> Error {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut waiting: Vec<usize> = (probe..probe + PROBES).collect();
    let mut refusal = None;
    let mut last = None;
    while Instant::now() < deadline && !waiting.is_empty() {
        let mut still = Vec::new();
        for i in waiting {
            match c.put(key(i), Bytes::from(format!("v{i}"))).await {
                Err(e @ Error::DiskFull { .. }) => refusal = Some(e),
                Ok(_) => {
                    acked.push(i);
                    still.push(i);
                }
                other => {
                    last = Some(format!("{other:?}"));
                    still.push(i);
                }
            }
        }
        acked.sort_unstable();
        acked.dedup();
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        waiting.is_empty(),
        "writes of {waiting:?} were never refused for disk space; last other answer {last:?}"
    );
    refusal.expect("a refusal")
}

/// Waits (bounded) until a put of every probe key succeeds again (writes to every shard are
/// accepted); adds them to `acked`.
async fn wait_accepted(c: &Client, probe: usize, acked: &mut Vec<usize>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting: Vec<usize> = (probe..probe + PROBES).collect();
    let mut last = None;
    while Instant::now() < deadline && !waiting.is_empty() {
        let mut still = Vec::new();
        for i in waiting {
            match c.put(key(i), Bytes::from(format!("v{i}"))).await {
                Ok(_) => acked.push(i),
                Err(e) => {
                    last = Some(e);
                    still.push(i);
                }
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        waiting.is_empty(),
        "writes of {waiting:?} were not accepted again after space was freed; last error {last:?}"
    );
    acked.sort_unstable();
    acked.dedup();
}

async fn assert_all_present(c: &Client, acked: &[usize]) {
    for &i in acked {
        let got = c
            .get(key(i), ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("read of acknowledged {} failed: {e}", key(i)));
        assert_eq!(
            got.map(|kv| kv.value),
            Some(Bytes::from(format!("v{i}"))),
            "acknowledged {} is intact",
            key(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_serves_reads_and_recovers_by_itself() {
    let free_min = FREE_MIN_MB.to_string();
    let mut cluster = Cluster::prepare(3, SHARDS, &["--disk-free-min-mb", &free_min]);
    let mut disks = Vec::new();
    for id in 1..=3 {
        match Disk::mount(&cluster.nodes[&id].data_dir) {
            Some(d) => disks.push(d),
            None => {
                ringkv_tests::skip("cannot mount a tmpfs (needs root)");
                return;
            }
        }
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let c = client(&cluster, Duration::from_secs(8));
    let (mut acked, refused) = put_until_refused(&c, 0, 200).await;
    assert!(refused.is_none(), "writes with space: {refused:?}");

    // Node 2 (a voter of every shard) falls below --disk-free-min-mb. Some shard is led by
    // another node, so that leader must learn of node 2's shortage to refuse.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaders: Vec<u64> = cluster
            .statuses()
            .await
            .into_iter()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .flat_map(|(id, s)| {
                s.shards
                    .iter()
                    .filter(|sh| sh.role == "leader")
                    .map(move |_| id)
                    .collect::<Vec<_>>()
            })
            .collect();
        if leaders.iter().any(|l| *l != 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 leads every shard: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    disks[1].fill_to(FREE_MIN_MB / 2);
    let e = wait_refused(&c, 10_000, &mut acked).await;
    match &e {
        Error::DiskFull { node, message } => {
            assert_eq!(*node, Some(2), "the refusal names the full node: {message}");
            assert!(message.contains("--disk-free-min-mb"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_definite(), "nothing was written");
    // What the CLI shows: the node, and exit code 3.
    let (code, _, stderr) = ringkv_tests::cli(&cluster.endpoints(), &["put", "cli-key", "x"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("node 2 is out of disk space"),
        "the CLI names the full node: {stderr}"
    );
    // Reads are served meanwhile.
    assert_all_present(&c, &acked).await;
    let refused = c.get("cli-key", ReadConsistency::Linearizable).await;
    assert!(
        matches!(refused, Ok(None)),
        "the refused write is absent: {refused:?}"
    );

    // Space returns: writes are accepted again without a restart.
    disks[1].free();
    wait_accepted(&c, 10_050, &mut acked).await;

    // Every node full: nothing acknowledged is lost, and no node stops.
    for d in &disks {
        d.fill_to(FREE_MIN_MB / 2);
    }
    let e = wait_refused(&c, 10_100, &mut acked).await;
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    assert_all_present(&c, &acked).await;
    for d in &disks {
        d.free();
    }
    wait_accepted(&c, 10_150, &mut acked).await;
    let (more, refused) = put_until_refused(&c, 200, 260).await;
    assert!(refused.is_none(), "{refused:?}");
    acked.extend(more);
    for id in 1..=3 {
        assert!(
            cluster.is_running(id),
            "node {id} is still running: a full disk is not a storage failure"
        );
    }
    // And everything acknowledged survives a restart of every node.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders after restart");
    assert_all_present(&client(&cluster, Duration::from_secs(15)), &acked).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
}
