//! The RingKV client: routing and bounded retries. What each failed attempt means for the
//! request (definite, unknown, redirect, overloaded, invalid) is decided in `outcome.rs`.
//!
//! Every attempt carries its time budget as `grpc-timeout`, so a server does not queue work
//! this client will have given up on. An overload refusal is retried at the same node no
//! sooner than the server's retry-after hint (or the current backoff, if longer), with jitter,
//! and not at all when that wait would pass the request's deadline: overload is never retried
//! in a tight loop.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::meta;
use ringkv_proto::pb::cluster_client::ClusterClient;
use ringkv_proto::pb::kv_client::KvClient;
use ringkv_proto::pb::{
    BatchItem, CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, PutRequest, PutResponse, RequestHeader, ScanRequest, StatusRequest,
    StatusResponse, batch_item, batch_result, compare_and_swap_request,
};
use ringkv_proto::ring::Ring;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Response, Status};

use crate::batcher::{self, Batcher, Busy};
use crate::error::Error;
use crate::leader_watch::{self, LeaderWatch, View};
use crate::outcome::{Failure, classify};
use crate::retry::{RetryBudget, full_jitter};
use crate::tls::TlsOptions;

/// A connection to one node that sends this client's credentials with every call.
pub(crate) type Svc = InterceptedService<Channel, Credentials>;

/// Adds the bearer token (if any) to every outgoing call.
#[derive(Clone)]
pub(crate) struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Connection and retry settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `HOST:PORT` of any nodes of the cluster.
    pub endpoints: Vec<String>,
    /// When non-empty, servers refuse requests unless their cluster id matches.
    pub cluster_id: String,
    /// The whole request, retries included, must finish within this.
    pub request_timeout: Duration,
    /// One attempt at a point request must finish within this; then it is retried on another
    /// node (a write under the same sequence, so it still applies at most once). About twice
    /// the servers' default election timeout, so a frozen node holds a request that long at
    /// most, not for as long as it is frozen. Scans get at least 12 s.
    pub attempt_timeout: Duration,
    /// Attempts per request at most.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Send the gets, puts, deletes and compare-and-swaps waiting for the same node together
    /// in one `Batch` RPC (the crate's `batcher` module); off sends each as its own RPC.
    pub batch_requests: bool,
    /// A bearer token sent as `authorization: Bearer TOKEN` with every call (also status,
    /// membership and backup calls). Never logged.
    pub token: Option<String>,
    /// TLS: the cluster CA to trust and, optionally, a client certificate. `None`: plaintext.
    pub tls: Option<TlsOptions>,
    /// Once an attempt at a shard's leader has waited this long, ask another node who leads
    /// the shard (every 100 ms while it still waits, one status call per client at a time), and
    /// move the request to a new leader as soon as one is named (the crate's `leader_watch`
    /// module). About one default election timeout of the servers. `None`: only
    /// `attempt_timeout` ends a wait.
    pub leader_check_after: Option<Duration>,
}

impl ClientOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientOptions {
            endpoints,
            cluster_id: String::new(),
            request_timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 20,
            connect_timeout: Duration::from_millis(1000),
            batch_requests: true,
            token: None,
            tls: None,
            leader_check_after: Some(Duration::from_millis(300)),
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// Served by any replica; may be stale.
    Serializable,
}

/// A value and its version (which grows with every write of the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// What a compare-and-swap compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Value(Bytes),
    Absent,
    /// The key's version (0 = absent).
    Version(u64),
}

