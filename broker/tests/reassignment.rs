//! Moving replicas and leaders on a running cluster of real processes: a partition
//! reassigned to a new broker while an idempotent producer writes (nothing lost or
//! doubled, the old replica's log deleted), ListPartitionReassignments while it runs,
//! ElectLeaders (preferred) and the controller's own preferred-leader rebalancing.
//! Every wait is bounded; bounds are functional, not performance checks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use common::cluster::{wait_for, Cluster, FAST_SETTINGS};
use common::extra::ExtraNode;
use common::raw::RawClient;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

const CONVERGE: Duration = Duration::from_secs(30);
const CHANGE: Duration = Duration::from_secs(15);

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// (partition, offset, value) of every acknowledged record; values of failed ones.
#[derive(Default)]
struct Deliveries {
    acked: Vec<(i32, i64, String)>,
    failed: Vec<String>,
}

struct Recorder(Arc<Mutex<Deliveries>>);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.0.lock().expect("ok: test lock");
        match result {
            Ok(m) => d.acked.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Err((_, m)) => d
                .failed
                .push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
        }
    }
}

/// An idempotent acks=all producer writing unique values to `topic` (all partitions, in
/// turn) from its own thread until stopped; a small pause between records keeps the load
/// steady rather than maximal.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    deliveries: Arc<Mutex<Deliveries>>,
}

impl Load {
    fn start(bootstrap: &str, topic: &str, partitions: i32) -> Result<Self> {
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let producer: ThreadedProducer<Recorder> = Cluster::client_config(bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "60000")
            .create_with_context(Recorder(deliveries.clone()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, stop2) = (topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) && i < 1_000_000 {
                let value = format!("v{i}");
                let p = (i % partitions as u64) as i32;
                let mut record: BaseRecord<'_, (), String> =
                    BaseRecord::to(&topic).partition(p).payload(&value);
                // a full local queue: wait for deliveries, then retry (bounded)
                let mut tries = 0;
                while let Err((e, r)) = producer.send(record) {
                    tries += 1;
                    ensure!(tries < 500, "cannot enqueue {value}: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    record = r;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            producer
                .flush(Duration::from_secs(60))
                .context("flushing the load producer")?;
            Ok(())
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            deliveries,
        })
    }

    fn acked(&self) -> usize {
        self.deliveries.lock().expect("ok: test lock").acked.len()
    }

    /// Stops, flushes and returns what was acknowledged and what failed.
    fn finish(mut self) -> Result<Deliveries> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        }
        Ok(std::mem::take(
            &mut *self.deliveries.lock().expect("ok: test lock"),
        ))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads every partition of `topic` from the start up to its high watermark and checks
/// that each acknowledged value is there exactly once, at its acknowledged offset, and
/// that no value appears twice.
fn check_read_back(bootstrap: &str, topic: &str, d: &Deliveries) -> Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = Cluster::client_config(bootstrap)
        .set("group.id", "sluice-reassignment-check")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "200")
        .create()?;
    let partitions: BTreeSet<i32> = d.acked.iter().map(|a| a.0).collect();
    let mut highs = BTreeMap::new();
    for p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        highs.insert(*p, high);
    }
    let got = common::consume_until(&consumer, topic, &highs, Duration::from_secs(60))?;
    let mut at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut seen: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    for c in got {
        let v = String::from_utf8(c.payload.unwrap_or_default())?;
        if let Some(first) = seen.insert(v.clone(), (c.partition, c.offset)) {
            ensure!(
                first == (c.partition, c.offset),
                "{v} appears twice: at {first:?} and at ({}, {})",
                c.partition,
                c.offset
            );
        }
        at.insert((c.partition, c.offset), v);
    }
    for (p, o, v) in &d.acked {
        ensure!(
            at.get(&(*p, *o)) == Some(v),
            "acknowledged {v} at {topic}-{p}@{o}, read {:?} there",
            at.get(&(*p, *o))
        );
    }
    Ok(())
}

