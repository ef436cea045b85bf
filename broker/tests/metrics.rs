//! The metrics endpoint (`metrics.listen`) of a real broker: `/metrics` parsed by a real
//! Prometheus text-format parser (the `prometheus_client` Python package, as CI installs
//! it), every family the docs name present with its type, counters moving with produce,
//! fetch, group and error traffic, and consumer lag equal to high watermark − committed
//! offset; `/health`, `/ready`, 404, 405 and malformed, oversized and stalled requests;
//! and, in a cluster, the leader's view of its ISR shrinking and expanding.
//! Invariants: every socket read is bounded by a timeout; the broker is killed on drop.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::cluster::{wait_for, Cluster, FAST_SETTINGS};
use common::extra::ExtraNode;
use common::{block_on, free_port, BrokerProcess};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// Every family the README lists, with its Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    ("sluice_bytes_in_total", "counter"),
    ("sluice_records_in_total", "counter"),
    ("sluice_bytes_out_total", "counter"),
    ("sluice_replication_bytes_in_total", "counter"),
    ("sluice_replication_bytes_out_total", "counter"),
    ("sluice_requests_total", "counter"),
    ("sluice_request_errors_total", "counter"),
    ("sluice_request_duration_seconds", "histogram"),
    ("sluice_consumer_group_lag", "gauge"),
    ("sluice_under_replicated_partitions", "gauge"),
    ("sluice_offline_partitions", "gauge"),
    ("sluice_leader_partitions", "gauge"),
    ("sluice_partitions", "gauge"),
    ("sluice_isr_shrinks_total", "counter"),
    ("sluice_isr_expands_total", "counter"),
    ("sluice_leader_elections_total", "counter"),
    ("sluice_fsync_duration_seconds", "histogram"),
    ("sluice_fsyncs_total", "counter"),
    ("sluice_storage_flushes_total", "counter"),
    ("sluice_storage_flush_dir_fsyncs_total", "counter"),
    ("sluice_storage_bytes_written_total", "counter"),
    ("sluice_storage_bytes_appended_total", "counter"),
    ("sluice_storage_unflushed_bytes", "gauge"),
    ("sluice_storage_open_files", "gauge"),
    ("sluice_storage_journal_behind_bytes", "gauge"),
    ("sluice_storage_journal_bytes_written_total", "counter"),
    ("sluice_storage_journal_checkpoints_total", "counter"),
    ("sluice_cache_hits_total", "counter"),
    ("sluice_cache_misses_total", "counter"),
    ("sluice_readahead_hits_total", "counter"),
    ("sluice_readahead_misses_total", "counter"),
    ("sluice_connections", "gauge"),
    ("sluice_broker_ready", "gauge"),
    ("sluice_shard_busy_seconds_total", "counter"),
    ("sluice_shard_runtime_seconds_total", "counter"),
    ("sluice_shard_tasks_total", "counter"),
    ("sluice_shard_task_queue_lag_seconds", "histogram"),
    ("sluice_cleaner_passes_total", "counter"),
    ("sluice_cleaner_bytes_read_total", "counter"),
    ("sluice_cleaner_bytes_written_total", "counter"),
    ("sluice_cleaner_bytes_reclaimed_total", "counter"),
    ("sluice_cleaner_records_removed_total", "counter"),
    ("sluice_controller_active", "gauge"),
    ("sluice_controller_voter", "gauge"),
    ("sluice_metadata_quorum_leader", "gauge"),
    ("sluice_metadata_quorum_term", "gauge"),
    ("sluice_metadata_quorum_commit_index", "gauge"),
    ("sluice_metadata_applied_index", "gauge"),
];

/// Parses the exposition with `prometheus_client` and prints one line per family
/// (`F name type`) and per sample (`S name k=v,k=v|- value`).
const PARSER: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("F", f.name, f.type)
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print("S", s.name, labels or "-", repr(float(s.value)))
"#;

