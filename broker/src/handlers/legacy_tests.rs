//! Unit tests of the old-version layouts (`legacy`), written from Kafka's message JSON for
//! each version: requests are built byte by byte, responses read back field by field.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::OffsetCommitResponse;

use super::*;

/// Builds a request body field by field (big-endian, as Kafka's non-flexible versions).
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn i8(mut self, v: i8) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut b = self.i16(s.len() as i16);
        b.0.extend_from_slice(s.as_bytes());
        b
    }
    fn null_str(self) -> Self {
        self.i16(-1)
    }
    fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

#[test]
fn list_offsets_v0_request_and_old_style_offsets() {
    // replica_id, [topic, [partition, timestamp, max_num_offsets]]
    let body = Body::default()
        .i32(-1)
        .i32(1)
        .str("t")
        .i32(2)
        .i32(0)
        .i64(-1)
        .i32(1)
        .i32(3)
        .i64(-2)
        .i32(5)
        .bytes();
    let (req, max) = list_offsets_v0_request(&body, 0).unwrap(); // ok: test
    assert_eq!(req.replica_id, BrokerId(-1));
    assert_eq!(req.topics[0].name.0.as_str(), "t");
    let parts: Vec<(i32, i64)> = req.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.timestamp))
        .collect();
    assert_eq!(parts, vec![(0, -1), (3, -2)]);
    assert_eq!(max, vec![vec![1, 5]]);
    // A partition missing its max_num_offsets is truncated.
    assert!(list_offsets_v0_request(&body.slice(..body.len() - 1), 0).is_err());

    let out = list_offsets_v0_response(&[OldStyleTopic {
        name: StrBytes::from_static_str("t"),
        partitions: vec![(0, 0, vec![42]), (3, 3, vec![])],
    }])
    .unwrap(); // ok: test
    let want = Body::default()
        .i32(1)
        .str("t")
        .i32(2)
        .i32(0)
        .i16(0)
        .i32(1)
        .i64(42)
        .i32(3)
        .i16(3)
        .i32(0)
        .bytes();
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn offset_commit_v0_and_v1_requests() {
    // v0: group, [topic, [partition, offset, metadata]]
    let v0 = Body::default()
        .str("g")
        .i32(1)
        .str("t")
        .i32(1)
        .i32(4)
        .i64(100)
        .str("m")
        .bytes();
    let (req, ts) = offset_commit_v0_v1_request(&v0, 0).unwrap(); // ok: test
    assert_eq!(req.group_id.0.as_str(), "g");
    assert_eq!(req.generation_id_or_member_epoch, -1);
    assert!(req.member_id.is_empty());
    let p = &req.topics[0].partitions[0];
    assert_eq!((p.partition_index, p.committed_offset), (4, 100));
    assert_eq!(p.committed_metadata.as_deref(), Some("m"));
    assert_eq!(ts, vec![Vec::<i64>::new()]);

    // v1: group, generation, member, [topic, [partition, offset, timestamp, metadata]]
    let v1 = Body::default()
        .str("g")
        .i32(7)
        .str("member-1")
        .i32(1)
        .str("t")
        .i32(2)
        .i32(0)
        .i64(10)
        .i64(-1)
        .null_str()
        .i32(1)
        .i64(11)
        .i64(1_700_000_000_000)
        .str("")
        .bytes();
    let (req, ts) = offset_commit_v0_v1_request(&v1, 1).unwrap(); // ok: test
    assert_eq!(req.generation_id_or_member_epoch, 7);
    assert_eq!(req.member_id.as_str(), "member-1");
    assert_eq!(req.topics[0].partitions.len(), 2);
    assert_eq!(req.topics[0].partitions[0].committed_metadata, None);
    assert_eq!(ts, vec![vec![-1, 1_700_000_000_000]]);
    // Read as v0, the v1 body is garbage: it must fail, not allocate or panic.
    assert!(offset_commit_v0_v1_request(&v1, 0).is_err());

    // The v0/v1 response is the v2 layout: [topic, [partition, error_code]].
    let resp =
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![OffsetCommitResponsePartition::default()
                .with_partition_index(4)
                .with_error_code(25)])]);
    let out = encode_body(&resp, 2).unwrap(); // ok: test
    let want = Body::default()
        .i32(1)
        .str("t")
        .i32(1)
        .i32(4)
        .i16(25)
        .bytes();
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn describe_configs_v0_request_and_response() {
    let body = Body::default()
        .i32(2)
        .i8(2)
        .str("t")
        .i32(-1)
        .i8(4)
        .str("1")
        .i32(1)
        .str("retention.ms")
        .bytes();
    let req = describe_configs_v0_request(&body).unwrap(); // ok: test
    assert_eq!(req.resources.len(), 2);
    assert_eq!(req.resources[0].configuration_keys, None);
    assert_eq!(
        req.resources[1].configuration_keys.as_deref(),
        Some(&[StrBytes::from_static_str("retention.ms")][..])
    );
    assert!(!req.include_synonyms && !req.include_documentation);

    let resp =
        DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![
                DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str("a"))
                    .with_value(Some(StrBytes::from_static_str("1")))
                    .with_config_source(DEFAULT_CONFIG),
                DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str("b"))
                    .with_value(None)
                    .with_config_source(1),
            ])]);
    let out = describe_configs_v0_response(&resp).unwrap(); // ok: test
                                                            // throttle, [error, message, type, name, [name, value, read_only, is_default, is_sensitive]]
    let want = Body::default()
        .i32(0)
        .i32(1)
        .i16(0)
        .str("")
        .i8(2)
        .str("t")
        .i32(2)
        .str("a")
        .str("1")
        .i8(0)
        .i8(1)
        .i8(0)
        .str("b")
        .null_str()
        .i8(0)
        .i8(0)
        .i8(0)
        .bytes();
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn create_and_delete_topics_old_versions() {
    // [name, partitions, replication, [partition, [broker]], [config, value]], timeout, (v1) validate_only
    let v0 = Body::default()
        .i32(1)
        .str("t")
        .i32(3)
        .i16(1)
        .i32(1)
        .i32(0)
        .i32(1)
        .i32(1)
        .i32(1)
        .str("retention.ms")
        .str("1000")
        .i32(5000);
    let req = create_topics_v0_v1_request(&v0.0.clone().into(), 0).unwrap(); // ok: test
    let t = &req.topics[0];
    assert_eq!(
        (t.name.0.as_str(), t.num_partitions, t.replication_factor),
        ("t", 3, 1)
    );
    assert_eq!(t.assignments[0].broker_ids, vec![BrokerId(1)]);
    assert_eq!(t.configs[0].value.as_deref(), Some("1000"));
    assert_eq!((req.timeout_ms, req.validate_only), (5000, false));
    let v1 = v0.i8(1).bytes();
    let req = create_topics_v0_v1_request(&v1, 1).unwrap(); // ok: test
    assert!(req.validate_only);
    // v1 without its validate_only byte is truncated.
    assert!(create_topics_v0_v1_request(&v1.slice(..v1.len() - 1), 1).is_err());

    let resp = CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_error_code(36)
        .with_error_message(Some(StrBytes::from_static_str("exists")))]);
    let out = create_topics_v0_v1_response(&resp, 0).unwrap(); // ok: test
    assert_eq!(
        &out[..],
        &Body::default().i32(1).str("t").i16(36).bytes()[..]
    );
    let out = create_topics_v0_v1_response(&resp, 1).unwrap(); // ok: test
    let want = Body::default()
        .i32(1)
        .str("t")
        .i16(36)
        .str("exists")
        .bytes();
    assert_eq!(&out[..], &want[..]);

    // DeleteTopics v0 request is the v1 layout; its response lacks v1's throttle time.
    let body = Body::default().i32(1).str("t").i32(5000).bytes();
    let req: DeleteTopicsRequest = decode_as(&body, 1).unwrap(); // ok: test
    assert_eq!(req.topic_names[0].0.as_str(), "t");
    let resp = DeleteTopicsResponse::default()
        .with_responses(vec![DeletableTopicResult::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_error_code(3)]);
    let out = delete_topics_v0_response(&resp).unwrap(); // ok: test
    assert_eq!(
        &out[..],
        &Body::default().i32(1).str("t").i16(3).bytes()[..]
    );
}

