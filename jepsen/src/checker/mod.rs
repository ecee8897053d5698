//! The linearizability checker: library API shared by `ringkv-jepsen check` and the harness.
//!
//! A history is split by key (P-compositionality: it is linearizable iff every key's
//! sub-history is); keys are checked in parallel on all cores, smallest first, and the first
//! key proven non-linearizable stops the others. Each key is searched by [`wgl`]. A time limit
//! and a memory cap turn a search that would run away into `unknown`, never a hang.
//!
//! CONTRACT (the harness relies on these names and shapes; extend, do not break):
//! `check(&[Event], &CheckOptions) -> Verdict`, `Verdict { valid: Validity, .. }` serializing
//! `valid` as `true`, `false` or `"unknown"`, `Verdict::exit_code()`, and
//! `render_html(&[Event], &Verdict) -> String`.

pub mod cli;
pub mod html;
pub mod model;
pub mod synth;
pub mod wgl;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::history::{Event, History, Operation, ops};
use model::{Model, Register, StringKv};
use wgl::{Bounds, Entry, Outcome};

/// Which sequential specification the history is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Per-key register with read, write and cas (absent at first; a `null` read = absent).
    #[default]
    Register,
    /// Per-key string with get, put and append (Porcupine's kv histories).
    Kv,
}

/// Options of one check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub model: ModelKind,
    /// Give up with `Validity::Unknown` after this long; `None` means no limit.
    pub time_limit: Option<Duration>,
    /// Memory the search memos may use together before the answer becomes unknown.
    pub memo_bytes_max: u64,
    /// Threads checking keys in parallel (0 = one per core).
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            model: ModelKind::Register,
            time_limit: None,
            memo_bytes_max: 1 << 30,
            threads: 0,
        }
    }
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

/// One operation, as shown in a verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpView {
    pub id: usize,
    pub process: u64,
    pub key: String,
    pub f: String,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
    /// `ok` or `info` (unknown outcome).
    pub outcome: &'static str,
    pub call_time: u64,
    pub ret_time: Option<u64>,
    pub call_line: usize,
    pub ret_line: Option<usize>,
}

impl OpView {
    pub fn of(op: &Operation) -> Self {
        OpView {
            id: op.id,
            process: op.process,
            key: op.key.clone(),
            f: op.f.clone(),
            input: op.input.clone(),
            output: op.output.clone(),
            outcome: if op.is_unknown() { "info" } else { "ok" },
            call_time: op.call,
            ret_time: op.ret,
            call_line: op.call_line,
            ret_line: op.ret_line,
        }
    }
}

/// Why a key is not linearizable, for people.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub key: String,
    /// The operation that cannot be linearized after the longest linearizable prefix.
    pub op: Option<OpView>,
    /// Operations overlapping it in time and not in the prefix: the failing window.
    pub window: Vec<OpView>,
    /// Length of the longest linearizable prefix found.
    pub prefix_len: usize,
    /// The last operations of that prefix, in linearization order.
    pub prefix_tail: Vec<OpView>,
    /// The model's state after the prefix.
    pub state_after_prefix: String,
}

/// The checker's answer, printed as JSON by `ringkv-jepsen check`.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub valid: Validity,
    /// Why the answer is what it is, in one sentence.
    pub reason: String,
    pub model: ModelKind,
    /// Operations checked (failed ones excluded).
    pub ops: usize,
    /// Operations dropped because they certainly had no effect.
    pub failed_dropped: usize,
    /// Operations with an unknown outcome.
    pub unknown_outcome: usize,
    pub keys: usize,
    /// Keys left undecided (time or memory limit).
    pub undecided_keys: Vec<String>,
    pub search_steps: u64,
    pub elapsed_ms: u64,
    /// For a non-linearizable history: where it breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Anomaly>,
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

    fn empty(valid: Validity, reason: String, model: ModelKind) -> Self {
        Verdict {
            valid,
            reason,
            model,
            ops: 0,
            failed_dropped: 0,
            unknown_outcome: 0,
            keys: 0,
            undecided_keys: vec![],
            search_steps: 0,
            elapsed_ms: 0,
            anomaly: None,
        }
    }
}

/// A history the checker cannot judge (the model cannot express an operation).
#[derive(Debug, Clone, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ModelError {
    pub line: usize,
    pub message: String,
}

/// Checks recorded events (the harness's entry point). A malformed history is answered
/// `Unknown` with the reason.
pub fn check(events: &[Event], opts: &CheckOptions) -> Verdict {
    match ops::pair(&ops::from_events(events)) {
        Ok(h) => match check_history(&h, opts) {
            Ok(v) => v,
            Err(e) => Verdict::empty(
                Validity::Unknown,
                format!("history not checkable: {e}"),
                opts.model,
            ),
        },
        Err(e) => Verdict::empty(
            Validity::Unknown,
            format!("malformed history: {e}"),
            opts.model,
        ),
    }
}

/// Checks a parsed history.
pub fn check_history(history: &History, opts: &CheckOptions) -> Result<Verdict, ModelError> {
    match opts.model {
        ModelKind::Register => check_with(&Register::new(), history, opts),
        ModelKind::Kv => check_with(&StringKv, history, opts),
    }
}

struct Partition<O> {
    key: String,
    entries: Vec<Entry<O>>,
}

