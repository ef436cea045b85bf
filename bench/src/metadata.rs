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
//! Metadata listing every broker (`metadata/failover.rs`; the node logs are read by
//! `metadata/node_logs.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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
use crate::stats::{LatencyHistogram, LatencySummary};

mod failover;
mod node_logs;
mod table;
pub use failover::{failover_table, find_script, parse_cluster_env, run_failover, ClusterEnv};
pub use node_logs::{
    current_run, is_active_line, line_time, majority_leader, node_view, parse_leader_line,
    parse_rfc3339_utc, strip_ansi, unfenced_line, LeaderLine, NodeView,
};
pub use table::create_table;

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
mod tests;
