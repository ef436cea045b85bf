//! `sluice-bench replication`: replication factor 1 against 3 on this machine, in one
//! invocation (issue 12's benchmark).
//!
//! ```text
//!  for each round (RF1 and RF3, in alternating order unless --order fixed):
//!    deploy/local-cluster.sh start N DIR      (N = 1 for RF1, 3 for RF3; fresh DIR)
//!    before each phase: wait until the disk is quiet (disk_settle: the previous phase's
//!                deleted topic or cluster's data being freed), at most 120 s
//!    max phase:  fresh topic (RF, min.insync.replicas=2 for RF3), every ISR full,
//!                engine: max produce acks=all ─► MB/s, ack p50/p99/p99.9,
//!                /proc of every node's pid ─► broker CPU s per GB acked (all nodes summed)
//!    e2e phase:  fresh topic, engine: produce + consume at --e2e-rate MB/s
//!                ─► e2e p50/p99/p99.9
//!    ISR of each topic after its phase, ISR-shrink lines in the node logs
//!    local-cluster.sh stop DIR; node logs kept, data removed
//!  table / JSON: per round, medians, RF3/RF1 throughput ratio, the issue's targets
//! ```
//! Every cluster this command starts is stopped when it is done with it, on error too
//! (a Drop guard), and on SIGINT / SIGTERM / SIGHUP (a thread that waits for them stops
//! the clusters still registered and exits).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::disk_settle;
use crate::engine::{self, LoadSpec, RunReport};
use crate::kafka::{self, parse_prop, ProducerSettings};
use crate::metadata::parse_secs;
use crate::procstat::{self, Target};
use crate::record::{KeyDistributor, HEADER_LEN};
use crate::stats::LatencySummary;

mod cluster;
pub use cluster::{bootstrap_list, parse_pid};

mod table;
pub(crate) use cluster::{install_signal_thread, resolve, work_dir, LocalCluster};
pub use table::table;
pub(crate) use table::{fmt_opt, fmt_spread};

/// Throughput target: RF3 at this fraction of RF1 (issue 12).
pub const RATIO_TARGET: f64 = 0.40;
/// End-to-end p99 target at the e2e rate, ms (issue 12).
pub const E2E_P99_TARGET_MS: f64 = 10.0;
/// The e2e rate the issue's latency target is stated for, MB/s.
pub const E2E_TARGET_RATE_MB: f64 = 50.0;
/// The longest a phase waits for the disk to go quiet (`disk_settle`).
pub const DISK_SETTLE_BOUND: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Command-line arguments.

/// In which order the two clusters run within each round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Order {
    /// RF1 then RF3 in odd rounds, RF3 then RF1 in even ones (drift cancels out).
    Alternate,
    /// RF1 then RF3 in every round.
    Fixed,
}

/// `sluice-bench replication`: RF 1 against RF 3 on local clusters it starts itself.
#[derive(Args, Debug, Clone)]
pub struct ReplicationArgs {
    /// Broker binary; a relative path is looked up from the current directory, then from
    /// each parent directory of the sluice-bench binary (the repository).
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice_bin: PathBuf,
    /// The cluster script (looked up like --sluice-bin).
    #[arg(long, default_value = "deploy/local-cluster.sh")]
    pub script: PathBuf,
    /// Where the clusters live (one fresh sub-directory per cluster and round; node logs are
    /// kept under logs/). Default: a new /tmp/sluice-bench-replication-<pid>.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Rounds; each runs both clusters.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Cluster order within a round.
    #[arg(long, value_enum, default_value_t = Order::Alternate)]
    pub order: Order,
    /// Measured duration of each phase (e.g. 20s).
    #[arg(long, default_value = "20s", value_parser = parse_secs)]
    pub duration: Duration,
    /// Warm-up before each phase's measured window.
    #[arg(long, default_value = "5s", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Rate of the end-to-end phase in MB/s (10^6 bytes of payload).
    #[arg(long, default_value_t = E2E_TARGET_RATE_MB)]
    pub e2e_rate: f64,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Shards of every node (SLUICE_CORES of local-cluster.sh).
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// min.insync.replicas of the RF3 topics (a topic config; RF1 keeps the default).
    #[arg(long, default_value_t = 2)]
    pub min_insync_replicas: u32,
    /// Broker setting for every node of both clusters, repeatable: --set name=value.
    #[arg(long = "set", value_parser = parse_prop)]
    pub settings: Vec<(String, String)>,
    /// batch.size of the producers.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u32,
    /// linger.ms of the producers.
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// Extra producer property (librdkafka name), repeatable.
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,
    /// Run only this replication factor (1 or 3), e.g. to profile one cluster; no ratio
    /// is computed then.
    #[arg(long)]
    pub only: Option<u32>,
    /// Keep every node's data directory (removed after each cluster by default).
    #[arg(long)]
    pub keep_data: bool,
    /// Also write the JSON report to this file (the table still goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Reports.

/// CPU of one node over a phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeCpu {
    /// Node id.
    pub node: u64,
    /// Its pid.
    pub pid: u32,
    /// User + system CPU seconds during the phase.
    pub cpu_seconds: f64,
}

