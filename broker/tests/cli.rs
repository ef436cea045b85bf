//! The admin verbs of the `sluice` binary against real broker processes: topic create /
//! list / describe / alter-config / add-partitions / delete, produce then consume back,
//! a group's committed offsets and lag in `group describe --format json` and
//! `reset-offsets` moving them, `cluster health` on a 3-node cluster before and after a
//! `kill -9` (and with no quorum left), and `sluice serve` starting the broker as `sluice`
//! does.
//! Every CLI run is bounded (`CLI_BOUND`) and killed past it; brokers and background
//! consumers are killed when their guards drop.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::cluster::{wait_for, Cluster, FAST_SETTINGS};
use common::BrokerProcess;
use serde_json::Value;

/// Longest any one CLI run may take.
const CLI_BOUND: Duration = Duration::from_secs(90);

/// What one CLI run printed.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Result<Self> {
        ensure!(
            self.status.success(),
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        );
        Ok(self)
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("stdout is not one JSON document:\n{}", self.stdout))
    }

    /// One JSON object per line (consume --format json).
    fn json_lines(&self) -> Result<Vec<Value>> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("line {l:?}")))
            .collect()
    }
}

/// Runs `sluice ARGS` with `stdin`, bounded by `CLI_BOUND`.
fn sluice(args: &[&str], stdin: &str) -> Result<Out> {
    let dir = tempfile::Builder::new().prefix("sluice-cli-").tempdir()?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .context("spawning sluice")?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    let deadline = Instant::now() + CLI_BOUND;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "sluice {args:?} still running after {CLI_BOUND:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Out {
        status,
        stdout: std::fs::read_to_string(&out_path)?,
        stderr: std::fs::read_to_string(&err_path)?,
    })
}

/// `sluice ARGS -b BOOTSTRAP`, which must succeed.
fn ok(bootstrap: &str, args: &[&str]) -> Result<Out> {
    let mut all = args.to_vec();
    all.extend(["-b", bootstrap]);
    sluice(&all, "")?.ok()
}

