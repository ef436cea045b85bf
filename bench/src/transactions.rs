//! `sluice-bench transactions`: transactional produce against plain idempotent produce in
//! one run (issue 15's benchmark), on a one-node broker it starts itself.
//!
//! ```text
//!  local-cluster.sh start 1 DIR (--cores shards)
//!  each round, each mode (order reversed in even rounds), on a fresh topic:
//!    --producers threads, one librdkafka producer each (acks=all, enable.idempotence):
//!      idempotent      send at max rate                        ─► acked MB/s
//!      every --commit-ms      begin; send for 100 ms; commit  ┐─► committed MB/s,
//!      every --commit-records begin; send 1,000; commit       ┘   commit latency (HDR)
//!    broker utime+stime (/proc) around the phase              ─► CPU s per GB counted
//!  local-cluster.sh stop; report: rows, medians, txn(100 ms)/idempotent per round, check
//! ```
//! Only records of transactions whose commit returned OK inside the measured window count.
//! librdkafka's transactional calls block, so every producer runs on its own thread, and a
//! commit's wall time is measured around it on that thread.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::engine::StopOnDrop;
use crate::kafka::{self, parse_prop, producer_config, ProducerSettings};
use crate::metadata::parse_secs;
use crate::procstat::{self, Target};
use crate::progress::{progress_loop, Counters};
use crate::record::Payload;
use crate::replication::{
    cluster_settings, create_topic, install_signal_thread, resolve, work_dir, LocalCluster, Order,
    Spread,
};
use crate::stats::{LatencyHistogram, Throughput};
use crate::transactions_report::{
    check, ratios_per_round, round_modes, scan_broker_log, summarize, table, Mode, PhaseRun,
    TransactionsReport, TxnFigures,
};

/// How long init_transactions, a flush, a commit or an abort may take before the phase
/// fails: a broker that stops answering should end the run, not hang it.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a commit that failed with a retriable error.
const COMMIT_RETRIES: u32 = 3;

/// `sluice-bench transactions`.
#[derive(Args, Debug, Clone)]
pub struct TransactionsArgs {
    /// Broker binary (looked up like `replication --sluice-bin`).
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice_bin: std::path::PathBuf,
    /// The cluster script.
    #[arg(long, default_value = "deploy/local-cluster.sh")]
    pub script: std::path::PathBuf,
    /// Where the node lives; default a new /tmp/sluice-bench-transactions-<pid>.
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
    /// Rounds; each runs every mode once.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Mode order within a round (alternate: reversed in even rounds).
    #[arg(long, value_enum, default_value_t = Order::Alternate)]
    pub order: Order,
    /// Measured duration of each phase.
    #[arg(long, default_value = "15s", value_parser = parse_secs)]
    pub duration: Duration,
    /// Warm-up before each phase's measured window.
    #[arg(long, default_value = "3s", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Producer threads of every phase; each transactional one has its own
    /// transactional.id, so one blocked in a commit does not stop the others.
    #[arg(long, default_value_t = 4)]
    pub producers: u32,
    /// Commit interval of the time-based transactional phase, ms.
    #[arg(long, default_value_t = 100)]
    pub commit_ms: u64,
    /// Records per transaction of the count-based transactional phase.
    #[arg(long, default_value_t = 1000)]
    pub commit_records: u64,
    /// Shards of the node.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Broker setting, repeatable: --set name=value.
    #[arg(long = "set", value_parser = parse_prop)]
    pub settings: Vec<(String, String)>,
    /// batch.size of the producers.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u32,
    /// linger.ms of the producers.
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// Extra producer property (librdkafka name), repeatable; applied last.
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
}

/// Acks seen by one producer's delivery callback (librdkafka's polling thread).
#[derive(Debug, Default)]
struct Acks {
    /// Delivery reports, acked or failed: every record sent gets exactly one.
    reports: u64,
    in_window: u64,
    total: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Delivery context of one producer; shared by its thread and librdkafka's poll thread.
struct Delivery {
    window: (Instant, Instant),
    /// Acks are the output (idempotent phases): they feed the progress line.
    acks_count: bool,
    counters: Arc<Counters>,
    acks: Mutex<Acks>,
    /// Notified on every delivery report, for `wait_for_acks`.
    reported: Condvar,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let now = Instant::now();
        let Ok(mut a) = self.acks.lock() else { return };
        a.reports += 1;
        self.reported.notify_all();
        match result {
            Ok(_) => {
                a.total += 1;
                if now >= self.window.0 && now <= self.window.1 {
                    a.in_window += 1;
                }
                if self.acks_count {
                    self.counters.acked.fetch_add(1, Relaxed);
                }
            }
            Err((e, _)) => {
                a.errors += 1;
                self.counters.errors.fetch_add(1, Relaxed);
                a.first_error
                    .get_or_insert_with(|| format!("delivery: {e}"));
            }
        }
    }
}

