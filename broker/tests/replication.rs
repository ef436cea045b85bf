//! Partition replication under failures (issue 12), on three combined broker + controller
//! processes started by `deploy/local-cluster.sh`, with idempotent rdkafka producers
//! (acks=all), consumers and a consumer group.
//! Checked: every acknowledged record is read back exactly once, in order, at the offset it
//! was acknowledged with, through 20 kill -9s of partition leaders, while a consumer group
//! keeps consuming and its committed offsets survive the group coordinator's death; a
//! stopped follower leaves the ISR while acks=all goes on, then catches up and rejoins;
//! with two of three nodes down nothing is acknowledged and consumers never see past the
//! high watermark; a leader's unreplicated suffix is truncated when it rejoins under a new
//! leader (the replicas end byte-identical); a deposed leader never acknowledges records
//! its successor does not have; an idempotent batch appended and replicated but whose
//! acknowledgement was lost, retried against the new leader, is not appended again.
//! The exactly-once check itself is tested on made-up logs (duplicates, moved records,
//! gaps, reordering), so a duplicate from a retried batch would be caught.
//! Every wait is bounded; a failing test shows every node's log tail (the `Cluster` drop).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::cluster::{ensure_same, wait_for, Cluster, MetadataView, FAST_SETTINGS};
use common::{block_on, consume_until};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};

/// Bound for metadata to converge after a change (fencing takes ~2 s with FAST_SETTINGS).
const CONVERGE: Duration = Duration::from_secs(30);
/// Bound for an admin change to succeed while the quorum recovers.
const CHANGE: Duration = Duration::from_secs(20);
/// The internal offsets topic.
const OFFSETS: &str = "__consumer_offsets";

/// FAST_SETTINGS plus min.insync.replicas=2 for every topic.
fn settings() -> Vec<(&'static str, &'static str)> {
    let mut s = FAST_SETTINGS.to_vec();
    s.push(("min.insync.replicas", "2"));
    s
}

fn rf3(name: &str, partitions: i32) -> NewTopic<'_> {
    NewTopic::new(name, partitions, TopicReplication::Fixed(3))
}

// ----------------------------------------------------------------------------------------
// Metadata helpers.

/// Every partition of `name` in `v` is led, error-free, with its whole replica set (3
/// replicas) in the ISR and nothing offline.
fn ensure_settled(v: &MetadataView, name: &str, partitions: usize) -> Result<()> {
    let t = v.topic(name)?;
    ensure!(
        t.error == 0 && t.partitions.len() == partitions,
        "node {}: topic {name}: error {}, {} partitions (want {partitions})",
        v.from,
        t.error,
        t.partitions.len()
    );
    for p in &t.partitions {
        let replicas: BTreeSet<i32> = p.replicas.iter().copied().collect();
        let isr: BTreeSet<i32> = p.isr.iter().copied().collect();
        ensure!(
            p.error == 0
                && p.leader >= 0
                && replicas.len() == 3
                && replicas == isr
                && p.offline.is_empty(),
            "node {}: {name}-{}: leader {} (epoch {}), error {}, replicas {:?}, isr {:?}, offline {:?}",
            v.from,
            p.partition,
            p.leader,
            p.leader_epoch,
            p.error,
            p.replicas,
            p.isr,
            p.offline
        );
    }
    Ok(())
}

/// Waits until every node in `ids` shows each of `topics` (name, partitions) settled
/// (led, RF 3, full ISR) and all of them agree.
fn wait_settled(
    cluster: &Cluster,
    ids: &[u32],
    topics: &[(&str, usize)],
    within: Duration,
) -> Result<Vec<MetadataView>> {
    cluster.wait_views("topics settled (led, full ISR)", ids, within, |views| {
        for v in views {
            for (name, n) in topics {
                ensure_settled(v, name, *n)?;
            }
        }
        ensure_same(views)
    })
}

/// (leader, leader epoch) of `topic`-`partition` as node `from` sees it.
fn leader_of(cluster: &Cluster, from: u32, topic: &str, partition: i32) -> Result<(u32, i32)> {
    let v = cluster.view(from)?;
    let t = v.topic(topic)?;
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .with_context(|| format!("node {from}: no {topic}-{partition}"))?;
    ensure!(
        p.leader >= 0,
        "node {from}: {topic}-{partition} has no leader"
    );
    Ok((p.leader as u32, p.leader_epoch))
}

/// Waits until every node in `ids` names a leader of `topic`-`partition` other than
/// `old`, with an epoch above `old_epoch`; returns (leader, epoch).
fn wait_new_leader(
    cluster: &Cluster,
    ids: &[u32],
    topic: &str,
    partition: i32,
    old: u32,
    old_epoch: i32,
) -> Result<(u32, i32)> {
    let views = cluster.wait_views(
        &format!("a new leader of {topic}-{partition} (not node {old})"),
        ids,
        CONVERGE,
        |views| {
            for v in views {
                let p = v
                    .topic(topic)?
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .cloned()
                    .context("no such partition")?;
                ensure!(
                    p.leader >= 0 && p.leader != old as i32 && p.leader_epoch > old_epoch,
                    "node {}: {topic}-{partition} led by {} at epoch {} (old: {old} at {old_epoch})",
                    v.from,
                    p.leader,
                    p.leader_epoch
                );
            }
            ensure_same(views)
        },
    )?;
    let p = views[0]
        .topic(topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .cloned()
        .context("no such partition")?;
    Ok((p.leader as u32, p.leader_epoch))
}

/// The node coordinating `group` (FindCoordinator v2 to node `ask`).
fn coordinator_of(cluster: &Cluster, ask: u32, group: &str) -> Result<u32> {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    let mut c = common::raw::RawClient::connect(cluster.kafka_addr(ask))?;
    c.negotiate()?;
    let resp = c.call(
        2,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())),
    )?;
    ensure!(
        resp.error_code == 0 && resp.node_id.0 >= 0,
        "FindCoordinator {group} via node {ask}: error {}, node {}",
        resp.error_code,
        resp.node_id.0
    );
    Ok(resp.node_id.0 as u32)
}

/// The error of a Heartbeat (v4, an unknown member) for `group` sent to node `node`.
fn heartbeat_error(cluster: &Cluster, node: u32, group: &str) -> Result<i16> {
    use kafka_protocol::messages::{GroupId, HeartbeatRequest};
    use kafka_protocol::protocol::StrBytes;
    let mut c = common::raw::RawClient::connect(cluster.kafka_addr(node))?;
    c.negotiate()?;
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id(1)
        .with_member_id(StrBytes::from_static_str("nobody"));
    Ok(c.call(4, &req)?.error_code)
}

// ----------------------------------------------------------------------------------------
// Files.

