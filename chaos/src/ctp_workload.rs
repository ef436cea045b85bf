//! The consume-transform-produce workload (Kafka's exactly-once pattern): a worker consumes
//! the idempotent workload's topic (`chaos`, the input) in the consumer group `chaos-ctp`
//! (read_committed, no auto-commit), writes each record's transform to `chaos-ctp-out`
//! (same partition), and commits the input offsets inside the same transaction
//! (`send_offsets_to_transaction`, i.e. TxnOffsetCommit). Any failure ends the incarnation:
//! a new producer with the same `transactional.id` (`chaos-ctp-<n>`) fences the old one, and
//! a new consumer starts again from the group's committed offsets.
//!
//! ```text
//!  supervisor ─► incarnation thread: consumer (subscribe) + transactional producer
//!      │           batch ─► ctp_txn invoke ─► sends ─► ctp_offsets ─► ctp_end ─► ctp_txn ok|fail
//!      └─ a call past its bound: ctp_txn fail (unknown), the thread is abandoned, a new
//!         incarnation replaces it (its init_transactions fences the abandoned producer)
//! ```
//!
//! librdkafka's `send_offsets_to_transaction` can ignore its timeout and hang when the group
//! coordinator goes away (confluentinc/librdkafka#5456, #5511), so every blocking client call
//! of an incarnation is watched from outside (`Guard`): past its own timeout plus
//! `OVERRUN_GRACE` the supervisor records the transaction's outcome as unknown and abandons
//! the thread. Invariants: a transaction's outcome is written once (by the incarnation, or by
//! the supervisor when it abandons it, under one lock); an abandoned incarnation writes
//! nothing more; every wait is bounded. Output values are `<p>@<o>=<input value>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::history::{HistoryWriter, Isolation, Kind, Phase};
use crate::txn_workload::{
    read_to_end, reader_config, wait_lso, LSO_WAIT, TXN_MESSAGE_TIMEOUT_MS, TXN_TIMEOUT_MS,
};
use crate::workload::{client_config, info, short_error, WorkloadConfig};

