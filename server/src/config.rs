//! Node configuration: flags parsed by clap, validated once into a [`Config`] before any port
//! is bound or any file is touched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::typ::{Node, PEER_PORT_OFFSET, derived_peer_addr};

use crate::service::limits::{
    KEY_BYTES_CEILING, Limits, REQUEST_BYTES_CEILING, VALUE_BYTES_CEILING,
};

/// The longest `--queue-time-max-ms` accepted (a wait beyond it is no admission control).
pub const QUEUE_TIME_MAX_MS_CEILING: u64 = 600_000;
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
    /// Address to serve clients on (the `Kv` and `Cluster` gRPC services), IP:PORT.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address to serve Raft traffic between members on (appends, heartbeats, votes,
    /// snapshots), IP:PORT. Default: the `--listen` address with its port plus 1000.
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Every member of a new cluster: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (itself included),
    /// client addresses. A member whose peer listener is not on its client port plus 1000
    /// names it after `@`: `1=HOST:PORT@PEERHOST:PEERPORT`.
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
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout; the maximum (and the leader lease) is 1.5 times this. Short,
    /// because Raft has its own listener and runtime (so client load does not starve
    /// heartbeats): a lost leader is replaced within about two maximum timeouts.
    #[arg(long, default_value_t = 300)]
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
    /// A client request that waited this long for admission is refused (RESOURCE_EXHAUSTED,
    /// kind overloaded, with a retry-after hint); 0: never wait, refuse at once at the limit.
    #[arg(long, default_value_t = 50)]
    pub queue_time_max_ms: u64,
    #[arg(long, default_value_t = 4096)]
    pub key_bytes_max: usize,
    #[arg(long, default_value_t = 65_536)]
    pub value_bytes_max: usize,
    #[arg(long, default_value_t = 1_048_576)]
    pub request_bytes_max: usize,
    /// Compares and ops of one transaction together (`ringkv txn`); more is INVALID_ARGUMENT.
    #[arg(long, default_value_t = 128)]
    pub txn_ops_max: usize,
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
    /// Authenticate clients with this tokens file (TOML `[[token]]` entries: name, sha256 of
    /// the token or cert_name, role admin|readwrite|readonly, optional prefix). Re-read on
    /// SIGHUP. Without it any client may do anything (TLS alone does not yet require a client
    /// identity: give this file too).
    #[arg(long)]
    pub auth_tokens: Option<PathBuf>,
    /// This node's certificate (PEM; the chain may follow). With `--tls-key` and `--tls-ca`,
    /// every port (client, peer, admin) speaks only TLS, and every channel this node dials uses
    /// it as client certificate. Its names must include the host peers and clients dial.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): the only root trusted for peers' and clients' certificates.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// With TLS: the certificate names (SAN DNS, SAN IP or CN) allowed to speak Raft to this
    /// node, comma-separated. Default: the hosts of `--peers` and of every member record.
    #[arg(long)]
    pub peer_allowed_names: Option<String>,
    /// Serve without TLS on a non-loopback address (anyone who reaches the ports can read,
    /// write and speak Raft). Logged as a warning at start and every hour.
    #[arg(long)]
    pub insecure: bool,
}

/// A non-loopback address and no TLS: the one line that says how to fix it.
pub const INSECURE_FIX: &str = "give --tls-cert/--tls-key/--tls-ca (see `ringkv-server certs`), \
     or --insecure to serve in plaintext anyway";

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub listen: String,
    /// Where this node serves Raft (`--peer-listen`, or the derived default).
    pub peer_listen: String,
    /// Every member of a new cluster (incarnations not known yet: 0); a joining node: itself.
    pub peers: BTreeMap<u64, Node>,
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
    pub queue_time_max_ms: u64,
    pub admin_listen: Option<String>,
    pub ready_lag_entries_max: u64,
    pub limits: Limits,
    pub cache_mb: u64,
    pub disk_free_min_mb: u64,
    /// Client authentication (paths only: no secret is ever in the configuration).
    pub auth: crate::auth::AuthSettings,
    /// The loaded TLS files (`Debug` shows their paths only); `None`: plaintext.
    pub tls: Option<std::sync::Arc<crate::tls::config::Tls>>,
    /// `--peer-allowed-names`, when given.
    pub peer_allowed_names: Option<Vec<String>>,
    /// `--insecure`: plaintext on a non-loopback address was asked for.
    pub insecure: bool,
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

