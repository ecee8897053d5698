//! A RingKV node: wires storage, shards, transport and services, and owns shutdown.
//!
//! Start-up order: check the data directory's identity, open the write-ahead log, sled and its
//! flush coordinator,
//! build one Raft replica per shard, serve Raft on the already-bound peer listener (its own
//! runtime, see `network::peer_server`) and clients on the already-bound client listener, then
//! (on the node with the lowest id of a new cluster) initialize every shard with all peers as
//! voters.
//! Shutdown: stop admitting requests, hand off leadership, drain client requests, stop the
//! client gRPC server, then the peer server (last: in-flight writes complete only through
//! Raft), then every Raft group; sync the write-ahead log and sled, return.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use openraft::{ServerState, SnapshotPolicy};
use ringkv_proto::pb::cluster_server::ClusterServer;
use ringkv_proto::pb::kv_server::KvServer;
use ringkv_proto::ring::Ring;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tonic::service::interceptor::InterceptedService;

use crate::admin::{self, AdminState};
use crate::auth::Auth;
use crate::balancer;
use crate::cluster_uuid::ClusterUuid;
use crate::config::Config;
use crate::identity;
use crate::metrics::Metrics;
use crate::network::client::{NetContext, NetworkFactory};
use crate::network::peer_server;
use crate::network::pool::ChannelPool;
use crate::network::server::{RaftService, VoterCheck};
use crate::raft_runtime::RaftRuntime;
use crate::router::Router;
use crate::service::admission::{Admission, Settings as AdmissionSettings};
use crate::service::cluster::ClusterService;
use crate::service::kv::KvService;
use crate::shard::log_store::LogStore;
use crate::shard::state_machine::StateMachine;
use crate::shard::{Shard, Shards};
use crate::storage::flush::FlushCoordinator;
use crate::storage::health::StorageHealth;
use crate::storage::space::DiskSpace;
use crate::storage::wal::Wal;
use crate::tls::peers::PeerCheck;
use crate::typ::{Node, Raft};

