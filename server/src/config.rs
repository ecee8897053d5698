//! Node configuration: flags parsed by clap, validated once into a [`Config`] before any port
//! is bound or any file is touched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::service::limits::{
    KEY_BYTES_CEILING, Limits, REQUEST_BYTES_CEILING, VALUE_BYTES_CEILING,
};

/// The largest `--snapshot-log-mb` (64 GiB: beyond that the log's entries, all held in memory
/// until purged, outgrow any node this runs on).
pub const SNAPSHOT_LOG_MB_MAX: u64 = 65_536;

/// Flags of `ringkv-server` (design section 8).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// A TOML file with any of these settings (field = flag name in snake case, e.g.
    /// `election_timeout_ms = 1000`); flags given on the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, never reused for another disk).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address to serve gRPC on (clients and peers), HOST:PORT.
    #[arg(long)]
    pub listen: Option<String>,
    /// Every member of a new cluster: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (itself included).
    #[arg(long)]
    pub peers: Option<String>,
    /// Join a running cluster through this member's address (instead of `--peers`): the node
    /// starts empty and waits for `ringkv member add ID ADDR`.
    #[arg(long)]
    pub join: Option<String>,
    /// Where this node keeps its data. Empty: bootstrap; non-empty: recover.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (Raft groups), fixed at bootstrap.
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Virtual points per shard on the hash ring, fixed at bootstrap.
    #[arg(long, default_value_t = ringkv_proto::ring::DEFAULT_VNODES)]
    pub ring_vnodes: u32,
    /// Admin HTTP address: /metrics, /health, /ready, /status. Not served when absent.
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// /ready reports a follower not ready while it has more committed entries than this
    /// still to apply.
    #[arg(long, default_value_t = 1000)]
    pub ready_lag_entries_max: u64,
    /// Cluster identity; every message between nodes and every client header is checked
    /// against it.
    #[arg(long, default_value = "ringkv")]
    pub cluster_id: String,
    #[arg(long, default_value_t = 150)]
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// Raft log entries kept behind the latest snapshot, so a follower slightly behind catches
    /// up from the log instead of a full snapshot.
    #[arg(long, default_value_t = 1000)]
    pub log_keep_entries: u64,
    /// Also build a snapshot once a shard's applied log entries since its last one take more
    /// than this many MiB, and keep at most a quarter of this behind a snapshot (fewer than
    /// `--log-keep-entries` when those are large). 0: off (entry counts only).
    #[arg(long, default_value_t = 64)]
    pub snapshot_log_mb: u64,
    /// A write not committed within this is answered "outcome unknown".
    #[arg(long, default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// A linearizable read whose barrier is not confirmed within this fails (retriable).
    #[arg(long, default_value_t = 5_000)]
    pub read_timeout_ms: u64,
    /// Client requests in flight on this node; beyond this, requests get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 4096)]
    pub inflight_requests_max: usize,
    #[arg(long, default_value_t = 4096)]
    pub key_bytes_max: usize,
    #[arg(long, default_value_t = 65_536)]
    pub value_bytes_max: usize,
    #[arg(long, default_value_t = 1_048_576)]
    pub request_bytes_max: usize,
    /// sled's cache of hot pages, in MiB; colder pages are read through the OS page cache.
    #[arg(long, default_value_t = 128)]
    pub cache_mb: u64,
    /// Refuse writes (RESOURCE_EXHAUSTED, kind disk_full) while the data directory's
    /// filesystem has less free space than this, in MiB; accepted again once it has. The
    /// headroom keeps sled and the write-ahead log from running out mid-write. 0: off (the
    /// log's own allocation is still checked).
    #[arg(long, default_value_t = 256)]
    pub disk_free_min_mb: u64,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub listen: String,
    pub peers: BTreeMap<u64, String>,
    /// A member to learn the cluster from, when this node joins a running cluster.
    pub join: Option<String>,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub ring_vnodes: u32,
    pub cluster_id: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_logs: u64,
    pub log_keep_entries: u64,
    /// `--snapshot-log-mb` in bytes (0: off).
    pub snapshot_log_bytes: u64,
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub inflight_requests_max: usize,
    pub admin_listen: Option<String>,
    pub ready_lag_entries_max: u64,
    pub limits: Limits,
    pub cache_mb: u64,
    pub disk_free_min_mb: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Whether `s` looks like `HOST:PORT` (a port number after the last colon).
pub fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_some()
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad("peers", format!("{part:?} is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("peers", format!("{id:?} is not a node id")))?;
        if id == 0 {
            return Err(bad("peers", "node id 0 is reserved"));
        }
        let addr = addr.trim();
        if !is_host_port(addr) {
            return Err(bad("peers", format!("{addr:?} is not HOST:PORT")));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(bad("peers", format!("node id {id} appears twice")));
        }
    }
    if peers.is_empty() {
        return Err(bad("peers", "no peers given"));
    }
    Ok(peers)
}

