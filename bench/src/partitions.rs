//! `sluice-bench partitions`: one broker with many partitions (issue 18, item 1), started
//! by the bench from the `sluice` binary in a fresh data dir per layout.
//!
//! ```text
//!  per layout (T topics x P partitions), each step bounded by --timeout:
//!   create    CreateTopics (100 topics a request) until Metadata has every partition led
//!   seed 1    one acks=all record to every partition (offsets from the delivery reports;
//!             timed: each partition's first write)
//!   SIGTERM   until the exit (clean stop) ─► start until Metadata has every partition led
//!   verify    ListOffsets (latest) of every partition >= its last seeded offset + 1
//!   seed 2, kill -9, start (recovery), verify both seeds
//!   idle      RSS + fds (/proc), broker utime+stime over --idle with no traffic
//!   load      --rate MB/s round robin over every partition, consumers on every one
//!             (partitions_load) ─► RSS + fds once drained ─► SIGTERM
//! ```
//! A failed step ends its layout with an error in the report; the next layout still runs,
//! and the command exits 1 after printing. The broker is killed on every path
//! (`BrokerProcess` kills it on drop).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker_process::{free_port, wait_port_closed, BrokerProcess, BrokerSpec};
use crate::kafka::{self, consumer_config, parse_prop, ProducerSettings};
use crate::metadata::parse_secs;
use crate::partitions_durability::{check, seed, verify};
use crate::partitions_load::{self, LoadPlan, TopicPartition};
use crate::partitions_report::{table, LayoutRun, PartitionsReport, StartTimes};
use crate::procstat::{self, Target};
use crate::replication::{admin, resolve, work_dir};

/// Most partitions of a layout.
const MAX_PARTITIONS: u64 = 1_000_000;
/// Longest warm-up + duration (the histograms saturate at 1 h).
const MAX_RUN: Duration = Duration::from_secs(3600);
/// Topics per CreateTopics request.
const CREATE_BATCH: usize = 100;

/// `T` topics of `P` partitions each, written `TxP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub topics: u32,
    pub partitions: u32,
}

impl Layout {
    /// Parses `TxP` (`1x10000`, `1000x10`).
    pub fn parse(s: &str) -> Result<Layout, String> {
        let (t, p) = s
            .split_once(['x', 'X', '×'])
            .ok_or_else(|| format!("layout {s:?}: expected TOPICSxPARTITIONS, e.g. 1x10000"))?;
        let n = |v: &str| v.trim().parse::<u32>().ok().filter(|n| *n > 0);
        let (Some(topics), Some(partitions)) = (n(t), n(p)) else {
            return Err(format!("layout {s:?}: both numbers must be at least 1"));
        };
        let l = Layout { topics, partitions };
        if l.total() > MAX_PARTITIONS {
            return Err(format!("layout {s:?}: at most {MAX_PARTITIONS} partitions"));
        }
        Ok(l)
    }

    pub fn total(&self) -> u64 {
        u64::from(self.topics) * u64::from(self.partitions)
    }

    fn name(&self) -> String {
        format!("{}x{}", self.topics, self.partitions)
    }
}