impl Expect {
    pub(crate) fn to_wire(&self) -> compare_and_swap_request::Expected {
        match self {
            Expect::Value(v) => compare_and_swap_request::Expected::ExpectedValue(v.clone()),
            Expect::Absent => compare_and_swap_request::Expected::ExpectAbsent(true),
            Expect::Version(v) => compare_and_swap_request::Expected::ExpectedVersion(*v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeeded: bool,
    /// The key before the operation.
    pub current: Option<Versioned>,
    /// The new version when the swap wrote a value.
    pub new_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<KeyValue>,
    /// True when a limit cut the result.
    pub truncated: bool,
}

#[derive(Default)]
struct Routing {
    ring: Option<Ring>,
    /// Shard → leader address.
    leaders: HashMap<u32, String>,
}

/// A batching queue's node address and shard.
type QueueKey = (String, Option<u32>);

struct Inner {
    opts: ClientOptions,
    credentials: Credentials,
    /// `opts.tls`, loaded once.
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    /// (node address, shard) → its batching queue (created on first use).
    batchers: Mutex<HashMap<QueueKey, Arc<Batcher>>>,
    client_id: u64,
    next_sequence: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
    routing: RwLock<Routing>,
    next_endpoint: AtomicUsize,
    /// Nodes that just failed an attempt: until when other nodes are preferred, and how many
    /// attempts in a row failed there.
    suspects: Mutex<HashMap<String, (Instant, u32)>>,
    /// Whether `suspects` may be non-empty (spares every answered request the lock).
    any_suspects: std::sync::atomic::AtomicBool,
    /// Attempts beyond each request's first (redirects included).
    retries: AtomicU64,
    /// Retries left to this client (see `retry.rs`).
    budget: RetryBudget,
    /// Who leads which shard, as another node last said (see `leader_watch.rs`).
    watch: LeaderWatch,
}

/// The least time one attempt at a scan may take.
const SCAN_ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_secs(12);

/// How long a node that failed an attempt is passed over while others are available; each
/// further failure in a row doubles it, up to [`SUSPECT_FOR_MAX`]; an answer clears it.
const SUSPECT_FOR: Duration = Duration::from_millis(2_000);
const SUSPECT_FOR_MAX: Duration = Duration::from_millis(16_000);

/// How long `addr` is passed over after its `strikes`-th failure in a row.
fn suspect_for(strikes: u32) -> Duration {
    SUSPECT_FOR
        .saturating_mul(1u32 << strikes.saturating_sub(1).min(8))
        .min(SUSPECT_FOR_MAX)
}

/// How one attempt ended.
enum Attempt<T> {
    /// The node answered (or the transport failed) within the attempt's budget.
    Answered(Result<Response<T>, Status>),
    /// No answer within the budget.
    TimedOut,
    /// No answer yet after `waited`, and another node names `leader` as the shard's leader.
    Moved { leader: String, waited: Duration },
}

/// A RingKV client. Cheap to clone; clones share connections and the write identity.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// One attempt's way to a node: batched when the client batches and the node supports it,
/// else one unary RPC per request. Either way the answer has the unary RPC's shape.
pub(crate) struct Conn {
    pub(crate) kv: KvClient<Svc>,
    batcher: Option<Arc<Batcher>>,
    /// The attempt's time budget, sent as `grpc-timeout` with unary RPCs.
    budget: Duration,
}

impl Conn {
    /// `req` as a unary request carrying the attempt's budget as its deadline.
    pub(crate) fn request<T>(&self, req: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(req);
        r.set_timeout(self.budget);
        r
    }

    /// Sends the item `make` builds in a batch; `None` when the request should go as a unary
    /// RPC instead (no batching, a node without the `Batch` RPC, or no other request in
    /// flight through its queue). The guard counts the request in flight until the caller
    /// drops it, after any unary RPC.
    async fn batched(
        &self,
        make: impl FnOnce() -> batch_item::Op,
    ) -> (
        Option<Busy>,
        Option<Result<Response<batch_result::Result>, Status>>,
    ) {
        let Some(b) = self.batcher.as_ref().filter(|b| !b.unsupported()) else {
            return (None, None);
        };
        let (busy, alone) = b.enter();
        if alone {
            return (Some(busy), None);
        }
        let r = match b.call(BatchItem { op: Some(make()) }).await {
            // A node that predates the Batch RPC: this and later requests go unary.
            Err(s) if b.unsupported() && s.code() == Code::Unimplemented => None,
            r => Some(r.and_then(batcher::unpack)),
        };
        (Some(busy), r)
    }

    async fn get(&self, req: GetRequest) -> Result<Response<GetResponse>, Status> {
        let (_busy, r) = self.batched(|| batch_item::Op::Get(req.clone())).await;
        match r {
            Some(r) => reshape(r, |x| match x {
                batch_result::Result::Get(v) => Some(v),
                _ => None,
            }),
            None => self.kv.clone().get(self.request(req)).await,
        }
    }

    pub(crate) async fn txn(
        &self,
        req: ringkv_proto::pb::TxnRequest,
    ) -> Result<Response<ringkv_proto::pb::TxnResponse>, Status> {
        let (_busy, r) = self.batched(|| batch_item::Op::Txn(req.clone())).await;
        match r {
            Some(r) => reshape(r, |x| match x {
                batch_result::Result::Txn(v) => Some(v),
                _ => None,
            }),
            None => self.kv.clone().txn(self.request(req)).await,
        }
    }

    pub(crate) async fn put(&self, req: PutRequest) -> Result<Response<PutResponse>, Status> {
        let (_busy, r) = self.batched(|| batch_item::Op::Put(req.clone())).await;
        match r {
            Some(r) => reshape(r, |x| match x {
                batch_result::Result::Put(v) => Some(v),
                _ => None,
            }),
            None => self.kv.clone().put(self.request(req)).await,
        }
    }

    async fn delete(&self, req: DeleteRequest) -> Result<Response<DeleteResponse>, Status> {
        let (_busy, r) = self.batched(|| batch_item::Op::Delete(req.clone())).await;
        match r {
            Some(r) => reshape(r, |x| match x {
                batch_result::Result::Delete(v) => Some(v),
                _ => None,
            }),
            None => self.kv.clone().delete(self.request(req)).await,
        }
    }

    pub(crate) async fn compare_and_swap(
        &self,
        req: CompareAndSwapRequest,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let (_busy, r) = self
            .batched(|| batch_item::Op::CompareAndSwap(req.clone()))
            .await;
        match r {
            Some(r) => reshape(r, |x| match x {
                batch_result::Result::CompareAndSwap(v) => Some(v),
                _ => None,
            }),
            None => self.kv.clone().compare_and_swap(self.request(req)).await,
        }
    }
}

/// A batch item's answer as the unary RPC's response type. An answer of another kind is a
/// server fault; the item may have executed, so it fails without RingKV metadata (a write is
/// then classified outcome unknown).
fn reshape<T>(
    r: Result<Response<batch_result::Result>, Status>,
    pick: impl FnOnce(batch_result::Result) -> Option<T>,
) -> Result<Response<T>, Status> {
    let resp = r?;
    let md = resp.metadata().clone();
    match pick(resp.into_inner()) {
        Some(v) => {
            let mut out = Response::new(v);
            *out.metadata_mut() = md;
            Ok(out)
        }
        None => Err(Status::internal(
            "the server answered a batch item with another kind of result",
        )),
    }
}

impl Client {
    /// Creates a client; connects lazily on first use.
    pub fn new(opts: ClientOptions) -> Result<Client, Error> {
        if opts.endpoints.is_empty() {
            return Err(Error::Invalid("no endpoints given".into()));
        }
        let authorization = match &opts.token {
            None => None,
            Some(t) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| Error::Invalid("the token must be printable ASCII".into()))?,
            ),
        };
        let tls = opts.tls.as_ref().map(TlsOptions::load).transpose()?;
        let client_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                opts,
                credentials: Credentials { authorization },
                tls,
                channels: Mutex::new(HashMap::new()),
                batchers: Mutex::new(HashMap::new()),
                client_id,
                next_sequence: AtomicU64::new(1),
                in_flight: Mutex::new(BTreeSet::new()),
                routing: RwLock::new(Routing::default()),
                next_endpoint: AtomicUsize::new(0),
                suspects: Mutex::new(HashMap::new()),
                any_suspects: std::sync::atomic::AtomicBool::new(false),
                retries: AtomicU64::new(0),
                budget: RetryBudget::default(),
                watch: LeaderWatch::default(),
            }),
        })
    }

    /// This client's write identity.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// Attempts made beyond each request's first, since the client was created.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// The connection to `addr`, carrying this client's credentials.
    pub(crate) fn channel(&self, addr: &str) -> Result<Svc, Error> {
        Ok(InterceptedService::new(
            self.raw_channel(addr)?,
            self.inner.credentials.clone(),
        ))
    }

    fn raw_channel(&self, addr: &str) -> Result<Channel, Error> {
        if let Ok(map) = self.inner.channels.lock()
            && let Some(c) = map.get(addr)
        {
            return Ok(c.clone());
        }
        let bad =
            |e: tonic::transport::Error| Error::Invalid(format!("bad endpoint {addr:?}: {e}"));
        let ch = match &self.inner.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
                .map_err(bad)?
                .tls_config(tls.clone())
                .map_err(bad)?,
            None => Endpoint::from_shared(format!("http://{addr}")).map_err(bad)?,
        };
        let ch = ch
            .connect_timeout(self.inner.opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        if let Ok(mut map) = self.inner.channels.lock() {
            map.insert(addr.to_string(), ch.clone());
        }
        Ok(ch)
    }

    fn kv(&self, addr: &str) -> Result<KvClient<Svc>, Error> {
        Ok(KvClient::new(self.channel(addr)?).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The way to node `addr` for one attempt at a request for `shard`: its gRPC client, and
    /// its batching queue when batching is on. A queue holds one shard's requests only, so a
    /// batch never mixes shards: a batch is answered when its slowest item is, and a shard
    /// stalled by a leader change then holds back only its own requests.
    fn conn(&self, addr: &str, shard: Option<u32>, budget: Duration) -> Result<Conn, Error> {
        let kv = self.kv(addr)?;
        let batcher = if self.inner.opts.batch_requests {
            let mut map = self
                .inner
                .batchers
                .lock()
                .map_err(|_| Error::Invalid("client state poisoned".into()))?;
            Some(
                map.entry((addr.to_string(), shard))
                    .or_insert_with(|| Batcher::spawn(kv.clone(), self.inner.opts.attempt_timeout))
                    .clone(),
            )
        } else {
            None
        };
        Ok(Conn {
            kv,
            batcher,
            budget,
        })
    }

    /// The next endpoint in turn, passing over suspects unless every endpoint is one.
    pub(crate) fn rotate_endpoint(&self) -> String {
        let eps = &self.inner.opts.endpoints;
        self.next_endpoint_where(|_| true).unwrap_or_else(|| {
            eps[self.inner.next_endpoint.load(Ordering::Relaxed) % eps.len()].clone()
        })
    }

    /// The next endpoint in turn that is not suspect and passes `wanted`; `None` when none
    /// does (each endpoint is looked at once).
    fn next_endpoint_where(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let eps = &self.inner.opts.endpoints;
        (0..eps.len())
            .map(|_| &eps[self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed) % eps.len()])
            .find(|ep| wanted(ep) && !self.is_suspect(ep))
            .cloned()
    }

    /// Marks `addr` as just failed: other nodes are preferred for a while, longer each time
    /// it fails again before answering.
    fn suspect(&self, addr: &str) {
        if let Ok(mut s) = self.inner.suspects.lock() {
            let strikes = s.get(addr).map_or(0, |(_, n)| *n) + 1;
            s.insert(
                addr.to_string(),
                (Instant::now() + suspect_for(strikes), strikes),
            );
            self.inner.any_suspects.store(true, Ordering::Relaxed);
        }
    }

    /// `addr` answered: it is no longer suspect.
    fn clear_suspect(&self, addr: &str) {
        if !self.inner.any_suspects.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut s) = self.inner.suspects.lock() {
            s.remove(addr);
            if s.is_empty() {
                self.inner.any_suspects.store(false, Ordering::Relaxed);
            }
        }
    }

    fn is_suspect(&self, addr: &str) -> bool {
        self.inner
            .suspects
            .lock()
            .ok()
            .and_then(|s| s.get(addr).map(|(until, _)| *until))
            .is_some_and(|until| Instant::now() < until)
    }

    /// Fetches the ring and leaders from the cluster if not known yet (best effort).
    async fn ensure_routing(&self) {
        if self
            .inner
            .routing
            .read()
            .map(|r| r.ring.is_some())
            .unwrap_or(true)
        {
            return;
        }
        for ep in self.inner.opts.endpoints.clone() {
            if let Ok(status) = self.status_of(&ep).await {
                self.learn(&status);
                return;
            }
        }
    }

    /// Updates the ring and leader cache from a status answer.
    fn learn(&self, status: &StatusResponse) {
        let addrs: HashMap<u64, String> = status
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        if let Ok(mut r) = self.inner.routing.write() {
            if r.ring.is_none() && status.shard_count > 0 {
                r.ring = Some(Ring::new(status.shard_count, status.ring_vnodes));
            }
            for s in &status.shards {
                if let Some(addr) = s.leader.and_then(|l| addrs.get(&l)) {
                    r.leaders.insert(s.shard, addr.clone());
                }
            }
        }
    }

    fn shard_for(&self, key: &[u8]) -> Option<u32> {
        self.inner
            .routing
            .read()
            .ok()?
            .ring
            .as_ref()
            .map(|r| r.shard_for(key))
    }

    fn leader_of(&self, shard: Option<u32>) -> Option<String> {
        let shard = shard?;
        self.inner.routing.read().ok()?.leaders.get(&shard).cloned()
    }

    fn set_leader(&self, shard: Option<u32>, addr: Option<String>) {
        let Some(shard) = shard else { return };
        if let Ok(mut r) = self.inner.routing.write() {
            match addr {
                Some(a) => r.leaders.insert(shard, a),
                None => r.leaders.remove(&shard),
            };
        }
    }

    /// Runs one request with bounded retries, routing by `key` when given.
    ///
    /// With `key` set, the request goes to the key's shard leader when known; with `key` unset
    /// (serializable reads, fan-out scans) it goes to the endpoints in order.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        key: Option<&[u8]>,
        is_write: bool,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_within(key, is_write, self.inner.opts.attempt_timeout, f)
            .await
    }

    /// [`Client::call`] with each attempt bounded by `attempt_timeout` instead of the
    /// client's.
    async fn call_within<T, F, Fut>(
        &self,
        key: Option<&[u8]>,
        is_write: bool,
        attempt_timeout: Duration,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        if key.is_some() {
            self.ensure_routing().await;
        }
        let shard = key.and_then(|k| self.shard_for(k));
        let opts = &self.inner.opts;
        self.inner.budget.on_request();
        let deadline = Instant::now() + opts.request_timeout;
        let mut unknown: Option<String> = None;
        let mut last = String::from("no attempt made");
        // The last attempt's overload refusal (its retry-after hint), while it is the latest
        // failure.
        let mut overloaded: Option<Option<Duration>> = None;
        let mut backoff = Duration::from_millis(20);
        let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Nodes this request has already been sent to (for spotting redirect loops).
        let mut tried: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Redirects followed, for the final error (its last attempt may have been cut short
        // by the deadline, which alone would hide that the nodes kept pointing elsewhere).
        let mut redirects = 0u32;
        let mut target = self
            .leader_of(shard)
            .filter(|l| !self.is_suspect(l))
            .unwrap_or_else(|| self.rotate_endpoint());
        for attempt in 0..opts.max_attempts.max(1) {
            if attempt > 0 {
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let budget = attempt_timeout.min(deadline - now);
            tried.insert(target.clone());
            let client = self.conn(&target, shard, budget)?;
            // Whether the node itself failed (no answer, a transport error, or shutting down),
            // as opposed to answering with a RingKV error such as "no leader yet".
            let mut node_failed = true;
            let failure = match self.attempt(shard, &target, budget, f(client)).await {
                Attempt::Moved { leader, waited } => {
                    // The node stopped answering and the cluster has a new leader for the
                    // shard: go there now. A write sent to the silent node may still apply,
                    // so its outcome stays unknown until an answer under the same sequence.
                    let msg = format!(
                        "no answer from {target} within {waited:?}, and another node names \
                         {leader} as the shard's leader"
                    );
                    if is_write {
                        unknown = Some(msg.clone());
                    }
                    last = msg;
                    failed.insert(target.clone());
                    self.suspect(&target);
                    self.set_leader(shard, Some(leader.clone()));
                    if !self.inner.budget.try_retry(Instant::now()) {
                        last = format!("{last}; not retried: this client's retry budget is spent");
                        break;
                    }
                    target = leader;
                    continue;
                }
                Attempt::Answered(Ok(resp)) => {
                    self.clear_suspect(&target);
                    let hinted = resp
                        .metadata()
                        .get(meta::LEADER_ADDR)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    if shard.is_some() {
                        self.set_leader(shard, Some(hinted.unwrap_or(target)));
                    }
                    return Ok(resp.into_inner());
                }
                Attempt::Answered(Err(status)) => {
                    let mut tls = self.tls_failure(&status);
                    if tls.is_none()
                        && self.inner.tls.is_none()
                        && status.metadata().get(meta::ERROR_KIND).is_none()
                        && crate::tls::speaks_tls(&target).await
                    {
                        tls = Some(crate::tls::server_speaks_tls(&target));
                    }
                    if let Some(e) = tls {
                        return Err(match unknown {
                            Some(u) => Error::OutcomeUnknown(format!("{u}; then: {e}")),
                            None => e,
                        });
                    }
                    let kind = status.metadata().get(meta::ERROR_KIND);
                    node_failed = kind.is_none()
                        || kind.and_then(|k| k.to_str().ok()) == Some(meta::KIND_SHUTTING_DOWN);
                    classify(&status, is_write)
                }
                Attempt::TimedOut => {
                    let msg = format!("no answer from {target} within {budget:?}");
                    if is_write {
                        Failure::Unknown(msg)
                    } else {
                        Failure::Definite(msg)
                    }
                }
            };
            overloaded = None;
            match failure {
                Failure::Overloaded {
                    retry_after,
                    message,
                } => {
                    // The node is the right one, only busy: back to it after the hint.
                    let pause = jittered(retry_after.unwrap_or_default().max(backoff));
                    backoff = (backoff * 2).min(Duration::from_millis(1000));
                    // A retry like any other: it spends the budget, and with the budget
                    // spent the refusal is the answer.
                    if Instant::now() + pause >= deadline
                        || !self.inner.budget.try_retry(Instant::now())
                    {
                        return Err(match unknown {
                            Some(u) => Error::OutcomeUnknown(format!("{u}; then: {message}")),
                            None => Error::Overloaded {
                                retry_after,
                                message,
                            },
                        });
                    }
                    last = message;
                    overloaded = Some(retry_after);
                    tokio::time::sleep(pause).await;
                    continue;
                }
                f @ (Failure::Unauthenticated(_)
                | Failure::PermissionDenied(_)
                | Failure::Unsupported { .. }) => {
                    let refused = f.refusal().unwrap_or_else(|| Error::Invalid(last.clone()));
                    return Err(match unknown {
                        Some(u) => Error::OutcomeUnknown(format!("{u}; then: {refused}")),
                        None => refused,
                    });
                }
                Failure::Invalid(m) => {
                    return Err(match unknown {
                        Some(u) => Error::OutcomeUnknown(format!("{u}; then: {m}")),
                        None => Error::Invalid(m),
                    });
                }
                Failure::DiskFull { node, message } => {
                    return Err(match unknown {
                        Some(u) => Error::OutcomeUnknown(format!("{u}; then: {message}")),
                        None => Error::DiskFull { node, message },
                    });
                }
                // A hint naming a node that already failed us in this request is stale (the
                // hinting node has not noticed the failure yet): back off instead of bouncing.
                Failure::Redirect(addr) if failed.contains(&addr) || self.is_suspect(&addr) => {
                    last = format!("redirected to {addr}, which failed earlier");
                }
                Failure::Redirect(addr) => {
                    redirects += 1;
                    last = format!("redirected to {addr}");
                    self.set_leader(shard, Some(addr.clone()));
                    // Back to a node already tried: the nodes disagree on the leader (a transfer
                    // or election is under way) and point at each other. Follow, but only after a
                    // pause, so the loop waits out the handover instead of using up the attempts.
                    if tried.contains(&addr) {
                        let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(full_jitter(pause)).await;
                        backoff = (backoff * 2).min(Duration::from_millis(1000));
                    }
                    target = addr;
                    continue;
                }
                Failure::Definite(m) => last = m,
                Failure::Unknown(m) => {
                    last = m.clone();
                    unknown = Some(m);
                }
            }
            if node_failed {
                failed.insert(target.clone());
                self.suspect(&target);
            }
            self.set_leader(shard, None);
            if !self.inner.budget.try_retry(Instant::now()) {
                last = format!("{last}; not retried: this client's retry budget is spent");
                break;
            }
            target = self.rotate_endpoint();
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(full_jitter(pause)).await;
            backoff = (backoff * 2).min(Duration::from_millis(1000));
        }
        Err(match (unknown, overloaded) {
            (Some(u), _) => Error::OutcomeUnknown(format!("{u} (last attempt: {last})")),
            (None, Some(retry_after)) => Error::Overloaded {
                retry_after,
                message: last,
            },
            (None, None) if redirects > 0 && !last.contains("redirected") => {
                Error::Unavailable(format!("{last} (after being redirected {redirects} times)"))
            }
            (None, None) => Error::Unavailable(last),
        })
    }

    /// One attempt at `target`, bounded by `budget`; for a request routed to `shard`, ended
    /// early once another node names a new leader for it (see `leader_watch.rs`).
    async fn attempt<T, Fut>(
        &self,
        shard: Option<u32>,
        target: &str,
        budget: Duration,
        call: Fut,
    ) -> Attempt<T>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let call = tokio::time::timeout(budget, call);
        let watched = match (shard, self.inner.opts.leader_check_after) {
            // Even with one endpoint: the request may wait on a leader learned from it.
            (Some(shard), Some(after)) if after < budget => Some((shard, after)),
            _ => None,
        };
        let Some((shard, after)) = watched else {
            return match call.await {
                Ok(r) => Attempt::Answered(r),
                Err(_) => Attempt::TimedOut,
            };
        };
        let started = Instant::now();
        let watch = async {
            tokio::time::sleep(after).await;
            loop {
                if let Some(leader) = self.moved_leader(shard, target).await {
                    return leader;
                }
                tokio::time::sleep(leader_watch::CHECK_EVERY).await;
            }
        };
        tokio::select! {
            biased;
            r = call => match r {
                Ok(r) => Attempt::Answered(r),
                Err(_) => Attempt::TimedOut,
            },
            leader = watch => Attempt::Moved { leader, waited: started.elapsed() },
        }
    }

    /// The leader `shard` has moved to, away from `waiting_on`, as another node says: from the
    /// last answer when it is fresh, else from a new status call when one is due (see
    /// `leader_watch.rs`: one in flight per client, nobody waits for it).
    async fn moved_leader(&self, shard: u32, waiting_on: &str) -> Option<String> {
        let Ok(mut st) = self.inner.watch.state.try_lock() else {
            return None;
        };
        if st.due(waiting_on, Instant::now()) {
            let ask = self.next_endpoint_where(|ep| ep != waiting_on)?;
            let answer =
                tokio::time::timeout(leader_watch::CHECK_TIMEOUT, self.status_of(&ask)).await;
            let done = Instant::now();
            st.tried = Some((done, ask.clone()));
            match answer {
                Ok(Ok(s)) => st.view = Some(View::of(&ask, &s, done)),
                // A refusal (say, a token without the status role) says nothing about the node.
                Ok(Err(_)) => return None,
                // No answer: passed over, so the next check asks another node.
                Err(_) => {
                    self.suspect(&ask);
                    return None;
                }
            }
        }
        let now = Instant::now();
        // A named leader that itself just failed is no way out (the namer has not noticed).
        st.view
            .as_ref()
            .filter(|v| v.usable(waiting_on, now))?
            .moved(shard, waiting_on)
            .filter(|l| !self.is_suspect(l))
            .map(String::from)
    }

    pub(crate) fn header(&self, sequence: u64, acked_below: u64) -> Option<RequestHeader> {
        Some(RequestHeader {
            cluster_id: self.inner.opts.cluster_id.clone(),
            client_id: self.inner.client_id,
            sequence,
            acked_below,
            forwarded: false,
        })
    }

    /// Runs a write under a fresh sequence number, kept for all its retries.
    pub(crate) async fn write<T, F, Fut>(&self, key: &[u8], f: F) -> Result<T, Error>
    where
        F: Fn(Conn, Option<RequestHeader>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let (seq, acked_below) = self.begin_write();
        let header = self.header(seq, acked_below);
        let result = self.call(Some(key), true, |c| f(c, header.clone())).await;
        self.end_write(seq);
        result
    }

    /// Takes a write's sequence and the watermark to send with it: every sequence below the
    /// watermark has been answered. The sequence is taken and registered in flight under one
    /// lock; otherwise a concurrent write could compute its watermark past a sequence that is
    /// taken but not yet registered, and the server would refuse that write as a stale
    /// duplicate.
    fn begin_write(&self) -> (u64, u64) {
        match self.inner.in_flight.lock() {
            Ok(mut s) => {
                let seq = self.inner.next_sequence.fetch_add(1, Ordering::Relaxed);
                s.insert(seq);
                (seq, s.first().copied().unwrap_or(seq))
            }
            // Claim nothing was answered: the server then forgets nothing for this client.
            Err(_) => (self.inner.next_sequence.fetch_add(1, Ordering::Relaxed), 0),
        }
    }

    fn end_write(&self, seq: u64) {
        if let Ok(mut s) = self.inner.in_flight.lock() {
            s.remove(&seq);
        }
    }

    /// Reads a key.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>, Error> {
        let key = key.into();
        let req = GetRequest {
            header: self.header(0, 0),
            key: key.clone(),
            serializable: consistency == ReadConsistency::Serializable,
        };
        let r = self
            .call(Some(&key), false, |c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        Ok(r.found.then_some(Versioned {
            value: r.value,
            version: r.version,
        }))
    }

    /// Writes a key; returns its new version.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64, Error> {
        let (key, value) = (key.into(), value.into());
        let r = self
            .write(&key, |c, header| {
                let req = PutRequest {
                    header,
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                };
                async move { c.put(req).await }
            })
            .await?;
        Ok(r.version)
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, Error> {
        let key = key.into();
        let r = self
            .write(&key, |c, header| {
                let req = DeleteRequest {
                    header,
                    key: key.clone(),
                };
                async move { c.delete(req).await }
            })
            .await?;
        Ok(r.existed)
    }

    /// Compare-and-swap: when the key matches `expect`, stores `new_value` (or deletes the key
    /// when `None`).
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expect: Expect,
        new_value: Option<Bytes>,
    ) -> Result<CasOutcome, Error> {
        let key = key.into();
        let expected = expect.to_wire();
        let r = self
            .write(&key, |c, header| {
                let req = CompareAndSwapRequest {
                    header,
                    key: key.clone(),
                    expected: Some(expected.clone()),
                    new_value: new_value.clone(),
                    ..Default::default()
                };
                async move { c.compare_and_swap(req).await }
            })
            .await?;
        Ok(CasOutcome {
            succeeded: r.succeeded,
            current: r.found.then_some(Versioned {
                value: r.current_value,
                version: r.current_version,
            }),
            new_version: r.new_version,
        })
    }

    /// Keys starting with `prefix`, in key order, across all shards (0 = server maximum).
    pub async fn scan(
        &self,
        prefix: impl Into<Bytes>,
        limit: u32,
        consistency: ReadConsistency,
    ) -> Result<ScanPage, Error> {
        let req = ScanRequest {
            header: self.header(0, 0),
            prefix: prefix.into(),
            limit,
            serializable: consistency == ReadConsistency::Serializable,
            shard: None,
        };
        // A scan reads every shard, so its attempts get longer than a point request's.
        let attempt = self
            .inner
            .opts
            .attempt_timeout
            .max(SCAN_ATTEMPT_TIMEOUT_MIN);
        let r = self
            .call_within(None, false, attempt, |c| {
                let req = c.request(req.clone());
                let mut kv = c.kv;
                async move { kv.scan(req).await }
            })
            .await?;
        Ok(ScanPage {
            items: r
                .items
                .into_iter()
                .map(|i| KeyValue {
                    key: i.key,
                    value: i.value,
                    version: i.version,
                })
                .collect(),
            truncated: r.truncated,
        })
    }

    /// One node's view of the cluster.
    pub async fn status_of(&self, endpoint: &str) -> Result<StatusResponse, Error> {
        let mut c = ClusterClient::new(self.channel(endpoint)?);
        let budget = self.inner.opts.attempt_timeout.min(Duration::from_secs(3));
        match tokio::time::timeout(budget, c.status(StatusRequest {})).await {
            Ok(Ok(r)) => {
                let s = r.into_inner();
                self.learn(&s);
                Ok(s)
            }
            Ok(Err(s)) => Err(classify(&s, false)
                .refusal()
                .unwrap_or_else(|| Error::Unavailable(format!("{endpoint}: {}", s.message())))),
            Err(_) => Err(Error::Unavailable(format!(
                "{endpoint}: no answer within {budget:?}"
            ))),
        }
    }

    /// The settings this client was created with.
    /// What a failed call says about TLS, if anything (see `tls.rs`).
    pub(crate) fn tls_failure(&self, status: &Status) -> Option<Error> {
        crate::tls::tls_failure(status, self.inner.tls.is_some())
    }

    /// Whether this client speaks TLS.
    pub(crate) fn tls_on(&self) -> bool {
        self.inner.tls.is_some()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.opts.endpoints
    }
}

