//! `ringkv bench`: a closed-loop load generator against a running cluster.
//!
//! `--clients` tasks share one [`Client`] (one connection pool, leader-aware routing, the same
//! code path as applications) and each issues one request at a time until `--requests` in all
//! have been sent or `--duration-secs` has passed, whichever comes first; both bounds always
//! apply, so a run stops by itself. Latency is recorded per request, successes and failures
//! apart, in HDR histograms (microsecond resolution, 3 significant digits).
//!
//! Keys are `bench:<n>` for `n` in `0..--keys`, drawn in a fixed order per client (client `c`
//! starts at `c * keys / clients`), so runs are repeatable and spread over every shard.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ringkv_client::{Client, Error, ReadConsistency};
use serde::Serialize;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchOp {
    /// Write a value.
    Put,
    /// Read a key (the keys are written once before the timed run).
    Get,
    /// Half reads, half writes.
    Mixed,
}

/// Arguments of `ringkv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent client tasks, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Requests in all (the run also ends after --duration-secs).
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Stop after this many seconds even if --requests were not all sent.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    pub op: BenchOp,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub value_bytes: u64,
    /// Reads from any replica (possibly stale) instead of linearizable reads.
    #[arg(long)]
    pub serializable: bool,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Latency summary in microseconds.
#[derive(Debug, Serialize)]
struct Latency {
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The run's outcome, as printed.
#[derive(Debug, Serialize)]
struct Report {
    op: BenchOp,
    clients: u32,
    value_bytes: u64,
    keys: u64,
    consistency: &'static str,
    elapsed_secs: f64,
    ok: u64,
    failed_definite: u64,
    outcome_unknown: u64,
    throughput_ops_per_sec: f64,
    latency_ok: Latency,
    first_error: Option<String>,
}

/// Per-task tallies, merged at the end.
struct Tally {
    ok: Histogram<u64>,
    definite: u64,
    unknown: u64,
    first_error: Option<String>,
}

fn histogram() -> Result<Histogram<u64>, String> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())
}

fn key_of(n: u64) -> Bytes {
    Bytes::from(format!("bench:{n}"))
}

/// Runs the benchmark and prints the report; exit 3 if nothing succeeded.
pub async fn run(client: &Client, args: BenchArgs) -> ExitCode {
    match run_inner(client, &args).await {
        Ok(report) => {
            print(&report, args.json);
            if report.ok == 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ringkv bench: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run_inner(client: &Client, args: &BenchArgs) -> Result<Report, String> {
    let value = Bytes::from(vec![b'v'; args.value_bytes as usize]);
    let consistency = if args.serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    };
    if args.op != BenchOp::Put {
        preload(client, args, &value).await?;
    }

    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients as usize);
    for c in 0..args.clients as u64 {
        let (client, issued, value) = (client.clone(), issued.clone(), value.clone());
        let (op, keys, requests) = (args.op, args.keys, args.requests);
        let mut n = c * keys / args.clients as u64;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                ok: histogram()?,
                definite: 0,
                unknown: 0,
                first_error: None,
            };
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < requests {
                let key = key_of(n % keys);
                let read = match op {
                    BenchOp::Put => false,
                    BenchOp::Get => true,
                    BenchOp::Mixed => n.is_multiple_of(2),
                };
                n += 1;
                let t = Instant::now();
                let r = if read {
                    client.get(key, consistency).await.map(|_| ())
                } else {
                    client.put(key, value.clone()).await.map(|_| ())
                };
                let us = (t.elapsed().as_micros() as u64).max(1);
                match r {
                    Ok(()) => tally.ok.saturating_record(us),
                    Err(e) => {
                        if matches!(e, Error::OutcomeUnknown(_)) {
                            tally.unknown += 1;
                        } else {
                            tally.definite += 1;
                        }
                        tally.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            Ok::<Tally, String>(tally)
        }));
    }
    let mut all = histogram()?;
    let (mut definite, mut unknown, mut first_error) = (0, 0, None);
    for t in tasks {
        let tally = t.await.map_err(|e| format!("client task: {e}"))??;
        all.add(&tally.ok).map_err(|e| e.to_string())?;
        definite += tally.definite;
        unknown += tally.unknown;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Report {
        op: args.op,
        clients: args.clients,
        value_bytes: args.value_bytes,
        keys: args.keys,
        consistency: if args.serializable {
            "serializable"
        } else {
            "linearizable"
        },
        elapsed_secs: elapsed,
        ok: all.len(),
        failed_definite: definite,
        outcome_unknown: unknown,
        throughput_ops_per_sec: all.len() as f64 / elapsed.max(1e-9),
        latency_ok: Latency::of(&all),
        first_error,
    })
}

/// Writes every key once so reads find values (bounded by --duration-secs too).
async fn preload(client: &Client, args: &BenchArgs, value: &Bytes) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    for _ in 0..args.clients.min(64) {
        let (client, next, value, keys) = (client.clone(), next.clone(), value.clone(), args.keys);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= keys || Instant::now() > deadline {
                    return Ok::<(), String>(());
                }
                client
                    .put(key_of(n), value.clone())
                    .await
                    .map_err(|e| format!("preloading bench:{n}: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("preload task: {e}"))??;
    }
    Ok(())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print(r: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("ringkv bench: cannot encode report: {e}"),
        }
        return;
    }
    let l = &r.latency_ok;
    println!(
        "op={:?} clients={} value_bytes={} keys={} reads={}",
        r.op, r.clients, r.value_bytes, r.keys, r.consistency
    );
    println!(
        "ok={} failed={} unknown={} in {:.2} s: {:.0} ops/s",
        r.ok, r.failed_definite, r.outcome_unknown, r.elapsed_secs, r.throughput_ops_per_sec
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.mean_us / 1000.0
    );
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
}