/// `sluice ARGS -b BOOTSTRAP`, which must fail with `error_name` on stderr.
fn fails(bootstrap: &str, args: &[&str], error_name: &str) -> Result<()> {
    let mut all = args.to_vec();
    all.extend(["-b", bootstrap]);
    let out = sluice(&all, "")?;
    ensure!(
        !out.status.success() && out.stderr.contains(error_name),
        "sluice {args:?}: expected a failure naming {error_name}, got exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// A `sluice` process left running (a group member, a broker); killed on drop.
struct Background {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Background {
    fn spawn(args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-bg-").tempdir()?;
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("out"))?)
            .stderr(File::create(dir.path().join("err"))?)
            .spawn()
            .context("spawning sluice")?;
        Ok(Background { child, _dir: dir })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("err")).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The topic object of `topic describe T --format json`.
fn describe_topic(bootstrap: &str, topic: &str) -> Result<Value> {
    let v = ok(bootstrap, &["topic", "describe", topic, "--format", "json"])?.json()?;
    let Some(t) = v.as_array().and_then(|a| a.first()).cloned() else {
        bail!("describe printed no topic: {v}");
    };
    Ok(t)
}

/// A setting's (value, source) in a describe object.
fn config(topic: &Value, name: &str) -> Result<(String, String)> {
    let c = topic["configs"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no config {name} in {topic}"))?;
    Ok((
        c["value"].as_str().unwrap_or_default().to_string(),
        c["source"].as_str().unwrap_or_default().to_string(),
    ))
}

fn topic_names(bootstrap: &str) -> Result<Vec<String>> {
    Ok(ok(bootstrap, &["topic", "list"])?
        .stdout
        .lines()
        .map(str::to_string)
        .collect())
}

#[test]
fn topic_verbs_round_trip() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    let b = broker.bootstrap();
    let created = ok(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
    )?;
    ensure!(
        created.stdout.contains("Created topic orders"),
        "{}",
        created.stdout
    );
    fails(
        &b,
        &["topic", "create", "orders", "--partitions", "3"],
        "TOPIC_ALREADY_EXISTS",
    )?;
    ok(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--if-not-exists",
        ],
    )?;
    ensure!(topic_names(&b)?.contains(&"orders".to_string()));
    let listed = ok(&b, &["topic", "list", "--format", "json"])?.json()?;
    let entry = listed
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "orders"))
        .with_context(|| format!("orders missing from {listed}"))?;
    ensure!(
        entry["partitions"] == 3 && entry["replication_factor"] == 1,
        "{entry}"
    );

    let t = describe_topic(&b, "orders")?;
    let parts = t["partitions"].as_array().context("no partitions")?;
    ensure!(parts.len() == 3, "{t}");
    for (i, p) in parts.iter().enumerate() {
        ensure!(p["partition"] == i, "{p}");
        ensure!(
            p["leader"] == 1 && p["replicas"] == serde_json::json!([1]),
            "{p}"
        );
        ensure!(p["isr"] == serde_json::json!([1]), "{p}");
    }
    ensure!(
        t["topic_id"].as_str().is_some_and(|id| id.len() == 22),
        "{t}"
    );
    ensure!(
        config(&t, "retention.ms")? == ("3600000".into(), "DYNAMIC_TOPIC_CONFIG".into()),
        "{t}"
    );
    let text = ok(&b, &["topic", "describe", "orders"])?.stdout;
    ensure!(
        text.contains("PartitionCount: 3") && text.contains("Configs: retention.ms=3600000"),
        "{text}"
    );

    ok(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=7200000",
            "--set",
            "segment.bytes=1048576",
        ],
    )?;
    let t = describe_topic(&b, "orders")?;
    ensure!(config(&t, "retention.ms")?.0 == "7200000", "{t}");
    ensure!(config(&t, "segment.bytes")?.0 == "1048576", "{t}");
    ok(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--delete",
            "retention.ms",
        ],
    )?;
    let t = describe_topic(&b, "orders")?;
    ensure!(
        config(&t, "retention.ms")?.1 == "DEFAULT_CONFIG",
        "retention.ms still overridden: {t}"
    );
    fails(
        &b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "no.such.setting=1",
        ],
        "INVALID_CONFIG",
    )?;

    ok(&b, &["topic", "add-partitions", "orders", "--total", "5"])?;
    let t = describe_topic(&b, "orders")?;
    ensure!(t["partitions"].as_array().map(Vec::len) == Some(5), "{t}");
    fails(
        &b,
        &["topic", "add-partitions", "orders", "--total", "2"],
        "INVALID_PARTITIONS",
    )?;

    let deleted = ok(&b, &["topic", "delete", "orders"])?;
    ensure!(
        deleted.stdout.contains("Deleted topic orders"),
        "{}",
        deleted.stdout
    );
    wait_for(
        "orders to leave the topic list",
        Duration::from_secs(20),
        || Ok((!topic_names(&b)?.contains(&"orders".to_string())).then_some(())),
    )?;
    fails(
        &b,
        &["topic", "describe", "orders"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    )?;
    fails(
        &b,
        &["topic", "delete", "orders"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    )?;
    Ok(())
}

#[test]
fn produce_then_consume_back() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    let b = broker.bootstrap();
    ok(&b, &["topic", "create", "lines", "--partitions", "3"])?;
    let input: String = (0..30)
        .map(|i| format!("key{}:value-{i}\n", i % 5))
        .collect();
    let produced = sluice(
        &[
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--header",
            "origin=test",
            "--format",
            "json",
            "-b",
            &b,
        ],
        &input,
    )?
    .ok()?
    .json()?;
    ensure!(produced["records"] == 30, "{produced}");

    let consumed = ok(
        &b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "30",
            "--format",
            "json",
        ],
    )?
    .json_lines()?;
    ensure!(consumed.len() == 30, "{} records", consumed.len());
    let mut by_key: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for r in &consumed {
        ensure!(
            r["headers"] == serde_json::json!([{"key": "origin", "value": "test"}]),
            "{r}"
        );
        by_key
            .entry(r["key"].as_str().context("key")?.to_string())
            .or_default()
            .push((
                r["partition"].as_i64().context("partition")?,
                r["offset"].as_i64().context("offset")?,
                r["value"].as_str().context("value")?.to_string(),
            ));
    }
    ensure!(by_key.len() == 5, "{by_key:?}");
    // describe shows each partition's size on its leader (DescribeLogDirs): bytes wherever
    // records went, none elsewhere
    let t = describe_topic(&b, "lines")?;
    for p in t["partitions"].as_array().context("no partitions")? {
        let held = consumed.iter().any(|r| r["partition"] == p["partition"]);
        let size = p["size_bytes"]
            .as_i64()
            .with_context(|| format!("no size: {p}"))?;
        ensure!(if held { size > 0 } else { size == 0 }, "{p}");
    }
    let text = ok(&b, &["topic", "describe", "lines"])?.stdout;
    ensure!(text.contains("SIZE"), "{text}");
    for (key, mut recs) in by_key {
        let k: usize = key.trim_start_matches("key").parse()?;
        // one partition per key, values in the order they were produced
        ensure!(recs.iter().all(|r| r.0 == recs[0].0), "{key}: {recs:?}");
        recs.sort_by_key(|r| r.1);
        let values: Vec<String> = recs.into_iter().map(|r| r.2).collect();
        let want: Vec<String> = (0..30)
            .filter(|i| i % 5 == k)
            .map(|i| format!("value-{i}"))
            .collect();
        ensure!(values == want, "{key}: {values:?}");
    }

    // one partition only, ending after an idle second
    let p0 = consumed.iter().filter(|r| r["partition"] == 0).count();
    let text = ok(
        &b,
        &[
            "consume",
            "lines",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout",
            "1s",
            "--print-key",
            "--print-offset",
        ],
    )?
    .stdout;
    ensure!(text.lines().count() == p0, "{p0} records expected:\n{text}");
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        ensure!(fields.len() == 3, "{line:?}");
        ensure!(fields[0] == format!("0:{i}"), "{line:?}");
        ensure!(fields[1].starts_with("key") && fields[2].starts_with("value-"));
    }
    // without --from-beginning a consumer starts at the end
    let none = ok(&b, &["consume", "lines", "--timeout", "1s"])?.stdout;
    ensure!(none.is_empty(), "{none}");

    // from a file, to one partition, acks=1
    let dir = tempfile::tempdir()?;
    let file: PathBuf = dir.path().join("in.txt");
    std::fs::write(&file, "a\nb\nc\n")?;
    let file = file.display().to_string();
    let out = ok(
        &b,
        &[
            "produce",
            "lines",
            "--file",
            &file,
            "--partition",
            "2",
            "--acks",
            "1",
            "--format",
            "json",
        ],
    )?
    .json()?;
    let p2 = consumed.iter().filter(|r| r["partition"] == 2).count() as i64;
    ensure!(
        out["partitions"]
            == serde_json::json!([{"partition": 2, "records": 3,
            "first_offset": p2, "last_offset": p2 + 2}]),
        "{out}"
    );
    let tail = ok(
        &b,
        &[
            "consume",
            "lines",
            "--partition",
            "2",
            "--from-beginning",
            "--timeout",
            "1s",
        ],
    )?
    .stdout;
    ensure!(tail.lines().rev().take(3).eq(["c", "b", "a"]), "{tail}");
    fails(
        &b,
        &["consume", "lines", "--partition", "7", "--timeout", "1s"],
        "no partition 7",
    )?;
    Ok(())
}

