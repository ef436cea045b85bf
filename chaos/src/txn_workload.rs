//! The transactional workload, through librdkafka and the proxies, on a topic of its own
//! (`chaos-txn`, as many partitions as `chaos`), so the idempotent workload's checks see no
//! control records or aborted data:
//!
//! - transactional producers (`transactional.id` `chaos-txn-<n>`), each a thread running
//!   transactions of 2–5 records over seeded partitions, committing ~3 in 4 and aborting
//!   the rest (seeded); a failed call makes the outcome unknown and the producer is
//!   replaced: `init_transactions` with the same id fences the old one and ends its open
//!   transaction. One transaction in 20 is abandoned on purpose (no end call, or one cut
//!   short) to run that path without faults. Values `x<n>.<incarnation>-<seq>`, the
//!   sequence rising per producer;
//! - a read_committed consumer by assignment, every partition from offset 0;
//! - the read-back after healing: read_committed (to the last stable offset) and then
//!   read_uncommitted (to the high watermark), each until its end stands still.
//!
//! ```text
//!  txn invoke (intent) ─► txn_send invoke/ok|fail per record ─► txn_end invoke (commit|abort)
//!    ─► txn_end ok|fail ─► txn ok (committed|aborted) | txn fail (unknown: producer replaced)
//! ```
//!
//! Invariants: a `txn_end` invoke with `commit` is written before `commit_transaction` is
//! called, so a transaction without one can never commit; every client call is bounded.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::history::{HistoryWriter, Isolation, Kind, Phase};
use crate::workload::{client_config, info, short_error, WorkloadConfig};

/// Bound of `init_transactions`.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of a commit or abort call: shorter than most faults' hold (2–8 s), so some
/// transactions end with their outcome unknown and the producer is replaced, fencing the
/// old one while its commit may still be under way (librdkafka would otherwise wait out
/// every fault and the recovery path would never run).
const END_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// One transaction in `ABANDON_ONE_IN` is abandoned, as a client that crashes would:
/// half of those before their end call, half with the end call cut short after
/// `ABANDONED_END_CALL` (the request may be out); the producer is then replaced, so the
/// fencing and recovery path runs even when no fault slows the coordinator.
const ABANDON_ONE_IN: u32 = 20;
const ABANDONED_END_CALL: Duration = Duration::from_millis(1);
/// librdkafka's bound on one transactional message (at most `transaction.timeout.ms`).
pub(crate) const TXN_MESSAGE_TIMEOUT_MS: u64 = 10_000;
/// The producers' `transaction.timeout.ms`: past it the coordinator aborts an open
/// transaction (bumping the epoch).
pub const TXN_TIMEOUT_MS: u64 = 15_000;
/// How often the brokers abort timed-out transactions (broker setting).
pub const TXN_CLEANUP_INTERVAL_MS: u64 = 1_000;
/// Pause between two transactions of one producer.
const TXN_PAUSE: Duration = Duration::from_millis(100);
/// How long the read-back waits for the last stable offset to reach the high watermark:
/// a transaction left open by a replaced producer is aborted by its coordinator within
/// `TXN_TIMEOUT_MS` + `TXN_CLEANUP_INTERVAL_MS`.
pub(crate) const LSO_WAIT: Duration =
    Duration::from_millis(TXN_TIMEOUT_MS + TXN_CLEANUP_INTERVAL_MS + 9_000);
/// Bound for joining a producer thread after the stop flag is set (a transaction under way
/// ends first: sends, then its end call, then possibly one replacement's init).
const JOIN_TIMEOUT: Duration =
    Duration::from_millis(TXN_MESSAGE_TIMEOUT_MS + 3 * TXN_CALL_TIMEOUT.as_millis() as u64);

