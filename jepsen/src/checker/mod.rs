//! The linearizability checker: library API shared by `ringkv-jepsen check` and the harness.
//!
//! CONTRACT (the harness relies on these names and shapes; extend, do not break):
//! `check(&[Event], &CheckOptions) -> Verdict`, `Verdict { valid: Validity, .. }` serializing
//! `valid` as `true`, `false` or `"unknown"`, `Verdict::exit_code()`, and
//! `render_html(&[Event], &Verdict) -> String`.

pub mod cli;

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::history::Event;

/// Which sequential specification the history is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModelKind {
    /// Per-key register with read, write and cas.
    #[default]
    Register,
}

/// Options of one check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub model: ModelKind,
    /// Give up with `Validity::Unknown` after this long; `None` means no limit.
    pub time_limit: Option<Duration>,
}

/// The three possible answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

/// The checker's answer, printed as JSON by `ringkv-jepsen check`.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub valid: Validity,
    /// Why the answer is what it is, in one sentence.
    pub reason: String,
}

impl Verdict {
    /// Process exit code per design §8: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(&self) -> u8 {
        match self.valid {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }
}

/// Checks a history. Placeholder until the search lands: always `Unknown`.
pub fn check(_events: &[Event], _opts: &CheckOptions) -> Verdict {
    Verdict {
        valid: Validity::Unknown,
        reason: "checker not implemented yet".into(),
    }
}

/// Renders a self-contained HTML timeline of the history with the verdict's anomaly marked.
pub fn render_html(_events: &[Event], verdict: &Verdict) -> String {
    format!(
        "<!doctype html><title>verdict</title><p>{}</p>",
        verdict.reason
    )
}
