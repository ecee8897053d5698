//! Sequential specifications the checker linearizes against, behind one trait.
//!
//! A model turns a partition's operations into its own compact operation type once
//! ([`Model::prepare`]), then the search only calls [`Model::step`], which must be a pure
//! function of (state, operation). States are hashed into the search's memo, so they should be
//! small: the register interns values into integers.
//!
//! The trait also fits a set (state: a sorted vector of elements; `add` always legal, `read`
//! legal iff equal) and a counter (state: an integer; `add n`, `read v`) when they are needed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use serde_json::Value;

use crate::history::Operation;

/// A sequential specification.
pub trait Model: Sync {
    type State: Clone + Eq + Hash + Send + Debug;
    type Op: Clone + Send + Sync + Debug;

    /// The state every partition starts in.
    fn init(&self) -> Self::State;

    /// Converts one partition's operations. `Ok(None)` for an operation that neither depends
    /// on nor changes the state (a read whose result is unknown). `Err((op id, why))` for an
    /// operation the model cannot express.
    #[allow(clippy::type_complexity)]
    fn prepare(&self, ops: &[&Operation]) -> Result<Vec<Option<Self::Op>>, (usize, String)>;

    /// The state after `op`, or `None` when `op` is illegal in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// The state for people.
    fn show(&self, state: &Self::State) -> String;
}

/// A register holding a value or nothing, with read, write and compare-and-swap. Starts absent;
/// a read of `null` means "absent".
#[derive(Debug, Default)]
pub struct Register {
    /// Interned value id → its JSON text, filled by `prepare` (per partition, so each checker
    /// thread owns its model).
    names: std::sync::Mutex<Vec<String>>,
}

/// A register operation over interned values (`None` = absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    Read(Option<u32>),
    Write(Option<u32>),
    Cas(Option<u32>, Option<u32>),
}

impl Register {
    pub fn new() -> Self {
        Self::default()
    }
}

fn intern(ids: &mut HashMap<String, u32>, names: &mut Vec<String>, v: &Value) -> Option<u32> {
    if v.is_null() {
        return None;
    }
    let text = v.to_string();
    Some(*ids.entry(text.clone()).or_insert_with(|| {
        names.push(text);
        (names.len() - 1) as u32
    }))
}

impl Model for Register {
    type State = Option<u32>;
    type Op = RegisterOp;

    fn init(&self) -> Option<u32> {
        None
    }

    fn prepare(&self, ops: &[&Operation]) -> Result<Vec<Option<RegisterOp>>, (usize, String)> {
        let mut ids = HashMap::new();
        let mut names = self
            .names
            .lock()
            .map_err(|_| (0, "model lock poisoned".to_string()))?;
        for (i, n) in names.iter().enumerate() {
            ids.insert(n.clone(), i as u32);
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op.f.as_str() {
                "read" => {
                    if op.is_unknown() {
                        None
                    } else {
                        Some(RegisterOp::Read(intern(&mut ids, &mut names, &op.output)))
                    }
                }
                "write" => Some(RegisterOp::Write(intern(&mut ids, &mut names, &op.input))),
                "cas" => match op.input.as_array().map(Vec::as_slice) {
                    Some([from, to]) => Some(RegisterOp::Cas(
                        intern(&mut ids, &mut names, from),
                        intern(&mut ids, &mut names, to),
                    )),
                    _ => {
                        return Err((op.id, format!("cas needs [expected, new], got {}", op.input)));
                    }
                },
                other => {
                    return Err((op.id, format!("the register model has no {other:?} (use --model kv for get/put/append)")));
                }
            });
        }
        Ok(out)
    }

    fn step(&self, state: &Option<u32>, op: &RegisterOp) -> Option<Option<u32>> {
        match *op {
            RegisterOp::Read(v) => (v == *state).then_some(*state),
            RegisterOp::Write(v) => Some(v),
            RegisterOp::Cas(from, to) => (from == *state).then_some(to),
        }
    }

    fn show(&self, state: &Option<u32>) -> String {
        match state {
            None => "absent".into(),
            Some(id) => self
                .names
                .lock()
                .ok()
                .and_then(|n| n.get(*id as usize).cloned())
                .unwrap_or_else(|| format!("#{id}")),
        }
    }
}

/// A string per key with get, put and append (Porcupine's `kv` histories). Starts `""`, and a
/// get of `""` also means "never written".
#[derive(Debug, Default)]
pub struct StringKv;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Get(String),
    Put(String),
    Append(String),
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Model for StringKv {
    type State = String;
    type Op = KvOp;

    fn init(&self) -> String {
        String::new()
    }

    fn prepare(&self, ops: &[&Operation]) -> Result<Vec<Option<KvOp>>, (usize, String)> {
        ops.iter()
            .map(|op| match op.f.as_str() {
                "get" | "read" => Ok((!op.is_unknown()).then(|| KvOp::Get(text(&op.output)))),
                "put" | "write" => Ok(Some(KvOp::Put(text(&op.input)))),
                "append" => Ok(Some(KvOp::Append(text(&op.input)))),
                other => Err((op.id, format!("the kv model has no {other:?}"))),
            })
            .collect()
    }

    fn step(&self, state: &String, op: &KvOp) -> Option<String> {
        match op {
            KvOp::Get(v) => (v == state).then(|| state.clone()),
            KvOp::Put(v) => Some(v.clone()),
            KvOp::Append(v) => Some(format!("{state}{v}")),
        }
    }

    fn show(&self, state: &String) -> String {
        format!("{state:?}")
    }
}