/// gRPC messages (Raft appends, forwarded scans) are capped at this.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// How long shutdown waits for leadership hand-off.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown lets in-flight client requests finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn raft_config(cfg: &Config) -> anyhow::Result<Arc<openraft::Config>> {
    let c = openraft::Config {
        cluster_name: cfg.cluster_id.clone(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_ms,
        election_timeout_max: election_timeout_max_ms(cfg),
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.log_keep_entries,
        purge_batch_size: 256,
        max_payload_entries: 512,
        enable_pre_vote: Some(true),
        // Replicate entries as soon as they are written locally, in parallel with the leader's
        // own flush, instead of on the core loop's next pass (single-client write latency).
        broadcast_submitted_on_append: Some(true),
        // A follower that acknowledged an append within one heartbeat interval needs no
        // heartbeat: under write load this removes most heartbeat RPCs.
        heartbeat_min_interval: Some(cfg.heartbeat_interval_ms),
        // A restarted leader must win an election (and commit a blank entry of its new term)
        // before it serves reads: the state machine and the committed index are not synced on
        // every apply, so a leader that resumed its old term could answer a linearizable read
        // before re-applying writes it had acknowledged (a lost write to the reader).
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    Ok(Arc::new(c.validate().context("raft configuration")?))
}

async fn open_shards(
    cfg: &Config,
    db: &sled::Db,
    flush: &FlushCoordinator,
    wal: &Wal,
    ctx: &Arc<NetContext>,
    raft_runtime: &RaftRuntime,
) -> anyhow::Result<Shards> {
    let raft_cfg = raft_config(cfg)?;
    let mut shards = Vec::with_capacity(cfg.shards as usize);
    for id in 0..cfg.shards {
        let log = LogStore::open(wal, id)?;
        let sm = StateMachine::open(
            db,
            id,
            cfg.data_dir.join("snap").join(id.to_string()),
            flush.clone(),
        )?;
        let net = NetworkFactory {
            ctx: ctx.clone(),
            shard: id,
        };
        let (node_id, raft_cfg, state) = (cfg.id, raft_cfg.clone(), sm.clone());
        // On the Raft runtime, so the core, replication and storage tasks it spawns never
        // queue behind client requests.
        let raft = raft_runtime
            .start_shard(async move {
                Raft::new(node_id, raft_cfg, net, log, state)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await
            .with_context(|| format!("starting shard {id}"))?;
        shards.push(Shard {
            id,
            raft,
            sm,
            leader_contact: Arc::default(),
            clock: Arc::default(),
        });
    }
    Ok(Arc::new(shards))
}

/// Data directories written before the write-ahead log kept each shard's Raft log (and vote)
/// in sled trees `log/<shard>`; starting on one would silently drop the votes, so refuse.
fn refuse_sled_log_layout(db: &sled::Db) -> anyhow::Result<()> {
    if db.tree_names().iter().any(|n| n.starts_with(b"log/")) {
        anyhow::bail!(
            "this data directory keeps its Raft log in sled (a layout before the write-ahead log); \
             start this node from an empty directory (it catches up from the others) or restore it from a backup"
        );
    }
    Ok(())
}

/// The maximum election timeout, which openraft also uses as the leader lease: 1.5 times the
/// minimum. With pre-vote a follower wins only once the other voters' leases have run out, so
/// after a leader is lost the first successful election starts between one and two maximum
/// timeouts after its last heartbeat; a narrower range (2× before) keeps that under a second.
pub fn election_timeout_max_ms(cfg: &Config) -> u64 {
    cfg.election_timeout_ms + cfg.election_timeout_ms / 2
}

/// Deadline of one append (or heartbeat) RPC: half the minimum election timeout.
///
/// openraft hands the transport its heartbeat interval (150 ms by default) as the deadline of
/// every append. A follower busy with client work answers later than that while still well
/// within its election timeout; cutting the call at the heartbeat interval then turns a slow
/// but healthy follower into a broken stream, a reconnect and a resend (issue 18). Half the
/// election timeout leaves room for one more attempt before followers start an election.
pub fn append_timeout(cfg: &Config) -> Duration {
    Duration::from_millis((cfg.election_timeout_ms / 2).max(cfg.heartbeat_interval_ms))
}

/// How often `--insecure` is repeated in the log.
const INSECURE_WARNING_INTERVAL: Duration = Duration::from_secs(3600);

/// `--insecure`: a warning now and every [`INSECURE_WARNING_INTERVAL`] (aborted at shutdown).
async fn warn_insecure(cfg: Config) {
    let mut every = tokio::time::interval(INSECURE_WARNING_INTERVAL);
    loop {
        every.tick().await;
        tracing::warn!(listen = %cfg.listen, peer_listen = %cfg.peer_listen,
            admin_listen = ?cfg.admin_listen,
            "--insecure: serving without TLS; anyone who reaches these ports can read and write \
             every key and speak Raft as a peer");
    }
}

/// Runs a node until `shutdown` resolves, then shuts it down gracefully. `listener` is the
/// client listener (`--listen`), `peer_listener` the peer listener (`--peer-listen`).
pub async fn run(
    mut cfg: Config,
    listener: TcpListener,
    peer_listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let admin_listener = match &cfg.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on admin address {addr}"))?,
        ),
        None => None,
    };
    crate::join::discover(&mut cfg).await?;
    let opened = identity::check_or_create(&cfg.data_dir, &cfg)?;
    let fresh = opened.fresh;
    let cluster_uuid = Arc::new(ClusterUuid::new(&cfg.data_dir, &opened.cluster_uuid));
    tracing::info!(node = cfg.id, cluster = %cfg.cluster_id, listen = %cfg.listen,
        peer_listen = %cfg.peer_listen, shards = cfg.shards,
        data_dir = %cfg.data_dir.display(), fresh, incarnation = %format!("{:016x}", opened.incarnation),
        "starting node");
    if fresh && cfg.join.is_none() {
        tracing::info!(
            "new data directory: if this node id was a member before (a lost or replaced disk), \
            it does not vote until the cluster has re-admitted it after it caught up"
        );
    }
    tracing::info!(config = ?cfg, "effective configuration");
    let insecure_warning = cfg
        .insecure
        .then(|| tokio::spawn(warn_insecure(cfg.clone())));
    let db_dir = cfg.data_dir.join("db");
    let db = crate::storage::sled_files::config(&db_dir)
        .with_context(|| format!("reading sled's configuration at {}", db_dir.display()))?
        .cache_capacity(cfg.cache_mb * 1024 * 1024)
        .flush_every_ms(Some(500))
        .open()
        .with_context(|| format!("opening sled at {}", db_dir.display()))?;
    crate::storage::sled_files::sync_conf(&db_dir)
        .with_context(|| format!("syncing sled's configuration at {}", db_dir.display()))?;
    refuse_sled_log_layout(&db)?;
    let health = StorageHealth::default();
    let flush = FlushCoordinator::start(db.clone(), &db_dir, &health)?;
    // What sled read back may be only in the page cache (a crash before its sync): make it
    // durable before the shards act on it. Otherwise a power cut could take back an applied
    // index after the log was purged up to it at start-up, leaving a gap nobody re-applies.
    flush
        .flush()
        .await
        .with_context(|| format!("syncing sled at {}", db_dir.display()))?;
    let wal_dir = cfg.data_dir.join("wal");
    let wal = Wal::open(&wal_dir, &health)
        .with_context(|| format!("opening the write-ahead log at {}", wal_dir.display()))?;
    let space = DiskSpace::new(
        cfg.id,
        &cfg.data_dir,
        cfg.disk_free_min_mb * 1024 * 1024,
        &health,
    );
    space.sample();
    let pool = Arc::new(ChannelPool::new(CONNECT_TIMEOUT_MS, cfg.tls.clone()));
    let features = Arc::new(crate::features::PeerFeatures::default());
    let ctx = Arc::new(NetContext {
        features: features.clone(),
        cluster_id: cfg.cluster_id.clone(),
        cluster_uuid: cluster_uuid.clone(),
        self_id: cfg.id,
        pool: ChannelPool::new(CONNECT_TIMEOUT_MS, cfg.tls.clone()),
        message_bytes_max: MESSAGE_BYTES_MAX,
        peers: Default::default(),
        append_timeout: append_timeout(&cfg),
    });
    // Declared before the shards so it is dropped after them (and after their shutdown).
    let raft_runtime = RaftRuntime::new().context("starting the runtime of openraft's tasks")?;
    let shards = open_shards(&cfg, &db, &flush, &wal, &ctx, &raft_runtime).await?;
    // Every directory the first start created (db/, wal/, snap/<shard>/) must survive a power
    // cut along with ringkv.json.
    crate::storage::dirs::sync_tree(&cfg.data_dir, 2)
        .with_context(|| format!("syncing the directories of {}", cfg.data_dir.display()))?;
    let router = Arc::new(Router {
        self_id: cfg.id,
        ring: Ring::new(cfg.shards, cfg.ring_vnodes),
        shards: shards.clone(),
        pool,
        message_bytes_max: MESSAGE_BYTES_MAX,
    });
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    for shard in shards.iter() {
        shard.sm.observe(metrics.state_machine_observers());
    }
    wal.observe(metrics.flush_observers());
    let admission = Admission::new(
        AdmissionSettings::new(
            cfg.inflight_requests_max,
            Duration::from_millis(cfg.queue_time_max_ms),
        ),
        Some(metrics.admission_observers()),
    );
    let shutting_down = Arc::new(AtomicBool::new(false));
    // With TLS: who is a node of this cluster (Raft calls, and forwarded client requests that
    // name the client they carry).
    let peer_check = cfg.tls.as_ref().map(|_| {
        Arc::new(PeerCheck::new(
            cfg.peer_allowed_names.as_deref(),
            cfg.peers.values(),
            shards.clone(),
        ))
    });
    let is_peer: crate::auth::PeerCheck = match &peer_check {
        Some(p) => {
            let p = p.clone();
            Arc::new(move |names: &[String]| p.allows_any(names))
        }
        None => crate::auth::no_peers(),
    };
    let auth = Arc::new(Auth::new(&cfg.auth, is_peer).context("loading the auth tokens file")?);
    if auth.enabled() {
        tracing::info!(
            identities = auth.tokens().current().len(),
            "client authentication on"
        );
    }
    spawn_tokens_reload(auth.clone());
    let kv = KvService {
        cluster_id: cfg.cluster_id.clone(),
        router: router.clone(),
        limits: cfg.limits,
        write_timeout: Duration::from_millis(cfg.write_timeout_ms),
        read_timeout: Duration::from_millis(cfg.read_timeout_ms),
        admission: admission.clone(),
        shutting_down: shutting_down.clone(),
        metrics: metrics.clone(),
        space: space.clone(),
        features,
    };
    let cluster = Arc::new(ClusterService {
        cluster_id: cfg.cluster_id.clone(),
        router: router.clone(),
        peers: cfg.peers.clone(),
        incarnation: opened.incarnation,
        cluster_uuid: cluster_uuid.clone(),
        space: space.clone(),
    });
    let cancel = CancellationToken::new();
    // The peer server has its own token: it stops after the client server (see below).
    let peer_cancel = CancellationToken::new();
    let raft_rpc = RaftService {
        cluster_id: cfg.cluster_id.clone(),
        cluster_uuid: cluster_uuid.clone(),
        self_id: cfg.id,
        voter: VoterCheck {
            incarnation: opened.incarnation,
            accepts_unrecorded: opened.accepts_unrecorded,
        },
        shards: shards.clone(),
        shutdown: peer_cancel.clone(),
        appends: metrics.raft_appends.clone(),
        peer_check,
    };
    let peer_server = peer_server::start(
        peer_listener,
        raft_rpc,
        peer_cancel,
        cfg.shards,
        MESSAGE_BYTES_MAX,
        cfg.tls.as_ref().map(|t| t.peer_port()),
    )
    .context("starting the peer server")?;

    let server_cancel = cancel.clone();
    let incoming = crate::network::accept_nodelay(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &cfg.tls {
        builder = builder
            .tls_config(tls.client_port())
            .context("the client listener's TLS configuration")?;
    }
    let server = tokio::spawn(
        builder
            .tcp_nodelay(true)
            .add_service(InterceptedService::new(
                KvServer::new(kv).max_decoding_message_size(MESSAGE_BYTES_MAX),
                auth.interceptor(),
            ))
            .add_service(InterceptedService::new(
                ClusterServer::from_arc(cluster.clone()),
                auth.interceptor(),
            ))
            .serve_with_incoming_shutdown(incoming, async move { server_cancel.cancelled().await }),
    );

    let admin = match admin_listener {
        Some(listener) => {
            let state = Arc::new(AdminState {
                metrics: metrics.clone(),
                shards: shards.clone(),
                db: db.clone(),
                cluster,
                storage: health.clone(),
                wal: wal.clone(),
                space: space.clone(),
                // Longer than an election, so followers of a shard whose leader vanished stay
                // ready while a new one is chosen. With pre-vote, a follower only starts an
                // election once its own lease has run out and a peer's has too, so re-election
                // after a frozen leader takes one to two maximum election timeouts (about
                // 0.5–0.9 s at the default 300 ms).
                contact_window: Duration::from_millis(cfg.election_timeout_ms * 5),
                ready_lag_entries_max: cfg.ready_lag_entries_max,
            });
            let tls = cfg.tls.as_ref().map(|t| t.admin());
            Some(tokio::spawn(admin::serve(
                listener,
                state,
                tls,
                cancel.clone(),
            )))
        }
        None => None,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // A new cluster's first node waits for its peers here; a stop request still ends it.
    let stopped_early = tokio::select! {
        r = bootstrap(&cfg, &shards, &router.pool, opened.incarnation, &cluster_uuid) => {
            r?;
            false
        }
        () = &mut shutdown => true,
    };
    let balancer = tokio::spawn(balancer::run(cfg.id, shards.clone(), cancel.clone()));
    let readmit = tokio::spawn(crate::readmit::run(
        cfg.id,
        cfg.cluster_id.clone(),
        opened.incarnation,
        shards.clone(),
        router.pool.clone(),
        space.clone(),
        cancel.clone(),
    ));
    let compaction = crate::shard::compaction::Policy::from_snapshot_log_bytes(
        cfg.snapshot_log_bytes,
    )
    .map(|policy| {
        tokio::spawn(crate::shard::compaction::run(
            shards.clone(),
            wal.clone(),
            policy,
            metrics.compaction_observers(),
            cancel.clone(),
        ))
    });
    let space_sampler = tokio::spawn(space.clone().run(cancel.clone()));
    let expirer = tokio::spawn(crate::shard::expirer::run(
        cfg.id,
        shards.clone(),
        metrics.ttl_expiry_lateness_seconds.clone(),
        cancel.clone(),
    ));
    let leadership_log = tokio::spawn(crate::lifecycle::log_leadership(
        cfg.id,
        shards.clone(),
        cancel.clone(),
    ));

    if !stopped_early {
        tokio::select! {
            () = &mut shutdown => {}
            () = health.failed() => {}
        }
    }
    if let Some(reason) = health.failure() {
        // Fail-stop: no hand-off, drain or final sync (storage can no longer be trusted, and
        // each of them would wait on it); replay at the next start decides what is durable.
        shutting_down.store(true, Ordering::Relaxed);
        cancel.cancel();
        server.abort();
        peer_server.abort();
        return Err(crate::storage::health::StorageFailed(reason.to_string()).into());
    }
    tracing::info!(node = cfg.id, "shutdown requested");
    shutting_down.store(true, Ordering::Relaxed);
    hand_off_leadership(cfg.id, &shards).await;
    // Drain client requests while Raft traffic is still served: a write proposed here before
    // the hand-off completes only when the new leader tells this node it committed, so the
    // peer server must stay up until in-flight requests are done (it stops last, below).
    drain(&admission).await;
    cancel.cancel();
    let _ = balancer.await;
    let _ = readmit.await;
    let _ = space_sampler.await;
    let _ = expirer.await;
    if let Some(compaction) = compaction {
        let _ = compaction.await;
    }
    let _ = leadership_log.await;
    if let Some(w) = insecure_warning {
        w.abort();
    }
    if let Some(admin) = admin {
        match admin.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "admin endpoint ended with an error"),
            Err(e) => tracing::warn!(error = %e, "admin endpoint task failed"),
            Ok(Ok(())) => {}
        }
    }
    // Requests still in flight after the drain are cut (their clients see the connection
    // drop: a read is retried, a write is reported outcome-unknown and retried under the same
    // (client_id, sequence), so it still applies at most once).
    let abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_millis(500), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
        Ok(Err(e)) if !e.is_cancelled() => tracing::warn!(error = %e, "gRPC server task failed"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("gRPC connections did not close in time; cutting them");
            abort.abort();
        }
    }
    peer_server.stop().await;
    for shard in shards.iter() {
        if let Err(e) = shard.raft.shutdown().await {
            tracing::warn!(shard = shard.id, error = %e, "raft shutdown failed");
            continue;
        }
        // Not needed for safety (a restart re-applies from the log), only for a quicker one.
        if let Err(e) = shard.sm.drain_buffer().await {
            tracing::warn!(shard = shard.id, error = %e, "writing buffered state failed");
        }
    }
    wal.flush().await.context("final write-ahead log sync")?;
    flush.flush().await.context("final flush")?;
    tracing::info!(node = cfg.id, "node stopped");
    Ok(())
}

