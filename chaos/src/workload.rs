//! The workloads, all through librdkafka (rdkafka) and the proxies, all writing the history:
//!
//! - producers: idempotent, acks=all, explicit partitions (`seq % partitions`), unique
//!   values `<producer>-<seq>`; a producer whose client hits a fatal error is replaced by
//!   a new one under a new name (so per-producer order is one idempotent session);
//! - a consumer by assignment, every partition from offset 0;
//! - consumers in a group, auto-committing their positions (each answer recorded through
//!   the commit callback) and reading the committed offsets back now and then;
//! - the final read-back: every partition from 0 to its high watermark, until the high
//!   watermark stands still;
//! - with `txn_producers` > 0, the transactional workload of `txn_workload.rs`, started and
//!   stopped with these.
//!
//! Invariants: every loop ends on the stop flag or a deadline; every client call has a
//! timeout; threads and tasks are joined (bounded) by `Workloads::stop`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::ctp_workload::CtpWorkloads;
use crate::history::{HistoryWriter, Kind, Phase};
use crate::txn_workload::TxnWorkloads;

/// Produces sent before their answers are awaited, per producer.
const WINDOW: usize = 8;
/// librdkafka's bound on one message (then it fails the delivery).
const MESSAGE_TIMEOUT_MS: u64 = 15_000;
/// How often group members commit (auto-commit interval) and read their committed
/// offsets back.
const COMMIT_EVERY: Duration = Duration::from_millis(1000);
const COMMITTED_EVERY: Duration = Duration::from_millis(3000);
/// Bound for one committed-offsets read-back.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for joining a workload after the stop flag is set.
const JOIN_TIMEOUT: Duration = Duration::from_secs(MESSAGE_TIMEOUT_MS / 1000 + 15);

/// What the workloads need to know.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    /// Produces per second, all producers together.
    pub rate: u64,
    pub group_members: usize,
    pub group: String,
    /// Transactional producers (0: no transactional workload) and their topic.
    pub txn_producers: usize,
    pub txn_topic: String,
    /// The run's seed (the transactional workload's choices derive from it).
    pub seed: u64,
    /// Consume-transform-produce workers (0: none) reading `topic`, writing `ctp_topic`.
    pub ctp_workers: usize,
    pub ctp_topic: String,
}

/// Base settings of every client.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("log_level", "3");
    c
}

/// The running workloads.
pub struct Workloads {
    stop_producers: Arc<AtomicBool>,
    stop_consumers: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    txn: Option<TxnWorkloads>,
    ctp: Option<CtpWorkloads>,
    rt: Handle,
}

impl Workloads {
    pub fn start(cfg: &WorkloadConfig, hist: Arc<HistoryWriter>, rt: Handle) -> Result<Self> {
        let stop_producers = Arc::new(AtomicBool::new(false));
        let stop_consumers = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        let per_worker = (cfg.rate as f64 / cfg.producers.max(1) as f64).max(0.1);
        for w in 0..cfg.producers {
            let (cfg, hist, stop) = (cfg.clone(), hist.clone(), stop_producers.clone());
            producers.push(rt.spawn(async move {
                producer(w, per_worker, cfg, hist, stop).await;
            }));
        }
        let mut consumers = Vec::new();
        {
            let (cfg, hist, stop) = (cfg.clone(), hist.clone(), stop_consumers.clone());
            consumers.push(
                std::thread::Builder::new()
                    .name("chaos-assign".into())
                    .spawn(move || assigned_consumer("a0", &cfg, &hist, &stop))?,
            );
        }
        for m in 0..cfg.group_members {
            let (cfg, hist, stop) = (cfg.clone(), hist.clone(), stop_consumers.clone());
            consumers.push(
                std::thread::Builder::new()
                    .name(format!("chaos-group-{m}"))
                    .spawn(move || group_member(&format!("g{m}"), &cfg, &hist, &stop))?,
            );
        }
        let txn = if cfg.txn_producers > 0 {
            Some(TxnWorkloads::start(cfg, hist.clone(), rt.clone())?)
        } else {
            None
        };
        let ctp = if cfg.ctp_workers > 0 {
            Some(CtpWorkloads::start(cfg, hist, rt.clone())?)
        } else {
            None
        };
        Ok(Workloads {
            stop_producers,
            stop_consumers,
            producers,
            consumers,
            txn,
            ctp,
            rt,
        })
    }

