//! Unit tests of the error answers (`unsupported`): every version that `kafka-protocol`
//! decodes but Sluice does not serve gets a well-formed UNSUPPORTED_VERSION answer, and the
//! REQUEST_TIMED_OUT answers to Produce v0-2 / Fetch v0-3 follow Kafka's layouts byte for
//! byte.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::protocol::{Message, Request, StrBytes};
use sluice_proto::request::{parse_request, response_header_len};

use super::*;
use crate::handlers::supported;

/// A parsed request frame of `api` at `version` around the raw `body`.
fn frame(api: ApiKey, version: i16, body: &[u8]) -> RequestFrame {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("t")));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, api.request_header_version(version))
        .unwrap(); // ok: test
    out.put_slice(body);
    parse_request(out.freeze()).unwrap() // ok: test
}

fn frame_of<R: Request>(version: i16, req: &R) -> RequestFrame {
    let mut body = BytesMut::new();
    req.encode(&mut body, version).unwrap(); // ok: test
    let api = ApiKey::try_from(R::KEY).unwrap(); // ok: test
    frame(api, version, &body)
}

/// The response body of an answer (size prefix and header checked and removed).
fn body_of(api: ApiKey, version: i16, answer: Vec<Bytes>) -> Bytes {
    let mut all = BytesMut::new();
    for c in answer {
        all.put_slice(&c);
    }
    let all = all.freeze();
    let size = i32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
    assert_eq!(size + 4, all.len(), "{api:?} v{version}: size prefix");
    assert_eq!(
        &all[4..8],
        &42i32.to_be_bytes(),
        "{api:?} v{version}: correlation id"
    );
    all.slice(4 + response_header_len(api, version)..)
}

/// Every unserved version of `R` that kafka-protocol decodes, asked with a default request:
/// an answer that decodes at that version. Returns the decoded answers.
fn unserved<R: Request + Default>() -> Vec<(i16, R::Response)> {
    let api = ApiKey::try_from(R::KEY).unwrap(); // ok: test
    let mut out = Vec::new();
    for v in R::VERSIONS.min..=R::VERSIONS.max {
        if supported(api, v) {
            continue;
        }
        let f = frame_of(v, &R::default());
        let answer = error_response(&f).unwrap_or_else(|e| panic!("{api:?} v{v}: {e}")); // ok: test
        let mut body = body_of(api, v, answer);
        let resp = R::Response::decode(&mut body, v).unwrap(); // ok: test
        out.push((v, resp));
    }
    out
}

#[test]
fn every_unserved_version_kafka_protocol_decodes_is_answered() {
    // One line per API in SUPPORTED (ApiVersions answers itself): if kafka-protocol grows a
    // version Sluice does not serve, its error answer must be written in `decoded`.
    let mut covered = vec![ApiKey::ApiVersions];
    macro_rules! check {
        ($($t:ty),*) => {$(
            unserved::<$t>();
            covered.push(ApiKey::try_from(<$t as Request>::KEY).unwrap()); // ok: test
        )*};
    }
    check!(
        FetchRequest,
        ListOffsetsRequest,
        DeleteRecordsRequest,
        MetadataRequest,
        CreateTopicsRequest,
        DeleteTopicsRequest,
        InitProducerIdRequest,
        DescribeConfigsRequest,
        AlterConfigsRequest,
        CreatePartitionsRequest,
        IncrementalAlterConfigsRequest,
        DescribeClusterRequest,
        FindCoordinatorRequest,
        JoinGroupRequest,
        SyncGroupRequest,
        HeartbeatRequest,
        LeaveGroupRequest,
        OffsetCommitRequest,
        OffsetFetchRequest,
        DescribeGroupsRequest,
        ListGroupsRequest,
        DeleteGroupsRequest,
        OffsetDeleteRequest,
        OffsetForLeaderEpochRequest,
        ElectLeadersRequest,
        AlterPartitionReassignmentsRequest,
        ListPartitionReassignmentsRequest,
        AddPartitionsToTxnRequest,
        AddOffsetsToTxnRequest,
        EndTxnRequest,
        WriteTxnMarkersRequest,
        TxnOffsetCommitRequest,
        DescribeProducersRequest,
        DescribeTransactionsRequest,
        ListTransactionsRequest,
        SaslHandshakeRequest,
        SaslAuthenticateRequest,
        DescribeUserScramCredentialsRequest,
        AlterUserScramCredentialsRequest,
        DescribeAclsRequest,
        CreateAclsRequest,
        DeleteAclsRequest,
        DescribeLogDirsRequest
    );
    // Produce (acks=-1, so that an answer is due).
    covered.push(ApiKey::Produce);
    for v in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
        if !supported(ApiKey::Produce, v) {
            let f = frame_of(v, &ProduceRequest::default().with_acks(-1));
            assert!(error_response(&f).is_ok(), "Produce v{v}");
        }
    }
    for &(api, ..) in SUPPORTED {
        assert!(covered.contains(&api), "{api:?} is not checked here");
    }
}

#[test]
fn top_level_errors_carry_unsupported_version() {
    for (v, r) in unserved::<FetchRequest>() {
        assert_eq!(r.error_code, UNSUPPORTED_VERSION, "Fetch v{v}");
    }
    for (v, r) in unserved::<MetadataRequest>() {
        assert_eq!(r.error_code, UNSUPPORTED_VERSION, "Metadata v{v}");
    }
    for (v, r) in unserved::<ListGroupsRequest>() {
        assert_eq!(r.error_code, UNSUPPORTED_VERSION, "ListGroups v{v}");
    }
    for (v, r) in unserved::<InitProducerIdRequest>() {
        assert_eq!(r.error_code, UNSUPPORTED_VERSION, "InitProducerId v{v}");
    }
}

