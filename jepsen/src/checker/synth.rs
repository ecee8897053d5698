//! Synthetic register histories for tests and benchmarks, from a seeded simulation.
//!
//! Processes run operations against one true register per key; each operation takes effect at
//! one instant between its invocation and completion (so the history is linearizable by
//! construction), and some writes and CASes end with an unknown outcome (`info`), having taken
//! effect or not at random; their process then retires and a fresh id replaces it. Same
//! options and seed → same history.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::history::{Event, EventType, Function};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub processes: usize,
    pub ops: usize,
    pub keys: usize,
    /// Fraction of writes and CASes whose outcome is unknown.
    pub info_rate: f64,
    /// Distinct values written.
    pub values: u32,
    pub seed: u64,
}

struct InFlight {
    process: u64,
    key: usize,
    f: Function,
    input: Value,
    /// Set once the operation has taken effect: what it returned.
    result: Option<Value>,
    unknown: bool,
    cas_ok: bool,
}

/// A linearizable history.
pub fn linearizable(o: &SynthOptions) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut regs: Vec<Option<u32>> = vec![None; o.keys.max(1)];
    let mut slots: Vec<Option<InFlight>> = (0..o.processes.max(1)).map(|_| None).collect();
    let mut ids: Vec<u64> = (0..o.processes.max(1) as u64).collect();
    let mut next_id = ids.len() as u64;
    let mut events = Vec::new();
    let mut started = 0;
    let mut t = 0u64;
    let key_name = |k: usize| format!("k{k}");
    while started < o.ops || slots.iter().any(Option::is_some) {
        t += 1;
        let s = rng.random_range(0..slots.len());
        match &mut slots[s] {
            None if started < o.ops => {
                started += 1;
                let key = rng.random_range(0..regs.len());
                let (f, input) = match rng.random_range(0..3) {
                    0 => (Function::Read, Value::Null),
                    1 => (Function::Write, json!(rng.random_range(0..o.values.max(1)))),
                    _ => {
                        let from = if rng.random_bool(0.5) {
                            regs[key].map(Value::from).unwrap_or(Value::Null)
                        } else {
                            json!(rng.random_range(0..o.values.max(1)))
                        };
                        (
                            Function::Cas,
                            json!([from, rng.random_range(0..o.values.max(1))]),
                        )
                    }
                };
                let unknown = f != Function::Read && rng.random_bool(o.info_rate);
                events.push(Event {
                    process: ids[s],
                    kind: EventType::Invoke,
                    f: f.clone(),
                    key: Some(key_name(key)),
                    value: input.clone(),
                    time: t,
                });
                slots[s] = Some(InFlight {
                    process: ids[s],
                    key,
                    f,
                    input,
                    result: None,
                    unknown,
                    cas_ok: false,
                });
            }
            None => {}
            Some(op) if op.result.is_none() => {
                // Take effect now (an unknown-outcome op may instead never take effect).
                if op.unknown && rng.random_bool(0.5) {
                    op.result = Some(Value::Null);
                    continue;
                }
                let reg = &mut regs[op.key];
                op.result = Some(match op.f {
                    Function::Read => reg.map(Value::from).unwrap_or(Value::Null),
                    Function::Write => {
                        *reg = op.input.as_u64().map(|v| v as u32);
                        Value::Null
                    }
                    _ => {
                        let from = op.input.get(0).and_then(Value::as_u64).map(|v| v as u32);
                        let to = op.input.get(1).and_then(Value::as_u64).map(|v| v as u32);
                        if from == *reg {
                            *reg = to;
                            op.cas_ok = true;
                        }
                        Value::Null
                    }
                });
            }
            Some(op) => {
                let (kind, value) = if op.unknown {
                    (EventType::Info, op.input.clone())
                } else {
                    match op.f {
                        Function::Read => (EventType::Ok, op.result.clone().unwrap_or(Value::Null)),
                        Function::Cas if !op.cas_ok => (EventType::Fail, op.input.clone()),
                        _ => (EventType::Ok, op.input.clone()),
                    }
                };
                events.push(Event {
                    process: op.process,
                    kind,
                    f: op.f.clone(),
                    key: Some(key_name(op.key)),
                    value,
                    time: t,
                });
                if op.unknown {
                    ids[s] = next_id;
                    next_id += 1;
                }
                slots[s] = None;
            }
        }
    }
    events
}

/// Changes one `ok` read's result to another value (the result may or may not still be
/// linearizable). Returns false when the history has no ok read.
pub fn mutate_a_read(events: &mut [Event], seed: u64, values: u32) -> bool {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let reads: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventType::Ok && e.f == Function::Read)
        .map(|(i, _)| i)
        .collect();
    if reads.is_empty() {
        return false;
    }
    let i = reads[rng.random_range(0..reads.len())];
    let old = events[i].value.clone();
    loop {
        let v = if rng.random_bool(0.2) {
            Value::Null
        } else {
            json!(rng.random_range(0..values.max(1) + 1))
        };
        if v != old {
            events[i].value = v;
            return true;
        }
    }
}