/// `sluice-bench partitions`.
#[derive(Args, Debug, Clone)]
pub struct PartitionsArgs {
    /// Layouts TxP, repeatable or comma separated; default 1x100,1x1000,1x10000.
    #[arg(long = "layout", value_delimiter = ',', value_parser = Layout::parse)]
    pub layouts: Vec<Layout>,
    /// Broker binary (looked up like `replication --sluice-bin`); copied into the work dir.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice_bin: PathBuf,
    /// Where data dirs and broker logs go; default a new /tmp/sluice-bench-partitions-<pid>.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Shards of the broker (`--cores`).
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Broker setting, repeatable: --set name=value.
    #[arg(long = "set", value_parser = parse_prop)]
    pub settings: Vec<(String, String)>,
    /// Load rate in MB/s (10^6 B of payload), spread evenly over every partition.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Measured duration of the load.
    #[arg(long, default_value = "30s", value_parser = parse_secs)]
    pub duration: Duration,
    /// Load before the measured window.
    #[arg(long, default_value = "5s", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Idle period for the broker's CPU with no traffic.
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    pub idle: Duration,
    /// Bound of every wait: CreateTopics and its Metadata, a start, a stop, a seed.
    #[arg(long, default_value = "300s", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Producer threads of the load (partition i goes to producer i mod N).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer threads of the load (partition i is assigned to consumer i mod N).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// linger.ms of the producers.
    #[arg(long, default_value_t = 5.0)]
    pub linger_ms: f64,
    /// batch.size of the producers.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u32,
    /// Extra producer property (librdkafka name), repeatable; applied last.
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,
    /// Extra consumer property, repeatable.
    #[arg(long = "consumer-prop", value_parser = parse_prop)]
    pub consumer_props: Vec<(String, String)>,
    /// Producers speak the Kafka protocol themselves (Produce v9, acks=all, one
    /// connection each, one batch per partition every --linger-ms) instead of librdkafka,
    /// which needs more than a core of a small machine at 10,000 partitions: the ack
    /// latency is then the broker's, not librdkafka's queueing. Consumers stay librdkafka.
    #[arg(long)]
    pub raw_producers: bool,
    /// Keep each layout's data dir.
    #[arg(long)]
    pub keep_data: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

impl PartitionsArgs {
    fn layouts(&self) -> Vec<Layout> {
        if !self.layouts.is_empty() {
            return self.layouts.clone();
        }
        [100, 1_000, 10_000]
            .map(|partitions| Layout {
                topics: 1,
                partitions,
            })
            .to_vec()
    }

    fn producer_settings(&self) -> ProducerSettings {
        ProducerSettings {
            acks: "all".into(),
            compression: "none".into(),
            batch_size: self.batch_size,
            linger_ms: self.linger_ms,
            extra: self.producer_props.clone(),
        }
    }
}

/// The (topic, partition) list of a layout, topic by topic.
fn topic_partitions(topics: &[String], partitions: u32) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| (0..partitions as i32).map(move |p| (t.clone(), p)))
        .collect()
}

/// Creates the layout's topics, `CREATE_BATCH` a request (replication factor 1).
fn create_topics(
    bootstrap: &str,
    topics: &[String],
    partitions: u32,
    timeout: Duration,
) -> Result<()> {
    let client = admin(bootstrap)?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let p = i32::try_from(partitions).context("partitions")?;
    for chunk in topics.chunks(CREATE_BATCH) {
        let new: Vec<NewTopic<'_>> = chunk
            .iter()
            .map(|t| NewTopic::new(t, p, TopicReplication::Fixed(1)))
            .collect();
        let results =
            kafka::block_on(client.create_topics(new.iter(), &opts))?.context("CreateTopics")?;
        for r in results {
            if let Err((name, code)) = r {
                bail!("creating {name}: {code}");
            }
        }
    }
    Ok(())
}

