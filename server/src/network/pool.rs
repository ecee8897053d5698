//! Cached gRPC channels to peers, keyed by address and purpose.
//!
//! Channels connect lazily and reconnect by themselves; the pool never blocks on the network.
//! With TLS every channel is `https://`, presents this node's certificate and trusts only the
//! cluster CA; the server name verified is the host of the address dialed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use crate::tls::config::Tls;

/// Which channel to use: replication and votes, or bulk snapshot transfer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Purpose {
    Raft,
    Snapshot,
    /// Client requests forwarded to a shard's leader.
    Forward,
}

/// Channels to peer nodes, shared by every shard of the node.
#[derive(Default)]
pub struct ChannelPool {
    channels: Mutex<HashMap<(String, Purpose), Channel>>,
    connect_timeout_ms: u64,
    tls: Option<Arc<Tls>>,
}

impl ChannelPool {
    /// A pool whose channels use `tls` (the node's TLS files) when given.
    pub fn new(connect_timeout_ms: u64, tls: Option<Arc<Tls>>) -> Self {
        ChannelPool {
            channels: Mutex::new(HashMap::new()),
            connect_timeout_ms,
            tls,
        }
    }

    /// The channel to `addr` (`host:port`) for `purpose`, created on first use.
    pub fn channel(
        &self,
        addr: &str,
        purpose: Purpose,
    ) -> Result<Channel, tonic::transport::Error> {
        let key = (addr.to_string(), purpose);
        if let Ok(map) = self.channels.lock()
            && let Some(c) = map.get(&key)
        {
            return Ok(c.clone());
        }
        let channel = crate::tls::config::endpoint(self.tls.as_deref(), addr)?
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        if let Ok(mut map) = self.channels.lock() {
            map.insert(key, channel.clone());
        }
        Ok(channel)
    }
}
