//! Raw-protocol helpers shared by the hardening suites (`backpressure`, `limits`,
//! `bad_input`): a negotiated connection, a Fetch request builder and readers of its
//! answer, an acks=all produce, the topic list from Metadata and CreatePartitions.
//! Invariants: everything goes through `RawClient`, so every read is bounded by its socket
//! timeout; nothing here sleeps, retries or spawns.

use std::collections::BTreeMap;

use anyhow::{ensure, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{
    CreatePartitionsRequest, FetchRequest, FetchResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::raw::{partition_result, produce_request, RawClient};
use super::BrokerProcess;

/// Base timestamp of the record batches the tests build.
pub(crate) const TS: i64 = 1_700_000_000_000;

/// A `TopicName` for `s`.
pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A raw connection that has negotiated versions.
pub(crate) fn connect(broker: &BrokerProcess) -> Result<RawClient> {
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    Ok(c)
}

/// A sessionless Fetch of partition 0 of `topic` from `offset` with the given bounds.
pub(crate) fn fetch_request(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)])])
}

/// Partition 0 of the first topic of a Fetch response.
pub(crate) fn partition0(resp: &FetchResponse) -> Result<&PartitionData> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .with_context(|| {
            format!(
                "fetch response lacks partition 0 (error {})",
                resp.error_code
            )
        })
}

/// (base offset, records count, bytes) of each whole v2 batch in `records`, read from the
/// headers only; a partial batch at the end (allowed in a Fetch answer) is left out.
pub(crate) fn batch_headers(records: &[u8]) -> Result<Vec<(i64, i32, usize)>> {
    let be32 = |at: usize| {
        i32::from_be_bytes([
            records[at],
            records[at + 1],
            records[at + 2],
            records[at + 3],
        ])
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 61 <= records.len() {
        let mut base = [0u8; 8];
        base.copy_from_slice(&records[pos..pos + 8]);
        let len = be32(pos + 8);
        ensure!(len >= 49, "batch at byte {pos} has length {len}");
        let size = 12 + len as usize;
        if pos + size > records.len() {
            break;
        }
        out.push((i64::from_be_bytes(base), be32(pos + 57), size));
        pos += size;
    }
    Ok(out)
}

/// High watermark of partition 0 of `topic`, by a sessionless fetch.
pub(crate) fn high_watermark(client: &mut RawClient, topic: &str) -> Result<i64> {
    let (code, hw, _) = client.fetch_once(topic, 0, 0)?;
    ensure!(code == 0, "fetch {topic}: error {code}");
    Ok(hw)
}

/// Produce with acks=-1 to partition 0; (error code, base offset).
pub(crate) fn produce(client: &mut RawClient, topic: &str, batch: Bytes) -> Result<(i16, i64)> {
    let version = client.version_for::<ProduceRequest>(12)?;
    partition_result(&client.call(version, &produce_request(topic, 0, -1, batch))?)
}

/// `produce` of transactional batches under `transactional_id` (Kafka refuses them
/// without one), to a partition its coordinator may never have heard of: the way a test
/// makes a transaction nobody ends.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn produce_transactional(
    client: &mut RawClient,
    topic: &str,
    transactional_id: &'static str,
    batch: Bytes,
) -> Result<(i16, i64)> {
    let version = client.version_for::<ProduceRequest>(12)?;
    let request = produce_request(topic, 0, -1, batch).with_transactional_id(Some(
        kafka_protocol::messages::TransactionalId(StrBytes::from_static_str(transactional_id)),
    ));
    partition_result(&client.call(version, &request)?)
}

/// Names and partition counts of every topic in an all-topics Metadata answer.
pub(crate) fn all_topics(c: &mut RawClient) -> Result<BTreeMap<String, usize>> {
    let md = c.metadata(None, false)?;
    Ok(md
        .topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len())))
        .collect())
}

/// CreatePartitions growing `topic` to `count`; each topic's error code.
pub(crate) fn create_partitions(c: &mut RawClient, topic: &str, count: i32) -> Result<Vec<i16>> {
    let version = c.version_for::<CreatePartitionsRequest>(3)?;
    let resp = c.call(
        version,
        &CreatePartitionsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(count)]),
    )?;
    Ok(resp.results.iter().map(|r| r.error_code).collect())
}
