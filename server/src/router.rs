//! Request routing: which shard owns a key, and whether the local replica leads it.
//!
//! The decision is a pure function of the ring and the local Raft metrics; the router opens no
//! connection itself beyond handing out pooled channels for forwarding.

use std::sync::Arc;

use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::ring::Ring;
use tonic::transport::Channel;

use crate::network::pool::{ChannelPool, Purpose};
use crate::service::error::KvError;
use crate::shard::{Shard, Shards};
use crate::typ::NodeId;

pub struct Router {
    pub self_id: NodeId,
    pub ring: Ring,
    pub shards: Shards,
    pub pool: Arc<ChannelPool>,
    pub message_bytes_max: usize,
}

/// Where a request for a shard should go.
pub enum Route<'a> {
    /// The local replica believes it leads (Raft still confirms before answering).
    Local(&'a Shard),
    /// Another node leads: forward there.
    Remote {
        shard: &'a Shard,
        leader_id: NodeId,
        addr: String,
    },
}

impl Router {
    pub fn shard(&self, id: u32) -> Result<&Shard, KvError> {
        self.shards.get(id as usize).ok_or_else(|| {
            KvError::Invalid(format!(
                "unknown shard id {id} (shards: {})",
                self.shards.len()
            ))
        })
    }

    pub fn shard_for_key(&self, key: &[u8]) -> &Shard {
        let id = self.ring.shard_for(key) as usize;
        // The ring only yields ids below its shard count, which equals `shards.len()`.
        &self.shards[id.min(self.shards.len().saturating_sub(1))]
    }

    /// Routes by the local replica's view of the shard's leader.
    pub fn route<'a>(&self, shard: &'a Shard) -> Route<'a> {
        let m = shard.metrics();
        match m.current_leader {
            Some(l) if l != self.self_id => {
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone());
                match addr {
                    Some(addr) => Route::Remote {
                        shard,
                        leader_id: l,
                        addr,
                    },
                    None => Route::Local(shard),
                }
            }
            _ => Route::Local(shard),
        }
    }

    /// A client for a peer's `Kv` service, to forward a request.
    pub fn kv_client(&self, addr: &str) -> Result<KvClient<Channel>, KvError> {
        let channel = self
            .pool
            .channel(addr, Purpose::Forward)
            .map_err(|e| KvError::NoLeader {
                shard: 0,
                reason: format!("bad leader address {addr}: {e}"),
            })?;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(self.message_bytes_max)
            .max_encoding_message_size(self.message_bytes_max))
    }
}
