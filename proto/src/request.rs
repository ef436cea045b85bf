//! Request headers and response framing on top of the `kafka-protocol` crate.
//!
//! ```text
//!  frame body ─► api key + version (peeked) ─► RequestHeader (v1/v2 by api) ─► body Bytes
//!  response   ◄─ size prefix + ResponseHeader (v0/v1 by api) + encoded body
//! ```
//! Bodies stay `Bytes` slices of the frame, so record data decoded from them is zero-copy.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::ProtoError;

/// A request whose header has been decoded; the body is still raw.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    /// The request body after the header.
    pub body: Bytes,
}

impl RequestFrame {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Reads the api key and version without consuming anything.
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), ProtoError> {
    match frame.get(..4) {
        Some(b) => Ok((
            i16::from_be_bytes([b[0], b[1]]),
            i16::from_be_bytes([b[2], b[3]]),
        )),
        None => Err(ProtoError::Truncated("request header")),
    }
}

/// Decodes the request header of one frame body.
pub fn parse_request(mut frame: Bytes) -> Result<RequestFrame, ProtoError> {
    let (key, version) = peek_api(&frame)?;
    let api_key = ApiKey::try_from(key).map_err(|_| ProtoError::UnknownApiKey(key))?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| ProtoError::Decode(format!("request header: {e}")))?;
    Ok(RequestFrame {
        api_key,
        header,
        body: frame,
    })
}

/// Decodes a request body of type `T` at `version`.
pub fn decode_body<T: Decodable>(body: &Bytes, version: i16) -> Result<T, ProtoError> {
    let mut buf = body.clone();
    T::decode(&mut buf, version).map_err(|e| ProtoError::Decode(e.to_string()))
}

/// Size of the response header for `api_key` at `version`.
pub fn response_header_len(api_key: ApiKey, version: i16) -> usize {
    // v0: correlation id; v1: correlation id + empty tagged-field section.
    if api_key.response_header_version(version) >= 1 {
        5
    } else {
        4
    }
}

/// Writes size prefix and response header for a body of `body_len` bytes into `out`.
pub fn put_response_header(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body_len: usize,
) -> Result<(), ProtoError> {
    let total = response_header_len(api_key, version) + body_len;
    let size = i32::try_from(total).map_err(|_| ProtoError::ResponseTooLarge(total))?;
    out.put_i32(size);
    out.put_i32(correlation_id);
    if api_key.response_header_version(version) >= 1 {
        out.put_u8(0);
    }
    Ok(())
}

/// Encodes a complete response frame: size prefix, header and `body` at `version`.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, ProtoError> {
    let body_len = body
        .compute_size(version)
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    let mut out = BytesMut::with_capacity(9 + body_len);
    put_response_header(&mut out, api_key, version, correlation_id, body_len)?;
    body.encode(&mut out, version)
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    Ok(out.freeze())
}

/// Versions the Sluice broker serves: (api, min, max). Its ApiVersions advertises exactly
/// this table; the fuzz targets decode at these versions.
/// Every version Kafka 3.9 accepted, down to v0. Produce v0-2 and Fetch v0-3 (message
/// formats v0/v1, converted at the edge by `message_set`) and the other versions below
/// `kafka-protocol`'s range are read and written by hand in the broker (`handlers::legacy`).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 0, 12),
    (ApiKey::ListOffsets, 0, 7),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 8),
    (ApiKey::OffsetFetch, 0, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    // last: the fuzz corpus's request seeds select an API by its index here
    (ApiKey::DeleteRecords, 0, 2),
];

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataResponse};
    use kafka_protocol::protocol::StrBytes;

    fn frame_of(api: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut out = BytesMut::new();
        header
            .encode(&mut out, api.request_header_version(version))
            .unwrap(); // ok: test
        body.encode(&mut out, version).unwrap(); // ok: test
        out.freeze()
    }

    #[test]
    fn header_roundtrip_flexible_and_not() {
        for v in [0, 3] {
            let f = parse_request(frame_of(
                ApiKey::ApiVersions,
                v,
                &ApiVersionsRequest::default(),
            ))
            .unwrap(); // ok: test
            assert_eq!(f.api_key, ApiKey::ApiVersions);
            assert_eq!(f.version(), v);
            assert_eq!(f.correlation_id(), 7);
            assert_eq!(f.header.client_id.as_deref(), Some("t"));
            let _: ApiVersionsRequest = decode_body(&f.body, v).unwrap(); // ok: test
        }
    }

    #[test]
    fn unknown_key_and_garbage_are_errors() {
        assert!(matches!(
            parse_request(Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 1])),
            Err(ProtoError::UnknownApiKey(0x7f00))
        ));
        assert!(parse_request(Bytes::from_static(&[0, 18])).is_err());
        // Metadata v1 header with a client id length running past the end.
        assert!(parse_request(Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0x10, 0])).is_err());
    }

    #[test]
    fn response_frame_sizes_match() {
        let body = MetadataResponse::default();
        for v in [1, 9, 12] {
            let f = encode_response(ApiKey::Metadata, v, 42, &body).unwrap(); // ok: test
            let size = i32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
            assert_eq!(size + 4, f.len());
            assert_eq!(&f[4..8], &42i32.to_be_bytes());
        }
    }
}
