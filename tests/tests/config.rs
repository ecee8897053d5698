//! `ringkv-server` configuration: a TOML file equivalent to the flags (flags override), and a
//! bad configuration (unknown field, heartbeat not well below the election timeout, an
//! unparseable address, a missing file) stopping the server at start with exit code 2 and a
//! one-line reason naming the field.

use std::process::Command;
use std::time::Duration;

use ringkv_tests::{binary, free_port};

fn run_server(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("ringkv-server"))
        .args(args)
        .output()
        .expect("run ringkv-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_configuration_stops_the_server_with_exit_2_and_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "id = 1\nlisten = \"127.0.0.1:{p}\"\npeers = \"1=127.0.0.1:{p}\"\ndata_dir = \"{}\"\n",
        dir.path().join("data").display(),
        p = free_port()
    );
    let cases = [
        (
            "unknown field",
            format!("{base}bogus_field = 3\n"),
            "bogus_field",
        ),
        (
            "heartbeat >= election timeout",
            format!("{base}heartbeat_interval_ms = 1000\nelection_timeout_ms = 1000\n"),
            "heartbeat_interval_ms",
        ),
        (
            "unparseable address",
            base.replace("listen = \"127.0.0.1:", "listen = \"nowhere:"),
            "listen",
        ),
        ("wrong type", format!("{base}shards = [1, 2]\n"), "shards"),
        (
            "peer listener the peers do not name",
            format!("{base}peer_listen = \"127.0.0.1:1\"\n"),
            "peer_listen",
        ),
        (
            "snapshot log bytes past the ceiling",
            format!("{base}snapshot_log_mb = 65537\n"),
            "snapshot_log_mb",
        ),
        (
            "both --peers and --join",
            format!("{base}join = \"127.0.0.1:1\"\n"),
            "join",
        ),
    ];
    for (what, text, field) in cases {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).expect("write config");
        let (code, err) = run_server(&["--config", path.to_str().expect("path")]);
        assert_eq!(code, 2, "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains(field), "{what}: names {field}: {err}");
    }
    let (code, err) = run_server(&["--config", "/no/such/node.toml"]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = run_server(&[
        "--id",
        "1",
        "--listen",
        "127.0.0.1:1",
        "--peers",
        "2=127.0.0.1:2",
        "--data-dir",
        "/tmp/x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("peers"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_starts_a_node_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let peer = format!("127.0.0.1:{}", free_port());
    // The file names a wrong cluster id; the flag overrides it.
    let text = format!(
        "id = 1\nlisten = \"{addr}\"\npeer_listen = \"{peer}\"\npeers = \"1={addr}@{peer}\"\ndata_dir = \"{}\"\nshards = 2\ncluster_id = \"from-file\"\n",
        dir.path().join("data").display()
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).expect("write config");
    let mut child = Command::new(binary("ringkv-server"))
        .args([
            "--config",
            path.to_str().expect("path"),
            "--cluster-id",
            "from-flag",
        ])
        .spawn()
        .expect("spawn");
    let client = ringkv_client::Client::new(ringkv_client::ClientOptions::new(vec![addr.clone()]))
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(s) = client.status_of(&addr).await {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "node never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status.shard_count, 2, "shards from the file");
    assert_eq!(
        status.cluster_id, "from-flag",
        "the flag overrides the file"
    );
}