impl NodeArgs {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let id = self.id.ok_or_else(|| bad("id", "required"))?;
        if id == 0 {
            return Err(bad("id", "node id 0 is reserved"));
        }
        let listen = self
            .listen
            .clone()
            .ok_or_else(|| bad("listen", "required"))?;
        let peers = match (&self.peers, &self.join) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "join",
                    "give --peers to bootstrap a new cluster or --join to join a running one, not both",
                ));
            }
            (Some(p), None) => parse_peers(p)?,
            (None, Some(j)) => {
                if !is_host_port(j) {
                    return Err(bad("join", format!("{j:?} is not HOST:PORT")));
                }
                BTreeMap::from([(id, listen.clone())])
            }
            (None, None) => {
                return Err(bad(
                    "peers",
                    "required (or --join to join a running cluster)",
                ));
            }
        };
        let data_dir = self
            .data_dir
            .clone()
            .ok_or_else(|| bad("data_dir", "required"))?;
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("listen", format!("{listen:?} is not IP:PORT")));
        }
        if let Some(a) = &self.admin_listen
            && a.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad("admin_listen", format!("{a:?} is not IP:PORT")));
        }
        if !peers.contains_key(&id) {
            return Err(bad("peers", format!("does not name this node's id {id}")));
        }
        if self.shards == 0 || self.shards > 1024 {
            return Err(bad("shards", "must be 1..=1024"));
        }
        if self.ring_vnodes == 0 || self.ring_vnodes > 4096 {
            return Err(bad("ring_vnodes", "must be 1..=4096"));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(bad("cluster_id", "must be 1..=128 bytes"));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms * 3 > self.election_timeout_ms
        {
            return Err(bad(
                "heartbeat_interval_ms",
                format!(
                    "must be positive and at most a third of election_timeout_ms={}",
                    self.election_timeout_ms
                ),
            ));
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > KEY_BYTES_CEILING {
            return Err(bad(
                "key_bytes_max",
                format!("must be 1..={KEY_BYTES_CEILING}"),
            ));
        }
        if self.value_bytes_max > VALUE_BYTES_CEILING {
            return Err(bad(
                "value_bytes_max",
                format!("must be at most {VALUE_BYTES_CEILING} (sled blob limit)"),
            ));
        }
        if self.request_bytes_max < self.key_bytes_max + self.value_bytes_max
            || self.request_bytes_max > REQUEST_BYTES_CEILING
        {
            return Err(bad(
                "request_bytes_max",
                format!("must hold one key and one value and be at most {REQUEST_BYTES_CEILING}"),
            ));
        }
        if self.inflight_requests_max == 0 {
            return Err(bad("inflight_requests_max", "must be positive"));
        }
        if self.write_timeout_ms == 0 || self.read_timeout_ms == 0 {
            return Err(bad("write_timeout_ms", "timeouts must be positive"));
        }
        if self.snapshot_logs < 10 {
            return Err(bad("snapshot_logs", "must be at least 10"));
        }
        if self.snapshot_log_mb > SNAPSHOT_LOG_MB_MAX {
            return Err(bad(
                "snapshot_log_mb",
                format!("must be at most {SNAPSHOT_LOG_MB_MAX} (0: off)"),
            ));
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(bad("log_format", "must be text or json"));
        }
        Ok(Config {
            id,
            listen,
            peers,
            join: self.join.clone(),
            data_dir,
            shards: self.shards,
            ring_vnodes: self.ring_vnodes,
            cluster_id: self.cluster_id.clone(),
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_ms: self.election_timeout_ms,
            snapshot_logs: self.snapshot_logs,
            log_keep_entries: self.log_keep_entries,
            snapshot_log_bytes: self.snapshot_log_mb * 1024 * 1024,
            write_timeout_ms: self.write_timeout_ms,
            read_timeout_ms: self.read_timeout_ms,
            inflight_requests_max: self.inflight_requests_max,
            admin_listen: self.admin_listen.clone(),
            ready_lag_entries_max: self.ready_lag_entries_max,
            limits: Limits {
                key_bytes_max: self.key_bytes_max,
                value_bytes_max: self.value_bytes_max,
                request_bytes_max: self.request_bytes_max,
                scan_limit_max: 10_000,
            },
            cache_mb: self.cache_mb,
            disk_free_min_mb: self.disk_free_min_mb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_garbage() {
        let p =
            parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=h:7003").map_err(|e| e.to_string());
        assert_eq!(p.map(|p| p.len()), Ok(3));
        assert!(parse_peers("1=127.0.0.1").is_err());
        assert!(parse_peers("x=127.0.0.1:1").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("0=a:1").is_err());
        assert!(parse_peers("").is_err());
    }

    fn args(extra: &[&str]) -> NodeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let base = [
            "ringkv-server",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:7001",
            "--peers",
            "1=127.0.0.1:7001",
            "--data-dir",
            "/tmp/unused",
        ];
        let argv = base.iter().chain(extra).copied();
        <Cli as clap::Parser>::try_parse_from(argv)
            .map(|c| c.node)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn snapshot_log_mb_defaults_to_64_mib_and_is_bounded() {
        let bytes = |extra: &[&str]| args(extra).validate().map(|c| c.snapshot_log_bytes);
        assert_eq!(bytes(&[]).ok(), Some(64 * 1024 * 1024));
        assert_eq!(bytes(&["--snapshot-log-mb", "0"]).ok(), Some(0));
        assert_eq!(
            bytes(&["--snapshot-log-mb", "65536"]).ok(),
            Some(65_536 * 1024 * 1024)
        );
        let err = bytes(&["--snapshot-log-mb", "65537"])
            .err()
            .map(|e| e.field);
        assert_eq!(err.as_deref(), Some("snapshot_log_mb"));
    }
}
