//! Cluster administration through the client: membership steps and shard backups.
//!
//! Each request goes to the shard's leader (following NOT_LEADER hints), is retried within
//! the client's request deadline, and gives up at once on an answer that says the request is
//! invalid. Membership steps are idempotent, so retrying one whose answer was lost is safe; a
//! backup stream that breaks is reported, never silently shortened.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use ringkv_proto::pb::cluster_client::ClusterClient;
use ringkv_proto::pb::{BackupRequest, MemberChangeRequest, MemberChangeResponse};
use tonic::{Response, Status};

use crate::client::{Client, Svc};
use crate::error::Error;
use crate::outcome::{Failure, classify};

/// One attempt of an administrative call may take this long (a step waits for Raft; a backup
/// for its snapshot to be built).
const ADMIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(150);
/// A backup stream that delivers nothing for this long is abandoned.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A membership change of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add the node at client address `addr` (`HOST:PORT`); `peer_addr` is where it serves
    /// Raft (its `--peer-listen`), empty for the default (`addr`'s port + 1000).
    Add { addr: String, peer_addr: String },
    /// Remove the node; its id is retired.
    Remove,
}

impl Client {
    fn cluster_client(&self, addr: &str) -> Result<ClusterClient<Svc>, Error> {
        Ok(ClusterClient::new(self.channel(addr)?).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Runs `f` against the leader of a shard, following redirects, within the deadline.
    async fn on_leader<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(ClusterClient<Svc>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.options().request_timeout;
        let mut target = self.rotate_endpoint();
        let mut last = String::from("no attempt made");
        let mut backoff = Duration::from_millis(50);
        for _ in 0..self.options().max_attempts.max(1) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let budget = ADMIN_ATTEMPT_TIMEOUT.min(deadline - now);
            match tokio::time::timeout(budget, f(self.cluster_client(&target)?)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) if self.tls_failure(&status).is_some() => {
                    return Err(self
                        .tls_failure(&status)
                        .unwrap_or_else(|| Error::Unavailable("TLS failure".into())));
                }
                Ok(Err(status))
                    if !self.tls_on()
                        && status
                            .metadata()
                            .get(ringkv_proto::meta::ERROR_KIND)
                            .is_none()
                        && crate::tls::speaks_tls(&target).await =>
                {
                    return Err(crate::tls::server_speaks_tls(&target));
                }
                Ok(Err(status)) => match classify(&status, false) {
                    f @ (Failure::Unauthenticated(_)
                    | Failure::PermissionDenied(_)
                    | Failure::Unsupported { .. }) => {
                        if let Some(e) = f.refusal() {
                            return Err(e);
                        }
                    }
                    Failure::Invalid(m) => return Err(Error::Invalid(m)),
                    Failure::DiskFull { node, message } => {
                        return Err(Error::DiskFull { node, message });
                    }
                    Failure::Redirect(addr) if addr != target => {
                        last = format!("redirected to {addr}");
                        target = addr;
                        continue;
                    }
                    Failure::Redirect(addr) => last = format!("redirected to {addr} again"),
                    Failure::Definite(m)
                    | Failure::Unknown(m)
                    | Failure::Overloaded { message: m, .. } => last = format!("{target}: {m}"),
                },
                Err(_) => last = format!("no answer from {target} within {budget:?}"),
            }
            target = self.rotate_endpoint();
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        Err(Error::Unavailable(last))
    }

    /// One membership step on `shard`: adds or removes `node_id` as `change` says. Call again
    /// until the answer says `done`.
    pub async fn member_step(
        &self,
        shard: u32,
        node_id: u64,
        change: &MemberChange,
    ) -> Result<MemberChangeResponse, Error> {
        let (addr, peer_addr, add) = match change {
            MemberChange::Add { addr, peer_addr } => (addr.clone(), peer_addr.clone(), true),
            MemberChange::Remove => (String::new(), String::new(), false),
        };
        let req = MemberChangeRequest {
            cluster_id: self.options().cluster_id.clone(),
            shard,
            node_id,
            addr,
            peer_addr,
        };
        self.on_leader(|mut c| {
            let req = req.clone();
            async move {
                if add {
                    c.add_member(req).await
                } else {
                    c.remove_member(req).await
                }
            }
        })
        .await
    }

    /// Streams a consistent snapshot of `shard` (taken by its leader, covering every write
    /// acknowledged before the call) into `out`; returns the bytes written.
    pub async fn backup_shard(&self, shard: u32, out: &mut impl Write) -> Result<u64, Error> {
        let req = BackupRequest {
            cluster_id: self.options().cluster_id.clone(),
            shard,
        };
        let mut stream = self
            .on_leader(|mut c| {
                let req = req.clone();
                async move { c.backup(req).await }
            })
            .await?;
        let mut written = 0u64;
        loop {
            match tokio::time::timeout(CHUNK_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(chunk))) => {
                    out.write_all(&chunk.data)
                        .map_err(|e| Error::Invalid(format!("writing the backup: {e}")))?;
                    written += chunk.data.len() as u64;
                }
                Ok(Ok(None)) => return Ok(written),
                Ok(Err(s)) => {
                    return Err(Error::Unavailable(format!(
                        "shard {shard}: backup stream broke after {written} bytes: {}",
                        s.message()
                    )));
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "shard {shard}: backup stream stalled after {written} bytes"
                    )));
                }
            }
        }
    }
}