/// `pause` stretched by a random 0..50 %, so refused clients do not come back in step.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(1.0 + rand::random_range(0.0..0.5))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// No write is ever sent with a watermark above the sequence of another write still in
    /// flight (the server would refuse that one as a stale duplicate).
    #[test]
    fn suspicion_doubles_with_each_failure_in_a_row_up_to_a_cap() {
        assert_eq!(suspect_for(1), SUSPECT_FOR);
        assert_eq!(suspect_for(2), SUSPECT_FOR * 2);
        assert_eq!(suspect_for(4), SUSPECT_FOR * 8);
        assert_eq!(suspect_for(5), SUSPECT_FOR_MAX);
        assert_eq!(suspect_for(1_000), SUSPECT_FOR_MAX);
    }

    #[test]
    fn a_watermark_never_passes_a_write_in_flight() {
        let client = Client::new(ClientOptions::new(vec!["127.0.0.1:1".into()])).expect("client");
        let clock = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..8 {
            let (client, clock) = (client.clone(), clock.clone());
            threads.push(std::thread::spawn(move || {
                let mut log = Vec::new();
                for _ in 0..2_000 {
                    let (seq, watermark) = client.begin_write();
                    let sent = clock.fetch_add(1, Ordering::SeqCst);
                    std::thread::yield_now();
                    let done = clock.fetch_add(1, Ordering::SeqCst);
                    client.end_write(seq);
                    log.push((seq, watermark, sent, done));
                }
                log
            }));
        }
        let all: Vec<(u64, u64, u64, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        let mut by_seq = all.clone();
        by_seq.sort();
        for &(seq, watermark, sent, _) in &all {
            // Every sequence below the watermark was answered before this write was sent.
            for &(other, _, _, done) in by_seq.iter().take_while(|x| x.0 < watermark) {
                assert!(
                    done < sent || other == seq,
                    "write {seq} sent with watermark {watermark} while write {other} was in flight"
                );
            }
        }
    }
}
