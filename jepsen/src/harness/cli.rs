//! `ringkv-jepsen test`: arguments, the run from start to report, and the exit code
//! (0 valid, 1 invalid, 2 unknown, 3 harness failure).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use ringkv_client::{Client, ReadConsistency};
use serde_json::json;

use super::HarnessError;
use super::bank;
use super::checks;
use super::db::{Db, DbOptions};
use super::nemesis::{self, Applied};
use super::net::Net;
use super::record::Recorder;
use super::report;
use super::session;
use super::workload::{self, Workers, WorkloadKind};
use crate::checker::{self, CheckOptions, Validity};

/// Arguments of `ringkv-jepsen test` (design §8).
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// Number of server processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Seconds of workload under faults (recovery and final reads come after).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub time_limit: u64,
    #[arg(long, value_enum, default_value_t = WorkloadKind::Register)]
    pub workload: WorkloadKind,
    /// Faults: none, all, or a comma list of kill, pause, partition, partition-one-way, power,
    /// disk-full (these two put each node's data directory on a fault filesystem: root and
    /// /dev/fuse), clock (a node's wall clock ±1 h; needs libfaketime).
    #[arg(long, default_value = "kill,pause,partition")]
    pub nemesis: String,
    /// Reads: linearizable (default) or serializable (each client pinned to one node).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub read_consistency: Consistency,
    /// Seed of the fault schedule and the operation mix (random when absent; always printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Report directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Concurrent client processes, each serving one shard (worker w the shard w mod shards);
    /// at least one per shard is run even when this is smaller.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub concurrency: u64,
    /// Register keys (dealt out over the shards, at least one each).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub keys: u64,
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Milliseconds each fault lasts, and each healthy period between faults.
    #[arg(long, default_value_t = 5_000)]
    pub fault_ms: u64,
    #[arg(long, default_value_t = 4_000)]
    pub heal_ms: u64,
    /// The server binary (default: `ringkv-server` next to this program, or $RINGKV_SERVER_BIN).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Test-only: servers skip the write-ahead log's record fdatasync
    /// (RINGKV_FAULT_WAL_SKIP_SYNC=1; only test builds of the server obey), so a power cut must
    /// lose acknowledged writes. Proves the power nemesis and the checkers catch it.
    #[arg(long, hide = true)]
    pub unsafe_skip_wal_sync: bool,
    /// With power faults: once the cluster is healthy at the start, make every directory entry
    /// on the nodes' fault filesystems durable (as a journal commit would by then), so power
    /// cuts test the write path rather than the server's start-up directory syncs.
    #[arg(long, hide = true)]
    pub sync_dirs_after_start: bool,
    /// TLS on every port: `ringkv-server certs` writes a CA and certificates for the nodes'
    /// addresses into the report's `certs/`, and the clients use the admin certificate.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Linearizable,
    Serializable,
}

/// Runs the test and returns the process exit code.
pub fn run(args: TestArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-jepsen test: cannot start runtime: {e}");
            return 3;
        }
    };
    // Ctrl-C or SIGTERM (what a test runner sends at its timeout) ends the run the same way:
    // the run's future is dropped, so its nodes are killed, its fault filesystems unmounted
    // and its network namespaces and packet filters removed, before the exit code 3.
    let result = rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => return Err(HarnessError::Usage(format!("cannot watch SIGTERM: {e}"))),
            };
        tokio::select! {
            r = run_test(args) => r,
            _ = tokio::signal::ctrl_c() => Err(HarnessError::Interrupted),
            _ = term.recv() => Err(HarnessError::Interrupted),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringkv-jepsen test: {e}");
            3
        }
    }
}

/// Waits for every workload worker; a worker that panicked (or was cancelled) fails the run
/// as a harness error, naming how many and the first panic's message, instead of leaving a
/// silently shorter history.
async fn join_workers(tasks: Vec<tokio::task::JoinHandle<()>>) -> Result<(), HarnessError> {
    let total = tasks.len();
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await {
            failed.push(match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into()),
                Err(e) => e.to_string(),
            });
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(HarnessError::Worker(format!(
            "{} of {total} workers failed; the first: {first}",
            failed.len()
        ))),
    }
}