fn check_with<M: Model>(
    model: &M,
    history: &History,
    opts: &CheckOptions,
) -> Result<Verdict, ModelError> {
    let started = Instant::now();
    let deadline = opts.time_limit.map(|d| started + d);
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut parts: Vec<Partition<M::Op>> = Vec::with_capacity(by_key.len());
    for (key, ops) in &by_key {
        let prepared = model.prepare(ops).map_err(|(id, message)| ModelError {
            line: history.ops.get(id).map(|o| o.call_line).unwrap_or(0),
            message,
        })?;
        let entries = ops
            .iter()
            .zip(prepared)
            .filter_map(|(op, p)| {
                p.map(|p| Entry {
                    id: op.id,
                    call: op.call,
                    ret: op.ret,
                    op: p,
                })
            })
            .collect();
        parts.push(Partition {
            key: key.to_string(),
            entries,
        });
    }
    // Cheapest first: small keys are decided (and may refute the history) before big ones.
    parts.sort_by_key(|p| p.entries.len());

    let cancel = AtomicBool::new(false);
    let memo_bytes = AtomicU64::new(0);
    let bounds = Bounds {
        deadline,
        cancel: &cancel,
        memo_bytes_max: opts.memo_bytes_max,
        memo_bytes: &memo_bytes,
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, wgl::SearchResult)>> = Mutex::new(Vec::new());
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.threads
    }
    .min(parts.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(part) = parts.get(i) else { break };
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = wgl::search(model, &part.entries, &bounds);
                    if r.outcome == Outcome::NotLinearizable {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut all) = results.lock() {
                        all.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);

    let mut verdict = Verdict::empty(Validity::Valid, String::new(), opts.model);
    verdict.ops = history.ops.len();
    verdict.failed_dropped = history.failed;
    verdict.unknown_outcome = history.ops.iter().filter(|o| o.is_unknown()).count();
    verdict.keys = parts.len();
    verdict.search_steps = results.iter().map(|(_, r)| r.steps).sum();
    let failing = results
        .iter()
        .find(|(_, r)| r.outcome == Outcome::NotLinearizable);
    if let Some((i, r)) = failing {
        let part = &parts[*i];
        verdict.valid = Validity::Invalid;
        let anomaly = explain(model, history, part, r);
        verdict.reason = match &anomaly.op {
            Some(op) => format!(
                "key {:?} is not linearizable: after the longest linearizable prefix ({} operations, leaving {}), process {}'s {} (line {}) cannot be linearized",
                part.key,
                anomaly.prefix_len,
                anomaly.state_after_prefix,
                op.process,
                describe(op),
                op.call_line
            ),
            None => format!("key {:?} is not linearizable", part.key),
        };
        verdict.anomaly = Some(anomaly);
    } else {
        let decided: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        for (i, part) in parts.iter().enumerate() {
            let undecided = match results.iter().find(|(j, _)| *j == i) {
                Some((_, r)) => matches!(r.outcome, Outcome::Unknown(_)),
                None => !decided.contains(&i),
            };
            if undecided {
                verdict.undecided_keys.push(part.key.clone());
            }
        }
        if verdict.undecided_keys.is_empty() {
            verdict.reason = format!("all {} keys are linearizable", parts.len());
        } else {
            verdict.valid = Validity::Unknown;
            let why = results
                .iter()
                .find_map(|(_, r)| match &r.outcome {
                    Outcome::Unknown(w) => Some(w.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "not searched".into());
            verdict.reason = format!(
                "{} of {} keys undecided ({why}); no key was found non-linearizable",
                verdict.undecided_keys.len(),
                parts.len()
            );
        }
    }
    verdict.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(verdict)
}

fn describe(op: &OpView) -> String {
    match op.f.as_str() {
        "read" | "get" => format!("{} of {}", op.f, op.output),
        _ => format!("{} {}", op.f, op.input),
    }
}

/// Builds the explanation of a failed key from the search's deepest point.
fn explain<M: Model>(
    model: &M,
    history: &History,
    part: &Partition<M::Op>,
    r: &wgl::SearchResult,
) -> Anomaly {
    let op_of = |id: usize| history.ops.get(id);
    // Replay the prefix to show the state it leaves.
    let mut state = model.init();
    for id in &r.longest_prefix {
        if let Some(e) = part.entries.iter().find(|e| e.id == *id)
            && let Some(s) = model.step(&state, &e.op)
        {
            state = s;
        }
    }
    let stuck = r.stuck.and_then(op_of);
    let window = match stuck {
        Some(s) => {
            let s_ret = s.ret.unwrap_or(u64::MAX);
            part.entries
                .iter()
                .filter(|e| e.id != s.id && !r.longest_prefix.contains(&e.id))
                .filter(|e| e.call <= s_ret && e.ret.unwrap_or(u64::MAX) >= s.call)
                .filter_map(|e| op_of(e.id).map(OpView::of))
                .take(50)
                .collect()
        }
        None => vec![],
    };
    let tail_start = r.longest_prefix.len().saturating_sub(10);
    Anomaly {
        key: part.key.clone(),
        op: stuck.map(OpView::of),
        window,
        prefix_len: r.longest_prefix.len(),
        prefix_tail: r.longest_prefix[tail_start..]
            .iter()
            .filter_map(|id| op_of(*id).map(OpView::of))
            .collect(),
        state_after_prefix: model.show(&state),
    }
}

/// Renders a self-contained HTML timeline of the events with the verdict's anomaly marked.
pub fn render_html(events: &[Event], verdict: &Verdict) -> String {
    match ops::pair(&ops::from_events(events)) {
        Ok(h) => html::render(&h, verdict),
        Err(e) => html::render(
            &History::default(),
            &Verdict::empty(
                verdict.valid,
                format!("{} (history malformed: {e})", verdict.reason),
                verdict.model,
            ),
        ),
    }
}