/// `group describe` rows by partition: (committed_offset, high_watermark, lag).
type Rows = BTreeMap<i64, (Value, Value, Value)>;

/// The `group describe --format json` document and its rows.
fn group_rows(b: &str, group: &str) -> Result<(Value, Rows)> {
    let v = ok(b, &["group", "describe", group, "--format", "json"])?.json()?;
    ensure!(
        v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
            == Some(vec!["group".into(), "state".into(), "partitions".into()]),
        "{v}"
    );
    let mut rows = BTreeMap::new();
    for p in v["partitions"].as_array().context("partitions")? {
        let keys: Vec<&str> = p
            .as_object()
            .context("row")?
            .keys()
            .map(String::as_str)
            .collect();
        ensure!(
            keys == [
                "topic",
                "partition",
                "committed_offset",
                "log_end_offset",
                "high_watermark",
                "lag",
                "member",
                "host"
            ],
            "{p}"
        );
        ensure!(p["log_end_offset"] == p["high_watermark"], "{p}");
        rows.insert(
            p["partition"].as_i64().context("partition")?,
            (
                p["committed_offset"].clone(),
                p["high_watermark"].clone(),
                p["lag"].clone(),
            ),
        );
    }
    Ok((v, rows))
}

/// Committed offsets of partitions 0 and 1, checking lag = hw - committed on the way.
fn committed(b: &str, group: &str, hws: [i64; 2]) -> Result<[i64; 2]> {
    let (v, rows) = group_rows(b, group)?;
    let mut out = [0; 2];
    for (p, hw) in hws.iter().enumerate() {
        let (c, h, lag) = rows
            .get(&(p as i64))
            .with_context(|| format!("no row for partition {p}: {v}"))?;
        let c = c.as_i64().with_context(|| format!("no commit: {v}"))?;
        ensure!(*h == *hw, "partition {p}: hw {h}, want {hw}: {v}");
        ensure!(
            *lag == hw - c,
            "partition {p}: lag {lag} != {hw} - {c}: {v}"
        );
        out[p] = c;
    }
    Ok(out)
}