/// The running transactional producers and read_committed reader.
pub struct TxnWorkloads {
    stop_producers: Arc<AtomicBool>,
    stop_readers: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl TxnWorkloads {
    pub fn start(cfg: &WorkloadConfig, hist: Arc<HistoryWriter>, rt: Handle) -> Result<Self> {
        let stop_producers = Arc::new(AtomicBool::new(false));
        let stop_readers = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for n in 0..cfg.txn_producers {
            let (cfg, hist, stop, rt) = (
                cfg.clone(),
                hist.clone(),
                stop_producers.clone(),
                rt.clone(),
            );
            producers.push(
                std::thread::Builder::new()
                    .name(format!("chaos-txn-{n}"))
                    .spawn(move || txn_producer(n, &cfg, &hist, &stop, &rt))?,
            );
        }
        let (cfg, hist, stop) = (cfg.clone(), hist.clone(), stop_readers.clone());
        let readers = vec![std::thread::Builder::new()
            .name("chaos-txn-read".into())
            .spawn(move || committed_reader("r0", &cfg, &hist, &stop))?];
        Ok(TxnWorkloads {
            stop_producers,
            stop_readers,
            producers,
            readers,
        })
    }

    /// Stops the producers; each ends the transaction it is in first (bounded).
    pub fn stop_producers(&mut self) {
        self.stop_producers.store(true, Ordering::Relaxed);
        join_bounded(&mut self.producers, JOIN_TIMEOUT);
    }

    pub fn stop_readers(&mut self) {
        self.stop_readers.store(true, Ordering::Relaxed);
        join_bounded(&mut self.readers, JOIN_TIMEOUT);
    }
}

impl Drop for TxnWorkloads {
    fn drop(&mut self) {
        self.stop_producers.store(true, Ordering::Relaxed);
        self.stop_readers.store(true, Ordering::Relaxed);
    }
}

/// Joins threads until `bound`; one still running is left detached (its stop flag is set).
fn join_bounded(threads: &mut Vec<JoinHandle<()>>, bound: Duration) {
    let deadline = Instant::now() + bound;
    for t in threads.drain(..) {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

fn make_txn_producer(cfg: &WorkloadConfig, txn_id: &str) -> Result<FutureProducer> {
    let p: FutureProducer = client_config(&cfg.bootstrap)
        .set("transactional.id", txn_id)
        .set("acks", "all")
        .set("message.timeout.ms", TXN_MESSAGE_TIMEOUT_MS.to_string())
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("linger.ms", "2")
        .create()
        .context("creating")?;
    p.init_transactions(TXN_CALL_TIMEOUT)
        .context("init_transactions")?;
    Ok(p)
}

fn txn_producer(
    n: usize,
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    stop: &AtomicBool,
    rt: &Handle,
) {
    let txn_id = format!("chaos-txn-{n}");
    // one stream per producer, apart from the fault schedule's
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ (0x7478_6e00 + n as u64));
    let mut incarnation = 0u32;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("x{n}.{incarnation}");
        incarnation += 1;
        let producer = match make_txn_producer(cfg, &txn_id) {
            Ok(p) => p,
            Err(e) => {
                info(
                    hist,
                    &name,
                    format!("transactional producer {txn_id}: {e:#}"),
                );
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        info(
            hist,
            &name,
            format!("transactional producer {txn_id} initialised"),
        );
        while !stop.load(Ordering::Relaxed) {
            if !one_transaction(&producer, &name, &mut seq, &mut rng, cfg, hist, rt) {
                info(
                    hist,
                    &name,
                    "outcome unknown; the producer is replaced".into(),
                );
                break;
            }
            std::thread::sleep(TXN_PAUSE);
        }
    }
}

/// Runs one transaction, recording it; false when its outcome is unknown (the producer
/// must be replaced).
fn one_transaction(
    p: &FutureProducer,
    name: &str,
    seq: &mut u64,
    rng: &mut StdRng,
    cfg: &WorkloadConfig,
    hist: &HistoryWriter,
    rt: &Handle,
) -> bool {
    let id = hist.next_id();
    let records = rng.random_range(2..=5);
    let intend_commit = rng.random_bool(0.75);
    let abandon = rng.random_range(0..ABANDON_ONE_IN) == 0;
    let abandon_before_end = rng.random_bool(0.5);
    let line = |kind: Kind, phase: Phase| hist.entry(kind, phase).id(id).worker(name);
    hist.write(&line(Kind::Txn, Phase::Invoke).detail(if intend_commit {
        "commit"
    } else {
        "abort"
    }));
    let unknown = |error: String| {
        hist.write(&line(Kind::Txn, Phase::Fail).detail("unknown").error(error));
        false
    };
    if let Err(e) = p.begin_transaction() {
        return unknown(format!("begin_transaction: {e}"));
    }
    let mut sent = Vec::with_capacity(records);
    let mut send_failed = false;
    for _ in 0..records {
        let part = rng.random_range(0..cfg.partitions);
        let value = format!("{name}-{seq}");
        *seq += 1;
        hist.write(
            &line(Kind::TxnSend, Phase::Invoke)
                .partition(part)
                .value(&value),
        );
        let rec: FutureRecord<'_, (), str> = FutureRecord::to(&cfg.txn_topic)
            .partition(part)
            .payload(&value);
        match p.send_result(rec) {
            Ok(fut) => sent.push((part, value, fut)),
            Err((e, _)) => {
                hist.write(
                    &line(Kind::TxnSend, Phase::Fail)
                        .partition(part)
                        .value(&value)
                        .error(format!("not enqueued: {e}")),
                );
                send_failed = true;
                break;
            }
        }
    }
    for (part, value, fut) in sent {
        let bound = Duration::from_millis(TXN_MESSAGE_TIMEOUT_MS + 10_000);
        let answer = rt.block_on(async { tokio::time::timeout(bound, fut).await });
        let e = line(Kind::TxnSend, Phase::Ok).partition(part).value(&value);
        match answer {
            Ok(Ok(Ok(d))) => hist.write(&e.offset(d.offset)),
            Ok(Ok(Err((err, _)))) => {
                send_failed = true;
                let mut e = e.error(short_error(&err));
                e.phase = Phase::Fail;
                hist.write(&e);
            }
            Ok(Err(_)) | Err(_) => {
                send_failed = true;
                let mut e = e.error("no delivery report");
                e.phase = Phase::Fail;
                hist.write(&e);
            }
        }
    }
    if abandon && abandon_before_end {
        return unknown("abandoned before its end call".into());
    }
    // a failed send leaves the transaction abortable: it is aborted, whatever was intended
    let commit = intend_commit && !send_failed;
    let end = if commit { "commit" } else { "abort" };
    let bound = if abandon {
        ABANDONED_END_CALL
    } else {
        END_CALL_TIMEOUT
    };
    hist.write(&line(Kind::TxnEnd, Phase::Invoke).detail(end));
    let answer = if commit {
        p.commit_transaction(bound)
    } else {
        p.abort_transaction(bound)
    };
    match answer {
        Ok(()) => {
            hist.write(&line(Kind::TxnEnd, Phase::Ok).detail(end));
            let seen = if commit { "committed" } else { "aborted" };
            hist.write(&line(Kind::Txn, Phase::Ok).detail(seen));
            true
        }
        Err(e) => {
            let err = short_error(&e);
            hist.write(&line(Kind::TxnEnd, Phase::Fail).detail(end).error(&err));
            unknown(format!("{end}: {err}"))
        }
    }
}

pub(crate) fn reader_config(
    cfg: &WorkloadConfig,
    name: &str,
    isolation: Isolation,
) -> rdkafka::ClientConfig {
    let mut c = client_config(&cfg.bootstrap);
    // librdkafka wants a group.id even for assign(); this one never joins or commits
    c.set("group.id", format!("{}-{name}-unused", cfg.group))
        .set("isolation.level", isolation.name())
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "200");
    c
}

/// A read_committed consumer by assignment, every partition from offset 0, recording
/// `txn_read` lines; a new session after each client restart.
fn committed_reader(name: &str, cfg: &WorkloadConfig, hist: &HistoryWriter, stop: &AtomicBool) {
    let mut session = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let consumer: BaseConsumer = match reader_config(cfg, name, Isolation::ReadCommitted)
            .set("auto.offset.reset", "earliest")
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                info(
                    hist,
                    name,
                    format!("creating a read_committed consumer: {e}"),
                );
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..cfg.partitions {
            let _ = tpl.add_partition_offset(&cfg.txn_topic, p, Offset::Beginning);
        }
        if let Err(e) = consumer.assign(&tpl) {
            info(hist, name, format!("assign: {e}"));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                crate::workload::record_read(hist, Kind::TxnRead, name, session, &m);
            }
        }
        session += 1;
    }
}