/// What one producer thread measured.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    counted_in_window: u64,
    counted_total: u64,
    commits_in_window: u64,
    commits_total: u64,
    aborted: u64,
    records_aborted: u64,
    commit: LatencyHistogram,
    flush: LatencyHistogram,
    end: LatencyHistogram,
    init: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, counters: &Counters, what: String) {
        self.errors += 1;
        counters.errors.fetch_add(1, Relaxed);
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, o: Tally) {
        self.sent += o.sent;
        self.counted_in_window += o.counted_in_window;
        self.counted_total += o.counted_total;
        self.commits_in_window += o.commits_in_window;
        self.commits_total += o.commits_total;
        self.aborted += o.aborted;
        self.records_aborted += o.records_aborted;
        self.commit.merge(&o.commit);
        self.flush.merge(&o.flush);
        self.end.merge(&o.end);
        self.init = self.init.max(o.init);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// One producer thread's job.
struct ProducerJob {
    bootstrap: String,
    topic: String,
    settings: ProducerSettings,
    mode: Mode,
    message_size: usize,
    window: (Instant, Instant),
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

type TxnProducer = ThreadedProducer<Delivery>;

impl ProducerJob {
    fn run(self) -> Result<Tally> {
        let ctx = Delivery {
            window: self.window,
            acks_count: !self.mode.is_transactional(),
            counters: self.counters.clone(),
            acks: Mutex::new(Acks::default()),
            reported: Condvar::new(),
        };
        let producer: TxnProducer = producer_config(&self.bootstrap, &self.settings)
            .create_with_context(ctx)
            .context("creating producer")?;
        let mut t = Tally::default();
        let txn = self.mode.is_transactional();
        if txn {
            let started = Instant::now();
            producer
                .init_transactions(TXN_TIMEOUT)
                .context("init_transactions")?;
            t.init = started.elapsed();
        }
        let mut payload = Payload::new(self.message_size, &mut rand::rng());
        let bytes = payload.stamp(0);
        let end = self.window.1;
        let over = |now: Instant| now >= end || self.stop.load(Relaxed);
        while !over(Instant::now()) {
            if txn {
                producer.begin_transaction().context("begin_transaction")?;
            }
            let opened = Instant::now();
            let mut in_txn = 0u64;
            'send: loop {
                let now = Instant::now();
                if over(now) || self.mode.commit_due(in_txn, (now - opened).as_millis()) {
                    break;
                }
                let mut record = BaseRecord::<(), [u8]>::to(&self.topic).payload(bytes);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            if over(Instant::now()) {
                                break 'send;
                            }
                            record = r;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err((e, _)) => {
                            t.error(&self.counters, format!("send: {e}"));
                            // a broken producer fails every send at once: do not spin
                            std::thread::sleep(Duration::from_millis(10));
                            break 'send;
                        }
                    }
                }
                in_txn += 1;
                t.sent += 1;
                self.counters.sent.fetch_add(1, Relaxed);
            }
            if txn {
                self.commit(&producer, in_txn, &mut t)?;
            }
        }
        if !txn {
            if let Err(e) = producer.flush(TXN_TIMEOUT) {
                t.error(
                    &self.counters,
                    format!("flush: {e} (records still in flight)"),
                );
            }
        }
        let acks = producer
            .context()
            .acks
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .map_err(|_| anyhow!("delivery tally poisoned"))?;
        if !txn {
            t.counted_in_window = acks.in_window;
            t.counted_total = acks.total;
        }
        t.errors += acks.errors;
        if t.first_error.is_none() {
            t.first_error = acks.first_error;
        }
        Ok(t)
    }

    /// Commits the open transaction of `records` records and times it: the wait for the
    /// acks of its records still in flight, then `commit_transaction` (EndTxn). That is
    /// what `commit_transaction` does, with a clock read between the two, except for how it
    /// waits: rdkafka's `flush` polls in 100 ms slices (`BaseProducer::poll` returns only
    /// at its deadline), which would round every commit with records in flight up to
    /// 100 ms; `wait_for_acks` wakes on the delivery reports the producer's own poll
    /// thread serves. A commit that fails with an abortable error is aborted and
    /// counted; a fatal one fails the phase.
    fn commit(&self, producer: &TxnProducer, records: u64, t: &mut Tally) -> Result<()> {
        let started = Instant::now();
        wait_for_acks(producer, t.sent, TXN_TIMEOUT)
            .context("waiting for the transaction's records before its commit")?;
        let flushed = Instant::now();
        let mut result = producer.commit_transaction(TXN_TIMEOUT);
        let mut retries = 0;
        loop {
            match result {
                Ok(()) => break,
                Err(KafkaError::Transaction(ref e))
                    if e.is_retriable() && retries < COMMIT_RETRIES =>
                {
                    retries += 1;
                    t.error(&self.counters, format!("commit (retried): {e}"));
                    result = producer.commit_transaction(TXN_TIMEOUT);
                }
                Err(KafkaError::Transaction(ref e)) if e.txn_requires_abort() => {
                    t.error(&self.counters, format!("commit (aborted): {e}"));
                    producer
                        .abort_transaction(TXN_TIMEOUT)
                        .context("abort_transaction after a failed commit")?;
                    t.aborted += 1;
                    t.records_aborted += records;
                    return Ok(());
                }
                Err(e) => return Err(anyhow!(e).context("commit_transaction")),
            }
        }
        let done = Instant::now();
        t.commits_total += 1;
        t.counted_total += records;
        self.counters.acked.fetch_add(records, Relaxed);
        if done >= self.window.0 && done <= self.window.1 {
            t.commits_in_window += 1;
            t.counted_in_window += records;
            t.commit.record(done - started);
            t.flush.record(flushed - started);
            t.end.record(done - flushed);
        }
        Ok(())
    }
}

