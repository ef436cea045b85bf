//! Requests at a version Sluice does not serve. Where the response at that version can
//! carry an error code (top-level, per group or per partition), the answer is
//! UNSUPPORTED_VERSION (35), built from the decoded request; where no answer is possible
//! (acks=0 produce, a body no decoder reads, an API Sluice does not implement) the
//! connection closes. Either way the reason is logged with the api, version and client.
//!
//! ```text
//!  Produce v10+, Fetch v13+ … decoded by kafka-protocol, answered at the same version
//!  anything else              close, with the reason
//! ```
//! The same builders answer a request that passed `request.deadline.ms` (REQUEST_TIMED_OUT),
//! Produce v0-2 and Fetch v0-3 in their own layouts (`legacy`).

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

use super::fetch_encode::TopicOut;
use super::{encode, fetch_encode, frame_body, legacy, Dispatch, Response, SUPPORTED};
use crate::shard_msg::FetchPartResult;

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
    let api = frame.api_key;
    if !SUPPORTED.iter().any(|&(a, ..)| a == api) {
        return Err(format!("{api:?} is not implemented"));
    }
    decoded(frame, UNSUPPORTED_VERSION)
}

/// The answer to `frame` with `code` for everything it names (an ACL refusal); Err (close
/// the connection) where no such answer can be built.
pub(crate) fn answer_with(frame: &RequestFrame, code: i16) -> Response {
    decoded(frame, code)
}

/// The REQUEST_TIMED_OUT answer to `frame` for a request that passed the broker's
/// `request.deadline.ms`, for the APIs whose answer carries an error per partition (or
/// request); Err (close the connection) for the others.
pub(crate) fn timed_out_answer(frame: &RequestFrame) -> Result<Vec<Bytes>, String> {
    let code = ResponseError::RequestTimedOut.code();
    match (frame.api_key, frame.version()) {
        (ApiKey::Produce, v @ 0..=2) => return produce_v0_v2_error(frame, v, code),
        (ApiKey::Fetch, v @ 0..=3) => return fetch_v0_v3_error(frame, v, code),
        _ => {}
    }
    match frame.api_key {
        ApiKey::Produce
        | ApiKey::Fetch
        | ApiKey::ListOffsets
        | ApiKey::DeleteRecords
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::FindCoordinator
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups => decoded(frame, code),
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
            enc(frame, &produce_errors(&req, code))
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
        ApiKey::DeleteRecords => {
            let req: DeleteRecordsRequest = dec(frame)?;
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    delete_records_response::DeleteRecordsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    delete_records_response::DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p.partition_index)
                                        .with_low_watermark(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            enc(frame, &DeleteRecordsResponse::default().with_topics(topics))
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
                &if frame.version() >= 4 {
                    FindCoordinatorResponse::default().with_coordinators(coordinators)
                } else {
                    FindCoordinatorResponse::default()
                        .with_error_code(code)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                },
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
        ApiKey::AddPartitionsToTxn => {
            let _: AddPartitionsToTxnRequest = dec(frame)?;
            enc(
                frame,
                &AddPartitionsToTxnResponse::default().with_error_code(code),
            )
        }
        ApiKey::AddOffsetsToTxn => {
            let _: AddOffsetsToTxnRequest = dec(frame)?;
            enc(
                frame,
                &AddOffsetsToTxnResponse::default().with_error_code(code),
            )
        }
        ApiKey::EndTxn => {
            let _: EndTxnRequest = dec(frame)?;
            enc(
                frame,
                &EndTxnResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
        }
        ApiKey::TxnOffsetCommit => {
            let req: TxnOffsetCommitRequest = dec(frame)?;
            let topics = super::txn::txn_commit_answers(&req.topics, code);
            enc(
                frame,
                &TxnOffsetCommitResponse::default().with_topics(topics),
            )
        }
        ApiKey::DescribeAcls => {
            let _: DescribeAclsRequest = dec(frame)?;
            enc(
                frame,
                &DescribeAclsResponse::default().with_error_code(code),
            )
        }
        ApiKey::CreateAcls => {
            let req: CreateAclsRequest = dec(frame)?;
            let results = req
                .creations
                .iter()
                .map(|_| create_acls_response::AclCreationResult::default().with_error_code(code))
                .collect();
            enc(frame, &CreateAclsResponse::default().with_results(results))
        }
        ApiKey::DeleteAcls => {
            let req: DeleteAclsRequest = dec(frame)?;
            let results = req
                .filters
                .iter()
                .map(|_| {
                    delete_acls_response::DeleteAclsFilterResult::default().with_error_code(code)
                })
                .collect();
            enc(
                frame,
                &DeleteAclsResponse::default().with_filter_results(results),
            )
        }
        ApiKey::SaslHandshake => {
            let _: SaslHandshakeRequest = dec(frame)?;
            enc(
                frame,
                &SaslHandshakeResponse::default().with_error_code(code),
            )
        }
        ApiKey::ListTransactions => {
            let _: ListTransactionsRequest = dec(frame)?;
            enc(
                frame,
                &ListTransactionsResponse::default().with_error_code(code),
            )
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

/// `code` for every partition of a produce request.
fn produce_errors(req: &ProduceRequest, code: i16) -> ProduceResponse {
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
                                .with_log_append_time_ms(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// `code` for every partition of a Produce v0-2 request, in its layout (none for acks=0).
fn produce_v0_v2_error(
    frame: &RequestFrame,
    version: i16,
    code: i16,
) -> Result<Vec<Bytes>, String> {
    let api = ApiKey::Produce;
    let req = legacy::produce_v0_v2_request(&frame.body)
        .map_err(|e| format!("{api:?} v{version}, unreadable: {e}"))?;
    if req.acks == 0 {
        return Err(format!(
            "{api:?} v{version} with acks=0: no response can carry the error"
        ));
    }
    let body = legacy::produce_v0_v2_response(&produce_errors(&req, code), version)
        .map_err(|e| format!("encoding {api:?} v{version}: {e}"))?;
    frame_body(api, version, frame.correlation_id(), body)
}

/// `code` for every partition of a Fetch v0-3 request, in its layout.
fn fetch_v0_v3_error(frame: &RequestFrame, version: i16, code: i16) -> Result<Vec<Bytes>, String> {
    let req = legacy::fetch_v0_v3_request(&frame.body, version)
        .map_err(|e| format!("Fetch v{version}, unreadable: {e}"))?;
    let topics: Vec<TopicOut> = req
        .topics
        .iter()
        .map(|t| TopicOut {
            name: t.topic.0.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let r = FetchPartResult::failed(code);
                    (p.partition, r)
                })
                .collect(),
        })
        .collect();
    fetch_encode::encode(version, frame.correlation_id(), 0, 0, &topics)
}

#[cfg(test)]
#[path = "unsupported_tests.rs"]
mod tests;
