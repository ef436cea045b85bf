//! Wire-level semantics over raw TCP: acks=0 gets no response, pipelined requests are
//! answered strictly in request order (even behind a parked fetch and across shards),
//! oversized batches get MESSAGE_TOO_LARGE, and an idempotent producer's retried batch is
//! stored once. Each check names the Kafka behaviour it holds the broker to.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::raw::{
    partition_result, produce_request, producer_batch, record_batch, FrameRead, RawClient,
};
use common::BrokerProcess;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    FetchRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const MESSAGE_TOO_LARGE: i16 = 10;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// Waits (bounded) until the partition's high watermark reaches `want`.
fn wait_high(broker: &BrokerProcess, topic: &str, partition: i32, want: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, high) = broker.watermarks(topic, partition)?;
        if high == want {
            return Ok(());
        }
        ensure!(
            high < want,
            "{topic}-{partition}: high watermark {high} > {want}"
        );
        ensure!(
            Instant::now() < deadline,
            "{topic}-{partition}: high watermark stuck at {high}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn acks0_produce_gets_no_response_and_the_next_answer_is_in_order() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("fire-and-forget", 2, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let mv = c.version_for::<MetadataRequest>(12)?;
    for i in 0..3 {
        let batch = record_batch(&["x", "y"], 1_700_000_000_000 + i)?;
        c.send(
            pv,
            &produce_request("fire-and-forget", (i % 2) as i32, 0, batch),
        )?;
    }
    let corr = c.send(mv, &MetadataRequest::default().with_topics(None))?;
    // The first frame back must be the metadata answer: acks=0 produces have none.
    let md = c.recv::<MetadataRequest>(mv, corr)?;
    ensure!(
        md.topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("fire-and-forget")),
        "metadata lacks the topic"
    );
    ensure!(
        !c.has_data_within(Duration::from_millis(500))?,
        "broker sent something for an acks=0 produce"
    );
    wait_high(&broker, "fire-and-forget", 0, 4)?;
    wait_high(&broker, "fire-and-forget", 1, 2)
}

