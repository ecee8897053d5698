//! A short fault-injection run of the real binaries, as part of the test suite: about 30 s of
//! the register workload under SIGKILL and partitions (fixed seed), which must be valid, apply
//! both kinds of fault, and write a complete report that headless Chromium renders from disk
//! (the browser part is skipped, saying so, when Chromium is not installed; CI installs it).
//! A second, shorter run does the same with `--tls` (TLS on every port); shorter ones run the
//! `bank` workload (transactions) under SIGKILL, the `session` workload (TTLs) under SIGKILL
//! and pauses, and the register workload under wall-clock jumps. Needs root for network
//! namespaces, as CI has (and libfaketime for the clock run; CI installs it).

use std::process::Command;

#[test]
fn a_short_kill_and_partition_run_is_valid_and_reported() {
    let out = tempfile::tempdir().expect("tempdir");
    let seed = "42";
    eprintln!("seed {seed}");
    let run = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args([
            "test",
            "--time-limit",
            "30",
            "--nemesis",
            "kill,partition",
            "--seed",
            seed,
        ])
        .args(["--fault-ms", "4000", "--heal-ms", "3000"])
        .arg("--out")
        .arg(out.path())
        .arg("--server-bin")
        .arg(ringkv_tests::binary("ringkv-server"))
        .output()
        .expect("run ringkv-jepsen test");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}");
    assert_eq!(run.status.code(), Some(0), "the run must be valid");

    for f in [
        "history.jsonl",
        "results.json",
        "latency.svg",
        "throughput.svg",
        "index.html",
        "node-1.log",
    ] {
        assert!(out.path().join(f).exists(), "{f} missing from the report");
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results"),
    )
    .expect("json");
    assert_eq!(results["valid"], true);
    assert_eq!(results["seed"], 42);
    assert!(
        results["faults_by_kind"]["kill"].as_u64() >= Some(1),
        "{}",
        results["faults_by_kind"]
    );
    assert!(
        results["faults_by_kind"]["partition"].as_u64() >= Some(1),
        "{}",
        results["faults_by_kind"]
    );
    let ok = results["stats"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 500, "only {ok} ok operations");
    assert_eq!(results["checkers"]["linearizability"]["valid"], true);
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("svg");
    assert!(
        svg.contains("latency (ms)") && svg.contains("time since start (s)"),
        "axes labelled with units"
    );

    let Some(dom) = ringkv_tests::chromium_dom(
        &format!("file://{}", out.path().join("index.html").display()),
        1_000,
        None,
    ) else {
        return;
    };
    assert!(
        dom.contains("id=\"verdict\">VALID<"),
        "report rendered: {dom:.500}"
    );
    assert!(dom.contains("latency.svg") && dom.contains("node-1.log"));
}

/// `--tls`: the same harness with TLS on every port (certificates for the nodes' namespace
/// addresses, clients with the admin certificate): a short run under SIGKILL must be valid,
/// and every node must have served TLS (no plaintext fallback: the nodes get no `--insecure`).
#[test]
fn a_short_tls_run_is_valid() {
    let out = tempfile::tempdir().expect("tempdir");
    let seed = "7";
    let run = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args([
            "test",
            "--tls",
            "--time-limit",
            "15",
            "--nemesis",
            "kill",
            "--seed",
            seed,
        ])
        .args(["--fault-ms", "3000", "--heal-ms", "3000"])
        .arg("--out")
        .arg(out.path())
        .arg("--server-bin")
        .arg(ringkv_tests::binary("ringkv-server"))
        .output()
        .expect("run ringkv-jepsen test --tls");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}");
    assert_eq!(run.status.code(), Some(0), "the TLS run must be valid");
    assert!(stderr.contains(" --tls"), "the repeat line keeps --tls");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results"),
    )
    .expect("json");
    assert_eq!(results["valid"], true);
    assert_eq!(results["options"]["tls"], true);
    assert!(results["faults_by_kind"]["kill"].as_u64() >= Some(1));
    let ok = results["stats"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 100, "only {ok} ok operations");
    for id in 1..=3 {
        let log = std::fs::read_to_string(out.path().join(format!("node-{id}.log"))).expect("log");
        assert!(
            !log.contains("serving without TLS") && log.contains("insecure: false"),
            "node {id} ran without TLS: {log:.2000}"
        );
        assert!(
            log.contains("tls: Some(Tls"),
            "node {id}: no TLS in its configuration"
        );
    }
}