    /// Lets the consume-transform-produce workers catch up with the input's final `ends`
    /// (bounded), then stops them; false if they did not catch up in time.
    pub fn drain_and_stop_ctp(&mut self, ends: &BTreeMap<i32, i64>, within: Duration) -> bool {
        let Some(ctp) = &mut self.ctp else {
            return true;
        };
        let drained = ctp.drain(ends, within);
        ctp.stop();
        drained
    }

    /// Stops the producers (their outstanding produces are answered or time out first).
    pub fn stop_producers(&mut self) {
        self.stop_producers.store(true, Ordering::Relaxed);
        if let Some(t) = &mut self.txn {
            t.stop_producers();
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for p in self.producers.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(left, p).await });
        }
    }

    pub fn stop_consumers(&mut self) {
        self.stop_consumers.store(true, Ordering::Relaxed);
        if let Some(t) = &mut self.txn {
            t.stop_readers();
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for c in self.consumers.drain(..) {
            while !c.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if c.is_finished() {
                let _ = c.join();
            } // else: left detached; it ends at its next poll (stop flag is set)
        }
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        self.stop_producers.store(true, Ordering::Relaxed);
        self.stop_consumers.store(true, Ordering::Relaxed);
        for p in self.producers.drain(..) {
            p.abort();
        }
    }
}

fn make_producer(cfg: &WorkloadConfig) -> Result<FutureProducer> {
    Ok(client_config(&cfg.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("linger.ms", "2")
        .create()?)
}

async fn producer(
    w: usize,
    per_second: f64,
    cfg: WorkloadConfig,
    hist: Arc<HistoryWriter>,
    stop: Arc<AtomicBool>,
) {
    let pace = Duration::from_secs_f64(WINDOW as f64 / per_second);
    let mut incarnation = 0u32;
    let mut seq = 0u64;
    'outer: while !stop.load(Ordering::Relaxed) {
        let name = format!("w{w}.{incarnation}");
        let producer = match make_producer(&cfg) {
            Ok(p) => p,
            Err(e) => {
                hist.write(
                    &hist
                        .entry(Kind::Info, Phase::Info)
                        .worker(&name)
                        .detail(format!("creating a producer: {e}")),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let started = tokio::time::Instant::now();
            let mut window = Vec::with_capacity(WINDOW);
            for _ in 0..WINDOW {
                let id = hist.next_id();
                let p = (seq % cfg.partitions as u64) as i32;
                let value = format!("{name}-{seq}");
                seq += 1;
                hist.write(
                    &hist
                        .entry(Kind::Produce, Phase::Invoke)
                        .id(id)
                        .worker(&name)
                        .partition(p)
                        .value(&value),
                );
                let rec: FutureRecord<'_, (), str> =
                    FutureRecord::to(&cfg.topic).partition(p).payload(&value);
                match producer.send_result(rec) {
                    Ok(fut) => window.push((id, p, fut)),
                    Err((e, _)) => hist.write(
                        &hist
                            .entry(Kind::Produce, Phase::Fail)
                            .id(id)
                            .worker(&name)
                            .partition(p)
                            .error(format!("not enqueued: {e}")),
                    ),
                }
            }
            for (id, p, fut) in window {
                // librdkafka answers every message within message.timeout.ms
                let bound = Duration::from_millis(MESSAGE_TIMEOUT_MS + 10_000);
                let e = hist.entry(Kind::Produce, Phase::Ok).id(id).worker(&name);
                match tokio::time::timeout(bound, fut).await {
                    Ok(Ok(Ok(d))) => {
                        hist.write(&e.partition(d.partition).offset(d.offset));
                    }
                    Ok(Ok(Err((err, _)))) => {
                        let mut e = e.partition(p).error(short_error(&err));
                        e.phase = Phase::Fail;
                        hist.write(&e);
                    }
                    Ok(Err(_)) | Err(_) => {
                        let mut e = e.partition(p).error("no delivery report");
                        e.phase = Phase::Fail;
                        hist.write(&e);
                    }
                }
            }
            if let Some((code, reason)) = producer.client().fatal_error() {
                hist.write(
                    &hist
                        .entry(Kind::Info, Phase::Info)
                        .worker(&name)
                        .detail(format!("fatal producer error {code:?}: {reason}; replaced")),
                );
                incarnation += 1;
                continue 'outer;
            }
            let spent = started.elapsed();
            if spent < pace {
                tokio::time::sleep(pace - spent).await;
            }
        }
        // outstanding messages were all awaited above; nothing left in flight
        let _ = producer.flush(Duration::from_secs(1));
    }
}

/// The error as the history keeps it: librdkafka's code name when there is one.
pub(crate) fn short_error(e: &rdkafka::error::KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => e.to_string(),
    }
}

fn assigned_consumer(name: &str, cfg: &WorkloadConfig, hist: &HistoryWriter, stop: &AtomicBool) {
    let mut session = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // librdkafka wants a group.id even for assign(); this one never joins or commits
        let consumer: BaseConsumer = match client_config(&cfg.bootstrap)
            .set("group.id", format!("{}-{name}-unused", cfg.group))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "200")
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                info(hist, name, format!("creating a consumer: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..cfg.partitions {
            let _ = tpl.add_partition_offset(&cfg.topic, p, Offset::Beginning);
        }
        if let Err(e) = consumer.assign(&tpl) {
            info(hist, name, format!("assign: {e}"));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            // errors are transient here (a leader moving); librdkafka retries them
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                record_read(hist, Kind::Read, name, session, &m);
            }
        }
        session += 1;
    }
}

