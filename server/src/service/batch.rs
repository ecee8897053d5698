//! The `Batch` RPC: several independent client requests in one message.
//!
//! Each item runs through the very handler its unary RPC uses (validation, admission, routing,
//! forwarding, request metrics; the batch's deadline is each item's), concurrently with the other items, and its result or error
//! comes back in item order with the metadata the unary answer would have carried. Nothing is
//! atomic across items: a batch only saves per-RPC work (HTTP/2 streams, headers, syscalls).
//! The answer waits for the slowest item, which is why the client batches one shard at a time.
//! The item count is bounded; the message size is bounded by the server's decoding limit.

use std::collections::HashMap;

use ringkv_proto::pb::kv_server::Kv;
use ringkv_proto::pb::{
    BatchItem, BatchRequest, BatchResponse, BatchResult, ItemError, batch_item, batch_result,
};
use tonic::metadata::{AsciiMetadataValue, KeyAndValueRef, MetadataMap};
use tonic::{Request, Response, Status};

use crate::auth::{self, Action, Caller};
use crate::service::error::KvError;
use crate::service::kv::KvService;

/// The gRPC deadline header.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Items one batch may carry at most.
pub const BATCH_ITEMS_MAX: usize = 1024;

impl KvService {
    pub(crate) async fn batch_inner(
        &self,
        caller: Caller,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        // Each item inherits the batch's deadline, so admission honours it per item.
        let timeout = request.metadata().get(GRPC_TIMEOUT).cloned();
        let items = request.into_inner().items;
        if items.len() > BATCH_ITEMS_MAX {
            return Err(KvError::Invalid(format!(
                "a batch carries at most {BATCH_ITEMS_MAX} items, this one {}",
                items.len()
            ))
            .into());
        }
        self.metrics.batch_items.observe(items.len() as f64);
        let results = futures::future::join_all(
            items
                .into_iter()
                .map(|item| self.batch_item(&caller, item, timeout.as_ref())),
        )
        .await;
        Ok(Response::new(BatchResponse { results }))
    }

    async fn batch_item(
        &self,
        caller: &Caller,
        item: BatchItem,
        timeout: Option<&AsciiMetadataValue>,
    ) -> BatchResult {
        use batch_item::Op;
        use batch_result::Result as R;
        match item.op {
            Some(Op::Get(r)) => answer(
                Kv::get(self, item_request(caller, r, timeout)).await,
                R::Get,
            ),
            Some(Op::Put(r)) => answer(
                Kv::put(self, item_request(caller, r, timeout)).await,
                R::Put,
            ),
            Some(Op::Delete(r)) => answer(
                Kv::delete(self, item_request(caller, r, timeout)).await,
                R::Delete,
            ),
            Some(Op::CompareAndSwap(r)) => answer(
                Kv::compare_and_swap(self, item_request(caller, r, timeout)).await,
                R::CompareAndSwap,
            ),
            Some(Op::Txn(r)) => answer(
                Kv::txn(self, item_request(caller, r, timeout)).await,
                R::Txn,
            ),
            None => failure(KvError::Invalid("a batch item without an operation".into()).into()),
        }
    }
}

/// The actions a batch item asks for (none for an item without an operation, refused later as
/// invalid).
fn item_actions(item: &BatchItem) -> Vec<Action<'_>> {
    use batch_item::Op;
    match item.op.as_ref() {
        None => Vec::new(),
        Some(Op::Get(r)) => vec![Action::Get { key: &r.key }],
        Some(Op::Put(r)) => vec![Action::Put { key: &r.key }],
        Some(Op::Delete(r)) => vec![Action::Delete { key: &r.key }],
        Some(Op::CompareAndSwap(r)) => vec![Action::Cas { key: &r.key }],
        Some(Op::Txn(r)) => crate::service::txn::actions(r),
    }
}

/// The batch's caller when every item is allowed; otherwise the refusal of the first item that
/// is not, naming it, before any item runs (so a refused batch wrote nothing).
pub(crate) fn authorize_items(request: &Request<BatchRequest>) -> Result<Caller, KvError> {
    let caller = auth::authorize(request, [])?;
    for (i, item) in request.get_ref().items.iter().enumerate() {
        let actions = item_actions(item);
        if !actions.is_empty() {
            auth::authorize(request, actions).map_err(|e| match e {
                KvError::PermissionDenied(m) => {
                    KvError::PermissionDenied(format!("batch item {i}: {m}"))
                }
                e => e,
            })?;
        }
    }
    Ok(caller)
}

/// An item's request: made by the batch's caller (so its handler authorizes it again),
/// carrying the batch's `grpc-timeout` if it had one.
fn item_request<T>(caller: &Caller, r: T, timeout: Option<&AsciiMetadataValue>) -> Request<T> {
    let mut req = Request::new(r);
    caller.attach(&mut req);
    if let Some(t) = timeout {
        req.metadata_mut().insert(GRPC_TIMEOUT, t.clone());
    }
    req
}

fn answer<T>(
    r: Result<Response<T>, Status>,
    wrap: impl FnOnce(T) -> batch_result::Result,
) -> BatchResult {
    match r {
        Ok(resp) => {
            let metadata = ascii_metadata(resp.metadata());
            BatchResult {
                result: Some(wrap(resp.into_inner())),
                metadata,
            }
        }
        Err(status) => failure(status),
    }
}

fn failure(status: Status) -> BatchResult {
    BatchResult {
        result: Some(batch_result::Result::Error(ItemError {
            code: status.code() as i32,
            message: status.message().to_string(),
        })),
        metadata: ascii_metadata(status.metadata()),
    }
}

/// The ASCII entries of `md` (RingKV's own metadata is all ASCII).
fn ascii_metadata(md: &MetadataMap) -> HashMap<String, String> {
    md.iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_string(), v.to_str().ok()?.into())),
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}
