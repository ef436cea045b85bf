//! Bad input from well-formed clients, checked on a real `sluice` process: record batches
//! whose CRC is right but whose content lies (counts, offset deltas, control or codec
//! bits, producer fields, size) are refused before append and leave the log as it was,
//! while valid batches (also compressed) on the same connection go on landing; internal
//! topics (`__consumer_offsets`, reserved names) are refused to clients' produce, create,
//! delete, config and partition requests, and consumer groups still work.
//! Invariants: every wait is bounded (a deadline or a socket timeout); every broker is a
//! `BrokerProcess`, killed when it drops; nothing asserts on speed.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use common::kafka::{
    all_topics, connect, create_partitions, high_watermark, produce, topic_name, TS,
};
use common::raw::{compressed_batch, producer_batch, record_batch};
use common::{send_one, BrokerProcess};
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, DeleteTopicsRequest, IncrementalAlterConfigsRequest, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUEST: i16 = 42;
const INVALID_RECORD: i16 = 87;
const INVALID_TIMESTAMP: i16 = 32;

// ---------------------------------------------------------------------------------------
// 1. Record batches validated before append
// ---------------------------------------------------------------------------------------

const LAST_OFFSET_DELTA: usize = 23;
const PRODUCER_ID: usize = 43;
const RECORDS_COUNT: usize = 57;
const RECORDS_START: usize = 61;

/// Recomputes a v2 batch's CRC-32C (over [21..end), stored big-endian at [17..21)).
fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sets i32 header fields, then the CRC, so only semantic checks can catch the lie.
fn with_fields(batch: &Bytes, fields: &[(usize, i32)]) -> Bytes {
    let mut b = batch.to_vec();
    for (at, value) in fields {
        b[*at..*at + 4].copy_from_slice(&value.to_be_bytes());
    }
    fix_crc(&mut b);
    Bytes::from(b)
}

/// ORs `bits` into the attributes (low byte at 22), then fixes the CRC.
fn with_attributes(batch: &Bytes, bits: u8) -> Bytes {
    let mut b = batch.to_vec();
    b[22] |= bits;
    fix_crc(&mut b);
    Bytes::from(b)
}

/// A zigzag varint at the start of `b`: (value, bytes used).
fn varint(b: &[u8]) -> Result<(i64, usize)> {
    let mut raw = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    bail!("bad varint")
}

/// Byte position of record `index`'s offsetDelta varint in an uncompressed v2 batch.
fn offset_delta_pos(batch: &[u8], index: usize) -> Result<usize> {
    let mut pos = RECORDS_START;
    for _ in 0..index {
        let (len, n) = varint(&batch[pos..])?;
        pos += n + usize::try_from(len)?;
    }
    pos += varint(&batch[pos..])?.1; // length
    pos += 1; // attributes
    pos += varint(&batch[pos..])?.1; // timestampDelta
    Ok(pos)
}

