//! `ringkv-server restore`: seed a new node's data directory from a backup file.
//!
//! Run once per node of the new cluster, each with the same `--peers` and its own `--id`;
//! then start the nodes as usual with those `--peers`. Every shard of the new cluster starts
//! from the backup's snapshot of it, with the new cluster's nodes as its voters.
//!
//! Invariants: the whole backup is verified (outer checksum, every shard's checksum and
//! framing, every snapshot's meta) before anything is written; the directory is built under a
//! temporary name and renamed into place only when complete and fsynced, so a failed or
//! interrupted restore never leaves a half-restored directory under the real name; an
//! existing, non-empty data directory is never touched. Each restored replica records a vote
//! for itself in the term of the snapshot's last entry, so the new cluster's first election
//! runs in a later term and its log ids keep growing past the restored ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context;
use openraft::Membership;
use openraft::storage::RaftLogStorage;
use ringkv_proto::backup;

use crate::config::parse_peers;
use crate::identity::{self, FORMAT_VERSION, Identity};
use crate::shard::log_store::LogStore;
use crate::shard::snapshot::{self, SnapshotFile};
use crate::shard::state_machine::StateMachine;
use crate::storage::flush::FlushCoordinator;
use crate::storage::wal::Wal;
use crate::typ::{Node, SnapshotMeta, StoredMembership, Vote};

/// Flags of `ringkv-server restore`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file (`ringkv backup save FILE`).
    #[arg(long)]
    pub from: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long)]
    pub id: u64,
    /// Every member of the new cluster, as for a new cluster's `--peers` (with `@PEERHOST:PORT`
    /// for a member not on the default peer port).
    #[arg(long)]
    pub peers: String,
    /// The data directory to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new cluster's id; default: the backed-up cluster's id.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The new cluster's UUID (give the same one to every node's restore). Default: derived
    /// from the backup (its cluster, creation time and contents), the new cluster id and
    /// `--peers`, so every node's restore agrees without being told, and a restored cluster
    /// never passes for the one it was copied from. Restoring one backup twice with the same
    /// `--peers` and `--cluster-id` gives the same UUID: give one of them another here.
    #[arg(long)]
    pub cluster_uuid: Option<String>,
}

/// Why a restore was refused: a bad backup file or bad arguments (exit 2), or a failure while
/// writing (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("refusing to restore: {0}")]
    Refused(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

fn refused(msg: impl Into<String>) -> RestoreError {
    RestoreError::Refused(msg.into())
}

fn staging_dir(data_dir: &Path) -> PathBuf {
    let mut s = data_dir.as_os_str().to_owned();
    s.push(".restoring");
    PathBuf::from(s)
}

pub async fn run(args: RestoreArgs) -> Result<(), RestoreError> {
    let peers = parse_peers(&args.peers).map_err(|e| refused(e.to_string()))?;
    if !peers.contains_key(&args.id) {
        return Err(refused(format!("--peers does not name node {}", args.id)));
    }
    if args.data_dir.exists()
        && fs::read_dir(&args.data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(refused(format!(
            "{} exists and is not empty",
            args.data_dir.display()
        )));
    }
    let mut file =
        File::open(&args.from).map_err(|e| refused(format!("{}: {e}", args.from.display())))?;
    let summary =
        backup::verify(&mut file).map_err(|e| refused(format!("{}: {e}", args.from.display())))?;
    let header = &summary.header;
    let cluster_id = args.cluster_id.clone().unwrap_or(header.cluster_id.clone());
    let cluster_uuid = match &args.cluster_uuid {
        Some(u) => crate::cluster_uuid::parse(u).map_err(|e| refused(e.to_string()))?,
        None => derived_uuid(&summary, &cluster_id, &peers),
    };
    let staging = staging_dir(&args.data_dir);
    if staging.exists() {
        // A leftover of an interrupted restore: never used, safe to discard.
        fs::remove_dir_all(&staging).context("removing a leftover staging directory")?;
    }
    fs::create_dir_all(&staging).context("creating the staging directory")?;
    let result = seed(
        &args,
        &peers,
        (&cluster_id, &cluster_uuid),
        &summary,
        &mut file,
        &staging,
    )
    .await;
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if args.data_dir.exists() {
        fs::remove_dir(&args.data_dir).context("replacing the empty data directory")?;
    }
    fs::rename(&staging, &args.data_dir).context("moving the restored directory into place")?;
    if let Some(parent) = args.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        snapshot::sync_dir(parent).context("syncing the parent directory")?;
    }
    let records: u64 = summary.sections.iter().map(|s| s.records).sum();
    println!(
        "restored node {} of cluster {cluster_id:?} into {}: {} shards, {records} records",
        args.id,
        args.data_dir.display(),
        header.shards
    );
    Ok(())
}