/// One phase (max or e2e) on one cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// Acked payload MB/s in the measured window.
    pub mb_per_sec: f64,
    /// Acked msg/s in the measured window.
    pub msg_per_sec: f64,
    /// Produce-ack latency.
    pub ack_latency: Option<LatencySummary>,
    /// End-to-end latency (e2e phase only).
    pub e2e_latency: Option<LatencySummary>,
    /// Consumed MB/s in the window (e2e phase only).
    pub consumed_mb_per_sec: Option<f64>,
    /// Payload bytes acked over the whole phase (warm-up and flush included), GB (10^9).
    pub gb_acked: f64,
    /// CPU seconds of every node of the cluster over the whole phase.
    pub broker_cpu_seconds: f64,
    /// Wall seconds the CPU figures cover.
    pub wall_seconds: f64,
    /// `broker_cpu_seconds / gb_acked`.
    pub broker_cpu_s_per_gb: Option<f64>,
    /// Per node.
    pub nodes: Vec<NodeCpu>,
    /// The bench's own CPU in percent of one core (it shares the cores).
    pub client_cpu_percent_of_core: Option<f64>,
    /// Smallest ISR over the topic's partitions right after the phase.
    pub min_isr_after: Option<usize>,
    /// Produce and consume errors.
    pub errors: u64,
    /// First error text.
    pub first_error: Option<String>,
    /// Seconds the phase waited for the disk to go quiet before it started (the previous
    /// phase's deleted topic, or the previous cluster's data, being freed).
    pub disk_settle_seconds: f64,
    /// Whether it did go quiet within [`DISK_SETTLE_BOUND`].
    pub disk_quiet: bool,
    /// The engine's full report.
    pub run: RunReport,
}

/// Both phases on one cluster in one round.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRun {
    /// Round, from 1.
    pub round: u32,
    /// Replication factor (1 or 3).
    pub replication_factor: u32,
    /// Nodes of the cluster.
    pub nodes: u32,
    /// min.insync.replicas of its topics (None: the broker default).
    pub min_insync_replicas: Option<u32>,
    /// Max throughput, acks=all.
    pub max: Phase,
    /// End-to-end at the fixed rate.
    pub e2e: Phase,
    /// "shrinking the ISR" lines the nodes logged while the cluster ran.
    pub isr_shrinks: u64,
}

/// min / median / max of one figure over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Spread {
            min: v[0],
            median: (v[(n - 1) / 2] + v[n / 2]) / 2.0,
            max: v[n - 1],
        })
    }
}

/// One cluster's figures over all rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterSummary {
    /// Replication factor.
    pub replication_factor: u32,
    /// Rounds measured.
    pub rounds: usize,
    /// Max-phase MB/s.
    pub mb_per_sec: Option<Spread>,
    /// Max-phase ack latency percentiles, ms.
    pub ack_p50_ms: Option<Spread>,
    /// p99.
    pub ack_p99_ms: Option<Spread>,
    /// p99.9.
    pub ack_p999_ms: Option<Spread>,
    /// Max-phase broker CPU seconds per GB acked (all nodes).
    pub cpu_s_per_gb: Option<Spread>,
    /// e2e-phase achieved MB/s.
    pub e2e_mb_per_sec: Option<Spread>,
    /// e2e percentiles, ms.
    pub e2e_p50_ms: Option<Spread>,
    /// p99.
    pub e2e_p99_ms: Option<Spread>,
    /// p99.9.
    pub e2e_p999_ms: Option<Spread>,
    /// e2e-phase broker CPU seconds per GB acked.
    pub e2e_cpu_s_per_gb: Option<Spread>,
}

