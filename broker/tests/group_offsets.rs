//! Committed offsets and the topics they name, as Kafka keeps them: OffsetCommit and
//! OffsetDelete answer UNKNOWN_TOPIC_OR_PARTITION for a topic or partition that does not
//! exist (nothing is stored), and deleting a topic deletes its committed offsets, so a
//! group reading a topic re-created under the name starts from `auto.offset.reset`
//! instead of skipping records; through `kill -9`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::raw::RawClient;
use common::{block_on, BrokerProcess, OP_TIMEOUT};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

/// A simple commit (generation -1, no member) of (topic, partition, offset)s; returns each
/// partition's error code by (topic, partition).
fn commit(
    c: &mut RawClient,
    group: &str,
    offsets: &[(&str, i32, i64)],
) -> Result<BTreeMap<(String, i32), i16>> {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for &(t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(p)
            .with_committed_offset(o);
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(name(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(topics);
    let resp = c.call(c.version_for::<OffsetCommitRequest>(8)?, &req)?;
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            out.insert((t.name.0.to_string(), p.partition_index), p.error_code);
        }
    }
    Ok(out)
}

/// The committed offset of each partition asked (-1: none).
fn committed(c: &mut RawClient, group: &str, topic: &str, parts: &[i32]) -> Result<Vec<i64>> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(parts.to_vec())]));
    let resp = c.call(c.version_for::<OffsetFetchRequest>(7)?, &req)?;
    ensure!(
        resp.error_code == 0,
        "OffsetFetch error {}",
        resp.error_code
    );
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
        .collect())
}

#[test]
fn offsets_of_missing_topics_and_partitions_are_refused() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("one", 1, &[])?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let got = commit(
        &mut raw,
        "g",
        &[
            ("one", 0, 5),
            ("one", 42, 6),
            ("one", -1, 6),
            ("nope", 0, 7),
        ],
    )?;
    let want: BTreeMap<(String, i32), i16> = [
        (("one".to_string(), 0), 0),
        (("one".to_string(), 42), UNKNOWN_TOPIC_OR_PARTITION),
        (("one".to_string(), -1), UNKNOWN_TOPIC_OR_PARTITION),
        (("nope".to_string(), 0), UNKNOWN_TOPIC_OR_PARTITION),
    ]
    .into();
    ensure!(got == want, "commit answered {got:?}");
    ensure!(committed(&mut raw, "g", "one", &[0, 42])? == vec![5, -1]);
    ensure!(committed(&mut raw, "g", "nope", &[0])? == vec![-1]);
    // nothing known at all: refused whole
    let got = commit(&mut raw, "ghost", &[("nope", 0, 1), ("nope", 1, 1)])?;
    ensure!(
        got.len() == 2 && got.values().all(|&e| e == UNKNOWN_TOPIC_OR_PARTITION),
        "{got:?}"
    );

    // OffsetDelete: the unknown partition answered, the known one deleted
    let req = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(name("one"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                    OffsetDeleteRequestPartition::default().with_partition_index(9),
                ]),
            OffsetDeleteRequestTopic::default()
                .with_name(name("nope"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ]),
        ]);
    let resp = raw.call(0, &req)?;
    ensure!(resp.error_code == 0, "OffsetDelete: {}", resp.error_code);
    let codes: BTreeMap<(String, i32), i16> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect();
    let want: BTreeMap<(String, i32), i16> = [
        (("one".to_string(), 0), 0),
        (("one".to_string(), 9), UNKNOWN_TOPIC_OR_PARTITION),
        (("nope".to_string(), 0), UNKNOWN_TOPIC_OR_PARTITION),
    ]
    .into();
    ensure!(codes == want, "OffsetDelete answered {codes:?}");
    ensure!(committed(&mut raw, "g", "one", &[0])? == vec![-1]);

    // DescribeGroups with authorized operations (KIP-430): without an authorizer, every
    // operation of a group (READ 3, DELETE 6, DESCRIBE 8), as Kafka answers
    commit(&mut raw, "g", &[("one", 0, 1)])?;
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("g"))])
        .with_include_authorized_operations(true);
    let resp = raw.call(5, &req)?;
    let ops = resp.groups[0].authorized_operations;
    ensure!(
        ops == (1 << 3) | (1 << 6) | (1 << 8),
        "authorized operations {ops:#x}"
    );
    Ok(())
}

/// Every value a group consumer (auto.offset.reset=earliest, committing at the end) reads
/// from `topic`: it polls until it has `want`, then half a second more.
fn group_reads(
    broker: &BrokerProcess,
    group: &str,
    topic: &str,
    want: usize,
) -> Result<Vec<String>> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut got = Vec::new();
    let deadline = Instant::now() + OP_TIMEOUT;
    while got.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // a little longer: nothing more may come
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(got)
}

fn send(broker: &BrokerProcess, topic: &str, values: &[String]) -> Result<()> {
    let producer = broker.producer(&[])?;
    block_on(async {
        for v in values {
            if let Err((e, _)) = producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(v),
                    Duration::from_secs(10),
                )
                .await
            {
                bail!("produce {v}: {e}");
            }
        }
        Ok(())
    })
}

#[test]
fn a_deleted_topics_offsets_are_deleted_so_a_recreated_topic_is_read_whole() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    broker.create_topic("again", 1, &[])?;
    let old: Vec<String> = (0..5).map(|i| format!("old-{i}")).collect();
    send(&broker, "again", &old)?;
    ensure!(group_reads(&broker, "readers", "again", 5)? == old);
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    ensure!(committed(&mut raw, "readers", "again", &[0])? == vec![5]);

    // the group's `__consumer_offsets` partition (Kafka's: of the group id's Java hash code)
    let partitions = {
        let c: BaseConsumer = broker.client_config().create()?;
        let md = c.fetch_metadata(Some("__consumer_offsets"), OP_TIMEOUT)?;
        md.topics()[0].partitions().len() as i32
    };
    let hash = "readers"
        .encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    // Kafka's Utils.abs: Math.abs, with i32::MIN as 0
    let coordinator_partition = hash.checked_abs().unwrap_or(0) % partitions.max(1);
    let written = broker
        .watermarks("__consumer_offsets", coordinator_partition)?
        .1;

    let admin = broker.admin()?;
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let r = block_on(admin.delete_topics(&["again"], &opts))?;
    ensure!(r.iter().all(|r| r.is_ok()), "delete: {r:?}");
    let deadline = Instant::now() + OP_TIMEOUT;
    while committed(&mut raw, "readers", "again", &[0])? != vec![-1] {
        ensure!(
            Instant::now() < deadline,
            "the deleted topic's offset is still committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // the deletion's tombstones are durable (written in the background: wait for the
    // partition's high watermark), so a kill -9 does not bring the offset back
    while broker
        .watermarks("__consumer_offsets", coordinator_partition)?
        .1
        <= written
    {
        ensure!(
            Instant::now() < deadline,
            "the tombstones never became durable"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill9()?;
    broker.restart()?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    ensure!(committed(&mut raw, "readers", "again", &[0])? == vec![-1]);

    broker.create_topic("again", 1, &[])?;
    let new: Vec<String> = (0..8).map(|i| format!("new-{i}")).collect();
    send(&broker, "again", &new)?;
    let got = group_reads(&broker, "readers", "again", 8)?;
    ensure!(
        got == new,
        "the group read {got:?} from the re-created topic"
    );
    Ok(())
}
