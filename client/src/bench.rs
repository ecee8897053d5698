//! `ringkv bench`: a load generator for RingKV, and for etcd with the same code (`--target
//! etcd`), so both are measured by one tool.
//!
//! Closed loop (default): `--clients` tasks, spread over `--conns` connections, each with one
//! request in flight. Open loop (`--rate R`): the same tasks issue requests on a fixed schedule
//! of R per second in all, and latency is measured from each request's *intended* start, so a
//! stall shows up in the percentiles instead of silently lowering the offered load
//! (coordinated omission). A run ends after `--requests` or `--duration-secs`, whichever comes
//! first, so it always stops by itself; `--warmup-secs` of load before that are not recorded.
//! Latency of successful requests goes into HDR histograms (1 µs resolution, 3 significant
//! digits); failures are counted apart, and a write whose outcome is unknown is counted as such.
//!
//! Keys are `bench:<n>` for `n` in `0..--keys`, chosen by `--key-dist`: `sequential` (client
//! `c` walks from `c * keys / clients`; a put run with `--requests = --keys` writes every key
//! once), `uniform`, `zipf:THETA` (key 0 hottest) or `hotspot:X:Y` (a fraction X of requests
//! go to the first fraction Y of keys), drawn from a seeded generator (`--seed`, printed).
//! `--verify` reads back every key a put run acknowledged and counts any that are missing.
//!
//! `--deadline-ms D` gives every request a deadline of D: the client gives up on it after D
//! (its request timeout, also sent to the server as `grpc-timeout`), and a request not
//! acknowledged within D of its intended start counts as *missed*. Every recorded request is
//! then exactly one of: acknowledged in time (`goodput_ops_s` is their count per second of the
//! recording window), refused as overloaded (`rejected`: a definite refusal, nothing written),
//! or missed (late acknowledgements, timeouts, unknown outcomes, other failures). Without a
//! deadline, `goodput_ops_s` equals the acknowledged ops/s and `missed` is 0; `rejected` still
//! counts overload refusals. `failed_definite` includes the rejected requests.
//!
//! In an open loop with a deadline, a request whose task reaches it only after its intended
//! start plus D (the task was still waiting on earlier requests) is not sent: its caller has
//! given up, as a service with that deadline would. It counts as missed, and apart as
//! `late_unsent`; sending it anyway would only load the cluster with work nobody waits for.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use ringkv_client::{Client, ClientOptions, Error, Expect, ReadConsistency, Ttl, Txn};
use serde::Serialize;

use crate::etcd::Etcd;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchOp {
    /// Write a value.
    Put,
    /// Linearizable read (the keys are written once before the timed run).
    Get,
    /// Read from any replica, possibly stale (the keys are written first).
    GetSerializable,
    /// Compare-and-swap: replace the value if it still equals the one written (keys written first).
    Cas,
    /// Reads and writes; `--read-ratio` of them reads.
    Mixed,
    /// Sessions (RingKV only): 45 % linearizable gets, 45 % puts with `--ttl-ms`, 10 %
    /// touches (keys written first, with the TTL).
    Session,
    /// Transactions (RingKV only): each writes the four keys of one hash tag
    /// (`bench:{N}:0..3`) in one transaction; throughput counts transactions.
    Txn,
}

/// Which system to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchTarget {
    Ringkv,
    /// An etcd v3 cluster (`--endpoints` are its client URLs' HOST:PORT).
    Etcd,
}

/// Arguments of `ringkv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The system under test.
    #[arg(long, value_enum, default_value_t = BenchTarget::Ringkv)]
    pub target: BenchTarget,
    /// Concurrent client tasks, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Connections (client instances) the tasks are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub conns: u32,
    /// Open loop: requests per second in all, scheduled at fixed intervals.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests in all (the run also ends after --duration-secs).
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Stop after this many seconds even if --requests were not all sent.
    #[arg(long, alias = "duration", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Seconds of load before recording starts (not counted in --requests).
    #[arg(long, alias = "warmup", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub warmup_secs: u64,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    pub op: BenchOp,
    /// Fraction of reads in a `mixed` run.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub keys: u64,
    /// Key choice: sequential, uniform, zipf:THETA, hotspot:X:Y.
    #[arg(long, default_value = "sequential")]
    pub key_dist: String,
    /// Seed of the key choice (random when absent; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Bytes per value.
    #[arg(long, alias = "value-size", default_value_t = 128, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub value_bytes: u64,
    /// Reads from any replica (possibly stale) instead of linearizable reads.
    #[arg(long)]
    pub serializable: bool,
    /// After a put run, read back every acknowledged key and report any missing.
    #[arg(long)]
    pub verify: bool,
    /// Reads and CAS: the keys were written by an earlier run; do not write them first.
    #[arg(long)]
    pub skip_preload: bool,
    /// Each request's deadline: the client gives up after it, and a request not acknowledged
    /// within it of its intended start counts as missed (see `goodput_ops_s`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub deadline_ms: Option<u64>,
    /// `--op session`: the TTL of the sessions written, in ms.
    #[arg(long, default_value_t = 1_800_000, value_parser = clap::value_parser!(u64).range(1..=31_622_400_000))]
    pub ttl_ms: u64,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyDist {
    Sequential,
    Uniform,
    Zipf(f64),
    Hotspot { ops: f64, keys: f64 },
}

