//! Transactions on a three-node cluster (RF 3, min.insync.replicas 2, `__transaction_state`
//! replicated like any topic): a transactional producer commits and aborts alternately
//! while the transaction coordinator's node and then a partition leader's node are killed
//! with SIGKILL and restarted. A transaction whose commit was acknowledged is read whole by
//! read_committed consumers, an aborted one never, and one whose outcome the client did not
//! learn (its call failed across a kill) is read whole or not at all: never half.
//! Every wait is bounded; a failing test shows every node's log tail (the `Cluster` drop).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::block_on;
use common::cluster::{Cluster, FAST_SETTINGS};
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "txc";
const PARTITIONS: i32 = 3;
const TXN_ID: &str = "cluster-txn";
const T: Duration = Duration::from_secs(30);

fn settings() -> Vec<(&'static str, &'static str)> {
    let mut s = FAST_SETTINGS.to_vec();
    s.push(("min.insync.replicas", "2"));
    s.push(("transaction.state.log.num.partitions", "3"));
    s.push(("offsets.topic.num.partitions", "3"));
    s
}

/// The node coordinating transactional id `id` (FindCoordinator v2, key type 1, asked of
/// the nodes in turn until one answers with a coordinator).
fn txn_coordinator(cluster: &Cluster, id: &str) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for ask in cluster.ids() {
            if !cluster.is_running(ask) {
                continue;
            }
            let Ok(mut c) = common::raw::RawClient::connect(cluster.kafka_addr(ask)) else {
                continue;
            };
            if c.negotiate().is_err() {
                continue;
            }
            let req = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(id.to_string()))
                .with_key_type(1);
            if let Ok(resp) = c.call(2, &req) {
                if resp.error_code == 0 && resp.node_id.0 >= 0 {
                    return Ok(resp.node_id.0 as u32);
                }
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no coordinator for {id} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    let p: FutureProducer = Cluster::client_config(bootstrap)
        .set("transactional.id", TXN_ID)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .set("transaction.timeout.ms", "20000")
        .create()?;
    p.init_transactions(T).context("init_transactions")?;
    Ok(p)
}

/// How one transaction ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// A call failed: the coordinator decides (commit if it had the decision, else abort).
    Unknown,
}

/// Runs transaction `n` (10 records over the partitions); commit if even, abort if odd.
fn one_transaction(p: &FutureProducer, n: u32) -> Result<Outcome> {
    p.begin_transaction()?;
    let values: Vec<String> = (0..10).map(|i| format!("t{n}-{i}")).collect();
    let sends = block_on(async {
        let mut futs = Vec::new();
        for (i, value) in (0i32..).zip(&values) {
            futs.push(
                p.send(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(i % PARTITIONS)
                        .payload(value),
                    Duration::from_secs(20),
                ),
            );
        }
        let mut failed = None;
        for f in futs {
            if let Err((e, _)) = f.await {
                failed = Some(e);
            }
        }
        failed
    });
    if let Some(e) = sends {
        let _ = p.abort_transaction(T);
        bail!("send failed: {e}");
    }
    if n.is_multiple_of(2) {
        p.commit_transaction(T)?;
        Ok(Outcome::Committed)
    } else {
        p.abort_transaction(T)?;
        Ok(Outcome::Aborted)
    }
}

