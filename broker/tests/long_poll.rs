//! Long poll: a Fetch with min_bytes=1 on an empty partition is parked until data arrives
//! (not answered at once), and a produce wakes it well before max_wait_ms expires; a
//! request that outlives `request.deadline.ms` is answered REQUEST_TIMED_OUT.
//! The bounds are functional (a 30 s max wait versus "within 15 s of the ack"), not speed
//! assertions: a broker that never wakes parked fetches answers only at the 30 s expiry.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::Buf;
use common::raw::RawClient;
use common::{block_on, BrokerProcess};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const MAX_WAIT_MS: i32 = 30_000;
const WAKE_BOUND: Duration = Duration::from_secs(15);

fn produce_one(broker: &BrokerProcess, topic: &str, value: &str) -> Result<i64> {
    let producer = broker.producer(&[("linger.ms", "0")])?;
    block_on(async {
        match producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(0).payload(value),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(d) => Ok(d.offset),
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    })
}

/// rdkafka consumer with fetch.wait.max.ms=30000 on one core: the record produced while
/// the consumer waits reaches it long before the fetch would expire.
#[test]
fn rdkafka_consumer_wakes_on_produce() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("lp-rdkafka", 1, &[])?;
    let consumer = broker.consumer(&[
        ("fetch.wait.max.ms", "30000"),
        ("socket.timeout.ms", "60000"),
    ])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lp-rdkafka", 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    // Let the consumer resolve the offset and park a fetch on the empty partition.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            match r {
                Ok(m) => bail!(
                    "empty partition delivered a record at offset {}",
                    m.offset()
                ),
                Err(e) => bail!("consumer error while idle: {e}"),
            }
        }
    }
    let offset = produce_one(&broker, "lp-rdkafka", "wake-up")?;
    let acked_at = Instant::now();
    loop {
        if acked_at.elapsed() > WAKE_BOUND {
            bail!("record not delivered within {WAKE_BOUND:?} of its ack (fetch.wait.max.ms=30000): parked fetch not woken");
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            Some(Ok(m)) => {
                ensure!(
                    m.offset() == offset,
                    "got offset {}, produced {offset}",
                    m.offset()
                );
                ensure!(
                    m.payload() == Some(b"wake-up".as_slice()),
                    "payload differs"
                );
                return Ok(());
            }
        }
    }
}

/// An empty sessionless Fetch on `client` is answered without error.
fn still_serves(client: &mut RawClient, version: i16) -> Result<()> {
    let next = client.send(
        version,
        &FetchRequest::default()
            .with_max_wait_ms(0)
            .with_topics(vec![]),
    )?;
    let resp = client.recv::<FetchRequest>(version, next)?;
    ensure!(
        resp.error_code == 0,
        "empty fetch error {}",
        resp.error_code
    );
    Ok(())
}

fn fetch_request(topic: &str, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Raw Fetch (max_wait 30 s, min_bytes 1) across shards on two cores: no answer while the
/// partition is empty, then an answer holding the record soon after a produce.
#[test]
fn raw_fetch_is_parked_then_woken_by_produce() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("lp-raw", 1, &[])?;
    let mut client = RawClient::connect(broker.addr())?;
    client.negotiate()?;
    let version = client.version_for::<FetchRequest>(12)?; // topic names, not ids
    let correlation = client.send(version, &fetch_request("lp-raw", 0))?;
    ensure!(
        !client.has_data_within(Duration::from_millis(1500))?,
        "broker answered a min_bytes=1, max_wait={MAX_WAIT_MS} ms fetch on an empty partition at once instead of parking it"
    );
    let offset = produce_one(&broker, "lp-raw", "raw-wake")?;
    let acked_at = Instant::now();
    client.set_read_timeout(WAKE_BOUND)?;
    let resp = match client.recv::<FetchRequest>(version, correlation) {
        Ok(r) => r,
        Err(e) => bail!(
            "no fetch response within {WAKE_BOUND:?} of the ack ({e}): parked fetch not woken"
        ),
    };
    ensure!(
        acked_at.elapsed() < WAKE_BOUND,
        "fetch answered only after {:?}",
        acked_at.elapsed()
    );
    ensure!(resp.error_code == 0, "fetch error {}", resp.error_code);
    let part = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0);
    let Some(part) = part else {
        bail!("fetch response has no partition 0")
    };
    ensure!(part.error_code == 0, "partition error {}", part.error_code);
    ensure!(
        part.high_watermark == offset + 1,
        "high watermark {} after producing offset {offset}",
        part.high_watermark
    );
    let mut records = part.records.clone().unwrap_or_default();
    ensure!(records.has_remaining(), "woken fetch returned no records");
    let set = RecordBatchDecoder::decode(&mut records)?;
    let first = set.records.first();
    ensure!(
        first.is_some_and(
            |r| r.offset == offset && r.value.as_deref() == Some(b"raw-wake".as_slice())
        ),
        "woken fetch returned {:?}",
        set.records
    );
    // The connection is still usable: an empty sessionless fetch is valid and answered.
    still_serves(&mut client, version)
}

