//! Metadata workloads: `metadata` (CreateTopics throughput and latency) and `failover`
//! (how long CreateTopics is unavailable after the active controller is killed).
//!
//! `metadata` creates `--topics` topics through one librdkafka AdminClient, `--batch`
//! topics per CreateTopics request and `--concurrency` requests in flight, then polls
//! Metadata until every topic shows the requested partitions, each with a leader, and
//! deletes them (unless `--keep`).
//!
//! `failover` works on a cluster started by `deploy/local-cluster.sh`. Each round it
//! finds the active controller from the node logs, `kill -9`s it, and loops CreateTopics
//! (a fresh topic each try) through a new AdminClient bootstrapped with the survivors
//! only, until one succeeds: kill -> first success is the failover time. It then starts
//! the node again with `local-cluster.sh start-node` and waits until that node answers
//! Metadata listing every broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::kafka::consumer_config;
use crate::stats::{group_thousands, LatencyHistogram, LatencySummary};

// ---------------------------------------------------------------------------------------
// Command-line arguments.

/// `sluice-bench metadata`: create many topics, verify them with Metadata, delete them.
#[derive(Args, Debug, Clone)]
pub struct MetadataArgs {
    /// Topics to create.
    #[arg(long, default_value_t = 1000)]
    pub topics: u32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 10)]
    pub partitions: u32,
    /// Replication factor of every topic.
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    /// Topics per CreateTopics request.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// CreateTopics requests in flight.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Request (and operation) timeout of each CreateTopics.
    #[arg(long, default_value = "60s", value_parser = crate::metadata::parse_secs)]
    pub request_timeout: Duration,
    /// How long to poll Metadata for the created topics before declaring them missing.
    #[arg(long, default_value = "120s", value_parser = crate::metadata::parse_secs)]
    pub verify_timeout: Duration,
    /// Keep the created topics (they are deleted by default).
    #[arg(long)]
    pub keep: bool,
    /// Also write the JSON report to this file (the human summary still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// `sluice-bench failover`: kill the active controller of a local cluster, time CreateTopics.
#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Directory of a cluster started with `deploy/local-cluster.sh start N DIR`.
    #[arg(long)]
    pub cluster_dir: PathBuf,
    /// Kill / recover rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The cluster script; a relative path is looked up from the current directory, then
    /// from each parent directory of the sluice-bench binary (the repository).
    #[arg(long, default_value = "deploy/local-cluster.sh")]
    pub script: PathBuf,
    /// Partitions of each probe topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Replication factor of each probe topic.
    #[arg(long, default_value_t = 2)]
    pub replication_factor: u32,
    /// Request (and operation) timeout of each probe CreateTopics.
    #[arg(long, default_value = "2s", value_parser = crate::metadata::parse_secs)]
    pub request_timeout: Duration,
    /// A round fails if no CreateTopics succeeds this long after the kill.
    #[arg(long, default_value = "120s", value_parser = crate::metadata::parse_secs)]
    pub give_up: Duration,
    /// How long to wait for the logs to name an active controller, and for a restarted
    /// node to list every broker.
    #[arg(long, default_value = "90s", value_parser = crate::metadata::parse_secs)]
    pub wait_timeout: Duration,
    /// Pause after a restarted node lists every broker, before the next round.
    #[arg(long, default_value = "2s", value_parser = crate::metadata::parse_secs)]
    pub settle: Duration,
    /// Keep the probe topics (they are deleted at the end by default).
    #[arg(long)]
    pub keep: bool,
    /// Also write the JSON report to this file (the human summary still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Parses 30, 30s, 500ms or 2m.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("bad duration {s:?} (use 30, 30s, 500ms or 2m)")),
    }
}

// ---------------------------------------------------------------------------------------
// Reports.

/// One kind of error and how often it occurred.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    /// The error: a Kafka error code name, or librdkafka's message for a failed request.
    pub error: String,
    /// Occurrences.
    pub count: u64,
}

fn error_counts(map: &BTreeMap<String, u64>) -> Vec<ErrorCount> {
    let mut v: Vec<ErrorCount> = map
        .iter()
        .map(|(e, c)| ErrorCount {
            error: e.clone(),
            count: *c,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
    v
}

/// What Metadata showed of the created topics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Seconds from the last CreateTopics answer until Metadata showed every created topic
    /// complete (or until the verify timeout).
    pub seconds: f64,
    /// Metadata requests made.
    pub polls: u64,
    /// Topics expected (those CreateTopics reported created).
    pub expected: u64,
    /// Of those, topics present with the right partition count and no topic error.
    pub found: u64,
    /// Topics missing from Metadata.
    pub missing: u64,
    /// Topics present with a different partition count or a topic error.
    pub wrong: u64,
    /// Partitions (of topics present) without a leader or with a partition error.
    pub partitions_without_leader: u64,
    /// Partitions with fewer replicas than the replication factor.
    pub partitions_short_of_replicas: u64,
    /// Partitions whose ISR is smaller than the replication factor.
    pub partitions_under_replicated: u64,
    /// Every created topic complete: present, partitions all led, replicas as requested.
    pub ok: bool,
}

/// Deleting the topics at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeleteReport {
    /// Topics deleted.
    pub deleted: u64,
    /// Seconds the DeleteTopics requests took.
    pub seconds: f64,
    /// Errors (UNKNOWN_TOPIC_OR_PARTITION for a topic never created is not counted).
    pub errors: Vec<ErrorCount>,
}