/// Waits (at most [`DRAIN_TIMEOUT`]) until no client request is in flight: every admission
/// permit is back.
async fn drain(admission: &Admission) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while admission.in_flight() > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                in_flight = admission.in_flight(),
                drain_ms = DRAIN_TIMEOUT.as_millis() as u64,
                "client requests still in flight at the drain deadline"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// On a new cluster, the node with the lowest id initializes every shard with all peers as
/// voters, each recorded with its data directory's incarnation (so it has to wait until every
/// peer has answered). If a peer already knows a membership, the cluster exists and this node
/// lost its data: it initializes nothing, and is re-admitted once it has caught up. A joining
/// node never initializes anything: a member adds it.
async fn bootstrap(
    cfg: &Config,
    shards: &Shards,
    pool: &ChannelPool,
    incarnation: u64,
    cluster_uuid: &ClusterUuid,
) -> anyhow::Result<()> {
    let first = cfg.peers.keys().next().copied();
    if cfg.join.is_some() || first != Some(cfg.id) {
        return Ok(());
    }
    let mut uninitialized = Vec::new();
    for shard in shards.iter() {
        if !shard.raft.is_initialized().await? {
            uninitialized.push(shard);
        }
    }
    if uninitialized.is_empty() {
        return Ok(());
    }
    let Some(members) = bootstrap_members(cfg, pool, incarnation).await? else {
        tracing::warn!(
            "a peer already belongs to an initialized cluster: this node lost its data \
            and rejoins (it does not vote until re-admitted)"
        );
        return Ok(());
    };
    // A new cluster: choose its UUID, durably, before any shard exists to carry it (a restart
    // after a crash here keeps the one recorded).
    if cluster_uuid.get().is_empty() {
        cluster_uuid
            .record(&crate::cluster_uuid::generate())
            .context("recording the new cluster's UUID")?;
    }
    for shard in uninitialized {
        shard
            .raft
            .initialize(members.clone())
            .await
            .with_context(|| format!("initializing shard {}", shard.id))?;
        tracing::info!(shard = shard.id, members = ?members.keys().collect::<Vec<_>>(), "shard initialized");
    }
    Ok(())
}