/// A scrape as the parser saw it.
#[derive(Debug, Default)]
struct Scrape {
    /// Family name (as the parser names it: counters without `_total`) → type.
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Result<Scrape> {
        let mut child = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running python3 (prometheus_client must be installed)")?;
        child
            .stdin
            .take()
            .context("python stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "the Prometheus parser refused the scrape: {}\n--- scrape ---\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut scrape = Scrape::default();
        for line in String::from_utf8(out.stdout)?.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["F", name, kind] => {
                    scrape.families.insert(name.to_string(), kind.to_string());
                }
                ["S", name, labels, value] => {
                    let labels = labels
                        .split(',')
                        .filter(|l| *l != "-")
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    scrape
                        .samples
                        .push((name.to_string(), labels, value.parse()?));
                }
                _ => bail!("unexpected parser output {line:?}"),
            }
        }
        Ok(scrape)
    }

    /// The type of family `name` (a counter's family is named without `_total`).
    fn family(&self, name: &str) -> Option<&str> {
        self.families
            .get(name)
            .or_else(|| self.families.get(name.strip_suffix("_total")?))
            .map(String::as_str)
    }

    /// The sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every sample of `name`, by the value of `label`.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, v)| Some((l.get(label)?.clone(), *v)))
            .collect()
    }
}

/// One HTTP exchange on a fresh connection: (status code, body). The raw `request` is
/// sent as is; the answer is read until the broker closes the connection.
fn http_raw(port: u16, request: &[u8]) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8(out).context("answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no header end in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Content-Length in {head:?}"))?;
    if !request.starts_with(b"HEAD ") {
        ensure!(
            body.len() == length,
            "body of {} bytes, Content-Length {length}",
            body.len()
        );
    }
    Ok((status, body.to_string()))
}

fn get(port: u16, path: &str) -> Result<(u16, String)> {
    http_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n").as_bytes(),
    )
}

fn scrape(port: u16) -> Result<Scrape> {
    let (status, body) = get(port, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}: {body}");
    Scrape::parse(&body)
}

fn spawn_with_metrics(cores: usize) -> Result<(BrokerProcess, u16)> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::spawn_with(
        cores,
        &[
            ("metrics.listen", listen.as_str()),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    )?;
    Ok((broker, port))
}

