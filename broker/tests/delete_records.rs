//! DeleteRecords through rdkafka's AdminClient (librdkafka's `rd_kafka_DeleteRecords`, as
//! `kafka-delete-records.sh` and Kafka Streams use it): the low watermark moves, reads
//! below it are out of range, a consumer from the beginning starts there, the disk space
//! of the segments below it returns, and all of it holds after `kill -9`. Errors by their
//! Kafka codes: past the high watermark, unknown partitions, compacted and internal
//! topics; and the raw protocol at v0 and v2.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::raw::RawClient;
use common::{block_on, BrokerProcess, OP_TIMEOUT};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::DeleteRecordsRequest;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

fn opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(OP_TIMEOUT))
        .request_timeout(Some(OP_TIMEOUT))
}

/// `n` records to `partition` of `topic`, ~1 KB each, acknowledged.
fn produce(broker: &BrokerProcess, topic: &str, partition: i32, n: usize) -> Result<()> {
    let producer = broker.producer(&[("linger.ms", "0")])?;
    let payload = "v".repeat(1000);
    block_on(async {
        for i in 0..n {
            let key = format!("k{i}");
            let rec = FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload);
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(20)).await {
                bail!("produce {topic}-{partition} #{i}: {e}");
            }
        }
        Ok(())
    })
}

/// Per (partition, requested offset): Ok(low watermark) or the error code.
fn delete_records(
    broker: &BrokerProcess,
    topic: &str,
    offsets: &[(i32, Offset)],
) -> Result<Vec<(i32, Result<i64, RDKafkaErrorCode>)>> {
    let admin = broker.admin()?;
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, o)?;
    }
    let out = block_on(admin.delete_records(&tpl, &opts()))?;
    let mut res = Vec::new();
    for e in out.elements() {
        let r = match e.error() {
            Ok(()) => match e.offset() {
                Offset::Offset(o) => Ok(o),
                other => bail!("partition {}: low watermark {other:?}", e.partition()),
            },
            Err(KafkaError::OffsetFetch(code)) | Err(KafkaError::AdminOp(code)) => Err(code),
            Err(other) => bail!("partition {}: {other}", e.partition()),
        };
        res.push((e.partition(), r));
    }
    res.sort_by_key(|r| r.0);
    Ok(res)
}

/// The first offset a consumer assigned at the beginning of `partition` receives.
fn first_consumed(broker: &BrokerProcess, topic: &str, partition: i32) -> Result<i64> {
    let c: BaseConsumer = broker
        .client_config()
        .set("group.id", "dr-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    c.assign(&tpl)?;
    let deadline = Instant::now() + OP_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            return Ok(m?.offset());
        }
    }
    bail!("nothing consumed from {topic}-{partition}")
}

/// A raw Fetch of `partition` at `offset`: its error code.
fn fetch_error(c: &mut RawClient, topic: &str, partition: i32, offset: i64) -> Result<i16> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::FetchRequest;
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(common::kafka::topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = c.call(11, &req)?;
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the Fetch answer")?;
    Ok(p.error_code)
}