/// Every peer's record for a new cluster: asks each peer (until all have answered) for its
/// data directory's incarnation. `None` when a peer already has a membership.
async fn bootstrap_members(
    cfg: &Config,
    pool: &ChannelPool,
    incarnation: u64,
) -> anyhow::Result<Option<BTreeMap<u64, Node>>> {
    let own_peer_addr = cfg
        .peers
        .get(&cfg.id)
        .map_or_else(|| cfg.peer_listen.clone(), Node::peer_addr);
    let mut members = BTreeMap::from([(
        cfg.id,
        Node::with_peer_addr(&cfg.listen, &own_peer_addr, incarnation),
    )]);
    let mut waited = tokio::time::Instant::now();
    while members.len() < cfg.peers.len() {
        for (id, peer) in &cfg.peers {
            if members.contains_key(id) {
                continue;
            }
            match peer_state(pool, &cfg.cluster_id, *id, &peer.addr).await {
                Some(PeerState::Member) => return Ok(None),
                Some(PeerState::New(i)) => {
                    members.insert(*id, peer.with_incarnation(i));
                }
                None => {}
            }
        }
        if members.len() < cfg.peers.len() {
            if waited.elapsed() > Duration::from_secs(5) {
                let missing: Vec<_> = cfg
                    .peers
                    .keys()
                    .filter(|id| !members.contains_key(id))
                    .collect();
                tracing::info!(
                    ?missing,
                    "bootstrapping a new cluster: waiting for every peer to answer"
                );
                waited = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(Some(members))
}

enum PeerState {
    /// A node of a new cluster, with its incarnation.
    New(u64),
    /// A node that already knows a membership.
    Member,
}

async fn peer_state(
    pool: &ChannelPool,
    cluster_id: &str,
    id: u64,
    addr: &str,
) -> Option<PeerState> {
    let status = crate::readmit::peer_status(pool, cluster_id, id, addr).await?;
    if status.shards.iter().any(|s| !s.voters.is_empty()) {
        return Some(PeerState::Member);
    }
    Some(PeerState::New(status.incarnation))
}

/// Moves leadership of every shard this node leads to another voter, waiting a bounded time.
async fn hand_off_leadership(self_id: u64, shards: &Shards) {
    let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
    let mut handing_off = Vec::new();
    for shard in shards.iter() {
        let m = shard.metrics();
        if m.state != ServerState::Leader {
            continue;
        }
        let target = m
            .replication
            .as_ref()
            .and_then(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self_id)
                    .max_by_key(|(_, l)| l.as_ref().map(|l| l.index()))
            })
            .map(|(id, _)| *id);
        if let Some(to) = target
            && shard.raft.trigger().transfer_leader(to).await.is_ok()
        {
            handing_off.push(shard);
        }
    }
    // Only shards with another voter to take over are waited for.
    for shard in handing_off {
        while shard.metrics().state == ServerState::Leader && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Re-reads the auth tokens file on every SIGHUP (see [`Auth::reload_and_log`]).
fn spawn_tokens_reload(auth: Arc<Auth>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    auth.reload_and_log();
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: the auth tokens file is not reloaded")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(heartbeat_interval_ms: u64, election_timeout_ms: u64) -> Config {
        let (hb, et) = (
            heartbeat_interval_ms.to_string(),
            election_timeout_ms.to_string(),
        );
        crate::config::test_args::one_node(&[
            "--heartbeat-interval-ms",
            &hb,
            "--election-timeout-ms",
            &et,
        ])
        .validate()
        .expect("valid")
    }

    /// An append may take half an election timeout, not just one heartbeat interval.
    #[test]
    fn the_append_deadline_is_half_the_election_timeout() {
        assert_eq!(
            append_timeout(&config(150, 1000)),
            Duration::from_millis(500)
        );
        assert_eq!(
            append_timeout(&config(100, 300)),
            Duration::from_millis(150)
        );
        assert!(append_timeout(&config(150, 1000)) > Duration::from_millis(150));
    }
}
