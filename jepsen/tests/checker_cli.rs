//! `ringkv-jepsen check` as a process: exit codes and JSON per design §8, a pathological
//! history answered `unknown` within `--time-limit` and bounded memory, and the HTML timeline
//! of a failing etcd log rendered by headless Chromium (skipped, saying so, when Chromium is
//! not installed; with `CI=true` a missing Chromium or corpus fails the test instead).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringkv-jepsen")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run ringkv-jepsen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write history");
    p
}

const VALID: &str = r#"{"process": 0, "type": "invoke", "f": "write", "key": "a", "value": 1, "time": 1}
{"process": 0, "type": "ok", "f": "write", "key": "a", "value": 1, "time": 2}
{"process": 1, "type": "invoke", "f": "read", "key": "a", "value": null, "time": 3}
{"process": 1, "type": "ok", "f": "read", "key": "a", "value": 1, "time": 4}
"#;

/// A stale read: 2 was acknowledged before the read of 1 began.
const STALE: &str = r#"{"process": 0, "type": "invoke", "f": "write", "key": "a", "value": 1, "time": 1}
{"process": 0, "type": "ok", "f": "write", "key": "a", "value": 1, "time": 2}
{"process": 0, "type": "invoke", "f": "write", "key": "a", "value": 2, "time": 3}
{"process": 0, "type": "ok", "f": "write", "key": "a", "value": 2, "time": 4}
{"process": 1, "type": "invoke", "f": "read", "key": "a", "value": null, "time": 5}
{"process": 1, "type": "ok", "f": "read", "key": "a", "value": 1, "time": 6}
"#;

#[test]
fn exit_codes_and_json_follow_the_design() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, _) = run(&[
        "check",
        write(dir.path(), "v.jsonl", VALID).to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json verdict");
    assert_eq!(v["valid"], true);

    let (code, out, _) = run(&[
        "check",
        write(dir.path(), "s.jsonl", STALE).to_str().expect("path"),
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json verdict");
    assert_eq!(v["valid"], false);
    assert_eq!(v["anomaly"]["op"]["f"], "read");
    assert_eq!(v["anomaly"]["op"]["output"], 1);

    let broken = "{\"process\": 0, \"type\": \"invoke\", \"f\": \"write\", \"key\": \"a\", \"value\": 1, \"time\": 5}\n{\"process\": 0, \"type\": \"ok\", \"f\": \"write\", \"key\": \"a\", \"value\": 1, \"time\": 4}\n";
    let (code, out, err) = run(&[
        "check",
        write(dir.path(), "b.jsonl", broken).to_str().expect("path"),
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(err.contains("line 2") && err.contains("backwards"), "{err}");
    let (code, _, err) = run(&["check", "/no/such/file"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, _) = run(&["check", "--frobnicate", "x"]);
    assert_eq!(code, 3);
}

/// Peak resident memory of a child process, sampled until it exits.
fn run_measuring_rss(args: &[&str]) -> (i32, u64, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut peak_kb = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            && let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return (
                status.code().unwrap_or(-1),
                peak_kb * 1024,
                started.elapsed(),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "checker ignored its time limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pathological_history_is_unknown_within_the_time_limit_and_bounded_memory() {
    // 40 concurrent writes with unknown outcomes, then a read of a value none of them wrote:
    // refuting it means trying every subset and order of the 40 writes.
    let mut text = String::new();
    for p in 0..40u64 {
        text.push_str(&format!(
            "{{\"process\": {p}, \"type\": \"invoke\", \"f\": \"write\", \"key\": \"k\", \"value\": {p}, \"time\": {}}}\n",
            p + 1
        ));
    }
    for p in 0..40u64 {
        text.push_str(&format!(
            "{{\"process\": {p}, \"type\": \"info\", \"f\": \"write\", \"key\": \"k\", \"value\": {p}, \"time\": {}}}\n",
            p + 100
        ));
    }
    for (i, v) in [3, 7, 11, 999].iter().enumerate() {
        let t = 200 + 2 * i as u64;
        text.push_str(&format!("{{\"process\": 100, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"k\", \"value\": null, \"time\": {t}}}\n"));
        text.push_str(&format!("{{\"process\": 100, \"type\": \"ok\", \"f\": \"read\", \"key\": \"k\", \"value\": {v}, \"time\": {}}}\n", t + 1));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "patho.jsonl", &text);
    let (code, peak, took) =
        run_measuring_rss(&["check", "--time-limit", "3", path.to_str().expect("path")]);
    eprintln!(
        "pathological history: exit {code} after {took:?}, peak RSS {} MiB",
        peak >> 20
    );
    assert_eq!(code, 2, "unknown (exit 2) expected");
    assert!(peak < 2 << 30, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn the_html_timeline_of_a_failing_etcd_log_renders_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/histories/porcupine/jepsen/etcd_000.log"
    ));
    // etcd_000.log has 65 operations after dropping failures; the stand-in has 3.
    let (input, bars_min) = if corpus.exists() {
        (corpus, 60)
    } else {
        ringkv_tests::skip(
            "etcd_000.log: shared/histories not found; rendering a hand-written stale read instead",
        );
        (write(dir.path(), "stale.jsonl", STALE), 3)
    };
    let html = dir.path().join("timeline.html");
    let (code, _, err) = run(&[
        "check",
        "--html",
        html.to_str().expect("path"),
        input.to_str().expect("path"),
    ]);
    assert_eq!(code, 1, "{err}");
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(
        page.contains("op failing"),
        "the failing operation is highlighted"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "self-contained"
    );

    let Some(dom) = ringkv_tests::chromium_dom(&format!("file://{}", html.display()), 1_000, None)
    else {
        return;
    };
    assert!(
        dom.contains("id=\"timeline\""),
        "chromium rendered the timeline"
    );
    let bars = dom.matches("class=\"op").count();
    assert!(
        bars >= bars_min,
        "only {bars} bars rendered, expected {bars_min}"
    );
    assert!(dom.contains("op failing"));
    eprintln!("chromium rendered {bars} operation bars");
}
