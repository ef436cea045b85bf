//! Broker-side compression (`compression.type`, topic and broker): rdkafka producers in one
//! codec, batches stored in the topic's, changed live by AlterConfigs, read back whole by
//! an rdkafka consumer, through `kill -9`; the broker default; an idempotent producer;
//! zstd and the Produce / Fetch versions that predate it (KIP-110).

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::old_wire::produce_v0_v2;
use common::raw::{compressed_batch, partition_result, produce_request, RawClient};
use common::{block_on, BrokerProcess, OP_TIMEOUT};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(OP_TIMEOUT))
        .request_timeout(Some(OP_TIMEOUT))
}

/// Sends `values` (keyed by their index) and waits for every acknowledgement.
fn send_all(producer: &FutureProducer, topic: &str, values: &[String]) -> Result<()> {
    let mut futures = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        match producer.send_result(FutureRecord::to(topic).key(&key).payload(v)) {
            Ok(f) => futures.push(f),
            Err((e, _)) => bail!("enqueue {i}: {e}"),
        }
    }
    block_on(async {
        for (i, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => bail!("record {i} not acknowledged: {e}"),
                Err(_) => bail!("record {i}: delivery cancelled"),
            }
        }
        Ok(())
    })
}

/// The codec of every batch stored in partition 0 from `from` on, by base offset, read
/// with raw Fetches (the stored bytes, not what a client decodes).
fn stored_codecs(broker: &BrokerProcess, topic: &str, from: i64) -> Result<BTreeMap<i64, i16>> {
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let mut out = BTreeMap::new();
    let mut at = from;
    loop {
        let (err, high, records) = raw.fetch_once(topic, 0, at)?;
        ensure!(err == 0, "raw fetch at {at}: error {err}");
        let mut rest = &records[..];
        let mut next = at;
        while rest.len() >= 61 {
            let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize + 12;
            if len > rest.len() {
                break;
            }
            let base = i64::from_be_bytes(rest[..8].try_into()?);
            let delta = i32::from_be_bytes([rest[23], rest[24], rest[25], rest[26]]);
            out.insert(base, i16::from_be_bytes([rest[21], rest[22]]) & 7);
            next = base + i64::from(delta) + 1;
            rest = &rest[len..];
        }
        if next >= high {
            return Ok(out);
        }
        ensure!(
            next > at,
            "no whole batch at offset {at} (high watermark {high})"
        );
        at = next;
    }
}

/// Sets `compression.type` on `topic` (AlterConfigs), then sends probe records in
/// `probe_codec` until one is stored in `want` (the change reaches the partition's shard
/// through the metadata log); returns the log end after it.
fn set_topic_compression(
    broker: &BrokerProcess,
    topic: &str,
    value: &str,
    probe_codec: &str,
    want: i16,
) -> Result<i64> {
    let admin = broker.admin()?;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("compression.type", value);
    let results = block_on(admin.alter_configs([&alter], &opts()))?;
    ensure!(results.iter().all(|r| r.is_ok()), "alter: {results:?}");
    let producer = broker.producer(&[("compression.codec", probe_codec)])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = broker.watermarks(topic, 0)?.1;
        // compressible, or librdkafka sends it uncompressed
        send_all(&producer, topic, &[probe()])?;
        if stored_codecs(broker, topic, before)?
            .values()
            .all(|&c| c == want)
        {
            return Ok(broker.watermarks(topic, 0)?.1);
        }
        ensure!(
            Instant::now() < deadline,
            "{topic}: compression.type={value} never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn probe() -> String {
    format!("probe {}", "x".repeat(500))
}

fn values(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "payload ".repeat(i % 40)))
        .collect()
}

#[test]
fn topic_compression_type_sets_the_stored_codec_live_and_survives_kill_9() -> Result<()> {
    let mut broker = BrokerProcess::spawn(1)?;
    let topic = "recompressed";
    broker.create_topic(topic, 1, &[("compression.type", "gzip")])?;
    // (producer codec, topic compression.type, codec stored)
    let steps = [
        ("none", "gzip", 1i16),
        ("lz4", "zstd", 4),
        ("snappy", "uncompressed", 0),
        ("lz4", "producer", 3),
    ];
    let mut sent: Vec<String> = Vec::new();
    for (i, &(codec, value, want)) in steps.iter().enumerate() {
        let from = if i == 0 {
            0
        } else {
            let end = set_topic_compression(&broker, topic, value, codec, want)?;
            sent.extend((sent.len() as i64..end).map(|_| probe()));
            end
        };
        let batch = values(value, 3000);
        let producer = broker.producer(&[
            ("compression.codec", codec),
            ("linger.ms", "20"),
            ("batch.num.messages", "500"),
        ])?;
        send_all(&producer, topic, &batch)?;
        sent.extend(batch);
        let codecs = stored_codecs(&broker, topic, from)?;
        ensure!(
            codecs.len() > 1 && codecs.values().all(|&c| c == want),
            "producer {codec}, compression.type={value}: stored codecs {codecs:?}, want all {want}"
        );
    }
    let check = |broker: &BrokerProcess| -> Result<()> {
        let got = broker.consume_all(topic, 1)?;
        ensure!(
            got.len() == sent.len(),
            "read {} of {}",
            got.len(),
            sent.len()
        );
        for (i, (c, want)) in got.iter().zip(&sent).enumerate() {
            ensure!(c.offset == i as i64, "record {i} at offset {}", c.offset);
            ensure!(
                c.payload.as_deref() == Some(want.as_bytes()),
                "offset {i}: value differs"
            );
            ensure!(
                c.timestamp.is_some_and(|t| t > 0),
                "offset {i}: no timestamp"
            );
        }
        Ok(())
    };
    check(&broker)?;
    broker.kill9()?;
    broker.restart()?;
    check(&broker)?;
    let codecs = stored_codecs(&broker, topic, 0)?;
    ensure!(
        codecs.values().filter(|&&c| c == 1).count() > 1,
        "the gzip batches after restart: {codecs:?}"
    );
    Ok(())
}