/// The consumer group of the consume-transform-produce workers.
pub const CTP_GROUP: &str = "chaos-ctp";
/// Records per transaction at most, and how long a batch is gathered.
const MAX_BATCH: usize = 500;
const BATCH_WINDOW: Duration = Duration::from_millis(300);
/// Timeouts given to the transactional calls (`init_transactions`; the others).
const INIT_TIMEOUT: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Past a call's own timeout, how long the supervisor waits before abandoning it.
const OVERRUN_GRACE: Duration = Duration::from_secs(5);
/// Bound of the wait for one delivery report.
const DELIVERY_BOUND: Duration = Duration::from_millis(TXN_MESSAGE_TIMEOUT_MS + 10_000);
/// How often an incarnation reads its group's committed offsets back.
const COMMITTED_EVERY: Duration = Duration::from_secs(3);
/// Bound for the supervisors to end after the stop flag.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The running consume-transform-produce workers.
pub struct CtpWorkloads {
    stop: Arc<AtomicBool>,
    supervisors: Vec<JoinHandle<()>>,
    /// Input partition → the offset the last acknowledged commit committed (any worker).
    committed: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl CtpWorkloads {
    pub fn start(cfg: &WorkloadConfig, hist: Arc<HistoryWriter>, rt: Handle) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Mutex::new(BTreeMap::new()));
        let mut supervisors = Vec::new();
        for w in 0..cfg.ctp_workers {
            let (cfg, hist, stop, committed, rt) = (
                cfg.clone(),
                hist.clone(),
                stop.clone(),
                committed.clone(),
                rt.clone(),
            );
            supervisors.push(
                std::thread::Builder::new()
                    .name(format!("chaos-ctp-{w}"))
                    .spawn(move || supervise(w, &cfg, &hist, &stop, &committed, &rt))?,
            );
        }
        Ok(CtpWorkloads {
            stop,
            supervisors,
            committed,
        })
    }

    /// Waits (bounded) until the acknowledged commits reach `ends` (input partition → its
    /// final end offset); true if they did.
    pub fn drain(&self, ends: &BTreeMap<i32, i64>, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let done = {
                let c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
                ends.iter()
                    .all(|(p, end)| *end == 0 || c.get(p).is_some_and(|o| o >= end))
            };
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the workers (each ends the transaction it is in first; bounded).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + JOIN_TIMEOUT;
        for t in self.supervisors.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for CtpWorkloads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The blocking call an incarnation is in, watched by its supervisor.
struct Guard {
    state: Mutex<GuardState>,
    /// Where an abandoned call's late answer is noted (`info` of `name`), so a history
    /// tells a call that hung for good from one that answered late.
    hist: Arc<HistoryWriter>,
    name: String,
}

#[derive(Default)]
struct GuardState {
    abandoned: bool,
    /// (what, deadline, the transaction it belongs to)
    call: Option<(&'static str, Instant, Option<u64>)>,
}

impl Guard {
    /// Runs `f` as the watched call `what` of transaction `txn`; None if the incarnation
    /// was abandoned meanwhile (the caller must return at once, writing nothing but the
    /// `info` line saying when and how the abandoned call returned).
    fn run<R: std::fmt::Debug>(
        &self,
        what: &'static str,
        timeout: Duration,
        txn: Option<u64>,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.abandoned {
                return None;
            }
            st.call = Some((what, Instant::now() + timeout + OVERRUN_GRACE, txn));
        }
        let began = Instant::now();
        let r = f();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.call = None;
        if st.abandoned {
            info(
                &self.hist,
                &self.name,
                format!(
                    "the abandoned {what} returned after {} ms: {r:?}",
                    began.elapsed().as_millis()
                ),
            );
            return None;
        }
        Some(r)
    }

    fn abandoned(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abandoned
    }
}

fn supervise(
    w: usize,
    cfg: &WorkloadConfig,
    hist: &Arc<HistoryWriter>,
    stop: &Arc<AtomicBool>,
    committed: &Arc<Mutex<BTreeMap<i32, i64>>>,
    rt: &Handle,
) {
    let mut incarnation = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("y{w}.{incarnation}");
        incarnation += 1;
        let guard = Arc::new(Guard {
            state: Mutex::default(),
            hist: hist.clone(),
            name: name.clone(),
        });
        let spawned = {
            let (cfg, hist, stop, committed, rt, guard, name) = (
                cfg.clone(),
                hist.clone(),
                stop.clone(),
                committed.clone(),
                rt.clone(),
                guard.clone(),
                name.clone(),
            );
            std::thread::Builder::new()
                .name(format!("chaos-ctp-{w}-{}", incarnation - 1))
                .spawn(move || {
                    if let Err(e) = incarnate(w, &name, &cfg, &hist, &stop, &guard, &committed, &rt)
                    {
                        if !guard.abandoned() {
                            info(&hist, &name, format!("incarnation ends: {e:#}"));
                        }
                    }
                })
        };
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                info(hist, &name, format!("spawning: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // bounded: every call of the incarnation has a deadline, past which it is abandoned
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if handle.is_finished() {
                let _ = handle.join();
                break;
            }
            let mut st = guard.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some((what, deadline, txn)) = st.call else {
                continue;
            };
            if Instant::now() < deadline {
                continue;
            }
            st.abandoned = true;
            let why = format!("{what} overran its bound: abandoned, outcome unknown");
            if let Some(id) = txn {
                hist.write(
                    &hist
                        .entry(Kind::CtpTxn, Phase::Fail)
                        .id(id)
                        .worker(&name)
                        .detail("unknown")
                        .error(&why),
                );
            }
            info(
                hist,
                &name,
                format!("{why}; the incarnation is replaced (its thread left running)"),
            );
            break; // the thread is detached
        }
        if !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Counts rebalances: a transaction that saw one is aborted (its records may be re-read).
struct CtpContext {
    rebalances: AtomicU64,
}

impl ClientContext for CtpContext {}

impl ConsumerContext for CtpContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, _r: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reason an incarnation ended (it is replaced in every case but the stop flag).
type Ended = Result<()>;

/// One incarnation: a consumer and a transactional producer, transactions until a failure
/// or the stop flag.
#[allow(clippy::too_many_arguments)]
fn incarnate(
    w: usize,
    name: &str,
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    stop: &AtomicBool,
    guard: &Guard,
    committed: &Mutex<BTreeMap<i32, i64>>,
    rt: &Handle,
) -> Ended {
    let txn_id = format!("chaos-ctp-{w}");
    let producer: FutureProducer = client_config(&cfg.bootstrap)
        .set("transactional.id", &txn_id)
        .set("acks", "all")
        .set("message.timeout.ms", TXN_MESSAGE_TIMEOUT_MS.to_string())
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let Some(init) = guard.run("init_transactions", INIT_TIMEOUT, None, || {
        producer.init_transactions(INIT_TIMEOUT)
    }) else {
        return Ok(());
    };
    init.context("init_transactions")?;
    let consumer: BaseConsumer<CtpContext> = client_config(&cfg.bootstrap)
        .set("group.id", CTP_GROUP)
        .set("isolation.level", Isolation::ReadCommitted.name())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "15000")
        .set("fetch.wait.max.ms", "200")
        .create_with_context(CtpContext {
            rebalances: AtomicU64::new(0),
        })
        .context("creating the consumer")?;
    consumer.subscribe(&[&cfg.topic]).context("subscribing")?;
    info(
        hist,
        name,
        format!("consume-transform-produce worker {txn_id} initialised"),
    );
    let ended = transactions(
        name, cfg, hist, stop, guard, committed, rt, &producer, &consumer,
    );
    // closing may wait for the coordinator: watched like any call
    guard.run("closing the clients", Duration::from_secs(15), None, || {
        drop(consumer);
        drop(producer);
    });
    ended
}

#[allow(clippy::too_many_arguments)]
fn transactions(
    name: &str,
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    stop: &AtomicBool,
    guard: &Guard,
    committed: &Mutex<BTreeMap<i32, i64>>,
    rt: &Handle,
    producer: &FutureProducer,
    consumer: &BaseConsumer<CtpContext>,
) -> Ended {
    let mut last_committed_read = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_committed_read.elapsed() >= COMMITTED_EVERY {
            last_committed_read = Instant::now();
            if !read_committed_offsets(name, hist, guard, consumer) {
                return Ok(());
            }
        }
        // a rebalance puts the positions back to the committed offsets: records gathered
        // before it are dropped (they will be read again)
        let rebalances = || consumer.context().rebalances.load(Ordering::Relaxed);
        let mut seen = rebalances();
        let mut batch: Vec<(i32, i64, String)> = Vec::new();
        let started = Instant::now();
        while batch.len() < MAX_BATCH && started.elapsed() < BATCH_WINDOW {
            // errors are transient here (a leader or coordinator moving); librdkafka retries
            let polled = consumer.poll(Duration::from_millis(100));
            if rebalances() != seen {
                seen = rebalances();
                batch.clear();
            }
            if let Some(Ok(m)) = polled {
                let value = m
                    .payload()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                batch.push((m.partition(), m.offset(), value));
            }
        }
        if guard.abandoned() {
            return Ok(());
        }
        if batch.is_empty() {
            continue;
        }
        // the generation the batch was read in (a later rebalance aborts the transaction)
        let Some(cgm) = consumer.group_metadata() else {
            bail!("no consumer group metadata");
        };
        let same_generation = || rebalances() == seen;
        let id = hist.next_id();
        let end = one_transaction(
            id,
            name,
            cfg,
            hist,
            guard,
            rt,
            producer,
            &batch,
            &cgm,
            &same_generation,
        )?;
        match end {
            TxnEnd::Committed(offsets) => {
                let mut c = committed.lock().unwrap_or_else(|p| p.into_inner());
                for (p, o) in offsets {
                    let e = c.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
            TxnEnd::Abandoned => return Ok(()),
        }
    }
    Ok(())
}

enum TxnEnd {
    /// Committed: input partition → the offset committed.
    Committed(BTreeMap<i32, i64>),
    /// The incarnation was abandoned during a call.
    Abandoned,
}

/// One transaction over `batch`; Err (after recording the outcome) when it did not commit:
/// the incarnation ends and its replacement starts from the committed offsets.
#[allow(clippy::too_many_arguments)]
fn one_transaction(
    id: u64,
    name: &str,
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    guard: &Guard,
    rt: &Handle,
    producer: &FutureProducer,
    batch: &[(i32, i64, String)],
    cgm: &rdkafka::consumer::ConsumerGroupMetadata,
    same_generation: &dyn Fn() -> bool,
) -> Result<TxnEnd> {
    let line = |kind: Kind, phase: Phase| hist.entry(kind, phase).id(id).worker(name);
    hist.write(&line(Kind::CtpTxn, Phase::Invoke).detail(format!("{} records", batch.len())));
    let unknown = |error: String| -> Result<TxnEnd> {
        hist.write(
            &line(Kind::CtpTxn, Phase::Fail)
                .detail("unknown")
                .error(&error),
        );
        bail!("transaction {id}: outcome unknown: {error}")
    };
    let Some(begun) = guard.run("begin_transaction", CALL_TIMEOUT, Some(id), || {
        producer.begin_transaction()
    }) else {
        return Ok(TxnEnd::Abandoned);
    };
    if let Err(e) = begun {
        return unknown(format!("begin_transaction: {e}"));
    }
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut futures = Vec::with_capacity(batch.len());
    let mut failed: Option<String> = None;
    for (p, o, value) in batch {
        let out = format!("{p}@{o}={value}");
        let rec: FutureRecord<'_, (), str> =
            FutureRecord::to(&cfg.ctp_topic).partition(*p).payload(&out);
        match producer.send_result(rec) {
            Ok(f) => futures.push(f),
            Err((e, _)) => {
                failed = Some(format!("not enqueued: {e}"));
                break;
            }
        }
        let n = next.entry(*p).or_insert(o + 1);
        *n = (*n).max(o + 1);
    }
    for f in futures {
        let answer = rt.block_on(async { tokio::time::timeout(DELIVERY_BOUND, f).await });
        match answer {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => {
                failed.get_or_insert(format!("send: {}", short_error(&e)));
            }
            Ok(Err(_)) | Err(_) => {
                failed.get_or_insert("send: no delivery report".into());
            }
        }
    }
    if failed.is_none() {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            hist.write(
                &line(Kind::CtpOffsets, Phase::Invoke)
                    .partition(*p)
                    .offset(*o),
            );
            tpl.add_partition_offset(&cfg.topic, *p, Offset::Offset(*o))?;
        }
        let Some(sent) = guard.run(
            "send_offsets_to_transaction",
            CALL_TIMEOUT,
            Some(id),
            || producer.send_offsets_to_transaction(&tpl, cgm, CALL_TIMEOUT),
        ) else {
            return Ok(TxnEnd::Abandoned);
        };
        match sent {
            Ok(()) => hist.write(&line(Kind::CtpOffsets, Phase::Ok)),
            Err(e) => {
                let err = short_error(&e);
                hist.write(&line(Kind::CtpOffsets, Phase::Fail).error(&err));
                failed = Some(format!("send_offsets_to_transaction: {err}"));
            }
        }
    }
    if failed.is_none() && !same_generation() {
        failed = Some("a rebalance during the transaction".into());
    }
    let end = if failed.is_none() { "commit" } else { "abort" };
    hist.write(&line(Kind::CtpEnd, Phase::Invoke).detail(end));
    let call = if failed.is_none() {
        "commit_transaction"
    } else {
        "abort_transaction"
    };
    let Some(answer) = guard.run(call, CALL_TIMEOUT, Some(id), || {
        if failed.is_none() {
            producer.commit_transaction(CALL_TIMEOUT)
        } else {
            producer.abort_transaction(CALL_TIMEOUT)
        }
    }) else {
        return Ok(TxnEnd::Abandoned);
    };
    match (answer, failed) {
        (Ok(()), None) => {
            hist.write(&line(Kind::CtpEnd, Phase::Ok).detail(end));
            hist.write(&line(Kind::CtpTxn, Phase::Ok).detail("committed"));
            for (p, o) in &next {
                hist.write(
                    &hist
                        .entry(Kind::Commit, Phase::Ok)
                        .id(id)
                        .worker(name)
                        .group(CTP_GROUP)
                        .partition(*p)
                        .offset(*o),
                );
            }
            Ok(TxnEnd::Committed(next))
        }
        (Ok(()), Some(why)) => {
            hist.write(&line(Kind::CtpEnd, Phase::Ok).detail(end));
            hist.write(&line(Kind::CtpTxn, Phase::Ok).detail("aborted").error(&why));
            bail!("transaction {id} aborted: {why}")
        }
        (Err(e), why) => {
            let err = short_error(&e);
            hist.write(&line(Kind::CtpEnd, Phase::Fail).detail(end).error(&err));
            match why {
                Some(why) => unknown(format!("{why}; abort_transaction: {err}")),
                None => unknown(format!("commit_transaction: {err}")),
            }
        }
    }
}

/// Reads the group's committed offsets (stable ones: the consumer is read_committed) as
/// `committed` lines; false if the incarnation was abandoned meanwhile.
fn read_committed_offsets(
    name: &str,
    hist: &HistoryWriter,
    guard: &Guard,
    consumer: &BaseConsumer<CtpContext>,
) -> bool {
    let timeout = Duration::from_secs(5);
    let id = hist.next_id();
    let line = |phase: Phase| {
        hist.entry(Kind::Committed, phase)
            .id(id)
            .worker(name)
            .group(CTP_GROUP)
    };
    hist.write(&line(Phase::Invoke));
    let Some(answer) = guard.run("committed", timeout, None, || consumer.committed(timeout)) else {
        return false;
    };
    match answer {
        Ok(tpl) => {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    hist.write(&line(Phase::Ok).partition(e.partition()).offset(o));
                }
            }
        }
        Err(e) => hist.write(&line(Phase::Fail).error(e.to_string())),
    }
    true
}