/// Kafka's handleProduceRequest: an acks=0 produce that fails closes the connection (the
/// producer learns of it and refreshes its metadata, instead of losing records silently);
/// and transactional batches without a transactional id are refused whole,
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, before anything is appended (appended, they
/// would open a transaction no coordinator ever ends, and hold back read_committed
/// consumers for good).
#[test]
fn a_failed_acks0_produce_closes_the_connection_and_transactions_need_an_id() -> Result<()> {
    const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("strict", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let mv = c.version_for::<MetadataRequest>(12)?;
    // a good acks=0 produce keeps the connection
    let batch = record_batch(&["ok"], 1_700_000_000_000)?;
    c.send(pv, &produce_request("strict", 0, 0, batch.clone()))?;
    let corr = c.send(mv, &MetadataRequest::default().with_topics(None))?;
    c.recv::<MetadataRequest>(mv, corr)?;
    // one to a partition the topic does not have: closed
    c.send(pv, &produce_request("strict", 7, 0, batch))?;
    std::thread::sleep(Duration::from_millis(300));
    let still_open = c
        .send(mv, &MetadataRequest::default().with_topics(None))
        .and_then(|corr| c.recv::<MetadataRequest>(mv, corr));
    ensure!(
        still_open.is_err(),
        "the connection answered after a failed acks=0 produce"
    );

    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let (pid, epoch) = idempotent_producer(&mut c)?;
    let mut txn = producer_batch(&["t"], 1_700_000_000_000, pid, epoch, 0)?.to_vec();
    sluice_proto::batch::set_transactional_producer(&mut txn, pid, epoch, 0);
    let req = produce_request("strict", 0, -1, bytes::Bytes::from(txn));
    let (code, _) = partition_result(&c.call(pv, &req)?)?;
    ensure!(
        code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "a transactional batch without a transactional id: error {code}"
    );
    wait_high(&broker, "strict", 0, 1)
}

/// InitProducerId without a transactional id: an idempotent producer's (id, epoch).
fn idempotent_producer(c: &mut RawClient) -> Result<(i64, i16)> {
    let iv = c.version_for::<InitProducerIdRequest>(4)?;
    let init = c.call(
        iv,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    )?;
    ensure!(init.error_code == 0, "InitProducerId {}", init.error_code);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    ensure!(
        pid >= 0 && epoch >= 0,
        "InitProducerId gave id {pid} epoch {epoch}"
    );
    Ok((pid, epoch))
}

/// What each pipelined request was, to decode its answer.
enum Sent {
    Produce(i32),
    Metadata,
    ParkedFetch,
}

#[test]
fn pipelined_requests_are_answered_in_request_order() -> Result<()> {
    const PARTITIONS: i32 = 8;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("pipeline", PARTITIONS, &[])?;
    broker.create_topic("pipeline-empty", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let mv = c.version_for::<MetadataRequest>(12)?;
    let fv = c.version_for::<FetchRequest>(12)?;

    let mut sent: Vec<(i32, Sent)> = Vec::new();
    for i in 0..40 {
        let corr = match i % 5 {
            // A fetch parked on an empty partition (min_bytes 1, 300 ms): everything sent
            // after it must still be answered after it.
            2 => {
                let req = FetchRequest::default()
                    .with_max_wait_ms(300)
                    .with_min_bytes(1)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str("pipeline-empty")))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)])]);
                let corr = c.send(fv, &req)?;
                sent.push((corr, Sent::ParkedFetch));
                continue;
            }
            4 => {
                let corr = c.send(mv, &MetadataRequest::default().with_topics(None))?;
                sent.push((corr, Sent::Metadata));
                continue;
            }
            _ => {
                let p = i % PARTITIONS;
                let v = format!("r{i}");
                let batch = record_batch(&[v.as_str()], 1_700_000_000_000)?;
                c.send(pv, &produce_request("pipeline", p, -1, batch))?
            }
        };
        sent.push((corr, Sent::Produce(i % PARTITIONS)));
    }
    let mut produced = vec![0i64; PARTITIONS as usize];
    for (corr, kind) in &sent {
        let mut frame = match c.read_frame()? {
            FrameRead::Frame(f) => f,
            other => bail!("expected the answer to correlation id {corr}, got {other:?}"),
        };
        let hv = match kind {
            Sent::Produce(_) => ProduceResponse::header_version(pv),
            Sent::Metadata => kafka_protocol::messages::MetadataResponse::header_version(mv),
            Sent::ParkedFetch => kafka_protocol::messages::FetchResponse::header_version(fv),
        };
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut frame, hv)?;
        ensure!(
            header.correlation_id == *corr,
            "answers out of order: got correlation id {} where {corr} was due",
            header.correlation_id
        );
        match kind {
            Sent::Produce(p) => {
                let resp = ProduceResponse::decode(&mut frame, pv)?;
                let (code, base) = partition_result(&resp)?;
                ensure!(code == 0, "pipelined produce to {p}: error {code}");
                let next = &mut produced[*p as usize];
                ensure!(
                    base == *next,
                    "partition {p}: base offset {base}, want {next} (in send order)"
                );
                *next += 1;
            }
            Sent::Metadata => {
                kafka_protocol::messages::MetadataResponse::decode(&mut frame, mv)?;
            }
            Sent::ParkedFetch => {
                let resp = kafka_protocol::messages::FetchResponse::decode(&mut frame, fv)?;
                ensure!(
                    resp.error_code == 0,
                    "parked fetch error {}",
                    resp.error_code
                );
            }
        }
    }
    Ok(())
}

#[test]
fn oversized_batch_is_message_too_large() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("big", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    // message.max.bytes defaults to 1048588; this batch is about 2 MiB.
    let value = "v".repeat(2 << 20);
    let resp = c.call(
        pv,
        &produce_request(
            "big",
            0,
            -1,
            record_batch(&[value.as_str()], 1_700_000_000_000)?,
        ),
    )?;
    let (code, _) = partition_result(&resp)?;
    ensure!(
        code == MESSAGE_TOO_LARGE,
        "2 MiB batch: error {code}, want MESSAGE_TOO_LARGE (10)"
    );
    ensure!(
        broker.watermarks("big", 0)? == (0, 0),
        "oversized batch was stored"
    );
    // Just under the limit is fine.
    let value = "v".repeat(1_000_000);
    let resp = c.call(
        pv,
        &produce_request(
            "big",
            0,
            -1,
            record_batch(&[value.as_str()], 1_700_000_000_000)?,
        ),
    )?;
    let (code, base) = partition_result(&resp)?;
    ensure!(
        code == 0 && base == 0,
        "1 MB batch: error {code}, base {base}"
    );
    Ok(())
}