fn reset(b: &str, group: &str, args: &[&str]) -> Result<Value> {
    let mut all = vec!["group", "reset-offsets", group, "--format", "json"];
    all.extend(args);
    ok(b, &all)?.json()
}

#[test]
fn group_lag_and_reset_offsets() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("group.initial.rebalance.delay.ms", "0")])?;
    let b = broker.bootstrap();
    ok(&b, &["topic", "create", "lag", "--partitions", "2"])?;
    let ten: String = (0..10).map(|i| format!("a{i}\n")).collect();
    let six: String = (0..6).map(|i| format!("b{i}\n")).collect();
    for (p, input) in [("0", &ten), ("1", &six)] {
        sluice(&["produce", "lag", "--partition", p, "-b", &b], input)?.ok()?;
    }
    let hws = [10, 6];

    // a group that consumed 4 of the 16 records
    let got = ok(
        &b,
        &[
            "consume",
            "lag",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "4",
        ],
    )?;
    ensure!(got.stdout.lines().count() == 4, "{}", got.stdout);
    let (v, _) = group_rows(&b, "g")?;
    ensure!(v["state"] == "Empty", "{v}");
    ensure!(
        v["partitions"].as_array().is_some_and(|ps| ps
            .iter()
            .all(|p| p["member"].is_null() && p["host"].is_null())),
        "{v}"
    );
    let c = committed(&b, "g", hws)?;
    ensure!(c[0] + c[1] == 4, "committed {c:?}");
    let text = ok(&b, &["group", "describe", "g"])?.stdout;
    ensure!(
        text.contains("Group g is Empty") && text.contains("LAG"),
        "{text}"
    );

    // dry run: a plan, nothing committed
    let plan = reset(&b, "g", &["--topic", "lag:0", "--to-earliest"])?;
    ensure!(plan["executed"] == false, "{plan}");
    ensure!(
        plan["partitions"]
            == serde_json::json!([{"topic": "lag", "partition": 0,
                "current_offset": c[0], "new_offset": 0}]),
        "{plan}"
    );
    ensure!(committed(&b, "g", hws)? == c, "the dry run committed");

    // --execute moves them
    reset(&b, "g", &["--topic", "lag:0", "--to-earliest", "--execute"])?;
    ensure!(committed(&b, "g", hws)? == [0, c[1]]);
    reset(&b, "g", &["--all-topics", "--shift-by", "3", "--execute"])?;
    ensure!(committed(&b, "g", hws)? == [3, (c[1] + 3).min(6)]);
    reset(
        &b,
        "g",
        &["--topic", "lag", "--to-offset", "5", "--execute"],
    )?;
    ensure!(committed(&b, "g", hws)? == [5, 5]);
    reset(
        &b,
        "g",
        &["--topic", "lag:1", "--to-offset", "100", "--execute"],
    )?;
    ensure!(
        committed(&b, "g", hws)? == [5, 6],
        "to-offset past the end is clamped"
    );
    reset(
        &b,
        "g",
        &["--topic", "lag", "--shift-by", "-100", "--execute"],
    )?;
    ensure!(
        committed(&b, "g", hws)? == [0, 0],
        "shift-by before the start is clamped"
    );
    reset(&b, "g", &["--topic", "lag", "--to-latest", "--execute"])?;
    ensure!(committed(&b, "g", hws)? == [10, 6]);
    reset(
        &b,
        "g",
        &[
            "--topic",
            "lag",
            "--to-datetime",
            "2001-01-01T00:00:00Z",
            "--execute",
        ],
    )?;
    ensure!(
        committed(&b, "g", hws)? == [0, 0],
        "to-datetime in the past: earliest"
    );
    reset(
        &b,
        "g",
        &[
            "--topic",
            "lag",
            "--to-datetime",
            "2999-01-01T00:00:00+01:00",
            "--execute",
        ],
    )?;
    ensure!(
        committed(&b, "g", hws)? == [10, 6],
        "to-datetime in the future: latest"
    );
    reset(
        &b,
        "g",
        &["--topic", "lag:0", "--to-offset", "7", "--execute"],
    )?;

    // the group resumes from its committed offsets
    let more = ok(
        &b,
        &["consume", "lag", "--group", "g", "--max-messages", "2"],
    )?
    .stdout;
    ensure!(more.lines().eq(["a7", "a8"]), "{more}");
    ensure!(committed(&b, "g", hws)? == [9, 6]);

    // a live member: shown with its host, and reset-offsets refuses to run
    let _member = Background::spawn(&[
        "consume",
        "lag",
        "--group",
        "live",
        "--timeout",
        "60s",
        "-b",
        &b,
    ])?;
    let v = wait_for(
        "the live member to own both partitions",
        Duration::from_secs(30),
        || {
            let (v, rows) = group_rows(&b, "live")?;
            let owned = v["partitions"].as_array().is_some_and(|ps| {
                ps.len() == 2
                    && ps
                        .iter()
                        .all(|p| p["member"].is_string() && p["host"].is_string())
            });
            Ok((owned && v["state"] == "Stable" && rows.len() == 2).then_some(v))
        },
    )
    .with_context(|| _member.stderr())?;
    ensure!(
        v["partitions"][0]["member"] == v["partitions"][1]["member"],
        "{v}"
    );
    let refused = sluice(
        &[
            "group",
            "reset-offsets",
            "live",
            "--all-topics",
            "--to-earliest",
            "-b",
            &b,
        ],
        "",
    )?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("inactive"),
        "{}",
        refused.stderr
    );

    let groups = ok(&b, &["group", "list", "--format", "json"])?.json()?;
    let names: Vec<&str> = groups
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|g| g["group"].as_str())
        .collect();
    ensure!(names.contains(&"g") && names.contains(&"live"), "{groups}");
    ok(&b, &["group", "delete", "g"])?;
    let after = ok(&b, &["group", "list"])?.stdout;
    ensure!(!after.lines().any(|l| l.starts_with("g ")), "{after}");
    fails(&b, &["group", "delete", "live"], "NON_EMPTY_GROUP")?;
    Ok(())
}