/// A fetch parked on a partition that is then deleted completes early (Kafka completes a
/// delayed fetch when the partition is gone) instead of hanging until max_wait, and the
/// broker keeps serving.
#[test]
fn parked_fetch_on_a_deleted_topic_completes() -> Result<()> {
    use rdkafka::admin::AdminOptions;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("vanishing", 1, &[])?;
    let mut client = RawClient::connect(broker.addr())?;
    client.negotiate()?;
    let version = client.version_for::<FetchRequest>(12)?;
    let correlation = client.send(version, &fetch_request("vanishing", 0))?;
    ensure!(
        !client.has_data_within(Duration::from_millis(1000))?,
        "fetch on an empty partition answered at once"
    );
    let admin = broker.admin()?;
    let opts = AdminOptions::new().operation_timeout(Some(common::OP_TIMEOUT));
    let r = block_on(admin.delete_topics(&["vanishing"], &opts))?;
    ensure!(r.iter().all(|x| x.is_ok()), "delete: {r:?}");
    let deleted_at = Instant::now();
    client.set_read_timeout(WAKE_BOUND)?;
    let resp = match client.recv::<FetchRequest>(version, correlation) {
        Ok(r) => r,
        Err(e) => bail!(
            "parked fetch not completed within {WAKE_BOUND:?} of deleting its topic \
             (max_wait {MAX_WAIT_MS} ms): {e}"
        ),
    };
    ensure!(
        deleted_at.elapsed() < WAKE_BOUND,
        "completed only after {:?}",
        deleted_at.elapsed()
    );
    let code = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .next();
    ensure!(
        code == Some(3) || code == Some(6),
        "fetch on a deleted topic: partition error {code:?}, want UNKNOWN_TOPIC_OR_PARTITION (3)"
    );
    // The broker still serves: a new topic with the same name works from offset 0.
    broker.create_topic("vanishing", 1, &[])?;
    let offset = produce_one(&broker, "vanishing", "again")?;
    ensure!(
        offset == 0,
        "re-created topic's first record at offset {offset}"
    );
    Ok(())
}

/// `request.deadline.ms` bounds every request: a broker whose deadline (1.5 s) is shorter
/// than a parked Fetch's max wait (30 s) answers it REQUEST_TIMED_OUT at the deadline, not
/// at the max wait, and the connection keeps serving.
#[test]
fn a_request_past_its_deadline_is_answered_request_timed_out() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("request.deadline.ms", "1500")])?;
    broker.create_topic("deadline", 1, &[])?;
    let mut client = RawClient::connect(broker.addr())?;
    client.negotiate()?;
    let version = client.version_for::<FetchRequest>(12)?;
    let sent_at = Instant::now();
    let correlation = client.send(version, &fetch_request("deadline", 0))?;
    client.set_read_timeout(WAKE_BOUND)?;
    let resp = match client.recv::<FetchRequest>(version, correlation) {
        Ok(r) => r,
        Err(e) => bail!("no answer within {WAKE_BOUND:?} to a request past its deadline: {e}"),
    };
    ensure!(
        sent_at.elapsed() < WAKE_BOUND,
        "answered only after {:?}",
        sent_at.elapsed()
    );
    ensure!(
        resp.error_code == kafka_protocol::ResponseError::RequestTimedOut.code(),
        "a fetch past the deadline got error {} (want REQUEST_TIMED_OUT)",
        resp.error_code
    );
    still_serves(&mut client, version)?;
    let logged = broker.log_tail(200);
    ensure!(
        logged.contains("request passed request.deadline.ms"),
        "the late request is not in the broker log"
    );
    Ok(())
}