/// Waits until every one of the `sent` records has its delivery report (the producer's
/// ThreadedProducer thread serves them and notifies `reported`), then until librdkafka
/// has released them too (`in_flight_count`, microseconds later), so the flush inside
/// `commit_transaction` finds nothing to wait for. Neither sleeps on a timer: a polling
/// loop would cost the 2-core machine a good part of a core.
fn wait_for_acks(producer: &TxnProducer, sent: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let ctx = producer.context();
    let mut a = ctx
        .acks
        .lock()
        .map_err(|_| anyhow!("delivery tally poisoned"))?;
    while a.reports < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "{} records unacknowledged after {timeout:?}",
                sent - a.reports
            );
        }
        a = ctx
            .reported
            .wait_timeout(a, left)
            .map_err(|_| anyhow!("delivery tally poisoned"))?
            .0;
    }
    drop(a);
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            bail!("records still held by librdkafka after {timeout:?}");
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// The producer settings of every phase: acks=all and idempotence, a transactional.id
/// for transactional phases, the user's --producer-prop last (after -X).
fn settings(a: &TransactionsArgs, transactional_id: Option<String>) -> ProducerSettings {
    let mut extra = vec![("enable.idempotence".to_string(), "true".to_string())];
    if let Some(id) = transactional_id {
        extra.push(("transactional.id".into(), id));
    }
    extra.extend(a.producer_props.iter().cloned());
    ProducerSettings {
        acks: "all".into(),
        compression: "none".into(),
        batch_size: a.batch_size,
        linger_ms: a.linger_ms,
        extra,
    }
}