/// `cluster health --format json`: (exit status, document).
fn health(bootstrap: &str) -> Result<(Option<i32>, Value)> {
    let out = sluice(
        &[
            "cluster",
            "health",
            "--format",
            "json",
            "--timeout",
            "5s",
            "-b",
            bootstrap,
        ],
        "",
    )?;
    let v = out.json()?;
    Ok((out.status.code(), v))
}

#[test]
fn cluster_health_before_and_after_a_kill() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let b = cluster.bootstrap();
    let info = ok(&b, &["cluster", "info", "--format", "json"])?.json()?;
    let brokers: Vec<i64> = info["brokers"]
        .as_array()
        .context("brokers")?
        .iter()
        .filter_map(|x| x["id"].as_i64())
        .collect();
    ensure!(brokers == [1, 2, 3], "{info}");
    ensure!(info["controller"].is_i64(), "{info}");
    ok(
        &b,
        &[
            "topic",
            "create",
            "rf3",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    )?;
    let v = wait_for("a healthy cluster", Duration::from_secs(30), || {
        let (code, v) = health(&b)?;
        Ok((code == Some(0)).then_some(v))
    })?;
    ensure!(
        v["healthy"] == true
            && v["controller_answers"] == true
            && v["under_replicated"] == serde_json::json!([]),
        "{v}"
    );
    let text = ok(&b, &["cluster", "info"])?.stdout;
    ensure!(text.contains("Under-replicated: 0  Offline: 0"), "{text}");

    // node 3 is a replica of every rf3 partition (and leads one of them, placement rotates)
    cluster.kill9(3)?;
    let live = cluster.bootstrap_of(&[1, 2]);
    let v = wait_for(
        "health to report the lost replica",
        Duration::from_secs(30),
        || {
            let (code, v) = health(&live)?;
            Ok((code == Some(3)).then_some(v))
        },
    )?;
    ensure!(v["healthy"] == false, "{v}");
    let under = v["under_replicated"]
        .as_array()
        .context("under_replicated")?;
    let rf3: Vec<&Value> = under.iter().filter(|p| p["topic"] == "rf3").collect();
    ensure!(rf3.len() == 3, "{v}");
    for p in rf3 {
        ensure!(
            !p["isr"]
                .as_array()
                .is_some_and(|isr| isr.iter().any(|n| n == 3)),
            "{p}"
        );
    }
    let text = sluice(&["cluster", "health", "-b", &live], "")?;
    ensure!(
        text.status.code() == Some(3) && text.stdout.starts_with("unhealthy:"),
        "{}",
        text.stdout
    );

    // without a majority of voters no controller decides anything, whatever Metadata says
    // (a leader left alone steps down within an election timeout: check_quorum)
    cluster.kill9(2)?;
    let alone = cluster.bootstrap_of(&[1]);
    let v = wait_for(
        "health to see no controller",
        Duration::from_secs(30),
        || {
            let (code, v) = health(&alone)?;
            Ok((v["controller_answers"] == false).then_some((code, v)))
        },
    )?;
    let (code, v) = v;
    ensure!(code == Some(3), "exit {code:?}: {v}");
    ensure!(
        v["problems"].as_array().is_some_and(|ps| ps
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("controller")))),
        "{v}"
    );
    Ok(())
}