#[test]
fn record_batches_are_validated_before_append() -> Result<()> {
    const TOPIC: &str = "checked";
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic(TOPIC, 1, &[("max.message.bytes", "65536")])?;
    let mut client = connect(&broker)?;
    let mut observer = connect(&broker)?;
    let good = record_batch(&["a", "b", "c"], TS)?;
    let (code, base) = produce(&mut client, TOPIC, good.clone())?;
    ensure!(
        code == 0 && base == 0,
        "first batch: code {code}, base {base}"
    );
    let mut end = 3i64;

    let one = record_batch(&["only"], TS)?;
    let huge_count = with_fields(
        &one,
        &[(RECORDS_COUNT, i32::MAX), (LAST_OFFSET_DELTA, i32::MAX - 1)],
    );
    let mut dup = good.to_vec();
    let at = offset_delta_pos(&dup, 1)?;
    ensure!(
        dup[at] == 2,
        "record 1's offsetDelta is not 1 (zigzag 2): {}",
        dup[at]
    );
    dup[at] = 0;
    fix_crc(&mut dup);
    let values = ["z0", "z1", "z2", "z3", "z4"];
    let zstd = compressed_batch(&values, TS, Compression::Zstd)?;
    ensure!(zstd[22] & 7 == 4, "encoder did not compress with zstd");
    let zstd_liar = with_fields(&zstd, &[(RECORDS_COUNT, 1000), (LAST_OFFSET_DELTA, 999)]);
    let mut pid7 = producer_batch(&["p"], TS, 7, 0, -1)?.to_vec();
    ensure!(
        pid7[PRODUCER_ID..PRODUCER_ID + 8] == 7i64.to_be_bytes(),
        "producer id not at byte 43"
    );
    fix_crc(&mut pid7);
    let big_value = "x".repeat(70_000);
    let too_large = record_batch(&[&big_value], TS)?;
    // message.timestamp.after.max.ms defaults to 1 hour (Kafka 4.0)
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let future = record_batch(&["late"], now_ms + 2 * 3_600_000)?;

    let mut crc_off = good.to_vec();
    let last = crc_off.len() - 2;
    crc_off[last] ^= 0x01;
    let mut based = good.to_vec();
    based[..8].copy_from_slice(&5i64.to_be_bytes()); // outside the CRC
                                                     // malformed records are Kafka's InvalidRecordException (INVALID_RECORD, not retried by
                                                     // clients); CORRUPT_MESSAGE (retriable) is kept for a CRC mismatch
    let cases: Vec<(&str, Bytes, i16)> = vec![
        (
            "one record, recordsCount 2^31-1 and lastOffsetDelta 2^31-2",
            huge_count,
            INVALID_RECORD,
        ),
        (
            "second record's offset delta 0",
            Bytes::from(dup),
            INVALID_RECORD,
        ),
        (
            "two batches for one partition (Produce v3+: exactly one)",
            [good.clone(), good.clone()].concat().into(),
            INVALID_RECORD,
        ),
        (
            "base offset 5 (a client's is 0)",
            based.into(),
            INVALID_RECORD,
        ),
        ("a CRC that does not match", crc_off.into(), CORRUPT_MESSAGE),
        (
            "control batch",
            with_attributes(&good, 0x20),
            INVALID_RECORD,
        ),
        (
            "compression codec 7",
            with_attributes(&good, 0x07),
            INVALID_RECORD,
        ),
        (
            "producer id 7 with base sequence -1",
            Bytes::from(pid7),
            INVALID_RECORD,
        ),
        (
            "zstd batch claiming 1000 records holding 5",
            zstd_liar,
            INVALID_RECORD,
        ),
        (
            "batch over max.message.bytes (65536)",
            too_large,
            MESSAGE_TOO_LARGE,
        ),
        (
            "record timestamp two hours ahead",
            future,
            INVALID_TIMESTAMP,
        ),
    ];
    for (what, batch, want) in cases {
        let (code, _) = produce(&mut client, TOPIC, batch)?;
        ensure!(code == want, "{what}: error code {code}, want {want}");
        let hw = high_watermark(&mut observer, TOPIC)?;
        ensure!(hw == end, "{what}: log end moved from {end} to {hw}");
        // The same connection goes on: a valid batch lands at the old log end.
        let (code, base) = produce(&mut client, TOPIC, good.clone())?;
        ensure!(
            code == 0 && base == end,
            "valid batch after \"{what}\": code {code}, base {base}, want base {end}"
        );
        end += 3;
    }

    // Correct compressed batches are accepted and read back whole.
    for compression in [
        Compression::Zstd,
        Compression::Lz4,
        Compression::Gzip,
        Compression::Snappy,
    ] {
        let batch = compressed_batch(&values, TS, compression)?;
        let (code, base) = produce(&mut client, TOPIC, batch)?;
        ensure!(
            code == 0 && base == end,
            "valid {compression:?} batch: code {code}, base {base}, want base {end}"
        );
        let (code, _, mut records) = observer.fetch_once(TOPIC, 0, base)?;
        ensure!(
            code == 0,
            "fetch of the {compression:?} batch: error {code}"
        );
        let set = RecordBatchDecoder::decode(&mut records)?;
        let got: Vec<(i64, Option<Bytes>)> = set
            .records
            .iter()
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        let want: Vec<(i64, Option<Bytes>)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (base + i as i64, Some(Bytes::copy_from_slice(v.as_bytes()))))
            .collect();
        ensure!(got == want, "{compression:?} batch read back as {got:?}");
        end += values.len() as i64;
    }
    ensure!(
        high_watermark(&mut observer, TOPIC)? == end,
        "final log end"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Internal topics
// ---------------------------------------------------------------------------------------

const OFFSETS_TOPIC: &str = "__consumer_offsets";

#[test]
fn internal_topics_are_refused_to_clients() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("group.initial.rebalance.delay.ms", "0")])?;
    broker.create_topic("grouped", 1, &[])?;
    let mut c = connect(&broker)?;
    let before = all_topics(&mut c)?;
    let Some(&offsets_partitions) = before.get(OFFSETS_TOPIC) else {
        bail!("{OFFSETS_TOPIC} is not in Metadata: {before:?}");
    };

    // Produce to two partitions of __consumer_offsets.
    let batch = record_batch(&["forged"], TS)?;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(OFFSETS_TOPIC))
            .with_partition_data(
                (0..2)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let version = c.version_for::<ProduceRequest>(12)?;
    let resp = c.call(version, &req)?;
    let codes: Vec<i16> = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect();
    ensure!(
        codes == [INVALID_TOPIC_EXCEPTION, INVALID_TOPIC_EXCEPTION],
        "produce to {OFFSETS_TOPIC}: error codes {codes:?}, want 17 for each partition"
    );

    // CreateTopics of reserved names.
    let reserved = ["__transaction_state", "__cluster_metadata"];
    let created = c.create_topics(&[(reserved[0], 1), (reserved[1], 1)])?;
    for name in reserved {
        let code = created.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
        ensure!(
            code == Some(INVALID_REQUEST),
            "CreateTopics {name}: {code:?}, want INVALID_REQUEST (42); all results {created:?}"
        );
    }
    // Not auto-created by a Metadata naming them either.
    let md = c.metadata(Some(&reserved), true)?;
    for t in &md.topics {
        ensure!(
            t.error_code != 0,
            "Metadata naming {:?} answered it without an error",
            t.name
        );
    }
    let topics = all_topics(&mut c)?;
    for name in reserved {
        ensure!(!topics.contains_key(name), "{name} exists: {topics:?}");
    }

    // DeleteTopics (names form: v1..=5).
    let version = c.version_for::<DeleteTopicsRequest>(5)?;
    let resp = c.call(
        version,
        &DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topic_names(vec![topic_name(OFFSETS_TOPIC)]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes == [INVALID_TOPIC_EXCEPTION],
        "DeleteTopics {OFFSETS_TOPIC}: {codes:?}, want [17]"
    );

    // IncrementalAlterConfigs and AlterConfigs on the topic (resource type 2).
    let version = c.version_for::<IncrementalAlterConfigsRequest>(1)?;
    let resp = c.call(
        version,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("1000")))]),
        ]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "IncrementalAlterConfigs on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );
    let version = c.version_for::<AlterConfigsRequest>(2)?;
    let resp = c.call(
        version,
        &AlterConfigsRequest::default().with_resources(vec![LegacyResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC))
            .with_configs(vec![LegacyConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000")))])]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "AlterConfigs on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );

    // CreatePartitions.
    let codes = create_partitions(&mut c, OFFSETS_TOPIC, offsets_partitions as i32 + 1)?;
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "CreatePartitions on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );
    let after = all_topics(&mut c)?;
    ensure!(
        after.get(OFFSETS_TOPIC) == Some(&offsets_partitions),
        "{OFFSETS_TOPIC} changed: {:?} partitions, was {offsets_partitions}",
        after.get(OFFSETS_TOPIC)
    );

    // Consumer groups still work: a member reads a record and commits its offset.
    let producer = broker.producer(&[("linger.ms", "0")])?;
    let offset = send_one(&producer, "grouped", "for the group")?;
    let member: BaseConsumer = broker
        .client_config()
        .set("group.id", "hardening-group")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    member.subscribe(&["grouped"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        ensure!(
            Instant::now() < deadline,
            "group member got no record within 30 s"
        );
        match member.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => break m.offset(),
            Some(Err(e)) => eprintln!("group member: {e}"),
            None => {}
        }
    };
    ensure!(
        got == offset,
        "group member read offset {got}, produced {offset}"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("grouped", 0, Offset::Offset(offset + 1))?;
    member.commit(&tpl, CommitMode::Sync)?;
    let observer: BaseConsumer = broker
        .client_config()
        .set("group.id", "hardening-group")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ask = TopicPartitionList::new();
    ask.add_partition("grouped", 0);
    let committed = observer.committed_offsets(ask, common::OP_TIMEOUT)?;
    let got: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    ensure!(
        got == [Offset::Offset(offset + 1)],
        "committed offsets {got:?}, want {}",
        offset + 1
    );
    Ok(())
}
