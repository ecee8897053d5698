//! `ringkv`: the RingKV command line.
//!
//! Exit codes (design section 8): 0 success; 1 a negative answer (key not found, compare
//! failed); 2 usage error or input rejected as invalid; 3 cluster unavailable, timeout, or
//! unknown outcome; 4 not authenticated (no or a wrong token), permission denied, or a TLS
//! trust failure (the server's certificate is not signed by the CA in `--cacert`, this
//! client's certificate was refused, or one side does not speak TLS) or a bad TLS file.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use ringkv_client::{Client, ClientOptions, Error, Expect, ReadConsistency, Ttl};

/// The load generator (`ringkv bench`) allocates per request; mimalloc keeps that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backup;
mod bench;
mod duration;
mod etcd;
mod member;
mod status;
mod txn_cli;

const TXN_HELP: &str = "Run a single-shard transaction read as JSON from stdin.

Input: {\"compare\":[...], \"success\":[...], \"failure\":[...]} where a compare is
{\"key\":K,\"value\":V}, {\"key\":K,\"version\":N} or {\"key\":K,\"absent\":true}, and an op is
{\"put\":{\"key\":K,\"value\":V,\"ttl\":\"30s\"}}, {\"del\":{\"key\":K}} or {\"get\":{\"key\":K}}.
When every compare holds the success ops run, else the failure ops: atomically, in order, every
write with the same version. All keys must share a shard (one hash tag: order:{42}:state,
order:{42}:lines). Output: {\"succeeded\":bool,\"results\":[...],\"version\":N}. Exit 0 when the
compares held, 1 when not, 2 for bad input (nothing written).";

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser, Debug)]
#[command(name = "ringkv", version, about = "RingKV command line")]
struct Cli {
    /// Comma-separated HOST:PORT of cluster nodes.
    #[arg(long, env = "RINGKV_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, global = true)]
    endpoints: String,
    /// Refuse to talk to a cluster with another id.
    #[arg(long, env = "RINGKV_CLUSTER_ID", default_value = "", global = true)]
    cluster_id: String,
    /// Bearer token to authenticate with (servers started with --auth-tokens). Prefer the
    /// environment variable: a command line is visible to other users of the machine.
    #[arg(long, env = "RINGKV_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Give up on a request (retries included) after this long.
    #[arg(long, default_value_t = 15_000, global = true)]
    timeout_ms: u64,
    /// Send each request as its own RPC instead of batching the requests waiting for the same
    /// node into one (`ringkv bench` uses this to measure the unbatched path).
    #[arg(long, global = true)]
    no_batch: bool,
    /// The cluster CA (PEM): speak TLS and trust only servers it signed.
    #[arg(long, env = "RINGKV_CACERT", global = true)]
    cacert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) to present, with `--key`; needs `--cacert`.
    #[arg(
        long = "cert",
        id = "tls_cert",
        env = "RINGKV_CERT",
        global = true,
        requires = "tls_key"
    )]
    cert: Option<std::path::PathBuf>,
    /// The private key of `--cert` (PEM).
    #[arg(
        long = "key",
        id = "tls_key",
        env = "RINGKV_KEY",
        global = true,
        requires = "tls_cert"
    )]
    key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write KEY = VALUE (clearing any TTL the key had, unless --ttl or --keep-ttl).
    Put {
        key: String,
        value: String,
        /// Expire the key this long after the write (cluster time): 500ms, 30s, 10m, 1h.
        #[arg(long, value_parser = duration::parse, conflicts_with = "keep_ttl")]
        ttl: Option<Duration>,
        /// Keep the TTL the key has now.
        #[arg(long)]
        keep_ttl: bool,
    },
    /// Restart KEY's TTL from now: --ttl, or the TTL it has (exit 1 when absent).
    Touch {
        key: String,
        #[arg(long, value_parser = duration::parse)]
        ttl: Option<Duration>,
    },
    /// Remove KEY's TTL, so it lives until deleted (exit 1 when absent).
    Persist { key: String },
    /// Print KEY's remaining time to live in ms (-1: no TTL; exit 1 when absent).
    Ttl {
        key: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Print KEY's value (exit 1 when absent).
    Get {
        key: String,
        /// Read from any replica; may be stale.
        #[arg(long)]
        serializable: bool,
        /// Also print the key's version (to stderr).
        #[arg(long)]
        version: bool,
    },
    /// Delete KEY (exit 1 when it did not exist).
    Del { key: String },
    /// Load the cluster and report throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Compare-and-swap: set KEY to NEW_VALUE (or delete it with --delete) only if it matches.
    Cas {
        key: String,
        new_value: Option<String>,
        /// Current value must equal this.
        #[arg(long, group = "expectation")]
        expect: Option<String>,
        /// Key must be absent.
        #[arg(long, group = "expectation")]
        expect_absent: bool,
        /// Key's current version must equal this (0 = absent).
        #[arg(long, group = "expectation")]
        expect_version: Option<u64>,
        /// Delete the key instead of writing NEW_VALUE.
        #[arg(long, conflicts_with = "new_value")]
        delete: bool,
        /// Give the written value this TTL (cluster time): 500ms, 30s, 10m, 1h.
        #[arg(long, value_parser = duration::parse, conflicts_with_all = ["keep_ttl", "delete"])]
        ttl: Option<Duration>,
        /// Keep the TTL the key has now for the written value.
        #[arg(long, conflicts_with = "delete")]
        keep_ttl: bool,
    },
    /// Run a single-shard transaction read as JSON from stdin; print its answer as JSON
    /// (exit 0 when the compares held, 1 when they did not). See `ringkv txn --help`.
    #[command(long_about = TXN_HELP)]
    Txn,
    /// Print `key<TAB>value` lines of keys starting with PREFIX, in key order.
    Scan {
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        serializable: bool,
    },
    /// Add, remove and list the nodes that replicate every shard.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Save a consistent backup of the live cluster, or verify one.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Show nodes and shards: leaders, terms, log positions, reachability.
    Status {
        #[arg(long)]
        json: bool,
        /// Redraw every SECS seconds until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
    },
}

