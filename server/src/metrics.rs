//! Every metric the server exports, defined in this one module, in Prometheus form.
//!
//! Request metrics are recorded as requests finish; per-shard and process gauges are refreshed
//! from openraft's metrics and sled when `/metrics` is scraped, so they cost nothing between
//! scrapes. Labels have bounded cardinality: `op` is one of five names, `code` one of gRPC's
//! codes, `shard` one of `--shards`, `transport` one of two, `class` one of four and `reason`
//! one of four.

use std::time::Instant;

use openraft::ServerState;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tonic::{Response, Status};

use crate::shard::Shards;

/// Latency buckets in seconds: 100 µs .. 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The node-wide storage the metrics read.
pub struct StorageView<'a> {
    pub wal: &'a crate::storage::wal::Wal,
    pub health: &'a crate::storage::health::StorageHealth,
    pub space: &'a crate::storage::space::DiskSpace,
}

/// The node's metrics registry and handles.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    proposal_seconds: Histogram,
    read_barrier_seconds: Histogram,
    apply_batch_seconds: Histogram,
    buffer_flush_seconds: Histogram,
    snapshot_build_seconds: Histogram,
    /// How long after its deadline (cluster time) each expired key's removal committed.
    pub ttl_expiry_lateness_seconds: Histogram,
    flush_seconds: Histogram,
    waiters_per_flush: Histogram,
    pub batch_items: Histogram,
    pub forwarded: IntCounterVec,
    pub raft_appends: IntCounterVec,
    pub inflight: IntGauge,
    requests_admitted: IntCounterVec,
    requests_rejected: IntCounterVec,
    admission_queue_seconds: Histogram,
    admission_limit: IntGauge,
    shard_is_leader: IntGaugeVec,
    shard_term: IntGaugeVec,
    shard_leader_id: IntGaugeVec,
    shard_last_log_index: IntGaugeVec,
    shard_committed_index: IntGaugeVec,
    shard_applied_index: IntGaugeVec,
    shard_apply_lag: IntGaugeVec,
    shard_snapshot_index: IntGaugeVec,
    shard_purged_index: IntGaugeVec,
    shard_log_entries: IntGaugeVec,
    shard_snapshots_built: IntGaugeVec,
    shard_snapshots_installed: IntGaugeVec,
    sled_disk_bytes: IntGauge,
    wal_bytes: IntGauge,
    wal_segments: IntGauge,
    wal_rewrites: IntGauge,
    shard_wal_segments_pinned: IntGaugeVec,
    shard_log_bytes: IntGaugeVec,
    snapshots_triggered_by_bytes: IntCounterVec,
    log_purges_triggered_by_bytes: IntCounterVec,
    storage_failed: IntGauge,
    disk_full: IntGauge,
    disk_free_bytes: IntGauge,
    disk_full_refusals: IntCounter,
    process_resident_bytes: IntGauge,
    scrapes: IntCounter,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn shard_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &["shard"])?,
    )
}

