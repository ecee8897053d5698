//! `ringkv backup save|verify`: a checksummed copy of a live cluster, one consistent snapshot
//! per shard (format in `ringkv_proto::backup`).
//!
//! `save` asks each shard's leader for a snapshot that covers every write acknowledged before
//! the request, so every write acknowledged before `save` started is in the file. Shards are
//! copied one after another: each shard is a consistent cut, the set is not one instant across
//! shards. The file appears under its name only when complete, fsynced and verified (it is
//! written as `FILE.partial` and renamed); a failed save leaves no file named FILE behind.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ringkv_client::{Client, Error};
use ringkv_proto::backup::{self, Header, Writer};
use serde_json::json;

use crate::status::gather;

#[derive(clap::Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a backup of the live cluster to FILE (refuses to overwrite an existing FILE).
    Save { file: PathBuf },
    /// Check FILE's checksums and framing; print what it holds.
    Verify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: BackupCommand) -> ExitCode {
    match cmd {
        BackupCommand::Save { file } => save(client, &file).await,
        BackupCommand::Verify { file, json } => verify(&file, json),
    }
}

fn fail(code: u8, msg: String) -> ExitCode {
    eprintln!("ringkv: {msg}");
    ExitCode::from(code)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn save(client: &Client, file: &Path) -> ExitCode {
    if file.exists() {
        return fail(
            2,
            format!("{} exists; refusing to overwrite it", file.display()),
        );
    }
    let views = gather(client).await;
    let Some(any) = views.values().flatten().max_by_key(|v| v.shard_count) else {
        if let Some(code) = crate::status::refused(client).await {
            return code;
        }
        return fail(
            3,
            format!("no node answered ({})", client.endpoints().join(",")),
        );
    };
    let header = Header {
        cluster_id: any.cluster_id.clone(),
        shards: any.shard_count,
        ring_vnodes: any.ring_vnodes,
        created_unix_ms: now_ms(),
    };
    let started = Instant::now();
    let mut parts = Vec::new();
    let result = save_parts(client, file, &header, &mut parts).await;
    for p in &parts {
        let _ = fs::remove_file(p);
    }
    let partial = with_suffix(file, ".partial");
    match result {
        Ok(()) => {}
        Err((code, msg)) => {
            let _ = fs::remove_file(&partial);
            return fail(code, msg);
        }
    }
    // Re-read what was written before giving it its name.
    let summary = match File::open(&partial)
        .map_err(backup::BackupError::from)
        .and_then(|mut f| backup::verify(&mut f))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return fail(3, format!("the written backup does not verify: {e}"));
        }
    };
    if let Err(e) = fs::rename(&partial, file).and_then(|()| sync_parent(file)) {
        return fail(3, format!("naming {}: {e}", file.display()));
    }
    let records: u64 = summary.sections.iter().map(|s| s.records).sum();
    println!(
        "backup of cluster {:?} written to {}: {} shards, {records} records, {} bytes, {:.1} s",
        header.cluster_id,
        file.display(),
        header.shards,
        summary.bytes,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn sync_parent(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

async fn save_parts(
    client: &Client,
    file: &Path,
    header: &Header,
    parts: &mut Vec<PathBuf>,
) -> Result<(), (u8, String)> {
    let io = |what: &str, e: std::io::Error| (3u8, format!("{what}: {e}"));
    for shard in 0..header.shards {
        let part = with_suffix(file, &format!(".shard-{shard}.partial"));
        parts.push(part.clone());
        let mut out = BufWriter::new(File::create(&part).map_err(|e| io("creating a part", e))?);
        let bytes = client
            .backup_shard(shard, &mut out)
            .await
            .map_err(|e| match e {
                Error::Invalid(m) => (2, format!("shard {shard}: {m}")),
                e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_)) => {
                    (4, format!("shard {shard}: {e}"))
                }
                other => (3, format!("shard {shard}: {other}")),
            })?;
        out.flush().map_err(|e| io("writing a part", e))?;
        eprintln!("shard {shard}: {bytes} bytes");
    }
    let partial = with_suffix(file, ".partial");
    let out = File::create(&partial).map_err(|e| io("creating the backup", e))?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, out), header)
        .map_err(|e| io("writing the backup", e))?;
    for part in parts.iter() {
        let mut f = File::open(part).map_err(|e| io("reading a part", e))?;
        let len = f
            .seek(SeekFrom::End(0))
            .and_then(|l| f.seek(SeekFrom::Start(0)).map(|_| l))
            .map_err(|e| io("reading a part", e))?;
        w.add_shard(&mut f, len)
            .map_err(|e| io("writing the backup", e))?;
    }
    let out = w.finish().map_err(|e| io("writing the backup", e))?;
    let f = out
        .into_inner()
        .map_err(|e| io("writing the backup", e.into_error()))?;
    f.sync_all().map_err(|e| io("syncing the backup", e))?;
    Ok(())
}

fn verify(file: &Path, as_json: bool) -> ExitCode {
    let summary = match File::open(file)
        .map_err(backup::BackupError::from)
        .and_then(|mut f| backup::verify(&mut f))
    {
        Ok(s) => s,
        Err(e) => return fail(2, format!("{}: {e}", file.display())),
    };
    if as_json {
        let out = json!({
            "valid": true,
            "cluster_id": summary.header.cluster_id,
            "shards": summary.header.shards,
            "ring_vnodes": summary.header.ring_vnodes,
            "created_unix_ms": summary.header.created_unix_ms,
            "bytes": summary.bytes,
            "sections": summary.sections.iter().map(|s| json!({
                "shard": s.shard, "bytes": s.len, "records": s.records,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "{}: valid backup of cluster {:?}, {} shards ({} ring vnodes), {} bytes",
            file.display(),
            summary.header.cluster_id,
            summary.header.shards,
            summary.header.ring_vnodes,
            summary.bytes
        );
        for s in &summary.sections {
            println!("shard {}: {} records, {} bytes", s.shard, s.records, s.len);
        }
    }
    ExitCode::SUCCESS
}
