//! The checker against a brute-force checker on 10,000+ random small register histories
//! (seeded simulation, with unknown outcomes, half of them mutated to break linearizability).
//! Set `RINGKV_SEED` to replay a run; the seed is printed.

use ringkv_jepsen::checker::synth::{SynthOptions, linearizable, mutate_a_read};
use ringkv_jepsen::checker::{CheckOptions, Validity, check_history};
use ringkv_jepsen::history::{Operation, ops};
use serde_json::Value;

/// Exhaustive search: some order of all completed operations and any subset of the
/// unknown-outcome ones, respecting real time, that a register accepts.
fn brute_force(ops: &[Operation]) -> bool {
    // Reads with unknown outcome constrain nothing.
    let ops: Vec<&Operation> = ops
        .iter()
        .filter(|o| !(o.f == "read" && o.is_unknown()))
        .collect();
    fn go(ops: &[&Operation], done: &mut Vec<bool>, value: &Value) -> bool {
        let required_left = ops
            .iter()
            .zip(done.iter())
            .any(|(o, d)| !d && !o.is_unknown());
        if !required_left {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            let o = ops[i];
            // Every pending operation that returned before `o` was invoked must come first.
            let blocked = ops
                .iter()
                .zip(done.iter())
                .any(|(p, d)| !d && p.ret.is_some_and(|r| r < o.call));
            if blocked {
                continue;
            }
            let next = match o.f.as_str() {
                "read" => (o.output == *value).then(|| value.clone()),
                "write" => Some(o.input.clone()),
                "cas" => (o.input[0] == *value).then(|| o.input[1].clone()),
                _ => None,
            };
            if let Some(v) = next {
                done[i] = true;
                if go(ops, done, &v) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], &Value::Null)
}

#[test]
fn agrees_with_brute_force_on_random_histories() {
    const CASES: u64 = 12_000;
    let seed: u64 = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    eprintln!("seed {seed} (set RINGKV_SEED to replay)");
    let (mut valid, mut invalid, mut with_unknown) = (0, 0, 0);
    for case in 0..CASES {
        let s = seed.wrapping_mul(1_000_003).wrapping_add(case);
        let mut events = linearizable(&SynthOptions {
            processes: 3,
            ops: 2 + (case % 6) as usize,
            keys: 1,
            info_rate: 0.25,
            values: 3,
            seed: s,
        });
        if case % 2 == 1 {
            mutate_a_read(&mut events, s, 3);
        }
        let history = ops::pair(&ops::from_events(&events)).expect("well-formed");
        let expected = brute_force(&history.ops);
        let got = check_history(&history, &CheckOptions::default()).expect("checkable");
        let want = if expected {
            Validity::Valid
        } else {
            Validity::Invalid
        };
        assert_eq!(
            got.valid, want,
            "case {case} (seed {s}): {events:#?}\n{}",
            got.reason
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
        if history.ops.iter().any(Operation::is_unknown) {
            with_unknown += 1;
        }
    }
    eprintln!(
        "{CASES} histories: {valid} linearizable, {invalid} not, {with_unknown} with unknown outcomes"
    );
    assert!(
        invalid > CASES / 10 && valid > CASES / 10,
        "both verdicts well represented"
    );
    assert!(with_unknown > CASES / 10);
}

#[test]
fn generated_histories_are_linearizable_by_construction() {
    for seed in 0..50 {
        let events = linearizable(&SynthOptions {
            processes: 8,
            ops: 300,
            keys: 3,
            info_rate: 0.05,
            values: 5,
            seed,
        });
        let history = ops::pair(&ops::from_events(&events)).expect("well-formed");
        let v = check_history(&history, &CheckOptions::default()).expect("checkable");
        assert_eq!(v.valid, Validity::Valid, "seed {seed}: {}", v.reason);
    }
}