fn exit_for(e: &Error) -> ExitCode {
    eprintln!("ringkv: {e}");
    match e {
        Error::Invalid(_) => ExitCode::from(2),
        Error::Unavailable(_)
        | Error::Overloaded { .. }
        | Error::OutcomeUnknown(_)
        | Error::DiskFull { .. }
        | Error::Unsupported { .. } => ExitCode::from(3),
        Error::Unauthenticated(_) | Error::PermissionDenied(_) | Error::Tls { .. } => {
            ExitCode::from(4)
        }
    }
}

fn not_found() -> ExitCode {
    eprintln!("ringkv: not found");
    ExitCode::from(1)
}

/// The TTL change of `--ttl` / `--keep-ttl` (clap keeps them exclusive).
fn ttl_of(ttl: Option<Duration>, keep_ttl: bool) -> Ttl {
    match (ttl, keep_ttl) {
        (Some(d), _) => Ttl::Set(d),
        (None, true) => Ttl::Keep,
        (None, false) => Ttl::Clear,
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("ringkv: {msg}");
    ExitCode::from(2)
}

fn print_value(v: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(v);
    let _ = out.write_all(b"\n");
}

async fn run(cli: Cli) -> ExitCode {
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut opts = ClientOptions::new(endpoints);
    opts.cluster_id = cli.cluster_id.clone();
    opts.batch_requests = !cli.no_batch;
    opts.token = cli.token.clone();
    opts.request_timeout = Duration::from_millis(cli.timeout_ms);
    match (&cli.cacert, &cli.cert) {
        (Some(ca), _) => {
            opts.tls = Some(ringkv_client::TlsOptions {
                ca: ca.clone(),
                cert: cli.cert.clone(),
                key: cli.key.clone(),
            });
        }
        (None, Some(_)) => return usage("--cert and --key need --cacert (the cluster CA)"),
        (None, None) => {}
    }
    opts.attempt_timeout = opts.attempt_timeout.min(opts.request_timeout);
    if matches!(cli.command, Command::Member(_) | Command::Backup(_)) {
        // A membership step waits for Raft, a backup for its snapshot to be built.
        opts.request_timeout = opts.request_timeout.max(Duration::from_secs(180));
    }
    let client = match Client::new(opts) {
        Ok(c) => c,
        Err(e) => return exit_for(&e),
    };
    match cli.command {
        Command::Put {
            key,
            value,
            ttl,
            keep_ttl,
        } => {
            let result = match ttl_of(ttl, keep_ttl) {
                Ttl::Clear => client.put(key, value).await.map(|_| ()),
                t => client.put_with_ttl(key, value, t).await.map(|_| ()),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => exit_for(&e),
            }
        }
        Command::Touch { key, ttl } => match client.touch(key, ttl).await {
            Ok(Some(_)) => ExitCode::SUCCESS,
            Ok(None) => not_found(),
            Err(e) => exit_for(&e),
        },
        Command::Persist { key } => match client.persist(key).await {
            Ok(Some(_)) => ExitCode::SUCCESS,
            Ok(None) => not_found(),
            Err(e) => exit_for(&e),
        },
        Command::Ttl { key, serializable } => {
            let c = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            match client.ttl(key, c).await {
                Ok(Some(t)) => {
                    match t.remaining {
                        Some(d) => println!("{}", d.as_millis()),
                        None => println!("-1"),
                    }
                    ExitCode::SUCCESS
                }
                Ok(None) => not_found(),
                Err(e) => exit_for(&e),
            }
        }
        Command::Get {
            key,
            serializable,
            version,
        } => {
            let c = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            match client.get(key, c).await {
                Ok(Some(v)) => {
                    print_value(&v.value);
                    if version {
                        eprintln!("version {}", v.version);
                    }
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("ringkv: not found");
                    ExitCode::from(1)
                }
                Err(e) => exit_for(&e),
            }
        }
        Command::Del { key } => match client.delete(key).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("ringkv: not found");
                ExitCode::from(1)
            }
            Err(e) => exit_for(&e),
        },
        Command::Cas {
            key,
            new_value,
            expect,
            expect_absent,
            expect_version,
            delete,
            ttl,
            keep_ttl,
        } => {
            let expect = match (expect, expect_absent, expect_version) {
                (Some(v), false, None) => Expect::Value(Bytes::from(v)),
                (None, true, None) => Expect::Absent,
                (None, false, Some(n)) => Expect::Version(n),
                _ => {
                    return usage(
                        "cas needs exactly one of --expect, --expect-absent, --expect-version",
                    );
                }
            };
            let new_value = match (new_value, delete) {
                (Some(v), false) => Some(Bytes::from(v)),
                (None, true) => None,
                _ => return usage("cas needs NEW_VALUE or --delete"),
            };
            let outcome = match ttl_of(ttl, keep_ttl) {
                Ttl::Clear => client.cas(key, expect, new_value).await,
                t => client.cas_with_ttl(key, expect, new_value, t).await,
            };
            match outcome {
                Ok(o) if o.succeeded => ExitCode::SUCCESS,
                Ok(o) => {
                    match o.current {
                        Some(cur) => eprintln!(
                            "ringkv: compare failed: current version {} value {}",
                            cur.version,
                            String::from_utf8_lossy(&cur.value)
                        ),
                        None => eprintln!("ringkv: compare failed: key is absent"),
                    }
                    ExitCode::from(1)
                }
                Err(e) => exit_for(&e),
            }
        }
        Command::Scan {
            prefix,
            limit,
            serializable,
        } => {
            let c = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            match client.scan(prefix, limit, c).await {
                Ok(page) => {
                    let mut out = std::io::stdout().lock();
                    for kv in &page.items {
                        let _ = out.write_all(&kv.key);
                        let _ = out.write_all(b"\t");
                        let _ = out.write_all(&kv.value);
                        let _ = out.write_all(b"\n");
                    }
                    if page.truncated {
                        eprintln!(
                            "ringkv: output truncated at {} keys (raise --limit)",
                            page.items.len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => exit_for(&e),
            }
        }
        Command::Status { json, watch: None } => status::run(&client, json).await,
        Command::Status {
            json,
            watch: Some(secs),
        } => loop {
            // Clear the screen and home the cursor, then redraw.
            print!("\x1b[2J\x1b[H");
            let _ = status::run(&client, json).await;
            println!("\n(every {secs} s; Ctrl-C to stop)");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = tokio::signal::ctrl_c() => break ExitCode::SUCCESS,
            }
        },
        Command::Bench(args) => bench::run(&client, args).await,
        Command::Txn => txn_cli::run(&client).await,
        Command::Member(cmd) => member::run(&client, cmd).await,
        Command::Backup(cmd) => backup::run(&client, cmd).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("ringkv: cannot start runtime: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap checks argument definitions only when a command is built; do it for every
    /// subcommand here instead of in a user's terminal.
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
