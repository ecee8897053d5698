//! The admin HTTP endpoint (`--admin-listen`): `/` (a self-refreshing dashboard page with no
//! external assets), `/metrics` (Prometheus text), `/health`
//! (the process is alive and serving HTTP), `/ready` (this node can serve every shard now), and
//! `/status` (this node's view of every shard and node, as JSON).
//!
//! Readiness, per shard: a leader must have heard from a quorum within the readiness window; a
//! follower must know a leader, have accepted entries or a heartbeat from it within the window,
//! and have applied all but at most `ready_lag_entries_max` of the entries the leader reported
//! committed. Any other role (candidate, learner, shutting down) is not ready. The endpoint
//! only reads metrics: it never blocks on Raft and answers even without a quorum.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openraft::{Instant as _, ServerState};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::service::cluster::{ClusterService, role};
use crate::shard::{Shard, Shards};

/// What the admin endpoint reads.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub shards: Shards,
    pub db: sled::Db,
    pub cluster: Arc<ClusterService>,
    /// `/health` answers 503 once storage failed.
    pub storage: crate::storage::health::StorageHealth,
    pub wal: crate::storage::wal::Wal,
    pub space: crate::storage::space::DiskSpace,
    /// A leader or follower silent for longer than this is not ready.
    pub contact_window: Duration,
    pub ready_lag_entries_max: u64,
}

/// Serves the admin endpoint on `listener` until `cancel` fires; only over TLS when `tls` is
/// given.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .with_state(state);
    match tls {
        Some(config) => {
            let listener = crate::tls::admin::TlsListener::new(listener, config)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
    }
}

/// `ok`, or 503 naming the storage failure that is stopping this node.
async fn health(State(s): State<Arc<AdminState>>) -> Response {
    match s.storage.failure() {
        None => "ok\n".into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage failed: {f}\n"),
        )
            .into_response(),
    }
}

/// The dashboard: one static page that polls `/status`, `/metrics` and `/ready`.
const DASHBOARD_HTML: &str = include_str!("admin_assets/dashboard.html");

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD_HTML,
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let storage = crate::metrics::StorageView {
        wal: &s.wal,
        health: &s.storage,
        space: &s.space,
    };
    let body = s.metrics.render(&s.shards, &s.db, &storage);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Whether this replica heard from a leader within the contact window: an election (or a
/// just-won one awaiting its first quorum ack) is tolerated for that long.
fn in_election_window(s: &AdminState, shard: &Shard) -> bool {
    shard
        .leader_contact
        .elapsed()
        .is_some_and(|d| d <= s.contact_window)
}

/// Why one shard is not ready, or `None` when it is.
fn shard_not_ready(s: &AdminState, shard: &Shard) -> Option<String> {
    let m = shard.metrics();
    let window_ms = s.contact_window.as_millis();
    match m.state {
        ServerState::Leader => {
            let acked = m.last_quorum_acked.as_ref().map(|i| i.elapsed());
            match acked {
                Some(d) if d <= s.contact_window => None,
                Some(d) => Some(format!(
                    "leads but no quorum ack for {} ms (window {window_ms} ms)",
                    d.as_millis()
                )),
                // Just elected: ready while the election stays within the window since the
                // last contact from the previous leader, as for a candidate below.
                None if in_election_window(s, shard) => None,
                None => Some("leads but has no quorum ack yet".into()),
            }
        }
        ServerState::Follower | ServerState::Candidate => {
            let leader = match (m.state, m.current_leader) {
                (ServerState::Follower, Some(leader)) => leader,
                // An election is under way: ready while it stays within the window since the
                // last contact from a leader, so a node does not flap out of the load balancer
                // while a shard re-elects.
                _ if in_election_window(s, shard) => return None,
                _ => {
                    return match shard.leader_contact.elapsed() {
                        Some(d) => Some(format!(
                            "no leader for {} ms (window {window_ms} ms)",
                            d.as_millis()
                        )),
                        None => Some("no leader yet".into()),
                    };
                }
            };
            match shard.leader_contact.elapsed() {
                Some(d) if d <= s.contact_window => {}
                Some(d) => {
                    return Some(format!(
                        "no contact from leader {leader} for {} ms (window {window_ms} ms)",
                        d.as_millis()
                    ));
                }
                None => return Some(format!("no contact from leader {leader} yet")),
            }
            let applied = m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
            let committed = m.cluster_committed.as_ref().map(|l| l.index()).unwrap_or(0);
            let lag = committed.saturating_sub(applied);
            (lag > s.ready_lag_entries_max).then(|| {
                format!(
                    "applied {applied} lags committed {committed} by {lag} entries (max {})",
                    s.ready_lag_entries_max
                )
            })
        }
        other => Some(format!("role is {}", role(other))),
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// Shard id → reason, for every shard that is not ready.
    not_ready: std::collections::BTreeMap<u32, String>,
}

async fn ready(State(s): State<Arc<AdminState>>) -> Response {
    let not_ready: std::collections::BTreeMap<u32, String> = s
        .shards
        .iter()
        .filter_map(|sh| shard_not_ready(&s, sh).map(|r| (sh.id, r)))
        .collect();
    let code = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: not_ready.is_empty(),
        not_ready,
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(s): State<Arc<AdminState>>) -> Response {
    let st = s.cluster.snapshot();
    let shards: Vec<serde_json::Value> = st
        .shards
        .iter()
        .map(|sh| {
            serde_json::json!({
                "shard": sh.shard,
                "leader": sh.leader,
                "term": sh.term,
                "role": sh.role,
                "last_log_index": sh.last_log_index,
                "committed_index": sh.committed_index,
                "applied_index": sh.applied_index,
                "min_matched_index": sh.min_matched_index,
                "voters": sh.voters,
            })
        })
        .collect();
    let nodes: Vec<serde_json::Value> = st
        .nodes
        .iter()
        .map(|n| serde_json::json!({"id": n.id, "addr": n.addr}))
        .collect();
    axum::Json(serde_json::json!({
        "cluster_id": st.cluster_id,
        "node_id": st.node_id,
        "version": st.version,
        "shard_count": st.shard_count,
        "shards": shards,
        "nodes": nodes,
    }))
    .into_response()
}