/// A group member of `group` subscribed to `topic`, manual commits, from the beginning.
fn member(broker: &BrokerProcess, group: &str, topic: &str) -> Result<BaseConsumer> {
    let mut cfg = broker.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100");
    let c: BaseConsumer = cfg.create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

#[test]
fn families_move_with_traffic_and_lag_is_high_watermark_minus_committed() -> Result<()> {
    let (broker, port) = spawn_with_metrics(2)?;
    let topic = "metrics-orders";
    let partitions = 3;
    broker.create_topic(topic, partitions, &[])?;
    let before = scrape(port)?;
    for (name, kind) in FAMILIES {
        ensure!(
            before.family(name) == Some(kind),
            "family {name} missing or not a {kind}: {:?}",
            before.family(name)
        );
    }
    ensure!(before.get("sluice_broker_ready", &[]) == 1.0, "not ready");
    ensure!(before.get("sluice_under_replicated_partitions", &[]) == 0.0);
    // a single node is the quorum's only voter, its leader and the active controller
    ensure!(before.get("sluice_controller_active", &[]) == 1.0);
    ensure!(before.get("sluice_controller_voter", &[]) == 1.0);
    ensure!(before.get("sluice_metadata_quorum_leader", &[]) == 1.0);
    ensure!(before.get("sluice_metadata_quorum_term", &[]) >= 1.0);
    ensure!(
        before.get("sluice_metadata_applied_index", &[])
            <= before.get("sluice_metadata_quorum_commit_index", &[])
    );
    // one leadership gained per partition of the new topic and of __consumer_offsets
    ensure!(before.get("sluice_leader_elections_total", &[]) >= f64::from(partitions));
    ensure!(before.get("sluice_leader_partitions", &[]) >= f64::from(partitions));

    // produce: 300 keyed records over the three partitions, acks=all
    let producer = broker.producer(&[])?;
    let records = 300u64;
    let mut payload_bytes = 0usize;
    block_on(async {
        for seq in 0..records {
            let key = common::record_key(seq, 17);
            let payload = common::record_payload(seq);
            payload_bytes += payload.len();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(20),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce {seq}: {e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let mut highs = BTreeMap::new();
    for p in 0..partitions {
        highs.insert(p, broker.watermarks(topic, p)?.1);
    }
    ensure!(
        highs.values().sum::<i64>() == records as i64,
        "highs {highs:?}"
    );

    // a group consumes everything and commits part of it: half of partition 0, all of
    // partition 1, nothing of partition 2
    let group = "metrics-lag-group";
    let committed: BTreeMap<i32, i64> = [(0, highs[&0] / 2), (1, highs[&1])].into();
    {
        let m = member(&broker, group, topic)?;
        let mut seen = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < records {
            ensure!(
                Instant::now() < deadline,
                "group consumed {seen} of {records}"
            );
            if let Some(Ok(_)) = m.poll(Duration::from_millis(200)) {
                seen += 1;
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &committed {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        m.commit(&tpl, CommitMode::Sync)?;
    }
    // an assign-only consumer reads it all again (bytes out)
    let all = broker.consume_all(topic, partitions)?;
    ensure!(all.len() == records as usize);

    // a Produce answered with an error code: a partition that does not exist
    {
        let mut raw = common::kafka::connect(&broker)?;
        let batch = common::raw::record_batch(&["x"], common::kafka::TS)?;
        let (code, _) = common::kafka::produce(&mut raw, "metrics-no-such-topic", batch)?;
        ensure!(code == 3, "produce to a missing topic answered {code}");
    }

    // the producer is still connected while this scrape is taken
    let after = scrape(port)?;
    let t = [("topic", topic)];
    ensure!(after.get("sluice_records_in_total", &t) == records as f64);
    let bytes_in = after.get("sluice_bytes_in_total", &t);
    ensure!(
        bytes_in > payload_bytes as f64,
        "bytes in {bytes_in} ≤ payload bytes {payload_bytes}"
    );
    // read twice in full (the group and the assign-only consumer)
    ensure!(after.get("sluice_bytes_out_total", &t) >= 2.0 * bytes_in);
    for api in ["Produce", "Fetch", "Metadata", "OffsetCommit", "JoinGroup"] {
        let a = [("api", api)];
        let (r0, r1) = (
            before.get("sluice_requests_total", &a),
            after.get("sluice_requests_total", &a),
        );
        ensure!(r1 > r0, "{api}: requests {r0} → {r1}");
        ensure!(
            after.get("sluice_request_duration_seconds_count", &a) == r1,
            "{api}: histogram count differs from the request count"
        );
        ensure!(
            after.get(
                "sluice_request_duration_seconds_bucket",
                &[("api", api), ("le", "+Inf")]
            ) == r1
        );
        ensure!(after.get("sluice_request_duration_seconds_sum", &a) > 0.0);
    }
    let produce_errors = [("api", "Produce")];
    ensure!(
        after.get("sluice_request_errors_total", &produce_errors)
            > before.get("sluice_request_errors_total", &produce_errors),
        "the refused produce was not counted as an error"
    );

    // lag = high watermark − committed offset, for each committed partition only
    let lag: BTreeMap<String, f64> = after
        .samples
        .iter()
        .filter(|(n, l, _)| {
            n == "sluice_consumer_group_lag"
                && l.get("group").map(String::as_str) == Some(group)
                && l.get("topic").map(String::as_str) == Some(topic)
        })
        .filter_map(|(_, l, v)| Some((l.get("partition")?.clone(), *v)))
        .collect();
    let want: BTreeMap<String, f64> = committed
        .iter()
        .map(|(p, o)| (p.to_string(), (highs[p] - o) as f64))
        .collect();
    ensure!(lag == want, "lag {lag:?}, want {want:?} (highs {highs:?})");

    // storage, connections, shards
    for name in [
        "sluice_fsyncs_total",
        "sluice_storage_flushes_total",
        "sluice_storage_bytes_written_total",
        "sluice_storage_bytes_appended_total",
        "sluice_fsync_duration_seconds_count",
        "sluice_cache_hits_total",
    ] {
        ensure!(
            after.get(name, &[]) > before.get(name, &[]),
            "{name} did not move: {} → {}",
            before.get(name, &[]),
            after.get(name, &[])
        );
    }
    ensure!(after.get("sluice_storage_bytes_written_total", &[]) >= bytes_in);
    ensure!(
        after.get("sluice_fsync_duration_seconds_bucket", &[("le", "+Inf")])
            == after.get("sluice_fsync_duration_seconds_count", &[])
    );
    ensure!(
        after.get("sluice_connections", &[]) >= 1.0,
        "the producer's connection"
    );
    let busy = after.by_label("sluice_shard_busy_seconds_total", "shard");
    ensure!(
        busy.keys().cloned().collect::<BTreeSet<_>>() == ["0", "1"].map(String::from).into(),
        "busy by shard {busy:?}"
    );
    ensure!(busy.values().all(|b| *b > 0.0), "busy {busy:?}");
    let lag_counts = after.by_label("sluice_shard_task_queue_lag_seconds_count", "shard");
    ensure!(
        lag_counts.len() == 2 && lag_counts.values().all(|n| *n > 0.0),
        "{lag_counts:?}"
    );
    let tasks_before = before.by_label("sluice_shard_tasks_total", "shard");
    let tasks_after = after.by_label("sluice_shard_tasks_total", "shard");
    ensure!(tasks_after
        .iter()
        .all(|(s, n)| *n > tasks_before.get(s).copied().unwrap_or(0.0)));
    drop(producer);
    Ok(())
}

#[test]
fn health_ready_and_bad_requests() -> Result<()> {
    let (broker, port) = spawn_with_metrics(1)?;
    assert_eq!(get(port, "/health")?, (200, "ok\n".to_string()));
    assert_eq!(get(port, "/ready")?.0, 200);
    assert_eq!(get(port, "/ready?verbose=1")?.0, 200);
    assert_eq!(get(port, "/nope")?.0, 404);
    assert_eq!(get(port, "/metrics/")?.0, 404);
    let (status, body) = http_raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(
        http_raw(
            port,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )?
        .0,
        405
    );
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", // a TLS hello
    ] {
        assert_eq!(
            http_raw(port, bad)?.0,
            400,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // oversized head: a 400, or the connection closed under the rest of it
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    match http_raw(port, &huge) {
        Ok((status, _)) => assert_eq!(status, 400),
        Err(e) => eprintln!("oversized request: connection closed ({e:#})"),
    }
    // a head that never completes is dropped after the read bound, not held forever
    let mut slow = TcpStream::connect(("127.0.0.1", port))?;
    slow.set_read_timeout(Some(Duration::from_secs(20)))?;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a partial head got an answer");
    assert!(started.elapsed() < Duration::from_secs(15));
    // the broker and its endpoint still serve
    assert_eq!(get(port, "/health")?.0, 200);
    broker.wait_for_topic("__consumer_offsets", 50)?;

    // a second broker asked for the same metrics address serves Kafka without it (and does
    // not share the port: scrapes keep reaching the first)
    let listen = format!("127.0.0.1:{port}");
    let second = BrokerProcess::spawn_with(1, &[("metrics.listen", listen.as_str())])?;
    second.create_topic("metrics-second-only", 1, &[])?;
    common::send_one(&second.producer(&[])?, "metrics-second-only", "x")?;
    let log = second.log_tail(200);
    assert!(log.contains("cannot listen for metrics.listen"), "{log}");
    let topics = scrape(port)?.by_label("sluice_bytes_in_total", "topic");
    assert!(!topics.contains_key("metrics-second-only"), "{topics:?}");
    assert_eq!(get(port, "/ready")?.0, 200);
    Ok(())
}

/// The value of an unlabelled sample in a raw exposition (for polling without the parser).
fn plain(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls node `port`'s /metrics until `check` holds for the raw text (bounded).
fn wait_metrics(port: u16, what: &str, check: impl Fn(&str) -> bool) -> Result<String> {
    let mut last = String::new();
    wait_for(what, Duration::from_secs(60), || {
        let (status, body) = get(port, "/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        let done = check(&body);
        last = body.clone();
        Ok(done.then_some(body))
    })
    .with_context(|| {
        let mut lines: Vec<&str> = last
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("isr") || l.contains("replicated")))
            .collect();
        lines.truncate(20);
        lines.join("\n")
    })
}

/// A partition this broker leads loses a follower and gets it back: under-replicated
/// partitions, ISR shrinks and expands, leaderships and replication bytes on the leader's
/// endpoint. The leader (3) and the follower (4) are broker-only nodes beside a one-voter
/// quorum (node 1), so stopping the follower leaves the controller running, and the
/// leader gets a metrics address of its own (the script's nodes have none).
#[test]
fn leader_sees_its_isr_shrink_and_expand() -> Result<()> {
    let mut settings: Vec<(&str, &str)> = FAST_SETTINGS.to_vec();
    settings.push(("replica.lag.time.max.ms", "2000"));
    let follower_settings = {
        let mut s = settings.clone();
        s.push(("metrics.listen", ""));
        s
    };
    let cluster = Cluster::start(1, &follower_settings)?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut leader_settings = settings.clone();
    leader_settings.push(("metrics.listen", listen.as_str()));
    let (_node3, addr3) = ExtraNode::broker_only(&cluster, 3, &leader_settings)?;
    let (follower, _) = ExtraNode::broker_only(&cluster, 4, &follower_settings)?;
    let topic = "metrics-replicated";
    let registered = |what: &str| {
        cluster.wait_views(what, &[1], Duration::from_secs(30), |views| {
            let live = views[0].broker_ids();
            ensure!(
                live.contains(&3) && live.contains(&4),
                "live brokers {live:?}"
            );
            Ok(())
        })
    };
    registered("brokers 3 and 4 registered")?;
    cluster.create_topic(
        &[1],
        &NewTopic::new(topic, 1, TopicReplication::Variable(&[&[3, 4]])),
        Duration::from_secs(15),
    )?;
    let full_isr = |what: &str| {
        cluster.wait_views(what, &[1], Duration::from_secs(60), |views| {
            let p = &views[0].topic(topic)?.partitions[0];
            ensure!(p.leader == 3 && p.isr.len() == 2, "{p:?}");
            Ok(())
        })
    };
    full_isr("3 leads with a full ISR")?;
    wait_for("node 3 ready", Duration::from_secs(30), || {
        Ok((get(port, "/ready")?.0 == 200).then_some(()))
    })?;
    let mut cfg = Cluster::client_config(&addr3);
    cfg.set("acks", "all").set("message.timeout.ms", "30000");
    let producer: rdkafka::producer::FutureProducer = cfg.create()?;
    for i in 0..20 {
        common::send_one(&producer, topic, &format!("replicated {i}"))?;
    }
    let copied = format!("sluice_replication_bytes_out_total{{topic=\"{topic}\"}} ");
    let healthy = wait_metrics(port, "the follower copied the records", |t| {
        t.lines()
            .any(|l| l.starts_with(&copied) && !l.ends_with(" 0"))
    })?;
    let s = Scrape::parse(&healthy)?;
    ensure!(s.get("sluice_under_replicated_partitions", &[]) == 0.0);
    ensure!(s.get("sluice_leader_partitions", &[]) == 1.0);
    ensure!(s.get("sluice_leader_elections_total", &[]) >= 1.0);
    ensure!(s.get("sluice_records_in_total", &[("topic", topic)]) == 20.0);
    // a broker-only node: no voter, not the controller, knows node 1 leads the quorum
    ensure!(s.get("sluice_controller_voter", &[]) == 0.0);
    ensure!(s.get("sluice_controller_active", &[]) == 0.0);
    ensure!(s.get("sluice_metadata_quorum_leader", &[]) == 1.0);
    ensure!(s.get("sluice_metadata_applied_index", &[]) >= 1.0);
    let shrinks = s.get("sluice_isr_shrinks_total", &[]);
    let expands = s.get("sluice_isr_expands_total", &[]);

    // the follower stops (SIGSTOP): it falls behind and its session expires
    let signal = |sig: &str| -> Result<()> {
        let ok = Command::new("kill")
            .args([sig, &follower.pid().to_string()])
            .status()?
            .success();
        ensure!(ok, "kill {sig} failed");
        Ok(())
    };
    signal("-STOP")?;
    let degraded = wait_metrics(port, "node 4 out of the ISR", |t| {
        plain(t, "sluice_under_replicated_partitions") == Some(1.0)
    });
    signal("-CONT")?;
    let s = Scrape::parse(&degraded?)?;
    ensure!(
        s.get("sluice_isr_shrinks_total", &[]) > shrinks,
        "no shrink counted"
    );

    // resumed, it catches up and the leader takes it back into the ISR
    let healed = wait_metrics(port, "node 4 back in the ISR", |t| {
        plain(t, "sluice_under_replicated_partitions") == Some(0.0)
    })?;
    let s = Scrape::parse(&healed)?;
    ensure!(
        s.get("sluice_isr_expands_total", &[]) > expands,
        "no expand counted"
    );
    full_isr("the ISR full again in the controller's view")?;
    Ok(())
}

/// Lag of a partition led by another broker: the group coordinator (node 1, which holds
/// `__consumer_offsets`) has no replica of the topic (led by broker-only node 3), so it
/// asks node 3 for the high watermark when scraped.
#[test]
fn lag_of_a_partition_led_elsewhere_comes_from_its_leader() -> Result<()> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut coordinator_settings: Vec<(&str, &str)> = FAST_SETTINGS.to_vec();
    coordinator_settings.push(("metrics.listen", listen.as_str()));
    coordinator_settings.push(("offsets.topic.num.partitions", "1"));
    let cluster = Cluster::start(1, &coordinator_settings)?;
    let mut other: Vec<(&str, &str)> = FAST_SETTINGS.to_vec();
    other.push(("metrics.listen", ""));
    let (_node3, addr3) = ExtraNode::broker_only(&cluster, 3, &other)?;
    cluster.wait_views(
        "broker 3 registered",
        &[1],
        Duration::from_secs(30),
        |views| {
            ensure!(
                views[0].broker_ids().contains(&3),
                "{:?}",
                views[0].broker_ids()
            );
            Ok(())
        },
    )?;
    let topic = "lag-elsewhere";
    cluster.create_topic(
        &[1],
        &NewTopic::new(topic, 1, TopicReplication::Variable(&[&[3]])),
        Duration::from_secs(15),
    )?;
    let mut cfg = Cluster::client_config(&addr3);
    cfg.set("acks", "all").set("message.timeout.ms", "30000");
    let producer: rdkafka::producer::FutureProducer = cfg.create()?;
    for i in 0..10 {
        common::send_one(&producer, topic, &format!("r{i}"))?;
    }
    // a simple (group-less) commit of offset 4 through the coordinator, node 1
    let consumer: BaseConsumer = Cluster::client_config(&cluster.bootstrap())
        .set("group.id", "lag-elsewhere-group")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(4))?;
    consumer.commit(&tpl, CommitMode::Sync)?;
    let want = format!(
        "sluice_consumer_group_lag{{group=\"lag-elsewhere-group\",topic=\"{topic}\",partition=\"0\"}} 6"
    );
    wait_metrics(port, "lag 6 from node 3's high watermark", |t| {
        t.lines().any(|l| l == want)
    })?;
    Ok(())
}

/// With `storage.flush.sync=journal` (every group commit journaled, a 1 MiB journal so a
/// few hundred acknowledged records, a 4 KiB record set at least each, pass half of it), the journal's families move:
/// record-set bytes written and at least one checkpoint.
#[test]
fn journal_families_move_in_journal_mode() -> Result<()> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::spawn_with(
        1,
        &[
            ("metrics.listen", listen.as_str()),
            ("storage.flush.sync", "journal"),
            ("storage.journal.min.partitions", "1"),
            ("storage.unflushed.max.bytes", "262144"),
            ("storage.journal.bytes", "1048576"),
        ],
    )?;
    let topic = "journaled";
    broker.create_topic(topic, 2, &[])?;
    let producer = broker.producer(&[("linger.ms", "0")])?;
    block_on(async {
        for seq in 0..400u64 {
            let payload = common::record_payload(seq);
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(&payload),
                    Duration::from_secs(20),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce {seq}: {e}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let text = wait_metrics(port, "a journal checkpoint", |t| {
        plain(t, "sluice_storage_journal_checkpoints_total").is_some_and(|v| v >= 1.0)
    })?;
    let written = plain(&text, "sluice_storage_journal_bytes_written_total").unwrap_or(0.0);
    ensure!(
        written >= 400.0 * 4096.0,
        "journal bytes written {written} for 400 acknowledged produces"
    );
    ensure!(plain(&text, "sluice_storage_journal_behind_bytes").is_some());
    Ok(())
}
