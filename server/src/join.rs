//! Joining a running cluster (`--join ADDR`): learn the shard layout from a member and check
//! that this node may join, before the data directory is created.
//!
//! Invariants: a node joins only a cluster with its own cluster id; it takes the cluster's
//! shard count and ring size (they are fixed at bootstrap); it refuses to start when its id is
//! already a member at another address, or its address belongs to another member id (a reused
//! id could split a shard into two quorums). A node whose directory already has an identity is
//! restarting: it uses the layout it recorded and does not need the member to answer.
//! Becoming a member is the operator's step (`ringkv member add`), which also refuses ids that
//! were removed before.

use std::time::Duration;

use anyhow::Context;
use ringkv_proto::pb::StatusRequest;
use ringkv_proto::pb::cluster_client::ClusterClient;

use crate::config::Config;
use crate::identity;

/// How long a joining node keeps trying to reach the member it was pointed at.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Fills in the cluster layout for a joining node (no-op unless `--join` was given).
pub async fn discover(cfg: &mut Config) -> anyhow::Result<()> {
    let Some(member) = cfg.join.clone() else {
        return Ok(());
    };
    if let Some(have) = identity::read(&cfg.data_dir)? {
        cfg.shards = have.shards;
        cfg.ring_vnodes = have.ring_vnodes;
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + DISCOVER_TIMEOUT;
    let status = loop {
        let attempt = async {
            let channel = crate::tls::config::endpoint(cfg.tls.as_deref(), &member)?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await?;
            let mut request = tonic::Request::new(StatusRequest {});
            crate::auth::with_node_credentials(&mut request);
            // A refusal of this node's identity is final: retrying cannot change it.
            match ClusterClient::new(channel).status(request).await {
                Ok(r) => anyhow::Ok(Ok(r.into_inner())),
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ) =>
                {
                    anyhow::Ok(Err(s))
                }
                Err(s) => Err(s.into()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(Ok(s))) => break s,
            Ok(Ok(Err(refused))) => anyhow::bail!(
                "{member} refused this node: {} (with TLS, this node's certificate needs a name \
                 on the member's peer list: a host of its --peers or --peer-allowed-names; with \
                 --auth-tokens, RINGKV_NODE_TOKEN)",
                refused.message()
            ),
            Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%member, error = %e, "cannot reach the member to join through; retrying");
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%member, "no answer from the member to join through; retrying");
            }
            Ok(Err(e)) => return Err(e).with_context(|| format!("cannot reach {member} to join")),
            Err(_) => anyhow::bail!("no answer from {member} within {DISCOVER_TIMEOUT:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if status.cluster_id != cfg.cluster_id {
        anyhow::bail!(
            "{member} belongs to cluster {:?}, this node is configured for {:?} (--cluster-id)",
            status.cluster_id,
            cfg.cluster_id
        );
    }
    let own_peer_addr = cfg
        .peers
        .get(&cfg.id)
        .map_or_else(|| cfg.peer_listen.clone(), crate::typ::Node::peer_addr);
    for n in &status.nodes {
        if n.id != cfg.id && !n.peer_addr.is_empty() && n.peer_addr == own_peer_addr {
            anyhow::bail!(
                "peer address {} belongs to member node {}; remove it first (ringkv member remove {})",
                n.peer_addr,
                n.id,
                n.id
            );
        }
        if n.id == cfg.id && n.addr != cfg.listen {
            anyhow::bail!(
                "node id {} is already a member at {}; node ids are never reused, start this node with a fresh --id",
                n.id,
                n.addr
            );
        }
        if n.id != cfg.id && n.addr == cfg.listen {
            anyhow::bail!(
                "address {} belongs to member node {}; remove it first (ringkv member remove {})",
                n.addr,
                n.id,
                n.id
            );
        }
    }
    if status.shard_count == 0 || status.ring_vnodes == 0 {
        anyhow::bail!("{member} reported no shard layout");
    }
    cfg.shards = status.shard_count;
    cfg.ring_vnodes = status.ring_vnodes;
    let peer_flag = match crate::typ::derived_peer_addr(&cfg.listen) {
        Some(d) if d == own_peer_addr => String::new(),
        _ => format!(" --peer-addr {own_peer_addr}"),
    };
    tracing::info!(%member, shards = cfg.shards, ring_vnodes = cfg.ring_vnodes,
        "joining a running cluster; waiting for `ringkv member add {} {}{peer_flag}`", cfg.id, cfg.listen);
    Ok(())
}