fn reassign(
    c: &mut RawClient,
    topic: &str,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> Result<i16> {
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    replicas.map(|r| r.into_iter().map(BrokerId).collect()),
                )])]);
    let resp = c.call(0, &req)?;
    ensure!(resp.error_code == 0, "top-level error {}", resp.error_code);
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the answer")?;
    Ok(p.error_code)
}

/// (replicas, adding, removing) of one partition being reassigned.
type Ongoing = (Vec<i32>, Vec<i32>, Vec<i32>);

/// The reassignments in progress of `topic`.
fn in_progress(c: &mut RawClient, topic: &str) -> Result<Vec<Ongoing>> {
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
            .with_name(name(topic))
            .with_partition_indexes(vec![0])]));
    let resp = c.call(0, &req)?;
    ensure!(resp.error_code == 0, "top-level error {}", resp.error_code);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
        .collect())
}

fn connect(cluster: &Cluster, id: u32) -> Result<RawClient> {
    let mut c = RawClient::connect(cluster.kafka_addr(id))?;
    c.set_read_timeout(Duration::from_secs(20))?;
    c.negotiate()?;
    Ok(c)
}

/// A partition on brokers 1–3 moves to a fourth broker that joined the running cluster,
/// away from its leader, while an idempotent producer writes to it: the new broker copies
/// the log, joins the ISR, becomes the leader (first of the new list), the old leader's
/// replica is deleted. Then the old leader comes back in place of a replica that is down,
/// and that one deletes its stray log when it restarts. Every acknowledged record reads
/// back once at its offset.
#[test]
fn reassignment_to_a_new_broker_under_load() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let (node4, addr4) = ExtraNode::broker_only(&cluster, 4, FAST_SETTINGS)?;
    cluster.wait_views("broker 4 registered", &[1, 2, 3], CONVERGE, |views| {
        for v in views {
            ensure!(v.broker_ids().contains(&4), "node {} lacks 4", v.from);
        }
        Ok(())
    })?;
    cluster.create_topic(
        &[1],
        &NewTopic::new("moving", 1, TopicReplication::Variable(&[&[1, 2, 3]]))
            .set("min.insync.replicas", "2"),
        CHANGE,
    )?;
    let views = cluster.wait_views("moving led", &[1], CONVERGE, |views| {
        let p = &views[0].topic("moving")?.partitions[0];
        ensure!(p.leader > 0 && p.isr.len() == 3, "{p:?}");
        Ok(())
    })?;
    let p = views[0].topic("moving")?.partitions[0].clone();
    ensure!(
        p.replicas == vec![1, 2, 3],
        "the assignment asked for: {p:?}"
    );
    let old_leader = p.leader;
    let kept: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != old_leader)
        .collect();
    let target = vec![4, kept[0], kept[1]];

    let bootstrap = format!("{},{addr4}", cluster.bootstrap());
    let load = Load::start(&bootstrap, "moving", 1)?;
    wait_for("the load to be acknowledged", CONVERGE, || {
        Ok((load.acked() >= 200).then_some(()))
    })?;
    let mut admin = connect(&cluster, kept[0] as u32)?;
    ensure!(
        reassign(&mut admin, "moving", 0, Some(target.clone()))? == 0,
        "reassignment refused"
    );
    // the old leader's log, which must be deleted once it is no longer a replica
    let old_dir = cluster
        .node_dir(old_leader as u32)
        .join("data")
        .join("moving-0");
    ensure!(
        old_dir.exists(),
        "{} missing before the move",
        old_dir.display()
    );
    let before = load.acked();
    wait_for("the reassignment to complete", CONVERGE, || {
        let ongoing = in_progress(&mut admin, "moving")?;
        if !ongoing.is_empty() {
            // while it runs: the target first, the leaving replica listed as removing
            let (replicas, adding, removing) = &ongoing[0];
            ensure!(
                adding == &vec![4] && removing == &vec![old_leader],
                "ongoing: {ongoing:?}"
            );
            ensure!(replicas[..3] == target[..], "ongoing: {ongoing:?}");
            return Ok(None);
        }
        let v = cluster.view(kept[0] as u32)?;
        let p = &v.topic("moving")?.partitions[0];
        ensure!(p.replicas == target, "replicas {:?}", p.replicas);
        ensure!(p.leader == 4, "leader {}", p.leader);
        ensure!(
            p.isr.iter().copied().collect::<BTreeSet<_>>() == target.iter().copied().collect(),
            "isr {:?}",
            p.isr
        );
        Ok(Some(()))
    })?;
    wait_for("writes to go on under the new leader", CONVERGE, || {
        Ok((load.acked() >= before + 300).then_some(()))
    })?;
    wait_for("the old replica's log to be deleted", CONVERGE, || {
        Ok((!old_dir.exists()).then_some(()))
    })?;
    ensure!(
        node4.data_dir().join("moving-0").exists(),
        "broker 4 has no moving-0"
    );

    // Second move, still under load: the old leader comes back (its log was deleted: it
    // copies everything again) in place of a replica that is down meanwhile; that
    // replica, restarted afterwards, finds its log stray and deletes it.
    let (stays, gone) = (kept[0], kept[1]);
    let back = vec![4, stays, old_leader];
    cluster.kill9(gone as u32)?;
    ensure!(
        reassign(&mut admin, "moving", 0, Some(back.clone()))? == 0,
        "second reassignment refused"
    );
    wait_for("the second reassignment to complete", CONVERGE, || {
        if !in_progress(&mut admin, "moving")?.is_empty() {
            return Ok(None);
        }
        let v = cluster.view(stays as u32)?;
        let p = &v.topic("moving")?.partitions[0];
        ensure!(p.replicas == back, "replicas {:?}", p.replicas);
        ensure!(p.isr.contains(&old_leader), "isr {:?}", p.isr);
        Ok(Some(()))
    })?;
    ensure!(old_dir.exists(), "the returning replica has no log");
    let gone_dir = cluster.node_dir(gone as u32).join("data").join("moving-0");
    ensure!(
        gone_dir.exists(),
        "{} vanished while its node was down",
        gone_dir.display()
    );
    cluster.start_node(gone as u32)?;
    wait_for(
        "the stray log to be deleted after the restart",
        CONVERGE,
        || Ok((!gone_dir.exists()).then_some(())),
    )?;
    let before = load.acked();
    wait_for("writes to go on", CONVERGE, || {
        Ok((load.acked() >= before + 100).then_some(()))
    })?;
    let d = load.finish()?;
    ensure!(
        d.failed.is_empty(),
        "deliveries failed: {:?}",
        &d.failed[..d.failed.len().min(10)]
    );
    check_read_back(&bootstrap, "moving", &d)?;
    // nothing left to do: a cancel finds nothing in progress
    ensure!(
        reassign(&mut admin, "moving", 0, None)? == 85,
        "cancel without a reassignment must be NO_REASSIGNMENT_IN_PROGRESS"
    );
    Ok(())
}

