//! From events to operations: reads a history file in any supported format, validates it, and
//! pairs each invocation with its completion.
//!
//! Rules (design §8 and the corpora's `VERDICTS.md`): a `fail` operation certainly had no
//! effect and is dropped; an `info` completion, or an invocation never completed, leaves the
//! operation open to the end of the history (it may take effect any time after its invocation,
//! or never). Pairing is by process. A completion without an invocation, a second invocation
//! while one is in flight for the same process, and time going backwards are input errors that
//! name the line.

use std::collections::HashMap;

use serde_json::Value;

use super::edn::{self, Edn};
use super::event::{Event, EventType, Function};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Decide from the content.
    Auto,
    /// RingKV JSON lines (design §8).
    Jsonl,
    /// Jepsen's `INFO  jepsen.util - <process> :<type> :<f> <value>` log lines.
    JepsenLog,
    /// EDN operation maps: a Knossos history (one vector or list) or one map per line.
    Edn,
}

/// A bad history file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HistoryError {
    pub line: usize,
    pub message: String,
}

fn bad(line: usize, message: impl Into<String>) -> HistoryError {
    HistoryError {
        line,
        message: message.into(),
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Index in [`History::ops`].
    pub id: usize,
    pub process: u64,
    /// The key it touches (`""` when the format has no keys: a single register).
    pub key: String,
    /// Function name: read, write, cas, get, put, append, ...
    pub f: String,
    /// The invocation's argument (write value, `[expected, new]`, appended string).
    pub input: Value,
    /// What an `ok` completion returned (read results); `null` otherwise.
    pub output: Value,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown (`info` or never completed).
    pub ret: Option<u64>,
    pub call_line: usize,
    pub ret_line: Option<usize>,
}

impl Operation {
    /// True when the outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none()
    }
}

/// A validated history: operations in invocation order.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Operation>,
    /// Operations dropped because they failed (no effect).
    pub failed: usize,
}

/// One event as read from any format, before pairing.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub line: usize,
    pub process: u64,
    pub kind: EventType,
    pub f: String,
    pub key: String,
    pub value: Value,
    pub time: u64,
}

fn function_name(f: &Function) -> String {
    match f {
        Function::Read => "read".into(),
        Function::Write => "write".into(),
        Function::Cas => "cas".into(),
        Function::Other(s) => s.clone(),
    }
}

/// Guesses the format from the first non-blank line.
pub fn detect(text: &str) -> Format {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.contains("jepsen.util") {
        Format::JepsenLog
    } else if first.starts_with('{') && serde_json::from_str::<Value>(first).is_ok() {
        Format::Jsonl
    } else {
        Format::Edn
    }
}

/// Parses `text` in `format` into a validated history.
pub fn parse(text: &str, format: Format) -> Result<History, HistoryError> {
    let format = if format == Format::Auto {
        detect(text)
    } else {
        format
    };
    let events = match format {
        Format::Jsonl | Format::Auto => read_jsonl(text)?,
        Format::JepsenLog => read_jepsen_log(text)?,
        Format::Edn => read_edn(text)?,
    };
    pair(&events)
}

/// Converts pinned-format events (e.g. recorded by the harness) into raw events; `line` is the
/// 1-based position.
pub fn from_events(events: &[Event]) -> Vec<RawEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| RawEvent {
            line: i + 1,
            process: e.process,
            kind: e.kind,
            f: function_name(&e.f),
            key: e.key.clone().unwrap_or_default(),
            value: e.value.clone(),
            time: e.time,
        })
        .collect()
}

fn read_jsonl(text: &str) -> Result<Vec<RawEvent>, HistoryError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let e: Event =
            serde_json::from_str(l).map_err(|e| bad(line, format!("not a history event: {e}")))?;
        out.push(RawEvent {
            line,
            process: e.process,
            kind: e.kind,
            f: function_name(&e.f),
            key: e.key.unwrap_or_default(),
            value: e.value,
            time: e.time,
        });
    }
    Ok(out)
}

/// EDN scalar or vector → JSON (keywords become strings).
fn edn_to_json(v: &Edn) -> Value {
    match v {
        Edn::Nil => Value::Null,
        Edn::Bool(b) => Value::Bool(*b),
        Edn::Int(i) => Value::from(*i),
        Edn::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Edn::Str(s) | Edn::Symbol(s) => Value::String(s.clone()),
        Edn::Keyword(k) => Value::String(format!(":{k}")),
        Edn::Vector(items) | Edn::List(items) => {
            Value::Array(items.iter().map(edn_to_json).collect())
        }
        Edn::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), edn_to_json(v))).collect()),
    }
}

fn kind_of(s: &str, line: usize) -> Result<EventType, HistoryError> {
    match s {
        "invoke" => Ok(EventType::Invoke),
        "ok" => Ok(EventType::Ok),
        "fail" => Ok(EventType::Fail),
        "info" => Ok(EventType::Info),
        other => Err(bad(line, format!("unknown event type {other:?}"))),
    }
}

