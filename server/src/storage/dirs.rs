//! Directory entries made durable: the data directory's subdirectories (`db/`, `wal/`,
//! `snap/<shard>/`) are created once, at the first start, and a directory entry survives a
//! power cut only once the directory holding it was fsynced. Without this a node could lose
//! `wal/` or `db/` in a power cut right after its first start, yet keep `ringkv.json`, and
//! restart as a member with no votes and no log (found by the harness's power nemesis).
//!
//! Files inside are each made durable by their writers (segments, snapshots, the identity
//! file); this only covers the tree of directories.

use std::fs::File;
use std::io;
use std::path::Path;

/// Fsyncs `root`, its parent (which holds `root`'s own entry), and every directory below
/// `root` down to `depth` levels.
pub fn sync_tree(root: &Path, depth: usize) -> io::Result<()> {
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    sync_below(root, depth)
}

fn sync_below(dir: &Path, depth: usize) -> io::Result<()> {
    if depth > 0 {
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            if item.file_type()?.is_dir() {
                sync_below(&item.path(), depth - 1)?;
            }
        }
    }
    File::open(dir)?.sync_all()
}