/// SIGTERM (what a test runner sends at its timeout) in the middle of a run with storage
/// faults: the harness stops within seconds with exit 3 and leaves nothing behind (no node
/// process, no network namespace of the run, no fault filesystem mounted under its report).
#[test]
fn sigterm_mid_run_leaves_no_namespace_mount_or_node_behind() {
    use std::time::{Duration, Instant};
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .args(["test", "--time-limit", "60", "--nemesis", "kill,power"])
        .args(["--seed", "5"])
        .arg("--out")
        .arg(out.path())
        .arg("--server-bin")
        .arg(ringkv_tests::binary("ringkv-server"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ringkv-jepsen test");
    let ns = format!("rkv{}n", child.id() % 20_000 + 1);
    let namespaces = || {
        let o = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(&ns))
            .count()
    };
    let out_dir = out.path().display().to_string();
    let mounts = || {
        std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&out_dir))
            .count()
    };
    // Wait until the run is under way: its namespaces and its fault filesystems exist, and a
    // node has written its log.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(namespaces() == 3 && mounts() == 3 && out.path().join("node-1.log").exists()) {
        assert!(Instant::now() < deadline, "the run never got under way");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the harness did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(3), "{status}");
    assert_eq!(namespaces(), 0, "network namespaces left behind");
    assert_eq!(mounts(), 0, "fault filesystems left mounted");
    // No node process (each has the report's data directory on its command line).
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&out_dir) {
            left.push(entry.file_name());
        }
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `--workload bank`: transfers between accounts by single-shard transactions under SIGKILL;
/// every read adds up, and enough transfers commit for that to mean something.
#[test]
fn a_short_bank_run_conserves_money() {
    let (code, results) = short_run(&[
        "--workload",
        "bank",
        "--time-limit",
        "15",
        "--nemesis",
        "kill",
        "--seed",
        "11",
    ]);
    assert_eq!(code, Some(0), "the bank run must be valid: {results}");
    let bank = &results["checkers"]["bank"];
    assert_eq!(bank["valid"], true, "{bank}");
    assert!(bank["transfers_ok"].as_u64() >= Some(200), "{bank}");
    assert!(bank["reads"].as_u64() >= Some(100), "{bank}");
    assert!(results["faults_by_kind"]["kill"].as_u64() >= Some(1));
}

/// Runs `ringkv-jepsen test` with `args` into a fresh directory; (exit code, results.json).
fn short_run(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_ringkv-jepsen"))
        .arg("test")
        .args(args)
        .args(["--fault-ms", "3000", "--heal-ms", "3000"])
        .arg("--out")
        .arg(out.path())
        .arg("--server-bin")
        .arg(ringkv_tests::binary("ringkv-server"))
        .output()
        .expect("run ringkv-jepsen test");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    let results = std::fs::read_to_string(out.path().join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    (run.status.code(), results)
}

/// `--workload session`: keys with 1–4 s TTLs under SIGKILL and SIGSTOP; no read misses a key
/// before its TTL could have passed.
#[test]
fn a_short_session_run_has_no_early_expiry() {
    let (code, results) = short_run(&[
        "--workload",
        "session",
        "--time-limit",
        "15",
        "--nemesis",
        "kill,pause",
        "--seed",
        "13",
    ]);
    assert_eq!(code, Some(0), "the session run must be valid: {results}");
    let s = &results["checkers"]["session"];
    assert_eq!(s["early_count"], 0, "{s}");
    assert!(s["sessions"].as_u64() >= Some(100), "{s}");
    assert!(s["reads"].as_u64() >= Some(300), "{s}");
}

/// `--nemesis clock`: nodes' wall clocks jump an hour either way (libfaketime, monotonic time
/// untouched) under the register workload; the history stays linearizable.
#[test]
fn a_short_clock_run_is_valid() {
    if !std::path::Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists() {
        ringkv_tests::skip("libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let (code, results) = short_run(&["--time-limit", "15", "--nemesis", "clock", "--seed", "17"]);
    assert_eq!(code, Some(0), "the clock run must be valid: {results}");
    assert!(
        results["faults_by_kind"]["clock"].as_u64() >= Some(2),
        "{results}"
    );
    assert_eq!(results["checkers"]["linearizability"]["valid"], true);
}