fn read_edn(text: &str) -> Result<Vec<RawEvent>, HistoryError> {
    let maps = edn::history_maps(text).map_err(|e| bad(e.line, e.message))?;
    let mut out = Vec::new();
    for (n, (line, m)) in maps.into_iter().enumerate() {
        let process = match m.get("process") {
            Some(Edn::Int(p)) if *p >= 0 => *p as u64,
            // Fault-injector notes (`:nemesis`) are not client operations.
            Some(Edn::Keyword(_)) => continue,
            other => return Err(bad(line, format!("bad :process {other:?}"))),
        };
        let kind = match m.get("type") {
            Some(Edn::Keyword(k)) => kind_of(k, line)?,
            other => return Err(bad(line, format!("bad :type {other:?}"))),
        };
        let f = match m.get("f") {
            Some(Edn::Keyword(k)) => k.clone(),
            other => return Err(bad(line, format!("bad :f {other:?}"))),
        };
        let key = match m.get("key") {
            Some(Edn::Str(k)) => k.clone(),
            Some(other @ (Edn::Int(_) | Edn::Keyword(_))) => edn_to_json(other).to_string(),
            _ => String::new(),
        };
        out.push(RawEvent {
            line,
            process,
            kind,
            f,
            key,
            value: m.get("value").map(edn_to_json).unwrap_or(Value::Null),
            // File order is the history's order (Knossos's `:time` may go backwards).
            time: n as u64,
        });
    }
    Ok(out)
}

fn read_jepsen_log(text: &str) -> Result<Vec<RawEvent>, HistoryError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        let Some((_, rest)) = l.split_once("jepsen.util - ") else {
            if l.trim().is_empty() {
                continue;
            }
            return Err(bad(line, "not a jepsen.util log line"));
        };
        let mut parts = rest.split_whitespace();
        let (Some(p), Some(t), Some(f)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(line, "expected <process> :<type> :<f> <value>"));
        };
        let value_text: Vec<&str> = parts.collect();
        let Ok(process) = p.parse::<u64>() else {
            if p.starts_with(':') {
                continue; // :nemesis
            }
            return Err(bad(line, format!("bad process {p:?}")));
        };
        let kind = kind_of(t.trim_start_matches(':'), line)?;
        let value = match edn::parse_all(&value_text.join(" ")) {
            Ok(forms) if forms.len() == 1 => edn_to_json(&forms[0].value),
            Ok(forms) if forms.is_empty() => Value::Null,
            _ => Value::String(value_text.join(" ")),
        };
        out.push(RawEvent {
            line,
            process,
            kind,
            f: f.trim_start_matches(':').to_string(),
            key: String::new(),
            value,
            time: line as u64,
        });
    }
    Ok(out)
}

/// Pairs invocations with completions, drops failed operations and validates the history.
pub fn pair(events: &[RawEvent]) -> Result<History, HistoryError> {
    let mut ops: Vec<Operation> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut retired: HashMap<u64, usize> = HashMap::new();
    let mut dropped = vec![];
    let mut last_time = 0u64;
    for e in events {
        if e.time < last_time {
            return Err(bad(
                e.line,
                format!("time goes backwards ({} after {last_time})", e.time),
            ));
        }
        last_time = e.time;
        match e.kind {
            EventType::Invoke => {
                if let Some(&i) = open.get(&e.process) {
                    return Err(bad(
                        e.line,
                        format!(
                            "process {} invokes while its operation from line {} is in flight",
                            e.process, ops[i].call_line
                        ),
                    ));
                }
                if let Some(&l) = retired.get(&e.process) {
                    return Err(bad(
                        e.line,
                        format!(
                            "process {} invokes again after its unknown outcome on line {l}",
                            e.process
                        ),
                    ));
                }
                open.insert(e.process, ops.len());
                ops.push(Operation {
                    id: ops.len(),
                    process: e.process,
                    key: e.key.clone(),
                    f: e.f.clone(),
                    input: e.value.clone(),
                    output: Value::Null,
                    call: e.time,
                    ret: None,
                    call_line: e.line,
                    ret_line: None,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(i) = open.remove(&e.process) else {
                    return Err(bad(
                        e.line,
                        format!("completion for process {} without an invocation", e.process),
                    ));
                };
                let op = &mut ops[i];
                if op.f != e.f {
                    return Err(bad(
                        e.line,
                        format!(
                            "completion {:?} does not match invocation {:?} on line {}",
                            e.f, op.f, op.call_line
                        ),
                    ));
                }
                if op.input.is_null() && op.f != "read" && op.f != "get" {
                    op.input = e.value.clone();
                }
                match e.kind {
                    EventType::Ok => {
                        op.output = e.value.clone();
                        op.ret = Some(e.time);
                        op.ret_line = Some(e.line);
                    }
                    EventType::Fail => dropped.push(i),
                    _ => {
                        op.ret_line = Some(e.line);
                        retired.insert(e.process, e.line);
                    }
                }
            }
        }
    }
    let failed = dropped.len();
    let mut keep = vec![true; ops.len()];
    for i in dropped {
        keep[i] = false;
    }
    let mut out: Vec<Operation> = ops
        .into_iter()
        .zip(keep)
        .filter_map(|(op, k)| k.then_some(op))
        .collect();
    for (i, op) in out.iter_mut().enumerate() {
        op.id = i;
    }
    Ok(History { ops: out, failed })
}