#[test]
fn serve_starts_the_broker_like_no_command() -> Result<()> {
    let help = sluice(&["serve", "--help"], "")?.ok()?.stdout;
    ensure!(
        help.contains("log.retention.ms"),
        "serve --help lacks the settings"
    );
    let top = sluice(&["--help"], "")?.ok()?.stdout;
    for verb in ["serve", "topic", "group", "cluster", "produce", "consume"] {
        ensure!(top.contains(verb), "--help lacks {verb}");
    }
    ensure!(
        top.contains("log.retention.ms"),
        "--help lacks the settings"
    );
    let mixed = sluice(&["--listen", "127.0.0.1:1", "topic", "list"], "")?;
    ensure!(
        !mixed.status.success(),
        "broker flags with a verb were accepted"
    );

    let data = tempfile::Builder::new().prefix("sluice-serve-").tempdir()?;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let data_dir = data.path().display().to_string();
    let broker = Background::spawn(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        &data_dir,
        "--cores",
        "1",
        "--set",
        "cpuset=none",
    ])?;
    wait_for("sluice serve to answer", Duration::from_secs(30), || {
        let out = sluice(&["cluster", "health", "--timeout", "2s", "-b", &addr], "")?;
        Ok(out.status.success().then_some(()))
    })
    .with_context(|| broker.stderr())?;
    Ok(())
}

