//! One history event, exactly the pinned JSON-lines shape (design §8):
//! `{"process": 3, "type": "invoke"|"ok"|"fail"|"info", "f": "read"|"write"|"cas", "key": "k1",
//! "value": ..., "time": <nanoseconds>}`.
//!
//! `write` carries `v`; `cas` carries `[expected, new]`; a `read` invocation carries `null` and
//! its `ok` the observed value (`null` = absent). Every key starts absent.

use serde::{Deserialize, Serialize};

/// Whether the event starts an operation or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation was issued.
    Invoke,
    /// It completed and took effect.
    Ok,
    /// It certainly took no effect.
    Fail,
    /// Its outcome is unknown: it may take effect any time after invocation, or never.
    Info,
}

/// The operation's function. Map and set functions are added as models grow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Read,
    Write,
    Cas,
    /// Any other function name, kept verbatim (e.g. `append`, `add`).
    #[serde(untagged)]
    Other(String),
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub f: Function,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: serde_json::Value,
    /// Monotonic nanoseconds since the start of the run.
    pub time: u64,
}
