//! Transactions with librdkafka against a real broker process: commits and aborts across
//! partitions of two topics read by read_committed and read_uncommitted consumers (also
//! after kill -9), zombie fencing by a second producer with the same transactional id, a
//! transaction left open past its timeout aborted by the coordinator, and transactional
//! offset commits (`send_offsets_to_transaction`) counted only when their transaction
//! commits.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{block_on, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

/// Small internal topics so the broker starts them quickly; the coordinator checks for
/// timed-out transactions every 200 ms.
const SETTINGS: &[(&str, &str)] = &[
    ("offsets.topic.num.partitions", "3"),
    ("transaction.state.log.num.partitions", "3"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    ),
];

fn txn_producer(
    broker: &BrokerProcess,
    id: &str,
    extra: &[(&str, &str)],
) -> Result<FutureProducer> {
    let mut cfg = broker.client_config();
    cfg.set("transactional.id", id)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("transaction.timeout.ms", "60000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    let p: FutureProducer = cfg.create()?;
    p.init_transactions(T).context("init_transactions")?;
    Ok(p)
}

/// Sends `values` (partition, value) inside the current transaction and waits for the acks.
fn send_all(
    p: &FutureProducer,
    topic_of: &dyn Fn(i32) -> (String, i32),
    values: &[(i32, String)],
) -> Result<()> {
    block_on(async {
        let mut futs = Vec::new();
        for (slot, v) in values {
            let (topic, partition) = topic_of(*slot);
            futs.push(
                p.send_result(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(v.as_str()),
                )
                .map_err(|(e, _)| e)?,
            );
        }
        for f in futs {
            f.await?.map_err(|(e, _)| e)?;
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// Reads every listed partition from the beginning up to its end offset as the
/// consumer's isolation level sees it (librdkafka asks ListOffsets with that level), and
/// returns the values read.
fn read_values(
    broker: &BrokerProcess,
    parts: &[(String, i32)],
    isolation: &str,
) -> Result<Vec<String>> {
    let consumer = broker.consumer(&[("isolation.level", isolation)])?;
    let mut highs: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        let (_, high) = consumer.fetch_watermarks(t, *p, T)?;
        highs.insert((t.clone(), *p), high);
        tpl.add_partition_offset(t, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut values = Vec::new();
    let mut position: BTreeMap<(String, i32), i64> = highs.keys().map(|k| (k.clone(), 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while highs.iter().any(|(k, h)| position[k] < *h) {
        if Instant::now() > deadline {
            bail!("{isolation}: timed out at {position:?}, ends {highs:?}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let key = (m.topic().to_string(), m.partition());
            if let Some(p) = position.get_mut(&key) {
                *p = (*p).max(m.offset() + 1);
            }
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        // control records are skipped by the client; a partition whose tail is a marker
        // is done once the consumer's position passed it
        for (k, h) in &highs {
            if let Ok(Offset::Offset(o)) = consumer.position().and_then(|tpl| {
                tpl.find_partition(&k.0, k.1)
                    .map(|e| e.offset())
                    .ok_or(rdkafka::error::KafkaError::Subscription("gone".into()))
            }) {
                if o >= *h {
                    position.insert(k.clone(), o);
                }
            }
        }
    }
    Ok(values)
}

/// read_committed reads exactly `committed`, each once; read_uncommitted reads both sets.
fn check(
    broker: &BrokerProcess,
    parts: &[(String, i32)],
    committed: &BTreeSet<String>,
    aborted: &BTreeSet<String>,
    when: &str,
) -> Result<()> {
    let read = read_values(broker, parts, "read_committed")?;
    let set: BTreeSet<String> = read.iter().cloned().collect();
    ensure!(
        set.len() == read.len(),
        "{when}: a committed record was read twice"
    );
    ensure!(
        &set == committed,
        "{when}: read_committed read {} records, want the {} committed ({} aborted among them)",
        set.len(),
        committed.len(),
        set.intersection(aborted).count()
    );
    let all: BTreeSet<String> = read_values(broker, parts, "read_uncommitted")?
        .into_iter()
        .collect();
    let want: BTreeSet<String> = committed.union(aborted).cloned().collect();
    ensure!(
        all == want,
        "{when}: read_uncommitted read {} records, want {}",
        all.len(),
        want.len()
    );
    Ok(())
}

#[test]
fn read_committed_sees_each_committed_record_once_and_no_aborted_one() -> Result<()> {
    let mut broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic("txa", 3, &[])?;
    broker.create_topic("txb", 3, &[])?;
    let topic_of = |slot: i32| (if slot < 3 { "txa" } else { "txb" }.to_string(), slot % 3);
    let parts: Vec<(String, i32)> = (0..6).map(topic_of).collect();
    let producer = txn_producer(&broker, "tx-alternate", &[])?;
    let (mut committed, mut aborted) = (BTreeSet::new(), BTreeSet::new());
    for txn in 0..10 {
        producer.begin_transaction()?;
        let values: Vec<(i32, String)> = (0..30).map(|i| (i % 6, format!("t{txn}-r{i}"))).collect();
        send_all(&producer, &topic_of, &values)?;
        if txn % 2 == 0 {
            producer.commit_transaction(T).context("commit")?;
            committed.extend(values.into_iter().map(|(_, v)| v));
        } else {
            producer.abort_transaction(T).context("abort")?;
            aborted.extend(values.into_iter().map(|(_, v)| v));
        }
    }
    check(&broker, &parts, &committed, &aborted, "before restart")?;
    drop(producer);
    broker.kill9()?;
    broker.restart()?;
    check(&broker, &parts, &committed, &aborted, "after kill -9")?;
    // the transactional id lives on: a new producer continues with a higher epoch
    let again = txn_producer(&broker, "tx-alternate", &[])?;
    again.begin_transaction()?;
    send_all(&again, &topic_of, &[(0, "after-restart".to_string())])?;
    again.commit_transaction(T)?;
    committed.insert("after-restart".to_string());
    check(
        &broker,
        &parts,
        &committed,
        &aborted,
        "after a commit following the restart",
    )
}

#[test]
fn a_zombie_is_fenced_and_an_open_transaction_times_out() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, SETTINGS)?;
    broker.create_topic("txz", 1, &[])?;
    let topic_of = |_| ("txz".to_string(), 0);
    let parts = vec![("txz".to_string(), 0)];
    let zombie = txn_producer(&broker, "tx-zombie", &[])?;
    zombie.begin_transaction()?;
    send_all(&zombie, &topic_of, &[(0, "zombie".to_string())])?;
    // a second instance with the same id fences the first and aborts its transaction
    let successor = txn_producer(&broker, "tx-zombie", &[])?;
    successor.begin_transaction()?;
    send_all(&successor, &topic_of, &[(0, "successor".to_string())])?;
    successor.commit_transaction(T)?;
    ensure!(
        zombie.commit_transaction(T).is_err(),
        "the fenced producer committed"
    );
    let read = read_values(&broker, &parts, "read_committed")?;
    ensure!(
        read == vec!["successor".to_string()],
        "read_committed read {read:?}"
    );

    // left open past its 2 s timeout, the coordinator aborts it and the LSO moves on
    let idle = txn_producer(
        &broker,
        "tx-idle",
        &[
            ("transaction.timeout.ms", "2000"),
            ("socket.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
        ],
    )?;
    idle.begin_transaction()?;
    send_all(&idle, &topic_of, &[(0, "abandoned".to_string())])?;
    // (librdkafka's default isolation level is read_committed: ask both explicitly)
    let consumer = broker.consumer(&[("isolation.level", "read_committed")])?;
    let uncommitted = broker.consumer(&[("isolation.level", "read_uncommitted")])?;
    let (_, stable) = consumer.fetch_watermarks("txz", 0, T)?;
    let (_, end) = uncommitted.fetch_watermarks("txz", 0, T)?;
    ensure!(
        stable < end,
        "the open transaction did not hold the last stable offset ({stable} vs {end})"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stable) = consumer.fetch_watermarks("txz", 0, T)?;
        let (_, end) = uncommitted.fetch_watermarks("txz", 0, T)?;
        if stable == end {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the timed-out transaction still holds the LSO at {stable} (end {end})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = read_values(&broker, &parts, "read_committed")?;
    ensure!(
        read == vec!["successor".to_string()],
        "after the timeout, read_committed read {read:?}"
    );
    Ok(())
}

#[test]
fn offsets_sent_to_a_transaction_count_only_if_it_commits() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic("txin", 1, &[])?;
    broker.create_topic("txout", 1, &[])?;
    let group = "txn-group";
    let producer = txn_producer(&broker, "tx-offsets", &[])?;
    let consumer: BaseConsumer = broker.consumer(&[("group.id", group)])?;
    let committed = |c: &BaseConsumer| -> Result<Offset> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("txin", 0);
        let got = c.committed_offsets(tpl, T)?;
        Ok(got
            .find_partition("txin", 0)
            .context("no partition")?
            .offset())
    };
    let offsets = |o: i64| -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("txin", 0, Offset::Offset(o))?;
        Ok(tpl)
    };
    let metadata = consumer.group_metadata().context("group metadata")?;
    producer.begin_transaction()?;
    send_all(
        &producer,
        &|_| ("txout".to_string(), 0),
        &[(0, "out-1".to_string())],
    )?;
    producer.send_offsets_to_transaction(&offsets(10)?, &metadata, T)?;
    producer.abort_transaction(T)?;
    ensure!(
        committed(&consumer)? == Offset::Invalid,
        "an aborted transaction's offset counted"
    );
    producer.begin_transaction()?;
    send_all(
        &producer,
        &|_| ("txout".to_string(), 0),
        &[(0, "out-2".to_string())],
    )?;
    producer.send_offsets_to_transaction(&offsets(20)?, &metadata, T)?;
    producer.commit_transaction(T)?;
    // the marker reaches __consumer_offsets after the commit's answer: poll, bounded
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = committed(&consumer)?;
        if o == Offset::Offset(20) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "committed offset is {o:?}, want 20"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = read_values(&broker, &[("txout".to_string(), 0)], "read_committed")?;
    ensure!(
        read == vec!["out-2".to_string()],
        "read_committed read {read:?}"
    );
    Ok(())
}

/// KIP-890 for TxnOffsetCommit: a transactional offset commit that arrives after its
/// transaction was aborted (held up past the client's abort) is refused with
/// INVALID_TXN_STATE instead of leaving offsets pending that no marker ever settles, which
/// would make every stable OffsetFetch of the group answer UNSTABLE_OFFSET_COMMIT.
#[test]
fn a_late_offset_commit_after_its_transaction_ended_is_refused() -> Result<()> {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        GroupId, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    };
    use kafka_protocol::protocol::StrBytes;

    let broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic("lin", 1, &[])?;
    let group = "late-group";
    let producer = txn_producer(&broker, "late-offsets", &[])?;
    let consumer: BaseConsumer = broker.consumer(&[("group.id", group)])?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("lin", 0, Offset::Offset(10))?;
    let metadata = consumer.group_metadata().context("group metadata")?;
    producer.begin_transaction()?;
    producer.send_offsets_to_transaction(&offsets, &metadata, T)?;
    producer.abort_transaction(T)?;
    let bootstrap = broker.bootstrap();
    let deadline = Instant::now() + T;
    let described = loop {
        let d = common::txn::sluice_txn(&bootstrap, &["describe", "late-offsets"])?;
        if d["state"] == "CompleteAbort" {
            break d;
        }
        ensure!(Instant::now() < deadline, "the abort did not complete: {d}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = described["producer_id"].as_i64().context("producer_id")?;
    let epoch = described["producer_epoch"]
        .as_i64()
        .context("producer_epoch")?;
    let late = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str("late-offsets")))
        .with_group_id(GroupId(StrBytes::from_static_str(group)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(i16::try_from(epoch)?)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("lin")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(30)])]);
    let mut c = common::raw::RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let resp = c.call(3, &late)?;
    let error = resp.topics[0].partitions[0].error_code;
    ensure!(
        error == 48,
        "the late offset commit got error {error}, not INVALID_TXN_STATE"
    );
    // nothing pending: a stable fetch of the group's offsets answers at once, with none
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("lin", 0);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let offset = got
        .find_partition("lin", 0)
        .context("no partition")?
        .offset();
    ensure!(offset == Offset::Invalid, "committed offset {offset:?}");
    Ok(())
}

/// A connection's transaction requests take effect in the order sent, as Kafka handles
/// them one at a time: an AddPartitionsToTxn that waits for the previous transaction's
/// markers is not overtaken by the EndTxn pipelined after it (librdkafka sends both
/// without waiting when it aborts right after a commit). That EndTxn was judged against
/// the old transaction (INVALID_TXN_STATE) and left the new one open until its timeout.
#[test]
fn pipelined_transaction_requests_take_effect_in_order() -> Result<()> {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
        ProducerId, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;

    const PARTS: i32 = 50;
    let broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic("tpo", PARTS, &[])?;
    let mut c = common::raw::RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let id = || TransactionalId(StrBytes::from_static_str("pipelined"));
    let init = |c: &mut common::raw::RawClient| -> Result<(i64, i16)> {
        let deadline = Instant::now() + T;
        loop {
            let find = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str("pipelined"))
                .with_key_type(1);
            let found = c.call(2, &find)?;
            if found.error_code == 0 {
                let req = InitProducerIdRequest::default()
                    .with_transactional_id(Some(id()))
                    .with_transaction_timeout_ms(60_000);
                let r = c.call(1, &req)?;
                if r.error_code == 0 {
                    return Ok((r.producer_id.0, r.producer_epoch));
                }
            }
            ensure!(Instant::now() < deadline, "no InitProducerId");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let add = |(pid, epoch): (i64, i16)| {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(id())
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("tpo")))
                .with_partitions((0..PARTS).collect())])
    };
    let end = |(pid, epoch): (i64, i16), commit: bool| {
        EndTxnRequest::default()
            .with_transactional_id(id())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit)
    };
    let added = |r: &kafka_protocol::messages::AddPartitionsToTxnResponse| -> BTreeSet<i16> {
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect()
    };
    // rounds whose pipelined add succeeded (the case that must be checked)
    let mut added_rounds = 0;
    for round in 0..4 {
        let producer = init(&mut c)?;
        ensure!(added(&c.call(1, &add(producer))?) == BTreeSet::from([0]));
        ensure!(c.call(1, &end(producer, true))?.error_code == 0);
        // the next transaction's add and its abort, back to back, while the commit's
        // markers are still going out
        let a = c.send(1, &add(producer))?;
        let e = c.send(1, &end(producer, false))?;
        let add_codes = added(&c.recv::<AddPartitionsToTxnRequest>(1, a)?);
        let end_code = c.recv::<EndTxnRequest>(1, e)?.error_code;
        ensure!(
            add_codes != BTreeSet::from([0]) || end_code == 0,
            "round {round}: AddPartitionsToTxn {add_codes:?} then EndTxn(abort) {end_code}"
        );
        if add_codes == BTreeSet::from([0]) {
            added_rounds += 1;
        }
    }
    ensure!(
        added_rounds > 0,
        "no pipelined AddPartitionsToTxn succeeded"
    );
    Ok(())
}