/// Writes a consumer's read as a `kind` line (`read`, or `txn_read` for read_committed).
pub(crate) fn record_read(
    hist: &HistoryWriter,
    kind: Kind,
    name: &str,
    session: u64,
    m: &rdkafka::message::BorrowedMessage<'_>,
) {
    let value = m
        .payload()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    hist.write(
        &hist
            .entry(kind, Phase::Ok)
            .worker(name)
            .session(session)
            .partition(m.partition())
            .offset(m.offset())
            .value(value),
    );
}

pub(crate) fn info(hist: &HistoryWriter, name: &str, detail: String) {
    hist.write(
        &hist
            .entry(Kind::Info, Phase::Info)
            .worker(name)
            .detail(detail),
    );
}

/// A group member's context: counts rebalances (each starts a new read session) and
/// records commit answers.
struct GroupContext {
    name: String,
    group: String,
    hist: Arc<HistoryWriter>,
    session: AtomicU64,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.session.fetch_add(1, Ordering::Relaxed);
        let what = match rebalance {
            Rebalance::Assign(tpl) => format!("assigned {:?}", partitions_of(tpl)),
            Rebalance::Revoke(tpl) => format!("revoked {:?}", partitions_of(tpl)),
            Rebalance::Error(e) => format!("rebalance error {e}"),
        };
        info(&self.hist, &self.name, what);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if offsets.count() == 0 {
            // nothing new to commit is the usual answer of an idle auto-commit
            if let Err(e) = &result {
                if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                    info(&self.hist, &self.name, format!("commit failed: {e}"));
                }
            }
        }
        for e in offsets.elements() {
            let Offset::Offset(o) = e.offset() else {
                continue;
            };
            let mut line = self
                .hist
                .entry(Kind::Commit, Phase::Ok)
                .worker(&self.name)
                .group(&self.group)
                .partition(e.partition())
                .offset(o);
            // a per-partition error fails that partition's commit
            let err = match (&result, e.error()) {
                (Err(err), _) => Some(err.to_string()),
                (Ok(()), Err(err)) => Some(err.to_string()),
                _ => None,
            };
            if let Some(err) = err {
                line.phase = Phase::Fail;
                line = line.error(err);
            }
            self.hist.write(&line);
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn group_member(name: &str, cfg: &WorkloadConfig, hist: &Arc<HistoryWriter>, stop: &AtomicBool) {
    let mut incarnation = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ctx = GroupContext {
            name: name.to_string(),
            group: cfg.group.clone(),
            hist: hist.clone(),
            // sessions of one incarnation never collide with the next one's
            session: AtomicU64::new(incarnation << 32),
        };
        let consumer: BaseConsumer<GroupContext> = match client_config(&cfg.bootstrap)
            .set("group.id", &cfg.group)
            // librdkafka reports the answers of its own (auto) commits to commit_callback,
            // not those of manual async ones: positions of records handed to this loop are
            // committed every COMMIT_EVERY
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                COMMIT_EVERY.as_millis().to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "60000")
            .set("fetch.wait.max.ms", "200")
            .create_with_context(ctx)
        {
            Ok(c) => c,
            Err(e) => {
                info(hist, name, format!("creating a group consumer: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                incarnation += 1;
                continue;
            }
        };
        if let Err(e) = consumer.subscribe(&[&cfg.topic]) {
            info(hist, name, format!("subscribe: {e}"));
            std::thread::sleep(Duration::from_secs(1));
            incarnation += 1;
            continue;
        }
        let mut last_committed = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let session = consumer.context().session.load(Ordering::Relaxed);
                record_read(hist, Kind::Read, name, session, &m);
            }
            if last_committed.elapsed() >= COMMITTED_EVERY {
                last_committed = Instant::now();
                let id = hist.next_id();
                hist.write(
                    &hist
                        .entry(Kind::Committed, Phase::Invoke)
                        .id(id)
                        .worker(name)
                        .group(&cfg.group),
                );
                match consumer.committed(COMMITTED_TIMEOUT) {
                    Ok(tpl) => {
                        for e in tpl.elements() {
                            let o = match e.offset() {
                                Offset::Offset(o) => o,
                                _ => -1,
                            };
                            hist.write(
                                &hist
                                    .entry(Kind::Committed, Phase::Ok)
                                    .id(id)
                                    .worker(name)
                                    .group(&cfg.group)
                                    .partition(e.partition())
                                    .offset(o),
                            );
                        }
                    }
                    Err(e) => hist.write(
                        &hist
                            .entry(Kind::Committed, Phase::Fail)
                            .id(id)
                            .worker(name)
                            .group(&cfg.group)
                            .error(e.to_string()),
                    ),
                }
            }
        }
        // leave the group so the others take over without waiting for a session timeout
        drop(consumer);
        incarnation += 1;
    }
}