/// The result of `sluice-bench metadata`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreateReport {
    /// "metadata".
    pub name: String,
    /// Bootstrap servers used.
    pub bootstrap: String,
    /// Topics requested.
    pub topics: u32,
    /// Partitions per topic.
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Topics per CreateTopics request.
    pub batch: u32,
    /// Requests in flight.
    pub concurrency: u32,
    /// CreateTopics requests sent.
    pub requests: u64,
    /// Requests in which every topic was created.
    pub requests_ok: u64,
    /// Topics CreateTopics reported created.
    pub created: u64,
    /// Topics that failed (per-topic error or failed request).
    pub failed: u64,
    /// The failures by error.
    pub errors: Vec<ErrorCount>,
    /// Seconds from the first CreateTopics sent to the last answered.
    pub create_seconds: f64,
    /// Created topics per second over `create_seconds`.
    pub topics_per_sec: f64,
    /// Created partitions per second over `create_seconds`.
    pub partitions_per_sec: f64,
    /// Latency of the CreateTopics requests that fully succeeded.
    pub create_latency: Option<LatencySummary>,
    /// Latency of the requests that failed (wholly or for some topic).
    pub failed_latency: Option<LatencySummary>,
    /// The Metadata check.
    pub verify: VerifyReport,
    /// Seconds from the first CreateTopics until Metadata showed them all.
    pub create_and_verify_seconds: f64,
    /// The clean-up, unless `--keep`.
    pub delete: Option<DeleteReport>,
}

/// One kill / recover round of `sluice-bench failover`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverRound {
    /// 1-based.
    pub round: u32,
    /// The node killed (the active controller the logs named).
    pub killed_node: u64,
    /// Its pid.
    pub killed_pid: u32,
    /// Raft term on the killed node's "active controller" line, if found.
    pub killed_term: Option<u64>,
    /// Whether a CreateTopics succeeded within `--give-up`.
    pub ok: bool,
    /// Milliseconds from `kill -9` to the first successful CreateTopics answer.
    pub failover_ms: Option<f64>,
    /// CreateTopics tries, the successful one included.
    pub attempts: u64,
    /// Errors of the failed tries.
    pub errors: Vec<ErrorCount>,
    /// Latency of the successful CreateTopics itself.
    pub success_call_ms: Option<f64>,
    /// The active controller after the failover, from the survivors' logs.
    pub new_controller: Option<u64>,
    /// kill -> the new controller's "metadata quorum leader ... leader=Some(itself)" line
    /// (log timestamp against this machine's clock).
    pub elected_after_ms: Option<f64>,
    /// kill -> the new controller's "active controller" line.
    pub active_after_ms: Option<f64>,
    /// `start-node` plus the wait until the node lists every broker in Metadata.
    pub restart_ms: Option<f64>,
    /// `start-node` -> the controller's "broker unfenced node=<killed>" line (log
    /// timestamp). A restarted node lists every broker before it is unfenced (it serves
    /// the metadata it has after 10 s), so the next round waits for this instead.
    pub unfenced_after_ms: Option<f64>,
}

/// min / median / mean / max of the successful rounds, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MsSummary {
    /// Samples.
    pub count: usize,
    /// Smallest.
    pub min_ms: f64,
    /// Median (mean of the two middle samples for an even count).
    pub median_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl MsSummary {
    /// The summary of `values`, or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Self {
            count: n,
            min_ms: v[0],
            median_ms: (v[(n - 1) / 2] + v[n / 2]) / 2.0,
            mean_ms: v.iter().sum::<f64>() / n as f64,
            max_ms: v[n - 1],
        })
    }
}

/// The result of `sluice-bench failover`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverReport {
    /// "failover".
    pub name: String,
    /// The cluster directory.
    pub cluster_dir: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// The node settings saved in cluster.env (SETTINGS).
    pub cluster_settings: String,
    /// Probe topic shape.
    pub partitions: u32,
    /// Probe topic replication factor.
    pub replication_factor: u32,
    /// Request timeout of each probe, ms.
    pub request_timeout_ms: f64,
    /// Every round.
    pub rounds: Vec<FailoverRound>,
    /// kill -> first successful CreateTopics over the successful rounds.
    pub failover: Option<MsSummary>,
    /// kill -> new "active controller" log line, where found.
    pub active_after: Option<MsSummary>,
    /// Restart time of the killed nodes (until they list every broker).
    pub restart: Option<MsSummary>,
    /// Restart -> unfenced by the controller.
    pub unfenced_after: Option<MsSummary>,
    /// Probe topics deleted at the end (unless `--keep`).
    pub deleted_topics: u64,
}

// ---------------------------------------------------------------------------------------
// librdkafka helpers.

fn admin_config(bootstrap: &str) -> ClientConfig {
    crate::kafka::client_config(bootstrap, RDKafkaLogLevel::Error)
}

fn admin_client(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    admin_config(bootstrap)
        .create()
        .context("creating admin client")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("tokio runtime for admin calls")
}

fn admin_options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

fn metadata_client(bootstrap: &str) -> Result<BaseConsumer> {
    consumer_config(bootstrap, None, false, &[])
        .set_log_level(RDKafkaLogLevel::Critical)
        .create()
        .context("creating metadata client")
}

/// The error name librdkafka gives a Kafka error code, e.g. `RequestTimedOut`.
fn code_name(code: RDKafkaErrorCode) -> String {
    format!("{code:?}")
}

fn request_error(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("request failed: {}", code_name(code)),
        None => format!("request failed: {e}"),
    }
}

/// Outcome of one CreateTopics request: names created, and (name, error) of the rest.
struct CallOutcome {
    latency: Duration,
    created: Vec<String>,
    failed: Vec<(String, String)>,
}

async fn create_call(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    partitions: i32,
    rf: i32,
    timeout: Duration,
) -> CallOutcome {
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(rf)))
        .collect();
    let opts = admin_options(timeout);
    let start = Instant::now();
    let result = admin.create_topics(topics.iter(), &opts).await;
    let latency = start.elapsed();
    let mut created = Vec::new();
    let mut failed = Vec::new();
    match result {
        Ok(results) => {
            let mut answered = HashSet::new();
            for r in results {
                match r {
                    Ok(name) => {
                        answered.insert(name.clone());
                        created.push(name);
                    }
                    Err((name, code)) => {
                        answered.insert(name.clone());
                        failed.push((name, code_name(code)));
                    }
                }
            }
            for n in names {
                if !answered.contains(n) {
                    failed.push((n.clone(), "no result for the topic".into()));
                }
            }
        }
        Err(e) => {
            let msg = request_error(&e);
            failed.extend(names.iter().map(|n| (n.clone(), msg.clone())));
        }
    }
    CallOutcome {
        latency,
        created,
        failed,
    }
}