#[test]
fn broker_default_applies_to_topics_without_an_override_and_keeps_idempotence() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, &[("compression.type", "lz4")])?;
    broker.create_topic("by-default", 1, &[])?;
    broker.create_topic("as-produced", 1, &[("compression.type", "producer")])?;
    let admin = broker.admin()?;
    let described =
        block_on(admin.describe_configs([&ResourceSpecifier::Topic("by-default")], &opts()))?;
    let Some(Ok(resource)) = described.first() else {
        bail!("describe configs: {described:?}")
    };
    let entry = resource.get("compression.type");
    ensure!(
        entry.and_then(|e| e.value.as_deref()) == Some("lz4"),
        "compression.type described as {entry:?}"
    );

    let idempotent = broker.producer(&[
        ("enable.idempotence", "true"),
        ("message.send.max.retries", "10"),
        ("compression.codec", "none"),
        ("batch.num.messages", "500"),
        ("linger.ms", "10"),
    ])?;
    let sent = values("idem", 5000);
    send_all(&idempotent, "by-default", &sent)?;
    send_all(&idempotent, "as-produced", &sent)?;
    for (topic, want) in [("by-default", 3i16), ("as-produced", 0)] {
        let codecs = stored_codecs(&broker, topic, 0)?;
        ensure!(
            codecs.values().all(|&c| c == want),
            "{topic}: stored codecs {codecs:?}, want all {want}"
        );
        let got = broker.consume_all(topic, 1)?;
        let payloads: Vec<_> = got.iter().map(|c| c.payload.clone()).collect();
        let want: Vec<_> = sent.iter().map(|v| Some(v.clone().into_bytes())).collect();
        ensure!(
            payloads == want,
            "{topic}: records differ from what was sent"
        );
    }

    // Kafka's values only: `none` is a producer codec name, not a topic setting
    let bad =
        NewTopic::new("bad-codec", 1, TopicReplication::Fixed(1)).set("compression.type", "none");
    let results = block_on(admin.create_topics([&bad], &opts()))?;
    ensure!(
        matches!(
            results.as_slice(),
            [Err((_, RDKafkaErrorCode::InvalidConfig))]
        ),
        "compression.type=none gave {results:?}"
    );
    Ok(())
}

/// The error code of partition 0 of `topic` in a Fetch at `version` from offset 0.
fn fetch_error(raw: &mut RawClient, topic: &str, version: i16) -> Result<i16> {
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = raw.call(version, &req)?;
    let Some(p) = resp.responses.first().and_then(|t| t.partitions.first()) else {
        bail!("Fetch v{version} answer without a partition: {resp:?}")
    };
    Ok(p.error_code)
}

