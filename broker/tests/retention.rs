//! Retention: with retention.bytes or retention.ms exceeded, whole closed segments are
//! deleted, the log start offset (ListOffsets earliest) moves forward and survives a
//! restart, a consumer from the beginning starts there, and a fetch below it is
//! OFFSET_OUT_OF_RANGE. As in Kafka, an expired active segment goes too (after a roll).
//! The broker runs with log.retention.check.interval.ms=300 so checks come quickly.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Result};
use common::{block_on, payload_seq, record_payload, BrokerProcess};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const SETTINGS: &[(&str, &str)] = &[("log.retention.check.interval.ms", "300")];

/// Produces `n` ~1 KB records to partition 0 with the given timestamp (None = now).
fn produce(broker: &BrokerProcess, topic: &str, n: u64, ts: Option<i64>) -> Result<()> {
    let producer = broker.producer(&[("linger.ms", "2"), ("batch.num.messages", "20")])?;
    let filler = "r".repeat(1_000);
    let mut futures = Vec::new();
    for seq in 0..n {
        let payload = format!("{}{filler}", record_payload(seq));
        let mut rec = FutureRecord::<(), _>::to(topic)
            .partition(0)
            .payload(&payload);
        if let Some(ts) = ts {
            rec = rec.timestamp(ts);
        }
        match producer.send_result(rec) {
            Ok(f) => futures.push(f),
            Err((e, _)) => bail!("enqueue {seq}: {e}"),
        }
    }
    block_on(async {
        for (seq, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => bail!("record {seq}: {e}"),
                Err(_) => bail!("record {seq}: cancelled"),
            }
        }
        Ok(())
    })
}

/// Waits (bounded) until the low watermark moves above 0; returns (low, high).
fn wait_for_log_start(broker: &BrokerProcess, topic: &str) -> Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, high) = broker.watermarks(topic, 0)?;
        if low > 0 {
            return Ok((low, high));
        }
        if Instant::now() > deadline {
            bail!("retention never advanced the log start offset (watermarks {low}..{high})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// From the beginning, a consumer gets exactly offsets low..high, with matching payloads.
fn check_readable_from(broker: &BrokerProcess, topic: &str, low: i64, high: i64) -> Result<()> {
    let consumed = broker.consume_all(topic, 1)?;
    let offsets: Vec<i64> = consumed.iter().map(|c| c.offset).collect();
    let want: Vec<i64> = (low..high).collect();
    ensure!(
        offsets == want,
        "after retention read offsets {:?}..{:?} ({} records), want {low}..{high}",
        offsets.first(),
        offsets.last(),
        offsets.len()
    );
    for c in &consumed {
        let seq = payload_seq(c.payload.as_deref().unwrap_or_default())?;
        ensure!(
            seq as i64 == c.offset,
            "offset {} holds seq {seq}",
            c.offset
        );
    }
    Ok(())
}

/// With auto.offset.reset=error, assigning offset 0 (now deleted) is OFFSET_OUT_OF_RANGE.
fn check_below_start_is_out_of_range(broker: &BrokerProcess, topic: &str) -> Result<()> {
    let consumer = broker.consumer(&[("auto.offset.reset", "error")])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => bail!(
                "offset 0 was deleted but the consumer got offset {}",
                m.offset()
            ),
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
            ))) => return Ok(()),
            Some(Err(_)) => {} // e.g. a one-off coordinator error; keep waiting
        }
    }
    bail!("no OFFSET_OUT_OF_RANGE for a deleted offset within 15 s")
}

#[test]
fn retention_bytes_deletes_old_segments_and_moves_log_start() -> Result<()> {
    let mut broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic(
        "by-size",
        1,
        &[("segment.bytes", "65536"), ("retention.bytes", "200000")],
    )?;
    produce(&broker, "by-size", 1_000, None)?;
    let (low, high) = wait_for_log_start(&broker, "by-size")?;
    ensure!(high == 1_000, "high watermark {high}");
    // About 1 MB written, 200 KB kept: most of the log is gone but not more than allowed
    // plus one segment.
    ensure!(
        low >= 500,
        "only offsets below {low} deleted; ~80% should be"
    );
    ensure!(
        high - low >= 150,
        "kept only {} records (~190 KB); more than retention.bytes was deleted",
        high - low
    );
    check_readable_from(&broker, "by-size", low, high)?;
    check_below_start_is_out_of_range(&broker, "by-size")?;

    // The log start offset is durable: it does not go back after a restart.
    let status = broker.sigterm()?;
    ensure!(status.success(), "SIGTERM exit {status}");
    broker.restart()?;
    let (low2, high2) = broker.watermarks("by-size", 0)?;
    ensure!(
        low2 >= low && high2 == high,
        "after restart watermarks {low2}..{high2}, before {low}..{high}"
    );
    check_readable_from(&broker, "by-size", low2, high2)
}

#[test]
fn retention_ms_deletes_expired_segments_and_offsets_continue() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, SETTINGS)?;
    broker.create_topic(
        "by-time",
        1,
        &[("segment.bytes", "65536"), ("retention.ms", "60000")],
    )?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    // Records stamped two hours ago are past retention.ms at once. As in Kafka, once every
    // segment has expired the active one goes too (the log rolls first), so the log
    // start offset reaches the end.
    produce(&broker, "by-time", 500, Some(now - 2 * 3_600_000))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, high) = broker.watermarks("by-time", 0)?;
        ensure!(high == 500, "high watermark {high}");
        if low == 500 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "expired records still there: log start {low}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    check_below_start_is_out_of_range(&broker, "by-time")?;

    // New, fresh records continue at offset 500 and are kept.
    produce(&broker, "by-time", 10, None)?;
    std::thread::sleep(Duration::from_secs(2)); // several retention checks
    let (low, high) = broker.watermarks("by-time", 0)?;
    ensure!(
        (low, high) == (500, 510),
        "after fresh records: {low}..{high}, want 500..510"
    );
    let consumed = broker.consume_all("by-time", 1)?;
    let offsets: Vec<i64> = consumed.iter().map(|c| c.offset).collect();
    ensure!(
        offsets == (500..510).collect::<Vec<_>>(),
        "read {offsets:?}"
    );
    Ok(())
}