/// A target of the issue and whether it is met.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The target in words.
    pub target: String,
    /// The measured value (median over the rounds).
    pub measured: Option<f64>,
    /// Unit of `measured`.
    pub unit: String,
    /// Met (None: not measured).
    pub pass: Option<bool>,
    /// A remark (e.g. when the rate differs from the issue's).
    pub note: Option<String>,
}

/// The result of `sluice-bench replication`.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicationReport {
    /// "replication".
    pub name: String,
    /// Broker binary (copied into the work directory, which every cluster runs).
    pub sluice_bin: String,
    /// Work directory (node logs under logs/).
    pub work_dir: String,
    /// Settings of every node (besides what local-cluster.sh sets).
    pub settings: Vec<String>,
    /// Shards per node.
    pub cores: u32,
    /// Topic shape.
    pub partitions: u32,
    /// Payload bytes.
    pub message_size: usize,
    /// Producer threads.
    pub producers: u32,
    /// Measured seconds per phase.
    pub duration_seconds: f64,
    /// Warm-up seconds per phase.
    pub warmup_seconds: f64,
    /// e2e phase rate, MB/s.
    pub e2e_rate_mb: f64,
    /// Order of the clusters within a round.
    pub order: Order,
    /// Every cluster run, in the order they ran.
    pub runs: Vec<ClusterRun>,
    /// RF3 MB/s ÷ RF1 MB/s of the same round, per round that has both.
    pub ratio_per_round: Vec<f64>,
    /// min / median / max of `ratio_per_round`.
    pub ratio: Option<Spread>,
    /// RF1 over all rounds.
    pub rf1: ClusterSummary,
    /// RF3 over all rounds.
    pub rf3: ClusterSummary,
    /// The issue's targets.
    pub checks: Vec<Check>,
}

/// Summarizes the runs of one replication factor.
pub fn summarize(runs: &[ClusterRun], rf: u32) -> ClusterSummary {
    let mine: Vec<&ClusterRun> = runs.iter().filter(|r| r.replication_factor == rf).collect();
    let spread = |f: &dyn Fn(&ClusterRun) -> Option<f64>| -> Option<Spread> {
        let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
        Spread::of(&v)
    };
    ClusterSummary {
        replication_factor: rf,
        rounds: mine.len(),
        mb_per_sec: spread(&|r| Some(r.max.mb_per_sec)),
        ack_p50_ms: spread(&|r| r.max.ack_latency.as_ref().map(|l| l.p50_ms)),
        ack_p99_ms: spread(&|r| r.max.ack_latency.as_ref().map(|l| l.p99_ms)),
        ack_p999_ms: spread(&|r| r.max.ack_latency.as_ref().map(|l| l.p999_ms)),
        cpu_s_per_gb: spread(&|r| r.max.broker_cpu_s_per_gb),
        e2e_mb_per_sec: spread(&|r| Some(r.e2e.mb_per_sec)),
        e2e_p50_ms: spread(&|r| r.e2e.e2e_latency.as_ref().map(|l| l.p50_ms)),
        e2e_p99_ms: spread(&|r| r.e2e.e2e_latency.as_ref().map(|l| l.p99_ms)),
        e2e_p999_ms: spread(&|r| r.e2e.e2e_latency.as_ref().map(|l| l.p999_ms)),
        e2e_cpu_s_per_gb: spread(&|r| r.e2e.broker_cpu_s_per_gb),
    }
}

/// RF3 MB/s ÷ RF1 MB/s for each round that measured both.
pub fn ratios_per_round(runs: &[ClusterRun]) -> Vec<f64> {
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|round| {
            let of = |rf: u32| {
                runs.iter()
                    .find(|r| r.round == round && r.replication_factor == rf)
                    .map(|r| r.max.mb_per_sec)
            };
            match (of(1), of(3)) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            }
        })
        .collect()
}

/// The issue's two targets, judged on the medians over the rounds.
pub fn checks(ratio: Option<&Spread>, rf3: &ClusterSummary, e2e_rate_mb: f64) -> Vec<Check> {
    let ratio_median = ratio.map(|s| s.median);
    let p99 = rf3.e2e_p99_ms.as_ref().map(|s| s.median);
    let rate_note = ((e2e_rate_mb - E2E_TARGET_RATE_MB).abs() > 1e-9).then(|| {
        format!(
            "measured at {e2e_rate_mb} MB/s; the target is stated for {E2E_TARGET_RATE_MB} MB/s"
        )
    });
    vec![
        Check {
            name: "RF3 / RF1 max throughput (acks=all)".into(),
            target: format!(">= {:.0} %", RATIO_TARGET * 100.0),
            measured: ratio_median.map(|r| r * 100.0),
            unit: "%".into(),
            pass: ratio_median.map(|r| r >= RATIO_TARGET),
            note: None,
        },
        Check {
            name: format!("RF3 e2e p99 at {e2e_rate_mb} MB/s"),
            target: format!("<= {E2E_P99_TARGET_MS} ms"),
            measured: p99,
            unit: "ms".into(),
            pass: p99.map(|p| p <= E2E_P99_TARGET_MS),
            note: rate_note,
        },
    ]
}

