//! The data directory's identity file (`ringkv.json`): which cluster, node and shard layout the
//! data belongs to, and the on-disk format version.
//!
//! Written once, durably, when a node bootstraps an empty directory; checked on every start, so
//! a node never joins a cluster its data does not belong to and never reads a format it does
//! not understand.
//!
//! The directory's *incarnation* is a random id chosen when the directory is created. The
//! cluster records each member's incarnation in its membership; a node whose directory is
//! newer than the recorded one (a wiped or replaced disk under an old node id) lost the votes
//! and entries the others count on, and does not vote until it is re-admitted. A directory
//! written before incarnations existed gets one at its first start and is marked
//! `accepts_unrecorded`: it still holds its votes and entries, so it may vote for candidates
//! whose membership records no incarnation for it (0). A new directory never does.

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
    /// Random, non-zero, chosen when the directory was created (0 in files written before).
    #[serde(default)]
    pub incarnation: u64,
    /// Set on directories that predate incarnations (and on restored ones, whose membership
    /// was written without them): they may vote where their incarnation is not recorded.
    #[serde(default)]
    pub accepts_unrecorded: bool,
    /// The cluster's UUID (see [`crate::cluster_uuid`]); empty until this node knows it, and
    /// then not written, so a file without one reads as before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_uuid: String,
}

/// A data directory as a node opens it.
#[derive(Debug)]
pub struct Opened {
    /// The directory was empty: a new node that must bootstrap or join, or one that lost its
    /// disk.
    pub fresh: bool,
    pub incarnation: u64,
    pub accepts_unrecorded: bool,
    /// The recorded cluster UUID, empty when not known yet.
    pub cluster_uuid: String,
}

/// A random non-zero incarnation.
pub fn new_incarnation() -> u64 {
    loop {
        let i: u64 = rand::random();
        if i != 0 {
            return i;
        }
    }
}

impl Identity {
    /// Whether `self` and `other` describe the same cluster, node and layout.
    fn same_place(&self, other: &Identity) -> bool {
        (
            &self.cluster_id,
            self.node_id,
            self.shards,
            self.ring_vnodes,
        ) == (
            &other.cluster_id,
            other.node_id,
            other.shards,
            other.ring_vnodes,
        )
    }
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

/// Checks the directory's identity against `cfg`, creating it (with a new incarnation) when
/// the directory is empty, and giving one to a directory that predates incarnations.
pub fn check_or_create(data_dir: &Path, cfg: &Config) -> anyhow::Result<Opened> {
    fs::create_dir_all(data_dir)?;
    let path = data_dir.join(FILE_NAME);
    let want = Identity {
        format_version: FORMAT_VERSION,
        cluster_id: cfg.cluster_id.clone(),
        node_id: cfg.id,
        shards: cfg.shards,
        ring_vnodes: cfg.ring_vnodes,
        incarnation: new_incarnation(),
        accepts_unrecorded: false,
        cluster_uuid: String::new(),
    };
    if path.exists() {
        let mut have: Identity = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|e| anyhow::anyhow!("{} is unreadable: {e}", path.display()))?;
        if have.format_version != FORMAT_VERSION {
            anyhow::bail!(
                "{} has on-disk format {}, this binary reads format {FORMAT_VERSION}",
                data_dir.display(),
                have.format_version
            );
        }
        if !have.same_place(&want) {
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
        if have.incarnation == 0 {
            have.incarnation = want.incarnation;
            have.accepts_unrecorded = true;
            write(data_dir, &have)?;
            tracing::info!(incarnation = %format!("{:016x}", have.incarnation),
                "data directory predates incarnations: recorded one");
        }
        return Ok(Opened {
            fresh: false,
            incarnation: have.incarnation,
            accepts_unrecorded: have.accepts_unrecorded,
            cluster_uuid: have.cluster_uuid,
        });
    }
    if fs::read_dir(data_dir)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty but has no {FILE_NAME}; refusing to touch it",
            data_dir.display()
        );
    }
    write(data_dir, &want)?;
    Ok(Opened {
        fresh: true,
        incarnation: want.incarnation,
        accepts_unrecorded: false,
        cluster_uuid: String::new(),
    })
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