fn segment_count(dir: &std::path::Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        if e?.file_name().to_string_lossy().ends_with(".log") {
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn delete_records_moves_the_low_watermark_durably_and_frees_segments() -> Result<()> {
    let mut broker = BrokerProcess::spawn(2)?;
    broker.create_topic("dr", 3, &[("segment.bytes", "16384")])?;
    for p in 0..3 {
        produce(&broker, "dr", p, 100)?;
    }
    let p0_dir = broker.data_dir().join("dr-0");
    let segments_before = segment_count(&p0_dir)?;
    ensure!(segments_before >= 4, "{segments_before} segments in dr-0");

    let res = delete_records(
        &broker,
        "dr",
        &[
            (0, Offset::Offset(60)),
            (1, Offset::End),
            (2, Offset::Offset(101)),
        ],
    )?;
    ensure!(
        res == vec![
            (0, Ok(60)),
            (1, Ok(100)),
            (2, Err(RDKafkaErrorCode::OffsetOutOfRange)),
        ],
        "DeleteRecords answers: {res:?}"
    );
    ensure!(broker.watermarks("dr", 0)? == (60, 100));
    ensure!(broker.watermarks("dr", 1)? == (100, 100));
    ensure!(broker.watermarks("dr", 2)? == (0, 100));
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    ensure!(
        fetch_error(&mut c, "dr", 0, 59)? == 1,
        "below the start: OFFSET_OUT_OF_RANGE"
    );
    ensure!(fetch_error(&mut c, "dr", 0, 60)? == 0);
    ensure!(first_consumed(&broker, "dr", 0)? == 60);
    // the segments wholly below offset 60 are deleted at once
    let deadline = Instant::now() + OP_TIMEOUT;
    while segment_count(&p0_dir)? >= segments_before {
        ensure!(
            Instant::now() < deadline,
            "segments below the start were not deleted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // a lower offset leaves the low watermark where it is
    ensure!(delete_records(&broker, "dr", &[(0, Offset::Offset(10))])? == vec![(0, Ok(60))]);

    broker.kill9()?;
    broker.restart()?;
    broker.wait_for_topic("dr", 3)?;
    ensure!(broker.watermarks("dr", 0)? == (60, 100), "after kill -9");
    ensure!(broker.watermarks("dr", 1)? == (100, 100), "after kill -9");
    ensure!(first_consumed(&broker, "dr", 0)? == 60, "after kill -9");
    // appends go on after everything was deleted
    produce(&broker, "dr", 1, 3)?;
    ensure!(broker.watermarks("dr", 1)? == (100, 103));
    ensure!(first_consumed(&broker, "dr", 1)? == 100);
    Ok(())
}

#[test]
fn delete_records_refuses_compacted_and_internal_topics_and_old_versions_answer() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("dr-compact", 1, &[("cleanup.policy", "compact")])?;
    broker.create_topic("dr-both", 1, &[("cleanup.policy", "compact,delete")])?;
    produce(&broker, "dr-compact", 0, 5)?;
    produce(&broker, "dr-both", 0, 5)?;
    let res = delete_records(&broker, "dr-compact", &[(0, Offset::Offset(2))])?;
    ensure!(
        res == vec![(0, Err(RDKafkaErrorCode::PolicyViolation))],
        "compact only: {res:?}"
    );
    ensure!(delete_records(&broker, "dr-both", &[(0, Offset::Offset(2))])? == vec![(0, Ok(2))]);
    // the group coordinator's topic exists once a group committed
    let consumer = broker.consumer(&[("group.id", "dr-g")])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dr-both", 0, Offset::Offset(3))?;
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;

    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let req = |topic: &str, offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(common::kafka::topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(offset)])])
    };
    // a partition named twice (in two entries of one topic) is answered once, for the
    // last offset named
    let mut twice = req("dr-both", 1);
    twice.topics.push(req("dr-both", 3).topics.remove(0));
    let r = c.call(2, &twice)?;
    ensure!(
        r.topics.len() == 1
            && r.topics[0].partitions.len() == 1
            && (
                r.topics[0].partitions[0].error_code,
                r.topics[0].partitions[0].low_watermark
            ) == (0, 3),
        "a partition named twice: {r:?}"
    );
    for v in [0, 1, 2] {
        let r = c.call(v, &req("dr-both", 4))?;
        let p = &r.topics[0].partitions[0];
        ensure!((p.error_code, p.low_watermark) == (0, 4), "v{v}: {r:?}");
    }
    let r = c.call(2, &req("__consumer_offsets", 1))?;
    let p = &r.topics[0].partitions[0];
    ensure!(
        p.error_code == 17,
        "internal topic: INVALID_TOPIC_EXCEPTION, got {r:?}"
    );
    let r = c.call(2, &req("dr-both", -5))?;
    ensure!(
        r.topics[0].partitions[0].error_code == 1,
        "negative offset: {r:?}"
    );
    let r = c.call(2, &req("no-such-topic", 0))?;
    ensure!(
        r.topics[0].partitions[0].error_code == 3,
        "unknown topic: {r:?}"
    );
    // (librdkafka refuses an unknown partition itself; the broker answers it too)
    let mut unknown = req("dr-both", 0);
    unknown.topics[0].partitions[0].partition_index = 7;
    let r = c.call(2, &unknown)?;
    ensure!(
        r.topics[0].partitions[0].error_code == 3,
        "unknown partition: {r:?}"
    );
    Ok(())
}