fn elect_preferred(
    c: &mut RawClient,
    topic: &str,
    partitions: Vec<i32>,
) -> Result<Vec<(i32, i16)>> {
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(name(topic))
            .with_partitions(partitions)]));
    let resp = c.call(2, &req)?;
    ensure!(resp.error_code == 0, "top-level error {}", resp.error_code);
    Ok(resp
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter())
        .map(|p| (p.partition_id, p.error_code))
        .collect())
}

/// Partitions whose preferred (first) replica is `node`.
fn preferred_of(view: &common::cluster::MetadataView, topic: &str, node: i32) -> Result<Vec<i32>> {
    Ok(view
        .topic(topic)?
        .partitions
        .iter()
        .filter(|p| p.replicas.first() == Some(&node))
        .map(|p| p.partition)
        .collect())
}

/// Three nodes with FAST_SETTINGS plus `setting`, and `topic` (3 partitions, RF 3) led
/// with full ISRs; node 1's view of it.
fn cluster_with_topic(
    setting: (&str, &str),
    topic: &str,
) -> Result<(Cluster, common::cluster::MetadataView)> {
    let mut settings = FAST_SETTINGS.to_vec();
    settings.push(setting);
    let cluster = Cluster::start(3, &settings)?;
    cluster.create_topic(
        &[1],
        &NewTopic::new(topic, 3, TopicReplication::Fixed(3)),
        CHANGE,
    )?;
    let mut views = cluster.wait_views("the topic led", &[1], CONVERGE, |views| {
        for p in &views[0].topic(topic)?.partitions {
            ensure!(p.leader > 0 && p.isr.len() == 3, "{p:?}");
        }
        Ok(())
    })?;
    let view = views.remove(0);
    Ok((cluster, view))
}

