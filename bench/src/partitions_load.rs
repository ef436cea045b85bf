//! The load phase of `sluice-bench partitions`: a constant rate spread evenly over every
//! partition of a layout (acks=all), and consumers that are assigned every partition.
//!
//! ```text
//!  consumers: partition i -> consumer i mod C, positioned at the end offsets ─► ready
//!  t0: producers: partition i -> producer i mod P; a producer's record k goes to its
//!      (k mod n)-th partition (explicit round robin), paced at rate / P
//!      delivery report: ack latency = ack time - send time (HDR, per record), and
//!      ack time - intended send time (the schedule's, corrected for coordinated omission)
//!  window open: broker utime+stime ── window close: utime+stime, RSS ─► CPU s per GB acked
//!  producers flush; consumers drain until they saw every acked record (bounded)
//! ```
//! End-to-end latency = receive time - the send time stamped in the record; the threads
//! share one `Clock`. Only records sent (or intended) inside the window enter the
//! histograms. The send time, not the intended one, is the main figure here: when the
//! broker cannot take the rate (10,000 partitions today) the producers fall behind the
//! schedule within the warm-up, and the records intended inside the window are then sent
//! after it or never.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::engine::{Clock, StopOnDrop};
use crate::kafka::{consumer_config, producer_config, ProducerSettings};
use crate::pacer::{Pacer, Step};
use crate::partitions_report::LoadFigures;
use crate::procstat::{self, Target};
use crate::progress::{progress_loop, Counters};
use crate::record::{read_stamp, Payload};
use crate::stats::{LatencyHistogram, Throughput};
use crate::timeline::sample_loop;

/// One (topic, partition) of the layout; its index in the plan's list names it.
pub(crate) type TopicPartition = (String, i32);

/// What the load phase runs.
#[derive(Clone, Debug)]
pub(crate) struct LoadPlan {
    pub(crate) bootstrap: String,
    pub(crate) partitions: Arc<Vec<TopicPartition>>,
    /// Total msg/s over all producers.
    pub(crate) msg_per_sec: f64,
    pub(crate) message_size: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) producers: u32,
    pub(crate) consumers: u32,
    pub(crate) producer: ProducerSettings,
    pub(crate) consumer_extra: Vec<(String, String)>,
    pub(crate) broker_pid: u32,
    pub(crate) progress: bool,
    /// Producers speak the protocol themselves (`partitions_raw`) instead of librdkafka.
    pub(crate) raw_producers: bool,
}

/// The delivery opaque of one record: which partition, when it was due, when it was sent.
#[derive(Debug)]
struct Sent {
    index: u32,
    intended: Duration,
    sent: Duration,
}

/// What one producer counted; merged at the end.
#[derive(Debug, Default)]
pub(crate) struct ProduceTally {
    /// From the send.
    pub(crate) hist: LatencyHistogram,
    /// From the intended send time.
    pub(crate) hist_intended: LatencyHistogram,
    pub(crate) sent: u64,
    /// Records due but not sent when the window closed.
    pub(crate) backlog: u64,
    pub(crate) acked_in_window: u64,
    pub(crate) acked_total: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Indexed like the plan's partitions: acked at least once.
    pub(crate) written: Vec<bool>,
}

