//! `sluice-bench` command line: produce, consume, e2e, workload, limits, suite, the
//! metadata workloads (metadata, failover; see `sluice_bench::metadata`), and the commands
//! that start their own broker (replication, compaction, transactions, partitions, tls).
//! `-X name=value` reaches every librdkafka client of the process (`kafka::client_props`),
//! so the load commands run against a secured cluster too.
//!
//! Each load command creates the topics it needs (deleting what it created unless
//! `--keep-topics`), runs the engine, and prints a table or, with `--json`, one JSON
//! document on stdout. Progress lines go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use sluice_bench::compaction::{self, CompactionArgs};
use sluice_bench::engine::{self, LoadSpec, RunReport};
use sluice_bench::html_report::{self, PageInfo};
use sluice_bench::kafka::{self, parse_prop, ProducerSettings};
use sluice_bench::limits::{self, LimitsConfig};
use sluice_bench::metadata::{self, FailoverArgs, MetadataArgs};
use sluice_bench::old_formats::{self, OldFormatsArgs};
use sluice_bench::partitions::{self, PartitionsArgs};
use sluice_bench::procstat;
use sluice_bench::record::KeyDistributor;
use sluice_bench::replication::{self, ReplicationArgs};
use sluice_bench::report;
use sluice_bench::suite::{self, SuiteConfig};
use sluice_bench::tls::{self, TlsArgs};
use sluice_bench::transactions::{self, TransactionsArgs};
use sluice_bench::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generator and physical-limit probes for Kafka-protocol brokers (librdkafka client)"
)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Broker pid for CPU seconds and peak RSS; by default the process listening on the
    /// bootstrap port is used when it is on this machine.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// librdkafka property for every client the bench makes (admin, metadata, producers,
    /// consumers), repeatable; e.g. the security settings of a secured cluster:
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 -X sasl.username=U
    /// -X sasl.password=P -X ssl.ca.location=ca.pem. All before or all after the command
    /// (given after it, the ones before are dropped). --producer-prop and --consumer-prop
    /// are applied after it.
    #[arg(short = 'X', long = "client-prop", global = true, value_parser = parse_prop)]
    client_props: Vec<(String, String)>,
    /// Also write DIR/index.html (DIR is created): one self-contained page with the run's
    /// settings, tables and SVG plots (throughput, CPU and RSS per second, latency by
    /// percentile). For produce, consume, e2e, workload, suite, partitions, tls and
    /// replication.
    #[arg(long, global = true, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce records and report throughput and produce-ack latency.
    Produce(LoadArgs),
    /// Read a topic from the beginning as fast as possible (optionally filling it first).
    Consume(ConsumeArgs),
    /// Produce and consume at once; report end-to-end latency from each record's stamp.
    E2e(LoadArgs),
    /// Run an OpenMessaging-Benchmark-style workload file (YAML or TOML).
    Workload(WorkloadArgs),
    /// Measure physical references with io_uring: loopback TCP, O_DIRECT, fdatasync.
    Limits(LimitsArgs),
    /// Limits, max produce (acks=all), max consume and e2e at 50% load, as ratios.
    Suite(SuiteArgs),
    /// Create many topics (CreateTopics rate and latency), check them with Metadata, delete.
    Metadata(MetadataArgs),
    /// Kill -9 the active controller of a local-cluster.sh cluster, time until CreateTopics works.
    Failover(FailoverArgs),
    /// Replication factor 1 vs 3 on local clusters it starts: max produce (acks=all), CPU
    /// per GB, e2e at a fixed rate, and the RF3/RF1 ratio against issue 12's targets.
    Replication(ReplicationArgs),
    /// Broker CPU per GiB of Produce v2 / Fetch v3 (message format v1, converted) against
    /// Produce v9 / Fetch v12 (v2 batches) of the same records.
    OldFormats(OldFormatsArgs),
    /// Log compaction on a one-node broker it starts: produce p99 while the cleaner runs
    /// against idle, and the cleaner's MB/s (issue 14's target).
    Compaction(CompactionArgs),
    /// Transactional produce (commits every 100 ms and every 1,000 records) against
    /// idempotent produce on a one-node broker it starts: committed MB/s, commit latency,
    /// the ratio against issue 15's target.
    Transactions(TransactionsArgs),
    /// One broker it starts with many partitions (1x100 .. 1x10000, or --layout TxP):
    /// create, clean stop/start and kill -9 recovery times, idle RSS/fds/CPU, then a load
    /// spread over every partition (ack and e2e latency, CPU per GB).
    Partitions(PartitionsArgs),
    /// One broker it starts with PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512) listeners:
    /// max produce (acks=all) and consume through each, broker CPU per GB, and the
    /// TLS/plaintext throughput ratio against issue 19's target (TLS costs <= 30 %).
    Tls(TlsArgs),
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Partitions of each topic the bench creates.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Consumer threads.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Measured duration (e.g. 30, 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before the measured window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Record keys.
    #[arg(long, value_enum, default_value_t = KeyDistributor::NoKey)]
    keys: KeyDistributor,
    /// compression.type: none, gzip, zstd, lz4, snappy.
    #[arg(long, default_value = "none")]
    compression: String,
    /// batch.size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_size: u32,
    /// linger.ms.
    #[arg(long, default_value_t = 1.0)]
    linger_ms: f64,
    /// Extra producer property (librdkafka name), repeatable, applied after -X:
    /// --producer-prop queue.buffering.max.ms=2
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    producer_props: Vec<(String, String)>,
    /// Extra consumer property, repeatable.
    #[arg(long = "consumer-prop", value_parser = parse_prop)]
    consumer_props: Vec<(String, String)>,
    /// Consume through consumer groups (subscribe) instead of assigning partitions.
    #[arg(long)]
    groups: bool,
    /// Keep the topics the bench created.
    #[arg(long)]
    keep_topics: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Topic to use; created if missing. Default: a fresh sluice-bench-* topic.
    #[arg(long)]
    topic: Option<String>,
    /// Total target rate in msg/s (constant-rate mode, latency corrected for coordinated
    /// omission); 0 or absent means max throughput (e2e defaults to 10000).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many records in total.
    #[arg(long)]
    messages: Option<u64>,
    /// acks: all, -1, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// Topic to read; created (and filled with --prefill records) if missing.
    #[arg(long)]
    topic: Option<String>,
    /// Produce this many records first, at max rate (not measured).
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct WorkloadArgs {
    /// Workload file (.yaml / .yml flat OMB syntax, or .toml).
    file: PathBuf,
    /// Consume through consumer groups instead of assigning partitions.
    #[arg(long)]
    groups: bool,
    /// Keep the topics the workload created.
    #[arg(long)]
    keep_topics: bool,
    /// Extra producer property, repeatable.
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    producer_props: Vec<(String, String)>,
    /// Extra consumer property, repeatable.
    #[arg(long = "consumer-prop", value_parser = parse_prop)]
    consumer_props: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct LimitsArgs {
    /// Directory on the filesystem to probe (use the broker's data dir).
    #[arg(long, default_value = "./sluice-data")]
    dir: PathBuf,
    /// Wall time per probe (loopback, fdatasync, and a write and a read per queue depth).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    probe_time: Duration,
    /// O_DIRECT operations in flight in the disk bandwidth probes; several (comma
    /// separated) are each tried and the best is the reference.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    queue_depth: Vec<usize>,
    /// Bytes per O_DIRECT operation in the bandwidth probes (multiple of 4096).
    #[arg(long, default_value_t = 1 << 20)]
    block_size: usize,
}

#[derive(Args, Debug)]
struct SuiteArgs {
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
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
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (use 30, 30s, 500ms or 2m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = kafka::set_client_props(cli.client_props.clone()).and_then(|()| run(&cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn broker_pid(cli: &Cli) -> Option<u32> {
    if cli.broker_pid.is_some() {
        return cli.broker_pid;
    }
    let first = cli.bootstrap.split(',').next()?;
    let (host, port) = first.rsplit_once(':')?;
    let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0");
    let pid = procstat::find_listener_pid(port.parse().ok()?).filter(|_| local)?;
    if !cli.quiet {
        eprintln!("note: broker pid {pid} (listening on port {port})");
    }
    Some(pid)
}

fn base_spec(cli: &Cli, c: &ClientArgs, name: &str) -> LoadSpec {
    LoadSpec {
        name: name.to_string(),
        bootstrap: cli.bootstrap.clone(),
        topics: Vec::new(),
        partitions: c.partitions,
        message_size: c.message_size,
        producers_per_topic: c.producers,
        subscriptions_per_topic: 1,
        consumers_per_subscription: c.consumers.max(1),
        rate: None,
        max_messages: None,
        warmup: c.warmup,
        duration: c.duration,
        keys: c.keys,
        producer: ProducerSettings {
            acks: "all".into(),
            compression: c.compression.clone(),
            batch_size: c.batch_size,
            linger_ms: c.linger_ms,
            extra: c.producer_props.clone(),
        },
        consume_from_beginning: false,
        consume_until: None,
        use_groups: c.groups,
        consumer_extra: c.consumer_props.clone(),
        progress: !cli.quiet,
        broker_pid: broker_pid(cli),
    }
}

fn fresh_topic(kind: &str) -> String {
    format!("sluice-bench-{kind}-{:08x}", rand::random::<u32>())
}

/// Creates `topics`, runs `f` with the actual partition count, and deletes the topics
/// it created unless `keep`.
fn with_topics<T>(
    bootstrap: &str,
    topics: &[String],
    partitions: u32,
    keep: bool,
    f: impl FnOnce(u32) -> Result<T>,
) -> Result<T> {
    let timeout = Duration::from_secs(60);
    let created = kafka::create_topics(bootstrap, topics, partitions, timeout)?;
    let result = (|| {
        let actual = kafka::partition_count(bootstrap, &topics[0], timeout)?;
        f(actual)
    })();
    if !keep {
        if let Err(e) = kafka::delete_topics(bootstrap, &created, timeout) {
            eprintln!("warning: could not delete topics {created:?}: {e:#}");
        }
    }
    result
}

fn validate_acks(acks: &str) -> Result<()> {
    if !matches!(acks, "all" | "-1" | "1" | "0") {
        bail!("--acks must be all, -1, 1 or 0");
    }
    Ok(())
}

/// Writes the `--report` page, when asked for, with `body` under the run's settings.
fn write_report(
    cli: &Cli,
    info: impl FnOnce() -> PageInfo,
    body: impl FnOnce() -> Result<String>,
) -> Result<()> {
    let Some(dir) = &cli.report else {
        return Ok(());
    };
    let page = html_report::page(&info(), &body()?);
    let path = html_report::write_page(dir, &page)?;
    if !cli.quiet {
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

fn run_page(cli: &Cli, title: &str, r: &RunReport) -> Result<()> {
    let pid = r.broker.as_ref().map(|b| b.pid);
    write_report(
        cli,
        || PageInfo::collect(title, pid),
        || html_report::run_section(&r.name, r),
    )
}

fn run(cli: &Cli) -> Result<()> {
    if cli.report.is_some()
        && !matches!(
            cli.command,
            Command::Produce(_)
                | Command::E2e(_)
                | Command::Consume(_)
                | Command::Workload(_)
                | Command::Suite(_)
                | Command::Partitions(_)
                | Command::Tls(_)
                | Command::Replication(_)
        )
    {
        bail!(
            "--report is supported by produce, consume, e2e, workload, suite, partitions, tls \
             and replication"
        );
    }
    match &cli.command {
        Command::Produce(a) | Command::E2e(a) => {
            validate_acks(&a.acks)?;
            let e2e = matches!(cli.command, Command::E2e(_));
            let kind = if e2e { "e2e" } else { "produce" };
            let topic = a.topic.clone().unwrap_or_else(|| fresh_topic(kind));
            let mut spec = base_spec(cli, &a.client, kind);
            spec.topics = vec![topic.clone()];
            spec.producer.acks = a.acks.clone();
            spec.max_messages = a.messages;
            spec.rate = match (a.rate, e2e) {
                (Some(r), _) if r > 0.0 => Some(r),
                (Some(_), _) => None,
                (None, true) => Some(10_000.0),
                (None, false) => None,
            };
            if !e2e {
                spec.subscriptions_per_topic = 0;
            } else if a.client.message_size < sluice_bench::record::HEADER_LEN {
                bail!(
                    "e2e needs --message-size >= {} to carry the send timestamp",
                    sluice_bench::record::HEADER_LEN
                );
            }
            let report = with_topics(
                &cli.bootstrap,
                &[topic],
                a.client.partitions,
                a.client.keep_topics,
                |p| {
                    spec.partitions = p;
                    engine::run(&spec)
                },
            )?;
            print(cli.json, &report, || report::run_table(&report))?;
            run_page(cli, &format!("sluice-bench {kind}"), &report)
        }
        Command::Consume(a) => {
            let topic = a.topic.clone().unwrap_or_else(|| fresh_topic("consume"));
            let report = with_topics(
                &cli.bootstrap,
                std::slice::from_ref(&topic),
                a.client.partitions,
                a.client.keep_topics,
                |p| consume(cli, a, &topic, p),
            )?;
            print(cli.json, &report, || report::run_table(&report))?;
            run_page(cli, "sluice-bench consume", &report)
        }
        Command::Workload(a) => {
            let w = Workload::from_file(&a.file)?;
            let report = run_workload(cli, a, &w)?;
            print(cli.json, &report, || report::run_table(&report))?;
            run_page(cli, &format!("sluice-bench workload {}", w.name), &report)
        }
        Command::Limits(a) => {
            let l = limits::measure(&LimitsConfig {
                per_probe: a.probe_time,
                queue_depths: a.queue_depth.clone(),
                block_bytes: a.block_size,
                ..LimitsConfig::new(a.dir.clone())
            });
            print(cli.json, &l, || report::limits_table(&l))?;
            if l.errors.is_empty() {
                Ok(())
            } else {
                bail!("{} probe(s) failed", l.errors.len())
            }
        }
        Command::Suite(a) => {
            let cfg = SuiteConfig {
                base: base_spec(cli, &a.client, "suite"),
                limits: LimitsConfig {
                    per_probe: a.limits.probe_time,
                    queue_depths: a.limits.queue_depth.clone(),
                    block_bytes: a.limits.block_size,
                    ..LimitsConfig::new(a.limits.dir.clone())
                },
                keep_topics: a.client.keep_topics,
                verbose: !cli.quiet,
            };
            let r = suite::run(&cfg)?;
            print(cli.json, &r, || {
                format!(
                    "{}\n{}\n{}\n{}\n{}",
                    report::limits_table(&r.limits),
                    report::run_table(&r.max_produce),
                    report::run_table(&r.max_consume),
                    report::run_table(&r.e2e_half_load),
                    suite::ratio_table(&r.ratios)
                )
            })?;
            let pid = r.max_produce.broker.as_ref().map(|b| b.pid);
            write_report(
                cli,
                || PageInfo::collect("sluice-bench suite", pid),
                || html_report::suite_body(&r),
            )
        }
        Command::Metadata(a) => metadata::metadata_command(&cli.bootstrap, cli.json, cli.quiet, a),
        Command::Failover(a) => metadata::failover_command(cli.json, cli.quiet, a),
        Command::Replication(a) => replication::replication_command(cli.json, cli.quiet, a, |r| {
            let info = || {
                let mut info = PageInfo::collect("sluice-bench replication", None);
                info.settings
                    .extend(html_report::broker_version(&r.sluice_bin));
                info
            };
            write_report(cli, info, || html_report::replication_body(r))
        }),
        Command::OldFormats(a) => {
            let pid =
                broker_pid(cli).context("old-formats needs the broker's pid (--broker-pid)")?;
            let r = old_formats::run(&cli.bootstrap, pid, a, cli.quiet)?;
            print(cli.json, &r, || old_formats::table(&r))
        }
        Command::Compaction(a) => compaction::compaction_command(cli.json, cli.quiet, a),
        Command::Transactions(a) => transactions::transactions_command(cli.json, cli.quiet, a),
        Command::Partitions(a) => partitions::partitions_command(cli.json, cli.quiet, a, |r| {
            let info = || {
                let mut info = PageInfo::collect("sluice-bench partitions", None);
                info.settings
                    .extend(html_report::broker_version(&r.sluice_bin));
                info
            };
            write_report(cli, info, || html_report::partitions_body(r))
        }),
        Command::Tls(a) => tls::tls_command(cli.json, cli.quiet, a, |r| {
            let info = || {
                let mut info = PageInfo::collect("sluice-bench tls", None);
                info.settings
                    .extend(html_report::broker_version(&r.sluice_bin));
                info
            };
            write_report(cli, info, || html_report::tls_body(r))
        }),
    }
}

fn consume(cli: &Cli, a: &ConsumeArgs, topic: &str, partitions: u32) -> Result<RunReport> {
    let timeout = Duration::from_secs(60);
    let mut spec = base_spec(cli, &a.client, "consume");
    spec.topics = vec![topic.to_string()];
    spec.partitions = partitions;
    if a.prefill > 0 {
        if !cli.quiet {
            eprintln!("prefilling {topic} with {} records ...", a.prefill);
        }
        let fill = LoadSpec {
            name: "prefill".into(),
            subscriptions_per_topic: 0,
            max_messages: Some(a.prefill),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(3600),
            broker_pid: None,
            ..spec.clone()
        };
        let r = engine::run(&fill).context("prefill")?;
        if r.acked_total < a.prefill {
            bail!(
                "prefill acked only {} of {} records",
                r.acked_total,
                a.prefill
            );
        }
    }
    let count = kafka::topic_record_count(&cli.bootstrap, topic, timeout)?;
    if count == 0 {
        bail!("topic {topic} is empty; use --prefill N");
    }
    spec.producers_per_topic = 0;
    spec.consume_from_beginning = true;
    spec.consume_until = Some(count);
    spec.warmup = Duration::ZERO;
    engine::run(&spec)
}

fn run_workload(cli: &Cli, a: &WorkloadArgs, w: &Workload) -> Result<RunReport> {
    let tag = format!("{:08x}", rand::random::<u32>());
    let topics: Vec<String> = (0..w.topics)
        .map(|i| format!("sluice-bench-omb-{tag}-{i}"))
        .collect();
    let spec = LoadSpec {
        name: w.name.clone(),
        bootstrap: cli.bootstrap.clone(),
        topics: topics.clone(),
        partitions: w.partitions_per_topic,
        message_size: w.message_size,
        producers_per_topic: w.producers_per_topic,
        subscriptions_per_topic: w.subscriptions_per_topic,
        consumers_per_subscription: w.consumer_per_subscription.max(1),
        rate: w.rate(),
        max_messages: None,
        warmup: w.warmup(),
        duration: w.duration(),
        keys: w.key_distributor,
        producer: ProducerSettings {
            acks: w.acks.clone(),
            compression: w.compression.clone(),
            batch_size: w.batch_size,
            linger_ms: w.linger_ms,
            extra: a.producer_props.clone(),
        },
        consume_from_beginning: false,
        consume_until: None,
        use_groups: a.groups,
        consumer_extra: a.consumer_props.clone(),
        progress: !cli.quiet,
        broker_pid: broker_pid(cli),
    };
    with_topics(
        &cli.bootstrap,
        &topics,
        w.partitions_per_topic,
        a.keep_topics,
        |_| engine::run(&spec),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn e2e_args_parse_with_props() {
        let cli = Cli::try_parse_from([
            "sluice-bench",
            "--bootstrap",
            "127.0.0.1:19092",
            "e2e",
            "--rate",
            "5000",
            "--producer-prop",
            "linger.ms=0",
            "-X",
            "security.protocol=SSL",
            "--keys",
            "round-robin",
            "--duration",
            "10s",
        ])
        .expect("parses");
        let Command::E2e(a) = cli.command else {
            panic!("expected e2e")
        };
        assert_eq!(a.rate, Some(5000.0));
        assert_eq!(a.client.keys, KeyDistributor::KeyRoundRobin);
        assert_eq!(
            a.client.producer_props,
            vec![("linger.ms".to_string(), "0".to_string())]
        );
        assert_eq!(a.client.duration, Duration::from_secs(10));
        assert_eq!(
            cli.client_props,
            vec![("security.protocol".to_string(), "SSL".to_string())]
        );
    }

    #[test]
    fn client_props_go_before_or_after_the_subcommand_not_both() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .expect("parses")
                .client_props
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        let m = "sasl.mechanism=SCRAM-SHA-512";
        let u = "sasl.username=bench";
        let both = vec!["sasl.mechanism".to_string(), "sasl.username".to_string()];
        assert_eq!(parse(&["b", "-X", m, "-X", u, "metadata"]), both);
        assert_eq!(parse(&["b", "metadata", "-X", m, "-X", u]), both);
        // clap: a global argument given after the subcommand replaces the earlier ones
        assert_eq!(
            parse(&["b", "-X", m, "metadata", "-X", u]),
            vec!["sasl.username"]
        );
    }
}
