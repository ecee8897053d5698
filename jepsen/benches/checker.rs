//! Checker speed on the two reference histories (generated, linearizable by
//! construction, seeded): a single register with 20 processes and 2,000 operations (2% unknown
//! outcomes), and 60,000 operations over 20 keys and 30 processes.
//!
//! `cargo bench -p ringkv-jepsen --bench checker`

use criterion::{Criterion, criterion_group, criterion_main};
use ringkv_jepsen::checker::synth::{SynthOptions, linearizable};
use ringkv_jepsen::checker::{CheckOptions, Validity, check_history};
use ringkv_jepsen::history::ops;

fn history(processes: usize, n: usize, keys: usize, seed: u64) -> ringkv_jepsen::history::History {
    let events = linearizable(&SynthOptions {
        processes,
        ops: n,
        keys,
        info_rate: 0.02,
        values: 50,
        seed,
    });
    ops::pair(&ops::from_events(&events)).expect("well-formed")
}

fn bench(c: &mut Criterion) {
    let single = history(20, 2_000, 1, 1);
    let many = history(30, 60_000, 20, 2);
    for (name, h) in [
        ("register_20p_2000ops_1key", &single),
        ("register_30p_60000ops_20keys", &many),
    ] {
        let v = check_history(h, &CheckOptions::default()).expect("checkable");
        assert_eq!(v.valid, Validity::Valid, "{name}: {}", v.reason);
        eprintln!(
            "{name}: {} ops, {} unknown, {} search steps",
            v.ops, v.unknown_outcome, v.search_steps
        );
        c.bench_function(name, |b| {
            b.iter(|| check_history(h, &CheckOptions::default()).map(|v| v.valid))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