fn run_phase(
    a: &TransactionsArgs,
    node: &LocalCluster,
    round: u32,
    mode: Mode,
    progress: bool,
) -> Result<PhaseRun> {
    let bootstrap = node.bootstrap();
    let tag = format!("{:08x}", rand::random::<u32>());
    let topic = format!("sluice-bench-txn-r{round}-{}-{tag}", mode.slug());
    let timeout = Duration::from_secs(60);
    create_topic(&bootstrap, &topic, a.partitions, 1, &[], timeout)?;
    let result = (|| -> Result<PhaseRun> {
        let pid = node
            .pids()?
            .first()
            .map(|(_, p)| *p)
            .context("no node pid")?;
        let broker_start = procstat::sample(Target::Pid(pid))?;
        let self_start = procstat::sample(Target::SelfProcess).ok();
        let started = Instant::now();
        let window = (started + a.warmup, started + a.warmup + a.duration);
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_guard = StopOnDrop(stop.clone());
        let mut threads = Vec::new();
        let mut counters = Vec::new();
        for i in 0..a.producers {
            let c = Arc::new(Counters::default());
            counters.push((true, c.clone()));
            let id = mode
                .is_transactional()
                .then(|| format!("sluice-bench-txn-{tag}-{}-{i}", mode.slug()));
            let job = ProducerJob {
                bootstrap: bootstrap.clone(),
                topic: topic.clone(),
                settings: settings(a, id),
                mode,
                message_size: a.message_size,
                window,
                stop: stop.clone(),
                counters: c,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("txn-producer-{i}"))
                    .spawn(move || job.run())
                    .context("spawning producer thread")?,
            );
        }
        let progress_stop = Arc::new(AtomicBool::new(false));
        let _progress_guard = StopOnDrop(progress_stop.clone());
        let progress = progress.then(|| {
            let flag = progress_stop.clone();
            let size = a.message_size;
            std::thread::spawn(move || progress_loop(counters, flag, started, Duration::ZERO, size))
        });
        let mut tally = Tally::default();
        let mut failed = None;
        for h in threads {
            match h.join() {
                Ok(Ok(t)) => tally.merge(t),
                Ok(Err(e)) => {
                    stop.store(true, Relaxed);
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    stop.store(true, Relaxed);
                    failed.get_or_insert(anyhow!("producer thread panicked"));
                }
            }
        }
        let wall = started.elapsed();
        let broker_end = procstat::sample(Target::Pid(pid))
            .context("broker /proc stats at the end (did it exit?)")?;
        let self_end = procstat::sample(Target::SelfProcess).ok();
        progress_stop.store(true, Relaxed);
        if let Some(h) = progress {
            let _ = h.join();
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let size = a.message_size as u64;
        let tp = Throughput::new(
            tally.counted_in_window,
            tally.counted_in_window * size,
            a.duration,
        );
        let cpu = (broker_end.cpu_seconds - broker_start.cpu_seconds).max(0.0);
        let gb = (tally.counted_total * size) as f64 / 1e9;
        let client = match (self_start, self_end) {
            (Some(s), Some(e)) => Some(procstat::usage(Target::SelfProcess, s, e, wall)),
            _ => None,
        };
        let txn = mode.is_transactional().then(|| TxnFigures {
            committed: tally.commits_total,
            commits_per_sec: tally.commits_in_window as f64 / a.duration.as_secs_f64(),
            records_per_commit: (tally.commits_in_window > 0)
                .then(|| tally.counted_in_window as f64 / tally.commits_in_window as f64),
            aborted: tally.aborted,
            records_aborted: tally.records_aborted,
            commit_latency: tally.commit.summary(),
            commit_flush_latency: tally.flush.summary(),
            commit_end_latency: tally.end.summary(),
            init_ms_max: tally.init.as_secs_f64() * 1e3,
        });
        Ok(PhaseRun {
            round,
            mode,
            producers: a.producers,
            mb_per_sec: tp.mb_per_sec,
            msg_per_sec: tp.msg_per_sec,
            window_seconds: tp.seconds,
            records_sent: tally.sent,
            records_counted: tally.counted_total,
            txn,
            broker_cpu_seconds: cpu,
            wall_seconds: wall.as_secs_f64(),
            broker_cpu_s_per_gb: (gb > 0.0).then(|| cpu / gb),
            client_cpu_percent_of_core: client.map(|c| c.cpu_percent_of_core),
            errors: tally.errors,
            first_error: tally.first_error,
        })
    })();
    if let Err(e) = kafka::delete_topics(&bootstrap, std::slice::from_ref(&topic), timeout) {
        eprintln!("warning: could not delete {topic}: {e:#}");
    }
    result
}