/// Delivery context of one producer: its sending thread and librdkafka's poll thread.
struct Delivery {
    clock: Clock,
    window: (Duration, Duration),
    counters: Arc<Counters>,
    tally: Mutex<ProduceTally>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, record: Box<Sent>) {
        let now = self.clock.elapsed();
        let in_window = |at: Duration| at >= self.window.0 && at <= self.window.1;
        let Ok(mut t) = self.tally.lock() else { return };
        match result {
            Ok(_) => {
                self.counters.acked.fetch_add(1, Relaxed);
                t.acked_total += 1;
                if let Some(w) = t.written.get_mut(record.index as usize) {
                    *w = true;
                }
                if in_window(now) {
                    t.acked_in_window += 1;
                }
                if in_window(record.sent) {
                    t.hist.record(now.saturating_sub(record.sent));
                }
                if in_window(record.intended) {
                    t.hist_intended.record(now.saturating_sub(record.intended));
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

/// The partitions producer `me` sends to (partition i goes to producer i mod N), and its
/// tally before the first send.
pub(crate) fn producer_share(plan: &LoadPlan, me: u32) -> (Vec<usize>, ProduceTally) {
    let owned = (0..plan.partitions.len())
        .filter(|i| i % plan.producers as usize == me as usize)
        .collect();
    let tally = ProduceTally {
        written: vec![false; plan.partitions.len()],
        ..ProduceTally::default()
    };
    (owned, tally)
}

fn produce(
    plan: &LoadPlan,
    me: u32,
    clock: Clock,
    t0: Duration,
    window: (Duration, Duration),
    stop: &AtomicBool,
    counters: Arc<Counters>,
) -> Result<ProduceTally> {
    let parts = &plan.partitions;
    let (owned, tally) = producer_share(plan, me);
    if owned.is_empty() {
        return Ok(tally);
    }
    let ctx = Delivery {
        clock,
        window,
        counters: counters.clone(),
        tally: Mutex::new(tally),
    };
    let producer: ThreadedProducer<Delivery> = producer_config(&plan.bootstrap, &plan.producer)
        .create_with_context(ctx)
        .context("creating producer")?;
    let mut pacer = Pacer::new(Some(plan.msg_per_sec / plan.producers as f64));
    let mut payload = Payload::new(plan.message_size, &mut rand::rng());
    let (mut sent, mut local_errors, mut first_error) = (0u64, 0u64, None);
    let backlog;
    'send: loop {
        let now = clock.elapsed();
        if now >= window.1 || stop.load(Relaxed) {
            backlog = pacer.backlog(now - t0);
            break;
        }
        let (k, intended) = match pacer.step(now - t0) {
            Step::Wait(d) => {
                std::thread::sleep(d);
                continue;
            }
            Step::Send { index, intended } => (index, t0 + intended),
        };
        let index = owned[(k % owned.len() as u64) as usize];
        let (topic, partition) = &parts[index];
        loop {
            let sent = clock.elapsed();
            let opaque = Box::new(Sent {
                index: index as u32,
                intended,
                sent,
            });
            let record = BaseRecord::with_opaque_to(topic, opaque)
                .partition(*partition)
                .payload(payload.stamp(clock.unix_ns(sent)));
            match producer.send::<(), [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: wait for acks, then stamp anew
                    if clock.elapsed() >= window.1 || stop.load(Relaxed) {
                        backlog = pacer.backlog(clock.elapsed() - t0);
                        break 'send;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => {
                    local_errors += 1;
                    counters.errors.fetch_add(1, Relaxed);
                    first_error.get_or_insert_with(|| format!("send: {e}"));
                    break;
                }
            }
        }
        sent += 1;
        counters.sent.fetch_add(1, Relaxed);
    }
    let flushed = producer.flush(Duration::from_secs(60));
    let mut t = producer
        .context()
        .tally
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .map_err(|_| anyhow!("producer tally poisoned"))?;
    t.sent = sent;
    t.backlog = backlog;
    t.errors += local_errors;
    if t.first_error.is_none() {
        t.first_error = first_error;
    }
    if let Err(e) = flushed {
        t.first_error
            .get_or_insert_with(|| format!("flush: {e} (records still in flight)"));
    }
    Ok(t)
}

/// What one consumer counted.
#[derive(Debug, Default)]
struct ConsumeTally {
    hist: LatencyHistogram,
    received: u64,
    in_window: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One consumer: assigned partitions i with i mod C == `me`, at their end offsets
/// (resolved in one ListOffsets round before `ready`), polling until `stop`.
fn consume(
    plan: &LoadPlan,
    me: u32,
    clock: Clock,
    window: &OnceLock<(Duration, Duration)>,
    stop: &AtomicBool,
    counters: Arc<Counters>,
    ready: mpsc::Sender<()>,
) -> Result<ConsumeTally> {
    // assign() needs a group.id though it never joins nor commits: a private one
    let group = format!("sluice-bench-partitions-{}-{me}", std::process::id());
    let consumer: BaseConsumer =
        consumer_config(&plan.bootstrap, Some(&group), false, &plan.consumer_extra)
            .create()
            .context("creating consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (i, (topic, p)) in plan.partitions.iter().enumerate() {
        if i % plan.consumers as usize == me as usize {
            tpl.add_partition_offset(topic, *p, Offset::End)
                .context("building the assignment")?;
        }
    }
    let mut tally = ConsumeTally::default();
    if tpl.count() > 0 {
        let resolved = consumer
            .offsets_for_times(tpl, Duration::from_secs(60))
            .context("resolving the end offsets")?;
        let unresolved = resolved
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
            .count();
        if unresolved > 0 {
            bail!("{unresolved} partitions without an end offset");
        }
        consumer.assign(&resolved).context("assign")?;
    }
    let _ = ready.send(());
    // the window is set when the producers start, after every consumer is ready
    let mut win = None;
    while !stop.load(Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let msg = match result {
            Ok(m) => m,
            Err(e) => {
                tally.errors += 1;
                counters.errors.fetch_add(1, Relaxed);
                tally
                    .first_error
                    .get_or_insert_with(|| format!("consume: {e}"));
                continue;
            }
        };
        let now = clock.elapsed();
        counters.received.fetch_add(1, Relaxed);
        tally.received += 1;
        if win.is_none() {
            win = window.get().copied();
        }
        let Some((from, to)) = win else { continue };
        if now >= from && now <= to {
            tally.in_window += 1;
        }
        if let Some(stamp) = msg.payload().and_then(read_stamp) {
            if stamp >= clock.unix_ns(from) && stamp <= clock.unix_ns(to) {
                tally
                    .hist
                    .record_nanos(clock.unix_ns(now) as i64 - stamp as i64);
            }
        }
    }
    Ok(tally)
}

fn join_all<T>(threads: Vec<JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut err = None;
    for h in threads {
        match h.join() {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(e)) => {
                err.get_or_insert(e);
            }
            Err(_) => {
                err.get_or_insert(anyhow!("a load thread panicked"));
            }
        }
    }
    err.map_or(Ok(out), Err)
}

fn sleep_until(clock: &Clock, at: Duration, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        let now = clock.elapsed();
        if now >= at {
            return;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(100)));
    }
}

/// Runs the load phase. Every thread it starts is joined before it returns, on error
/// paths too (the stop flag ends them within one poll or send).
pub(crate) fn run(plan: &LoadPlan) -> Result<LoadFigures> {
    if plan.partitions.is_empty() || plan.partitions.len() > u32::MAX as usize {
        bail!("the load needs 1 to {} partitions", u32::MAX);
    }
    if plan.producers == 0 || plan.consumers == 0 {
        bail!("the load needs a producer and a consumer");
    }
    let plan = Arc::new(plan.clone());
    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let window = Arc::new(OnceLock::new());
    let mut counters: Vec<(bool, Arc<Counters>)> = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut consumers = Vec::new();
    for c in 0..plan.consumers {
        let (plan, stop, ready, win) =
            (plan.clone(), stop.clone(), ready_tx.clone(), window.clone());
        let cnt = Arc::new(Counters::default());
        counters.push((false, cnt.clone()));
        consumers.push(
            std::thread::Builder::new()
                .name(format!("parts-consumer-{c}"))
                .spawn(move || consume(&plan, c, clock, &win, &stop, cnt, ready))
                .context("spawning a consumer")?,
        );
    }
    drop(ready_tx);
    let ready_deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..plan.consumers {
        let left = ready_deadline.saturating_duration_since(Instant::now());
        if ready_rx.recv_timeout(left).is_err() {
            stop.store(true, Relaxed);
            let why = join_all(consumers).err().map(|e| format!("{e:#}"));
            bail!(
                "consumers not positioned: {}",
                why.unwrap_or_else(|| "timed out".into())
            );
        }
    }
    let t0 = clock.elapsed();
    let win = (t0 + plan.warmup, t0 + plan.warmup + plan.duration);
    let _ = window.set(win);
    let mut producers = Vec::new();
    for p in 0..plan.producers {
        let (plan, flag) = (plan.clone(), stop.clone());
        let cnt = Arc::new(Counters::default());
        counters.push((true, cnt.clone()));
        let spawned = std::thread::Builder::new()
            .name(format!("parts-producer-{p}"))
            .spawn(move || {
                if plan.raw_producers {
                    crate::partitions_raw::produce(&plan, p, clock, t0, win, &flag, cnt)
                } else {
                    produce(&plan, p, clock, t0, win, &flag, cnt)
                }
            });
        match spawned {
            Ok(h) => producers.push(h),
            Err(e) => {
                stop.store(true, Relaxed);
                let _ = join_all(producers);
                let _ = join_all(consumers);
                return Err(anyhow!(e).context("spawning a producer"));
            }
        }
    }
    let progress_stop = Arc::new(AtomicBool::new(false));
    let _progress_guard = StopOnDrop(progress_stop.clone());
    let progress = plan.progress.then(|| {
        let (c, flag, size) = (counters.clone(), progress_stop.clone(), plan.message_size);
        std::thread::spawn(move || progress_loop(c, flag, clock.start, t0, size))
    });
    let sampler = {
        let (c, flag, pid) = (counters.clone(), progress_stop.clone(), plan.broker_pid);
        std::thread::spawn(move || sample_loop(c, flag, clock.start, t0, Some(pid)))
    };
    let broker = Target::Pid(plan.broker_pid);
    sleep_until(&clock, win.0, &stop);
    let at_open = (
        procstat::sample(broker),
        procstat::sample(Target::SelfProcess),
    );
    sleep_until(&clock, win.1, &stop);
    let at_close = (
        procstat::sample(broker),
        procstat::sample(Target::SelfProcess),
    );
    let footprint = procstat::footprint(plan.broker_pid);
    let produced = join_all(producers);
    // consumers get as long as the run (at least 10 s) to read every acked record
    let acked: u64 = produced.iter().flatten().map(|t| t.acked_total).sum();
    let drain_deadline =
        Instant::now() + (plan.warmup + plan.duration).max(Duration::from_secs(10));
    while Instant::now() < drain_deadline {
        let got: u64 = counters
            .iter()
            .filter(|(producer, _)| !producer)
            .map(|(_, c)| c.received.load(Relaxed))
            .sum();
        if got >= acked {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    let consumed = join_all(consumers);
    progress_stop.store(true, Relaxed);
    if let Some(h) = progress {
        let _ = h.join();
    }
    let timeline = sampler.join().unwrap_or_default();
    let (produced, consumed) = (produced?, consumed?);
    let (b0, s0) = at_open;
    let (b1, s1) = at_close;
    let (b0, b1) = (
        b0.context("broker /proc at the window's start")?,
        b1.context("broker /proc at the window's end (did it exit?)")?,
    );
    let footprint = footprint.context("broker footprint at the window's end")?;
    let mut f = figures(
        &plan,
        &produced,
        &consumed,
        (b0, b1),
        s0.ok().zip(s1.ok()),
        footprint,
    );
    f.charts.timeline = timeline;
    Ok(f)
}

fn figures(
    plan: &LoadPlan,
    produced: &[ProduceTally],
    consumed: &[ConsumeTally],
    broker: (procstat::ProcSample, procstat::ProcSample),
    client: Option<(procstat::ProcSample, procstat::ProcSample)>,
    footprint: procstat::Footprint,
) -> LoadFigures {
    let size = plan.message_size as u64;
    let mut ack = LatencyHistogram::new();
    let mut ack_intended = LatencyHistogram::new();
    let mut e2e = LatencyHistogram::new();
    let mut written = vec![false; plan.partitions.len()];
    let mut f = LoadFigures {
        target_msg_per_sec: plan.msg_per_sec,
        target_mb_per_sec: plan.msg_per_sec * size as f64 / 1e6,
        ..LoadFigures::default()
    };
    let mut acked_in_window = 0;
    for t in produced {
        ack.merge(&t.hist);
        ack_intended.merge(&t.hist_intended);
        f.sent_total += t.sent;
        f.backlog_at_window_end += t.backlog;
        f.acked_total += t.acked_total;
        acked_in_window += t.acked_in_window;
        f.produce_errors += t.errors;
        if f.first_error.is_none() {
            f.first_error.clone_from(&t.first_error);
        }
        for (w, o) in written.iter_mut().zip(&t.written) {
            *w |= *o;
        }
    }
    let mut received_in_window = 0;
    for t in consumed {
        e2e.merge(&t.hist);
        f.consumed_total += t.received;
        received_in_window += t.in_window;
        f.consume_errors += t.errors;
        if f.first_error.is_none() {
            f.first_error.clone_from(&t.first_error);
        }
    }
    f.partitions_acked = written.iter().filter(|w| **w).count() as u64;
    f.produced = Some(Throughput::new(
        acked_in_window,
        acked_in_window * size,
        plan.duration,
    ));
    f.consumed = Some(Throughput::new(
        received_in_window,
        received_in_window * size,
        plan.duration,
    ));
    f.ack_latency = ack.summary();
    f.ack_latency_from_intended = ack_intended.summary();
    f.e2e_latency = e2e.summary();
    f.charts.ack_curve = ack.percentile_curve();
    f.charts.e2e_curve = e2e.percentile_curve();
    f.charts.window_seconds = Some((
        plan.warmup.as_secs_f64(),
        (plan.warmup + plan.duration).as_secs_f64(),
    ));
    let usage = procstat::usage(
        Target::Pid(plan.broker_pid),
        broker.0,
        broker.1,
        plan.duration,
    );
    f.broker_cpu_seconds = usage.cpu_seconds;
    f.broker_cpu_percent_of_core = usage.cpu_percent_of_core;
    let gb = (acked_in_window * size) as f64 / 1e9;
    f.broker_cpu_s_per_gb = (gb > 0.0).then(|| usage.cpu_seconds / gb);
    f.broker_rss_bytes = footprint.rss_bytes;
    f.broker_peak_rss_bytes = broker.1.peak_rss_bytes;
    f.client_cpu_percent_of_core = client.map(|(a, b)| {
        procstat::usage(Target::SelfProcess, a, b, plan.duration).cpu_percent_of_core
    });
    f
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan over `parts` with `producers` producers (1,000 msg/s of 1,000 B, 2 s).
    pub(crate) fn plan(parts: Vec<TopicPartition>, producers: u32) -> LoadPlan {
        LoadPlan {
            bootstrap: String::new(),
            partitions: Arc::new(parts),
            msg_per_sec: 1000.0,
            message_size: 1000,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            producers,
            consumers: 1,
            producer: crate::kafka::ProducerSettings {
                acks: "all".into(),
                compression: "none".into(),
                batch_size: 1,
                linger_ms: 1.0,
                extra: Vec::new(),
            },
            consumer_extra: Vec::new(),
            broker_pid: 1,
            progress: false,
            raw_producers: false,
        }
    }

    #[test]
    fn figures_merge_threads_and_count_cpu_per_gb_in_the_window() {
        let parts: Vec<TopicPartition> = (0..4).map(|p| ("t".to_string(), p)).collect();
        let plan = plan(parts, 2);
        let tally = |w: [bool; 4]| ProduceTally {
            sent: 1000,
            backlog: 5,
            acked_total: 1000,
            acked_in_window: 1000,
            written: w.to_vec(),
            ..ProduceTally::default()
        };
        let produced = [
            tally([true, false, true, false]),
            tally([false, true, false, false]),
        ];
        let consumed = [ConsumeTally {
            received: 1990,
            in_window: 1500,
            ..ConsumeTally::default()
        }];
        let s = |cpu: f64| procstat::ProcSample {
            cpu_seconds: cpu,
            peak_rss_bytes: 7,
        };
        let fp = procstat::Footprint {
            rss_bytes: 5,
            open_fds: 3,
        };
        let f = figures(&plan, &produced, &consumed, (s(1.0), s(1.5)), None, fp);
        assert_eq!(
            (f.sent_total, f.acked_total, f.consumed_total),
            (2000, 2000, 1990)
        );
        assert_eq!((f.partitions_acked, f.backlog_at_window_end), (3, 10));
        assert_eq!(f.target_mb_per_sec, 1.0);
        let produced = f.produced.expect("produced");
        assert_eq!(produced.mb_per_sec, 1.0);
        // 0.5 CPU s over 2,000 records of 1,000 B = 0.002 GB
        assert!((f.broker_cpu_s_per_gb.expect("per GB") - 250.0).abs() < 1e-9);
        assert_eq!(f.broker_cpu_percent_of_core, 25.0);
        assert_eq!((f.broker_rss_bytes, f.broker_peak_rss_bytes), (5, 7));
    }
}
