//! Request limits and their validation. Every rejection names the limit it hit.

use crate::service::error::KvError;

/// The most ops a transaction may have whatever `--txn-ops-max` says (one log entry).
pub const TXN_OPS_CEILING: usize = 1024;
/// Hard ceilings for the configurable limits: values stay at or below 64 KiB whatever the
/// flags say, so a sled leaf of them stays below the size at which sled moves it to a blob
/// file of its own (`storage::sled_files`).
pub const VALUE_BYTES_CEILING: usize = 64 * 1024;
pub const KEY_BYTES_CEILING: usize = 16 * 1024;
pub const REQUEST_BYTES_CEILING: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub request_bytes_max: usize,
    pub scan_limit_max: usize,
    /// Compares and ops of one transaction together.
    pub txn_ops_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 4096,
            value_bytes_max: 65536,
            request_bytes_max: 1024 * 1024,
            scan_limit_max: 10_000,
            txn_ops_max: 128,
        }
    }
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::Invalid("key is empty (key_bytes_min=1)".into()));
        }
        if key.len() > self.key_bytes_max {
            return Err(KvError::Invalid(format!(
                "key is {} bytes, over the limit key_bytes_max={}",
                key.len(),
                self.key_bytes_max
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.value_bytes_max {
            return Err(KvError::Invalid(format!(
                "value is {} bytes, over the limit value_bytes_max={}",
                value.len(),
                self.value_bytes_max
            )));
        }
        Ok(())
    }

    pub fn check_request(&self, encoded_len: usize) -> Result<(), KvError> {
        if encoded_len > self.request_bytes_max {
            return Err(KvError::Invalid(format!(
                "request is {encoded_len} bytes, over the limit request_bytes_max={}",
                self.request_bytes_max
            )));
        }
        Ok(())
    }
}