/// Runs every round on one node it starts and stops.
pub fn run(a: &TransactionsArgs, progress: bool) -> Result<TransactionsReport> {
    if a.rounds == 0 || a.partitions == 0 || a.producers == 0 || a.cores == 0 {
        bail!("--rounds, --partitions, --producers and --cores must be at least 1");
    }
    if a.message_size == 0 || a.commit_ms == 0 || a.commit_records == 0 {
        bail!("--message-size, --commit-ms and --commit-records must be at least 1");
    }
    let bin = resolve(&a.sluice_bin, "broker binary")?;
    let script = resolve(&a.script, "cluster script")?;
    let settings = cluster_settings(&a.settings)?;
    let wd = work_dir(a.work_dir.as_deref(), "transactions", &bin)?;
    let (work, copy) = (wd.dir.clone(), wd.bin.clone());
    install_signal_thread()?;
    let say = |m: String| {
        if progress {
            eprintln!("transactions: {m}");
        }
    };
    say(format!("starting a one-node broker in {}", work.display()));
    let mut node = LocalCluster::start(
        &script,
        &copy,
        work.join("node"),
        work.join("logs"),
        "transactions".into(),
        1,
        a.cores,
        &settings,
        false,
    )?;
    let mut phases = Vec::new();
    for round in 1..=a.rounds {
        for mode in round_modes(a.order, round, a.commit_ms, a.commit_records) {
            say(format!(
                "round {round}: {}, {} producer(s), {} + {} s ...",
                mode.label(),
                a.producers,
                a.warmup.as_secs_f64(),
                a.duration.as_secs_f64()
            ));
            let p = run_phase(a, &node, round, mode, progress)
                .with_context(|| format!("round {round}, {}", mode.label()))?;
            say(format!(
                "round {round}: {}: {:.1} MB/s, {} errors",
                mode.label(),
                p.mb_per_sec,
                p.errors
            ));
            phases.push(p);
        }
    }
    let broker_log = scan_broker_log(&node.node_log(1));
    node.stop()?;
    let modes = round_modes(Order::Fixed, 1, a.commit_ms, a.commit_records);
    let [_, by_time, by_records] = modes;
    let time_ratio_per_round = ratios_per_round(&phases, by_time);
    let records_ratio_per_round = ratios_per_round(&phases, by_records);
    let time_ratio = Spread::of(&time_ratio_per_round);
    Ok(TransactionsReport {
        name: "transactions".into(),
        sluice_bin: bin.display().to_string(),
        work_dir: work.display().to_string(),
        settings: a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cores: a.cores,
        partitions: a.partitions,
        message_size: a.message_size,
        producers: a.producers,
        duration_seconds: a.duration.as_secs_f64(),
        warmup_seconds: a.warmup.as_secs_f64(),
        commit_ms: a.commit_ms,
        commit_records: a.commit_records,
        order: a.order,
        summaries: modes.iter().map(|m| summarize(&phases, *m)).collect(),
        checks: vec![check(time_ratio.as_ref(), a.commit_ms)],
        time_ratio,
        records_ratio: Spread::of(&records_ratio_per_round),
        time_ratio_per_round,
        records_ratio_per_round,
        phases,
        broker_log,
    })
}

/// `sluice-bench transactions`: runs, prints the table (or JSON), writes --json-out.
/// Missing the target is a result, not an error.
pub fn transactions_command(json: bool, quiet: bool, a: &TransactionsArgs) -> Result<()> {
    let r = run(a, !quiet)?;
    crate::report::emit(json, a.json_out.as_deref(), &r, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: TransactionsArgs,
    }

    #[test]
    fn defaults_match_the_issue_and_settings_keep_user_props_last() {
        let a = Cli::try_parse_from(["t", "--producer-prop", "enable.idempotence=false"])
            .expect("parses")
            .a;
        assert_eq!((a.rounds, a.partitions, a.commit_ms), (3, 16, 100));
        assert_eq!(a.commit_records, 1000);
        assert_eq!(a.order, Order::Alternate);
        let s = settings(&a, Some("tx-1".into()));
        assert_eq!(s.acks, "all");
        assert_eq!(
            s.extra,
            vec![
                ("enable.idempotence".to_string(), "true".to_string()),
                ("transactional.id".to_string(), "tx-1".to_string()),
                ("enable.idempotence".to_string(), "false".to_string()),
            ]
        );
        let cfg = producer_config("127.0.0.1:1", &settings(&a, None));
        assert_eq!(cfg.get("transactional.id"), None);
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally {
            sent: 10,
            counted_in_window: 5,
            init: Duration::from_millis(3),
            ..Tally::default()
        };
        let mut b = Tally {
            sent: 1,
            commits_in_window: 2,
            init: Duration::from_millis(7),
            first_error: Some("x".into()),
            ..Tally::default()
        };
        b.commit.record(Duration::from_millis(40));
        a.merge(b);
        assert_eq!(
            (a.sent, a.counted_in_window, a.commits_in_window),
            (11, 5, 2)
        );
        assert_eq!(a.init, Duration::from_millis(7));
        assert_eq!(a.commit.count(), 1);
        assert_eq!(a.first_error.as_deref(), Some("x"));
    }
}