/// Why a `--peers` value (or one member's addresses) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error("{0:?} is not ID=HOST:PORT[@PEERHOST:PEERPORT]")]
    NotIdAddr(String),
    #[error("{0:?} is not a node id")]
    BadId(String),
    #[error("node id 0 is reserved")]
    ReservedId,
    #[error("{0:?} is not HOST:PORT")]
    NotHostPort(String),
    #[error("peer address {0:?} is not HOST:PORT")]
    PeerNotHostPort(String),
    /// The client port has no default peer port (it is above 65535 - 1000).
    #[error(
        "{0:?} has no default peer port (port + {PEER_PORT_OFFSET}); name one with @PEERHOST:PEERPORT"
    )]
    NoDerivedPeerPort(String),
    #[error("the peer address of {0:?} is its client address")]
    PeerIsClient(String),
    #[error("node id {0} appears twice")]
    DuplicateId(u64),
    #[error("address {0} appears twice")]
    DuplicateAddr(String),
    #[error("no peers given")]
    Empty,
}

/// A member's record from its client address and its peer address (empty: the default),
/// incarnation not known yet.
pub fn member(addr: &str, peer_addr: &str) -> Result<Node, PeersError> {
    if !is_host_port(addr) {
        return Err(PeersError::NotHostPort(addr.to_string()));
    }
    if peer_addr.is_empty() {
        if derived_peer_addr(addr).is_none() {
            return Err(PeersError::NoDerivedPeerPort(addr.to_string()));
        }
    } else if !is_host_port(peer_addr) {
        return Err(PeersError::PeerNotHostPort(peer_addr.to_string()));
    } else if peer_addr == addr {
        return Err(PeersError::PeerIsClient(addr.to_string()));
    }
    Ok(Node::with_peer_addr(addr, peer_addr, 0))
}

/// Parses `1=HOST:PORT,2=HOST:PORT@PEERHOST:PEERPORT`: every member's client address and,
/// after `@`, its peer address when that is not the default.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, Node>, PeersError> {
    let mut peers: BTreeMap<u64, Node> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) = part
            .split_once('=')
            .ok_or_else(|| PeersError::NotIdAddr(part.to_string()))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| PeersError::BadId(id.to_string()))?;
        if id == 0 {
            return Err(PeersError::ReservedId);
        }
        let (addr, peer_addr) = addrs.split_once('@').unwrap_or((addrs, ""));
        let node = member(addr.trim(), peer_addr.trim())?;
        for other in peers.values() {
            for a in [&node.addr, &node.peer_addr()] {
                if *a == other.addr || *a == other.peer_addr() {
                    return Err(PeersError::DuplicateAddr(a.clone()));
                }
            }
        }
        if peers.insert(id, node).is_some() {
            return Err(PeersError::DuplicateId(id));
        }
    }
    if peers.is_empty() {
        return Err(PeersError::Empty);
    }
    Ok(peers)
}