#[test]
fn per_partition_errors_name_each_requested_partition() {
    let name = TopicName(StrBytes::from_static_str("t"));
    let req =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name.clone())
                .with_partition_data(
                    vec![PartitionProduceData::default().with_index(3)],
                )]);
    let f = frame_of(10, &req);
    let mut body = body_of(ApiKey::Produce, 10, error_response(&f).unwrap()); // ok: test
    let resp = ProduceResponse::decode(&mut body, 10).unwrap(); // ok: test
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(resp.responses[0].name, name);
    assert_eq!(
        (p.index, p.error_code, p.base_offset),
        (3, UNSUPPORTED_VERSION, -1)
    );

    // acks=0: nothing can carry the error, so the connection closes.
    assert!(error_response(&frame_of(10, &req.clone().with_acks(0))).is_err());

    // the same builder answers a request past request.deadline.ms (Produce v9, served)
    let f9 = frame_of(9, &req);
    let mut body = body_of(ApiKey::Produce, 9, super::timed_out_answer(&f9).unwrap()); // ok: test
    let resp = ProduceResponse::decode(&mut body, 9).unwrap(); // ok: test
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(
        (p.index, p.error_code),
        (3, kafka_protocol::ResponseError::RequestTimedOut.code())
    );

    let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(name)
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(1)])]);
    let f = frame_of(8, &req);
    let mut body = body_of(ApiKey::ListOffsets, 8, error_response(&f).unwrap()); // ok: test
    let resp = ListOffsetsResponse::decode(&mut body, 8).unwrap(); // ok: test
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.partition_index, p.error_code), (1, UNSUPPORTED_VERSION));
}

/// [topic "t", [partition 2 …]] as the v0-3 layouts start their topic lists.
fn one_partition_request(prefix: &[u8], entry: &[u8]) -> Vec<u8> {
    let mut b = prefix.to_vec();
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.push(b't');
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(entry);
    b
}

const TIMED_OUT: i16 = 7;

#[test]
fn produce_v0_to_v2_time_out_in_their_own_layout() {
    let mut entry = 2i32.to_be_bytes().to_vec();
    entry.extend_from_slice(&3i32.to_be_bytes()); // records: 3 bytes
    entry.extend_from_slice(b"abc");
    let mut prefix = 1i16.to_be_bytes().to_vec(); // acks=1
    prefix.extend_from_slice(&1000i32.to_be_bytes());
    let req = one_partition_request(&prefix, &entry);
    for v in 0..=2i16 {
        let answer = timed_out_answer(&frame(ApiKey::Produce, v, &req)).unwrap(); // ok: test
        let body = body_of(ApiKey::Produce, v, answer);
        // [topic "t", [partition 2, error 7, base_offset -1, (v2) log_append_time -1]], (v1+) throttle.
        let mut want = one_partition_request(&[], &2i32.to_be_bytes());
        want.extend_from_slice(&TIMED_OUT.to_be_bytes());
        want.extend_from_slice(&(-1i64).to_be_bytes());
        if v >= 2 {
            want.extend_from_slice(&(-1i64).to_be_bytes());
        }
        if v >= 1 {
            want.extend_from_slice(&0i32.to_be_bytes());
        }
        assert_eq!(&body[..], &want[..], "Produce v{v}");
    }
    // acks=0 cannot be answered.
    let mut prefix = 0i16.to_be_bytes().to_vec();
    prefix.extend_from_slice(&1000i32.to_be_bytes());
    let req = one_partition_request(&prefix, &entry);
    assert!(timed_out_answer(&frame(ApiKey::Produce, 2, &req)).is_err());
    // A truncated body is refused, not answered.
    assert!(timed_out_answer(&frame(ApiKey::Produce, 2, &req[..req.len() - 1])).is_err());
}

#[test]
fn fetch_v0_to_v3_time_out_in_their_own_layout() {
    let mut entry = 2i32.to_be_bytes().to_vec();
    entry.extend_from_slice(&5i64.to_be_bytes());
    entry.extend_from_slice(&1024i32.to_be_bytes());
    for v in 0..=3i16 {
        let mut prefix = (-1i32).to_be_bytes().to_vec();
        prefix.extend_from_slice(&500i32.to_be_bytes());
        prefix.extend_from_slice(&1i32.to_be_bytes());
        if v >= 3 {
            prefix.extend_from_slice(&(1i32 << 20).to_be_bytes());
        }
        let req = one_partition_request(&prefix, &entry);
        let answer = timed_out_answer(&frame(ApiKey::Fetch, v, &req)).unwrap(); // ok: test
        let body = body_of(ApiKey::Fetch, v, answer);
        // (v1+) throttle, [topic "t", [partition 2, error 7, high_watermark -1, records ""]].
        let mut inner = 2i32.to_be_bytes().to_vec();
        inner.extend_from_slice(&TIMED_OUT.to_be_bytes());
        inner.extend_from_slice(&(-1i64).to_be_bytes());
        inner.extend_from_slice(&0i32.to_be_bytes());
        let prefix = if v >= 1 {
            0i32.to_be_bytes().to_vec()
        } else {
            Vec::new()
        };
        let want = one_partition_request(&prefix, &inner);
        assert_eq!(&body[..], &want[..], "Fetch v{v}");
    }
}

#[test]
fn undecodable_or_unimplemented_requests_close() {
    // Beyond kafka-protocol's range: no decoder, so no answer.
    let f = frame(ApiKey::Metadata, 99, &[0xff]);
    assert!(error_response(&f).is_err());
    // An API Sluice does not implement.
    let f = frame(ApiKey::AlterReplicaLogDirs, 1, &[0, 0]);
    let e = error_response(&f).unwrap_err(); // ok: test
    assert!(e.contains("not implemented"), "{e}");
}