/// The e2e phase's rate in msg/s for `mb_per_sec` of `message_size`-byte payloads.
pub fn msg_rate(mb_per_sec: f64, message_size: usize) -> f64 {
    mb_per_sec * 1e6 / message_size.max(1) as f64
}

/// Counts the lines of a node log that report an ISR shrink (hw.rs logs "shrinking the
/// ISR" when followers fell behind).
pub fn count_isr_shrinks(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("shrinking the ISR"))
        .count() as u64
}

/// `--set` pairs as local-cluster.sh's SLUICE_CLUSTER_SETTINGS (space-separated
/// name=value); a value with whitespace cannot pass through it.
pub fn cluster_settings(settings: &[(String, String)]) -> Result<String> {
    let mut words = Vec::new();
    for (k, v) in settings {
        if k.chars().any(char::is_whitespace) || v.chars().any(char::is_whitespace) {
            bail!("--set {k}={v}: local-cluster.sh cannot pass whitespace in a setting");
        }
        words.push(format!("{k}={v}"));
    }
    Ok(words.join(" "))
}

// ---------------------------------------------------------------------------------------
// Topics.

pub(crate) fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    kafka::client_config(bootstrap, RDKafkaLogLevel::Error)
        .create()
        .context("creating admin client")
}

/// Creates `topic` with `rf` replicas and `configs`, then waits until every partition has
/// a leader and an ISR of all `rf` replicas (so the measurement starts fully replicated).
pub(crate) fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    rf: u32,
    configs: &[(&str, String)],
    timeout: Duration,
) -> Result<()> {
    let client = admin(bootstrap)?;
    let mut new = NewTopic::new(
        topic,
        i32::try_from(partitions).context("--partitions")?,
        TopicReplication::Fixed(i32::try_from(rf).context("replication factor")?),
    );
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results =
        kafka::block_on(client.create_topics([&new], &opts))?.context("CreateTopics request")?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                bail!("topic {name} exists already")
            }
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    kafka::wait_for_leaders(bootstrap, topic, Some(partitions), timeout)?;
    let deadline = Instant::now() + timeout;
    loop {
        let isr = min_isr(bootstrap, topic)?;
        if isr.is_some_and(|n| n >= rf as usize) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("topic {topic}: smallest ISR {isr:?} after {timeout:?}, want {rf}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The smallest ISR over the partitions of `topic` (None if Metadata lists none).
fn min_isr(bootstrap: &str, topic: &str) -> Result<Option<usize>> {
    let c: BaseConsumer = kafka::consumer_config(bootstrap, None, false, &[])
        .set_log_level(RDKafkaLogLevel::Critical)
        .create()
        .context("creating metadata client")?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("metadata")?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.partitions().iter().map(|p| p.isr().len()).min()))
}

// ---------------------------------------------------------------------------------------
// Running.

struct Plan<'a> {
    a: &'a ReplicationArgs,
    bin: PathBuf,
    script: PathBuf,
    work: PathBuf,
    settings: String,
    progress: bool,
}

fn sample_all(pids: &[(u64, u32)]) -> Result<Vec<f64>> {
    pids.iter()
        .map(|(id, pid)| {
            procstat::sample(Target::Pid(*pid))
                .map(|s| s.cpu_seconds)
                .with_context(|| format!("/proc of node {id} (pid {pid}); did it exit?"))
        })
        .collect()
}

