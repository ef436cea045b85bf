//! End-to-end check of the `sluice-bench` binary against a real `sluice` broker process:
//! produce a fixed number of records, read exactly those back, and run a short e2e.
//!
//! Ignored by default (`cargo test -p sluice-bench` stays broker-free). Run it with
//! `cargo test -p sluice-bench -- --ignored` after building the broker; the broker binary
//! is `$SLUICE_BIN`, else `target/release/sluice`, else `target/debug/sluice`. The broker
//! gets an ephemeral port and a temp data dir and is killed on every exit path.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills and reaps the broker when dropped, and removes its data dir.
struct Broker {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn broker_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("sluice");
        if p.exists() {
            return p;
        }
    }
    panic!("no broker binary: build it (cargo build --release -p sluice-broker --bin sluice) or set SLUICE_BIN");
}

fn start_broker() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    // A data dir on the real disk (the broker uses O_DIRECT; /tmp may be tmpfs elsewhere).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("broker-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(broker_binary())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start broker");
    let broker = Broker { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "broker did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker
}

/// Runs `sluice-bench --json <args>` against the broker, bounded by a timeout.
fn bench(broker: &Broker, args: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args([
            "--bootstrap",
            &format!("127.0.0.1:{}", broker.port),
            "--json",
            "-q",
        ])
        .args(["--broker-pid", &broker.child.id().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice-bench {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "sluice-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
#[ignore = "needs a built sluice broker; run with --ignored"]
fn produce_consume_e2e_against_a_real_broker() {
    let broker = start_broker();
    let topic = "bench-selfcheck";

    let produced = bench(
        &broker,
        &[
            "produce",
            "--topic",
            topic,
            "--partitions",
            "4",
            "--messages",
            "20000",
            "--message-size",
            "200",
            "--keys",
            "round-robin",
            "--keep-topics",
            "--duration",
            "60s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(produced["acked_total"], 20000, "{produced}");
    assert_eq!(produced["produce_errors"], 0, "{produced}");
    assert!(
        produced["broker"]["cpu_seconds"].as_f64().is_some(),
        "{produced}"
    );

    let consumed = bench(
        &broker,
        &[
            "consume",
            "--topic",
            topic,
            "--partitions",
            "4",
            "--message-size",
            "200",
        ],
    );
    assert_eq!(consumed["consumed_total"], 20000, "{consumed}");
    assert!(consumed["consumed"]["msg_per_sec"].as_f64().unwrap_or(0.0) > 0.0);

    let report_dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", broker.port));
    let _ = std::fs::remove_dir_all(&report_dir);
    let report_arg = report_dir.display().to_string();
    let e2e = bench(
        &broker,
        &[
            "--report",
            &report_arg,
            "e2e",
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--partitions",
            "2",
        ],
    );
    assert_eq!(e2e["consumed_total"], e2e["acked_total"], "{e2e}");
    // 2 s measured at 2000 msg/s: every record sent in the window has an e2e sample.
    assert_eq!(e2e["e2e_latency"]["count"], 4000, "{e2e}");
    assert!(e2e["e2e_latency"]["p99_ms"].as_f64().unwrap_or(-1.0) >= 0.0);

    // --report: one page, plots of the run, nothing external
    let html = std::fs::read_to_string(report_dir.join("index.html")).expect("report page");
    let _ = std::fs::remove_dir_all(&report_dir);
    for want in [
        "e2e: latency by percentile",
        "e2e: throughput per second",
        "e2e: CPU per second",
        "e2e: broker resident memory",
        "broker command line",
    ] {
        assert!(html.contains(want), "report misses {want:?}");
    }
    assert_eq!(html.matches("<svg").count(), 4, "four plots");
    assert!(!html.contains("<script") && !html.contains("https://"));
}