/// After a broker restarts, its preferred partitions stay led elsewhere without
/// auto.leader.rebalance.enable, until ElectLeaders (preferred) gives them back; a
/// second ElectLeaders answers ELECTION_NOT_NEEDED.
#[test]
fn elect_leaders_restores_preferred_leaders() -> Result<()> {
    let (mut cluster, view) =
        cluster_with_topic(("auto.leader.rebalance.enable", "false"), "pref")?;
    let node = 2;
    let mine = preferred_of(&view, "pref", node)?;
    ensure!(!mine.is_empty(), "node {node} is preferred nowhere");
    cluster.kill9(node as u32)?;
    cluster.wait_views(
        "leadership away from the dead node",
        &[1, 3],
        CONVERGE,
        |views| {
            for v in views {
                for p in &v.topic("pref")?.partitions {
                    ensure!(p.leader > 0 && p.leader != node, "{p:?}");
                }
            }
            Ok(())
        },
    )?;
    cluster.start_node(node as u32)?;
    // back in every ISR, yet not leading (no automatic rebalancing here)
    cluster.wait_views("node back in sync", &[1], CONVERGE, |views| {
        for p in &views[0].topic("pref")?.partitions {
            ensure!(p.isr.contains(&node), "{p:?}");
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let v = cluster.view(1)?;
    for p in &v.topic("pref")?.partitions {
        ensure!(p.leader != node, "led by {node} without an election: {p:?}");
    }
    let mut c = connect(&cluster, 3)?;
    let results = elect_preferred(&mut c, "pref", mine.clone())?;
    ensure!(
        results.iter().all(|(_, e)| *e == 0) && results.len() == mine.len(),
        "{results:?}"
    );
    cluster.wait_views("preferred leaders back", &[1, 2, 3], CONVERGE, |views| {
        for v in views {
            for p in &v.topic("pref")?.partitions {
                ensure!(
                    p.replicas.first() == Some(&p.leader),
                    "node {}: {p:?}",
                    v.from
                );
            }
        }
        Ok(())
    })?;
    let again = elect_preferred(&mut c, "pref", mine)?;
    ensure!(again.iter().all(|(_, e)| *e == 84), "{again:?}");
    let unknown = elect_preferred(&mut c, "nope", vec![0])?;
    ensure!(unknown == vec![(0, 3)], "{unknown:?}");
    Ok(())
}

/// With auto.leader.rebalance.enable and a short check interval, a restarted broker gets
/// its preferred leaderships back by itself.
#[test]
fn preferred_leaders_come_back_by_themselves() -> Result<()> {
    let (mut cluster, view) =
        cluster_with_topic(("leader.imbalance.check.interval.seconds", "1"), "auto")?;
    let node = 3;
    ensure!(!preferred_of(&view, "auto", node)?.is_empty());
    cluster.kill9(node as u32)?;
    cluster.wait_views(
        "leadership away from the dead node",
        &[1, 2],
        CONVERGE,
        |views| {
            for p in &views[0].topic("auto")?.partitions {
                ensure!(p.leader > 0 && p.leader != node, "{p:?}");
            }
            Ok(())
        },
    )?;
    cluster.start_node(node as u32)?;
    cluster.wait_views("preferred leaders back", &[1, 2, 3], CONVERGE, |views| {
        for v in views {
            for p in &v.topic("auto")?.partitions {
                ensure!(
                    p.replicas.first() == Some(&p.leader),
                    "node {}: {p:?}",
                    v.from
                );
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// A replica added to a partition whose leader's retention already deleted its first
/// segments fetches offset 0, is told OFFSET_OUT_OF_RANGE with the leader's log start,
/// restarts its log there (Kafka's truncateFullyAndStartAt), catches up and joins the
/// ISR; then it leads and serves the same records at the same offsets.
#[test]
fn a_new_replica_catches_up_with_a_leader_whose_log_no_longer_starts_at_0() -> Result<()> {
    let mut settings = FAST_SETTINGS.to_vec();
    settings.push(("log.retention.check.interval.ms", "200"));
    let cluster = Cluster::start(2, &settings)?;
    let topic = "trimmed";
    cluster.create_topic(
        &[1],
        &NewTopic::new(topic, 1, TopicReplication::Variable(&[&[1]]))
            .set("segment.bytes", "4096")
            .set("retention.bytes", "8192"),
        CHANGE,
    )?;
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .create()?;
    let mut sent = BTreeMap::new();
    for i in 0..300 {
        let value = format!("record-{i:04}-{}", "x".repeat(150));
        let d = common::block_on(
            producer.send(
                rdkafka::producer::FutureRecord::to(topic)
                    .partition(0)
                    .key("k")
                    .payload(&value),
                Duration::from_secs(10),
            ),
        )
        .map_err(|(e, _)| e)?;
        sent.insert(d.offset, value);
    }
    let consumer: rdkafka::consumer::BaseConsumer =
        Cluster::client_config(&cluster.bootstrap()).create()?;
    let low = wait_for("retention moving the log start", CONVERGE, || {
        let (low, _) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(5))?;
        ensure!(low > 0, "log start still 0");
        Ok(Some(low))
    })?;
    let mut c = connect(&cluster, 1)?;
    ensure!(
        reassign(&mut c, topic, 0, Some(vec![1, 2]))? == 0,
        "reassign to [1, 2]"
    );
    cluster.wait_views("node 2 in the ISR", &[1], CONVERGE, |views| {
        let p = &views[0].topic(topic)?.partitions[0];
        ensure!(p.isr.len() == 2 && p.replicas == vec![1, 2], "{p:?}");
        Ok(())
    })?;
    ensure!(
        reassign(&mut c, topic, 0, Some(vec![2]))? == 0,
        "reassign to [2]"
    );
    cluster.wait_views("node 2 leading alone", &[1], CONVERGE, |views| {
        let p = &views[0].topic(topic)?.partitions[0];
        ensure!(p.leader == 2 && p.replicas == vec![2], "{p:?}");
        Ok(())
    })?;
    let reader: rdkafka::consumer::BaseConsumer = Cluster::client_config(&cluster.bootstrap())
        .set("group.id", "trimmed-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    reader.assign(&tpl)?;
    let last = *sent.keys().last().context("nothing sent")?;
    let mut got = BTreeMap::new();
    wait_for("reading node 2's log", CONVERGE, || {
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let m = m?;
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            got.insert(m.offset(), v);
        }
        Ok(got.contains_key(&last).then_some(()))
    })?;
    let first = *got.keys().next().context("nothing read")?;
    ensure!(
        first >= low,
        "node 2 served offset {first} below the old log start {low}"
    );
    for (o, v) in &got {
        ensure!(
            sent.get(o) == Some(v),
            "offset {o}: node 2 has {v:?}, sent {:?}",
            sent.get(o)
        );
    }
    ensure!(
        got.len() as i64 == last - first + 1,
        "node 2 has {} records in {first}..={last}",
        got.len()
    );
    Ok(())
}