#[test]
fn consumer_starting_inside_a_batch_gets_exactly_its_offset() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("mid-batch", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let values: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let resp = c.call(
        pv,
        &produce_request("mid-batch", 0, -1, record_batch(&refs, 1_700_000_000_000)?),
    )?;
    ensure!(
        partition_result(&resp)? == (0, 0),
        "produce: {:?}",
        partition_result(&resp)?
    );
    let consumer = broker.consumer(&[])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("mid-batch", 0, Offset::Offset(5))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    while got.len() < 5 {
        ensure!(Instant::now() < deadline, "got only {got:?}");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consume: {e}"),
            Some(Ok(m)) => got.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
        }
    }
    let want: Vec<(i64, Vec<u8>)> = (5..10).map(|i| (i, format!("r{i}").into_bytes())).collect();
    ensure!(got == want, "from offset 5 got {got:?}");
    Ok(())
}

#[test]
fn idempotent_retry_is_stored_once_and_sequence_gaps_are_rejected() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("idem", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let (pid, epoch) = idempotent_producer(&mut c)?;

    let batch = producer_batch(&["a", "b", "c"], 1_700_000_000_000, pid, epoch, 0)?;
    let first = partition_result(&c.call(pv, &produce_request("idem", 0, -1, batch.clone()))?)?;
    ensure!(first == (0, 0), "first send: {first:?}");
    // The same batch again (a retry after a lost response): Kafka answers success with the
    // original offsets and does not append it a second time.
    let retry = partition_result(&c.call(pv, &produce_request("idem", 0, -1, batch))?)?;
    ensure!(
        retry == (0, 0),
        "retried batch: {retry:?}, want (0, 0) (duplicate acknowledged, not re-appended)"
    );
    ensure!(
        broker.watermarks("idem", 0)? == (0, 3),
        "after a retried idempotent batch the log holds {:?}, want 3 records",
        broker.watermarks("idem", 0)?
    );
    // Next in sequence is 3; 10 leaves a gap.
    let gap = producer_batch(&["z"], 1_700_000_000_000, pid, epoch, 10)?;
    let (code, _) = partition_result(&c.call(pv, &produce_request("idem", 0, -1, gap))?)?;
    ensure!(
        code == OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence gap: error {code}, want OUT_OF_ORDER_SEQUENCE_NUMBER (45)"
    );
    let next = producer_batch(&["d"], 1_700_000_000_000, pid, epoch, 3)?;
    let ok = partition_result(&c.call(pv, &produce_request("idem", 0, -1, next))?)?;
    ensure!(ok == (0, 3), "in-sequence batch after the gap: {ok:?}");
    Ok(())
}

