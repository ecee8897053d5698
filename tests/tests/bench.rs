//! `ringkv bench` against real servers: a short run completes every request it was asked for
//! and reports sane numbers. (Performance goals are judged from bench runs, not asserted here.)

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
    for op in ["put", "get", "mixed"] {
        let (code, out, err) = cli(
            &eps,
            &[
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
            ],
        );
        assert_eq!(code, 0, "bench {op}: {err}");
        let r: serde_json::Value = serde_json::from_str(&out).expect("bench json");
        assert_eq!(r["ok"], 400, "bench {op}: {out}");
        assert_eq!(r["failed_definite"], 0, "bench {op}: {out}");
        assert_eq!(r["outcome_unknown"], 0, "bench {op}: {out}");
        let p50 = r["latency_ok"]["p50_us"].as_u64().expect("p50");
        let p99 = r["latency_ok"]["p99_us"].as_u64().expect("p99");
        assert!(p50 > 0 && p50 <= p99, "bench {op}: {out}");
        eprintln!("bench {op}: {out}");
    }
    // The keys it wrote are really there.
    let (code, out, err) = cli(&eps, &["get", "bench:7"]);
    assert_eq!((code, out.len()), (0, 129), "{err}");
}
