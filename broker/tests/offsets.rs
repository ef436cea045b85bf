//! ListOffsets (earliest, latest, by timestamp) through rdkafka's `fetch_watermarks` and
//! `offsets_for_times`, and OFFSET_OUT_OF_RANGE handling for a consumer positioned past
//! the end with auto.offset.reset = error / earliest / latest.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::{block_on, BrokerProcess, OP_TIMEOUT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const BASE_TS: i64 = 1_700_000_000_000;

/// Produces `n` records to partition 0 with timestamps BASE_TS + i * 1000.
fn produce_timestamped(broker: &BrokerProcess, topic: &str, n: i64) -> Result<()> {
    let producer: FutureProducer = broker.producer(&[("linger.ms", "0")])?;
    block_on(async {
        for i in 0..n {
            let v = format!("v{i}");
            let rec = FutureRecord::<(), _>::to(topic)
                .partition(0)
                .payload(&v)
                .timestamp(BASE_TS + i * 1000);
            match producer.send(rec, Duration::from_secs(10)).await {
                Ok(d) => ensure!(d.offset == i, "record {i} acked at offset {}", d.offset),
                Err((e, _)) => bail!("produce {i}: {e}"),
            }
        }
        Ok(())
    })
}

fn offset_for_time(consumer: &BaseConsumer, topic: &str, ts: i64) -> Result<Offset> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(ts))?;
    let out = consumer.offsets_for_times(tpl, OP_TIMEOUT)?;
    let Some(elem) = out.find_partition(topic, 0) else {
        bail!("no partition 0 in result")
    };
    if let Err(e) = elem.error() {
        bail!("offsets_for_times({ts}) error: {e}");
    }
    Ok(elem.offset())
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("times", 1, &[])?;
    ensure!(
        broker.watermarks("times", 0)? == (0, 0),
        "empty partition watermarks"
    );
    produce_timestamped(&broker, "times", 10)?;
    ensure!(
        broker.watermarks("times", 0)? == (0, 10),
        "watermarks after 10 records: {:?}",
        broker.watermarks("times", 0)?
    );

    let consumer: BaseConsumer = broker.consumer(&[])?;
    // The earliest offset whose timestamp is >= the target.
    for (ts, want) in [
        (BASE_TS - 5_000, Offset::Offset(0)),
        (BASE_TS, Offset::Offset(0)),
        (BASE_TS + 1, Offset::Offset(1)),
        (BASE_TS + 3_500, Offset::Offset(4)),
        (BASE_TS + 9_000, Offset::Offset(9)),
        (BASE_TS + 9_001, Offset::End),
    ] {
        let got = offset_for_time(&consumer, "times", ts)?;
        ensure!(
            got == want,
            "offsets_for_times({}) = {got:?}, want {want:?}",
            ts - BASE_TS
        );
    }
    // Unknown partition: an error, not a made-up offset.
    if let Ok(w) = consumer.fetch_watermarks("times", 7, OP_TIMEOUT) {
        bail!("watermarks of a missing partition: {w:?}");
    }
    Ok(())
}

/// Assigns partition 0 at `offset` and returns the first poll outcome within a bound.
fn first_poll(
    consumer: &BaseConsumer,
    topic: &str,
    offset: i64,
) -> Result<std::result::Result<(i64, Vec<u8>), KafkaError>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + OP_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => return Ok(Ok((m.offset(), m.payload().unwrap_or_default().to_vec()))),
            Some(Err(e)) => return Ok(Err(e)),
        }
    }
    bail!("neither a record nor an error within {OP_TIMEOUT:?}")
}

#[test]
fn fetch_past_the_end_is_offset_out_of_range() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("short", 1, &[])?;
    produce_timestamped(&broker, "short", 5)?;

    // auto.offset.reset=error: the broker's OFFSET_OUT_OF_RANGE surfaces as an error.
    let strict = broker.consumer(&[("auto.offset.reset", "error")])?;
    match first_poll(&strict, "short", 100)? {
        Ok((o, _)) => bail!("offset 100 of a 5-record partition delivered offset {o}"),
        Err(KafkaError::MessageConsumption(code)) => ensure!(
            matches!(
                code,
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
            ),
            "want OFFSET_OUT_OF_RANGE, got {code:?}"
        ),
        Err(e) => bail!("want OFFSET_OUT_OF_RANGE, got {e}"),
    }

    // auto.offset.reset=earliest: reset to 0 and read from there.
    let earliest = broker.consumer(&[("auto.offset.reset", "earliest")])?;
    match first_poll(&earliest, "short", 100)? {
        Ok((o, v)) => ensure!(
            o == 0 && v == b"v0",
            "after reset to earliest got offset {o}"
        ),
        Err(e) => bail!("reset to earliest failed: {e}"),
    }

    // Offset == high watermark is not out of range: the consumer waits for the next record.
    let at_end = broker.consumer(&[("auto.offset.reset", "error")])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("short", 0, Offset::Offset(5))?;
    at_end.assign(&tpl)?;
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Some(r) = at_end.poll(Duration::from_millis(100)) {
            match r {
                Ok(m) => bail!("got offset {} before anything was produced", m.offset()),
                Err(e) => bail!("offset == high watermark treated as an error: {e}"),
            }
        }
    }
    let producer: FutureProducer = broker.producer(&[("linger.ms", "0")])?;
    if let Err((e, _)) = block_on(
        producer.send(
            FutureRecord::<(), _>::to("short")
                .partition(0)
                .payload("v5"),
            Duration::from_secs(10),
        ),
    ) {
        bail!("produce v5: {e}");
    }
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        ensure!(
            Instant::now() < deadline,
            "record at the old end never arrived"
        );
        match at_end.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                ensure!(
                    m.offset() == 5 && m.payload() == Some(b"v5".as_slice()),
                    "got offset {}",
                    m.offset()
                );
                break;
            }
            Some(Err(e)) => bail!("consuming from the end: {e}"),
        }
    }
    Ok(())
}