/// Reads every partition from offset 0 to its high watermark, again until the high
/// watermark stands still, writing `final_read` and `final_end` lines; returns each
/// partition's end. A partition that cannot be read within `within` gets no `final_end`
/// (the checker calls it incomplete).
pub fn final_read(
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    within: Duration,
) -> Result<BTreeMap<i32, i64>> {
    let deadline = Instant::now() + within;
    let consumer: BaseConsumer = client_config(&cfg.bootstrap)
        .set("group.id", format!("{}-final-unused", cfg.group))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating the final reader")?;
    let mut failures = Vec::new();
    let mut ends = BTreeMap::new();
    for p in 0..cfg.partitions {
        match final_read_partition(&consumer, cfg, p, hist, deadline) {
            Ok(end) => {
                ends.insert(p, end);
            }
            Err(e) => {
                info(hist, "final", format!("partition {p}: {e:#}"));
                failures.push(p);
            }
        }
    }
    if !failures.is_empty() {
        bail!("final read-back failed for partitions {failures:?}");
    }
    Ok(ends)
}

fn final_read_partition(
    consumer: &BaseConsumer,
    cfg: &WorkloadConfig,
    p: i32,
    hist: &HistoryWriter,
    deadline: Instant,
) -> Result<i64> {
    let mut next = 0i64;
    let mut seen: BTreeMap<i64, ()> = BTreeMap::new();
    let mut last_hw = -1i64;
    // bounded: at most 10 rounds, each until the deadline
    for _ in 0..10 {
        let hw = loop {
            match consumer.fetch_watermarks(&cfg.topic, p, Duration::from_secs(5)) {
                Ok((_, hw)) => break hw,
                Err(e) if Instant::now() >= deadline => bail!("high watermark: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        if hw == last_hw && next >= hw {
            hist.write(
                &hist
                    .entry(Kind::FinalEnd, Phase::Ok)
                    .partition(p)
                    .offset(hw),
            );
            return Ok(hw);
        }
        last_hw = hw;
        if next < hw {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(next))?;
            consumer.assign(&tpl)?;
            while next < hw {
                if Instant::now() >= deadline {
                    bail!("read only up to offset {next} of {hw} in time");
                }
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        let o = m.offset();
                        if o >= next && seen.insert(o, ()).is_none() {
                            let value = m
                                .payload()
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                                .unwrap_or_default();
                            hist.write(
                                &hist
                                    .entry(Kind::FinalRead, Phase::Ok)
                                    .partition(p)
                                    .offset(o)
                                    .value(value),
                            );
                        }
                        next = next.max(o + 1);
                    }
                    Some(Err(e)) => {
                        info(hist, "final", format!("partition {p} at {next}: {e}"));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    None => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("the high watermark kept moving")
}
