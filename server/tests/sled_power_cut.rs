//! sled under the node's flush coordinator on the fault filesystem (a real FUSE mount that
//! keeps writes in memory until they are synced): what a coordinated flush acknowledged
//! survives a power cut, sled's blob files included.
//!
//! Needs root and /dev/fuse. With `CI=true` a missing prerequisite fails the test; elsewhere
//! the test prints "skipped: <reason>" and passes.

use std::fs;
use std::io;
use std::path::Path;

use ringkv_jepsen::faultfs::{self, FaultFs};
use ringkv_server::storage::flush::FlushCoordinator;
use ringkv_server::storage::health::StorageHealth;

const KEYS: u32 = 48;

fn key(i: u32) -> Vec<u8> {
    [vec![b'k'; 16 * 1024 - 4], i.to_be_bytes().to_vec()].concat()
}

fn value(i: u32) -> Vec<u8> {
    vec![i as u8; 64 * 1024]
}

/// A database with sled's default 512 KiB segments, as every data directory made before
/// `sled_files` has: leaves of the largest values go to blob files.
fn open_old(db_dir: &Path) -> io::Result<sled::Db> {
    sled::Config::new()
        .path(db_dir)
        .open()
        .map_err(io::Error::other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinated_flush_survives_a_power_cut_blob_files_included() -> io::Result<()> {
    if let Err(reason) = faultfs::prerequisites() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the fault filesystem cannot run here: {reason}"
        );
        eprintln!("skipped: {reason}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut fs = FaultFs::mount(dir.path()).map_err(io::Error::other)?;
    let db_dir = dir.path().join("db");
    {
        let db = open_old(&db_dir)?;
        // As the node does after its first start: the directories' entries are durable.
        ringkv_server::storage::dirs::sync_tree(dir.path(), 2)?;
        let flush = FlushCoordinator::start(db.clone(), &db_dir, &StorageHealth::default())?;
        let tree = db.open_tree("t").map_err(io::Error::other)?;
        for i in 0..KEYS {
            tree.insert(key(i), value(i)).map_err(io::Error::other)?;
        }
        flush.flush().await?;
        let blobs = fs::read_dir(db_dir.join("blobs"))?.count();
        assert!(blobs > 0, "the test needs blob files, and sled wrote none");
    }
    // The flush thread lets go of its database once its last handle is gone.
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs.power_cut().map_err(io::Error::other)?;
    let db = open_old(&db_dir)?;
    let tree = db.open_tree("t").map_err(io::Error::other)?;
    let mut lost = Vec::new();
    for i in 0..KEYS {
        match tree.get(key(i)) {
            Ok(Some(v)) if v.as_ref() == value(i).as_slice() => {}
            other => lost.push((i, other.map(|v| v.map(|v| v.len())))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {KEYS} flushed values lost or wrong after the power cut: {lost:?}",
        lost.len()
    );
    drop((tree, db));
    drop(fs);
    Ok(())
}
