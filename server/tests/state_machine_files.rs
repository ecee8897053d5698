//! A shard's state machine files and clock (issue 15, items 7 and 8): a replica built from a
//! snapshot has the same cluster clock as the replica the snapshot was taken from, so both
//! expire exactly the same deduplication records afterwards; snapshot files received but never
//! installed do not accumulate.

use bytes::Bytes;
use futures::stream;
use openraft::EntryPayload;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;
use ringkv_server::shard::command::{Command, Op};
use ringkv_server::shard::state_machine::StateMachine;
use ringkv_server::storage::flush::FlushCoordinator;
use ringkv_server::storage::health::StorageHealth;
use ringkv_server::typ::{Entry, TypeConfig};

fn open(dir: &std::path::Path) -> std::io::Result<StateMachine> {
    let db_dir = dir.join("db");
    let db = sled::Config::new()
        .path(&db_dir)
        .open()
        .map_err(std::io::Error::other)?;
    let flush = FlushCoordinator::start(db.clone(), &db_dir, &StorageHealth::default())?;
    StateMachine::open(&db, 0, dir.join("snap"), flush)
}

fn put(index: u64, stamped_ms: u64) -> Entry {
    Entry {
        log_id: log_id::<TypeConfig>(1, 1, index),
        payload: EntryPayload::Normal(Command {
            client_id: 7,
            sequence: index,
            acked_below: index,
            stamped_ms,
            op: Op::Put {
                key: Bytes::from(format!("k{index}")),
                value: Bytes::from_static(b"v"),
            },
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_carries_the_cluster_clock() -> std::io::Result<()> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = open(a_dir.path())?;
    let entries: Vec<_> = [(1, 1_000), (2, 90_000), (3, 42_000)]
        .into_iter()
        .map(|(i, t)| Ok((put(i, t), None)))
        .collect();
    a.apply(stream::iter(entries)).await?;
    assert_eq!(
        a.clock_ms()?,
        90_000,
        "the clock is the largest stamp applied"
    );

    let snapshot = a.get_snapshot_builder().await.build_snapshot().await?;
    let mut b = open(b_dir.path())?;
    assert_eq!(b.clock_ms()?, 0);
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(
        b.clock_ms()?,
        90_000,
        "installed from the snapshot, the clock came along"
    );
    Ok(())
}

/// Snapshot files received but never installed (a crash mid-transfer, or one declined) are
/// removed when the state machine opens (issue 15, item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_received_snapshots_are_removed_at_open() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let incoming = dir
        .path()
        .join("snap")
        .join(ringkv_server::shard::state_machine::INCOMING_DIR);
    std::fs::create_dir_all(&incoming)?;
    std::fs::write(incoming.join("from-2-17.tmp"), b"half a snapshot")?;
    let sm = open(dir.path())?;
    assert!(!incoming.exists(), "the incoming directory is gone");
    assert_eq!(sm.clock_ms()?, 0);
    Ok(())
}