/// The port of `HOST:PORT`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
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
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("listen", format!("{listen:?} is not IP:PORT")));
        }
        let peer_listen = match &self.peer_listen {
            Some(p) => p.clone(),
            None => derived_peer_addr(&listen).ok_or_else(|| {
                bad(
                    "peer_listen",
                    format!("--listen {listen} has no default (port + {PEER_PORT_OFFSET}); give --peer-listen"),
                )
            })?,
        };
        if peer_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "peer_listen",
                format!("{peer_listen:?} is not IP:PORT"),
            ));
        }
        if port_of(&peer_listen) == port_of(&listen) {
            return Err(bad(
                "peer_listen",
                "must be another port than --listen (Raft is not served on the client port)",
            ));
        }
        let peers = match (&self.peers, &self.join) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "join",
                    "give --peers to bootstrap a new cluster or --join to join a running one, not both",
                ));
            }
            (Some(p), None) => parse_peers(p).map_err(|e| bad("peers", e.to_string()))?,
            (None, Some(j)) => {
                if !is_host_port(j) {
                    return Err(bad("join", format!("{j:?} is not HOST:PORT")));
                }
                BTreeMap::from([(id, Node::with_peer_addr(&listen, &peer_listen, 0))])
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
        if let Some(a) = &self.admin_listen {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad("admin_listen", format!("{a:?} is not IP:PORT")));
            }
            if port_of(a) == port_of(&peer_listen) {
                return Err(bad(
                    "peer_listen",
                    format!("{peer_listen} is also --admin-listen; give another --peer-listen"),
                ));
            }
        }
        let Some(me) = peers.get(&id) else {
            return Err(bad("peers", format!("does not name this node's id {id}")));
        };
        // The others reach this node's Raft at the peer address `--peers` gives it; a listener
        // on another port would leave it deaf to them.
        if port_of(&me.peer_addr()) != port_of(&peer_listen) {
            return Err(bad(
                "peer_listen",
                format!(
                    "--peers gives node {id} the peer address {}, but it listens on {peer_listen} \
                     (name it as {id}={}@HOST:PORT)",
                    me.peer_addr(),
                    me.addr
                ),
            ));
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
        if self.txn_ops_max == 0 || self.txn_ops_max > crate::service::limits::TXN_OPS_CEILING {
            return Err(bad(
                "txn_ops_max",
                format!("must be 1..={}", crate::service::limits::TXN_OPS_CEILING),
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
        if self.queue_time_max_ms > QUEUE_TIME_MAX_MS_CEILING {
            return Err(bad(
                "queue_time_max_ms",
                format!("must be at most {QUEUE_TIME_MAX_MS_CEILING}"),
            ));
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
        // Read at start too, so a bad file stops the start with one line naming it.
        if let Some(path) = &self.auth_tokens {
            crate::auth::Table::load(path).map_err(|e| bad("auth_tokens", e.to_string()))?;
        }
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                let files = crate::tls::config::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                };
                let tls =
                    crate::tls::config::Tls::load(&files).map_err(|e| bad("tls", e.to_string()))?;
                Some(std::sync::Arc::new(tls))
            }
            _ => {
                return Err(bad(
                    "tls",
                    "give all three of --tls-cert, --tls-key and --tls-ca, or none",
                ));
            }
        };
        if tls.is_none() && !self.insecure {
            let exposed = std::iter::once(&listen)
                .chain(std::iter::once(&peer_listen))
                .chain(self.admin_listen.iter())
                .find(|a| !is_loopback(a));
            if let Some(a) = exposed {
                return Err(bad(
                    "tls",
                    format!("{a} is not a loopback address and TLS is off: {INSECURE_FIX}"),
                ));
            }
        }
        let peer_allowed_names = match &self.peer_allowed_names {
            None => None,
            Some(list) => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect();
                if names.is_empty() {
                    return Err(bad("peer_allowed_names", "names no certificate name"));
                }
                if tls.is_none() {
                    return Err(bad(
                        "peer_allowed_names",
                        "needs TLS (--tls-cert/--tls-key/--tls-ca): without it no peer has a name",
                    ));
                }
                Some(names)
            }
        };
        Ok(Config {
            id,
            listen,
            peer_listen,
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
            queue_time_max_ms: self.queue_time_max_ms,
            admin_listen: self.admin_listen.clone(),
            ready_lag_entries_max: self.ready_lag_entries_max,
            limits: Limits {
                key_bytes_max: self.key_bytes_max,
                value_bytes_max: self.value_bytes_max,
                request_bytes_max: self.request_bytes_max,
                scan_limit_max: 10_000,
                txn_ops_max: self.txn_ops_max,
            },
            cache_mb: self.cache_mb,
            disk_free_min_mb: self.disk_free_min_mb,
            auth: crate::auth::AuthSettings {
                tokens_file: self.auth_tokens.clone(),
                // With TLS every client proves who it is, tokens file or not.
                require_identity: tls.is_some(),
            },
            tls,
            peer_allowed_names,
            insecure: self.insecure,
        })
    }
}

/// Test helpers: `ringkv-server`'s node flags parsed from an argument list.
#[cfg(test)]
pub(crate) mod test_args {
    use super::NodeArgs;

    #[derive(clap::Parser)]
    pub(crate) struct Cli {
        #[command(flatten)]
        pub(crate) node: NodeArgs,
    }