#[test]
fn produce_and_fetch_errors_for_unknown_topics_and_offsets() -> Result<()> {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const OFFSET_OUT_OF_RANGE: i16 = 1;
    const INVALID_TOPIC_EXCEPTION: i16 = 17;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("known", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;

    // Produce never auto-creates (only Metadata does): the partition is unknown.
    let batch = record_batch(&["x"], 1_700_000_000_000)?;
    let (code, _) = partition_result(&c.call(pv, &produce_request("never-made", 0, -1, batch))?)?;
    ensure!(
        code == UNKNOWN_TOPIC_OR_PARTITION,
        "produce to an unknown topic: error {code}, want 3"
    );
    let mv = c.version_for::<MetadataRequest>(12)?;
    let md = c.call(mv, &MetadataRequest::default().with_topics(None))?;
    ensure!(
        !md.topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("never-made")),
        "a Produce request created a topic"
    );

    // Fetch: unknown topic, and an offset past the end (with the high watermark).
    let batch = record_batch(&["a", "b"], 1_700_000_000_000)?;
    let (code, _) = partition_result(&c.call(pv, &produce_request("known", 0, -1, batch))?)?;
    ensure!(code == 0, "produce to known: {code}");
    let (code, _, _) = c.fetch_once("never-made", 0, 0)?;
    ensure!(
        code == UNKNOWN_TOPIC_OR_PARTITION,
        "fetch of an unknown topic: error {code}"
    );
    let (code, _, _) = c.fetch_once("known", 7, 0)?;
    ensure!(
        code == UNKNOWN_TOPIC_OR_PARTITION,
        "fetch of an unknown partition: error {code}"
    );
    let (code, high, records) = c.fetch_once("known", 0, 100)?;
    ensure!(
        code == OFFSET_OUT_OF_RANGE && high == 2 && records.is_empty(),
        "fetch at 100 of 2: error {code}, high watermark {high}, {} bytes",
        records.len()
    );
    let (code, high, records) = c.fetch_once("known", 0, 2)?;
    ensure!(
        code == 0 && high == 2 && records.is_empty(),
        "fetch at the end: error {code}, high {high}, {} bytes",
        records.len()
    );

    // Metadata with auto-creation for an illegal name: INVALID_TOPIC_EXCEPTION.
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("bad name!")))),
        ]));
    let md = c.call(mv, &req)?;
    let code = md.topics.first().map(|t| t.error_code);
    ensure!(
        code == Some(INVALID_TOPIC_EXCEPTION),
        "metadata for 'bad name!': {code:?}, want 17"
    );
    Ok(())
}

/// KIP-74: a fetch whose byte limits are smaller than the first batch still returns that
/// whole batch, so a consumer with small limits makes progress instead of stalling.
#[test]
fn fetch_returns_a_whole_first_batch_larger_than_max_bytes() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("chunky", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let pv = c.version_for::<ProduceRequest>(12)?;
    let fv = c.version_for::<FetchRequest>(12)?;
    let value = "c".repeat(100_000);
    let batch = record_batch(&[value.as_str(), "tail"], 1_700_000_000_000)?;
    let batch_len = batch.len();
    let (code, _) = partition_result(&c.call(pv, &produce_request("chunky", 0, -1, batch))?)?;
    ensure!(code == 0, "produce: {code}");
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1_000)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("chunky")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1_000)])]);
    let resp = c.call(fv, &req)?;
    let part = resp.responses.first().and_then(|t| t.partitions.first());
    let Some(part) = part else {
        bail!("no partition in fetch response")
    };
    ensure!(part.error_code == 0, "fetch error {}", part.error_code);
    let got = part.records.as_ref().map_or(0, |r| r.len());
    let full = c.fetch_once("chunky", 0, 0)?.2;
    let prefix = part
        .records
        .as_ref()
        .is_some_and(|r| full.starts_with(r.as_ref()));
    ensure!(
        got >= batch_len,
        "fetch with 1000-byte limits returned {got} bytes (a prefix of the stored batch: \
         {prefix}); the whole first batch is {batch_len} bytes (unlimited fetch: {})",
        full.len()
    );
    Ok(())
}

/// Metadata v0 reads an empty topic list as "all topics"; v1+ reads it as "none".
#[test]
fn metadata_empty_topic_list_means_all_in_v0_and_none_later() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("listed", 1, &[])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    let v0 = c.call(0, &MetadataRequest::default().with_topics(Some(vec![])))?;
    ensure!(
        v0.topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("listed")),
        "v0 with an empty list did not list all topics"
    );
    let v1 = c.call(1, &MetadataRequest::default().with_topics(Some(vec![])))?;
    ensure!(
        v1.topics.is_empty(),
        "v1 with an empty list returned {} topics",
        v1.topics.len()
    );
    let v1_all = c.call(1, &MetadataRequest::default().with_topics(None))?;
    ensure!(
        v1_all
            .topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("listed")),
        "v1 with a null list did not list all topics"
    );
    Ok(())
}
