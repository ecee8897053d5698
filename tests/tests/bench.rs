//! `ringkv bench` against real servers: a short run completes every request it was asked for
//! and reports sane numbers, for every operation, key distribution and loop mode. (Performance
//! goals are judged from bench runs, not asserted here.)

use std::time::Duration;

use ringkv_tests::{Cluster, cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_bench_run_reports_every_request() {
    let cluster = Cluster::start(3, 8);
    cluster
        .wait_for_leaders(Duration::from_secs(10))
        .await
        .expect("leaders");
    let eps = cluster.endpoints();
    let cases: [(&str, &[&str]); 7] = [
        ("put", &["--verify"]),
        ("get", &[]),
        ("get-serializable", &["--key-dist", "uniform"]),
        ("cas", &["--key-dist", "zipf:0.99"]),
        (
            "mixed",
            &["--key-dist", "hotspot:0.9:0.1", "--read-ratio", "0.8"],
        ),
        // Open loop, 400 requests at 200/s with a 1 s warm-up: about 3 s.
        ("put", &["--rate", "200", "--warmup-secs", "1"]),
        (
            "put",
            &["--conns", "3", "--key-dist", "uniform", "--seed", "9"],
        ),
    ];
    for (op, extra) in cases {
        let mut args = vec![
            "bench",
            "--clients",
            "8",
            "--requests",
            "400",
            "--keys",
            "100",
            "--op",
            op,
            "--duration-secs",
            "60",
            "--json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = cli(&eps, &args);
        assert_eq!(code, 0, "bench {op}: {err}");
        let r: serde_json::Value = serde_json::from_str(&out).expect("bench json");
        assert_eq!(r["ok"], 400, "bench {op}: {out}");
        assert_eq!(r["failed_definite"], 0, "bench {op}: {out}");
        assert_eq!(r["outcome_unknown"], 0, "bench {op}: {out}");
        let p50 = r["latency_ok"]["p50_us"].as_u64().expect("p50");
        let p99 = r["latency_ok"]["p99_us"].as_u64().expect("p99");
        assert!(p50 > 0 && p50 <= p99, "bench {op}: {out}");
        // The fields the etcd comparison reads.
        assert_eq!(r["errors"], 0, "bench {op}: {out}");
        assert!(r["throughput_ops_s"].as_f64().expect("throughput") > 0.0);
        let ms = &r["latency_ms"];
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(ms[p].as_f64().expect(p) > 0.0, "bench {op}: {p}: {out}");
        }
        if extra.contains(&"--verify") {
            assert_eq!(r["lost_keys"], 0, "bench {op}: {out}");
            assert!(r["verified_keys"].as_u64().expect("verified") > 0);
        }
        eprintln!("bench {op}: {out}");
    }
    // The keys it wrote are really there.
    let (code, out, err) = cli(&eps, &["get", "bench:7"]);
    assert_eq!((code, out.len()), (0, 129), "{err}");
}
