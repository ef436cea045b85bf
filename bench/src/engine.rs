//! The load engine: producer and consumer threads over librdkafka, a 1 s progress line,
//! and the merged `RunReport`.
//!
//! ```text
//!  consumers start, resolve their start offsets, signal ready ─┐
//!  t0: producers start (paced or max) ──► broker ──► consumers │ e2e = receive - intended
//!      delivery callback: ack latency = ack time - intended    │ (both from one clock)
//!  t0+warmup .. t0+warmup+duration: the measured window ◄──────┘
//!  producers flush; consumers drain until they saw every acked record (or time out)
//! ```
//! Only samples whose intended send time falls in the window enter the histograms;
//! throughput counts acks / receives that happen inside the window.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::{consumer_config, producer_config, ProducerSettings};
use crate::pacer::{per_producer_rate, Pacer, Step};
use crate::procstat::{self, ProcUsage, Target};
use crate::progress::{progress_loop, Counters};
use crate::record::{read_stamp, KeyDistributor, KeyGen, Payload};
use crate::stats::{LatencyHistogram, LatencySummary, Throughput};
use crate::timeline::{sample_loop, RunCharts};

/// Everything one run needs. Topics must exist already.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Name printed in the report.
    pub name: String,
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Topics to produce to / consume from.
    pub topics: Vec<String>,
    /// Partitions per topic.
    pub partitions: u32,
    /// Payload bytes per record.
    pub message_size: usize,
    /// Producer threads per topic (0: consume only).
    pub producers_per_topic: u32,
    /// Subscriptions per topic (each reads everything; 0: produce only).
    pub subscriptions_per_topic: u32,
    /// Consumer threads per subscription.
    pub consumers_per_subscription: u32,
    /// Total target rate in msg/s; `None` is max throughput.
    pub rate: Option<f64>,
    /// Stop producing after this many records in total (also ends the run early).
    pub max_messages: Option<u64>,
    /// Time before the measured window.
    pub warmup: Duration,
    /// Measured window length (producers stop at its end).
    pub duration: Duration,
    /// Record keys.
    pub keys: KeyDistributor,
    /// Producer settings.
    pub producer: ProducerSettings,
    /// Consumers start at the beginning (`true`) or at the current end of each partition.
    pub consume_from_beginning: bool,
    /// Consume-only runs stop after this many records per topic and subscription.
    pub consume_until: Option<u64>,
    /// Consumers subscribe in a group (one per subscription) instead of assigning partitions.
    pub use_groups: bool,
    /// Extra consumer properties.
    pub consumer_extra: Vec<(String, String)>,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// Broker pid for CPU / RSS accounting.
    pub broker_pid: Option<u32>,
}

/// Results of one run, JSON-serializable.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Spec name.
    pub name: String,
    /// Topics, partitions per topic, message size.
    pub topics: usize,
    /// Partitions per topic.
    pub partitions: u32,
    /// Payload size.
    pub message_size: usize,
    /// Target rate (msg/s), `None` for max.
    pub target_rate: Option<f64>,
    /// `acks` used.
    pub acks: String,
    /// Producer throughput (acked records) in the window.
    pub produced: Option<Throughput>,
    /// Consumer throughput (all subscriptions) in the window.
    pub consumed: Option<Throughput>,
    /// Produce-ack latency, corrected for coordinated omission in constant-rate mode.
    pub produce_latency: Option<LatencySummary>,
    /// End-to-end latency from intended send time to receive.
    pub e2e_latency: Option<LatencySummary>,
    /// Records acked in total (window and outside).
    pub acked_total: u64,
    /// Records consumed in total.
    pub consumed_total: u64,
    /// Sends rejected locally or failed delivery.
    pub produce_errors: u64,
    /// Consumer errors reported by poll.
    pub consume_errors: u64,
    /// First error text seen, if any.
    pub first_error: Option<String>,
    /// Broker CPU and peak RSS, when its pid was given.
    pub broker: Option<ProcUsage>,
    /// This client's own CPU and peak RSS (it shares the machine with the broker).
    pub client: Option<ProcUsage>,
    /// Per-second samples and percentile curves for `--report` (not in the JSON).
    #[serde(skip)]
    pub charts: RunCharts,
}