/// ListOffsets with timestamp -3 (MAX_TIMESTAMP, KIP-734, v7+) returns the offset and
/// timestamp of the record with the largest timestamp, not the last one.
#[test]
fn list_offsets_max_timestamp() -> Result<()> {
    use common::raw::RawClient;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("maxts", 1, &[])?;
    let producer: FutureProducer = broker.producer(&[("linger.ms", "0")])?;
    block_on(async {
        for (i, dt) in [5_000i64, 9_000, 3_000, 7_000].into_iter().enumerate() {
            let v = format!("m{i}");
            let rec = FutureRecord::<(), _>::to("maxts")
                .partition(0)
                .payload(&v)
                .timestamp(BASE_TS + dt);
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(10)).await {
                bail!("produce {i}: {e}");
            }
        }
        Ok(())
    })?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let Ok(v) = c.version_for::<ListOffsetsRequest>(10) else {
        bail!("no ListOffsets")
    };
    ensure!(
        v >= 7,
        "broker advertises ListOffsets only up to v{v}; MAX_TIMESTAMP needs v7"
    );
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("maxts")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3)])]);
    let resp = c.call(v, &req)?;
    let p = resp.topics.first().and_then(|t| t.partitions.first());
    let Some(p) = p else {
        bail!("no partition in ListOffsets response")
    };
    ensure!(
        p.error_code == 0 && p.offset == 1 && p.timestamp == BASE_TS + 9_000,
        "MAX_TIMESTAMP: error {} offset {} timestamp {}, want offset 1 at +9000",
        p.error_code,
        p.offset,
        p.timestamp - BASE_TS
    );
    Ok(())
}

/// One producer batch of ten records, compressed: a lookup by time finds the record
/// inside it (not the batch's first offset), MAX_TIMESTAMP the record holding the
/// largest timestamp, and after DeleteRecords moved the start inside the batch no answer
/// lies below the start (a consumer seeking there would be reset past the rest).
#[test]
fn lookups_by_time_inside_one_compressed_batch() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("ctimes", 1, &[])?;
    let producer: FutureProducer = broker.producer(&[
        ("linger.ms", "200"),
        ("compression.codec", "gzip"),
        ("batch.num.messages", "1000"),
    ])?;
    // the largest timestamp on record 6, out of order
    let dts: Vec<i64> = (0..10)
        .map(|i| if i == 6 { 50_000 } else { i * 1000 })
        .collect();
    block_on(async {
        let mut acks = Vec::new();
        for (i, dt) in dts.iter().enumerate() {
            // compressible: librdkafka sends a batch uncompressed when gzip does not shrink it
            let v = format!("c{i}{}", "z".repeat(500));
            let rec = FutureRecord::<(), _>::to("ctimes")
                .partition(0)
                .payload(&v)
                .timestamp(BASE_TS + dt);
            match producer.send_result(rec) {
                Ok(f) => acks.push(f),
                Err((e, _)) => bail!("enqueue {i}: {e}"),
            }
        }
        for (i, f) in acks.into_iter().enumerate() {
            match f.await {
                Ok(Ok(d)) => ensure!(d.offset == i as i64, "record {i} at {}", d.offset),
                other => bail!("record {i}: {other:?}"),
            }
        }
        Ok(())
    })?;
    let consumer: BaseConsumer = broker.consumer(&[])?;
    for (ts, want) in [(BASE_TS + 4_500, 5), (BASE_TS + 5_000, 5), (BASE_TS, 0)] {
        let got = offset_for_time(&consumer, "ctimes", ts)?;
        ensure!(
            got == Offset::Offset(want),
            "offsets_for_times(+{}) = {got:?}, want {want}",
            ts - BASE_TS
        );
    }
    ensure!(
        max_timestamp(&broker, "ctimes")? == (6, BASE_TS + 50_000),
        "MAX_TIMESTAMP inside the batch"
    );
    let admin = broker.admin()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ctimes", 0, Offset::Offset(7))?;
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    block_on(admin.delete_records(&tpl, &opts))?;
    for (ts, want) in [(BASE_TS, 7), (BASE_TS + 8_000, 8)] {
        let got = offset_for_time(&consumer, "ctimes", ts)?;
        ensure!(
            got == Offset::Offset(want),
            "after DeleteRecords to 7: offsets_for_times(+{}) = {got:?}, want {want}",
            ts - BASE_TS
        );
    }
    Ok(())
}

/// ListOffsets MAX_TIMESTAMP of partition 0: (offset, timestamp).
fn max_timestamp(broker: &BrokerProcess, topic: &str) -> Result<(i64, i64)> {
    use common::raw::RawClient;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut c = RawClient::connect(broker.addr())?;
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3)])]);
    let resp = c.call(7, &req)?;
    let Some(p) = resp.topics.first().and_then(|t| t.partitions.first()) else {
        bail!("no partition in ListOffsets response")
    };
    ensure!(p.error_code == 0, "MAX_TIMESTAMP error {}", p.error_code);
    Ok((p.offset, p.timestamp))
}