/// The admin APIs over an open transaction (what `kafka-transactions.sh` uses):
/// ListTransactions (every coordinator on every shard), DescribeTransactions and
/// DescribeProducers, through the wire as any admin client sends them.
#[test]
fn list_and_describe_an_open_transaction_and_its_producer() -> Result<()> {
    use common::raw::RawClient;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{
        DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
        TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;

    let broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic("txd", 2, &[])?;
    let p = txn_producer(&broker, "tx-described", &[])?;
    p.begin_transaction()?;
    send_all(
        &p,
        &|slot| ("txd".to_string(), slot),
        &[(0, "a".to_string()), (1, "b".to_string())],
    )?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;

    let listed = c.call(1, &ListTransactionsRequest::default())?;
    ensure!(
        listed.error_code == 0,
        "ListTransactions: {}",
        listed.error_code
    );
    let ours: Vec<_> = listed
        .transaction_states
        .iter()
        .filter(|t| t.transactional_id.0.as_str() == "tx-described")
        .collect();
    ensure!(
        ours.len() == 1 && ours[0].transaction_state.as_str() == "Ongoing",
        "listed: {:?}",
        listed.transaction_states
    );
    let pid = ours[0].producer_id.0;

    let described = c.call(
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
            StrBytes::from_static_str("tx-described"),
        )]),
    )?;
    let d = described.transaction_states.first().context("no state")?;
    ensure!(
        d.error_code == 0 && d.transaction_state.as_str() == "Ongoing",
        "{d:?}"
    );
    ensure!(d.producer_id.0 == pid, "{d:?}");
    let parts: BTreeSet<(String, i32)> = d
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), *p))
        })
        .collect();
    ensure!(
        parts == BTreeSet::from([("txd".to_string(), 0), ("txd".to_string(), 1)]),
        "partitions of the transaction: {parts:?}"
    );

    let producers = c.call(
        0,
        &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
            .with_name(common::kafka::topic_name("txd"))
            .with_partition_indexes(vec![0, 1])]),
    )?;
    for part in &producers.topics[0].partitions {
        ensure!(part.error_code == 0, "DescribeProducers: {part:?}");
        let ours = part
            .active_producers
            .iter()
            .find(|s| s.producer_id.0 == pid)
            .with_context(|| format!("producer {pid} not in {part:?}"))?;
        // the transaction's first record is the partition's first record
        ensure!(ours.current_txn_start_offset == 0, "{ours:?}");
    }
    p.commit_transaction(T)?;
    let described = c.call(
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
            StrBytes::from_static_str("tx-described"),
        )]),
    )?;
    let state = described.transaction_states[0]
        .transaction_state
        .to_string();
    ensure!(
        state == "CompleteCommit" || state == "PrepareCommit",
        "after the commit: {state}"
    );
    Ok(())
}