    /// A one-node cluster on 127.0.0.1:7001 with its data in /tmp/unused.
    pub(crate) const ONE_NODE: [&str; 8] = [
        "--id",
        "1",
        "--listen",
        "127.0.0.1:7001",
        "--peers",
        "1=127.0.0.1:7001",
        "--data-dir",
        "/tmp/unused",
    ];

    /// [`ONE_NODE`], then `extra`.
    pub(crate) fn one_node(extra: &[&str]) -> NodeArgs {
        parse(ONE_NODE.iter().chain(extra).copied())
    }

    /// `argv` (without the program name), parsed; panics on flags clap refuses.
    pub(crate) fn parse<'a>(argv: impl IntoIterator<Item = &'a str>) -> NodeArgs {
        let argv = std::iter::once("ringkv-server").chain(argv);
        <Cli as clap::Parser>::try_parse_from(argv)
            .map(|c| c.node)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_garbage() {
        let p = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=h:7003");
        assert_eq!(p.map(|p| p.len()), Ok(3));
        assert_eq!(
            parse_peers("1=127.0.0.1"),
            Err(PeersError::NotHostPort("127.0.0.1".into()))
        );
        assert_eq!(
            parse_peers("x=127.0.0.1:1"),
            Err(PeersError::BadId("x".into()))
        );
        assert_eq!(parse_peers("1=a:1,1=b:2"), Err(PeersError::DuplicateId(1)));
        assert_eq!(parse_peers("0=a:1"), Err(PeersError::ReservedId));
        assert_eq!(parse_peers(""), Err(PeersError::Empty));
        assert_eq!(parse_peers("1"), Err(PeersError::NotIdAddr("1".into())));
    }

    #[test]
    fn peers_take_an_optional_peer_address() {
        let p = parse_peers("1=h:7001,2=h:7002@h:7102, 3=h:7003@h:8003").expect("valid");
        assert_eq!(p[&1].peer_addr, "", "derived");
        assert_eq!(p[&1].peer_addr(), "h:8001");
        assert_eq!(p[&2].peer_addr(), "h:7102");
        // Naming the default is the same as leaving it out.
        assert_eq!(p[&3], Node::new("h:7003", 0));
        assert_eq!(
            parse_peers("1=h:7001@h"),
            Err(PeersError::PeerNotHostPort("h".into()))
        );
        assert_eq!(
            parse_peers("1=h:7001@h:7001"),
            Err(PeersError::PeerIsClient("h:7001".into()))
        );
        assert_eq!(
            parse_peers("1=h:65000"),
            Err(PeersError::NoDerivedPeerPort("h:65000".into()))
        );
        assert!(parse_peers("1=h:65000@h:7101").is_ok());
        // One member's peer port is another's client port.
        assert_eq!(
            parse_peers("1=h:7001@h:7002,2=h:7002"),
            Err(PeersError::DuplicateAddr("h:7002".into()))
        );
        assert_eq!(
            parse_peers("1=h:7001,2=h:8001"),
            Err(PeersError::DuplicateAddr("h:8001".into()))
        );
    }

    fn args(listen: &str, peer_listen: Option<&str>, peers: &str) -> NodeArgs {
        let mut argv = vec![
            "--id",
            "1",
            "--data-dir",
            "/d",
            "--listen",
            listen,
            "--insecure",
        ];
        argv.extend(["--peers", peers]);
        if let Some(p) = peer_listen {
            argv.extend(["--peer-listen", p]);
        }
        test_args::parse(argv)
    }

    #[test]
    fn the_peer_listener_defaults_to_the_client_port_plus_1000() {
        let cfg = args("127.0.0.1:7001", None, "1=127.0.0.1:7001").validate();
        assert_eq!(
            cfg.map(|c| c.peer_listen).map_err(|e| e.to_string()),
            Ok("127.0.0.1:8001".to_string())
        );
        let cfg = args("0.0.0.0:7001", Some("0.0.0.0:7101"), "1=h:7001@h:7101").validate();
        assert_eq!(
            cfg.map(|c| c.peer_listen).map_err(|e| e.to_string()),
            Ok("0.0.0.0:7101".to_string())
        );
    }

    #[test]
    fn a_peer_listener_the_peers_do_not_name_is_refused() {
        let field = |a: NodeArgs| a.validate().err().map(|e| e.field);
        // Listening on 7101 while the others would dial the default 8001.
        let a = args("127.0.0.1:7001", Some("127.0.0.1:7101"), "1=127.0.0.1:7001");
        assert_eq!(field(a).as_deref(), Some("peer_listen"));
        let a = args(
            "127.0.0.1:7001",
            Some("127.0.0.1:7001"),
            "1=127.0.0.1:7001@h:7001",
        );
        assert_eq!(field(a).as_deref(), Some("peer_listen"));
        let a = args("127.0.0.1:7001", Some("nohost"), "1=127.0.0.1:7001");
        assert_eq!(field(a).as_deref(), Some("peer_listen"));
        let a = args("127.0.0.1:65000", None, "1=127.0.0.1:65000@h:7101");
        assert_eq!(field(a).as_deref(), Some("peer_listen"));
    }
}