/// The partition's segment files on node `id`, concatenated in offset order, without the
/// zero tail of the last direct-I/O page (recovery after kill -9 cuts that tail; a running
/// replica keeps it).
fn segments(cluster: &Cluster, id: u32, topic: &str, partition: i32) -> Vec<u8> {
    let dir = cluster
        .node_dir(id)
        .join(format!("data/{topic}-{partition}"));
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut bytes = Vec::new();
    for n in names {
        bytes.extend(std::fs::read(n).unwrap_or_default());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Waits until every node holds the same bytes for every partition of `topic`.
fn wait_identical_replicas(cluster: &Cluster, topic: &str, partitions: i32) -> Result<()> {
    wait_for(
        &format!("every replica of {topic} to hold the same bytes"),
        CONVERGE,
        || {
            for p in 0..partitions {
                let copies: Vec<Vec<u8>> = cluster
                    .ids()
                    .into_iter()
                    .map(|id| segments(cluster, id, topic, p))
                    .collect();
                ensure!(!copies[0].is_empty(), "{topic}-{p} is empty on node 1");
                let lens: Vec<usize> = copies.iter().map(Vec::len).collect();
                ensure!(
                    copies.iter().all(|c| *c == copies[0]),
                    "{topic}-{p} differs between replicas (lengths by node {lens:?})"
                );
            }
            Ok(Some(()))
        },
    )
}

/// No node logged a panic.
fn ensure_no_panics(cluster: &Cluster) -> Result<()> {
    for id in cluster.ids() {
        let log = cluster.log(id);
        ensure!(
            !log.contains("panicked"),
            "node {id} logged a panic:\n{}",
            cluster.log_tail(id, 60)
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Records and the exactly-once check.

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A test record's payload: `<tag>/<seq>/<filler>`; seq is unique per producer run.
fn payload(tag: &str, seq: u64) -> String {
    format!("{tag}/{seq:08}/{}", "x".repeat(40 + (seq % 23) as usize))
}

/// (tag, seq) out of a `payload`.
fn parse_payload(bytes: &[u8]) -> Result<(String, u64)> {
    let s = std::str::from_utf8(bytes).context("payload is not UTF-8")?;
    let mut it = s.split('/');
    let (Some(tag), Some(seq)) = (it.next(), it.next()) else {
        bail!("not a test payload: {s:?}");
    };
    Ok((tag.to_string(), seq.parse().context("bad seq")?))
}

/// What the producer was told about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged at this offset.
    Acked(i64),
    /// Failed (error code, message).
    Failed(Option<RDKafkaErrorCode>, String),
}

/// One record sent: its partition and its delivery outcome (None: no report yet).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    tag: String,
    partition: i32,
    outcome: Option<Outcome>,
}

/// What the check found.
#[derive(Debug, Default)]
struct Summary {
    acked: usize,
    failed: usize,
    /// Failed records that are in the log anyway (a timed-out write may land).
    failed_present: usize,
    /// Acknowledged records librdkafka reported without an offset (found in the log).
    acked_without_offset: usize,
    /// Records per partition in the log.
    log_len: BTreeMap<i32, usize>,
}

/// A partition's records as read from its start: offset → payload. Reading the same
/// offset twice must give the same payload.
type PartitionLog = BTreeMap<i64, Vec<u8>>;

/// Builds each partition's offset → payload map from consumed records.
fn by_offset(records: &[common::Consumed]) -> Result<BTreeMap<i32, PartitionLog>> {
    let mut out: BTreeMap<i32, PartitionLog> = BTreeMap::new();
    for r in records {
        let p = r.payload.clone().unwrap_or_default();
        let slot = out.entry(r.partition).or_default();
        if let Some(prev) = slot.get(&r.offset) {
            ensure!(
                *prev == p,
                "partition {} offset {} read twice with different records: {:?} then {:?}",
                r.partition,
                r.offset,
                String::from_utf8_lossy(prev),
                String::from_utf8_lossy(&p)
            );
        }
        slot.insert(r.offset, p);
    }
    Ok(out)
}

/// The exactly-once check: `sent` is indexed by seq (every record of the tags in it was
/// sent by these producers); `log` is every partition read from offset 0 to its high
/// watermark. Every record in the log is one of ours, in the partition it was sent to,
/// at most once; offsets have no gaps; every acknowledged record is at the offset it was
/// acknowledged with (one acknowledged without an offset, as librdkafka's implicit acks
/// are, anywhere in its partition), and acknowledged offsets grow with seq within a
/// partition (the producer's order). A failed record may be in the log (once).
fn check_exactly_once(
    sent: &BTreeMap<u64, Sent>,
    log: &BTreeMap<i32, PartitionLog>,
    partitions: i32,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut seen: BTreeMap<u64, (i32, i64)> = BTreeMap::new();
    for p in 0..partitions {
        let records = log.get(&p).cloned().unwrap_or_default();
        for (i, (offset, bytes)) in records.iter().enumerate() {
            ensure!(
                *offset == i as i64,
                "partition {p}: a gap in the offsets: the record after {} is at {offset}",
                i as i64 - 1
            );
            let (tag, seq) = parse_payload(bytes)?;
            let s = sent.get(&seq).with_context(|| {
                format!("partition {p} offset {offset}: record {tag}/{seq} was never sent")
            })?;
            ensure!(
                s.tag == tag,
                "partition {p} offset {offset}: {tag}/{seq}, but seq {seq} was sent as {}",
                s.tag
            );
            ensure!(
                s.partition == p,
                "partition {p} offset {offset}: {tag}/{seq} was sent to partition {}",
                s.partition
            );
            if let Some((q, first)) = seen.insert(seq, (p, *offset)) {
                bail!("DUPLICATE: {tag}/{seq} is in partition {q} at offset {first} and in partition {p} at offset {offset}");
            }
        }
        summary.log_len.insert(p, records.len());
    }
    let mut last_acked: BTreeMap<i32, (u64, i64)> = BTreeMap::new();
    for (seq, s) in sent {
        match &s.outcome {
            None => bail!("{}/{seq}: no delivery report", s.tag),
            Some(Outcome::Failed(..)) => {
                summary.failed += 1;
                if seen.contains_key(seq) {
                    summary.failed_present += 1;
                }
            }
            Some(Outcome::Acked(acked_at)) => {
                summary.acked += 1;
                // librdkafka acknowledges a batch without an offset (-1001) when a later
                // batch of the same producer is acknowledged while this one waits to be
                // sent again (`rd_kafka_dr_implicit_ack`: the old leader stored it and its
                // answer was lost): such a record must be in its partition once, in order
                let implicit = seen
                    .get(seq)
                    .filter(|(p, _)| *acked_at < 0 && *p == s.partition)
                    .map(|(_, at)| *at);
                if implicit.is_some() {
                    summary.acked_without_offset += 1;
                }
                let offset = &implicit.unwrap_or(*acked_at);
                match seen.get(seq) {
                    Some((p, at)) if *p == s.partition && at == offset => {}
                    Some((p, at)) => bail!(
                        "{}/{seq} was acknowledged at {}-{offset} but is at {p}-{at}",
                        s.tag,
                        s.partition
                    ),
                    None => {
                        let there = log
                            .get(&s.partition)
                            .and_then(|l| l.get(offset))
                            .map(|b| String::from_utf8_lossy(b).into_owned());
                        bail!(
                            "LOST: {}/{seq} was acknowledged at {}-{offset}, but the log has {there:?} there",
                            s.tag,
                            s.partition
                        )
                    }
                }
                if let Some((prev_seq, prev_off)) = last_acked.get(&s.partition) {
                    ensure!(
                        prev_off < offset,
                        "out of order in partition {}: seq {prev_seq} acknowledged at {prev_off}, later seq {seq} at {offset}",
                        s.partition
                    );
                }
                last_acked.insert(s.partition, (*seq, *offset));
            }
        }
    }
    Ok(summary)
}

/// Reads every partition of `topic` from offset 0 up to its high watermark (waiting until
/// that covers `at_least[p]`), through the brokers `ids`.
fn read_all(
    cluster: &Cluster,
    ids: &[u32],
    topic: &str,
    at_least: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, PartitionLog>> {
    let consumer: BaseConsumer = Cluster::client_config(&cluster.bootstrap_of(ids))
        .set("group.id", "replication-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "200")
        .create()?;
    let mut highs = BTreeMap::new();
    for (p, want) in at_least {
        let high = wait_for(&format!("{topic}-{p}'s high watermark"), CONVERGE, || {
            let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5))?;
            ensure!(high >= *want, "{topic}-{p}: high watermark {high} < {want}");
            Ok(Some(high))
        })?;
        highs.insert(*p, high);
    }
    let got = consume_until(&consumer, topic, &highs, Duration::from_secs(60))?;
    let mut log = by_offset(&got)?;
    // consume_until may deliver past the high watermark it was given if it moved meanwhile
    for (p, l) in log.iter_mut() {
        l.retain(|o, _| *o < highs[p]);
    }
    Ok(log)
}

/// The high watermark every partition must reach: past every acknowledged offset.
fn acked_ends(sent: &BTreeMap<u64, Sent>, partitions: i32) -> BTreeMap<i32, i64> {
    let mut out: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for s in sent.values() {
        if let Some(Outcome::Acked(o)) = s.outcome {
            let e = out.entry(s.partition).or_default();
            *e = (*e).max(o + 1);
        }
    }
    out
}

// ----------------------------------------------------------------------------------------
// A producer running in the background.

/// Delivery reports of a `ThreadedProducer`, by seq (the delivery opaque).
#[derive(Default)]
struct Reports {
    outcomes: Mutex<BTreeMap<u64, (i32, Outcome)>>,
    acked: AtomicU64,
    /// Produce requests the client sent again (librdkafka's statistics, every second).
    retries: AtomicU64,
    /// Messages transmitted, retransmissions included (librdkafka's statistics).
    transmitted: AtomicU64,
    /// Statistics reports received.
    stats: AtomicU64,
}

impl Reports {
    fn record(&self, result: &DeliveryResult<'_>, seq: usize) {
        let (partition, outcome) = match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::SeqCst);
                (m.partition(), Outcome::Acked(m.offset()))
            }
            Err((e, m)) => (
                m.partition(),
                Outcome::Failed(e.rdkafka_error_code(), e.to_string()),
            ),
        };
        if let Ok(mut o) = self.outcomes.lock() {
            o.insert(seq as u64, (partition, outcome));
        }
    }
}