/// The whitespace-separated words of each line of a table.
fn words(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// `topic delete-records`: each named partition's low watermark moves (-1: to the high
/// watermark), JSON and table output, and the errors by their Kafka names; `topic
/// offsets` shows the earliest and latest offsets after it.
#[test]
fn topic_delete_records_moves_low_watermarks() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    let b = broker.bootstrap();
    let produce1 = |b: &str| -> Result<()> {
        sluice(
            &["produce", "cli-dr", "--partition", "0", "-b", b],
            "one more\n",
        )?
        .ok()?;
        Ok(())
    };
    ok(&b, &["topic", "create", "cli-dr", "--partitions", "2"])?;
    let lines: String = (0..20).map(|i| format!("v{i}\n")).collect();
    for p in ["0", "1"] {
        let args = ["produce", "cli-dr", "--partition", p, "-b", &b];
        sluice(&args, &lines)?.ok()?;
    }
    let out = ok(
        &b,
        &[
            "topic",
            "delete-records",
            "cli-dr",
            "--before",
            "5",
            "--partition",
            "0",
            "--format",
            "json",
        ],
    )?
    .json()?;
    ensure!(
        out["partitions"] == serde_json::json!([{"partition": 0, "low_watermark": 5}]),
        "{out}"
    );
    let table = ok(&b, &["topic", "delete-records", "cli-dr", "--before", "-1"])?.stdout;
    let rows = words(&table);
    ensure!(
        rows == [
            vec!["TOPIC", "PARTITION", "LOW-WATERMARK"],
            vec!["cli-dr", "0", "20"],
            vec!["cli-dr", "1", "20"]
        ],
        "every partition to its high watermark:\n{table}"
    );
    ensure!(broker.watermarks("cli-dr", 0)? == (20, 20));
    produce1(&b)?;
    let offsets = ok(&b, &["topic", "offsets", "cli-dr", "--format", "json"])?.json()?;
    ensure!(
        offsets["partitions"]
            == serde_json::json!([
                {"partition": 0, "earliest": 20, "latest": 21},
                {"partition": 1, "earliest": 20, "latest": 20}
            ]),
        "{offsets}"
    );
    let table = ok(&b, &["topic", "offsets", "cli-dr", "--partition", "0"])?.stdout;
    let rows = words(&table);
    ensure!(
        rows == [
            vec!["TOPIC", "PARTITION", "EARLIEST", "LATEST"],
            vec!["cli-dr", "0", "20", "21"]
        ],
        "{table}"
    );
    fails(
        &b,
        &["topic", "delete-records", "cli-dr", "--before", "99"],
        "OFFSET_OUT_OF_RANGE",
    )?;
    fails(
        &b,
        &[
            "topic",
            "delete-records",
            "cli-dr",
            "--before",
            "1",
            "--partition",
            "7",
        ],
        "UNKNOWN_TOPIC_OR_PARTITION",
    )?;
    Ok(())
}

/// A member assigned a partition the cluster no longer has (its topic deleted before the
/// group rebalanced) is described with "-" for that partition's end and lag, the other
/// rows intact, as kafka-consumer-groups.sh does; the description does not fail.
#[test]
fn group_describe_shows_a_vanished_partition_without_failing() -> Result<()> {
    use bytes::{BufMut as _, Bytes, BytesMut};
    use common::raw::RawClient;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        ConsumerProtocolAssignment, GroupId, JoinGroupRequest, SyncGroupRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable as _, StrBytes};

    let broker = BrokerProcess::spawn_with(1, &[("group.initial.rebalance.delay.ms", "0")])?;
    let b = broker.bootstrap();
    ok(&b, &["topic", "create", "kept", "--partitions", "1"])?;
    sluice(&["produce", "kept", "-b", &b], "x\ny\n")?.ok()?;
    let mut raw = RawClient::connect(broker.addr())?;
    let group = GroupId(StrBytes::from_static_str("g-vanished"));
    let joined = raw.call(
        0,
        &JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(60_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0\xff\xff\xff\xff"))]),
    )?;
    ensure!(joined.error_code == 0, "JoinGroup: {}", joined.error_code);
    let tp = |t: &'static str| {
        TopicPartition::default()
            .with_topic(TopicName(StrBytes::from_static_str(t)))
            .with_partitions(vec![0])
    };
    let mut assignment = BytesMut::new();
    assignment.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![tp("kept"), tp("gone")])
        .encode(&mut assignment, 0)?;
    let synced = raw.call(
        0,
        &SyncGroupRequest::default()
            .with_group_id(group)
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(joined.member_id.clone())
                .with_assignment(assignment.freeze())]),
    )?;
    ensure!(synced.error_code == 0, "SyncGroup: {}", synced.error_code);

    let v = ok(&b, &["group", "describe", "g-vanished", "--format", "json"])?.json()?;
    let rows = v["partitions"].as_array().context("partitions")?;
    let row = |t: &str| rows.iter().find(|r| r["topic"] == t).cloned();
    let kept = row("kept").with_context(|| format!("no row for kept: {v}"))?;
    ensure!(kept["high_watermark"] == 2, "{v}");
    ensure!(kept["member"] == joined.member_id.as_str(), "{v}");
    let gone = row("gone").with_context(|| format!("no row for gone: {v}"))?;
    ensure!(
        gone["high_watermark"].is_null() && gone["lag"].is_null(),
        "{v}"
    );
    ensure!(gone["member"] == joined.member_id.as_str(), "{v}");
    let text = ok(&b, &["group", "describe", "g-vanished"])?.stdout;
    ensure!(text.contains("gone") && text.contains("kept"), "{text}");
    Ok(())
}