/// After the workers stopped: the group's committed offsets (`ctp_final_committed`, read
/// stable, retried until the bound) and the output topic read back read_committed.
pub fn final_read_ctp(cfg: &WorkloadConfig, hist: &HistoryWriter, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let reader: BaseConsumer = client_config(&cfg.bootstrap)
        .set("group.id", CTP_GROUP)
        .set("isolation.level", Isolation::ReadCommitted.name())
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the committed-offsets reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.partitions {
        tpl.add_partition(&cfg.topic, p);
    }
    let mut last = String::new();
    // bounded: until the deadline (an open transaction's offsets are unstable until it ends)
    let offsets = loop {
        match reader.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(t) => break Some(t),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let Some(offsets) = offsets else {
        bail!("the group's committed offsets: {last}");
    };
    for e in offsets.elements() {
        let o = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0, // nothing committed: the group starts from the beginning
        };
        hist.write(
            &hist
                .entry(Kind::CtpFinalCommitted, Phase::Ok)
                .group(CTP_GROUP)
                .partition(e.partition())
                .offset(o),
        );
    }
    drop(reader);

    let reader = |name: &str, isolation: Isolation| -> Result<BaseConsumer> {
        reader_config(cfg, name, isolation)
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            .create()
            .context("creating an output reader")
    };
    let out = reader("ctp-final-rc", Isolation::ReadCommitted)?;
    let out_ru = reader("ctp-final-ru", Isolation::ReadUncommitted)?;
    let lso_deadline = (Instant::now() + LSO_WAIT).min(deadline);
    let mut failures = Vec::new();
    for p in 0..cfg.partitions {
        wait_lso(&out, &out_ru, &cfg.ctp_topic, p, lso_deadline);
        if let Err(e) = read_to_end(
            &out,
            &cfg.ctp_topic,
            p,
            Isolation::ReadCommitted,
            (Kind::CtpFinalRead, Kind::CtpFinalEnd),
            hist,
            deadline,
        ) {
            info(
                hist,
                "final",
                format!("{} partition {p}: {e:#}", cfg.ctp_topic),
            );
            failures.push(p);
        }
    }
    if !failures.is_empty() {
        bail!(
            "read-back of {} failed for partitions {failures:?}",
            cfg.ctp_topic
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(dir: &std::path::Path) -> (Arc<HistoryWriter>, Guard) {
        let hist = Arc::new(HistoryWriter::create(&dir.join("h.jsonl")).expect("ok: create"));
        let g = Guard {
            state: Mutex::default(),
            hist: hist.clone(),
            name: "y0.0".into(),
        };
        (hist, g)
    }

    #[test]
    fn a_call_abandoned_while_it_runs_returns_nothing_and_its_late_answer_is_noted() {
        let dir = tempfile::tempdir().expect("ok: tempdir");
        let (hist, g) = guard(dir.path());
        assert_eq!(g.run("quick", Duration::from_secs(1), None, || 7), Some(7));
        std::thread::scope(|s| {
            let call = s.spawn(|| {
                g.run(
                    "send_offsets_to_transaction",
                    Duration::ZERO,
                    Some(3),
                    || {
                        std::thread::sleep(Duration::from_millis(300));
                        "late"
                    },
                )
            });
            // what the supervisor does once the deadline (timeout + grace) has passed
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut st = g.state.lock().expect("ok: lock");
                if let Some((what, _, txn)) = st.call {
                    assert_eq!((what, txn), ("send_offsets_to_transaction", Some(3)));
                    st.abandoned = true;
                    break;
                }
                drop(st);
                assert!(Instant::now() < deadline, "the call never started");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(call.join().expect("ok: join"), None);
        });
        // an abandoned incarnation starts no further call
        assert_eq!(g.run("begin_transaction", Duration::ZERO, None, || 1), None);
        hist.flush().expect("ok: flush");
        let (lines, _) = crate::history::read(&dir.path().join("h.jsonl")).expect("ok: read");
        let notes: Vec<&str> = lines.iter().filter_map(|e| e.detail.as_deref()).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("the abandoned send_offsets_to_transaction returned after"),
            "{notes:?}"
        );
        assert!(notes[0].ends_with("\"late\""), "{notes:?}");
    }
}