#[test]
fn hostile_counts_fail_without_allocating() {
    let huge = Body::default().str("g").i32(i32::MAX).bytes();
    assert!(offset_commit_v0_v1_request(&huge, 0).is_err());
    let huge = Body::default().i32(-1).i32(i32::MAX).bytes();
    assert!(list_offsets_v0_request(&huge, 0).is_err());
    let huge = Body::default().i32(i32::MAX).bytes();
    assert!(describe_configs_v0_request(&huge).is_err());
    assert!(create_topics_v0_v1_request(&huge, 0).is_err());
}

#[test]
fn produce_v0_to_v2_request_and_response() {
    // acks, timeout_ms, [topic, [partition, records (BYTES, nullable)]]
    let body = Body::default()
        .i16(-1)
        .i32(1500)
        .i32(1)
        .str("t")
        .i32(2)
        .i32(3)
        .i32(4)
        .i8(1)
        .i8(2)
        .i8(3)
        .i8(4)
        .i32(5)
        .i32(-1)
        .bytes();
    let req = produce_v0_v2_request(&body).unwrap(); // ok: test
    assert_eq!((req.acks, req.timeout_ms), (-1, 1500));
    let t = &req.topic_data[0];
    assert_eq!(t.name.0.as_str(), "t");
    assert_eq!(t.partition_data[0].index, 3);
    assert_eq!(
        t.partition_data[0].records.as_deref(),
        Some(&[1u8, 2, 3, 4][..])
    );
    assert_eq!(
        (
            t.partition_data[1].index,
            t.partition_data[1].records.is_none()
        ),
        (5, true)
    );
    assert!(produce_v0_v2_request(&body.slice(..body.len() - 1)).is_err());
    // records longer than the body
    let short = Body::default()
        .i16(1)
        .i32(0)
        .i32(1)
        .str("t")
        .i32(1)
        .i32(0)
        .i32(9)
        .bytes();
    assert!(produce_v0_v2_request(&short).is_err());

    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    let resp = ProduceResponse::default()
        .with_throttle_time_ms(9)
        .with_responses(vec![TopicProduceResponse::default()
            .with_name(topic_name(StrBytes::from_static_str("t")))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(3)
                .with_error_code(2)
                .with_base_offset(40)
                .with_log_append_time_ms(-1)])]);
    for v in 0..=2 {
        let out = produce_v0_v2_response(&resp, v).unwrap(); // ok: test
                                                             // [topic, [partition, error_code, base_offset, (v2) log_append_time]], (v1+) throttle
        let mut want = Body::default().i32(1).str("t").i32(1).i32(3).i16(2).i64(40);
        if v >= 2 {
            want = want.i64(-1);
        }
        if v >= 1 {
            want = want.i32(9);
        }
        assert_eq!(&out[..], &want.bytes()[..], "Produce v{v}");
    }
}