/// Deletes `names` in requests of up to 100 topics; UNKNOWN_TOPIC_OR_PARTITION is fine.
fn delete_topics(bootstrap: &str, names: &[String], timeout: Duration) -> Result<DeleteReport> {
    let admin = admin_client(bootstrap)?;
    let rt = runtime()?;
    let start = Instant::now();
    let mut deleted = 0u64;
    let mut errors = BTreeMap::new();
    for chunk in names.chunks(100) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let opts = admin_options(timeout);
        match rt.block_on(admin.delete_topics(&refs, &opts)) {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) => deleted += 1,
                        Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                        Err((_, code)) => *errors.entry(code_name(code)).or_insert(0) += 1,
                    }
                }
            }
            Err(e) => *errors.entry(request_error(&e)).or_insert(0) += chunk.len() as u64,
        }
    }
    Ok(DeleteReport {
        deleted,
        seconds: start.elapsed().as_secs_f64(),
        errors: error_counts(&errors),
    })
}

/// Checks `md` for the topics in `expected`.
fn check_metadata(
    md: &Metadata,
    expected: &HashSet<&str>,
    partitions: u32,
    rf: u32,
) -> VerifyReport {
    let mut r = VerifyReport {
        expected: expected.len() as u64,
        ..VerifyReport::default()
    };
    let mut seen = 0u64;
    for t in md.topics() {
        if !expected.contains(t.name()) {
            continue;
        }
        seen += 1;
        if t.error().is_some() || t.partitions().len() != partitions as usize {
            r.wrong += 1;
            continue;
        }
        let mut complete = true;
        for p in t.partitions() {
            if p.leader() < 0 || p.error().is_some() {
                r.partitions_without_leader += 1;
                complete = false;
            }
            if p.replicas().len() < rf as usize {
                r.partitions_short_of_replicas += 1;
                complete = false;
            }
            if p.isr().len() < rf as usize {
                r.partitions_under_replicated += 1;
            }
        }
        if complete {
            r.found += 1;
        }
    }
    r.missing = r.expected - seen;
    r.ok = r.found == r.expected;
    r
}

// ---------------------------------------------------------------------------------------
// `metadata`.