fn latency(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec())
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        Ok(Metrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_requests_total",
                        "Client requests by operation and gRPC code.",
                    ),
                    &["op", "code"],
                )?,
            )?,
            request_seconds: register(
                &r,
                HistogramVec::new(
                    latency(
                        "ringkv_request_duration_seconds",
                        "Client request latency, forwarding included.",
                    ),
                    &["op"],
                )?,
            )?,
            proposal_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_proposal_duration_seconds",
                    "From proposing a write on the leader to its applied result (majority fsync + apply).",
                ))?,
            )?,
            apply_batch_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_apply_batch_duration_seconds",
                    "Time to apply one batch of committed entries to a shard's state machine (execute into its write buffer).",
                ))?,
            )?,
            buffer_flush_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_state_machine_flush_duration_seconds",
                    "Time to write one frozen layer of a shard's write buffer to sled (in the background; apply waits only if the next layer fills first).",
                ))?,
            )?,
            snapshot_build_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_snapshot_build_duration_seconds",
                    "Time to dump a shard's state into a snapshot file (apply goes on meanwhile).",
                ))?,
            )?,
            ttl_expiry_lateness_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_ttl_expiry_lateness_seconds",
                    "Cluster time from a key's TTL deadline to the commit of the expiry entry that removed it (this node as leader). Reads show the key absent from the deadline on; this is when its space is reclaimed.",
                ))?,
            )?,
            flush_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_storage_flush_duration_seconds",
                    "One group commit: sled flush plus sync_data of its log file, covering every shard's appends and votes queued meanwhile.",
                ))?,
            )?,
            waiters_per_flush: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ringkv_storage_flush_waiters",
                        "Appends, votes and other waiters completed by one group commit.",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                    ]),
                )?,
            )?,
            batch_items: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ringkv_batch_items",
                        "Requests carried by one Batch RPC (each is also counted as its own request).",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                    ]),
                )?,
            )?,
            read_barrier_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_read_barrier_duration_seconds",
                    "ReadIndex confirmation time of linearizable reads on the leader.",
                ))?,
            )?,
            forwarded: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_forwarded_requests_total",
                        "Requests this node forwarded to a shard leader, by effect (read or write).",
                    ),
                    &["effect"],
                )?,
            )?,
            raft_appends: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_raft_appends_received_total",
                        "AppendEntries requests this node received as a follower, by transport \
                         (stream: pipelined replication; unary: heartbeats, older peers).",
                    ),
                    &["transport"],
                )?,
            )?,
            inflight: register(
                &r,
                IntGauge::new(
                    "ringkv_inflight_requests",
                    "Client requests being served now.",
                )?,
            )?,
            requests_admitted: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_requests_admitted_total",
                        "Client requests admitted, by class (write, linearizable_read, serializable_read, bulk).",
                    ),
                    &["class"],
                )?,
            )?,
            requests_rejected: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_requests_rejected_total",
                        "Client requests refused as overloaded before any work, by class and reason (queue_time, queue_full, deadline, ceiling).",
                    ),
                    &["class", "reason"],
                )?,
            )?,
            admission_queue_seconds: register(
                &r,
                Histogram::with_opts(latency(
                    "ringkv_admission_queue_seconds",
                    "Time admitted client requests waited for a permit.",
                ))?,
            )?,
            admission_limit: register(
                &r,
                IntGauge::new(
                    "ringkv_admission_limit",
                    "Current adaptive limit of client requests in flight (at most --inflight-requests-max).",
                )?,
            )?,
            shard_is_leader: shard_gauge(
                &r,
                "ringkv_shard_is_leader",
                "1 when this node leads the shard.",
            )?,
            shard_term: shard_gauge(&r, "ringkv_shard_term", "Current Raft term of the shard.")?,
            shard_leader_id: shard_gauge(
                &r,
                "ringkv_shard_leader_id",
                "Leader node id as this node knows it (0 = none).",
            )?,
            shard_last_log_index: shard_gauge(
                &r,
                "ringkv_shard_last_log_index",
                "Last log index on this replica.",
            )?,
            shard_committed_index: shard_gauge(
                &r,
                "ringkv_shard_committed_index",
                "Committed index known to this replica.",
            )?,
            shard_applied_index: shard_gauge(
                &r,
                "ringkv_shard_applied_index",
                "Last applied index on this replica.",
            )?,
            shard_apply_lag: shard_gauge(
                &r,
                "ringkv_shard_apply_lag_entries",
                "Committed but not yet applied entries on this replica.",
            )?,
            shard_snapshot_index: shard_gauge(
                &r,
                "ringkv_shard_snapshot_index",
                "Log index covered by the latest snapshot.",
            )?,
            shard_purged_index: shard_gauge(
                &r,
                "ringkv_shard_purged_index",
                "Last log index purged from this replica's log.",
            )?,
            shard_log_entries: shard_gauge(
                &r,
                "ringkv_shard_log_entries",
                "Entries held in this replica's Raft log (last - purged).",
            )?,
            shard_snapshots_built: shard_gauge(
                &r,
                "ringkv_shard_snapshots_built",
                "Snapshots this replica built since the process started.",
            )?,
            shard_snapshots_installed: shard_gauge(
                &r,
                "ringkv_shard_snapshots_installed",
                "Snapshots this replica installed from a leader since the process started.",
            )?,
            sled_disk_bytes: register(
                &r,
                IntGauge::new("ringkv_sled_disk_bytes", "Bytes sled occupies on disk.")?,
            )?,
            wal_bytes: register(
                &r,
                IntGauge::new(
                    "ringkv_wal_bytes",
                    "Bytes of the write-ahead log's segment files (the current one as reserved).",
                )?,
            )?,
            wal_segments: register(
                &r,
                IntGauge::new("ringkv_wal_segments", "Write-ahead log segment files.")?,
            )?,
            wal_rewrites: register(
                &r,
                IntGauge::new(
                    "ringkv_wal_rewrites_total",
                    "Times a shard's live entries were copied forward so an old segment could go.",
                )?,
            )?,
            shard_wal_segments_pinned: shard_gauge(
                &r,
                "ringkv_shard_wal_segments_pinned",
                "Write-ahead log segments this shard keeps from removal (entries not yet purged or copied forward).",
            )?,
            shard_log_bytes: shard_gauge(
                &r,
                "ringkv_shard_log_bytes",
                "Bytes of this replica's unpurged Raft log entries (payload plus 64 per entry), the measure --snapshot-log-mb bounds.",
            )?,
            snapshots_triggered_by_bytes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_snapshots_triggered_by_bytes_total",
                        "Snapshots this replica asked for because its log entries since the last one passed --snapshot-log-mb.",
                    ),
                    &["shard"],
                )?,
            )?,
            log_purges_triggered_by_bytes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ringkv_log_purges_triggered_by_bytes_total",
                        "Purges this replica asked for because the entries kept behind its snapshot passed a quarter of --snapshot-log-mb.",
                    ),
                    &["shard"],
                )?,
            )?,
            storage_failed: register(
                &r,
                IntGauge::new(
                    "ringkv_storage_failed",
                    "1 once a write or sync of durable state failed (the node then stops).",
                )?,
            )?,
            disk_full: register(
                &r,
                IntGauge::new(
                    "ringkv_disk_full",
                    "1 while this node is out of disk space (the write-ahead log cannot allocate its next segment, or free space is below --disk-free-min-mb): writes to the shards it votes in are refused.",
                )?,
            )?,
            disk_free_bytes: register(
                &r,
                IntGauge::new(
                    "ringkv_disk_free_bytes",
                    "Free bytes on the data directory's filesystem at the last sample.",
                )?,
            )?,
            disk_full_refusals: register(
                &r,
                IntCounter::new(
                    "ringkv_writes_refused_disk_full_total",
                    "Writes this node refused because it or a voter of the shard was out of disk space.",
                )?,
            )?,
            process_resident_bytes: register(
                &r,
                IntGauge::new(
                    "process_resident_memory_bytes",
                    "Resident memory of the server process.",
                )?,
            )?,
            scrapes: register(
                &r,
                IntCounter::new("ringkv_metrics_scrapes_total", "Scrapes of /metrics.")?,
            )?,
            registry: r,
        })
    }

    /// Records one finished client request.
    pub fn observe_request<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: &Result<Response<T>, Status>,
    ) {
        let code = match result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.requests.with_label_values(&[op, code.as_str()]).inc();
        self.request_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Handles the state machines record into (apply batches, snapshot builds).
    pub fn state_machine_observers(&self) -> crate::shard::state_machine::Observers {
        crate::shard::state_machine::Observers {
            apply_batch_seconds: self.apply_batch_seconds.clone(),
            buffer_flush_seconds: self.buffer_flush_seconds.clone(),
            snapshot_build_seconds: self.snapshot_build_seconds.clone(),
        }
    }

    pub fn flush_observers(&self) -> crate::storage::wal::FlushObservers {
        crate::storage::wal::FlushObservers {
            flush_seconds: self.flush_seconds.clone(),
            waiters_per_flush: self.waiters_per_flush.clone(),
        }
    }

    /// Handles the admission control records into.
    pub fn admission_observers(&self) -> crate::service::admission::Observers {
        crate::service::admission::Observers {
            admitted: self.requests_admitted.clone(),
            rejected: self.requests_rejected.clone(),
            queue_seconds: self.admission_queue_seconds.clone(),
            limit: self.admission_limit.clone(),
        }
    }

    /// Handles the byte-based compaction task counts into.
    pub fn compaction_observers(&self) -> crate::shard::compaction::Observers {
        crate::shard::compaction::Observers {
            snapshots_triggered: self.snapshots_triggered_by_bytes.clone(),
            purges_triggered: self.log_purges_triggered_by_bytes.clone(),
        }
    }

    pub fn count_disk_full_refusal(&self) {
        self.disk_full_refusals.inc();
    }

    pub fn observe_proposal(&self, started: Instant) {
        self.proposal_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn observe_read_barrier(&self, started: Instant) {
        self.read_barrier_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Refreshes the gauges and renders every metric in Prometheus text format.
    pub fn render(&self, shards: &Shards, db: &sled::Db, storage: &StorageView<'_>) -> String {
        self.scrapes.inc();
        let wal = storage.wal.stats();
        self.wal_bytes.set(wal.bytes as i64);
        self.wal_segments.set(wal.segments as i64);
        self.wal_rewrites.set(wal.rewrites as i64);
        self.storage_failed
            .set(i64::from(storage.health.failure().is_some()));
        self.disk_full
            .set(i64::from(storage.space.shortage().is_some()));
        if let Some(free) = storage.space.free_bytes() {
            self.disk_free_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        for shard in shards.iter() {
            let m = shard.metrics();
            let label = shard.id.to_string();
            let l = [label.as_str()];
            let applied = m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
            let committed = m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0);
            self.shard_is_leader
                .with_label_values(&l)
                .set(i64::from(m.state == ServerState::Leader));
            self.shard_term
                .with_label_values(&l)
                .set(m.current_term as i64);
            self.shard_leader_id
                .with_label_values(&l)
                .set(m.current_leader.unwrap_or(0) as i64);
            self.shard_last_log_index
                .with_label_values(&l)
                .set(m.last_log_index.unwrap_or(0) as i64);
            self.shard_committed_index
                .with_label_values(&l)
                .set(committed as i64);
            self.shard_applied_index
                .with_label_values(&l)
                .set(applied as i64);
            self.shard_apply_lag
                .with_label_values(&l)
                .set(committed.saturating_sub(applied) as i64);
            self.shard_snapshot_index
                .with_label_values(&l)
                .set(m.snapshot.as_ref().map(|s| s.index()).unwrap_or(0) as i64);
            let purged = m.purged.as_ref().map(|l| l.index()).unwrap_or(0);
            self.shard_purged_index
                .with_label_values(&l)
                .set(purged as i64);
            self.shard_log_entries
                .with_label_values(&l)
                .set(m.last_log_index.unwrap_or(0).saturating_sub(purged) as i64);
            let (built, installed) = shard.sm.snapshot_counts();
            self.shard_snapshots_built
                .with_label_values(&l)
                .set(built as i64);
            self.shard_snapshots_installed
                .with_label_values(&l)
                .set(installed as i64);
            let pinned = wal.segments_pinned.get(&shard.id).copied().unwrap_or(0);
            self.shard_wal_segments_pinned
                .with_label_values(&l)
                .set(pinned as i64);
            self.shard_log_bytes
                .with_label_values(&l)
                .set(i64::try_from(storage.wal.live_bytes(shard.id)).unwrap_or(i64::MAX));
        }
        if let Ok(bytes) = db.size_on_disk() {
            self.sled_disk_bytes.set(bytes as i64);
        }
        if let Some(rss) = resident_bytes() {
            self.process_resident_bytes.set(rss as i64);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