impl Plan<'_> {
    fn say(&self, s: &str) {
        if self.progress {
            eprintln!("{s}");
        }
    }

    fn spec(&self, bootstrap: &str, topic: &str, name: &str) -> LoadSpec {
        let a = self.a;
        LoadSpec {
            name: name.to_string(),
            bootstrap: bootstrap.to_string(),
            topics: vec![topic.to_string()],
            partitions: a.partitions,
            message_size: a.message_size,
            producers_per_topic: a.producers,
            subscriptions_per_topic: 0,
            consumers_per_subscription: 1,
            rate: None,
            max_messages: None,
            warmup: a.warmup,
            duration: a.duration,
            keys: KeyDistributor::NoKey,
            producer: ProducerSettings {
                acks: "all".into(),
                compression: "none".into(),
                batch_size: a.batch_size,
                linger_ms: a.linger_ms,
                extra: a.producer_props.clone(),
            },
            consume_from_beginning: false,
            consume_until: None,
            use_groups: false,
            consumer_extra: Vec::new(),
            progress: self.progress,
            broker_pid: None,
        }
    }

    /// One phase: a fresh topic, the engine, CPU of every node around it, the ISR after;
    /// the topic is deleted afterwards.
    fn phase(
        &self,
        cluster: &LocalCluster,
        rf: u32,
        kind: &str,
        rate: Option<f64>,
    ) -> Result<Phase> {
        let a = self.a;
        let bootstrap = cluster.bootstrap();
        let topic = format!(
            "sluice-bench-repl-rf{rf}-{kind}-{:08x}",
            rand::random::<u32>()
        );
        let min_insync = (rf > 1).then(|| a.min_insync_replicas.to_string());
        let configs: Vec<(&str, String)> = min_insync
            .into_iter()
            .map(|m| ("min.insync.replicas", m))
            .collect();
        let timeout = Duration::from_secs(60);
        let settled = disk_settle::wait_quiet(&self.work, DISK_SETTLE_BOUND)?;
        if !settled.quiet {
            self.say(&format!(
                "replication: RF{rf} {kind}: the disk is still busy after {:.0} s; starting anyway",
                settled.waited.as_secs_f64()
            ));
        }
        create_topic(&bootstrap, &topic, a.partitions, rf, &configs, timeout)
            .with_context(|| format!("RF{rf} {kind}: creating {topic}"))?;
        let result = (|| -> Result<Phase> {
            let mut spec = self.spec(&bootstrap, &topic, &format!("RF{rf} {kind}"));
            spec.rate = rate;
            if rate.is_some() {
                spec.subscriptions_per_topic = 1;
            }
            let pids = cluster.pids()?;
            let before = sample_all(&pids)?;
            let started = Instant::now();
            let run = engine::run(&spec)?;
            let after = sample_all(&pids)?;
            let wall = started.elapsed().as_secs_f64();
            let nodes: Vec<NodeCpu> = pids
                .iter()
                .zip(before.iter().zip(after.iter()))
                .map(|((node, pid), (b, e))| NodeCpu {
                    node: *node,
                    pid: *pid,
                    cpu_seconds: (e - b).max(0.0),
                })
                .collect();
            let cpu: f64 = nodes.iter().map(|n| n.cpu_seconds).sum();
            let gb = run.acked_total as f64 * a.message_size as f64 / 1e9;
            let produced = run.produced.as_ref();
            Ok(Phase {
                mb_per_sec: produced.map_or(0.0, |t| t.mb_per_sec),
                msg_per_sec: produced.map_or(0.0, |t| t.msg_per_sec),
                ack_latency: run.produce_latency.clone(),
                e2e_latency: run.e2e_latency.clone(),
                consumed_mb_per_sec: run.consumed.as_ref().map(|t| t.mb_per_sec),
                gb_acked: gb,
                broker_cpu_seconds: cpu,
                wall_seconds: wall,
                broker_cpu_s_per_gb: (gb > 0.0).then(|| cpu / gb),
                nodes,
                client_cpu_percent_of_core: run.client.as_ref().map(|c| c.cpu_percent_of_core),
                min_isr_after: min_isr(&bootstrap, &topic).ok().flatten(),
                errors: run.produce_errors + run.consume_errors,
                first_error: run.first_error.clone(),
                disk_settle_seconds: settled.waited.as_secs_f64(),
                disk_quiet: settled.quiet,
                run,
            })
        })();
        if let Err(e) = kafka::delete_topics(&bootstrap, std::slice::from_ref(&topic), timeout) {
            eprintln!("warning: could not delete {topic}: {e:#}");
        }
        result
    }

    fn cluster_run(&self, round: u32, rf: u32) -> Result<ClusterRun> {
        let a = self.a;
        let nodes = rf;
        let name = format!("round{round}-rf{rf}");
        self.say(&format!(
            "replication: round {round}: starting a {nodes}-node cluster for RF{rf} ..."
        ));
        let mut cluster = LocalCluster::start(
            &self.script,
            &self.bin,
            self.work.join(&name),
            self.work.join("logs"),
            name,
            nodes,
            a.cores,
            &self.settings,
            a.keep_data,
        )?;
        self.say(&format!(
            "replication: round {round} RF{rf}: max produce, acks=all, {} + {} s ...",
            a.warmup.as_secs_f64(),
            a.duration.as_secs_f64()
        ));
        let max = self.phase(&cluster, rf, "max", None)?;
        let rate = msg_rate(a.e2e_rate, a.message_size);
        self.say(&format!(
            "replication: round {round} RF{rf}: e2e at {} MB/s ({rate:.0} msg/s) ...",
            a.e2e_rate
        ));
        let e2e = self.phase(&cluster, rf, "e2e", Some(rate))?;
        let isr_shrinks = cluster.isr_shrinks();
        cluster.stop()?;
        Ok(ClusterRun {
            round,
            replication_factor: rf,
            nodes,
            min_insync_replicas: (rf > 1).then_some(a.min_insync_replicas),
            max,
            e2e,
            isr_shrinks,
        })
    }
}

