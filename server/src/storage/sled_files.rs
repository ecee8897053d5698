//! sled's files and what it takes to make them survive a power cut.
//!
//! sled 0.34 writes a log item larger than a quarter of its segment (a tree node: a leaf holds
//! up to 17 entries before it splits, an index node up to 257 separator keys) to a file of its
//! own under `blobs/`, and never fsyncs that file or the directory. With sled's default
//! 512 KiB segment, three 64 KiB values in one leaf already make a blob; a power cut can then
//! lose the blob while the log record pointing at it survives.
//!
//! Two defences:
//! - A new database gets [`SEGMENT_BYTES`] segments: a blob then needs an item over ~2 MiB,
//!   more than a leaf of the largest values (17 × (64 KiB + 16 KiB) ≈ 1.4 MiB) or an index
//!   node of keys up to ~8 KiB. sled stores the segment size in `conf` and refuses another one
//!   later, so an existing database keeps the size it was created with.
//! - Every group commit fsyncs the blob files created since the last one, and the `blobs`
//!   directory, before the log file ([`Blobs::sync_new`]), so a blob is durable before the
//!   record that points at it is.
//!
//! What this does not do: order sled's own background `sync_file_range` of its log after the
//! blob sync; that call does not make anything durable, but can put a pointer on the disk
//! early. With the larger segments no blob is written in practice.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The sled segment size of a new database.
pub const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// sled's configuration for the database in `db_dir`: [`SEGMENT_BYTES`] for a new one, the
/// size it was created with for an existing one (read from sled's `conf`).
pub fn config(db_dir: &Path) -> io::Result<sled::Config> {
    // `conf` is text with a 4-byte checksum after it. Unreadable, sled treats it as absent
    // and writes a new one; only a database this version made can have lost it (sled's
    // first start writes it without a sync; [`sync_conf`] follows), so it gets the new size.
    let segment_bytes = match fs::read(db_dir.join("conf")) {
        Ok(conf) => {
            persisted_segment_bytes(&String::from_utf8_lossy(&conf)).unwrap_or(SEGMENT_BYTES)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => SEGMENT_BYTES,
        Err(e) => return Err(e),
    };
    Ok(sled::Config::new().path(db_dir).segment_size(segment_bytes))
}

/// Makes sled's `conf` durable (sled writes it at the first start without a sync): a
/// database whose `conf` a power cut took back would be opened with a guessed segment size.
pub fn sync_conf(db_dir: &Path) -> io::Result<()> {
    File::open(db_dir.join("conf"))?.sync_all()
}

/// The `segment_size` line of sled's `conf` file.
fn persisted_segment_bytes(conf: &str) -> Option<usize> {
    conf.lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The blob files of one database already made durable.
pub struct Blobs {
    dir: PathBuf,
    synced: HashSet<OsString>,
}

impl Blobs {
    pub fn new(db_dir: &Path) -> Blobs {
        Blobs {
            dir: db_dir.join("blobs"),
            synced: HashSet::new(),
        }
    }

    /// Fsyncs every blob file not synced before, then the directory when there was one.
    /// Names sled removed meanwhile are forgotten. A missing directory holds nothing.
    pub fn sync_new(&mut self) -> io::Result<()> {
        let items = match fs::read_dir(&self.dir) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.synced.len());
        let mut new = false;
        for item in items {
            let name = item?.file_name();
            if !self.synced.contains(&name) {
                File::open(self.dir.join(&name))?.sync_all()?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.dir)?.sync_all()?;
        }
        self.synced = present;
        Ok(())
    }

    /// Where the blobs live (named when a sync fails).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_persisted_segment_size_is_kept_and_a_new_database_gets_the_large_one() {
        assert_eq!(
            persisted_segment_bytes("segment_size: 524288\nuse_compression: false\n"),
            Some(524_288)
        );
        assert_eq!(persisted_segment_bytes("use_compression: false\n"), None);
    }

    /// A database created with sled's default segment opens again under [`config`] (sled
    /// refuses a changed size), and a new one gets [`SEGMENT_BYTES`].
    #[test]
    fn config_opens_old_and_new_databases() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let old = dir.path().join("old");
        drop(
            sled::Config::new()
                .path(&old)
                .open()
                .map_err(io::Error::other)?,
        );
        drop(config(&old)?.open().map_err(io::Error::other)?);
        let new = dir.path().join("new");
        drop(config(&new)?.open().map_err(io::Error::other)?);
        let conf = fs::read(new.join("conf"))?;
        assert_eq!(
            persisted_segment_bytes(&String::from_utf8_lossy(&conf)),
            Some(SEGMENT_BYTES)
        );
        Ok(())
    }

    /// Values of the largest size, many to one leaf: with [`config`] no blob file is written
    /// (with sled's default segment, three such values in a leaf make one).
    #[test]
    fn the_largest_values_make_no_blob() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = config(&dir.path().join("db"))?
            .open()
            .map_err(io::Error::other)?;
        let tree = db.open_tree("t").map_err(io::Error::other)?;
        for i in 0..64u32 {
            let key = [vec![b'k'; 16 * 1024 - 4], i.to_be_bytes().to_vec()].concat();
            tree.insert(key, vec![7u8; 64 * 1024])
                .map_err(io::Error::other)?;
        }
        db.flush().map_err(io::Error::other)?;
        let blobs = fs::read_dir(dir.path().join("db").join("blobs"))?.count();
        assert_eq!(blobs, 0, "blob files written");
        Ok(())
    }

    #[test]
    fn new_blob_files_are_synced_once_and_removed_ones_forgotten() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut blobs = Blobs::new(dir.path());
        blobs.sync_new()?;
        fs::create_dir(blobs.dir())?;
        fs::write(blobs.dir().join("1"), b"a")?;
        fs::write(blobs.dir().join("2"), b"b")?;
        blobs.sync_new()?;
        assert_eq!(blobs.synced.len(), 2);
        fs::remove_file(blobs.dir().join("1"))?;
        blobs.sync_new()?;
        assert_eq!(blobs.synced.len(), 1);
        Ok(())
    }
}
