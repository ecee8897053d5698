//! Hand-written histories, one per anomaly a replicated store can show, each with its
//! expected verdict; plus input validation (exit-3 cases name the line).

use ringkv_jepsen::checker::{CheckOptions, ModelKind, Validity, check_history};
use ringkv_jepsen::history::{Format, ops};

/// Builds a JSONL history from compact rows: (process, type, f, value, time).
fn jsonl(rows: &[(u64, &str, &str, &str, u64)]) -> String {
    rows.iter()
        .map(|(p, t, f, v, time)| {
            format!(r#"{{"process": {p}, "type": "{t}", "f": "{f}", "key": "k", "value": {v}, "time": {time}}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn verdict(rows: &[(u64, &str, &str, &str, u64)]) -> (Validity, String) {
    let h = ops::parse(&jsonl(rows), Format::Jsonl).expect("valid history");
    let v = check_history(&h, &CheckOptions::default()).expect("checkable");
    (v.valid, v.reason)
}

#[test]
fn stale_read_is_caught() {
    // Stale read: write 2 completed before the read began, yet the read returns the older 1
    // (what a partitioned old leader serving local reads produces).
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "ok", "write", "1", 20),
        (1, "invoke", "write", "2", 30),
        (1, "ok", "write", "2", 40),
        (2, "invoke", "read", "null", 50),
        (2, "ok", "read", "1", 60),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn lost_write_is_caught() {
    // Lost write: an acknowledged write vanishes; a later read finds the key absent.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "ok", "write", "1", 20),
        (2, "invoke", "read", "null", 30),
        (2, "ok", "read", "null", 40),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn phantom_value_is_caught() {
    // Phantom value: a read returns 7, which nobody ever wrote.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (2, "invoke", "read", "null", 15),
        (1, "ok", "write", "1", 20),
        (2, "ok", "read", "7", 40),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn duplicate_apply_is_caught() {
    // Duplicate apply: write 1 is applied a second time (a retried request applied twice)
    // after write 2, so the value goes back to 1 although nobody wrote 1 again.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "ok", "write", "1", 20),
        (2, "invoke", "write", "2", 30),
        (2, "ok", "write", "2", 40),
        (3, "invoke", "read", "null", 50),
        (3, "ok", "read", "2", 60),
        (3, "invoke", "read", "null", 70),
        (3, "ok", "read", "1", 80),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn a_failed_write_must_not_take_effect() {
    // Failed-but-applied write: the server said the write certainly failed, yet it is read.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "5", 10),
        (1, "fail", "write", "5", 20),
        (2, "invoke", "read", "null", 30),
        (2, "ok", "read", "5", 40),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn an_unknown_write_may_appear_later_but_not_vanish() {
    // Unknown write that appears later: its outcome was unknown, a read missed it, a later read
    // sees it. Legal: it took effect between the two reads.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "info", "write", "1", 20),
        (2, "invoke", "read", "null", 30),
        (2, "ok", "read", "null", 40),
        (2, "invoke", "read", "null", 50),
        (2, "ok", "read", "1", 60),
    ]);
    assert_eq!(v, Validity::Valid, "{why}");
    // The reverse (seen, then gone with no other write) is a lost write.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "info", "write", "1", 20),
        (2, "invoke", "read", "null", 30),
        (2, "ok", "read", "1", 40),
        (2, "invoke", "read", "null", 50),
        (2, "ok", "read", "null", 60),
    ]);
    assert_eq!(v, Validity::Invalid, "{why}");
}

#[test]
fn a_compare_failure_is_not_an_observation() {
    // A failed CAS is dropped, never read as "the value differed": here the value was 1, the
    // CAS [1, 2] "failed" (e.g. timed out before proposing), and the history stays valid.
    let (v, why) = verdict(&[
        (1, "invoke", "write", "1", 10),
        (1, "ok", "write", "1", 20),
        (2, "invoke", "cas", "[1, 2]", 30),
        (2, "fail", "cas", "[1, 2]", 40),
        (3, "invoke", "read", "null", 50),
        (3, "ok", "read", "1", 60),
    ]);
    assert_eq!(v, Validity::Valid, "{why}");
}

#[test]
fn bad_input_names_the_line() {
    let cases = [
        // A completion without an invocation.
        (
            jsonl(&[(1, "ok", "write", "1", 10)]),
            1,
            "without an invocation",
        ),
        // Two operations in flight for one process.
        (
            jsonl(&[
                (1, "invoke", "write", "1", 10),
                (1, "invoke", "read", "null", 20),
            ]),
            2,
            "in flight",
        ),
        // Time going backwards.
        (
            jsonl(&[(1, "invoke", "write", "1", 10), (1, "ok", "write", "1", 5)]),
            2,
            "backwards",
        ),
        // Not JSON at all.
        (
            "{\"process\": 1}\nnot json".to_string(),
            1,
            "not a history event",
        ),
    ];
    for (text, line, what) in cases {
        let e = ops::parse(&text, Format::Jsonl).expect_err("must be refused");
        assert_eq!(e.line, line, "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    // The register model refuses functions it does not know.
    let h = ops::parse(
        &jsonl(&[
            (1, "invoke", "append", "\"x\"", 10),
            (1, "ok", "append", "\"x\"", 20),
        ]),
        Format::Jsonl,
    )
    .expect("parse");
    let e = check_history(&h, &CheckOptions::default()).expect_err("unknown function");
    assert_eq!(e.line, 1);
    let kv = CheckOptions {
        model: ModelKind::Kv,
        ..Default::default()
    };
    assert_eq!(
        check_history(&h, &kv).expect("kv model").valid,
        Validity::Valid
    );
}