/// The order of the clusters in `round` (from 1).
pub fn round_order(order: Order, round: u32) -> [u32; 2] {
    match order {
        Order::Alternate if round.is_multiple_of(2) => [3, 1],
        _ => [1, 3],
    }
}

/// Runs the whole comparison.
pub fn run(a: &ReplicationArgs, progress: bool) -> Result<ReplicationReport> {
    if a.rounds == 0 || a.partitions == 0 || a.producers == 0 || a.cores == 0 {
        bail!("--rounds, --partitions, --producers and --cores must be at least 1");
    }
    if a.message_size < HEADER_LEN {
        bail!("--message-size must be at least {HEADER_LEN} (the e2e stamp)");
    }
    if !(a.e2e_rate.is_finite() && a.e2e_rate > 0.0) {
        bail!("--e2e-rate must be a positive number of MB/s");
    }
    if a.only.is_some_and(|rf| rf != 1 && rf != 3) {
        bail!("--only must be 1 or 3");
    }
    if a.min_insync_replicas == 0 || a.min_insync_replicas > 3 {
        bail!("--min-insync-replicas must be 1, 2 or 3");
    }
    let bin = resolve(&a.sluice_bin, "broker binary")?;
    let script = resolve(&a.script, "cluster script")?;
    let settings = cluster_settings(&a.settings)?;
    let wd = work_dir(a.work_dir.as_deref(), "replication", &bin)?;
    let (work, copy) = (wd.dir.clone(), wd.bin.clone());
    install_signal_thread()?;
    let plan = Plan {
        a,
        bin: copy,
        script,
        work: work.clone(),
        settings,
        progress,
    };
    let mut runs = Vec::new();
    for round in 1..=a.rounds {
        for rf in round_order(a.order, round) {
            if a.only.is_some_and(|only| only != rf) {
                continue;
            }
            runs.push(plan.cluster_run(round, rf)?);
        }
    }
    let ratio_per_round = ratios_per_round(&runs);
    let ratio = Spread::of(&ratio_per_round);
    let rf1 = summarize(&runs, 1);
    let rf3 = summarize(&runs, 3);
    let checks = checks(ratio.as_ref(), &rf3, a.e2e_rate);
    Ok(ReplicationReport {
        name: "replication".into(),
        sluice_bin: bin.display().to_string(),
        work_dir: work.display().to_string(),
        settings: a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cores: a.cores,
        partitions: a.partitions,
        message_size: a.message_size,
        producers: a.producers,
        duration_seconds: a.duration.as_secs_f64(),
        warmup_seconds: a.warmup.as_secs_f64(),
        e2e_rate_mb: a.e2e_rate,
        order: a.order,
        runs,
        ratio_per_round,
        ratio,
        rf1,
        rf3,
        checks,
    })
}

/// `sluice-bench replication`: runs, prints the table (or JSON), writes --json-out.
/// Missing a target is a result, not an error: the exit status is 0 when every run
/// completed.
///
/// `page` gets the report after printing (the `--report` page).
pub fn replication_command(
    json: bool,
    quiet: bool,
    a: &ReplicationArgs,
    page: impl FnOnce(&ReplicationReport) -> Result<()>,
) -> Result<()> {
    let r = run(a, !quiet)?;
    crate::report::emit(json, a.json_out.as_deref(), &r, table)?;
    page(&r)
}

#[cfg(test)]
mod tests;