fn read_committed(bootstrap: &str) -> Result<Vec<String>> {
    let consumer: BaseConsumer = Cluster::client_config(bootstrap)
        .set("group.id", "txc-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut eof = BTreeSet::new();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while eof.len() < PARTITIONS as usize {
        ensure!(
            Instant::now() < deadline,
            "read_committed timed out ({} values)",
            values.len()
        );
        match consumer.poll(Duration::from_millis(300)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => bail!("consume: {e}"),
            Some(Ok(m)) => {
                eof.remove(&m.partition());
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
    }
    Ok(values)
}

#[test]
fn transactions_survive_coordinator_and_leader_kills() -> Result<()> {
    let mut cluster = Cluster::start(3, &settings())?;
    let bootstrap = cluster.bootstrap();
    cluster.create_topic(
        &cluster.ids(),
        &NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3)),
        Duration::from_secs(20),
    )?;
    let mut outcomes: BTreeMap<u32, Outcome> = BTreeMap::new();
    let mut p = producer(&bootstrap)?;
    let mut n = 0u32;
    // rounds: run some transactions, then kill -9 a node and bring it back
    for round in 0..4 {
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            match one_transaction(&p, n) {
                Ok(o) => {
                    outcomes.insert(n, o);
                }
                Err(e) => {
                    eprintln!("transaction {n}: {e:#}; a new producer takes over");
                    outcomes.insert(n, Outcome::Unknown);
                    p = producer(&bootstrap)?;
                }
            }
            n += 1;
        }
        let victim = if round % 2 == 0 {
            txn_coordinator(&cluster, TXN_ID)?
        } else {
            // the leader of partition 0, as node 1 sees it
            let v = cluster.view(
                cluster
                    .ids()
                    .into_iter()
                    .find(|i| cluster.is_running(*i))
                    .context("no node")?,
            )?;
            let leader = v.topic(TOPIC)?.partitions[0].leader;
            ensure!(leader >= 0, "{TOPIC}-0 has no leader");
            leader as u32
        };
        eprintln!("round {round}: kill -9 of node {victim} after transaction {n}");
        cluster.kill9(victim)?;
        // transactions go on with two nodes
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            match one_transaction(&p, n) {
                Ok(o) => {
                    outcomes.insert(n, o);
                }
                Err(e) => {
                    eprintln!("transaction {n}: {e:#}; a new producer takes over");
                    outcomes.insert(n, Outcome::Unknown);
                    std::thread::sleep(Duration::from_millis(500));
                    p = producer(&bootstrap)?;
                }
            }
            n += 1;
        }
        cluster.start_node(victim)?;
    }
    drop(p);
    let values = read_committed(&bootstrap)?;
    let mut by_txn: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for v in &values {
        let txn: u32 = v
            .strip_prefix('t')
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("unexpected value {v}"))?;
        ensure!(
            by_txn.entry(txn).or_default().insert(v.clone()),
            "{v} read twice"
        );
    }
    let (mut committed, mut unknown_whole) = (0, 0);
    for (txn, outcome) in &outcomes {
        let read = by_txn.get(txn).map_or(0, BTreeSet::len);
        match outcome {
            Outcome::Committed => {
                ensure!(
                    read == 10,
                    "committed transaction {txn}: {read} of 10 records read"
                );
                committed += 1;
            }
            Outcome::Aborted => {
                ensure!(read == 0, "aborted transaction {txn}: {read} records read")
            }
            Outcome::Unknown => {
                ensure!(
                    read == 0 || read == 10,
                    "transaction {txn} (outcome unknown): {read} of 10 records read"
                );
                // odd ones were to be aborted: a failed abort still never commits
                ensure!(
                    read == 0 || txn % 2 == 0,
                    "transaction {txn}, meant to abort, was read"
                );
                if read == 10 {
                    unknown_whole += 1;
                }
            }
        }
    }
    eprintln!(
        "{} transactions: {committed} committed read whole, {} unknown ({unknown_whole} read whole)",
        outcomes.len(),
        outcomes.values().filter(|o| **o == Outcome::Unknown).count()
    );
    ensure!(
        committed >= 4,
        "too few transactions committed ({committed}) to mean anything"
    );
    Ok(())
}

