//! Requests at a version Sluice does not serve. Where the response at that version can
//! carry an error code (top-level, per group or per partition), the answer is
//! UNSUPPORTED_VERSION (35), built from the decoded request; where no answer is possible
//! (acks=0 produce, a body no decoder reads, an API Sluice does not implement) the
//! connection closes. Either way the reason is logged with the api, version and client.
//!
//! ```text
//!  Produce v0-2, Fetch v0-3   old layouts read by hand (message formats v0/v1: not served)
//!  Produce v10+, Fetch v13+ … decoded by kafka-protocol, answered at the same version
//!  anything else              close, with the reason
//! ```

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use sluice_proto::request::{decode_body, RequestFrame};

use super::wire::{Reader, WireError, Writer};
use super::{encode, frame_body, Dispatch, Response, SUPPORTED};

const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();

/// Answers (or closes on) `frame`, whose version Sluice does not serve.
pub(crate) fn answer(frame: &RequestFrame, peer: &str) -> Dispatch {
    let (api, version) = (frame.api_key, frame.version());
    let client = frame.header.client_id.as_deref().unwrap_or("");
    match error_response(frame) {
        Ok(out) => {
            tracing::info!(
                ?api,
                version,
                %peer,
                client,
                "unsupported version: answered UNSUPPORTED_VERSION"
            );
            let out: Response = Ok(out);
            Dispatch::Respond(Box::pin(async move { out }))
        }
        // The connection logs the reason as it closes.
        Err(reason) => Dispatch::Close(format!("{reason} (client {client:?})")),
    }
}

/// The complete UNSUPPORTED_VERSION answer to `frame`, or why there can be none.
pub(crate) fn error_response(frame: &RequestFrame) -> Result<Vec<Bytes>, String> {
    let (api, version, corr) = (frame.api_key, frame.version(), frame.correlation_id());
    if !SUPPORTED.iter().any(|&(a, ..)| a == api) {
        return Err(format!("{api:?} is not implemented"));
    }
    let old_layout = |r: Result<Option<Writer>, WireError>| match r {
        Ok(Some(w)) => frame_body(api, version, corr, w.finish()),
        Ok(None) => Err(acks0(api, version)),
        Err(e) => Err(format!("unsupported {api:?} v{version}, unreadable: {e}")),
    };
    match (api, version) {
        (ApiKey::Produce, 0..=2) => old_layout(produce_v0_v2(&frame.body, version)),
        (ApiKey::Fetch, 0..=3) => old_layout(fetch_v0_v3(&frame.body, version).map(Some)),
        _ => decoded(frame, UNSUPPORTED_VERSION),
    }
}

/// The REQUEST_TIMED_OUT answer to `frame` for a request that passed the broker's
/// `request.deadline.ms`, for the APIs whose answer carries an error per partition (or
/// request); Err (close the connection) for the others.
pub(crate) fn timed_out_answer(frame: &RequestFrame) -> Result<Vec<Bytes>, String> {
    match frame.api_key {
        ApiKey::Produce
        | ApiKey::Fetch
        | ApiKey::ListOffsets
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::FindCoordinator
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups => decoded(frame, ResponseError::RequestTimedOut.code()),
        api => Err(format!("{api:?} has no timed-out answer")),
    }
}

fn acks0(api: ApiKey, version: i16) -> String {
    format!("unsupported {api:?} v{version} with acks=0: no response can carry the error")
}

fn dec<T: Decodable>(frame: &RequestFrame) -> Result<T, String> {
    let (api, version) = (frame.api_key, frame.version());
    decode_body(&frame.body, version).map_err(|e| {
        format!("unsupported {api:?} v{version}, and its body cannot be decoded to answer it: {e}")
    })
}