/// KIP-890: a transactional batch that arrives after its transaction ended (a produce
/// request held up past the client's abort, with the next sequence) is refused with
/// INVALID_TXN_STATE, because the partition leader asks the coordinator first; nothing is
/// appended and the last stable offset is not held. The producer's next transaction, which
/// adds the partition, appends as usual.
#[test]
fn a_late_batch_after_its_transaction_ended_opens_no_transaction() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, SETTINGS)?;
    broker.create_topic("txl", 1, &[])?;
    let p = txn_producer(&broker, "late", &[])?;
    let to_txl = |_: i32| ("txl".to_string(), 0);
    p.begin_transaction()?;
    send_all(&p, &to_txl, &[(0, "aborted".into())])?;
    p.abort_transaction(T)?;
    let next = common::txn::next_batch_of(&broker.bootstrap(), "txl", 0)?;
    let committed = broker.consumer(&[("isolation.level", "read_committed")])?;
    let uncommitted = broker.consumer(&[("isolation.level", "read_uncommitted")])?;
    // the record, then the abort marker (which follows the client's answer)
    let deadline = Instant::now() + T;
    while uncommitted.fetch_watermarks("txl", 0, T)?.1 != 2 {
        ensure!(
            Instant::now() < deadline,
            "the abort's marker was not written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = common::txn::produce_late(broker.addr(), "txl", "late", next)?;
    ensure!(
        error == 48,
        "the late batch got error {error}, not INVALID_TXN_STATE"
    );
    ensure!(
        uncommitted.fetch_watermarks("txl", 0, T)?.1 == 2,
        "the late batch was appended"
    );
    ensure!(
        committed.fetch_watermarks("txl", 0, T)?.1 == 2,
        "the last stable offset is held"
    );
    // the producer goes on: its next transaction adds the partition and commits
    p.begin_transaction()?;
    send_all(&p, &to_txl, &[(0, "committed".into())])?;
    p.commit_transaction(T)?;
    // the commit's marker follows the client's answer: the record, then the marker
    let deadline = Instant::now() + T;
    while committed.fetch_watermarks("txl", 0, T)?.1 != 4 {
        ensure!(
            Instant::now() < deadline,
            "the commit's marker was not written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = read_values(&broker, &[("txl".to_string(), 0)], "read_committed")?;
    ensure!(
        read == vec!["committed".to_string()],
        "read_committed read {read:?}"
    );
    Ok(())
}

/// With KIP-890's verification off (`transaction.partition.verification.enable=false`,
/// as Kafka before 3.6), a hanging transaction (transactional data the coordinator never
/// heard of, as a produce request delayed past its transaction's abort would leave) holds
/// the last stable offset until `sluice txn abort` writes an ABORT marker for it, found
/// through `sluice txn producers`, as Kafka's `kafka-transactions.sh abort` does.
#[test]
fn sluice_txn_abort_ends_a_hanging_transaction() -> Result<()> {
    use common::kafka::produce;
    use common::raw::RawClient;
    use kafka_protocol::messages::InitProducerIdRequest;
    use sluice_proto::batch::{build_batch, set_transactional_producer, SimpleRecord};

    let mut settings = SETTINGS.to_vec();
    settings.push(("transaction.partition.verification.enable", "false"));
    let broker = BrokerProcess::spawn_with(1, &settings)?;
    broker.create_topic("txh", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let init = c.call(
        4,
        &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
    )?;
    ensure!(init.error_code == 0, "InitProducerId: {}", init.error_code);
    let record = |v: &'static [u8]| SimpleRecord {
        key: None,
        value: Some(v),
        timestamp: 1,
        headers: &[],
    };
    let mut hanging = build_batch(0, &[record(b"hanging")]).to_vec();
    set_transactional_producer(&mut hanging, init.producer_id.0, init.producer_epoch, 0);
    // a transactional id whose coordinator never heard of this partition (appended, with
    // verification off, as Kafka before KIP-890 does): a transaction nobody ends
    ensure!(
        common::kafka::produce_transactional(&mut c, "txh", "never-began", hanging.into())?.0 == 0,
        "transactional produce"
    );
    ensure!(
        produce(&mut c, "txh", build_batch(0, &[record(b"plain")]))?.0 == 0,
        "produce"
    );
    let committed = broker.consumer(&[("isolation.level", "read_committed")])?;
    let uncommitted = broker.consumer(&[("isolation.level", "read_uncommitted")])?;
    ensure!(
        committed.fetch_watermarks("txh", 0, T)?.1 == 0,
        "the hanging transaction does not hold the LSO"
    );
    ensure!(uncommitted.fetch_watermarks("txh", 0, T)?.1 == 2);

    let sluice = |args: &[&str]| common::txn::sluice_txn(&broker.bootstrap(), args);
    let producers = sluice(&["producers", "txh", "0"])?;
    let ours = producers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["producer_id"] == init.producer_id.0))
        .context("the producer is not listed")?;
    ensure!(ours["current_txn_start_offset"] == 0, "{ours}");
    sluice(&[
        "abort",
        "--topic",
        "txh",
        "--partition",
        "0",
        "--start-offset",
        "0",
    ])?;
    // the marker is the third record: the LSO is the end again
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed.fetch_watermarks("txh", 0, T)?.1 != 3 {
        ensure!(
            Instant::now() < deadline,
            "the LSO did not move after the abort"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = read_values(&broker, &[("txh".to_string(), 0)], "read_committed")?;
    ensure!(
        read == vec!["plain".to_string()],
        "read_committed read {read:?}"
    );
    Ok(())
}