/// Polls Metadata (every 50 ms) until every partition of `topics` has a leader, or the
/// deadline, or the broker exits.
fn wait_all_led(
    broker: &mut BrokerProcess,
    bootstrap: &str,
    topics: &[String],
    partitions: u32,
    deadline: Instant,
) -> Result<()> {
    let fast_reconnect = [
        ("reconnect.backoff.ms".to_string(), "10".to_string()),
        ("reconnect.backoff.max.ms".to_string(), "100".to_string()),
    ];
    let client: BaseConsumer = consumer_config(bootstrap, None, false, &fast_reconnect)
        .create()
        .context("creating a metadata client")?;
    let want: HashSet<&str> = topics.iter().map(String::as_str).collect();
    let total = topics.len() * partitions as usize;
    let mut last = String::from("no Metadata answer yet");
    loop {
        broker.check_running()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("not every partition led in time: {last}");
        }
        match client.fetch_metadata(None, left.min(Duration::from_secs(10))) {
            Ok(md) => {
                let led: usize = md
                    .topics()
                    .iter()
                    .filter(|t| want.contains(t.name()) && t.error().is_none())
                    .map(|t| {
                        t.partitions()
                            .iter()
                            .filter(|p| p.leader() >= 0 && p.error().is_none())
                            .filter(|p| (p.id() as u32) < partitions)
                            .count()
                    })
                    .sum();
                if led == total {
                    return Ok(());
                }
                last = format!("{led}/{total} partitions led");
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawns the broker (once the previous one's port is closed) and times it until it
/// listens and until every partition is led.
fn start(
    spec: &BrokerSpec,
    topics: &[String],
    partitions: u32,
    timeout: Duration,
) -> Result<(BrokerProcess, StartTimes)> {
    wait_port_closed(spec.port, Duration::from_secs(30))?;
    let mut broker = spec.spawn()?;
    let t = broker.started();
    let deadline = t + timeout;
    broker.wait_listening(spec.port, deadline)?;
    let listening = t.elapsed();
    wait_all_led(&mut broker, &spec.bootstrap(), topics, partitions, deadline)?;
    Ok((
        broker,
        StartTimes {
            listening_seconds: listening.as_secs_f64(),
            all_led_seconds: t.elapsed().as_secs_f64(),
        },
    ))
}

/// Runs every phase of one layout on a fresh data dir, filling `run` as it goes.
fn run_layout(
    a: &PartitionsArgs,
    spec: &BrokerSpec,
    layout: Layout,
    run: &mut LayoutRun,
    progress: bool,
) -> Result<()> {
    let say = |m: String| {
        if progress {
            eprintln!("partitions {}: {m}", layout.name());
        }
    };
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let topics: Vec<String> = (0..layout.topics)
        .map(|i| format!("sluice-bench-parts-{tag}-{i}"))
        .collect();
    let parts = topic_partitions(&topics, layout.partitions);
    let bootstrap = spec.bootstrap();
    let settings = a.producer_settings();
    let mut expected = vec![0i64; parts.len()];

    say("starting the broker".into());
    let mut broker = spec.spawn()?;
    broker.wait_listening(spec.port, Instant::now() + a.timeout)?;
    say("creating topics".into());
    let t = Instant::now();
    create_topics(&bootstrap, &topics, layout.partitions, a.timeout)?;
    wait_all_led(
        &mut broker,
        &bootstrap,
        &topics,
        layout.partitions,
        t + a.timeout,
    )?;
    run.create_seconds = Some(t.elapsed().as_secs_f64());
    run.footprint_after_create = Some(procstat::footprint(broker.pid()?)?);

    say(format!(
        "created in {:.2} s; seeding every partition",
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    let n = seed(
        &bootstrap,
        &parts,
        &settings,
        a.message_size,
        &mut expected,
        a.timeout,
    )?;
    run.seeded.push(n);
    run.seed_seconds.push(t.elapsed().as_secs_f64());
    say(format!(
        "first record on every partition acked in {:.2} s",
        t.elapsed().as_secs_f64()
    ));
    run.clean_stop_seconds = Some(broker.terminate(a.timeout)?.as_secs_f64());
    let (mut broker, times) = start(spec, &topics, layout.partitions, a.timeout)?;
    run.clean_start = Some(times);
    run.footprint_after_clean_start = Some(procstat::footprint(broker.pid()?)?);
    let v = verify(&bootstrap, &parts, &expected, a.timeout)?;
    check("after the clean start", &v, run);
    run.verify_after_clean_start = Some(v);
    say(format!(
        "clean stop {:.2} s, start {:.2} s; seeding again, then kill -9",
        run.clean_stop_seconds.unwrap_or_default(),
        times.all_led_seconds
    ));

    let t = Instant::now();
    let n = seed(
        &bootstrap,
        &parts,
        &settings,
        a.message_size,
        &mut expected,
        a.timeout,
    )?;
    run.seeded.push(n);
    run.seed_seconds.push(t.elapsed().as_secs_f64());
    broker.kill9()?;
    let (mut broker, times) = start(spec, &topics, layout.partitions, a.timeout)?;
    run.recovery_start = Some(times);
    let v = verify(&bootstrap, &parts, &expected, a.timeout)?;
    check("after kill -9", &v, run);
    run.verify_after_recovery = Some(v);
    let pid = broker.pid()?;
    run.footprint_after_recovery = Some(procstat::footprint(pid)?);

    say(format!(
        "recovery start {:.2} s; idle for {:.0} s",
        times.all_led_seconds,
        a.idle.as_secs_f64()
    ));
    let before = procstat::sample(Target::Pid(pid))?;
    std::thread::sleep(a.idle);
    let after = procstat::sample(Target::Pid(pid))?;
    run.idle_cpu_percent_of_core =
        Some(procstat::usage(Target::Pid(pid), before, after, a.idle).cpu_percent_of_core);

    let msg_per_sec = a.rate * 1e6 / a.message_size as f64;
    say(format!(
        "load: {} MB/s ({msg_per_sec:.0} msg/s) over {} partitions, {} + {} s",
        a.rate,
        parts.len(),
        a.warmup.as_secs_f64(),
        a.duration.as_secs_f64()
    ));
    let plan = LoadPlan {
        bootstrap: bootstrap.clone(),
        partitions: std::sync::Arc::new(parts),
        msg_per_sec,
        message_size: a.message_size,
        warmup: a.warmup,
        duration: a.duration,
        producers: a.producers,
        consumers: a.consumers,
        producer: settings,
        consumer_extra: a.consumer_props.clone(),
        broker_pid: pid,
        progress,
        raw_producers: a.raw_producers,
    };
    let load = partitions_load::run(&plan)?;
    let unwritten = plan.partitions.len() as u64 - load.partitions_acked;
    if unwritten > 0 {
        run.errors
            .push(format!("load: {unwritten} partitions got no acked record"));
    }
    if load.produce_errors + load.consume_errors > 0 {
        run.errors.push(format!(
            "load: {} produce and {} consume errors, first: {}",
            load.produce_errors,
            load.consume_errors,
            load.first_error.as_deref().unwrap_or("-")
        ));
    }
    if load.backlog_at_window_end as f64 > msg_per_sec {
        run.notes.push(format!(
            "load: the producers were {} records ({:.1} s of the rate) behind the schedule when the window closed",
            load.backlog_at_window_end,
            load.backlog_at_window_end as f64 / msg_per_sec
        ));
    }
    if load.consumed_total < load.acked_total {
        run.notes.push(format!(
            "load: the consumers read {} of {} acked records before the drain's bound",
            load.consumed_total, load.acked_total
        ));
    }
    run.load = Some(load);
    broker.check_running()?;
    run.footprint_after_load = Some(procstat::footprint(pid)?);
    run.final_stop_seconds = Some(broker.terminate(a.timeout)?.as_secs_f64());
    Ok(())
}

/// Runs every layout, each on its own broker and data dir.
pub fn run(a: &PartitionsArgs, progress: bool) -> Result<PartitionsReport> {
    if a.cores == 0 || a.producers == 0 || a.consumers == 0 {
        bail!("--cores, --producers and --consumers must be at least 1");
    }
    if a.raw_producers && !a.producer_props.is_empty() {
        bail!(
            "--producer-prop sets librdkafka properties; --raw-producers does not use librdkafka"
        );
    }
    if a.message_size < crate::record::HEADER_LEN {
        bail!(
            "--message-size must be at least {} (the send time stamp)",
            crate::record::HEADER_LEN
        );
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be a positive MB/s");
    }
    if a.warmup + a.duration > MAX_RUN {
        bail!("--warmup + --duration must be at most {MAX_RUN:?}");
    }
    let bin = resolve(&a.sluice_bin, "broker binary")?;
    let wd = work_dir(a.work_dir.as_deref(), "partitions", &bin)?;
    let (work, copy) = (wd.dir.clone(), wd.bin.clone());
    let mut layouts = Vec::new();
    for layout in a.layouts() {
        let name = layout.name();
        let data_dir = work.join(format!("{name}-data"));
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing the old {}", data_dir.display()))?;
        }
        let spec = BrokerSpec {
            bin: copy.clone(),
            data_dir: data_dir.clone(),
            port: free_port()?,
            listeners: None,
            cores: a.cores,
            settings: a.settings.clone(),
            log: work.join(format!("{name}.log")),
        };
        let mut run = LayoutRun {
            layout: name.clone(),
            topics: layout.topics,
            partitions_per_topic: layout.partitions,
            partitions: layout.total(),
            ..LayoutRun::default()
        };
        if let Err(e) = run_layout(a, &spec, layout, &mut run, progress) {
            run.errors.push(format!("{e:#}"));
        }
        if progress {
            eprintln!(
                "partitions {name}: done, {} error(s); broker log {}",
                run.errors.len(),
                spec.log.display()
            );
        }
        if !a.keep_data {
            if let Err(e) = std::fs::remove_dir_all(&data_dir) {
                eprintln!("warning: removing {}: {e}", data_dir.display());
            }
        }
        layouts.push(run);
    }
    // the broker binary was copied into the work dir (so a rebuild cannot change it mid-run)
    if copy != bin {
        if let Err(e) = std::fs::remove_file(&copy) {
            eprintln!("warning: removing {}: {e}", copy.display());
        }
    }
    Ok(PartitionsReport {
        name: "partitions".into(),
        sluice_bin: bin.display().to_string(),
        work_dir: work.display().to_string(),
        cores: a.cores,
        settings: a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        message_size: a.message_size,
        rate_mb_per_sec: a.rate,
        warmup_seconds: a.warmup.as_secs_f64(),
        duration_seconds: a.duration.as_secs_f64(),
        idle_seconds: a.idle.as_secs_f64(),
        producers: a.producers,
        consumers: a.consumers,
        linger_ms: a.linger_ms,
        batch_size: a.batch_size,
        raw_producers: a.raw_producers,
        layouts,
    })
}

/// `sluice-bench partitions`: runs, prints the tables (or JSON), writes --json-out, hands
/// the report to `page` (the `--report` page); exits with an error after printing when any
/// layout has one (a lost record included).
pub fn partitions_command(
    json: bool,
    quiet: bool,
    a: &PartitionsArgs,
    page: impl FnOnce(&PartitionsReport) -> Result<()>,
) -> Result<()> {
    let r = run(a, !quiet)?;
    crate::report::emit(json, a.json_out.as_deref(), &r, table)?;
    page(&r)?;
    let errors = r.errors();
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{} error(s), first: {}", errors.len(), errors[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: PartitionsArgs,
    }

    #[test]
    fn layouts_parse_and_default_to_the_readme_table() {
        assert_eq!(
            Layout::parse("1000x10"),
            Ok(Layout {
                topics: 1000,
                partitions: 10
            })
        );
        assert_eq!(Layout::parse("1×10000").map(|l| l.total()), Ok(10_000));
        for bad in ["10000", "0x5", "1x0", "ax1", "1x2x3", "1001x1000"] {
            assert!(Layout::parse(bad).is_err(), "{bad}");
        }
        let a = Cli::try_parse_from(["t"]).expect("parses").a;
        let totals: Vec<u64> = a.layouts().iter().map(Layout::total).collect();
        assert_eq!(totals, vec![100, 1_000, 10_000]);
        assert_eq!(
            (a.rate, a.duration, a.idle),
            (100.0, Duration::from_secs(30), Duration::from_secs(10))
        );
        let a = Cli::try_parse_from(["t", "--layout", "1x10000,1000x10", "--layout", "2x3"])
            .expect("parses")
            .a;
        assert_eq!(a.layouts().len(), 3);
        assert_eq!(a.producer_settings().acks, "all");
    }

    #[test]
    fn topic_partitions_list_every_partition_topic_by_topic() {
        let topics = vec!["a".to_string(), "b".to_string()];
        let tp = topic_partitions(&topics, 3);
        assert_eq!(tp.len(), 6);
        assert_eq!(tp[0], ("a".to_string(), 0));
        assert_eq!(tp[5], ("b".to_string(), 2));
    }
}