/// Maps monotonic time since the run started to UNIX nanoseconds; one per run, copied
/// into every producer and consumer thread so their stamps and receive times agree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) start: Instant,
    unix_start_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let unix_start_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            start: Instant::now(),
            unix_start_ns,
        }
    }
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    pub(crate) fn unix_ns(&self, at: Duration) -> u64 {
        self.unix_start_ns + at.as_nanos() as u64
    }
}

/// The measured window relative to the run clock, fixed when producers start.
type Window = Arc<OnceLock<(Duration, Duration)>>;

/// The part of the measured window `win` that lies before `end` (when the activity being
/// rated stopped); None if it stopped before the window opened.
fn measured_span(win: (Duration, Duration), end: Duration) -> Option<Duration> {
    let span = end.min(win.1).saturating_sub(win.0);
    (!span.is_zero()).then_some(span)
}

#[derive(Debug, Default)]
struct ProducerTally {
    hist: LatencyHistogram,
    acked_in_window: u64,
    acked_total: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Delivery-report context of one producer; shared between the sending thread and
/// librdkafka's polling thread, hence the (uncontended) mutex.
struct BenchProducerContext {
    clock: Clock,
    window: (Duration, Duration),
    counters: Arc<Counters>,
    tally: Mutex<ProducerTally>,
}

impl ClientContext for BenchProducerContext {}

impl ProducerContext for BenchProducerContext {
    /// Intended send time in nanoseconds since the run clock started.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended_ns: usize) {
        let now = self.clock.elapsed();
        let intended = Duration::from_nanos(intended_ns as u64);
        let (from, to) = self.window;
        let Ok(mut t) = self.tally.lock() else { return };
        match result {
            Ok(_) => {
                self.counters.acked.fetch_add(1, Relaxed);
                t.acked_total += 1;
                if now >= from && now <= to {
                    t.acked_in_window += 1;
                }
                if intended >= from && intended <= to {
                    t.hist.record(now.saturating_sub(intended));
                }
            }
            Err((e, _)) => {
                self.counters.errors.fetch_add(1, Relaxed);
                t.errors += 1;
                t.first_error
                    .get_or_insert_with(|| format!("delivery: {e}"));
            }
        }
    }
}