/// Idempotent producer config: acks=all, a message timeout longer than any failover.
fn idempotent_config(bootstrap: &str, message_timeout_ms: &str) -> rdkafka::ClientConfig {
    let mut cfg = Cluster::client_config(bootstrap);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout_ms)
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500");
    cfg
}

/// Sends one record every `interval` to the partitions of `topic` in turn, from a thread,
/// with an idempotent producer, until stopped.
struct Load {
    tag: String,
    reports: Arc<Reports>,
    sent: Arc<Mutex<BTreeMap<u64, i32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Load {
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        tag: &str,
        interval: Duration,
    ) -> Result<Self> {
        let reports = Arc::new(Reports::default());
        let producer: ThreadedProducer<ArcReports> = idempotent_config(bootstrap, "120000")
            .set("statistics.interval.ms", "1000")
            .create_with_context(ArcReports(reports.clone()))?;
        let sent: Arc<Mutex<BTreeMap<u64, i32>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, tag_s) = (topic.to_string(), tag.to_string());
        let (sent2, stop2) = (sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut seq: u64 = 0;
            while !stop2.load(Ordering::SeqCst) {
                let p = (seq % partitions as u64) as i32;
                let value = payload(&tag_s, seq);
                let mut record = BaseRecord::<(), str, usize>::with_opaque_to(&topic, seq as usize)
                    .partition(p)
                    .payload(&value);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, r))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                                && Instant::now() < deadline =>
                        {
                            record = r;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err((e, _)) => bail!("enqueueing {tag_s}/{seq}: {e}"),
                    }
                }
                if let Ok(mut s) = sent2.lock() {
                    s.insert(seq, p);
                }
                seq += 1;
                std::thread::sleep(interval);
            }
            producer
                .flush(Duration::from_secs(130))
                .context("flushing the producer")?;
            // one more statistics report, covering every transmission
            std::thread::sleep(Duration::from_millis(1200));
            Ok(())
        });
        Ok(Load {
            tag: tag.to_string(),
            reports,
            sent,
            stop,
            thread: Some(thread),
        })
    }

    fn acked(&self) -> u64 {
        self.reports.acked.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` more records than `from` were acknowledged.
    fn wait_acked(&self, from: u64, n: u64, within: Duration) -> Result<()> {
        wait_for(
            &format!("{n} more acknowledgements (after {from})"),
            within,
            || {
                let now = self.acked();
                ensure!(now >= from + n, "{} acknowledged so far", now);
                Ok(Some(()))
            },
        )
    }

    /// Stops sending, waits for every delivery report; returns every record sent.
    fn finish(mut self) -> Result<BTreeMap<u64, Sent>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
        }
        let outcomes = self
            .reports
            .outcomes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let sent = self
            .sent
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let mut out = BTreeMap::new();
        for (seq, partition) in sent {
            let outcome = outcomes.get(&seq).map(|(_, o)| o.clone());
            if let Some((reported, Outcome::Acked(o))) = outcomes.get(&seq) {
                ensure!(
                    *reported == partition,
                    "{}/{seq} was sent to partition {partition}, acknowledged at {reported}-{o}",
                    self.tag
                );
            }
            out.insert(
                seq,
                Sent {
                    tag: self.tag.clone(),
                    partition,
                    outcome,
                },
            );
        }
        Ok(out)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `Reports` shared with the test (rdkafka owns the context).
struct ArcReports(Arc<Reports>);

impl ClientContext for ArcReports {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let retries: u64 = statistics.brokers.values().map(|b| b.txretries).sum();
        self.0.retries.fetch_max(retries, Ordering::SeqCst);
        self.0
            .transmitted
            .fetch_max(statistics.txmsgs.max(0) as u64, Ordering::SeqCst);
        self.0.stats.fetch_add(1, Ordering::SeqCst);
    }
}

impl ProducerContext for ArcReports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        self.0.record(result, seq);
    }
}

/// Failed deliveries, for messages.
fn failures(sent: &BTreeMap<u64, Sent>) -> Vec<String> {
    sent.iter()
        .filter_map(|(seq, s)| match &s.outcome {
            Some(Outcome::Failed(code, msg)) => Some(format!(
                "{}/{seq} (partition {}): {code:?} {msg}",
                s.tag, s.partition
            )),
            _ => None,
        })
        .collect()
}

/// A plain producer (not idempotent) with `acks` and no retries, through `bootstrap`.
fn plain_producer(bootstrap: &str, acks: &str, timeout_ms: &str) -> Result<FutureProducer> {
    Ok(Cluster::client_config(bootstrap)
        .set("enable.idempotence", "false")
        .set("acks", acks)
        .set("retries", "0")
        .set("linger.ms", "0")
        .set("message.timeout.ms", timeout_ms)
        .set("socket.timeout.ms", timeout_ms)
        .set("request.timeout.ms", timeout_ms)
        .create()?)
}

/// Sends `values` to `topic`-`partition` one at a time with `producer`; returns each
/// record's outcome.
fn send_each(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    values: &[String],
) -> Vec<Outcome> {
    values
        .iter()
        .map(|v| {
            let r = block_on(
                producer.send(
                    FutureRecord::<(), str>::to(topic)
                        .partition(partition)
                        .payload(v),
                    Duration::from_secs(60),
                ),
            );
            match r {
                Ok(d) => Outcome::Acked(d.offset),
                Err((e, _)) => Outcome::Failed(e.rdkafka_error_code(), e.to_string()),
            }
        })
        .collect()
}

/// Sends records `seqs` tagged `tag` to the partitions of `topic` in turn, all at once, and
/// waits (bounded) for every delivery report; adds them to `sent`; returns their seqs.
fn send_tagged(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    tag: &str,
    seqs: std::ops::Range<u64>,
    sent: &mut BTreeMap<u64, Sent>,
) -> Result<Vec<u64>> {
    let mut futures = Vec::new();
    for seq in seqs.clone() {
        let partition = (seq % partitions as u64) as i32;
        let value = payload(tag, seq);
        let record = FutureRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(&value);
        match producer.send_result(record) {
            Ok(f) => futures.push((seq, partition, f)),
            Err((e, _)) => bail!("enqueueing {tag}/{seq}: {e}"),
        }
    }
    block_on(async {
        for (seq, partition, f) in futures {
            let outcome = match tokio::time::timeout(Duration::from_secs(90), f).await {
                Err(_) => bail!("no delivery report for {tag}/{seq} in 90 s"),
                Ok(Err(_)) => bail!("the producer dropped {tag}/{seq}"),
                Ok(Ok(Ok(d))) => Outcome::Acked(d.offset),
                Ok(Ok(Err((e, _)))) => Outcome::Failed(e.rdkafka_error_code(), e.to_string()),
            };
            sent.insert(
                seq,
                Sent {
                    tag: tag.to_string(),
                    partition,
                    outcome: Some(outcome),
                },
            );
        }
        Ok(())
    })?;
    Ok(seqs.collect())
}

// ----------------------------------------------------------------------------------------
// A consumer group member running in the background.

/// What a group member shares with the test: the number of successful commits and the
/// tail of its rdkafka log (debug "cgrp").
#[derive(Default)]
struct GroupShared {
    commits_ok: AtomicU64,
    log: Mutex<std::collections::VecDeque<String>>,
}

/// Lines of a group member's rdkafka log kept for a failure message.
const CLIENT_LOG_LINES: usize = 300;

#[derive(Default)]
struct GroupCtx(Arc<GroupShared>);

impl ClientContext for GroupCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if let Ok(mut l) = self.0.log.lock() {
            if l.len() >= CLIENT_LOG_LINES {
                l.pop_front();
            }
            let t = chrono_like_now();
            let line = format!("{t} {level:?} {fac}: {message}");
            if let Some(dir) = std::env::var_os("SLUICE_TEST_KEEP_LOGS") {
                use std::io::Write as _;
                let path = Path::new(&dir).join(format!("group-client-{}.log", std::process::id()));
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
            l.push_back(line);
        }
    }
}

/// Seconds.millis since the Unix epoch, for client log lines.
fn chrono_like_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

impl ConsumerContext for GroupCtx {}

/// What a group member read and committed.
#[derive(Debug, Default)]
struct GroupRun {
    /// (partition, offset, payload) in the order read.
    read: Vec<(i32, i64, Vec<u8>)>,
    /// The last commit that succeeded (partition → next offset to read).
    committed: BTreeMap<i32, i64>,
    commits_ok: usize,
    commit_errors: Vec<String>,
    consume_errors: Vec<String>,
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer<GroupCtx>> {
    Ok(Cluster::client_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "200")
        .set("enable.partition.eof", "false")
        .set("debug", "cgrp")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug)
        .create_with_context(GroupCtx::default())?)
}

/// Subscribes to `topic` in `group` from a thread, reads, and commits what it read every
/// 300 ms until stopped; then commits until one succeeds (bounded).
struct GroupMember {
    shared: Arc<GroupShared>,
    stop: Arc<AtomicBool>,
    read_count: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<GroupRun>>>,
}

impl GroupMember {
    fn start(bootstrap: &str, group: &str, topic: &str) -> Result<Self> {
        let consumer = group_consumer(bootstrap, group)?;
        let shared = consumer.context().0.clone();
        consumer.subscribe(&[topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let read_count = Arc::new(AtomicU64::new(0));
        let (stop2, count2, topic) = (stop.clone(), read_count.clone(), topic.to_string());
        let shared2 = shared.clone();
        let thread = std::thread::spawn(move || -> Result<GroupRun> {
            let shared = shared2;
            let mut run = GroupRun::default();
            let mut position: BTreeMap<i32, i64> = BTreeMap::new();
            let mut last_commit = Instant::now();
            // synchronous commits (rdkafka bounds each by its socket timeout); a failed
            // one is kept as an error and retried at the next interval
            let commit = |run: &mut GroupRun, position: &BTreeMap<i32, i64>| {
                let mut tpl = TopicPartitionList::new();
                for (p, o) in position {
                    if let Err(e) = tpl.add_partition_offset(&topic, *p, Offset::Offset(*o)) {
                        run.commit_errors.push(e.to_string());
                        return;
                    }
                }
                match consumer.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => {
                        run.commits_ok += 1;
                        shared.commits_ok.fetch_add(1, Ordering::SeqCst);
                        run.committed = position.clone();
                    }
                    Err(e) => run.commit_errors.push(e.to_string()),
                }
            };
            while !stop2.load(Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(e)) => run.consume_errors.push(e.to_string()),
                    Some(Ok(m)) => {
                        let bytes = m.payload().unwrap_or_default().to_vec();
                        run.read.push((m.partition(), m.offset(), bytes));
                        position.insert(m.partition(), m.offset() + 1);
                        count2.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if last_commit.elapsed() >= Duration::from_millis(300)
                    && !position.is_empty()
                    && run.committed != position
                {
                    commit(&mut run, &position);
                    last_commit = Instant::now();
                }
            }
            // the final commit: the position reached, until one commit of it succeeds
            let final_from = Instant::now();
            let deadline = final_from + Duration::from_secs(30);
            while run.committed != position {
                ensure!(
                    Instant::now() < deadline,
                    "the final commit of {position:?} did not succeed in 30 s; last committed {:?}; errors {:?}",
                    run.committed,
                    run.commit_errors
                );
                commit(&mut run, &position);
                if run.committed != position {
                    let _ = consumer.poll(Duration::from_millis(500));
                }
            }
            eprintln!(
                "the final commit took {:?} ({} commit errors in all)",
                final_from.elapsed(),
                run.commit_errors.len()
            );
            drop(consumer); // leaves the group
            Ok(run)
        });
        Ok(GroupMember {
            shared,
            stop,
            read_count,
            thread: Some(thread),
        })
    }

    fn read(&self) -> u64 {
        self.read_count.load(Ordering::SeqCst)
    }

    fn commits_ok(&self) -> u64 {
        self.shared.commits_ok.load(Ordering::SeqCst)
    }

    /// The tail of the member's rdkafka log.
    fn client_log(&self) -> String {
        self.client_log_tail(CLIENT_LOG_LINES)
    }

    /// The member's last `lines` rdkafka log lines.
    fn client_log_tail(&self, lines: usize) -> String {
        self.shared
            .log
            .lock()
            .map(|l| {
                let from = l.len().saturating_sub(lines);
                l.iter().skip(from).cloned().collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default()
    }

    /// Stops the member; on failure the error carries its rdkafka log tail.
    fn finish(mut self) -> Result<GroupRun> {
        self.stop.store(true, Ordering::SeqCst);
        let run = match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the group member's thread panicked"))?,
            None => bail!("already finished"),
        };
        run.with_context(|| format!("group member's rdkafka log:\n{}", self.client_log()))
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ----------------------------------------------------------------------------------------
// Tests.

/// The exactly-once check catches what replication bugs would produce: a duplicate of a
/// retried batch, an acknowledged record missing or at another offset, a gap, reordering,
/// a record in the wrong partition; and accepts a failed record that landed once.
#[test]
fn exactly_once_check_catches_duplicates_losses_and_moves() -> Result<()> {
    let sent_one = |p: i32, outcome: Outcome| Sent {
        tag: "t".into(),
        partition: p,
        outcome: Some(outcome),
    };
    let sent: BTreeMap<u64, Sent> = BTreeMap::from([
        (0, sent_one(0, Outcome::Acked(0))),
        (1, sent_one(1, Outcome::Acked(0))),
        (2, sent_one(0, Outcome::Acked(1))),
        (3, sent_one(1, Outcome::Failed(None, "timed out".into()))),
        (4, sent_one(0, Outcome::Acked(2))),
    ]);
    let log_of = |parts: &[&[u64]]| -> BTreeMap<i32, PartitionLog> {
        parts
            .iter()
            .enumerate()
            .map(|(p, seqs)| {
                let l = seqs
                    .iter()
                    .enumerate()
                    .map(|(o, s)| (o as i64, payload("t", *s).into_bytes()))
                    .collect();
                (p as i32, l)
            })
            .collect()
    };
    let good = check_exactly_once(&sent, &log_of(&[&[0, 2, 4], &[1, 3]]), 2)?;
    ensure!(
        good.acked == 4 && good.failed == 1 && good.failed_present == 1,
        "{good:?}"
    );
    check_exactly_once(&sent, &log_of(&[&[0, 2, 4], &[1]]), 2)?;
    let bad: &[(&str, &[&[u64]])] = &[
        ("duplicate of a retried batch", &[&[0, 2, 2, 4], &[1]]),
        ("duplicate at the end", &[&[0, 2, 4, 4], &[1]]),
        ("acknowledged record lost", &[&[0, 4], &[1]]),
        ("acknowledged record replaced", &[&[0, 2, 3], &[1]]),
        ("reordered", &[&[2, 0, 4], &[1]]),
        ("wrong partition", &[&[0, 2, 4], &[1, 4]]),
        ("failed record twice", &[&[0, 2, 4], &[1, 3, 3]]),
    ];
    for (what, parts) in bad {
        let got = check_exactly_once(&sent, &log_of(parts), 2);
        ensure!(got.is_err(), "{what}: the check passed: {got:?}");
    }
    let mut gap = log_of(&[&[0, 2, 4], &[1]]);
    gap.get_mut(&0).map(|l| l.remove(&1));
    ensure!(check_exactly_once(&sent, &gap, 2).is_err(), "a gap passed");

    // seq 2 acknowledged implicitly (librdkafka: offset -1001) once seq 4 was
    let mut implicit = sent;
    implicit.insert(2, sent_one(0, Outcome::Acked(-1001)));
    let good = check_exactly_once(&implicit, &log_of(&[&[0, 2, 4], &[1, 3]]), 2)?;
    ensure!(
        good.acked == 4 && good.acked_without_offset == 1,
        "{good:?}"
    );
    let bad: &[(&str, &[&[u64]])] = &[
        ("implicitly acknowledged record lost", &[&[0, 4], &[1]]),
        (
            "implicitly acknowledged record twice",
            &[&[0, 2, 2, 4], &[1]],
        ),
        (
            "implicitly acknowledged record in the wrong partition",
            &[&[0, 4], &[1, 2]],
        ),
        (
            "implicitly acknowledged record out of order",
            &[&[0, 4, 2], &[1]],
        ),
    ];
    for (what, parts) in bad {
        let got = check_exactly_once(&implicit, &log_of(parts), 2);
        ensure!(got.is_err(), "{what}: the check passed: {got:?}");
    }
    Ok(())
}

/// Test 1 (and 5): 20 kill -9s of partition leaders while an idempotent producer (acks=all)
/// keeps producing to two partitions and a consumer group keeps consuming and committing.
/// Half of the killed nodes are restarted at once (their new incarnation fences the old
/// one), half only after the survivors elected a new leader; each is back in every ISR
/// before the next kill, and production must go on after each failover. Then: every
/// acknowledged record is in the log exactly once, at its acknowledged offset, in order
/// (a batch appended by a dead leader whose ack was lost and that was retried against
/// the new one would show as a duplicate); nothing the group read differs from the final
/// log; its reads have no holes; its last commit (made before the last kills, two of which
/// hit the group coordinator) is what a new member of the group is given and resumes
/// from; __consumer_offsets has RF 3; every replica holds the same bytes.
#[test]
fn leader_kills_during_production_lose_and_duplicate_nothing() -> Result<()> {
    const TOPIC: &str = "events";
    const GROUP: &str = "replication-group";
    const KILLS: usize = 20;
    const GROUP_STOPS_AFTER: usize = 16;
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &settings())?;
    cluster.create_topic(&cluster.ids(), &rf3(TOPIC, 2), CHANGE)?;
    let settled: [(&str, usize); 2] = [(TOPIC, 2), (OFFSETS, 50)];
    wait_settled(&cluster, &cluster.ids(), &settled, CONVERGE)?;

    let load = Load::start(
        &cluster.bootstrap(),
        TOPIC,
        2,
        "ev",
        Duration::from_millis(4),
    )?;
    let mut member = Some(GroupMember::start(&cluster.bootstrap(), GROUP, TOPIC)?);
    load.wait_acked(0, 100, CONVERGE)?;
    wait_for("the group to read", CONVERGE, || {
        let n = member.as_ref().map_or(0, GroupMember::read);
        ensure!(n >= 50, "the group read {n} records");
        Ok(Some(()))
    })?;
    let mut group_run = None;
    for i in 0..KILLS {
        let partition = (i % 2) as i32;
        let asker = cluster.ids()[i % 3];
        let coordinator = coordinator_of(&cluster, asker, GROUP)?;
        if i == 0 {
            // a broker that only follows the group's offsets partition sends the client
            // back to FindCoordinator, as Kafka's does
            let other = cluster.ids().into_iter().find(|n| *n != coordinator);
            let other = other.context("a second node")?;
            let code = heartbeat_error(&cluster, other, GROUP)?;
            ensure!(
                code == 16,
                "Heartbeat to non-coordinator {other}: error {code}"
            );
        }
        let (leader, leader_epoch) = leader_of(&cluster, asker, TOPIC, partition)?;
        // after the group's final commit, every other kill hits its coordinator (the
        // leader of its __consumer_offsets partition)
        let victim = if i > GROUP_STOPS_AFTER && i % 2 == 1 {
            coordinator
        } else {
            leader
        };
        let epoch = if victim == leader { leader_epoch } else { -1 };
        let role = match (victim == leader, victim == coordinator) {
            (true, true) => format!("leader of {TOPIC}-{partition} and group coordinator"),
            (true, false) => format!("leader of {TOPIC}-{partition}"),
            _ => "group coordinator".to_string(),
        };
        let acked_before = load.acked();
        let read_before = member.as_ref().map(GroupMember::read);
        let t0 = Instant::now();
        cluster.kill9(victim)?;
        let survivors: Vec<u32> = cluster.ids().into_iter().filter(|n| *n != victim).collect();
        let how = if i % 2 == 0 {
            "restarted at once"
        } else {
            if epoch >= 0 {
                wait_new_leader(&cluster, &survivors, TOPIC, partition, victim, epoch)?;
            }
            "restarted after failover"
        };
        cluster.start_node(victim)?;
        wait_settled(&cluster, &cluster.ids(), &settled, CONVERGE)?;
        load.wait_acked(acked_before, 50, CONVERGE)
            .with_context(|| format!("production after kill {}", i + 1))?;
        let back = t0.elapsed();
        // the group keeps going: it reads on before the next kill (a member whose
        // coordinator dies every few seconds never gets the quiet spell a rejoin needs)
        if let (Some(m), Some(before)) = (member.as_ref(), read_before) {
            wait_for("the group to read on", CONVERGE, || {
                let n = m.read();
                ensure!(
                    n >= before + 50,
                    "the group read {} records since kill {}; its rdkafka log ends:\n{}",
                    n - before,
                    i + 1,
                    m.client_log_tail(40)
                );
                Ok(Some(()))
            })?;
        }
        eprintln!(
            "kill {}: node {victim} ({role}), {how}; back, with production going on, after {back:?} (the group reading on after {:?}); {} acknowledged; the group read {:?} and committed {:?} times",
            i + 1,
            t0.elapsed(),
            load.acked(),
            member.as_ref().map(GroupMember::read),
            member.as_ref().map(GroupMember::commits_ok),
        );
        if i + 1 == GROUP_STOPS_AFTER {
            let m = member.take().context("no group member")?;
            let run = m.finish()?;
            eprintln!(
                "group member 1: read {} records, {} commits ok, last {:?}; commit errors {:?}; consume errors {:?}",
                run.read.len(),
                run.commits_ok,
                run.committed,
                run.commit_errors.iter().take(5).collect::<Vec<_>>(),
                run.consume_errors.iter().take(5).collect::<Vec<_>>()
            );
            group_run = Some(run);
        }
    }
    load.wait_acked(load.acked(), 100, CONVERGE)?;
    let reports = load.reports.clone();
    let sent = load.finish()?;
    let retries = reports.retries.load(Ordering::SeqCst);
    let transmitted = reports.transmitted.load(Ordering::SeqCst);
    let failed = failures(&sent);
    ensure!(
        failed.is_empty(),
        "{} of {} records failed (message.timeout.ms 120 s): {:?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(10)]
    );

    wait_identical_replicas(&cluster, TOPIC, 2)?;
    let log = read_all(&cluster, &cluster.ids(), TOPIC, &acked_ends(&sent, 2))?;
    let summary = check_exactly_once(&sent, &log, 2)?;
    eprintln!(
        "exactly once after {KILLS} leader kills: {summary:?}; the producer transmitted {transmitted} messages ({retries} requests retried)"
    );
    // the failovers made the producer send records again (a retried batch the dead leader
    // had appended is what idempotence must not duplicate; the exact case is
    // `a_batch_retried_after_failover_is_not_appended_twice`)
    ensure!(
        transmitted > summary.acked as u64,
        "the producer transmitted {transmitted} messages for {} acknowledged: no retransmission, so idempotence across failover was not exercised",
        summary.acked
    );

    // the group: what it read is what the log holds, without holes
    let run = group_run.context("the group member never stopped")?;
    ensure!(
        run.read.len() >= 100,
        "the group read only {} records",
        run.read.len()
    );
    let mut covered: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for (p, o, bytes) in &run.read {
        let in_log = log.get(p).and_then(|l| l.get(o));
        ensure!(
            in_log == Some(bytes),
            "the group read {:?} at {TOPIC}-{p} offset {o}; the log has {:?}",
            String::from_utf8_lossy(bytes),
            in_log.map(|b| String::from_utf8_lossy(b))
        );
        covered.entry(*p).or_default().insert(*o);
    }
    for (p, offsets) in &covered {
        let max = offsets.iter().next_back().copied().unwrap_or(-1);
        ensure!(
            offsets.len() as i64 == max + 1,
            "the group's reads of {TOPIC}-{p} have holes: {} distinct offsets up to {max}",
            offsets.len()
        );
    }
    ensure!(
        run.committed.len() == 2,
        "the group's last commit covers {:?}",
        run.committed
    );

    // a new member resumes from the committed offsets
    let offsets_topic = cluster.view(1)?;
    for p in &offsets_topic.topic(OFFSETS)?.partitions {
        ensure!(
            p.replicas.len() == 3,
            "{OFFSETS}-{} has replicas {:?}",
            p.partition,
            p.replicas
        );
    }
    let consumer = group_consumer(&cluster.bootstrap(), GROUP)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(TOPIC, p);
    }
    let committed = wait_for("the group's committed offsets", CONVERGE, || {
        let got = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))?;
        let map: BTreeMap<i32, i64> = got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        Ok(Some(map))
    })?;
    ensure!(
        committed == run.committed,
        "a new member of {GROUP} is given committed offsets {committed:?}; the last successful commit was {:?}",
        run.committed
    );
    consumer.subscribe(&[TOPIC])?;
    let ends: BTreeMap<i32, i64> = log.iter().map(|(p, l)| (*p, l.len() as i64)).collect();
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, e)| next.get(p).copied().unwrap_or(committed[p]) < *e)
    {
        ensure!(
            Instant::now() < deadline,
            "the new member did not read to the end in 60 s: next {next:?}, ends {ends:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let (p, o) = (m.partition(), m.offset());
        first.entry(p).or_insert(o);
        if let Some(want) = next.get(&p) {
            ensure!(
                o <= *want,
                "the new member skipped {TOPIC}-{p} offsets {want}..{o}"
            );
        }
        let in_log = log.get(&p).and_then(|l| l.get(&o));
        ensure!(
            in_log.map(Vec::as_slice) == m.payload(),
            "the new member read {:?} at {p}/{o}, the log has {:?}",
            m.payload().map(String::from_utf8_lossy),
            in_log.map(|b| String::from_utf8_lossy(b))
        );
        next.insert(p, o + 1);
    }
    ensure!(
        first == committed,
        "the new member started reading at {first:?}, the group committed {committed:?}"
    );
    drop(consumer);
    ensure_no_panics(&cluster)?;
    eprintln!("whole test: {:?}", started.elapsed());
    Ok(())
}

/// Test 2: a SIGSTOPped follower leaves the ISR (fenced) while an idempotent producer keeps
/// producing with acks=all and min.insync.replicas=2: acknowledgements go on with two
/// replicas and the leader does not change; after SIGCONT the follower copies what it
/// missed and rejoins the ISR. Every acknowledged record is there exactly once and the
/// three replicas hold the same bytes. (cluster.rs's
/// `stopped_follower_catches_up_and_rejoins_the_isr` sends one record at a time without
/// idempotence; this one keeps a pipeline of idempotent batches in flight throughout.)
#[test]
fn stopped_follower_leaves_and_rejoins_the_isr_under_idempotent_load() -> Result<()> {
    const TOPIC: &str = "follow";
    let started = Instant::now();
    let cluster = Cluster::start(3, &settings())?;
    cluster.create_topic(&cluster.ids(), &rf3(TOPIC, 1), CHANGE)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    let (leader, epoch) = leader_of(&cluster, 1, TOPIC, 0)?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("no follower")?;
    let others: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();

    let load = Load::start(
        &cluster.bootstrap(),
        TOPIC,
        1,
        "fo",
        Duration::from_millis(3),
    )?;
    load.wait_acked(0, 100, CONVERGE)?;
    let paused = cluster.sigstop(follower)?;
    let stopped_at = Instant::now();
    let f = follower as i32;
    cluster.wait_views(
        "the stopped follower out of the ISR",
        &others,
        CONVERGE,
        |views| {
            for v in views {
                let p = &v.topic(TOPIC)?.partitions[0];
                ensure!(
                    !p.isr.contains(&f) && p.isr.len() == 2,
                    "node {}: ISR {:?}",
                    v.from,
                    p.isr
                );
            }
            ensure_same(views)
        },
    )?;
    eprintln!(
        "node {follower} out of the ISR {:?} after SIGSTOP",
        stopped_at.elapsed()
    );
    let acked = load.acked();
    load.wait_acked(acked, 300, CONVERGE)
        .context("acks=all with two in-sync replicas")?;
    let frozen = segments(&cluster, follower, TOPIC, 0).len();
    paused.resume();
    let resumed_at = Instant::now();
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    eprintln!(
        "node {follower} back in the ISR {:?} after SIGCONT",
        resumed_at.elapsed()
    );
    let acked = load.acked();
    load.wait_acked(acked, 100, CONVERGE)?;
    let sent = load.finish()?;
    let failed = failures(&sent);
    ensure!(
        failed.is_empty(),
        "{} records failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    ensure!(
        leader_of(&cluster, leader, TOPIC, 0)? == (leader, epoch),
        "the leader changed while a follower was stopped"
    );
    wait_identical_replicas(&cluster, TOPIC, 1)?;
    ensure!(
        segments(&cluster, follower, TOPIC, 0).len() > frozen,
        "the resumed follower copied nothing"
    );
    let log = read_all(&cluster, &cluster.ids(), TOPIC, &acked_ends(&sent, 1))?;
    let summary = check_exactly_once(&sent, &log, 1)?;
    eprintln!("{summary:?}; whole test {:?}", started.elapsed());
    ensure_no_panics(&cluster)
}

/// Test 3: with both followers of a partition's leader killed (and so the metadata quorum
/// lost: the ISR cannot shrink), an idempotent acks=all producer gets nothing
/// acknowledged, neither from the lone leader (which appends but cannot replicate) nor
/// for the partition whose leader died; a consumer of the survivor sees nothing past the
/// high watermark, which does not move although the survivor's log grew. Once the two are
/// back, production resumes and every acknowledged record is there exactly once (the
/// unacknowledged ones at most once).
#[test]
fn two_of_three_down_nothing_acknowledged_nothing_read_past_the_high_watermark() -> Result<()> {
    const TOPIC: &str = "quorum";
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &settings())?;
    cluster.create_topic(&cluster.ids(), &rf3(TOPIC, 2), CHANGE)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 2)], CONVERGE)?;
    let mut sent = BTreeMap::new();
    let before = idempotent_config(&cluster.bootstrap(), "30000").create::<FutureProducer>()?;
    send_tagged(&before, TOPIC, 2, "q", 0..40, &mut sent)?;
    drop(before);
    ensure!(failures(&sent).is_empty(), "{:?}", failures(&sent));
    wait_identical_replicas(&cluster, TOPIC, 2)?;

    let (survivor, _) = leader_of(&cluster, 1, TOPIC, 0)?;
    let dead: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != survivor)
        .collect();
    let (p1_leader, _) = leader_of(&cluster, 1, TOPIC, 1)?;
    let watermarks = |cluster: &Cluster, p: i32| -> Result<(i64, i64)> {
        let c = cluster.metadata_client(survivor)?;
        Ok(c.fetch_watermarks(TOPIC, p, Duration::from_secs(10))?)
    };
    // the producer gets its producer id now: InitProducerId is a quorum operation, so a
    // new idempotent producer could not even start sending with two nodes down
    let during = idempotent_config(&cluster.bootstrap(), "8000").create::<FutureProducer>()?;
    send_tagged(&during, TOPIC, 2, "q", 40..42, &mut sent)?;
    ensure!(failures(&sent).is_empty(), "{:?}", failures(&sent));
    wait_identical_replicas(&cluster, TOPIC, 2)?;
    let (_, hw_before) = watermarks(&cluster, 0)?;
    ensure!(
        hw_before == 21,
        "{TOPIC}-0: high watermark {hw_before}, want 21"
    );
    let bytes_before = segments(&cluster, survivor, TOPIC, 0).len();
    for id in &dead {
        cluster.kill9(*id)?;
    }
    eprintln!(
        "killed nodes {dead:?}; node {survivor} leads {TOPIC}-0 alone, {TOPIC}-1 was led by node {p1_leader}"
    );
    let t0 = Instant::now();
    let outage = send_tagged(&during, TOPIC, 2, "q", 1000..1020, &mut sent)?;
    drop(during);
    let mut codes = BTreeMap::new();
    for seq in &outage {
        match &sent[seq].outcome {
            Some(Outcome::Acked(o)) => bail!(
                "q/{seq} was acknowledged at {}-{o} with two of three nodes down",
                sent[seq].partition
            ),
            Some(Outcome::Failed(code, _)) => *codes.entry(format!("{code:?}")).or_insert(0) += 1,
            None => bail!("no outcome for q/{seq}"),
        }
    }
    eprintln!(
        "produce with two nodes down failed after {:?}: {codes:?}",
        t0.elapsed()
    );
    // the lone leader appended the records but its high watermark did not move
    let bytes_during = segments(&cluster, survivor, TOPIC, 0).len();
    ensure!(
        bytes_during > bytes_before,
        "the lone leader did not append (log bytes {bytes_before} → {bytes_during}): the check below proves nothing"
    );
    let (_, hw_during) = watermarks(&cluster, 0)?;
    ensure!(
        hw_during == hw_before,
        "{TOPIC}-0's high watermark moved from {hw_before} to {hw_during} with both followers dead"
    );
    let reader: BaseConsumer = Cluster::client_config(&cluster.bootstrap_of(&[survivor]))
        .set("group.id", "replication-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "200")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            seen.push(m.offset());
        }
    }
    drop(reader);
    ensure!(
        seen.iter().all(|o| *o < hw_before),
        "a consumer of node {survivor} read offsets {:?} at or past the high watermark {hw_before}",
        seen.iter().filter(|o| **o >= hw_before).collect::<Vec<_>>()
    );
    ensure!(
        seen.len() as i64 == hw_before,
        "a consumer of node {survivor} read {} records below the high watermark {hw_before}",
        seen.len()
    );

    for id in &dead {
        cluster.start_node(*id)?;
    }
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 2)], CONVERGE)?;
    let after = idempotent_config(&cluster.bootstrap(), "30000").create::<FutureProducer>()?;
    let recovered = send_tagged(&after, TOPIC, 2, "q", 2000..2040, &mut sent)?;
    drop(after);
    let late: Vec<&Sent> = recovered
        .iter()
        .map(|seq| &sent[seq])
        .filter(|s| !matches!(s.outcome, Some(Outcome::Acked(_))))
        .collect();
    ensure!(late.is_empty(), "after recovery: {late:?}");
    wait_identical_replicas(&cluster, TOPIC, 2)?;
    let log = read_all(&cluster, &cluster.ids(), TOPIC, &acked_ends(&sent, 2))?;
    let summary = check_exactly_once(&sent, &log, 2)?;
    ensure!(
        summary.acked == 82,
        "{} records acknowledged, want the 82 sent with all nodes up",
        summary.acked
    );
    eprintln!("{summary:?}; whole test {:?}", started.elapsed());
    ensure_no_panics(&cluster)
}

/// Test 4: divergence. Topic RF 3, min.insync.replicas=1. Both followers SIGSTOPped (so the
/// quorum has no majority and nothing changes the ISR), the leader takes five records with
/// acks=1 that no follower has, and dies (kill -9). The followers resume, fence it, and one
/// leads at a higher epoch; five new records go to the same offsets. The old leader,
/// restarted, truncates its suffix: all three replicas end byte-identical, and the log
/// holds the new records where the lost ones were.
#[test]
fn a_dead_leaders_unreplicated_suffix_is_truncated_when_it_rejoins() -> Result<()> {
    const TOPIC: &str = "diverge";
    let started = Instant::now();
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let topic = rf3(TOPIC, 1).set("min.insync.replicas", "1");
    cluster.create_topic(&cluster.ids(), &topic, CHANGE)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    let all = plain_producer(&cluster.bootstrap(), "all", "20000")?;
    let base: Vec<String> = (0..20).map(|i| payload("base", i)).collect();
    let got = send_each(&all, TOPIC, 0, &base);
    let want: Vec<Outcome> = (0..20).map(Outcome::Acked).collect();
    ensure!(got == want, "base records: {got:?}");
    drop(all);
    wait_identical_replicas(&cluster, TOPIC, 1)?;

    let (old, epoch) = leader_of(&cluster, 1, TOPIC, 0)?;
    let followers: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let paused = followers
        .iter()
        .map(|f| cluster.sigstop(*f))
        .collect::<Result<Vec<_>>>()?;
    // a long poll the followers had pending at the leader is answered (empty) within the
    // leader's 500 ms wait: after that no fetch of theirs is outstanding, so nothing the
    // leader appends next can reach them (a pending fetch would deliver the first record
    // on SIGCONT, and that replica would then have it)
    std::thread::sleep(Duration::from_millis(1200));
    let frozen = segments(&cluster, followers[0], TOPIC, 0).len();
    let lost: Vec<String> = (0..5).map(|i| payload("lost", 100 + i)).collect();
    let leader_only = plain_producer(&cluster.bootstrap_of(&[old]), "1", "10000")?;
    let got = send_each(&leader_only, TOPIC, 0, &lost);
    let want: Vec<Outcome> = (20..25).map(Outcome::Acked).collect();
    ensure!(got == want, "acks=1 records to the lone leader: {got:?}");
    drop(leader_only);
    wait_for(
        "the unreplicated suffix on the leader's disk",
        CONVERGE,
        || {
            let (o, f) = (
                segments(&cluster, old, TOPIC, 0).len(),
                segments(&cluster, followers[0], TOPIC, 0).len(),
            );
            ensure!(
                o > f && f == frozen,
                "leader {o} bytes, stopped follower {f}"
            );
            Ok(Some(()))
        },
    )?;
    cluster.kill9(old)?;
    drop(paused); // SIGCONT
    let (new, new_epoch) = wait_new_leader(&cluster, &followers, TOPIC, 0, old, epoch)?;
    eprintln!("node {old} (epoch {epoch}) killed with 5 unreplicated records; node {new} leads at epoch {new_epoch}");
    let fresh: Vec<String> = (0..5).map(|i| payload("new", 200 + i)).collect();
    let through_new = plain_producer(&cluster.bootstrap_of(&followers), "all", "20000")?;
    let got = send_each(&through_new, TOPIC, 0, &fresh);
    ensure!(
        got == want,
        "new records to the new leader: {got:?}, want them at the lost records' offsets"
    );
    drop(through_new);

    cluster.start_node(old)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    wait_identical_replicas(&cluster, TOPIC, 1)?;
    ensure!(
        cluster.log(old).contains("truncated a divergent suffix"),
        "node {old} never logged a truncation:\n{}",
        cluster.log_tail(old, 40)
    );
    let log = read_all(&cluster, &cluster.ids(), TOPIC, &BTreeMap::from([(0, 25)]))?;
    let got: Vec<String> = log[&0]
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let want: Vec<String> = base.iter().chain(&fresh).cloned().collect();
    ensure!(
        got == want,
        "the log after the old leader rejoined: {got:#?}"
    );
    eprintln!("whole test {:?}", started.elapsed());
    ensure_no_panics(&cluster)
}

/// A deposed leader must not acknowledge what its successor does not have. acks=all,
/// min.insync.replicas=2: both followers SIGSTOPped, the leader appends three records it
/// cannot replicate (their acks wait for the high watermark), then is SIGSTOPped itself;
/// the followers resume, fence it and elect a new leader, which takes three other records
/// at the same offsets; the old leader resumes, learns it follows, and truncates. Its
/// waiting produce request must fail (or, if acknowledged, its records must be in the
/// final log at the offsets acknowledged); the replicas end identical. An idempotent
/// producer keeps writing to another topic throughout, so the old leader's shard is busy
/// flushing replicated data when it resumes (that wakes whatever waits on its storage);
/// that topic, too, must hold every acknowledged record exactly once.
#[test]
fn a_deposed_leader_does_not_acknowledge_what_its_successor_lacks() -> Result<()> {
    const TOPIC: &str = "deposed";
    const BUSY: &str = "busy";
    let started = Instant::now();
    let cluster = Cluster::start(3, &settings())?;
    cluster.create_topic(&cluster.ids(), &rf3(TOPIC, 1), CHANGE)?;
    cluster.create_topic(&cluster.ids(), &rf3(BUSY, 3), CHANGE)?;
    let topics = [(TOPIC, 1), (BUSY, 3)];
    wait_settled(&cluster, &cluster.ids(), &topics, CONVERGE)?;
    let load = Load::start(
        &cluster.bootstrap(),
        BUSY,
        3,
        "busy",
        Duration::from_millis(3),
    )?;
    load.wait_acked(0, 100, CONVERGE)?;
    let all = plain_producer(&cluster.bootstrap(), "all", "20000")?;
    let base: Vec<String> = (0..20).map(|i| payload("base", i)).collect();
    let got = send_each(&all, TOPIC, 0, &base);
    let want: Vec<Outcome> = (0..20).map(Outcome::Acked).collect();
    ensure!(got == want, "base records: {got:?}");
    drop(all);
    wait_identical_replicas(&cluster, TOPIC, 1)?;

    let (old, epoch) = leader_of(&cluster, 1, TOPIC, 0)?;
    let followers: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let paused = followers
        .iter()
        .map(|f| cluster.sigstop(*f))
        .collect::<Result<Vec<_>>>()?;
    // no follower fetch outstanding once the leader's 500 ms long polls have ended (see
    // the divergence test)
    std::thread::sleep(Duration::from_millis(1200));
    let frozen = segments(&cluster, followers[0], TOPIC, 0).len();
    // one raw Produce (no client retries to blur the answer) of three records, acks=all,
    // with a timeout long enough for it to still be waiting when the old leader resumes
    let doomed: Vec<String> = (0..3).map(|i| payload("doomed", 100 + i)).collect();
    let mut raw = common::raw::RawClient::connect(cluster.kafka_addr(old))?;
    raw.negotiate()?;
    let version = raw.version_for::<ProduceRequest>(9)?;
    let values: Vec<&str> = doomed.iter().map(String::as_str).collect();
    let batch = common::raw::record_batch(&values, now_ms())?;
    let request = common::raw::produce_request(TOPIC, 0, -1, batch).with_timeout_ms(60_000);
    let correlation = raw.send(version, &request)?;
    wait_for(
        "the unreplicated records on the leader's disk",
        CONVERGE,
        || {
            let (o, f) = (
                segments(&cluster, old, TOPIC, 0).len(),
                segments(&cluster, followers[0], TOPIC, 0).len(),
            );
            ensure!(
                o > f && f == frozen,
                "leader {o} bytes, stopped follower {f}"
            );
            Ok(Some(()))
        },
    )?;
    let old_paused = cluster.sigstop(old)?;
    drop(paused); // SIGCONT the followers
    let (new, new_epoch) = wait_new_leader(&cluster, &followers, TOPIC, 0, old, epoch)?;
    eprintln!("node {old} (epoch {epoch}) stopped holding 3 unreplicated records; node {new} leads at epoch {new_epoch}");
    let fresh: Vec<String> = (0..3).map(|i| payload("new", 200 + i)).collect();
    let through_new = plain_producer(&cluster.bootstrap_of(&followers), "all", "20000")?;
    let got = send_each(&through_new, TOPIC, 0, &fresh);
    let want: Vec<Outcome> = (20..23).map(Outcome::Acked).collect();
    ensure!(got == want, "new records to the new leader: {got:?}");
    drop(through_new);
    old_paused.resume();
    raw.set_read_timeout(Duration::from_secs(70))?;
    let answer = raw.recv::<ProduceRequest>(version, correlation)?;
    let (error, at) = common::raw::partition_result(&answer)?;
    let outcomes: Vec<Outcome> = (0..3)
        .map(|i| {
            if error == 0 {
                Outcome::Acked(at + i)
            } else {
                Outcome::Failed(None, format!("error code {error}"))
            }
        })
        .collect();
    eprintln!("the deposed leader answered the waiting records with {outcomes:?}");
    wait_settled(&cluster, &cluster.ids(), &topics, CONVERGE)?;
    wait_identical_replicas(&cluster, TOPIC, 1)?;
    let log = read_all(&cluster, &cluster.ids(), TOPIC, &BTreeMap::from([(0, 23)]))?;
    for (v, o) in doomed.iter().zip(&outcomes) {
        if let Outcome::Acked(at) = o {
            let there = log[&0]
                .get(at)
                .map(|b| String::from_utf8_lossy(b).into_owned());
            ensure!(
                there.as_deref() == Some(v.as_str()),
                "LOST ACKNOWLEDGED WRITE: the deposed leader (node {old}) acknowledged {v:?} at offset {at} (acks=all), but the log has {there:?} there"
            );
        }
    }
    let got: Vec<String> = log[&0]
        .values()
        .take(23)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let want: Vec<String> = base.iter().chain(&fresh).cloned().collect();
    ensure!(got == want, "the log's first 23 records: {got:#?}");
    let acked = load.acked();
    load.wait_acked(acked, 100, CONVERGE)?;
    let sent = load.finish()?;
    wait_identical_replicas(&cluster, BUSY, 3)?;
    let busy = read_all(&cluster, &cluster.ids(), BUSY, &acked_ends(&sent, 3))?;
    let summary = check_exactly_once(&sent, &busy, 3)?;
    eprintln!("{BUSY}: {summary:?}; whole test {:?}", started.elapsed());
    ensure_no_panics(&cluster)
}

/// Test 5, made exact: an idempotent batch is appended by the leader and copied by both
/// followers, but its acknowledgement is lost (the connection drops before the answer);
/// the leader is killed; the producer retries the same batch (same producer id, epoch and
/// sequence) against the new leader, which must answer with the batch's original offset
/// and not append it again. The next batch follows it, and the old leader, restarted,
/// ends with the same bytes.
#[test]
fn a_batch_retried_after_failover_is_not_appended_twice() -> Result<()> {
    use common::raw::{partition_result, produce_request, producer_batch, RawClient};
    const TOPIC: &str = "retry";
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &settings())?;
    cluster.create_topic(&cluster.ids(), &rf3(TOPIC, 1), CHANGE)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    let (old, epoch) = leader_of(&cluster, 1, TOPIC, 0)?;
    let mut raw = RawClient::connect(cluster.kafka_addr(old))?;
    raw.negotiate()?;
    let v = raw.version_for::<InitProducerIdRequest>(4)?;
    let init = raw.call(
        v,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    )?;
    ensure!(
        init.error_code == 0 && init.producer_id.0 >= 0,
        "InitProducerId: {init:?}"
    );
    let (pid, pepoch) = (init.producer_id.0, init.producer_epoch);
    let pv = raw.version_for::<ProduceRequest>(9)?;
    let produce = |raw: &mut RawClient, batch: bytes::Bytes| -> Result<(i16, i64)> {
        let resp = raw.call(
            pv,
            &produce_request(TOPIC, 0, -1, batch).with_timeout_ms(20_000),
        )?;
        partition_result(&resp)
    };
    let b0 = producer_batch(&["r0-a", "r0-b"], now_ms(), pid, pepoch, 0)?;
    let got = produce(&mut raw, b0)?;
    ensure!(got == (0, 0), "first batch: (error, offset) {got:?}");
    // the batch whose answer is lost: sent, never read, the connection dropped
    let b1 = producer_batch(&["r1-a", "r1-b", "r1-c"], now_ms(), pid, pepoch, 2)?;
    raw.send(
        pv,
        &produce_request(TOPIC, 0, -1, b1.clone()).with_timeout_ms(20_000),
    )?;
    drop(raw);
    wait_for("the batch on every replica", CONVERGE, || {
        let copies: Vec<Vec<u8>> = cluster
            .ids()
            .into_iter()
            .map(|id| segments(&cluster, id, TOPIC, 0))
            .collect();
        let has = |c: &Vec<u8>| c.windows(4).any(|w| w == b"r1-c");
        ensure!(
            copies.iter().all(has) && copies.iter().all(|c| *c == copies[0]),
            "not yet on every replica"
        );
        Ok(Some(()))
    })?;
    cluster.kill9(old)?;
    let survivors: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    let (new, new_epoch) = wait_new_leader(&cluster, &survivors, TOPIC, 0, old, epoch)?;
    eprintln!("node {old} killed; node {new} leads at epoch {new_epoch}");
    let mut raw = RawClient::connect(cluster.kafka_addr(new))?;
    raw.negotiate()?;
    // the new leader's high watermark waits for its followers' first fetches: retry
    // retriable answers (as a client would) for a bounded time
    let retried = wait_for("the retried batch's answer", CONVERGE, || {
        let got = produce(&mut raw, b1.clone())?;
        ensure!(!matches!(got.0, 6 | 7 | 19), "retriable answer {got:?}");
        Ok(Some(got))
    })?;
    ensure!(
        retried == (0, 2),
        "the retried batch (producer {pid}, sequence 2) got (error, offset) {retried:?} from the new leader, want (0, 2): its original offset"
    );
    let b2 = producer_batch(&["r2-a"], now_ms(), pid, pepoch, 5)?;
    let got = produce(&mut raw, b2)?;
    ensure!(
        got == (0, 5),
        "the next batch: (error, offset) {got:?}, want (0, 5)"
    );
    drop(raw);
    let log = read_all(&cluster, &survivors, TOPIC, &BTreeMap::from([(0, 6)]))?;
    let got: Vec<String> = log[&0]
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    ensure!(
        got == ["r0-a", "r0-b", "r1-a", "r1-b", "r1-c", "r2-a"],
        "the log after the retry: {got:?}"
    );
    cluster.start_node(old)?;
    wait_settled(&cluster, &cluster.ids(), &[(TOPIC, 1)], CONVERGE)?;
    wait_identical_replicas(&cluster, TOPIC, 1)?;
    eprintln!("whole test {:?}", started.elapsed());
    ensure_no_panics(&cluster)
}