#[cfg(test)]
mod tls_tests {
    use super::test_args::{one_node, parse};

    #[test]
    fn a_non_loopback_listener_without_tls_is_refused_unless_insecure() {
        let base = [
            "--id",
            "1",
            "--peers",
            "1=10.0.0.1:7001",
            "--data-dir",
            "/d",
        ];
        let on = |listen: &str, extra: &[&str]| {
            let mut argv: Vec<&str> = base.to_vec();
            argv.extend(["--listen", listen]);
            argv.extend(extra);
            parse(argv).validate()
        };
        let e = on("0.0.0.0:7001", &[]).expect_err("refused");
        assert_eq!(e.field, "tls");
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(on("0.0.0.0:7001", &["--insecure"]).is_ok());
        // The admin listener counts too.
        let e = one_node(&["--admin-listen", "0.0.0.0:9001"]).validate();
        assert_eq!(e.err().map(|e| e.field).as_deref(), Some("tls"));
        assert!(one_node(&[]).validate().is_ok());
    }

    #[test]
    fn tls_needs_all_three_files() {
        let e = one_node(&["--tls-cert", "/c.pem"]).validate();
        assert_eq!(e.err().map(|e| e.field).as_deref(), Some("tls"));
        let e = one_node(&[
            "--tls-cert",
            "/c",
            "--tls-key",
            "/k",
            "--tls-ca",
            "/nonexistent-ca",
        ])
        .validate()
        .expect_err("unreadable");
        assert!(e.to_string().contains("/c"), "{e}");
        let e = one_node(&["--peer-allowed-names", "a,b"]).validate();
        assert_eq!(
            e.err().map(|e| e.field).as_deref(),
            Some("peer_allowed_names")
        );
    }
}

#[cfg(test)]
mod queue_time_tests {
    use clap::{CommandFactory, Parser};

    use super::test_args::{Cli, ONE_NODE, one_node};
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        one_node(extra).validate()
    }

    #[test]
    fn queue_time_max_ms_defaults_to_50_and_is_bounded() {
        assert_eq!(parse(&[]).map(|c| c.queue_time_max_ms).ok(), Some(50));
        assert_eq!(
            parse(&["--queue-time-max-ms", "0"])
                .map(|c| c.queue_time_max_ms)
                .ok(),
            Some(0)
        );
        let over = (QUEUE_TIME_MAX_MS_CEILING + 1).to_string();
        let e = parse(&["--queue-time-max-ms", &over])
            .err()
            .map(|e| e.field);
        assert_eq!(e.as_deref(), Some("queue_time_max_ms"));
    }

    #[test]
    fn queue_time_max_ms_comes_from_a_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "queue_time_max_ms = 20\n").expect("write");
        let mut argv: Vec<std::ffi::OsString> = vec!["ringkv-server".into()];
        argv.extend(ONE_NODE.iter().map(Into::into));
        argv.extend(["--config".into(), file.clone().into_os_string()]);
        let expanded = crate::config_file::expand(&Cli::command(), argv).expect("expand");
        let cli = Cli::try_parse_from(expanded).expect("parse");
        assert_eq!(
            cli.node.validate().map(|c| c.queue_time_max_ms).ok(),
            Some(20)
        );
    }

    #[test]
    fn snapshot_log_mb_defaults_to_64_mib_and_is_bounded() {
        let bytes = |extra: &[&str]| one_node(extra).validate().map(|c| c.snapshot_log_bytes);
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