/// `transaction.state.log.min.isr` holds for the coordinator's own writes: with it at 3
/// and one of three nodes down (the quorum alive, the ISR of the coordinator's partition
/// shrunk to two), InitProducerId is not acknowledged; with the node back, it is.
#[test]
fn coordinator_writes_need_min_isr() -> Result<()> {
    let mut s = settings();
    s.push(("transaction.state.log.min.isr", "3"));
    s.push(("replica.lag.time.max.ms", "2000"));
    let mut cluster = Cluster::start(3, &s)?;
    let bootstrap = cluster.bootstrap();
    let p = producer(&bootstrap)?; // creates __transaction_state, RF 3, all in sync
    drop(p);
    let coordinator = txn_coordinator(&cluster, TXN_ID)?;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|i| *i != coordinator)
        .context("no other node")?;
    cluster.kill9(victim)?;
    cluster.wait_views(
        "the coordinator's partition down to two in sync",
        &[coordinator],
        Duration::from_secs(30),
        |views| {
            let t = views[0].topic("__transaction_state")?;
            for part in &t.partitions {
                ensure!(!part.isr.contains(&(victim as i32)), "{part:?}");
            }
            Ok(())
        },
    )?;
    let refused: Result<FutureProducer, _> = Cluster::client_config(&bootstrap)
        .set("transactional.id", TXN_ID)
        .create::<FutureProducer>()
        .map_err(anyhow::Error::from)
        .and_then(|p| {
            p.init_transactions(Duration::from_secs(5))?;
            Ok(p)
        });
    ensure!(
        refused.is_err(),
        "InitProducerId acknowledged with the ISR below min.isr"
    );
    cluster.start_node(victim)?;
    // back in sync, the same id initializes again
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer(&bootstrap) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => eprintln!("not yet: {e:#}"),
            Err(e) => return Err(e.context("InitProducerId once the node is back")),
        }
    }
    Ok(())
}

/// KIP-890 across nodes: the leader of a partition asks the transaction coordinator on
/// another node (AddPartitionsToTxn v4, verify_only) before a transactional batch starts
/// a transaction there. A batch sent after its transaction was aborted is refused with
/// INVALID_TXN_STATE and does not hold the last stable offset; the producer's next
/// transaction, which adds the partition, commits there.
#[test]
fn a_leader_verifies_with_a_coordinator_on_another_node() -> Result<()> {
    let cluster = Cluster::start(3, &settings())?;
    let bootstrap = cluster.bootstrap();
    let p = producer(&bootstrap)?;
    let coordinator = txn_coordinator(&cluster, TXN_ID)?;
    let leader = cluster
        .ids()
        .into_iter()
        .find(|i| *i != coordinator)
        .context("no other node")?;
    let replicas: Vec<i32> = std::iter::once(leader as i32)
        .chain(
            cluster
                .ids()
                .into_iter()
                .filter(|i| *i != leader)
                .map(|i| i as i32),
        )
        .collect();
    cluster.create_topic(
        &cluster.ids(),
        &NewTopic::new("txv", 1, TopicReplication::Variable(&[&replicas])),
        Duration::from_secs(20),
    )?;
    cluster.wait_views("txv led by its first replica", &[leader], T, |views| {
        let part = &views[0].topic("txv")?.partitions[0];
        ensure!(
            part.leader == leader as i32 && part.isr.len() == 3,
            "{part:?}"
        );
        Ok(())
    })?;
    let send = |value: &str| -> Result<()> {
        block_on(p.send(
            FutureRecord::<(), _>::to("txv").partition(0).payload(value),
            T,
        ))
        .map(|_| ())
        .map_err(|(e, _)| e.into())
    };
    p.begin_transaction()?;
    send("aborted")?;
    p.abort_transaction(T)?;
    let next = common::txn::next_batch_of(&bootstrap, "txv", 0)?;
    let watermarks = |level: &str| -> Result<i64> {
        let c: BaseConsumer = Cluster::client_config(&bootstrap)
            .set("group.id", "txv-check")
            .set("isolation.level", level)
            .create()?;
        Ok(c.fetch_watermarks("txv", 0, T)?.1)
    };
    // the aborted record, then its marker (which follows the client's answer)
    common::cluster::wait_for("the abort's marker", T, || {
        Ok((watermarks("read_uncommitted")? == 2).then_some(()))
    })?;
    let error = common::txn::produce_late(cluster.kafka_addr(leader), "txv", TXN_ID, next)?;
    ensure!(
        error == 48,
        "the late batch got error {error}, not INVALID_TXN_STATE"
    );
    // nothing after the marker
    ensure!(
        watermarks("read_uncommitted")? == 2,
        "the late batch was appended"
    );
    ensure!(
        watermarks("read_committed")? == 2,
        "the last stable offset is held"
    );
    p.begin_transaction()?;
    send("committed")?;
    p.commit_transaction(T)?;
    // the commit's marker follows the client's answer
    common::cluster::wait_for("the commit's marker", T, || {
        let end = watermarks("read_committed")?;
        ensure!(end == 4, "read_committed end {end}");
        Ok(Some(()))
    })
}