#[test]
fn zstd_is_refused_to_produce_and_fetch_versions_older_than_zstd() -> Result<()> {
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("zstd-topic", 1, &[("compression.type", "zstd")])?;
    broker.create_topic("plain", 1, &[])?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let zstd = compressed_batch(&["a", "b", "c"], 1_700_000_000_000, Compression::Zstd)?;
    let plain = compressed_batch(&["d", "e"], 1_700_000_000_000, Compression::None)?;
    let produce = |raw: &mut RawClient, version: i16, topic: &str, records: &Bytes| {
        let req = produce_request(topic, 0, -1, records.clone());
        partition_result(&raw.call(version, &req)?)
    };
    // Produce: zstd batches only from v7 on; a plain batch into a zstd topic is fine
    ensure!(produce(&mut raw, 6, "plain", &zstd)?.0 == UNSUPPORTED_COMPRESSION_TYPE);
    ensure!(produce(&mut raw, 7, "plain", &zstd)? == (0, 0));
    ensure!(produce(&mut raw, 3, "zstd-topic", &plain)? == (0, 0));
    // v0-2 take v2 batches as they are (no up-conversion): no zstd there either
    for v in 0..=2 {
        ensure!(produce_v0_v2(&mut raw, v, "plain", &zstd)?.0 == UNSUPPORTED_COMPRESSION_TYPE);
    }
    ensure!(produce_v0_v2(&mut raw, 2, "plain", &plain)?.0 == 0);
    // a damaged batch bound for recompression is refused, never given a fresh CRC
    let mut damaged = plain.to_vec();
    // the last value's byte (before the record's header count): the records still
    // parse, only the CRC is wrong
    let at = damaged.len() - 2;
    ensure!(damaged[at] == b'e', "layout of the test batch changed");
    damaged[at] = b'f';
    let damaged = Bytes::from(damaged);
    const CORRUPT_MESSAGE: i16 = 2;
    ensure!(produce(&mut raw, 9, "zstd-topic", &damaged)?.0 == CORRUPT_MESSAGE);
    ensure!(
        broker.watermarks("zstd-topic", 0)?.1 == 2,
        "the damaged batch was stored"
    );
    // Fetch: a topic stored in zstd only from v10 on (Kafka checks the topic's setting)
    for (topic, version, want) in [
        ("zstd-topic", 4, UNSUPPORTED_COMPRESSION_TYPE),
        ("zstd-topic", 9, UNSUPPORTED_COMPRESSION_TYPE),
        ("zstd-topic", 10, 0),
        ("zstd-topic", 12, 0),
        ("plain", 9, 0),
    ] {
        let got = fetch_error(&mut raw, topic, version)?;
        ensure!(
            got == want,
            "{topic} Fetch v{version}: error {got}, want {want}"
        );
    }
    let codecs = stored_codecs(&broker, "zstd-topic", 0)?;
    ensure!(
        codecs.values().all(|&c| c == 4),
        "zstd-topic stored {codecs:?}"
    );

    // max.message.bytes holds before and after recompression, as Kafka checks both: a
    // small gzip batch that inflates past it, and a batch already past it
    const MESSAGE_TOO_LARGE: i16 = 10;
    broker.create_topic(
        "small",
        1,
        &[
            ("compression.type", "uncompressed"),
            ("max.message.bytes", "4000"),
        ],
    )?;
    let big_value = "x".repeat(9000);
    let inflates = compressed_batch(&[big_value.as_str()], 1_700_000_000_000, Compression::Gzip)?;
    ensure!(inflates.len() < 4000);
    ensure!(produce(&mut raw, 9, "small", &inflates)?.0 == MESSAGE_TOO_LARGE);
    let noise: String = (0..6000u32)
        .map(|i| char::from(b'a' + ((i * 7919) % 26) as u8))
        .collect();
    let past = compressed_batch(&[noise.as_str()], 1_700_000_000_000, Compression::None)?;
    ensure!(produce(&mut raw, 9, "small", &past)?.0 == MESSAGE_TOO_LARGE);
    ensure!(produce(&mut raw, 9, "small", &plain)? == (0, 0));
    Ok(())
}

/// Bytes stored in partition 0 of `topic` (whole batches, read with raw Fetches).
fn stored_bytes(broker: &BrokerProcess, topic: &str) -> Result<usize> {
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let (err, high, records) = raw.fetch_once(topic, 0, 0)?;
    ensure!(err == 0, "raw fetch of {topic}: error {err}");
    ensure!(
        broker.watermarks(topic, 0)?.1 == high && !records.is_empty(),
        "{topic}: one fetch did not hold the partition"
    );
    Ok(records.len())
}

#[test]
fn compression_levels_change_what_the_broker_stores() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("compression.zstd.level", "1")])?;
    let sent = values("level", 3000);
    let mut sizes = BTreeMap::new();
    for (topic, configs) in [
        (
            "gzip-1",
            vec![
                ("compression.type", "gzip"),
                ("compression.gzip.level", "1"),
            ],
        ),
        (
            "gzip-9",
            vec![
                ("compression.type", "gzip"),
                ("compression.gzip.level", "9"),
            ],
        ),
        // the broker's default level (1 here), then a topic's own
        ("zstd-default", vec![("compression.type", "zstd")]),
        (
            "zstd-19",
            vec![
                ("compression.type", "zstd"),
                ("compression.zstd.level", "19"),
            ],
        ),
    ] {
        broker.create_topic(topic, 1, &configs)?;
        let producer = broker.producer(&[("compression.codec", "none"), ("linger.ms", "50")])?;
        send_all(&producer, topic, &sent)?;
        sizes.insert(topic, stored_bytes(&broker, topic)?);
        let got = broker.consume_all(topic, 1)?;
        ensure!(
            got.len() == sent.len(),
            "{topic}: read {} records",
            got.len()
        );
    }
    ensure!(
        sizes["gzip-9"] < sizes["gzip-1"] && sizes["zstd-19"] < sizes["zstd-default"],
        "higher levels did not store less: {sizes:?}"
    );
    // Kafka's ranges: gzip 1-9 or -1 (not 0), lz4 1-17
    let admin = broker.admin()?;
    for (name, value) in [
        ("compression.gzip.level", "0"),
        ("compression.lz4.level", "18"),
    ] {
        let bad = NewTopic::new("bad-level", 1, TopicReplication::Fixed(1)).set(name, value);
        let results = block_on(admin.create_topics([&bad], &opts()))?;
        ensure!(
            matches!(
                results.as_slice(),
                [Err((_, RDKafkaErrorCode::InvalidConfig))]
            ),
            "{name}={value} gave {results:?}"
        );
    }
    Ok(())
}