/// The transactional topic's read-back: read_committed first (an error if a partition
/// cannot be read), then read_uncommitted (failures only noted). Before reading a
/// partition read_committed, waits (bounded by `LSO_WAIT`) for its last stable offset to
/// reach its high watermark: producers are stopped, so only a transaction nobody will end
/// holds it back, and the checker judges that from the two ends.
pub fn final_read_txn(cfg: &WorkloadConfig, hist: &HistoryWriter, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let committed: BaseConsumer = reader_config(cfg, "final-rc", Isolation::ReadCommitted)
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .create()
        .context("creating the read_committed final reader")?;
    let uncommitted: BaseConsumer = reader_config(cfg, "final-ru", Isolation::ReadUncommitted)
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .create()
        .context("creating the read_uncommitted final reader")?;
    let lso_deadline = Instant::now() + LSO_WAIT;
    let mut failures = Vec::new();
    for p in 0..cfg.partitions {
        wait_lso(
            &committed,
            &uncommitted,
            &cfg.txn_topic,
            p,
            lso_deadline.min(deadline),
        );
        if let Err(e) = read_to_end(
            &committed,
            &cfg.txn_topic,
            p,
            Isolation::ReadCommitted,
            TXN_FINAL,
            hist,
            deadline,
        ) {
            info(
                hist,
                "final",
                format!("{} partition {p} read_committed: {e:#}", cfg.txn_topic),
            );
            failures.push(p);
        }
    }
    for p in 0..cfg.partitions {
        if let Err(e) = read_to_end(
            &uncommitted,
            &cfg.txn_topic,
            p,
            Isolation::ReadUncommitted,
            TXN_FINAL,
            hist,
            deadline,
        ) {
            info(
                hist,
                "final",
                format!("{} partition {p} read_uncommitted: {e:#}", cfg.txn_topic),
            );
        }
    }
    if !failures.is_empty() {
        bail!(
            "read_committed read-back of {} failed for partitions {failures:?}",
            cfg.txn_topic
        );
    }
    Ok(())
}