#[derive(Debug, Default)]
struct ConsumerTally {
    hist: LatencyHistogram,
    received_total: u64,
    bytes_total: u64,
    received_in_window: u64,
    bytes_in_window: u64,
    first: Option<Duration>,
    last: Option<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Sets a stop flag when dropped, so every return path of `run` (including `?` and
/// panics) tells the threads it started to finish.
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// Runs one load test. On success every thread is joined; on any error path all threads
/// are told to stop (they finish within one poll interval).
pub fn run(spec: &LoadSpec) -> Result<RunReport> {
    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let progress_stop = Arc::new(AtomicBool::new(false));
    let _progress_guard = StopOnDrop(progress_stop.clone());
    let window: Window = Arc::new(OnceLock::new());
    // Consumers first, so they are positioned before the first record is sent. Each
    // sends `true` once positioned, or `false` if it failed before that.
    let (ready_tx, ready_rx) = mpsc::channel::<bool>();
    let mut consumer_threads = Vec::new();
    let mut all_counters: Vec<(bool, Arc<Counters>)> = Vec::new();
    let consumer_total =
        spec.topics.len() as u32 * spec.subscriptions_per_topic * spec.consumers_per_subscription;
    for (ti, topic) in spec.topics.iter().enumerate() {
        for sub in 0..spec.subscriptions_per_topic {
            for c in 0..spec.consumers_per_subscription {
                let counters = Arc::new(Counters::default());
                all_counters.push((false, counters.clone()));
                let job = ConsumerJob {
                    spec: spec.clone(),
                    topic: topic.clone(),
                    subscription: ti * spec.subscriptions_per_topic as usize + sub as usize,
                    index: c,
                    clock,
                    window: window.clone(),
                    stop: stop.clone(),
                    counters,
                    ready: ready_tx.clone(),
                };
                let failed = ready_tx.clone();
                consumer_threads.push(
                    std::thread::Builder::new()
                        .name(format!("consumer-{ti}-{sub}-{c}"))
                        .spawn(move || {
                            let result = job.run();
                            if result.is_err() {
                                let _ = failed.send(false);
                            }
                            result
                        })
                        .context("spawning consumer thread")?,
                );
            }
        }
    }
    drop(ready_tx);
    let mut ready = 0;
    let ready_deadline = Instant::now() + Duration::from_secs(60);
    while ready < consumer_total {
        let left = ready_deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(true) => ready += 1,
            Ok(false) | Err(_) => {
                stop.store(true, Relaxed);
                let why = match join_consumers(consumer_threads) {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => "timed out".to_string(),
                };
                return Err(anyhow!(
                    "only {ready}/{consumer_total} consumers became ready: {why}"
                ));
            }
        }
    }

    // CPU accounting covers t0 (everything connected and positioned) .. end of drain.
    let self_start = procstat::sample(Target::SelfProcess).ok();
    let broker_start = match spec.broker_pid {
        Some(p) => match procstat::sample(Target::Pid(p)) {
            Ok(s) => Some(s),
            Err(e) => {
                stop.store(true, Relaxed);
                let _ = join_consumers(consumer_threads);
                return Err(e.context("reading broker /proc stats (is --broker-pid right?)"));
            }
        },
        None => None,
    };
    let wall_start = Instant::now();

    // Producers.
    let t0 = clock.elapsed();
    let win = (t0 + spec.warmup, t0 + spec.warmup + spec.duration);
    let _ = window.set(win);
    let producer_total = spec.topics.len() as u32 * spec.producers_per_topic;
    let mut producer_threads: Vec<JoinHandle<Result<ProducerTally>>> = Vec::new();
    for (ti, topic) in spec.topics.iter().enumerate() {
        for p in 0..spec.producers_per_topic {
            let counters = Arc::new(Counters::default());
            all_counters.push((true, counters.clone()));
            let job = ProducerJob {
                spec: spec.clone(),
                topic: topic.clone(),
                index: ti as u64 * 1000 + p as u64,
                producers: producer_total,
                clock,
                t0,
                window: win,
                stop: stop.clone(),
                counters,
            };
            producer_threads.push(
                std::thread::Builder::new()
                    .name(format!("producer-{ti}-{p}"))
                    .spawn(move || job.run())
                    .context("spawning producer thread")?,
            );
        }
    }
    let progress = spec.progress.then(|| {
        let counters = all_counters.clone();
        let flag = progress_stop.clone();
        let size = spec.message_size;
        std::thread::spawn(move || progress_loop(counters, flag, clock.start, t0, size))
    });
    let sampler = {
        let (counters, flag, pid) = (all_counters.clone(), progress_stop.clone(), spec.broker_pid);
        std::thread::spawn(move || sample_loop(counters, flag, clock.start, t0, pid))
    };

    let mut produced = ProducerTally::default();
    let mut producer_err = None;
    for h in producer_threads {
        match h.join() {
            Ok(Ok(t)) => {
                produced.hist.merge(&t.hist);
                produced.acked_in_window += t.acked_in_window;
                produced.acked_total += t.acked_total;
                produced.errors += t.errors;
                if produced.first_error.is_none() {
                    produced.first_error = t.first_error;
                }
            }
            Ok(Err(e)) => {
                producer_err.get_or_insert(e);
            }
            Err(_) => {
                producer_err.get_or_insert(anyhow!("producer thread panicked"));
            }
        }
    }

    // With --messages the producers may finish before the window closes (or even before it
    // opens): rates are then taken over the part of the window that saw production.
    let produce_end = clock.elapsed();

    // Let consumers drain: every subscription should see every acked record.
    if consumer_total > 0 {
        let subscriptions = spec.topics.len() * spec.subscriptions_per_topic as usize;
        let per_sub_target = match (producer_total, spec.consume_until) {
            (0, Some(n)) => n,
            (0, None) => u64::MAX,
            _ => produced.acked_total,
        };
        let target = per_sub_target.saturating_mul(subscriptions as u64);
        // After producing stops, lagging consumers get as long as the run itself (at least
        // 10 s) to catch up; records still unread then are missing from the e2e histogram,
        // which the report shows as consumed_total < acked_total.
        let drain_deadline = if producer_total == 0 {
            t0 + spec.warmup + spec.duration
        } else {
            clock.elapsed() + (spec.warmup + spec.duration).max(Duration::from_secs(10))
        };
        let consumer_counters: Vec<&Arc<Counters>> = all_counters
            .iter()
            .filter(|(is_producer, _)| !is_producer)
            .map(|(_, c)| c)
            .collect();
        while clock.elapsed() < drain_deadline {
            let got: u64 = consumer_counters
                .iter()
                .map(|c| c.received.load(Relaxed))
                .sum();
            if got >= target {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Relaxed);
    let wall = wall_start.elapsed();
    let self_end = procstat::sample(Target::SelfProcess).ok();
    let broker_end = spec.broker_pid.map(|p| procstat::sample(Target::Pid(p)));
    let consumed = join_consumers(consumer_threads);
    progress_stop.store(true, Relaxed);
    if let Some(h) = progress {
        let _ = h.join();
    }
    let timeline = sampler.join().unwrap_or_default();
    if let Some(e) = producer_err {
        return Err(e);
    }
    let consumed = consumed?;

    let client = match (self_start, self_end) {
        (Some(s), Some(e)) => Some(procstat::usage(Target::SelfProcess, s, e, wall)),
        _ => None,
    };
    let broker = match (spec.broker_pid, broker_start, broker_end) {
        (Some(pid), Some(s), Some(end)) => {
            let end = end.context("broker /proc stats at the end (did it exit?)")?;
            Some(procstat::usage(Target::Pid(pid), s, end, wall))
        }
        _ => None,
    };

    let msg = spec.message_size as u64;
    let produced_tp = (producer_total > 0).then(|| {
        match measured_span(win, produce_end) {
            Some(span) => Throughput::new(
                produced.acked_in_window,
                produced.acked_in_window * msg,
                span,
            ),
            // finished inside the warm-up: the whole run is all there is to measure
            None => Throughput::new(
                produced.acked_total,
                produced.acked_total * msg,
                produce_end.saturating_sub(t0),
            ),
        }
    });
    let mut e2e = LatencyHistogram::new();
    let mut consumed_total = 0;
    let mut consume_errors = 0;
    let mut first_error = produced.first_error.clone();
    let (mut in_win, mut in_win_bytes, mut total_bytes) = (0, 0, 0);
    let (mut first, mut last) = (None::<Duration>, None::<Duration>);
    for c in &consumed {
        e2e.merge(&c.hist);
        consumed_total += c.received_total;
        total_bytes += c.bytes_total;
        in_win += c.received_in_window;
        in_win_bytes += c.bytes_in_window;
        consume_errors += c.errors;
        first = match (first, c.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(c.last);
        if first_error.is_none() {
            first_error = c.first_error.clone();
        }
    }
    // Every record over the span from the first to the last one received.
    let whole_run = || {
        let span = match (first, last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        };
        Throughput::new(consumed_total, total_bytes, span)
    };
    let consumed_tp = if consumer_total == 0 {
        None
    } else if producer_total == 0 {
        Some(whole_run())
    } else {
        Some(match last.and_then(|end| measured_span(win, end)) {
            Some(span) => Throughput::new(in_win, in_win_bytes, span),
            None => whole_run(),
        })
    };

    Ok(RunReport {
        name: spec.name.clone(),
        topics: spec.topics.len(),
        partitions: spec.partitions,
        message_size: spec.message_size,
        target_rate: spec.rate,
        acks: spec.producer.acks.clone(),
        produced: produced_tp,
        consumed: consumed_tp,
        produce_latency: produced.hist.summary(),
        e2e_latency: e2e.summary(),
        acked_total: produced.acked_total,
        consumed_total,
        produce_errors: produced.errors,
        consume_errors,
        first_error,
        broker,
        client,
        charts: RunCharts {
            timeline,
            ack_curve: produced.hist.percentile_curve(),
            e2e_curve: e2e.percentile_curve(),
            window_seconds: (producer_total > 0).then(|| {
                (
                    win.0.saturating_sub(t0).as_secs_f64(),
                    win.1.saturating_sub(t0).as_secs_f64(),
                )
            }),
        },
    })
}

fn join_consumers(threads: Vec<JoinHandle<Result<ConsumerTally>>>) -> Result<Vec<ConsumerTally>> {
    let mut out = Vec::new();
    let mut err = None;
    for h in threads {
        match h.join() {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(e)) => {
                err.get_or_insert(e);
            }
            Err(_) => {
                err.get_or_insert(anyhow!("consumer thread panicked"));
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One producer thread's job.
struct ProducerJob {
    spec: LoadSpec,
    topic: String,
    index: u64,
    producers: u32,
    clock: Clock,
    t0: Duration,
    window: (Duration, Duration),
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl ProducerJob {
    fn run(self) -> Result<ProducerTally> {
        let ctx = BenchProducerContext {
            clock: self.clock,
            window: self.window,
            counters: self.counters.clone(),
            tally: Mutex::new(ProducerTally::default()),
        };
        let producer: ThreadedProducer<BenchProducerContext> =
            producer_config(&self.spec.bootstrap, &self.spec.producer)
                .create_with_context(ctx)
                .context("creating producer")?;
        let mut pacer = Pacer::new(per_producer_rate(self.spec.rate, self.producers as usize));
        let quota = self
            .spec
            .max_messages
            .map(|n| n.div_ceil(self.producers.max(1) as u64));
        let mut rng = rand::rng();
        let mut payload = Payload::new(self.spec.message_size, &mut rng);
        let mut keys = KeyGen::new(self.spec.keys, self.index * 7919);
        let end = self.window.1;
        let mut local_errors = 0u64;
        let mut first_error = None;
        'send: loop {
            let now = self.clock.elapsed();
            if now >= end || self.stop.load(Relaxed) || quota.is_some_and(|q| pacer.sent() >= q) {
                break;
            }
            let intended = match pacer.step(now - self.t0) {
                Step::Wait(d) => {
                    std::thread::sleep(d);
                    continue;
                }
                Step::Send { intended, .. } => self.t0 + intended,
            };
            let bytes = payload.stamp(self.clock.unix_ns(intended));
            let key = keys.next_key(&mut rng);
            let mut record = BaseRecord::with_opaque_to(&self.topic, intended.as_nanos() as usize)
                .payload(bytes);
            if let Some(k) = key {
                record = record.key(k);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // Local queue full: wait for acks. The intended time stays, so the
                        // wait counts as latency in constant-rate mode.
                        if self.clock.elapsed() >= end || self.stop.load(Relaxed) {
                            break 'send;
                        }
                        record = r;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => {
                        local_errors += 1;
                        self.counters.errors.fetch_add(1, Relaxed);
                        first_error.get_or_insert_with(|| format!("send: {e}"));
                        break;
                    }
                }
            }
            self.counters.sent.fetch_add(1, Relaxed);
        }
        let flushed = producer.flush(Duration::from_secs(60));
        let mut tally = producer
            .context()
            .tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .map_err(|_| anyhow!("producer tally poisoned"))?;
        tally.errors += local_errors;
        if tally.first_error.is_none() {
            tally.first_error = first_error;
        }
        if let Err(e) = flushed {
            tally
                .first_error
                .get_or_insert_with(|| format!("flush: {e} (records still in flight)"));
        }
        Ok(tally)
    }
}

/// One consumer thread's job.
struct ConsumerJob {
    spec: LoadSpec,
    topic: String,
    subscription: usize,
    index: u32,
    clock: Clock,
    window: Window,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    ready: mpsc::Sender<bool>,
}

impl ConsumerJob {
    fn run(self) -> Result<ConsumerTally> {
        let spec = &self.spec;
        let group = spec
            .use_groups
            .then(|| format!("sluice-bench-{}-{}", std::process::id(), self.subscription));
        // librdkafka refuses assign() without a group.id, even though an assign-mode
        // consumer never joins the group nor commits; give it a private one.
        let private_group = format!("sluice-bench-assign-{}", std::process::id());
        let consumer: BaseConsumer = consumer_config(
            &spec.bootstrap,
            Some(group.as_deref().unwrap_or(&private_group)),
            spec.consume_from_beginning,
            &spec.consumer_extra,
        )
        .create()
        .context("creating consumer")?;
        if group.is_some() {
            consumer.subscribe(&[&self.topic]).context("subscribe")?;
        } else {
            self.assign(&consumer)?;
        }
        let mut tally = ConsumerTally::default();
        let mut signalled = false;
        if group.is_none() {
            let _ = self.ready.send(true);
            signalled = true;
        }
        let group_deadline = Instant::now() + Duration::from_secs(30);
        let mut window = None;
        while !self.stop.load(Relaxed) {
            if !signalled {
                let assigned = consumer
                    .assignment()
                    .map(|a| a.count() > 0)
                    .unwrap_or(false);
                if assigned || Instant::now() > group_deadline {
                    let _ = self.ready.send(true);
                    signalled = true;
                }
            }
            let polled = consumer.poll(Duration::from_millis(50));
            let Some(result) = polled else { continue };
            let msg = match result {
                Ok(m) => m,
                Err(e) => {
                    tally.errors += 1;
                    self.counters.errors.fetch_add(1, Relaxed);
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("consume: {e}"));
                    continue;
                }
            };
            let now = self.clock.elapsed();
            let payload = msg.payload().unwrap_or(&[]);
            let len = payload.len() as u64;
            self.counters.received.fetch_add(1, Relaxed);
            tally.received_total += 1;
            tally.bytes_total += len;
            tally.first.get_or_insert(now);
            tally.last = Some(now);
            if window.is_none() {
                window = self.window.get().copied();
            }
            if let Some((from, to)) = window {
                if now >= from && now <= to {
                    tally.received_in_window += 1;
                    tally.bytes_in_window += len;
                }
                if let Some(stamp) = read_stamp(payload) {
                    let (lo, hi) = (self.clock.unix_ns(from), self.clock.unix_ns(to));
                    if stamp >= lo && stamp <= hi {
                        let latency = self.clock.unix_ns(now) as i64 - stamp as i64;
                        tally.hist.record_nanos(latency);
                    }
                }
            }
        }
        if !signalled {
            let _ = self.ready.send(true);
        }
        Ok(tally)
    }

    /// Assigns this consumer's share of partitions (p % consumers == index), positioned
    /// at the resolved end offsets (or the beginning), so no record sent after
    /// `ready` is missed.
    fn assign(&self, consumer: &BaseConsumer) -> Result<()> {
        let spec = &self.spec;
        let mut tpl = TopicPartitionList::new();
        let start = if spec.consume_from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        for p in 0..spec.partitions {
            if p % spec.consumers_per_subscription == self.index {
                tpl.add_partition_offset(&self.topic, p as i32, start)
                    .context("building assignment")?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if !spec.consume_from_beginning {
            // offsets_for_times with the "latest" sentinel (-1) resolves each partition's
            // end offset now, in one ListOffsets round.
            match consumer.offsets_for_times(tpl.clone(), Duration::from_secs(30)) {
                Ok(resolved)
                    if resolved
                        .elements()
                        .iter()
                        .all(|e| matches!(e.offset(), Offset::Offset(_))) =>
                {
                    tpl = resolved;
                }
                Ok(_) | Err(_) => {
                    eprintln!(
                        "note: could not resolve end offsets of {}; first records may be missed",
                        self.topic
                    );
                }
            }
        }
        consumer.assign(&tpl).context("assign")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