/// Runs `sluice-bench metadata` and returns its report (errors inside it are reported,
/// not returned; only setup failures are `Err`).
pub fn run_create(bootstrap: &str, a: &MetadataArgs, progress: bool) -> Result<CreateReport> {
    if a.topics == 0 || a.partitions == 0 || a.replication_factor == 0 {
        bail!("--topics, --partitions and --replication-factor must be at least 1");
    }
    let batch = a.batch.max(1) as usize;
    let concurrency = a.concurrency.max(1) as usize;
    let partitions = i32::try_from(a.partitions).context("--partitions")?;
    let rf = i32::try_from(a.replication_factor).context("--replication-factor")?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let names: Vec<String> = (0..a.topics)
        .map(|i| format!("sluice-bench-md-{tag}-{i:05}"))
        .collect();
    let batches: Vec<Vec<String>> = names.chunks(batch).map(<[String]>::to_vec).collect();
    if progress {
        eprintln!(
            "creating {} topics x {} partitions (RF {}) in {} CreateTopics requests, {} in flight ...",
            a.topics,
            a.partitions,
            a.replication_factor,
            batches.len(),
            concurrency
        );
    }

    let admin = Rc::new(admin_client(bootstrap)?);
    let rt = runtime()?;
    let local = tokio::task::LocalSet::new();
    let timeout = a.request_timeout;
    let mut ok_hist = LatencyHistogram::new();
    let mut failed_hist = LatencyHistogram::new();
    let mut created: Vec<String> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed_topics = 0u64;
    let mut requests_ok = 0u64;
    let start = Instant::now();
    local.block_on(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0usize;
        let mut last_print = Instant::now();
        let mut last_created = 0usize;
        loop {
            while set.len() < concurrency && next < batches.len() {
                let names = batches[next].clone();
                next += 1;
                let admin = Rc::clone(&admin);
                set.spawn_local(async move {
                    create_call(&admin, &names, partitions, rf, timeout).await
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let outcome = match joined {
                Ok(o) => o,
                Err(e) => {
                    *errors.entry(format!("task failed: {e}")).or_insert(0) += 1;
                    continue;
                }
            };
            if outcome.failed.is_empty() {
                requests_ok += 1;
                ok_hist.record(outcome.latency);
            } else {
                failed_hist.record(outcome.latency);
            }
            for (_, e) in &outcome.failed {
                *errors.entry(e.clone()).or_insert(0) += 1;
                failed_topics += 1;
            }
            created.extend(outcome.created);
            if progress && last_print.elapsed() >= Duration::from_secs(1) {
                let secs = last_print.elapsed().as_secs_f64();
                eprintln!(
                    "[{:>5.1}s] created {}/{} topics, {:.0} topics/s, failed {}",
                    start.elapsed().as_secs_f64(),
                    created.len(),
                    names.len(),
                    (created.len() - last_created) as f64 / secs,
                    failed_topics
                );
                last_print = Instant::now();
                last_created = created.len();
            }
        }
    });
    let create_secs = start.elapsed().as_secs_f64();
    drop(admin);

    // Verify with Metadata, polling until every created topic is complete.
    let expected: HashSet<&str> = created.iter().map(String::as_str).collect();
    let verify_start = Instant::now();
    let client = metadata_client(bootstrap)?;
    let mut verify = VerifyReport {
        expected: expected.len() as u64,
        missing: expected.len() as u64,
        ok: expected.is_empty(),
        ..VerifyReport::default()
    };
    let mut polls = 0u64;
    let mut last_err = None;
    while !expected.is_empty() {
        polls += 1;
        match client.fetch_metadata(None, Duration::from_secs(30)) {
            Ok(md) => {
                verify = check_metadata(&md, &expected, a.partitions, a.replication_factor);
                last_err = None;
            }
            Err(e) => last_err = Some(e.to_string()),
        }
        if verify.ok || verify_start.elapsed() >= a.verify_timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    verify.seconds = verify_start.elapsed().as_secs_f64();
    verify.polls = polls;
    if let (Some(e), true) = (last_err, progress) {
        eprintln!("warning: last Metadata request failed: {e}");
    }
    let create_and_verify = start.elapsed().as_secs_f64();
    drop(client);

    let delete = if a.keep {
        None
    } else {
        if progress {
            eprintln!("deleting the {} topics ...", names.len());
        }
        // Every name tried: a request that timed out may still have created its topics.
        Some(delete_topics(bootstrap, &names, Duration::from_secs(60))?)
    };

    let n_created = created.len() as u64;
    Ok(CreateReport {
        name: "metadata".into(),
        bootstrap: bootstrap.to_string(),
        topics: a.topics,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        batch: batch as u32,
        concurrency: concurrency as u32,
        requests: batches.len() as u64,
        requests_ok,
        created: n_created,
        failed: failed_topics,
        errors: error_counts(&errors),
        create_seconds: create_secs,
        topics_per_sec: rate(n_created as f64, create_secs),
        partitions_per_sec: rate((n_created * u64::from(a.partitions)) as f64, create_secs),
        create_latency: ok_hist.summary(),
        failed_latency: failed_hist.summary(),
        verify,
        create_and_verify_seconds: create_and_verify,
        delete,
    })
}

fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

fn latency_line(out: &mut String, label: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {label:<26} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms, {} calls)",
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        l.mean_ms,
        group_thousands(l.count as f64)
    );
}

fn errors_line(out: &mut String, label: &str, errors: &[ErrorCount]) {
    if errors.is_empty() {
        return;
    }
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{} x{}", e.error, e.count))
        .collect();
    let _ = writeln!(out, "  {label:<26} {}", list.join(", "));
}

/// The human summary of a `metadata` run.
pub fn create_table(r: &CreateReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== metadata: {} topics x {} partitions, RF {}, {} topic(s) per CreateTopics, {} in flight",
        group_thousands(f64::from(r.topics)),
        r.partitions,
        r.replication_factor,
        r.batch,
        r.concurrency
    );
    let _ = writeln!(
        out,
        "  {:<26} {} of {} topics in {:.2} s: {:.1} topics/s, {} partitions/s",
        "created",
        group_thousands(r.created as f64),
        group_thousands(f64::from(r.topics)),
        r.create_seconds,
        r.topics_per_sec,
        group_thousands(r.partitions_per_sec)
    );
    if let Some(l) = &r.create_latency {
        latency_line(&mut out, "CreateTopics latency", l);
    }
    if let Some(l) = &r.failed_latency {
        latency_line(&mut out, "failed CreateTopics", l);
    }
    errors_line(&mut out, "errors (topics)", &r.errors);
    let v = &r.verify;
    let _ = writeln!(
        out,
        "  {:<26} {} of {} complete after {:.2} s more ({} polls); missing {}, wrong {}, partitions without leader {}, short of replicas {}, ISR < RF {}",
        "Metadata check",
        group_thousands(v.found as f64),
        group_thousands(v.expected as f64),
        v.seconds,
        v.polls,
        v.missing,
        v.wrong,
        v.partitions_without_leader,
        v.partitions_short_of_replicas,
        v.partitions_under_replicated
    );
    let _ = writeln!(
        out,
        "  {:<26} {:.2} s",
        "create + visible", r.create_and_verify_seconds
    );
    if let Some(d) = &r.delete {
        let _ = writeln!(
            out,
            "  {:<26} {} topics in {:.2} s",
            "deleted",
            group_thousands(d.deleted as f64),
            d.seconds
        );
        errors_line(&mut out, "delete errors", &d.errors);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Node logs.

/// Removes ANSI escape sequences (CSI `ESC [ ... final` and two-byte `ESC x`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // ESC x is dropped whole; after ESC [ everything up to the final byte goes too.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The part of a node log written by its current process: after the last
/// `===== ... starting node` line local-cluster.sh writes before each start.
pub fn current_run(log: &str) -> &str {
    let mut start = 0;
    let mut pos = 0;
    for line in log.split_inclusive('\n') {
        if line.starts_with("=====") && line.contains("starting node") {
            start = pos + line.len();
        }
        pos += line.len();
    }
    &log[start..]
}

/// A `metadata quorum leader` line: its timestamp and `leader=` value.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderLine {
    /// The line's leading timestamp, if it parses.
    pub at: Option<SystemTime>,
    /// `leader=Some(N)` -> `Some(N)`, `leader=None` -> `None`.
    pub leader: Option<u64>,
}

/// Parses the `leader=` field of a `metadata quorum leader` line.
pub fn parse_leader_line(line: &str) -> Option<LeaderLine> {
    let idx = line.find("metadata quorum leader")?;
    let rest = &line[idx + "metadata quorum leader".len()..];
    let field = rest
        .find(" leader=")
        .map(|i| &rest[i + " leader=".len()..])?;
    let leader = if field.starts_with("None") {
        None
    } else {
        let inner = field.strip_prefix("Some(")?;
        let end = inner.find(')')?;
        Some(inner[..end].trim().parse().ok()?)
    };
    Some(LeaderLine {
        at: line_time(line),
        leader,
    })
}

/// Whether the line is the one the raft leader logs once it acts as controller.
pub fn is_active_line(line: &str) -> bool {
    line.contains(": active controller")
}

fn field_u64(line: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=");
    let i = line.find(&pat)?;
    let digits: String = line[i + pat.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The leading RFC 3339 UTC timestamp of a log line (tracing's default format).
pub fn line_time(line: &str) -> Option<SystemTime> {
    parse_rfc3339_utc(line.split_whitespace().next()?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let rest = rest.strip_suffix('Z')?;
    let nanos = if rest.is_empty() {
        0
    } else {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let v: u32 = frac.parse().ok()?;
        v * 10u32.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a node's current log says about the controller quorum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    /// The last `metadata quorum leader` line.
    pub last_leader: Option<LeaderLine>,
    /// An `active controller` line after that leader line: (time, term).
    pub active_since_leader: Option<(Option<SystemTime>, Option<u64>)>,
}

/// Reads what the current run of a node's log says (`log` may hold earlier runs).
pub fn node_view(log: &str) -> NodeView {
    let mut v = NodeView::default();
    for raw in current_run(log).lines() {
        if !raw.contains("metadata quorum leader") && !raw.contains("active controller") {
            continue;
        }
        let line = strip_ansi(raw);
        if let Some(l) = parse_leader_line(&line) {
            v.last_leader = Some(l);
            v.active_since_leader = None;
        } else if is_active_line(&line) {
            v.active_since_leader = Some((line_time(&line), field_u64(&line, "term")));
        }
    }
    v
}

/// The timestamp of the first `broker unfenced node=<id>` line at or after `since`.
pub fn unfenced_line(log: &str, id: u64, since: SystemTime) -> Option<SystemTime> {
    log.lines()
        .filter(|l| l.contains("broker unfenced"))
        .map(strip_ansi)
        .filter(|l| field_u64(l, "node") == Some(id))
        .filter_map(|l| line_time(&l))
        .find(|&t| t >= since)
}

/// The majority's leader among `views`: `Some(n)` when more than half name node n.
pub fn majority_leader(views: &[NodeView]) -> Option<u64> {
    let mut votes: HashMap<u64, usize> = HashMap::new();
    for v in views {
        if let Some(LeaderLine {
            leader: Some(n), ..
        }) = &v.last_leader
        {
            *votes.entry(*n).or_insert(0) += 1;
        }
    }
    votes
        .into_iter()
        .find(|&(_, c)| c * 2 > views.len())
        .map(|(n, _)| n)
}

/// Reads a node log: the last 8 MiB, or the whole file if the current run started
/// earlier than that (the current run must be complete for `node_view`).
fn read_log(path: &Path) -> Result<String> {
    const TAIL: u64 = 8 << 20;
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len > TAIL {
        f.seek(SeekFrom::Start(len - TAIL))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("starting node") {
            return Ok(text);
        }
        f.seek(SeekFrom::Start(0))?;
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

// ---------------------------------------------------------------------------------------
// The local cluster.

/// What `deploy/local-cluster.sh` saved in DIR/cluster.env.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterEnv {
    /// Node count.
    pub n: usize,
    /// Kafka ports, node 1 first.
    pub kafka_ports: Vec<u16>,
    /// The saved SETTINGS line.
    pub settings: String,
}

/// Parses cluster.env.
pub fn parse_cluster_env(text: &str) -> Result<ClusterEnv> {
    let mut kv = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            kv.insert(k.trim().to_string(), v.to_string());
        }
    }
    let n: usize = kv
        .get("N")
        .ok_or_else(|| anyhow!("no N="))?
        .trim()
        .parse()
        .context("N")?;
    let kafka_ports = kv
        .get("KAFKA_PORTS")
        .ok_or_else(|| anyhow!("no KAFKA_PORTS="))?
        .split(',')
        .map(|p| p.trim().parse::<u16>().context("KAFKA_PORTS"))
        .collect::<Result<Vec<_>>>()?;
    if n == 0 || kafka_ports.len() != n {
        bail!("N={n} but {} Kafka ports", kafka_ports.len());
    }
    Ok(ClusterEnv {
        n,
        kafka_ports,
        settings: kv.get("SETTINGS").cloned().unwrap_or_default(),
    })
}

struct Cluster {
    dir: PathBuf,
    env: ClusterEnv,
    script: PathBuf,
}

fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may hold spaces or parens).
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

#[allow(unsafe_code)]
fn kill9(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid")?;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Cluster {
    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn ids(&self) -> impl Iterator<Item = u64> {
        1..=self.env.n as u64
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.env.kafka_ports[id as usize - 1])
    }

    /// The node's pid if its pid file names a live process.
    fn pid(&self, id: u64) -> Option<u32> {
        let text = fs::read_to_string(self.node_dir(id).join("pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        pid_alive(pid).then_some(pid)
    }

    fn live(&self) -> Vec<u64> {
        self.ids().filter(|&id| self.pid(id).is_some()).collect()
    }

    fn view(&self, id: u64) -> NodeView {
        read_log(&self.node_dir(id).join("log"))
            .map(|l| node_view(&l))
            .unwrap_or_default()
    }

    /// Waits until the majority of the live nodes names a leader that is live and has
    /// logged `active controller` since; returns it and its view.
    fn active_controller(&self, timeout: Duration) -> Result<(u64, NodeView)> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let views: Vec<(u64, NodeView)> = live.iter().map(|&id| (id, self.view(id))).collect();
            let only: Vec<NodeView> = views.iter().map(|(_, v)| v.clone()).collect();
            let leader = majority_leader(&only);
            let mut why = format!(
                "live nodes {live:?}, last leader lines {:?}",
                views
                    .iter()
                    .map(|(id, v)| (id, v.last_leader.as_ref().map(|l| l.leader)))
                    .collect::<Vec<_>>()
            );
            if let Some(l) = leader {
                match views.iter().find(|(id, _)| *id == l) {
                    Some((_, v)) if v.active_since_leader.is_some() => return Ok((l, v.clone())),
                    Some(_) => {
                        let _ = write!(why, "; node {l} has not logged \"active controller\"");
                    }
                    None => {
                        let _ = write!(why, "; the majority's leader {l} is not running");
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("no active controller in the logs after {timeout:?}: {why}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `local-cluster.sh start-node DIR ID` with the settings saved in cluster.env.
    fn start_node(&self, id: u64) -> Result<()> {
        let out = Command::new(&self.script)
            .arg("start-node")
            .arg(&self.dir)
            .arg(id.to_string())
            .env_remove("SLUICE_CLUSTER_SETTINGS")
            .env_remove("SLUICE_CORES")
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} start-node {} {id} failed ({}):\n{}",
                self.script.display(),
                self.dir.display(),
                out.status,
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until some node's log shows the controller unfencing node `id` at or after
    /// `since`; returns that line's timestamp.
    fn wait_unfenced(&self, id: u64, since: SystemTime, timeout: Duration) -> Result<SystemTime> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in self.ids() {
                let Ok(log) = read_log(&self.node_dir(n).join("log")) else {
                    continue;
                };
                if let Some(t) = unfenced_line(&log, id, since) {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                bail!("no \"broker unfenced node={id}\" line in the node logs within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `id` answers Metadata listing every broker of the cluster. Each
    /// poll uses a fresh client bootstrapped with that node alone, so it is the one asked.
    fn wait_lists_all(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr(id);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match metadata_client(&addr).map(|c| c.fetch_metadata(None, Duration::from_secs(2))) {
                Ok(Ok(md)) => {
                    let ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                    if ids.len() >= self.env.n {
                        return Ok(());
                    }
                    last = format!("lists brokers {ids:?}");
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "node {id} ({addr}) did not list {} brokers within {timeout:?}: {last}",
            self.env.n
        )
    }
}

/// Finds the cluster script: as given if it exists, else under a parent directory of the
/// running binary (target/release/sluice-bench -> the repository).
pub fn find_script(script: &Path) -> Result<PathBuf> {
    if script.is_file() {
        return Ok(script.to_path_buf());
    }
    if script.is_relative() {
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                let p = dir.join(script);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    bail!(
        "cluster script {} not found (from the current directory or the binary's repository); pass --script PATH",
        script.display()
    )
}

fn since_ms(t: Option<SystemTime>, from: SystemTime) -> Option<f64> {
    let d = t?.duration_since(from).ok()?;
    Some(d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------
// `failover`.

/// Runs `sluice-bench failover`.
pub fn run_failover(a: &FailoverArgs, progress: bool) -> Result<FailoverReport> {
    let env_path = a.cluster_dir.join("cluster.env");
    let env = parse_cluster_env(
        &fs::read_to_string(&env_path)
            .with_context(|| format!("reading {}", env_path.display()))?,
    )
    .with_context(|| format!("parsing {}", env_path.display()))?;
    let script = find_script(&a.script)?;
    let cluster = Cluster {
        dir: a.cluster_dir.clone(),
        env,
        script,
    };
    if cluster.env.n < 2 {
        bail!("failover needs a cluster of at least 2 nodes");
    }
    let live = cluster.live();
    if live.len() != cluster.env.n {
        bail!(
            "only nodes {live:?} of {} are running; start the cluster first",
            cluster.env.n
        );
    }
    let partitions = i32::try_from(a.partitions).context("--partitions")?;
    let rf = i32::try_from(a.replication_factor).context("--replication-factor")?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let rt = runtime()?;
    let mut tried: Vec<String> = Vec::new();
    let mut rounds = Vec::new();
    let mut fatal = None;

    for round in 1..=a.rounds {
        let (victim, view) = match cluster.active_controller(a.wait_timeout) {
            Ok(x) => x,
            Err(e) => {
                fatal = Some(e.context(format!("round {round}")));
                break;
            }
        };
        let Some(pid) = cluster.pid(victim) else {
            fatal = Some(anyhow!("round {round}: node {victim} has no live pid"));
            break;
        };
        let killed_term = view.active_since_leader.and_then(|(_, t)| t);
        let survivors: Vec<u64> = cluster.ids().filter(|&id| id != victim).collect();
        let bootstrap: Vec<String> = survivors.iter().map(|&id| cluster.addr(id)).collect();
        let bootstrap = bootstrap.join(",");
        if progress {
            eprintln!(
                "round {round}: active controller is node {victim} (pid {pid}, term {}); kill -9",
                killed_term.map_or("?".into(), |t| t.to_string())
            );
        }

        let killed_wall = SystemTime::now();
        let killed_at = Instant::now();
        kill9(pid)?;
        let mut r = FailoverRound {
            round,
            killed_node: victim,
            killed_pid: pid,
            killed_term,
            ok: false,
            failover_ms: None,
            attempts: 0,
            errors: Vec::new(),
            success_call_ms: None,
            new_controller: None,
            elected_after_ms: None,
            active_after_ms: None,
            restart_ms: None,
            unfenced_after_ms: None,
        };
        let probe = (|| -> Result<()> {
            let admin = admin_client(&bootstrap)?;
            let mut errors = BTreeMap::new();
            while killed_at.elapsed() < a.give_up {
                r.attempts += 1;
                let name = format!("sluice-bench-failover-{tag}-r{round}-{}", r.attempts);
                tried.push(name.clone());
                let o = rt.block_on(create_call(
                    &admin,
                    std::slice::from_ref(&name),
                    partitions,
                    rf,
                    a.request_timeout,
                ));
                if o.failed.is_empty() && !o.created.is_empty() {
                    r.ok = true;
                    r.failover_ms = Some(killed_at.elapsed().as_secs_f64() * 1e3);
                    r.success_call_ms = Some(o.latency.as_secs_f64() * 1e3);
                    break;
                }
                for (_, e) in o.failed {
                    *errors.entry(e).or_insert(0) += 1;
                }
                if o.latency < Duration::from_millis(20) {
                    // An immediate refusal: don't spin.
                    std::thread::sleep(Duration::from_millis(20) - o.latency);
                }
            }
            r.errors = error_counts(&errors);
            Ok(())
        })();
        if progress {
            match (&probe, r.failover_ms) {
                (Err(e), _) => eprintln!("round {round}: probe failed: {e:#}"),
                (Ok(()), Some(ms)) => eprintln!(
                    "round {round}: CreateTopics succeeded {:.0} ms after the kill ({} attempt(s){})",
                    ms,
                    r.attempts,
                    if r.errors.is_empty() {
                        String::new()
                    } else {
                        let e: Vec<String> =
                            r.errors.iter().map(|e| format!("{} x{}", e.error, e.count)).collect();
                        format!("; {}", e.join(", "))
                    }
                ),
                (Ok(()), None) => eprintln!(
                    "round {round}: no CreateTopics succeeded within {:?} ({} attempts)",
                    a.give_up, r.attempts
                ),
            }
        }

        // Who took over, and when (from the survivors' logs).
        if let Ok((leader, v)) = cluster.active_controller(Duration::from_secs(10)) {
            if leader != victim {
                r.new_controller = Some(leader);
                r.active_after_ms =
                    since_ms(v.active_since_leader.and_then(|(t, _)| t), killed_wall);
                r.elected_after_ms = since_ms(v.last_leader.and_then(|l| l.at), killed_wall);
            }
        }

        // Bring the node back even if the probe failed, so the cluster is left whole, and
        // wait until the controller has unfenced it: only then is the cluster whole again.
        let restart_wall = SystemTime::now();
        let restart_at = Instant::now();
        let restarted = cluster
            .start_node(victim)
            .and_then(|()| cluster.wait_lists_all(victim, a.wait_timeout))
            .and_then(|()| {
                r.restart_ms = Some(restart_at.elapsed().as_secs_f64() * 1e3);
                if progress {
                    eprintln!(
                        "round {round}: node {victim} restarted and lists {} brokers after {:.1} s",
                        cluster.env.n,
                        restart_at.elapsed().as_secs_f64()
                    );
                }
                cluster.wait_unfenced(victim, restart_wall, a.wait_timeout)
            });
        match restarted {
            Ok(at) => {
                r.unfenced_after_ms = since_ms(Some(at), restart_wall);
                if progress {
                    eprintln!(
                        "round {round}: node {victim} unfenced {:.1} s after the restart",
                        r.unfenced_after_ms.unwrap_or(0.0) / 1e3
                    );
                }
            }
            Err(e) => {
                rounds.push(r);
                fatal = Some(e.context(format!("round {round}: restarting node {victim}")));
                break;
            }
        }
        rounds.push(r);
        if let Err(e) = probe {
            fatal = Some(e.context(format!("round {round}")));
            break;
        }
        if round < a.rounds {
            std::thread::sleep(a.settle);
        }
    }

    let mut deleted = 0;
    if !a.keep && !tried.is_empty() {
        let all: Vec<String> = cluster.ids().map(|id| cluster.addr(id)).collect();
        match delete_topics(&all.join(","), &tried, Duration::from_secs(30)) {
            Ok(d) => {
                deleted = d.deleted;
                if !d.errors.is_empty() && progress {
                    eprintln!("warning: deleting probe topics: {:?}", d.errors);
                }
            }
            Err(e) => eprintln!("warning: deleting probe topics: {e:#}"),
        }
    }
    if let Some(e) = fatal {
        if rounds.is_empty() {
            return Err(e);
        }
        eprintln!("error: {e:#} (reporting the rounds completed)");
    }

    let ok_ms: Vec<f64> = rounds.iter().filter_map(|r| r.failover_ms).collect();
    let active: Vec<f64> = rounds.iter().filter_map(|r| r.active_after_ms).collect();
    let restart: Vec<f64> = rounds.iter().filter_map(|r| r.restart_ms).collect();
    let unfenced: Vec<f64> = rounds.iter().filter_map(|r| r.unfenced_after_ms).collect();
    Ok(FailoverReport {
        name: "failover".into(),
        cluster_dir: a.cluster_dir.display().to_string(),
        nodes: cluster.env.n,
        cluster_settings: cluster.env.settings.clone(),
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        request_timeout_ms: a.request_timeout.as_secs_f64() * 1e3,
        rounds,
        failover: MsSummary::of(&ok_ms),
        active_after: MsSummary::of(&active),
        restart: MsSummary::of(&restart),
        unfenced_after: MsSummary::of(&unfenced),
        deleted_topics: deleted,
    })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

/// The human summary of a `failover` run.
pub fn failover_table(r: &FailoverReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== failover: {} nodes ({}), probe topics {} partitions RF {}, request timeout {:.0} ms",
        r.nodes,
        if r.cluster_settings.is_empty() {
            "default settings".to_string()
        } else {
            r.cluster_settings.clone()
        },
        r.partitions,
        r.replication_factor,
        r.request_timeout_ms
    );
    let _ = writeln!(
        out,
        "  {:>5} {:>6} {:>6} {:>12} {:>8} {:>10} {:>10} {:>8} {:>10} {:>11}  errors",
        "round",
        "killed",
        "new",
        "failover ms",
        "tries",
        "elected ms",
        "active ms",
        "call ms",
        "restart ms",
        "unfenced ms"
    );
    for x in &r.rounds {
        let errs: Vec<String> = x
            .errors
            .iter()
            .map(|e| format!("{} x{}", e.error, e.count))
            .collect();
        let _ = writeln!(
            out,
            "  {:>5} {:>6} {:>6} {:>12} {:>8} {:>10} {:>10} {:>8} {:>10} {:>11}  {}",
            x.round,
            x.killed_node,
            x.new_controller.map_or("?".into(), |n| n.to_string()),
            if x.ok {
                opt_ms(x.failover_ms)
            } else {
                "FAILED".into()
            },
            x.attempts,
            opt_ms(x.elected_after_ms),
            opt_ms(x.active_after_ms),
            opt_ms(x.success_call_ms),
            opt_ms(x.restart_ms),
            opt_ms(x.unfenced_after_ms),
            if errs.is_empty() {
                "-".into()
            } else {
                errs.join(", ")
            }
        );
    }
    let mut summary = |label: &str, s: &Option<MsSummary>| {
        if let Some(s) = s {
            let _ = writeln!(
                out,
                "  {label:<34} min {:.0} ms, median {:.0} ms, max {:.0} ms ({} rounds)",
                s.min_ms, s.median_ms, s.max_ms, s.count
            );
        }
    };
    summary("kill -9 -> first CreateTopics ok", &r.failover);
    summary("kill -9 -> new active controller", &r.active_after);
    summary("restart -> lists every broker", &r.restart);
    summary("restart -> unfenced", &r.unfenced_after);
    out
}

// ---------------------------------------------------------------------------------------
// Entry points used by main.rs.

fn emit<T: Serialize>(json: bool, json_out: Option<&Path>, value: &T, table: String) -> Result<()> {
    let doc = serde_json::to_string_pretty(value)?;
    if let Some(path) = json_out {
        fs::write(path, format!("{doc}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{doc}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// `sluice-bench metadata`: runs, prints, and fails if any topic was not created or
/// not seen complete in Metadata.
pub fn metadata_command(bootstrap: &str, json: bool, quiet: bool, a: &MetadataArgs) -> Result<()> {
    let r = run_create(bootstrap, a, !quiet)?;
    emit(json, a.json_out.as_deref(), &r, create_table(&r))?;
    if r.failed > 0 || !r.verify.ok {
        bail!(
            "{} topic(s) failed to create; Metadata check {}",
            r.failed,
            if r.verify.ok { "passed" } else { "FAILED" }
        );
    }
    Ok(())
}

/// `sluice-bench failover`: runs, prints, and fails if a round did not recover.
pub fn failover_command(json: bool, quiet: bool, a: &FailoverArgs) -> Result<()> {
    let r = run_failover(a, !quiet)?;
    emit(json, a.json_out.as_deref(), &r, failover_table(&r))?;
    let failed = r.rounds.iter().filter(|x| !x.ok).count();
    if failed > 0 || (r.rounds.len() as u32) < a.rounds {
        bail!(
            "{failed} round(s) failed; {} of {} completed",
            r.rounds.len(),
            a.rounds
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
===== 2025-12-02 01:00:00 local-cluster.sh: starting node 2: /bin/sluice --listen x
2025-12-02T01:00:01.000000Z  INFO sluice_broker::quorum: metadata quorum leader node=2 leader=Some(1) term=1
===== 2025-12-02 01:05:00 local-cluster.sh: starting node 2: /bin/sluice --listen x
2025-12-02T01:05:01.250000Z  INFO sluice_broker::quorum: metadata quorum leader node=2 leader=None term=3
\x1b[2m2025-12-02T01:05:02.500000Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2msluice_broker::quorum\x1b[0m\x1b[2m:\x1b[0m metadata quorum leader \x1b[3mnode\x1b[0m\x1b[2m=\x1b[0m2 \x1b[3mleader\x1b[0m\x1b[2m=\x1b[0mSome(2) \x1b[3mterm\x1b[0m\x1b[2m=\x1b[0m4
2025-12-02T01:05:02.600000Z  WARN sluice_broker::quorum: node 2 is not the active controller; node 3 is
2025-12-02T01:05:02.700000Z  INFO sluice_broker::quorum: active controller node=2 term=4
";

    #[test]
    fn node_view_reads_the_current_run_only() {
        let v = node_view(LOG);
        let l = v.last_leader.expect("leader line");
        assert_eq!(l.leader, Some(2));
        assert_eq!(
            l.at,
            parse_rfc3339_utc("2025-12-02T01:05:02.5Z"),
            "timestamp of the ANSI-coloured line"
        );
        let (at, term) = v.active_since_leader.expect("active line");
        assert_eq!(term, Some(4));
        assert_eq!(at, parse_rfc3339_utc("2025-12-02T01:05:02.700Z"));
        // Before the active line, the leader has not become active yet.
        let cut = LOG.find("2025-12-02T01:05:02.700000Z").expect("present");
        assert_eq!(node_view(&LOG[..cut]).active_since_leader, None);
    }

    #[test]
    fn unfenced_lines_after_a_time() {
        let log = "2025-12-02T01:00:00.000000Z  INFO c: broker unfenced node=3 epoch=9
2025-12-02T01:00:05.000000Z  INFO c: broker unfenced node=13 epoch=20
2025-12-02T01:00:06.000000Z  INFO c: broker unfenced node=3 epoch=21
";
        let since = parse_rfc3339_utc("2025-12-02T01:00:01Z").expect("time");
        assert_eq!(
            unfenced_line(log, 3, since),
            parse_rfc3339_utc("2025-12-02T01:00:06Z")
        );
        assert_eq!(
            unfenced_line(log, 13, since),
            parse_rfc3339_utc("2025-12-02T01:00:05Z")
        );
        assert_eq!(unfenced_line(log, 1, since), None);
    }

    #[test]
    fn leader_lines_parse() {
        let l = parse_leader_line("x INFO q: metadata quorum leader node=1 leader=Some(13) term=2");
        assert_eq!(l.map(|l| l.leader), Some(Some(13)));
        let n = parse_leader_line("x INFO q: metadata quorum leader node=1 leader=None term=2");
        assert_eq!(n.map(|l| l.leader), Some(None));
        assert!(parse_leader_line("something else leader=Some(1)").is_none());
        assert_eq!(strip_ansi("\x1b[1;32mok\x1b[0m!"), "ok!");
    }

    #[test]
    fn majority_needs_more_than_half() {
        let v = |leader: Option<u64>| NodeView {
            last_leader: Some(LeaderLine { at: None, leader }),
            active_since_leader: None,
        };
        assert_eq!(
            majority_leader(&[v(Some(1)), v(Some(1)), v(Some(2))]),
            Some(1)
        );
        assert_eq!(majority_leader(&[v(Some(1)), v(None), v(Some(2))]), None);
        assert_eq!(majority_leader(&[v(Some(3)), v(Some(3))]), Some(3));
        assert_eq!(majority_leader(&[v(Some(3)), NodeView::default()]), None);
    }

    #[test]
    fn timestamps_parse() {
        let t = |s| {
            parse_rfc3339_utc(s)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(t("2000-03-01T00:00:00.5Z"), Some(951_868_800.5));
        assert_eq!(t("2024-02-29T23:59:59.000001Z"), Some(1_709_251_199.000001));
        assert_eq!(t("2024-02-29T23:59:59+01:00"), None);
        assert_eq!(t("not a time"), None);
    }

    #[test]
    fn cluster_env_parses() {
        let e = parse_cluster_env(
            "# c\nN=3\nCLUSTER_ID=x\nKAFKA_PORTS=1,2,3\nCONTROLLER_PORTS=4,5,6\nSETTINGS=a=1 b=2\n",
        )
        .expect("parses");
        assert_eq!(e.n, 3);
        assert_eq!(e.kafka_ports, vec![1, 2, 3]);
        assert_eq!(e.settings, "a=1 b=2");
        assert!(parse_cluster_env("N=2\nKAFKA_PORTS=1\n").is_err());
    }

    #[test]
    fn summaries() {
        let s = MsSummary::of(&[5.0, 1.0, 3.0, 9.0]).expect("values");
        assert_eq!(
            (s.min_ms, s.median_ms, s.max_ms, s.mean_ms),
            (1.0, 4.0, 9.0, 4.5)
        );
        assert_eq!(MsSummary::of(&[2.0]).map(|s| s.median_ms), Some(2.0));
        assert!(MsSummary::of(&[]).is_none());
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("0").is_err());
    }
}