/// The line kinds of the transactional topic's read-back (records, end).
const TXN_FINAL: (Kind, Kind) = (Kind::TxnFinalRead, Kind::TxnFinalEnd);

/// Waits (until `until`) for partition `p` of `topic` to have its last stable offset (as
/// `committed`, a read_committed consumer, sees it) at its high watermark (as
/// `uncommitted` sees it): producers are stopped, so only a transaction nobody will end
/// holds it back, and the checker judges that from the two read-backs' ends.
pub(crate) fn wait_lso(
    committed: &BaseConsumer,
    uncommitted: &BaseConsumer,
    topic: &str,
    p: i32,
    until: Instant,
) {
    loop {
        let lso = committed.fetch_watermarks(topic, p, Duration::from_secs(5));
        let hw = uncommitted.fetch_watermarks(topic, p, Duration::from_secs(5));
        match (lso, hw) {
            (Ok((_, lso)), Ok((_, hw))) if lso >= hw => return,
            _ if Instant::now() >= until => return,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Reads partition `p` of `topic` from 0 until the end the consumer's isolation level
/// gives (the last stable offset, or the high watermark) stands still across a pass that
/// reached the partition's end (librdkafka's partition EOF: control records and aborted
/// data are skipped without being handed over, so the last offset read need not be
/// end − 1), writing `kinds.0` lines per record and a `kinds.1` line at the end.
pub(crate) fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    p: i32,
    isolation: Isolation,
    kinds: (Kind, Kind),
    hist: &HistoryWriter,
    deadline: Instant,
) -> Result<()> {
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut next = 0i64;
    // bounded: at most 10 passes, each until the deadline
    for _ in 0..10 {
        let end = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, end)) => break end,
                Err(e) if Instant::now() >= deadline => bail!("end offset: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(next))?;
        consumer.assign(&tpl)?;
        loop {
            if Instant::now() >= deadline {
                bail!("read only up to offset {next} of {end} in time");
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let o = m.offset();
                    if seen.insert(o) {
                        let value = m
                            .payload()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default();
                        hist.write(
                            &hist
                                .entry(kinds.0, Phase::Ok)
                                .partition(p)
                                .offset(o)
                                .value(value)
                                .isolation(isolation),
                        );
                    }
                    next = next.max(o + 1);
                }
                Some(Err(KafkaError::PartitionEOF(q))) if q == p => break,
                Some(Err(e)) => {
                    info(
                        hist,
                        "final",
                        format!("{topic} partition {p} at {next}: {e}"),
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                None => {}
            }
        }
        let again = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_or(-1, |(_, e)| e);
        if again == end && next <= end {
            hist.write(
                &hist
                    .entry(kinds.1, Phase::Ok)
                    .partition(p)
                    .offset(end)
                    .isolation(isolation),
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("the end offset kept moving")
}