/// The default UUID of a restored cluster (see [`RestoreArgs::cluster_uuid`]): the same for
/// every node's restore of one backup into one new cluster.
fn derived_uuid(
    summary: &backup::Summary,
    cluster_id: &str,
    peers: &BTreeMap<u64, Node>,
) -> String {
    let mut text = format!(
        "ringkv restore\n{:?}\n{}\n{}\n{}\n{:?}\n",
        summary.header.cluster_id,
        summary.header.created_unix_ms,
        summary.bytes,
        summary.header.shards,
        cluster_id
    );
    for s in &summary.sections {
        text.push_str(&format!(
            "{} {} {} {}\n",
            s.shard, s.offset, s.len, s.records
        ));
    }
    for (id, node) in peers {
        text.push_str(&format!("{id}={}@{}\n", node.addr, node.peer_addr()));
    }
    let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
    uuid::Uuid::new_v8(hash.to_be_bytes())
        .hyphenated()
        .to_string()
}

async fn seed(
    args: &RestoreArgs,
    peers: &BTreeMap<u64, Node>,
    (cluster_id, cluster_uuid): (&str, &str),
    summary: &backup::Summary,
    file: &mut File,
    staging: &Path,
) -> Result<(), RestoreError> {
    identity::write(
        staging,
        &Identity {
            format_version: FORMAT_VERSION,
            cluster_id: cluster_id.to_string(),
            node_id: args.id,
            shards: summary.header.shards,
            ring_vnodes: summary.header.ring_vnodes,
            incarnation: identity::new_incarnation(),
            // The restored membership records no incarnations; the leader records them once
            // the cluster runs.
            accepts_unrecorded: true,
            cluster_uuid: cluster_uuid.to_string(),
        },
    )?;
    let db_dir = staging.join("db");
    let db = crate::storage::sled_files::config(&db_dir)
        .with_context(|| format!("reading sled's configuration at {}", db_dir.display()))?
        .open()
        .with_context(|| format!("opening sled at {}", db_dir.display()))?;
    crate::storage::sled_files::sync_conf(&db_dir)
        .with_context(|| format!("syncing sled's configuration at {}", db_dir.display()))?;
    let health = crate::storage::health::StorageHealth::default();
    let flush =
        FlushCoordinator::start(db.clone(), &db_dir, &health).context("starting the flusher")?;
    let wal = Wal::open(&staging.join("wal"), &health).context("opening the write-ahead log")?;
    let voters: BTreeSet<u64> = peers.keys().copied().collect();
    let nodes: BTreeMap<u64, Node> = peers.clone();
    let membership =
        Membership::new(vec![voters], nodes).map_err(|e| refused(format!("bad --peers: {e}")))?;
    for section in &summary.sections {
        let shard = section.shard;
        let snap_dir = staging.join("snap").join(shard.to_string());
        fs::create_dir_all(&snap_dir).context("creating the snapshot directory")?;
        // The backup's copy, extracted and checked again with the meta decoded.
        let incoming = snap_dir.join("backup.part");
        {
            let mut out = File::create(&incoming).context("extracting a shard")?;
            file.seek(SeekFrom::Start(section.offset))
                .context("reading the backup")?;
            let copied = io::copy(&mut (&mut *file).take(section.len), &mut out)
                .context("extracting a shard")?;
            if copied != section.len {
                return Err(refused(format!("shard {shard}: section truncated")));
            }
        }
        let mut extracted = SnapshotFile::open(incoming.clone()).context("extracting a shard")?;
        let old_meta = snapshot::verify(&mut extracted.file)
            .map_err(|e| refused(format!("shard {shard}: {e}")))?;
        let Some(last) = old_meta.last_log_id else {
            return Err(refused(format!(
                "shard {shard}: snapshot has no log position"
            )));
        };
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(
                *old_meta.last_membership.log_id(),
                membership.clone(),
            ),
        };
        let path = {
            let mut reader = snapshot::Reader::open(&mut extracted.file)
                .map_err(|e| refused(format!("shard {shard}: {e}")))?;
            let records = std::iter::from_fn(|| reader.next_record().transpose());
            snapshot::write(
                &snap_dir,
                &snapshot::file_name(last.index()),
                &meta,
                records,
            )
            .context("writing the restored snapshot")?
        };
        drop(extracted);
        fs::remove_file(&incoming).context("removing the extracted copy")?;
        let sm = StateMachine::open(&db, shard, snap_dir.clone(), flush.clone())
            .context("opening the state machine")?;
        sm.install(
            &meta,
            SnapshotFile::open(path).context("opening the snapshot")?,
        )
        .with_context(|| format!("installing shard {shard}"))?;
        let mut log = LogStore::open(&wal, shard).context("opening the log")?;
        let vote = Vote::new(last.leader_id.term, args.id);
        log.save_vote(&vote).await.context("saving the vote")?;
    }
    flush.flush().await.context("final flush")?;
    drop(db);
    snapshot::sync_dir(staging).context("syncing the restored directory")?;
    Ok(())
}