#[test]
fn fetch_v0_to_v3_request() {
    for v in 0..=3 {
        // replica_id, max_wait_ms, min_bytes, (v3) max_bytes,
        // [topic, [partition, fetch_offset, partition_max_bytes]]
        let mut body = Body::default().i32(-1).i32(500).i32(1);
        if v >= 3 {
            body = body.i32(4096);
        }
        let body = body
            .i32(1)
            .str("t")
            .i32(2)
            .i32(0)
            .i64(17)
            .i32(1024)
            .i32(1)
            .i64(0)
            .i32(2048)
            .bytes();
        let req = fetch_v0_v3_request(&body, v).unwrap(); // ok: test
        assert_eq!(req.replica_id, BrokerId(-1));
        assert_eq!((req.max_wait_ms, req.min_bytes), (500, 1));
        assert_eq!(req.max_bytes, if v >= 3 { 4096 } else { i32::MAX });
        let t = &req.topics[0];
        assert_eq!(t.topic.0.as_str(), "t");
        let parts: Vec<_> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes,
                    p.current_leader_epoch,
                )
            })
            .collect();
        assert_eq!(parts, vec![(0, 17, 1024, -1), (1, 0, 2048, -1)]);
        assert!(fetch_v0_v3_request(&body.slice(..body.len() - 1), v).is_err());
    }
}