/// The error answer for versions `kafka-protocol` can decode but Sluice does not serve.
fn decoded(frame: &RequestFrame, code: i16) -> Result<Vec<Bytes>, String> {
    let (api, version) = (frame.api_key, frame.version());
    match api {
        ApiKey::Produce => {
            let req: ProduceRequest = dec(frame)?;
            if req.acks == 0 {
                return Err(acks0(api, version));
            }
            let responses = req
                .topic_data
                .iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_partition_responses(
                            t.partition_data
                                .iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            enc(frame, &ProduceResponse::default().with_responses(responses))
        }
        ApiKey::Fetch => {
            let _: FetchRequest = dec(frame)?;
            enc(frame, &FetchResponse::default().with_error_code(code))
        }
        ApiKey::ListOffsets => {
            let req: ListOffsetsRequest = dec(frame)?;
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            enc(frame, &ListOffsetsResponse::default().with_topics(topics))
        }
        ApiKey::Metadata => {
            let _: MetadataRequest = dec(frame)?;
            enc(frame, &MetadataResponse::default().with_error_code(code))
        }
        ApiKey::InitProducerId => {
            let _: InitProducerIdRequest = dec(frame)?;
            enc(
                frame,
                &InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
        }
        ApiKey::DescribeCluster => {
            let _: DescribeClusterRequest = dec(frame)?;
            enc(
                frame,
                &DescribeClusterResponse::default().with_error_code(code),
            )
        }
        ApiKey::FindCoordinator => {
            let req: FindCoordinatorRequest = dec(frame)?;
            let coordinators = req
                .coordinator_keys
                .iter()
                .map(|k| {
                    Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                })
                .collect();
            enc(
                frame,
                &FindCoordinatorResponse::default().with_coordinators(coordinators),
            )
        }
        ApiKey::OffsetCommit => {
            let req: OffsetCommitRequest = dec(frame)?;
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            enc(frame, &OffsetCommitResponse::default().with_topics(topics))
        }
        ApiKey::OffsetFetch => {
            let req: OffsetFetchRequest = dec(frame)?;
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code)
                })
                .collect();
            enc(frame, &OffsetFetchResponse::default().with_groups(groups))
        }
        ApiKey::DescribeGroups => {
            let req: DescribeGroupsRequest = dec(frame)?;
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(code)
                })
                .collect();
            enc(
                frame,
                &DescribeGroupsResponse::default().with_groups(groups),
            )
        }
        ApiKey::ListGroups => {
            let _: ListGroupsRequest = dec(frame)?;
            enc(frame, &ListGroupsResponse::default().with_error_code(code))
        }
        // Every other API Sluice implements is served at every version kafka-protocol
        // decodes (the unit tests check this stays true).
        _ => Err(format!(
            "{api:?} v{version}: no error answer is built for it"
        )),
    }
}

/// `body` as the complete response to `frame`, at the request's version.
fn enc<R: Encodable>(frame: &RequestFrame, body: &R) -> Response {
    encode(frame.api_key, frame.version(), frame.correlation_id(), body)
}

/// Produce v0-2: acks, timeout_ms, [topic, [partition, records]]. The answer (None for
/// acks=0): [topic, [partition, error_code, base_offset, (v2) log_append_time]], then
/// (v1+) throttle_time_ms.
fn produce_v0_v2(body: &Bytes, version: i16) -> Result<Option<Writer>, WireError> {
    let mut r = Reader::new(body);
    let acks = r.i16("acks")?;
    let _timeout = r.i32("timeout_ms")?;
    let topics = partitions_of(&mut r, 8, |r| {
        let p = r.i32("partition")?;
        r.skip_bytes("records")?;
        Ok(p)
    })?;
    if acks == 0 {
        return Ok(None);
    }
    let mut w = Writer::new();
    w.array_len("responses", topics.len())?;
    for (name, partitions) in &topics {
        w.string("topic name", name)?;
        w.array_len("partitions", partitions.len())?;
        for &p in partitions {
            w.i32(p);
            w.i16(UNSUPPORTED_VERSION);
            w.i64(-1);
            if version >= 2 {
                w.i64(-1);
            }
        }
    }
    if version >= 1 {
        w.i32(0);
    }
    Ok(Some(w))
}

/// Fetch v0-3: replica_id, max_wait_ms, min_bytes, (v3) max_bytes, [topic, [partition,
/// fetch_offset, partition_max_bytes]]. The answer: (v1+) throttle_time_ms, [topic,
/// [partition, error_code, high_watermark, records (empty)]].
fn fetch_v0_v3(body: &Bytes, version: i16) -> Result<Writer, WireError> {
    let mut r = Reader::new(body);
    let _replica = r.i32("replica_id")?;
    let _max_wait = r.i32("max_wait_ms")?;
    let _min_bytes = r.i32("min_bytes")?;
    if version >= 3 {
        let _max_bytes = r.i32("max_bytes")?;
    }
    let topics = partitions_of(&mut r, 16, |r| {
        let p = r.i32("partition")?;
        let _offset = r.i64("fetch_offset")?;
        let _max = r.i32("partition_max_bytes")?;
        Ok(p)
    })?;
    let mut w = Writer::new();
    if version >= 1 {
        w.i32(0);
    }
    w.array_len("responses", topics.len())?;
    for (name, partitions) in &topics {
        w.string("topic name", name)?;
        w.array_len("partitions", partitions.len())?;
        for &p in partitions {
            w.i32(p);
            w.i16(UNSUPPORTED_VERSION);
            w.i64(-1);
            w.empty_bytes();
        }
    }
    Ok(w)
}

/// [topic name, [partition entry]] with each entry read by `entry` (at least `min_entry`
/// bytes each); returns (topic, partition indexes).
fn partitions_of(
    r: &mut Reader,
    min_entry: usize,
    mut entry: impl FnMut(&mut Reader) -> Result<i32, WireError>,
) -> Result<Vec<(String, Vec<i32>)>, WireError> {
    let mut topics = Vec::new();
    for _ in 0..r.count("topics", 6)? {
        let name = r.string("topic name")?.to_string();
        let partitions = (0..r.count("partitions", min_entry)?)
            .map(|_| entry(r))
            .collect::<Result<Vec<_>, _>>()?;
        topics.push((name, partitions));
    }
    Ok(topics)
}

#[cfg(test)]
#[path = "unsupported_tests.rs"]
mod tests;
