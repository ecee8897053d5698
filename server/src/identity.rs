//! The data directory's identity file (`ringkv.json`): which cluster, node and shard layout the
//! data belongs to, and the on-disk format version.
//!
//! Written once, durably, when a node bootstraps an empty directory; checked on every start, so
//! a node never joins a cluster its data does not belong to and never reads a format it does
//! not understand.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Bump on any incompatible change of the on-disk layout.
pub const FORMAT_VERSION: u32 = 1;
const FILE_NAME: &str = "ringkv.json";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub format_version: u32,
    pub cluster_id: String,
    pub node_id: u64,
    pub shards: u32,
    pub ring_vnodes: u32,
}

/// The identity of an existing data directory, `None` when it has none yet.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
    let path = data_dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is unreadable: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Returns `true` when the directory was empty (a new node that must bootstrap or join).
pub fn check_or_create(data_dir: &Path, cfg: &Config) -> anyhow::Result<bool> {
    fs::create_dir_all(data_dir)?;
    let path = data_dir.join(FILE_NAME);
    let want = Identity {
        format_version: FORMAT_VERSION,
        cluster_id: cfg.cluster_id.clone(),
        node_id: cfg.id,
        shards: cfg.shards,
        ring_vnodes: cfg.ring_vnodes,
    };
    if path.exists() {
        let have: Identity = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|e| anyhow::anyhow!("{} is unreadable: {e}", path.display()))?;
        if have.format_version != FORMAT_VERSION {
            anyhow::bail!(
                "{} has on-disk format {}, this binary reads format {FORMAT_VERSION}",
                data_dir.display(),
                have.format_version
            );
        }
        if have != want {
            anyhow::bail!(
                "{} belongs to cluster {:?} node {} with {} shards ({} vnodes); refusing to start as cluster {:?} node {} with {} shards ({} vnodes)",
                data_dir.display(),
                have.cluster_id,
                have.node_id,
                have.shards,
                have.ring_vnodes,
                want.cluster_id,
                want.node_id,
                want.shards,
                want.ring_vnodes
            );
        }
        return Ok(false);
    }
    if fs::read_dir(data_dir)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty but has no {FILE_NAME}; refusing to touch it",
            data_dir.display()
        );
    }
    write(data_dir, &want)?;
    Ok(true)
}

/// Writes the identity file durably (temp file, fsync, rename, directory fsync).
pub fn write(data_dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(identity)?)?;
    f.sync_all()?;
    fs::rename(&tmp, data_dir.join(FILE_NAME))?;
    fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}