impl KeyDist {
    fn parse(s: &str) -> Result<KeyDist, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str, what: &str| -> Result<f64, String> {
            p.parse::<f64>()
                .map_err(|_| format!("--key-dist {s}: {what} {p:?} is not a number"))
        };
        match parts.as_slice() {
            ["sequential"] => Ok(KeyDist::Sequential),
            ["uniform"] => Ok(KeyDist::Uniform),
            ["zipf", t] => {
                let t = num(t, "theta")?;
                if !(t > 0.0 && t < 100.0) {
                    return Err(format!("--key-dist {s}: theta must be in (0, 100)"));
                }
                Ok(KeyDist::Zipf(t))
            }
            ["hotspot", x, y] => {
                let (ops, keys) = (num(x, "X")?, num(y, "Y")?);
                if !((0.0..=1.0).contains(&ops) && keys > 0.0 && keys <= 1.0) {
                    return Err(format!(
                        "--key-dist {s}: X must be in [0, 1] and Y in (0, 1]"
                    ));
                }
                Ok(KeyDist::Hotspot { ops, keys })
            }
            _ => Err(format!(
                "--key-dist {s}: expected sequential, uniform, zipf:THETA or hotspot:X:Y"
            )),
        }
    }
}

/// One client task's key source.
struct KeyGen {
    dist: KeyDist,
    keys: u64,
    next: u64,
    rng: StdRng,
    zipf: Option<Zipf<f64>>,
}

