//! A minimal etcd v3 KV client, so `ringkv bench --target etcd` measures etcd with the very
//! same load generator, key choice and histograms as RingKV.
//!
//! Only Range, Put and Txn (a value compare-and-swap) are used; the generated code comes from
//! `proto/etcd_kv.proto` (a subset of etcd's public API). Each instance is one gRPC connection
//! to one member; etcd forwards writes and linearizable reads to its leader itself. Every call
//! is bounded by the channel's request timeout.

use std::time::Duration;

use bytes::Bytes;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Generated code for etcd's `etcdserverpb` subset.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

/// One connection to one etcd member.
#[derive(Clone)]
pub struct Etcd {
    kv: KvClient<Channel>,
}

impl Etcd {
    /// Connects lazily to `endpoint` (`HOST:PORT`).
    pub fn connect_lazy(endpoint: &str, timeout: Duration) -> Result<Etcd, String> {
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Etcd {
            kv: KvClient::new(channel),
        })
    }

    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), Status> {
        let req = pb::PutRequest {
            key,
            value,
            ..Default::default()
        };
        self.kv.clone().put(req).await.map(|_| ())
    }

    /// Reads `key`; `serializable` lets the member answer from its local state.
    pub async fn get(&self, key: Bytes, serializable: bool) -> Result<Option<Bytes>, Status> {
        let req = pb::RangeRequest {
            key,
            serializable,
            ..Default::default()
        };
        let r = self.kv.clone().range(req).await?.into_inner();
        Ok(r.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Sets `key` to `new` if its value equals `expected`; returns whether it did.
    pub async fn cas(&self, key: Bytes, expected: Bytes, new: Bytes) -> Result<bool, Status> {
        let req = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Value as i32,
                key: key.clone(),
                target_union: Some(pb::compare::TargetUnion::Value(expected)),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key,
                    value: new,
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        Ok(self.kv.clone().txn(req).await?.into_inner().succeeded)
    }
}