fn locate_server(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(p) = explicit {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(HarnessError::Usage(format!(
                "--server-bin {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("RINGKV_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| HarnessError::Usage(e.to_string()))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for candidate in [
        dir.join("ringkv-server"),
        dir.join("..").join("ringkv-server"),
    ] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(HarnessError::Usage(
        "ringkv-server not found next to ringkv-jepsen; build it (cargo build -p ringkv-server) or pass --server-bin".into(),
    ))
}

/// Shard → leader as one reachable node reports it (empty when none answers in time).
async fn leaders(client: &Client, endpoints: &[String]) -> Vec<u64> {
    for ep in endpoints {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(800), client.status_of(ep)).await
        {
            let l: Vec<u64> = s.shards.iter().map(|sh| sh.leader.unwrap_or(0)).collect();
            if l.iter().all(|&x| x != 0) {
                return l;
            }
        }
    }
    vec![]
}

/// Waits until every node answers and names a leader for every shard.
async fn wait_healthy(
    client: &Client,
    endpoints: &[String],
    timeout: Duration,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut ok = true;
        for ep in endpoints {
            match tokio::time::timeout(Duration::from_millis(800), client.status_of(ep)).await {
                Ok(Ok(s)) if s.shards.iter().all(|sh| sh.leader.is_some()) => {}
                Ok(Ok(_)) => {
                    ok = false;
                    last = format!("{ep} misses a leader");
                }
                _ => {
                    ok = false;
                    last = format!("{ep} does not answer");
                }
            }
        }
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HarnessError::Unhealthy(format!(
        "after {timeout:?}: {last}"
    )))
}

async fn run_test(args: TestArgs) -> Result<u8, HarnessError> {
    let seed = args.seed.unwrap_or_else(rand::random::<u64>);
    let kinds = nemesis::parse_kinds(&args.nemesis).map_err(HarnessError::Usage)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ringkv-jepsen-out/seed-{seed}")));
    std::fs::create_dir_all(&out)
        .map_err(|e| HarnessError::Report(format!("{}: {e}", out.display())))?;
    let data = out.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| HarnessError::Report(e.to_string()))?;
    }
    for id in 1..=args.nodes {
        let _ = std::fs::remove_file(out.join(format!("node-{id}.log")));
    }
    let bin = locate_server(args.server_bin.as_deref())?;
    let repeat = format!(
        "ringkv-jepsen test --nodes {} --time-limit {} --workload {:?} --nemesis {} --read-consistency {:?} --seed {seed} --concurrency {} --keys {} --shards {} --fault-ms {} --heal-ms {}",
        args.nodes, args.time_limit, args.workload, args.nemesis, args.read_consistency, args.concurrency, args.keys, args.shards, args.fault_ms, args.heal_ms
    )
    .to_lowercase()
        + if args.unsafe_skip_wal_sync {
            " --unsafe-skip-wal-sync"
        } else {
            ""
        }
        + if args.sync_dirs_after_start {
            " --sync-dirs-after-start"
        } else {
            ""
        }
        + if args.tls { " --tls" } else { "" };
    eprintln!("seed {seed}; report in {}", out.display());
    eprintln!("repeat with: {repeat}");

    let n = args.nodes as usize;
    let run_id = std::process::id() % 20_000 + 1;
    let mut net = Net::create(run_id, n)?;
    let options = DbOptions {
        faultfs: kinds.iter().any(|k| k.needs_faultfs()),
        env: if args.unsafe_skip_wal_sync {
            vec![("RINGKV_FAULT_WAL_SKIP_SYNC".into(), "1".into())]
        } else {
            vec![]
        },
        tls: args.tls,
        faketime: kinds.iter().any(|k| k.needs_faketime()),
    };
    if options.faketime && !std::path::Path::new(super::db::FAKETIME_LIB).exists() {
        return Err(HarnessError::Usage(format!(
            "--nemesis {}: the clock nemesis needs libfaketime ({}; apt-get install faketime)",
            args.nemesis,
            super::db::FAKETIME_LIB
        )));
    }
    if options.faultfs {
        crate::faultfs::prerequisites()
            .map_err(|e| HarnessError::Usage(format!("--nemesis {}: {e}", args.nemesis)))?;
    }
    let mut db = Db::start(&bin, &out, &net, n, args.shards, options)?;
    let endpoints = db.endpoints();
    let tls = db.client_tls();
    let admin = workload::client(endpoints.clone(), tls.clone())
        .map_err(|e| HarnessError::Db(e.to_string()))?;
    wait_healthy(&admin, &endpoints, Duration::from_secs(30)).await?;
    if args.sync_dirs_after_start {
        db.sync_all_dirs();
    }
    let status = admin
        .status_of(&endpoints[0])
        .await
        .map_err(|e| HarnessError::Unhealthy(format!("status of {}: {e}", endpoints[0])))?;
    let server_version = status.version.clone();
    // The servers' ring, so each worker's keys are on its own shard.
    let ring = ringkv_proto::ring::Ring::new(status.shard_count, status.ring_vnodes);
    let keys_by_shard = workload::register_keys_by_shard(&ring, args.keys);
    let bank_tags = bank::tags_by_shard(&ring);
    if args.workload == WorkloadKind::Bank {
        bank::open_accounts(&admin, &bank_tags, Instant::now() + Duration::from_secs(30))
            .await
            .map_err(HarnessError::Unhealthy)?;
    }

    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start));
    let consistency = match args.read_consistency {
        Consistency::Linearizable => ReadConsistency::Linearizable,
        Consistency::Serializable => ReadConsistency::Serializable,
    };
    let workers = Arc::new(Workers {
        recorder: recorder.clone(),
        next_process: AtomicU64::new(0),
        next_value: AtomicU64::new(1),
        ring: ring.clone(),
        keys_by_shard,
        consistency,
        deadline: start + Duration::from_secs(args.time_limit),
    });
    let mut tasks = Vec::new();
    let shard_count = ring.shard_count() as usize;
    let concurrency = (args.concurrency as usize).max(shard_count);
    for w in 0..concurrency {
        let shard = w % shard_count;
        // Serializable reads: pin each worker to one node so stale replicas are observable.
        let eps = match args.read_consistency {
            Consistency::Serializable => vec![endpoints[w % n].clone()],
            Consistency::Linearizable => {
                let mut e = endpoints.clone();
                e.rotate_left(w % n);
                e
            }
        };
        let c = workload::client(eps, tls.clone()).map_err(|e| HarnessError::Db(e.to_string()))?;
        let ws = workers.clone();
        let worker_seed = seed.wrapping_add(w as u64 + 1);
        tasks.push(match args.workload {
            WorkloadKind::Register => {
                tokio::spawn(workload::register_worker(ws, c, worker_seed, shard))
            }
            WorkloadKind::Set => tokio::spawn(workload::set_worker(ws, c, shard)),
            WorkloadKind::Bank => {
                tokio::spawn(bank::worker(ws, c, worker_seed, bank_tags[shard].clone()))
            }
            WorkloadKind::Session => tokio::spawn(session::worker(ws, c, worker_seed, shard)),
        });
    }

    // The nemesis.
    let plan = nemesis::schedule(
        seed,
        &kinds,
        args.time_limit * 1000,
        args.fault_ms,
        args.heal_ms,
    );
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d);
    let mut applied: Vec<Applied> = Vec::new();
    let mut exits: Vec<serde_json::Value> = Vec::new();
    let mut note_exits = |exited: Vec<(usize, String)>, at_ns: u64| {
        for (node, status) in exited {
            eprintln!(
                "[{:>6.2}s] node {node} had exited on its own ({status}); restarted",
                at_ns as f64 / 1e9
            );
            exits.push(json!({"node": node, "status": status, "noticed_ns": at_ns}));
        }
    };
    for p in &plan {
        tokio::time::sleep_until((start + Duration::from_millis(p.start_ms)).into()).await;
        let l = leaders(&admin, &endpoints).await;
        let (detail, nodes) = nemesis::apply(p.kind, &mut rng, &mut db, &mut net, &l)?;
        // Once the fault is in effect (the signal sent, the packet filters installed), not
        // before: a write invoked while the filter commands were still running could commit
        // and would read as a failover of a few milliseconds.
        let start_ns = recorder.now_ns();
        eprintln!("[{:>6.2}s] fault: {detail}", start_ns as f64 / 1e9);
        applied.push(Applied {
            kind: p.kind,
            detail,
            nodes,
            start_ns,
            end_ns: None,
        });
        tokio::time::sleep_until((start + Duration::from_millis(p.end_ms)).into()).await;
        let exited = nemesis::heal_all(&mut db, &mut net)?;
        let end_ns = recorder.now_ns();
        note_exits(exited, end_ns);
        if let Some(a) = applied.last_mut() {
            a.end_ns = Some(end_ns);
        }
        eprintln!("[{:>6.2}s] healed", end_ns as f64 / 1e9);
    }
    join_workers(tasks).await?;
    let workload_end_ns = recorder.now_ns();

    // Final phase: heal everything, wait for recovery, final reads.
    let exited = nemesis::heal_all(&mut db, &mut net)?;
    note_exits(exited, recorder.now_ns());
    // A cluster that never recovers is a harness failure (exit 3), but what it answered
    // before is still checked: an anomaly already recorded makes the run invalid (exit 1).
    let (set_read, final_error) =
        match final_reads(&args, &admin, &endpoints, &workers, &bank_tags).await {
            Ok(set_read) => (set_read, None),
            Err(e @ HarnessError::Unhealthy(_)) => {
                eprintln!("final phase failed, checking what was recorded: {e}");
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
    let end_ns = recorder.now_ns();
    let events = recorder.events();
    drop(db);
    drop(net);

    // Checks.
    let stats = checks::stats(&events);
    let shard_of = |k: &str| Some(ring.shard_for(k.as_bytes()));
    let availability = checks::availability(&events, &applied, &shard_of, workload_end_ns);
    let mut checkers = serde_json::Map::new();
    let mut validity = Validity::Valid;
    let mut timeline = None;
    match args.workload {
        WorkloadKind::Register => {
            let opts = CheckOptions {
                time_limit: Some(Duration::from_secs(120)),
                ..Default::default()
            };
            let verdict = tokio::task::spawn_blocking({
                let events = events.clone();
                move || checker::check(&events, &opts)
            })
            .await
            .map_err(|e| HarnessError::Report(format!("checker task: {e}")))?;
            validity = verdict.valid;
            if verdict.valid != Validity::Valid {
                timeline = Some(checker::render_html(&events, &verdict));
            }
            checkers.insert(
                "linearizability".into(),
                serde_json::to_value(&verdict).unwrap_or_default(),
            );
        }
        WorkloadKind::Session => {
            let r = session::check(&events, !applied.is_empty());
            if !r.valid {
                validity = Validity::Invalid;
            }
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["reason"] = json!(format!(
                "{} sessions, {} reads checked; {} early expiries, {} late reads (worst {} ms \
                 past the TTL{}), {} wrong values",
                r.sessions,
                r.reads,
                r.early_count,
                r.late_count,
                r.late_max_ms,
                if r.late_counts {
                    ""
                } else {
                    "; faults stop cluster time, so lateness is not held against the run"
                },
                r.wrong_values
            ));
            checkers.insert("session".into(), v);
        }
        WorkloadKind::Bank => {
            let r = bank::check(&events, &bank_tags);
            if !r.valid {
                validity = if r.bad_reads.is_empty() {
                    Validity::Unknown
                } else {
                    Validity::Invalid
                };
            }
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["reason"] = json!(format!(
                "{} reads, {} transfers acknowledged, {} unknown; {} reads that do not add up, {} \
                 shards without a final read",
                r.reads,
                r.transfers_ok,
                r.transfers_unknown,
                r.bad_reads.len(),
                r.unread_shards.len()
            ));
            checkers.insert("bank".into(), v);
        }
        WorkloadKind::Set if set_read.is_none() => {
            validity = Validity::Unknown;
            checkers.insert(
                "set".into(),
                json!({"valid": "unknown", "reason": "no final read (the cluster did not recover)"}),
            );
        }
        WorkloadKind::Set => {
            let r = checks::check_set(&events, set_read.as_deref().unwrap_or_default());
            if !r.valid {
                validity = Validity::Invalid;
            }
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["reason"] = json!(format!(
                "{} acknowledged, {} unknown ({} turned up), {} read; {} lost, {} unexpected",
                r.acknowledged,
                r.unknown,
                r.recovered,
                r.read,
                r.lost.len(),
                r.unexpected.len()
            ));
            checkers.insert("set".into(), v);
        }
    }
    let faults_by_kind = kinds
        .iter()
        .map(|k| {
            (
                k.name().to_string(),
                applied.iter().filter(|a| a.kind == *k).count(),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    let valid_json = match validity {
        Validity::Valid => json!(true),
        Validity::Invalid => json!(false),
        Validity::Unknown => json!("unknown"),
    };
    let results = json!({
        "valid": valid_json,
        "seed": seed,
        "repeat": repeat,
        "options": {
            "nodes": args.nodes, "time_limit_s": args.time_limit, "workload": args.workload,
            "nemesis": args.nemesis, "read_consistency": args.read_consistency,
            "concurrency": concurrency, "keys": workers.all_keys().count(), "shards": args.shards,
            "fault_ms": args.fault_ms, "heal_ms": args.heal_ms, "tls": args.tls,
        },
        "versions": {"ringkv_jepsen": env!("CARGO_PKG_VERSION"), "ringkv_server": server_version, "server_bin": bin.display().to_string()},
        "checkers": checkers,
        "stats": stats,
        "availability": availability,
        "faults": applied,
        "faults_by_kind": faults_by_kind,
        "node_exits": exits,
        "final_phase_error": final_error,
        "unsafe_skip_wal_sync": args.unsafe_skip_wal_sync,
        "sync_dirs_after_start": args.sync_dirs_after_start,
        "elapsed_s": end_ns as f64 / 1e9,
    });

    // Report.
    let mut history = String::new();
    for e in &events {
        history
            .push_str(&serde_json::to_string(e).map_err(|e| HarnessError::Report(e.to_string()))?);
        history.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), history)
        .map_err(|e| HarnessError::Report(e.to_string()))?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    )
    .map_err(|e| HarnessError::Report(e.to_string()))?;
    report::latency_plot(&out.join("latency.svg"), &events, &applied, end_ns)?;
    report::throughput_plot(&out.join("throughput.svg"), &events, &applied, end_ns)?;
    if let Some(t) = &timeline {
        std::fs::write(out.join("timeline.html"), t)
            .map_err(|e| HarnessError::Report(e.to_string()))?;
    }
    report::index(&out, &results, &applied, n, timeline.is_some(), &repeat)?;
    let _ = std::fs::remove_dir_all(&data);

    eprintln!(
        "{}: {} ok, {} fail, {} info; faults {:?}; longest unavailability {:.0} ms; failover ms {:?}; report {}",
        match (validity, &final_error) {
            (Validity::Invalid, _) => "INVALID",
            (_, Some(_)) => "INCOMPLETE (the cluster did not recover)",
            (Validity::Valid, None) => "VALID",
            (Validity::Unknown, None) => "UNKNOWN",
        },
        stats.ok,
        stats.fail,
        stats.info,
        faults_by_kind,
        availability.longest_gap_ms,
        availability.failover_ms,
        out.join("index.html").display()
    );
    println!(
        "{}",
        serde_json::to_string(
            &json!({"valid": results["valid"], "seed": seed, "out": out.display().to_string()})
        )
        .unwrap_or_default()
    );
    Ok(match (validity, &final_error) {
        (Validity::Invalid, _) => 1,
        (_, Some(_)) => 3,
        (Validity::Valid, None) => 0,
        (Validity::Unknown, None) => 2,
    })
}

/// Waits for the healed cluster, then reads every register key (recorded in the history) or
/// the whole set (returned).
async fn final_reads(
    args: &TestArgs,
    admin: &Client,
    endpoints: &[String],
    workers: &Workers,
    bank_tags: &[String],
) -> Result<Option<Vec<u64>>, HarnessError> {
    wait_healthy(admin, endpoints, Duration::from_secs(60)).await?;
    let final_client = workload::client(endpoints.to_vec(), admin.options().tls.clone())
        .map_err(|e| HarnessError::Db(e.to_string()))?;
    let final_deadline = Instant::now() + Duration::from_secs(30);
    match args.workload {
        WorkloadKind::Register => {
            workload::register_final_reads(workers, &final_client, final_deadline)
                .await
                .map_err(HarnessError::Unhealthy)?;
            Ok(None)
        }
        // Sessions have expired by now: nothing to read back.
        WorkloadKind::Session => Ok(None),
        WorkloadKind::Bank => {
            bank::final_reads(workers, &final_client, bank_tags, final_deadline)
                .await
                .map_err(HarnessError::Unhealthy)?;
            Ok(None)
        }
        WorkloadKind::Set => workload::set_final_read(&final_client, final_deadline)
            .await
            .map(Some)
            .map_err(HarnessError::Unhealthy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_worker_fails_the_run_instead_of_shortening_the_history() {
        let ok = vec![tokio::spawn(async {}), tokio::spawn(async {})];
        assert!(join_workers(ok).await.is_ok());
        let tasks = vec![
            tokio::spawn(async {}),
            tokio::spawn(async { panic!("worker 1 broke") }),
            tokio::spawn(async { panic!("{}", String::from("worker 2 broke")) }),
        ];
        match join_workers(tasks).await {
            Err(HarnessError::Worker(m)) => {
                assert!(m.starts_with("2 of 3 workers failed"), "{m}");
                assert!(m.contains("worker 1 broke"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