impl KeyGen {
    fn new(dist: KeyDist, keys: u64, start: u64, seed: u64) -> Result<KeyGen, String> {
        let zipf = match dist {
            KeyDist::Zipf(t) => Some(Zipf::new(keys as f64, t).map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(KeyGen {
            dist,
            keys,
            next: start,
            rng: StdRng::seed_from_u64(seed),
            zipf,
        })
    }

    fn next_key(&mut self) -> u64 {
        match self.dist {
            KeyDist::Sequential => {
                let n = self.next % self.keys;
                self.next += 1;
                n
            }
            KeyDist::Uniform => self.rng.random_range(0..self.keys),
            KeyDist::Zipf(_) => match &self.zipf {
                // Zipf yields 1..=n, 1 the most frequent.
                Some(z) => (z.sample(&mut self.rng) as u64)
                    .saturating_sub(1)
                    .min(self.keys - 1),
                None => 0,
            },
            KeyDist::Hotspot { ops, keys } => {
                let hot = ((self.keys as f64 * keys).ceil() as u64).clamp(1, self.keys);
                if self.rng.random_bool(ops) || hot == self.keys {
                    self.rng.random_range(0..hot)
                } else {
                    self.rng.random_range(hot..self.keys)
                }
            }
        }
    }
}

/// The system under test, one handle per connection.
#[derive(Clone)]
enum Conn {
    Ringkv(Client),
    Etcd(Etcd),
}

/// The operations only RingKV has.
#[derive(Debug, Clone, Copy)]
enum RingkvOnly {
    PutTtl(Duration),
    Touch,
    Txn,
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    Ok,
    Failed(String),
    /// Refused as overloaded (definite: nothing written).
    Rejected(String),
    Unknown(String),
}

impl Conn {
    async fn put(&self, key: Bytes, value: Bytes) -> Outcome {
        match self {
            Conn::Ringkv(c) => ringkv_outcome(c.put(key, value).await.map(|_| ())),
            // etcd does not say whether a failed put took effect.
            Conn::Etcd(e) => match e.put(key, value).await {
                Ok(()) => Outcome::Ok,
                Err(s) => Outcome::Unknown(format!("{:?}: {}", s.code(), s.message())),
            },
        }
    }

    /// Reads a key; the error is [`Outcome::Failed`] or [`Outcome::Rejected`].
    async fn get(&self, key: Bytes, serializable: bool) -> Result<Option<Bytes>, Outcome> {
        match self {
            Conn::Ringkv(c) => {
                let consistency = if serializable {
                    ReadConsistency::Serializable
                } else {
                    ReadConsistency::Linearizable
                };
                c.get(key, consistency)
                    .await
                    .map(|v| v.map(|v| v.value))
                    .map_err(|e| match e {
                        Error::Overloaded { .. } => Outcome::Rejected(e.to_string()),
                        e => Outcome::Failed(e.to_string()),
                    })
            }
            Conn::Etcd(e) => e
                .get(key, serializable)
                .await
                .map_err(|s| Outcome::Failed(format!("{:?}: {}", s.code(), s.message()))),
        }
    }

    /// A put with a TTL, a touch, or a four-put transaction (RingKV only; checked before the
    /// run starts).
    async fn ringkv_only(&self, op: RingkvOnly, key: Bytes, value: Bytes) -> Outcome {
        let Conn::Ringkv(c) = self else {
            return Outcome::Failed("RingKV-only operation".into());
        };
        match op {
            RingkvOnly::PutTtl(ttl) => {
                ringkv_outcome(c.put_with_ttl(key, value, Ttl::Set(ttl)).await.map(|_| ()))
            }
            RingkvOnly::Touch => ringkv_outcome(c.touch(key, None).await.map(|_| ())),
            RingkvOnly::Txn => {
                let base = String::from_utf8_lossy(&key).into_owned();
                let txn = (0..4).fold(Txn::new(), |t, i| {
                    t.then_put(format!("{{{base}}}:{i}"), value.clone())
                });
                ringkv_outcome(c.txn(&txn).await.map(|_| ()))
            }
        }
    }

    async fn cas(&self, key: Bytes, value: Bytes) -> Outcome {
        match self {
            Conn::Ringkv(c) => ringkv_outcome(
                c.cas(key, Expect::Value(value.clone()), Some(value))
                    .await
                    .map(|_| ()),
            ),
            Conn::Etcd(e) => match e.cas(key, value.clone(), value).await {
                Ok(_) => Outcome::Ok,
                Err(s) => Outcome::Unknown(format!("{:?}: {}", s.code(), s.message())),
            },
        }
    }
}

fn ringkv_outcome(r: Result<(), Error>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(e @ Error::OutcomeUnknown(_)) => Outcome::Unknown(e.to_string()),
        Err(e @ Error::Overloaded { .. }) => Outcome::Rejected(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Latency summary in microseconds (kept for earlier readers of `--json`).
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

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
struct LatencyMs {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// The run's outcome, as printed.
#[derive(Debug, Serialize)]
struct Report {
    target: BenchTarget,
    op: BenchOp,
    clients: u32,
    conns: u32,
    /// RingKV only: whether the client batched requests per node (`--no-batch` turns it off).
    batched: Option<bool>,
    rate: Option<f64>,
    value_bytes: u64,
    keys: u64,
    key_dist: String,
    seed: u64,
    consistency: &'static str,
    elapsed_secs: f64,
    /// `--deadline-ms`, when given.
    deadline_ms: Option<u64>,
    ok: u64,
    failed_definite: u64,
    outcome_unknown: u64,
    errors: u64,
    throughput_ops_s: f64,
    throughput_ops_per_sec: f64,
    /// Requests acknowledged within the deadline per second of the recording window (without
    /// a deadline: every acknowledged request, so it equals `throughput_ops_s`).
    goodput_ops_s: f64,
    /// Requests refused as overloaded (definite: nothing written); part of `failed_definite`.
    rejected: u64,
    /// Requests neither acknowledged within the deadline nor refused (0 without a deadline).
    missed: u64,
    /// Of `missed`: open-loop requests not sent because their deadline had passed before
    /// their task got to them (see the module note).
    late_unsent: u64,
    latency_ms: LatencyMs,
    latency_ok: Latency,
    verified_keys: Option<u64>,
    lost_keys: Option<u64>,
    first_error: Option<String>,
}

/// Per-task tallies, merged at the end.
struct Tally {
    ok: Histogram<u64>,
    /// Acknowledged within the deadline (every acknowledged request without one).
    good: u64,
    definite: u64,
    rejected: u64,
    unknown: u64,
    missed: u64,
    late_unsent: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Tally, String> {
        Ok(Tally {
            ok: histogram()?,
            good: 0,
            definite: 0,
            rejected: 0,
            unknown: 0,
            missed: 0,
            late_unsent: 0,
            first_error: None,
        })
    }

    /// Records a request that ended `us` microseconds after its intended start, under a
    /// deadline of `deadline_us` if the run has one.
    fn record(&mut self, outcome: Outcome, us: u64, deadline_us: Option<u64>) {
        let late = deadline_us.is_some_and(|d| us > d);
        let error = match outcome {
            Outcome::Ok => {
                self.ok.saturating_record(us);
                if late {
                    self.missed += 1;
                } else {
                    self.good += 1;
                }
                return;
            }
            Outcome::Rejected(e) => {
                self.definite += 1;
                self.rejected += 1;
                e
            }
            Outcome::Failed(e) => {
                self.definite += 1;
                self.missed += u64::from(deadline_us.is_some());
                e
            }
            Outcome::Unknown(e) => {
                self.unknown += 1;
                self.missed += u64::from(deadline_us.is_some());
                e
            }
        };
        self.first_error.get_or_insert(error);
    }

    /// Records a request that was not sent: its deadline had passed before its turn.
    fn record_unsent(&mut self) {
        self.missed += 1;
        self.late_unsent += 1;
    }

    fn merge(&mut self, other: Tally) -> Result<(), String> {
        self.ok.add(&other.ok).map_err(|e| e.to_string())?;
        self.good += other.good;
        self.definite += other.definite;
        self.rejected += other.rejected;
        self.unknown += other.unknown;
        self.missed += other.missed;
        self.late_unsent += other.late_unsent;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

fn histogram() -> Result<Histogram<u64>, String> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())
}

fn key_of(n: u64) -> Bytes {
    Bytes::from(format!("bench:{n}"))
}

/// Runs the benchmark and prints the report; exit 3 if nothing succeeded or a key was lost.
pub async fn run(client: &Client, args: BenchArgs) -> ExitCode {
    match run_inner(client, &args).await {
        Ok(report) => {
            print(&report, args.json);
            if report.ok == 0 || report.lost_keys.unwrap_or(0) > 0 {
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

fn connections(client: &Client, args: &BenchArgs) -> Result<Vec<Conn>, String> {
    let opts = client.options();
    let deadline = args.deadline_ms.map(Duration::from_millis);
    (0..args.conns as usize)
        .map(|i| match args.target {
            BenchTarget::Ringkv => {
                if i == 0 && deadline.is_none() {
                    return Ok(Conn::Ringkv(client.clone()));
                }
                let mut o = ClientOptions::new(opts.endpoints.clone());
                o.cluster_id = opts.cluster_id.clone();
                o.request_timeout = deadline.unwrap_or(opts.request_timeout);
                o.attempt_timeout =
                    deadline.map_or(opts.attempt_timeout, |d| d.min(opts.attempt_timeout));
                o.batch_requests = opts.batch_requests;
                o.token = opts.token.clone();
                o.tls = opts.tls.clone();
                Client::new(o).map(Conn::Ringkv).map_err(|e| e.to_string())
            }
            BenchTarget::Etcd => {
                let ep = &opts.endpoints[i % opts.endpoints.len()];
                Etcd::connect_lazy(ep, deadline.unwrap_or(opts.request_timeout)).map(Conn::Etcd)
            }
        })
        .collect()
}

async fn run_inner(client: &Client, args: &BenchArgs) -> Result<Report, String> {
    let dist = KeyDist::parse(&args.key_dist)?;
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err("--read-ratio must be in [0, 1]".into());
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        return Err("--rate must be positive".into());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    if !args.json {
        eprintln!("seed {seed} (repeat with --seed {seed})");
    }
    let value = Bytes::from(vec![b'v'; args.value_bytes as usize]);
    let conns = connections(client, args)?;
    if matches!(args.op, BenchOp::Session | BenchOp::Txn) && args.target != BenchTarget::Ringkv {
        return Err(format!("--op {:?} is RingKV-only", args.op).to_lowercase());
    }
    if !matches!(args.op, BenchOp::Put | BenchOp::Txn) && !args.skip_preload {
        preload(&conns, args, &value).await?;
    }
    let written = Arc::new(Bitset::new(if args.verify && args.op == BenchOp::Put {
        args.keys
    } else {
        0
    }));

    let issued = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let recording_from = begun + Duration::from_secs(args.warmup_secs);
    let deadline = recording_from + Duration::from_secs(args.duration_secs);
    // Open loop: each task issues one request every `interval`.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.clients as f64 / r));
    let deadline_us = args.deadline_ms.map(|d| d.saturating_mul(1000));
    let progress = progress_bar(args);
    let mut tasks = Vec::with_capacity(args.clients as usize);
    for c in 0..args.clients as u64 {
        let conn = conns[c as usize % conns.len()].clone();
        let (issued, value, written) = (issued.clone(), value.clone(), written.clone());
        let (op, requests, read_ratio, serializable) =
            (args.op, args.requests, args.read_ratio, args.serializable);
        let ttl = Duration::from_millis(args.ttl_ms);
        let mut keygen = KeyGen::new(
            dist,
            args.keys,
            c * args.keys / args.clients as u64,
            seed.wrapping_add(c),
        )?;
        let mut mix = StdRng::seed_from_u64(seed ^ 0x5eed_0000_0000_0000 ^ c);
        // Spread the tasks' schedules over one interval.
        let offset = interval.map(|i| i.mul_f64(c as f64 / args.clients as f64));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut intended = begun + offset.unwrap_or_default();
            loop {
                if interval.is_some() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let start = match interval {
                    Some(i) => {
                        let s = intended;
                        intended += i;
                        s
                    }
                    None => Instant::now(),
                };
                let recording = start >= recording_from;
                if Instant::now() >= deadline
                    || (recording && issued.fetch_add(1, Ordering::Relaxed) >= requests)
                {
                    break;
                }
                let n = keygen.next_key();
                let key = key_of(n);
                if interval.is_some()
                    && let Some(d) = deadline_us
                    && start.elapsed().as_micros() as u64 > d
                {
                    if recording {
                        tally.record_unsent();
                    }
                    continue;
                }
                let outcome = match op {
                    BenchOp::Put => conn.put(key, value.clone()).await,
                    BenchOp::Get | BenchOp::GetSerializable => {
                        let ser = serializable || op == BenchOp::GetSerializable;
                        match conn.get(key, ser).await {
                            Ok(_) => Outcome::Ok,
                            Err(e) => e,
                        }
                    }
                    BenchOp::Cas => conn.cas(key, value.clone()).await,
                    BenchOp::Session => match mix.random_range(0..20u32) {
                        0..9 => match conn.get(key, serializable).await {
                            Ok(_) => Outcome::Ok,
                            Err(e) => e,
                        },
                        9..18 => {
                            conn.ringkv_only(RingkvOnly::PutTtl(ttl), key, value.clone())
                                .await
                        }
                        _ => {
                            conn.ringkv_only(RingkvOnly::Touch, key, value.clone())
                                .await
                        }
                    },
                    BenchOp::Txn => conn.ringkv_only(RingkvOnly::Txn, key, value.clone()).await,
                    BenchOp::Mixed => {
                        if mix.random_bool(read_ratio) {
                            match conn.get(key, serializable).await {
                                Ok(_) => Outcome::Ok,
                                Err(e) => e,
                            }
                        } else {
                            conn.put(key, value.clone()).await
                        }
                    }
                };
                if !recording {
                    continue;
                }
                let us = (start.elapsed().as_micros() as u64).max(1);
                if matches!(outcome, Outcome::Ok) && op == BenchOp::Put {
                    written.set(n);
                }
                tally.record(outcome, us, deadline_us);
            }
            Ok::<Tally, String>(tally)
        }));
    }
    let ticker = progress.clone().map(|bar| {
        let issued = issued.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(issued.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut total = Tally::new()?;
    for t in tasks {
        total.merge(t.await.map_err(|e| format!("client task: {e}"))??)?;
    }
    let all = &total.ok;
    let elapsed = recording_from.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let (verified_keys, lost_keys) = if written.len() > 0 {
        let (v, l) = verify(&conns, &written, &value).await;
        (Some(v), Some(l))
    } else {
        (None, None)
    };
    let throughput = all.len() as f64 / elapsed.max(1e-9);
    let l = Latency::of(all);
    Ok(Report {
        target: args.target,
        op: args.op,
        clients: args.clients,
        conns: args.conns,
        batched: (args.target == BenchTarget::Ringkv).then(|| client.options().batch_requests),
        rate: args.rate,
        value_bytes: args.value_bytes,
        keys: args.keys,
        key_dist: args.key_dist.clone(),
        seed,
        consistency: if args.serializable || args.op == BenchOp::GetSerializable {
            "serializable"
        } else {
            "linearizable"
        },
        elapsed_secs: elapsed,
        deadline_ms: args.deadline_ms,
        ok: all.len(),
        failed_definite: total.definite,
        outcome_unknown: total.unknown,
        errors: total.definite + total.unknown,
        throughput_ops_s: throughput,
        throughput_ops_per_sec: throughput,
        goodput_ops_s: total.good as f64 / elapsed.max(1e-9),
        rejected: total.rejected,
        missed: total.missed,
        late_unsent: total.late_unsent,
        latency_ms: LatencyMs {
            p50: ms(l.p50_us),
            p90: ms(l.p90_us),
            p99: ms(l.p99_us),
            p999: ms(l.p999_us),
            max: ms(l.max_us),
        },
        latency_ok: l,
        verified_keys,
        lost_keys,
        first_error: total.first_error,
    })
}

/// A progress bar on a terminal (stderr), none otherwise.
fn progress_bar(args: &BenchArgs) -> Option<indicatif::ProgressBar> {
    if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(args.requests);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} requests ({per_sec})",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Which keys a put run wrote (a fixed-size bitset shared by the tasks).
struct Bitset {
    words: Vec<AtomicU64>,
    bits: u64,
}

impl Bitset {
    fn new(bits: u64) -> Bitset {
        Bitset {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            bits,
        }
    }

    fn len(&self) -> u64 {
        self.bits
    }

    fn set(&self, n: u64) {
        if let Some(w) = self.words.get((n / 64) as usize) {
            w.fetch_or(1 << (n % 64), Ordering::Relaxed);
        }
    }

    fn get(&self, n: u64) -> bool {
        self.words
            .get((n / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (n % 64)) != 0)
    }
}

/// Reads back every written key (linearizable); returns (checked, missing or wrong).
async fn verify(conns: &[Conn], written: &Arc<Bitset>, value: &Bytes) -> (u64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (conn, next, written, value) = (
            conns[i % conns.len()].clone(),
            next.clone(),
            written.clone(),
            value.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut checked, mut lost) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= written.len() {
                    return (checked, lost);
                }
                if !written.get(n) {
                    continue;
                }
                checked += 1;
                match conn.get(key_of(n), false).await {
                    Ok(Some(v)) if v == value => {}
                    other => {
                        lost += 1;
                        if lost <= 5 {
                            eprintln!("ringkv bench: verify bench:{n}: {other:?}");
                        }
                    }
                }
            }
        }));
    }
    let (mut checked, mut lost) = (0, 0);
    for t in tasks {
        if let Ok((c, l)) = t.await {
            checked += c;
            lost += l;
        }
    }
    (checked, lost)
}

/// Writes every key once so reads find values (bounded by --duration-secs too).
async fn preload(conns: &[Conn], args: &BenchArgs, value: &Bytes) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut tasks = Vec::new();
    // Sessions are written with their TTL, so touches find one.
    let ttl = (args.op == BenchOp::Session).then(|| Duration::from_millis(args.ttl_ms));
    for i in 0..args.clients.min(64) as usize {
        let (conn, next, value, keys) = (
            conns[i % conns.len()].clone(),
            next.clone(),
            value.clone(),
            args.keys,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= keys || Instant::now() > deadline {
                    return Ok::<(), String>(());
                }
                let written = match ttl {
                    Some(t) => {
                        conn.ringkv_only(RingkvOnly::PutTtl(t), key_of(n), value.clone())
                            .await
                    }
                    None => conn.put(key_of(n), value.clone()).await,
                };
                match written {
                    Outcome::Ok => {}
                    Outcome::Failed(e) | Outcome::Rejected(e) | Outcome::Unknown(e) => {
                        return Err(format!("preloading bench:{n}: {e}"));
                    }
                }
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
        "target={:?} op={:?} clients={} conns={} value_bytes={} keys={} key_dist={} reads={}{}",
        r.target,
        r.op,
        r.clients,
        r.conns,
        r.value_bytes,
        r.keys,
        r.key_dist,
        r.consistency,
        r.rate
            .map(|x| format!(" rate={x}/s (open loop)"))
            .unwrap_or_default()
    );
    println!(
        "ok={} failed={} unknown={} in {:.2} s: {:.0} ops/s",
        r.ok, r.failed_definite, r.outcome_unknown, r.elapsed_secs, r.throughput_ops_s
    );
    println!(
        "goodput {:.0} ops/s{}  rejected={} (overloaded, nothing written)  missed={} (not sent, already late: {})",
        r.goodput_ops_s,
        r.deadline_ms
            .map(|d| format!(" (acknowledged within {d} ms)"))
            .unwrap_or_default(),
        r.rejected,
        r.missed,
        r.late_unsent
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
    if let (Some(v), Some(lost)) = (r.verified_keys, r.lost_keys) {
        println!("verified {v} acknowledged keys: {lost} missing or wrong");
    }
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally_of(outcomes: Vec<(Outcome, u64)>, deadline_us: Option<u64>) -> Tally {
        let mut t = Tally::new().expect("tally");
        for (o, us) in outcomes {
            t.record(o, us, deadline_us);
        }
        t
    }

    fn mixed() -> Vec<(Outcome, u64)> {
        vec![
            (Outcome::Ok, 100),
            (Outcome::Ok, 500_000),
            (Outcome::Ok, 500_001),
            (Outcome::Rejected("overloaded".into()), 50_000),
            (Outcome::Failed("no leader".into()), 10),
            (Outcome::Unknown("timeout".into()), 600_000),
        ]
    }

    #[test]
    fn a_request_not_sent_because_it_was_already_late_is_missed() {
        let mut t = tally_of(mixed(), Some(500_000));
        t.record_unsent();
        t.record_unsent();
        assert_eq!((t.missed, t.late_unsent), (5, 2));
        assert_eq!(
            t.good + t.rejected + t.missed,
            8,
            "every request counted once"
        );
        assert_eq!(
            t.ok.len(),
            3,
            "no latency recorded for a request never sent"
        );
    }

    #[test]
    fn with_a_deadline_each_request_is_good_rejected_or_missed() {
        let t = tally_of(mixed(), Some(500_000));
        assert_eq!(t.ok.len(), 3, "every acknowledgement has a latency");
        // Exactly at the deadline is in time; a microsecond later is missed.
        assert_eq!(t.good, 2);
        assert_eq!(t.rejected, 1);
        assert_eq!(
            t.missed, 3,
            "the late ack, the failure and the unknown outcome"
        );
        assert_eq!(t.good + t.rejected + t.missed, 6);
        assert_eq!(
            (t.definite, t.unknown),
            (2, 1),
            "rejected is part of definite"
        );
        assert_eq!(t.first_error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn without_a_deadline_goodput_is_every_acknowledgement_and_nothing_is_missed() {
        let t = tally_of(mixed(), None);
        assert_eq!(t.good, 3);
        assert_eq!(t.missed, 0);
        assert_eq!(t.rejected, 1);
    }

    #[test]
    fn tallies_merge_field_by_field() {
        let mut a = tally_of(mixed(), Some(500_000));
        a.merge(tally_of(mixed(), Some(500_000))).expect("merge");
        assert_eq!(
            (
                a.ok.len(),
                a.good,
                a.rejected,
                a.missed,
                a.definite,
                a.unknown
            ),
            (6, 4, 2, 6, 4, 2)
        );
    }

    #[test]
    fn key_distributions_parse_and_stay_in_range() {
        for (s, hot_share_min) in [
            ("sequential", 0.0),
            ("uniform", 0.0),
            ("zipf:0.99", 0.2),
            ("hotspot:0.9:0.01", 0.85),
        ] {
            let dist = KeyDist::parse(s).expect(s);
            let mut g = KeyGen::new(dist, 1000, 0, 7).expect("keygen");
            let mut hot = 0;
            for _ in 0..20_000 {
                let k = g.next_key();
                assert!(k < 1000, "{s}: key {k} out of range");
                if k < 10 {
                    hot += 1;
                }
            }
            let share = hot as f64 / 20_000.0;
            assert!(share >= hot_share_min, "{s}: hot share {share}");
        }
        for bad in ["zipf", "zipf:x", "hotspot:2:0.1", "hotspot:0.5:0", "gauss"] {
            assert!(KeyDist::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
