//! The request versions Kafka 3.9 served and 4.0 removed (KIP-896), spoken byte by byte
//! against a real broker: ListOffsets v0, OffsetCommit v0-1 / OffsetFetch v0-1,
//! DescribeConfigs v0, CreateTopics v0-1, DeleteTopics v0, plus Metadata and the group APIs
//! at v0, and Produce v0-2 / Fetch v0-3 with message formats v0/v1 (up-converted on
//! produce, down-converted on fetch, stored as v2 batches). Requests are built and
//! responses read field by field from Kafka's message JSON for each version
//! (`kafka-protocol` 0.18 no longer models these versions), message sets from Kafka's
//! spec (`common::old_wire`). Newer versions than advertised must get UNSUPPORTED_VERSION
//! in a well-formed answer, and the connection stays usable.

mod common;

use anyhow::{ensure, Context as _, Result};
use bytes::Bytes;
use common::kafka::{batch_headers, connect, fetch_request, partition0, produce, topic_name, TS};
use common::old_wire::{
    call_raw, fetch_v0_v3, gzip_wrapper, message, produce_body, produce_v0_v2, read_message_set,
    send_raw, Body, Fields, GZIP, LOG_APPEND_TIME,
};
use common::raw::{compressed_batch, record_batch, RawClient};
use common::BrokerProcess;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, MetadataRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC: i16 = 3;
const INVALID_TIMESTAMP: i16 = 32;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const METADATA: i16 = 3;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const CREATE_TOPICS: i16 = 19;
const DELETE_TOPICS: i16 = 20;
const DESCRIBE_CONFIGS: i16 = 32;

/// ListOffsets v0 for one partition: (error code, old_style_offsets).
fn list_offsets_v0(
    c: &mut RawClient,
    topic: &str,
    partition: i32,
    timestamp: i64,
    max: i32,
) -> Result<(i16, Vec<i64>)> {
    let body = Body::default()
        .i32(-1)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .i64(timestamp)
        .i32(max);
    let mut r = call_raw(c, LIST_OFFSETS, 0, &body)?;
    ensure!(r.count("topics")? == 1, "one topic");
    ensure!(r.str("topic")? == topic, "topic name echoed");
    ensure!(r.count("partitions")? == 1, "one partition");
    ensure!(r.i32("partition")? == partition, "partition echoed");
    let error = r.i16("error_code")?;
    let offsets = (0..r.count("old_style_offsets")?)
        .map(|_| r.i64("offset"))
        .collect::<Result<Vec<_>>>()?;
    r.done("ListOffsets v0")?;
    Ok((error, offsets))
}

#[test]
fn list_offsets_v0_answers_old_style_offsets() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("lo", 2, &[])?;
    let mut c = connect(&broker)?;
    // Three records at TS, TS+1, TS+2 in partition 0; partition 1 stays empty.
    let (code, base) = produce(&mut c, "lo", record_batch(&["a", "b", "c"], TS)?)?;
    ensure!(code == 0 && base == 0, "produce: {code} at {base}");

    for (what, partition, ts, max, want) in [
        ("latest", 0, -1, 1, vec![3]),
        ("earliest", 0, -2, 1, vec![0]),
        ("latest, max 10", 0, -1, 10, vec![3]),
        ("latest, max 0", 0, -1, 0, vec![]),
        ("timestamp of the 2nd record", 0, TS + 1, 1, vec![1]),
        ("timestamp after every record", 0, TS + 60_000, 1, vec![3]),
        ("empty partition, latest", 1, -1, 1, vec![0]),
    ] {
        let (error, offsets) = list_offsets_v0(&mut c, "lo", partition, ts, max)?;
        ensure!(
            error == 0 && offsets == want,
            "{what}: error {error}, offsets {offsets:?}, want {want:?}"
        );
    }
    let (error, offsets) = list_offsets_v0(&mut c, "no-such-topic", 0, -1, 1)?;
    ensure!(
        error == UNKNOWN_TOPIC && offsets.is_empty(),
        "unknown topic: {error} {offsets:?}"
    );
    Ok(())
}

/// OffsetFetch v0/v1 of one partition: (offset, metadata, error code).
fn offset_fetch(
    c: &mut RawClient,
    version: i16,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<(i64, Option<String>, i16)> {
    let body = Body::default()
        .str(group)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition);
    let mut r = call_raw(c, OFFSET_FETCH, version, &body)?;
    ensure!(
        r.count("topics")? == 1 && r.str("topic")? == topic,
        "topic echoed"
    );
    ensure!(r.count("partitions")? == 1, "one partition");
    ensure!(r.i32("partition")? == partition, "partition echoed");
    let offset = r.i64("committed_offset")?;
    let metadata = r.nullable_str("metadata")?;
    let error = r.i16("error_code")?;
    r.done(&format!("OffsetFetch v{version}"))?;
    Ok((offset, metadata, error))
}

/// The per-partition error codes of an OffsetCommit v0-v2 answer.
fn commit_errors(mut r: Fields) -> Result<Vec<i16>> {
    let mut out = Vec::new();
    for _ in 0..r.count("topics")? {
        r.str("topic")?;
        for _ in 0..r.count("partitions")? {
            r.i32("partition")?;
            out.push(r.i16("error_code")?);
        }
    }
    r.done("OffsetCommit")?;
    Ok(out)
}

#[test]
fn offset_commit_v0_v1_read_back_by_offset_fetch_v0_v1() -> Result<()> {
    // expired offsets are looked for often, so a wrong commit time shows (below)
    let broker = BrokerProcess::spawn_with(
        2,
        &[
            ("group.initial.rebalance.delay.ms", "0"),
            ("offsets.retention.check.interval.ms", "200"),
        ],
    )?;
    broker.create_topic("oc", 2, &[])?;
    let mut c = connect(&broker)?;

    // v0: group, [topic, [partition, offset, metadata]]: no generation, a simple commit.
    let body = Body::default()
        .str("g-v0")
        .i32(1)
        .str("oc")
        .i32(2)
        .i32(0)
        .i64(17)
        .str("meta-0")
        .i32(1)
        .i64(4)
        .null_str();
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 0, &body)?)?;
    ensure!(errors == [0, 0], "OffsetCommit v0: {errors:?}");
    for v in [0, 1] {
        let got = offset_fetch(&mut c, v, "g-v0", "oc", 0)?;
        ensure!(
            got == (17, Some("meta-0".into()), 0),
            "OffsetFetch v{v} p0: {got:?}"
        );
        let (offset, _, error) = offset_fetch(&mut c, v, "g-v0", "oc", 1)?;
        ensure!(
            (offset, error) == (4, 0),
            "OffsetFetch v{v} p1: {offset} {error}"
        );
    }
    // Never committed: -1.
    let (offset, _, error) = offset_fetch(&mut c, 0, "g-never", "oc", 0)?;
    ensure!((offset, error) == (-1, 0), "uncommitted: {offset} {error}");

    // v1 simple commit (generation -1, no member) with an explicit commit timestamp.
    let v1 = |group: &str, generation: i32, member: &str, offset: i64| {
        Body::default()
            .str(group)
            .i32(generation)
            .str(member)
            .i32(1)
            .str("oc")
            .i32(1)
            .i32(0)
            .i64(offset)
            .i64(TS)
            .str("meta-1")
    };
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 1, &v1("g-v1", -1, "", 33))?)?;
    ensure!(errors == [0], "OffsetCommit v1 simple: {errors:?}");
    let got = offset_fetch(&mut c, 0, "g-v1", "oc", 0)?;
    ensure!(got == (33, Some("meta-1".into()), 0), "after v1: {got:?}");

    // v1 naming a topic that does not exist (answered UNKNOWN_TOPIC_OR_PARTITION) before
    // a known one: each kept partition keeps its own commit time (a 1970 time on the
    // unknown one must not reach the known one, which would then expire at once)
    let body = Body::default()
        .str("g-v1x")
        .i32(-1)
        .str("")
        .i32(2)
        .str("nope")
        .i32(1)
        .i32(0)
        .i64(1)
        .i64(0)
        .str("")
        .str("oc")
        .i32(1)
        .i32(0)
        .i64(44)
        .i64(-1)
        .str("");
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 1, &body)?)?;
    ensure!(
        errors.len() == 2 && errors.contains(&0) && errors.contains(&3),
        "{errors:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (offset, _, error) = offset_fetch(&mut c, 1, "g-v1x", "oc", 0)?;
    ensure!(
        (offset, error) == (44, 0),
        "the v1 commit expired: {offset} {error}"
    );

    // v1 from a member of a live group: JoinGroup/SyncGroup v0, commit with the generation.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-live")))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))]);
    let joined = c.call(0, &join)?;
    ensure!(
        joined.error_code == 0,
        "JoinGroup v0: {}",
        joined.error_code
    );
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-live")))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(joined.member_id.clone())
            .with_assignment(Bytes::from_static(b"a"))]);
    let synced = c.call(0, &sync)?;
    ensure!(
        synced.error_code == 0,
        "SyncGroup v0: {}",
        synced.error_code
    );
    let member = joined.member_id.to_string();
    let body = v1("g-live", joined.generation_id, &member, 99);
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 1, &body)?)?;
    ensure!(errors == [0], "OffsetCommit v1 member: {errors:?}");
    let (offset, _, error) = offset_fetch(&mut c, 1, "g-live", "oc", 0)?;
    ensure!((offset, error) == (99, 0), "g-live: {offset} {error}");
    // A stale generation is refused (ILLEGAL_GENERATION), and a v0 commit (no member) is
    // refused while the group has members (UNKNOWN_MEMBER_ID), as in Kafka.
    let body = v1("g-live", joined.generation_id + 5, &member, 100);
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 1, &body)?)?;
    ensure!(errors == [22], "stale generation: {errors:?}");
    let body = Body::default()
        .str("g-live")
        .i32(1)
        .str("oc")
        .i32(1)
        .i32(0)
        .i64(1)
        .null_str();
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 0, &body)?)?;
    ensure!(errors == [25], "v0 commit to a live group: {errors:?}");
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-live")))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    ensure!(c.call(0, &hb)?.error_code == 0, "Heartbeat v0");
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-live")))
        .with_member_id(joined.member_id.clone());
    ensure!(c.call(0, &leave)?.error_code == 0, "LeaveGroup v0");
    // The committed offset survives the member leaving.
    let (offset, _, _) = offset_fetch(&mut c, 0, "g-live", "oc", 0)?;
    ensure!(offset == 99, "after leave: {offset}");
    let fc = c.call(
        0,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g-live")),
    )?;
    ensure!(
        fc.error_code == 0 && fc.port == i32::from(broker.port()),
        "FindCoordinator v0: {fc:?}"
    );
    Ok(())
}

/// DescribeConfigs v0 of one topic: (error code, [(name, value, read_only, is_default)]).
type ConfigRow = (String, Option<String>, bool, bool);

fn describe_topic_v0(
    c: &mut RawClient,
    topic: &str,
    keys: Option<&[&str]>,
) -> Result<(i16, Vec<ConfigRow>)> {
    let mut body = Body::default().i32(1).i8(2).str(topic);
    match keys {
        None => body = body.i32(-1),
        Some(keys) => {
            body = body.i32(keys.len() as i32);
            for k in keys {
                body = body.str(k);
            }
        }
    }
    let mut r = call_raw(c, DESCRIBE_CONFIGS, 0, &body)?;
    r.i32("throttle_time_ms")?;
    ensure!(r.count("results")? == 1, "one result");
    let error = r.i16("error_code")?;
    r.nullable_str("error_message")?;
    ensure!(r.i8("resource_type")? == 2, "resource type echoed");
    ensure!(r.str("resource_name")? == topic, "resource name echoed");
    let mut rows = Vec::new();
    for _ in 0..r.count("configs")? {
        let name = r.str("name")?;
        let value = r.nullable_str("value")?;
        let read_only = r.i8("read_only")? != 0;
        let is_default = r.i8("is_default")? != 0;
        let _sensitive = r.i8("is_sensitive")?;
        rows.push((name, value, read_only, is_default));
    }
    r.done("DescribeConfigs v0")?;
    Ok((error, rows))
}

/// Topic names and error codes of a CreateTopics v0/v1 or DeleteTopics v0 answer.
fn topic_results(mut r: Fields, with_message: bool) -> Result<Vec<(String, i16)>> {
    let mut out = Vec::new();
    for _ in 0..r.count("topics")? {
        let name = r.str("name")?;
        let error = r.i16("error_code")?;
        if with_message {
            r.nullable_str("error_message")?;
        }
        out.push((name, error));
    }
    r.done("topic results")?;
    Ok(out)
}

fn create_topic_body(name: &str, partitions: i32, validate_only: Option<bool>) -> Body {
    let body = Body::default()
        .i32(1)
        .str(name)
        .i32(partitions)
        .i16(1)
        .i32(0)
        .i32(1)
        .str("retention.ms")
        .str("3600000")
        .i32(15_000);
    match validate_only {
        Some(v) => body.i8(i8::from(v)),
        None => body,
    }
}

/// Topic names in a Metadata v0 answer ([brokers], [topics]).
fn metadata_v0_topics(c: &mut RawClient) -> Result<Vec<(String, i16, usize)>> {
    let md = c.call(0, &MetadataRequest::default().with_topics(Some(vec![])))?;
    Ok(md
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map_or(String::new(), |n| n.0.to_string());
            (name, t.error_code, t.partitions.len())
        })
        .collect())
}

#[test]
fn admin_apis_at_old_versions() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("cfg", 1, &[("retention.ms", "123456789")])?;
    let mut c = RawClient::connect(broker.addr())?;

    // ApiVersions v0 advertises the old versions.
    let av = c.call(0, &ApiVersionsRequest::default())?;
    ensure!(av.error_code == 0, "ApiVersions v0: {}", av.error_code);
    for (api, min) in [
        (LIST_OFFSETS, 0),
        (OFFSET_COMMIT, 0),
        (OFFSET_FETCH, 0),
        (DESCRIBE_CONFIGS, 0),
        (CREATE_TOPICS, 0),
        (DELETE_TOPICS, 0),
        (METADATA, 0),
        (PRODUCE, 0),
        (FETCH, 0),
    ] {
        let k = av.api_keys.iter().find(|k| k.api_key == api);
        ensure!(
            k.is_some_and(|k| k.min_version == min),
            "api {api}: advertised {k:?}, want min {min}"
        );
    }

    // DescribeConfigs v0: every config of the topic, the override not default.
    let (error, rows) = describe_topic_v0(&mut c, "cfg", None)?;
    ensure!(error == 0, "DescribeConfigs v0: error {error}");
    let retention = rows.iter().find(|r| r.0 == "retention.ms");
    ensure!(
        retention
            == Some(&(
                "retention.ms".into(),
                Some("123456789".into()),
                false,
                false
            )),
        "retention.ms: {retention:?}"
    );
    ensure!(
        rows.iter().any(|r| r.0 == "cleanup.policy" && r.3),
        "cleanup.policy should be listed as default: {rows:?}"
    );
    let (error, rows) = describe_topic_v0(&mut c, "cfg", Some(&["retention.ms"]))?;
    ensure!(error == 0 && rows.len() == 1, "one key: {error} {rows:?}");
    let (error, _) = describe_topic_v0(&mut c, "no-such-topic", None)?;
    ensure!(error == UNKNOWN_TOPIC, "unknown topic: {error}");

    // CreateTopics v0, then v1 (exists; validate_only), DeleteTopics v0.
    let r = call_raw(
        &mut c,
        CREATE_TOPICS,
        0,
        &create_topic_body("made-v0", 3, None),
    )?;
    ensure!(
        topic_results(r, false)? == [("made-v0".to_string(), 0)],
        "CreateTopics v0"
    );
    broker.wait_for_topic("made-v0", 3)?;
    let (_, rows) = describe_topic_v0(&mut c, "made-v0", Some(&["retention.ms"]))?;
    ensure!(
        rows.first().and_then(|r| r.1.as_deref()) == Some("3600000"),
        "configs given at creation: {rows:?}"
    );
    let body = create_topic_body("made-v0", 3, Some(false));
    let r = call_raw(&mut c, CREATE_TOPICS, 1, &body)?;
    ensure!(
        topic_results(r, true)? == [("made-v0".to_string(), TOPIC_ALREADY_EXISTS)],
        "CreateTopics v1 of an existing topic"
    );
    let body = create_topic_body("validated", 2, Some(true));
    let r = call_raw(&mut c, CREATE_TOPICS, 1, &body)?;
    ensure!(
        topic_results(r, true)? == [("validated".to_string(), 0)],
        "CreateTopics v1 validate_only"
    );
    let topics = metadata_v0_topics(&mut c)?;
    ensure!(
        topics.iter().any(|t| t == &("made-v0".to_string(), 0, 3))
            && !topics.iter().any(|t| t.0 == "validated"),
        "Metadata v0 after create: {topics:?}"
    );
    let body = Body::default().i32(1).str("made-v0").i32(15_000);
    let r = call_raw(&mut c, DELETE_TOPICS, 0, &body)?;
    ensure!(
        topic_results(r, false)? == [("made-v0".to_string(), 0)],
        "DeleteTopics v0"
    );
    ensure!(
        !metadata_v0_topics(&mut c)?.iter().any(|t| t.0 == "made-v0"),
        "deleted topic still listed"
    );
    Ok(())
}

/// The old versions answer ACLs per resource as the current ones do: with an authorizer
/// (everything allowed where no ACL names the resource) and DENY ACLs on some topics (and
/// on creating through the cluster) and a group, CreateTopics v0 and v1, DeleteTopics v0,
/// DescribeConfigs v0, ListOffsets v0 and OffsetCommit v0 refuse exactly those topics and
/// act on the others of the same request; OffsetCommit v0 and OffsetFetch v0-1 of the
/// denied group answer GROUP_AUTHORIZATION_FAILED per partition.
#[test]
fn old_versions_answer_acls_per_resource() -> Result<()> {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::CreateAclsRequest;
    const TOPIC_DENIED: i16 = 29;
    const GROUP_DENIED: i16 = 30;
    let broker = BrokerProcess::spawn_with(
        1,
        &[
            ("authorizer.class.name", "StandardAuthorizer"),
            ("allow.everyone.if.no.acl.found", "true"),
        ],
    )?;
    broker.create_topic("keep-v0", 1, &[])?;
    broker.create_topic("drop-v0", 1, &[])?;
    for t in ["lo-ok", "lo-no", "oc-no"] {
        broker.create_topic(t, 1, &[])?;
    }
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    // DENY (permission 2) CREATE 5 / DELETE 6 / DESCRIBE_CONFIGS 10 on topics (type 2,
    // literal pattern 3) for every user; CREATE on the cluster (type 4) would allow every
    // topic, so it is denied too
    let acl = |rt: i8, name: &str, op: i8, permission: i8| {
        AclCreation::default()
            .with_resource_type(rt)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_resource_pattern_type(3)
            .with_principal(StrBytes::from_static_str("User:*"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(op)
            .with_permission_type(permission)
    };
    let deny = |topic: &str, op: i8| acl(2, topic, op, 2);
    let created = c.call(
        c.version_for::<CreateAclsRequest>(3)?,
        &CreateAclsRequest::default().with_creations(vec![
            acl(4, "kafka-cluster", 5, 2),
            deny("denied-v0", 5),
            deny("denied-v1", 5),
            deny("keep-v0", 6),
            deny("keep-v0", 10),
            // an ACL on keep-v0 ends allow.everyone.if.no.acl.found for it: it stays
            // describable (listed) with an ALLOW DESCRIBE (8, permission 3)
            acl(2, "keep-v0", 8, 3),
            // lo-no: no DESCRIBE (ListOffsets); oc-no: no READ (OffsetCommit), listed;
            // group g-no: no READ (OffsetCommit), no DESCRIBE (OffsetFetch)
            deny("lo-no", 8),
            deny("oc-no", 3),
            acl(2, "oc-no", 8, 3),
            acl(3, "g-no", 3, 2),
            acl(3, "g-no", 8, 2),
        ]),
    )?;
    ensure!(
        created.results.iter().all(|r| r.error_code == 0),
        "CreateAcls: {:?}",
        created.results
    );
    // the controller answers once every shard applied them
    let two_topics = |a: &str, b: &str, validate_only: Option<bool>| {
        let mut body = Body::default().i32(2);
        for name in [a, b] {
            body = body.str(name).i32(1).i16(1).i32(0).i32(0);
        }
        let body = body.i32(15_000);
        match validate_only {
            Some(v) => body.i8(i8::from(v)),
            None => body,
        }
    };
    let sorted = |mut v: Vec<(String, i16)>| {
        v.sort();
        v
    };
    let r = call_raw(
        &mut c,
        CREATE_TOPICS,
        0,
        &two_topics("made-v0", "denied-v0", None),
    )?;
    let got = sorted(topic_results(r, false)?);
    ensure!(
        got == [
            ("denied-v0".to_string(), TOPIC_DENIED),
            ("made-v0".to_string(), 0)
        ],
        "CreateTopics v0: {got:?}"
    );
    let body = two_topics("made-v1", "denied-v1", Some(false));
    let r = call_raw(&mut c, CREATE_TOPICS, 1, &body)?;
    let got = sorted(topic_results(r, true)?);
    ensure!(
        got == [
            ("denied-v1".to_string(), TOPIC_DENIED),
            ("made-v1".to_string(), 0)
        ],
        "CreateTopics v1: {got:?}"
    );
    let body = Body::default()
        .i32(2)
        .str("drop-v0")
        .str("keep-v0")
        .i32(15_000);
    let r = call_raw(&mut c, DELETE_TOPICS, 0, &body)?;
    let got = sorted(topic_results(r, false)?);
    ensure!(
        got == [
            ("drop-v0".to_string(), 0),
            ("keep-v0".to_string(), TOPIC_DENIED)
        ],
        "DeleteTopics v0: {got:?}"
    );
    let topics: Vec<String> = metadata_v0_topics(&mut c)?
        .into_iter()
        .map(|t| t.0)
        .collect();
    ensure!(
        topics.contains(&"made-v0".to_string())
            && topics.contains(&"made-v1".to_string())
            && topics.contains(&"keep-v0".to_string())
            && !topics
                .iter()
                .any(|t| t.starts_with("denied") || t == "drop-v0"),
        "Metadata v0 afterwards: {topics:?}"
    );
    let (error, rows) = describe_topic_v0(&mut c, "keep-v0", None)?;
    ensure!(
        error == TOPIC_DENIED && rows.is_empty(),
        "DescribeConfigs v0 denied: {error} {rows:?}"
    );
    let (error, rows) = describe_topic_v0(&mut c, "made-v0", Some(&["retention.ms"]))?;
    ensure!(
        error == 0 && rows.len() == 1,
        "DescribeConfigs v0 allowed: {error} {rows:?}"
    );

    // ListOffsets v0 of two topics: the latest offset of lo-ok, lo-no refused
    let mut body = Body::default().i32(-1).i32(2);
    for t in ["lo-ok", "lo-no"] {
        body = body.str(t).i32(1).i32(0).i64(-1).i32(1);
    }
    let mut r = call_raw(&mut c, LIST_OFFSETS, 0, &body)?;
    let mut got = Vec::new();
    for _ in 0..r.count("topics")? {
        let topic = r.str("topic")?;
        for _ in 0..r.count("partitions")? {
            r.i32("partition")?;
            let error = r.i16("error_code")?;
            let offsets = (0..r.count("old_style_offsets")?)
                .map(|_| r.i64("offset"))
                .collect::<Result<Vec<_>>>()?;
            got.push((topic.clone(), error, offsets));
        }
    }
    r.done("ListOffsets v0")?;
    got.sort();
    ensure!(
        got == [
            ("lo-no".to_string(), TOPIC_DENIED, vec![]),
            ("lo-ok".to_string(), 0, vec![0])
        ],
        "ListOffsets v0: {got:?}"
    );

    // OffsetCommit v0 of two topics: lo-ok committed, oc-no (no READ) not
    let commit = |group: &str| {
        let mut body = Body::default().str(group).i32(2);
        for t in ["lo-ok", "oc-no"] {
            body = body.str(t).i32(1).i32(0).i64(5).null_str();
        }
        body
    };
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 0, &commit("g-ok"))?)?;
    ensure!(errors == [0, TOPIC_DENIED], "OffsetCommit v0: {errors:?}");
    let (offset, _, error) = offset_fetch(&mut c, 0, "g-ok", "lo-ok", 0)?;
    ensure!(
        (offset, error) == (5, 0),
        "lo-ok committed: {offset} {error}"
    );
    let (offset, _, error) = offset_fetch(&mut c, 0, "g-ok", "oc-no", 0)?;
    ensure!(
        (offset, error) == (-1, 0),
        "oc-no not committed: {offset} {error}"
    );
    // a group without READ: every partition refused; without DESCRIBE: its offsets too
    let errors = commit_errors(call_raw(&mut c, OFFSET_COMMIT, 0, &commit("g-no"))?)?;
    ensure!(
        errors == [GROUP_DENIED, GROUP_DENIED],
        "OffsetCommit v0 to g-no: {errors:?}"
    );
    for v in [0, 1] {
        let (offset, _, error) = offset_fetch(&mut c, v, "g-no", "lo-ok", 0)?;
        ensure!(
            (offset, error) == (-1, GROUP_DENIED),
            "OffsetFetch v{v} of g-no: {offset} {error}"
        );
    }
    Ok(())
}

/// The records produced below, by offset: (key, value, timestamp). v0 messages have no
/// timestamp (-1, NO_TIMESTAMP); the LogAppendTime wrapper gives its own to offset 8.
fn expected() -> Vec<(Option<Vec<u8>>, Vec<u8>, i64)> {
    let ts = [-1, -1, -1, -1, TS, TS + 1, TS + 2, TS + 3, TS + 50];
    (0..9)
        .map(|i| {
            let key = (i % 4 != 1).then(|| format!("k{i}").into_bytes());
            (key, format!("v{i}").into_bytes(), ts[i])
        })
        .collect()
}

/// Message `i` of `expected()` at `offset` (relative or absolute), magic and timestamp.
fn old_message(i: usize, offset: i64, magic: i8, ts: i64) -> Vec<u8> {
    let (key, value, _) = &expected()[i];
    message(offset, magic, 0, ts, key.as_deref(), Some(value))
}

#[test]
fn message_formats_v0_v1_round_trip_through_every_fetch_version() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("fmt", 1, &[])?;
    let mut c = connect(&broker)?;

    // Produce v0: two magic-0 messages (producer offsets are ignored: the log assigns).
    let set = [old_message(0, 0, 0, -1), old_message(1, 1, 0, -1)].concat();
    ensure!(
        produce_v0_v2(&mut c, 0, "fmt", &set)? == (0, 0),
        "Produce v0"
    );
    // Produce v1: a magic-0 gzip wrapper; inner offsets absolute (as the producer wrote).
    let inner = [old_message(2, 0, 0, -1), old_message(3, 1, 0, -1)].concat();
    let set = gzip_wrapper(1, 0, 0, -1, &inner)?;
    ensure!(
        produce_v0_v2(&mut c, 1, "fmt", &set)? == (0, 2),
        "Produce v1 gzip"
    );
    // Produce v2: magic-1 messages with CreateTime timestamps.
    let set = [old_message(4, 0, 1, TS), old_message(5, 1, 1, TS + 1)].concat();
    ensure!(
        produce_v0_v2(&mut c, 2, "fmt", &set)? == (0, 4),
        "Produce v2"
    );
    // a magic-1 gzip wrapper: inner offsets relative, the wrapper at the last one
    let inner = [old_message(6, 0, 1, TS + 2), old_message(7, 1, 1, TS + 3)].concat();
    let set = gzip_wrapper(1, 1, 0, TS + 3, &inner)?;
    ensure!(
        produce_v0_v2(&mut c, 2, "fmt", &set)? == (0, 6),
        "Produce v2 gzip"
    );
    // a LogAppendTime wrapper: its inner messages take the wrapper's timestamp
    let inner = old_message(8, 0, 1, TS);
    let set = gzip_wrapper(0, 1, LOG_APPEND_TIME, TS + 50, &inner)?;
    ensure!(
        produce_v0_v2(&mut c, 2, "fmt", &set)? == (0, 8),
        "Produce v2 LogAppendTime"
    );
    ensure!(
        broker.watermarks("fmt", 0)? == (0, 9),
        "nine records stored"
    );

    let want = expected();
    // Fetch v0-1 answer magic 0; v2-3 magic 1, with timestamps (as Kafka: Fetch v2 brought
    // message format v1). The compressed batches come back as gzip wrappers (magic 0:
    // absolute inner offsets; magic 1: 0, 1, ... up to the wrapper's).
    for v in 0..=3 {
        let (error, hw, records) = fetch_v0_v3(&mut c, v, "fmt", 0, 1 << 20, 1 << 20)?;
        ensure!((error, hw) == (0, 9), "Fetch v{v}: error {error}, hw {hw}");
        let (msgs, wrappers) = read_message_set(&records)?;
        let magic = if v <= 1 { 0 } else { 1 };
        let got: Vec<_> = msgs
            .iter()
            .map(|m| {
                (
                    m.offset,
                    m.key.clone(),
                    m.value.clone().unwrap_or_default(),
                    m.timestamp,
                )
            })
            .collect();
        let wanted: Vec<_> = want
            .iter()
            .enumerate()
            .map(|(i, (k, v, ts))| {
                (
                    i as i64,
                    k.clone(),
                    v.clone(),
                    if magic == 0 { -1 } else { *ts },
                )
            })
            .collect();
        ensure!(got == wanted, "Fetch v{v}: {got:?}\nwant {wanted:?}");
        ensure!(msgs.iter().all(|m| m.magic == magic), "Fetch v{v}: magic");
        let shapes: Vec<_> = wrappers
            .iter()
            .map(|w| (w.offset, w.magic, w.inner_offsets.clone()))
            .collect();
        let inner = |a: i64, b: i64| if magic == 0 { vec![a, b] } else { vec![0, 1] };
        let last = if magic == 0 { vec![8] } else { vec![0] };
        let want_shapes = vec![
            (3, magic, inner(2, 3)),
            (7, magic, inner(6, 7)),
            (8, magic, last),
        ];
        ensure!(shapes == want_shapes, "Fetch v{v} wrappers: {shapes:?}");
        if magic == 1 {
            // the wrapper timestamps: the largest inner one (the LogAppendTime wrapper was
            // stored as CreateTime records with its time, as Kafka does on a CreateTime topic)
            let ts: Vec<_> = wrappers
                .iter()
                .map(|w| (w.timestamp, w.attributes))
                .collect();
            ensure!(
                ts == [(-1, 1), (TS + 3, 1), (TS + 50, 1)],
                "Fetch v{v} wrapper timestamps and attributes: {ts:?}"
            );
        }
    }

    // Fetch v4+ reads the stored v2 batches: the same records; the compressed ones stored
    // gzip-compressed, in three batches, never as message sets.
    for v in [4, 11, 12] {
        let resp = c.call(v, &fetch_request("fmt", 0, 100, 1, 1 << 20, 1 << 20))?;
        let p = partition0(&resp)?;
        ensure!(
            (p.error_code, p.high_watermark) == (0, 9),
            "Fetch v{v}: {p:?}"
        );
        let mut raw = p.records.clone().context("no records")?;
        let codecs: Vec<_> = batch_headers(&raw)?
            .iter()
            .scan(0usize, |pos, &(base, _, size)| {
                let codec = raw[*pos + 22] & 0x07;
                ensure_magic2(raw[*pos + 16]);
                *pos += size;
                Some((base, codec))
            })
            .collect();
        ensure!(
            codecs == [(0, 0), (2, 1), (4, 0), (6, 1), (8, 1)],
            "Fetch v{v} batches (base offset, codec): {codecs:?}"
        );
        let mut got = Vec::new();
        while !raw.is_empty() {
            for r in RecordBatchDecoder::decode(&mut raw)?.records {
                let key = r.key.as_ref().map(|k| k.to_vec());
                let value = r.value.clone().unwrap_or_default().to_vec();
                got.push((r.offset, key, value, r.timestamp));
            }
        }
        let wanted: Vec<_> = want
            .iter()
            .enumerate()
            .map(|(i, (k, v, ts))| (i as i64, k.clone(), v.clone(), *ts))
            .collect();
        ensure!(got == wanted, "Fetch v{v}: {got:?}");
    }

    // From the middle of a batch: an uncompressed one starts at the fetch offset; a
    // compressed one comes whole (the client skips what it did not ask for), as in Kafka.
    let (_, _, r) = fetch_v0_v3(&mut c, 3, "fmt", 5, 1 << 20, 1 << 20)?;
    let first = read_message_set(&r)?.0.first().map(|m| m.offset);
    ensure!(first == Some(5), "from offset 5: first {first:?}");
    let (_, _, r) = fetch_v0_v3(&mut c, 1, "fmt", 7, 1 << 20, 1 << 20)?;
    let offsets: Vec<_> = read_message_set(&r)?.0.iter().map(|m| m.offset).collect();
    ensure!(offsets == [6, 7, 8], "from offset 7: {offsets:?}");
    // Limits: partition max_bytes (every version) and the response's (v3) of one byte
    // still give the first whole batch, converted; nothing past the end.
    for (v, part_max, max) in [(0, 1, 1 << 20), (2, 1, 1 << 20), (3, 1 << 20, 1), (3, 1, 1)] {
        let (_, _, r) = fetch_v0_v3(&mut c, v, "fmt", 0, part_max, max)?;
        let offsets: Vec<_> = read_message_set(&r)?.0.iter().map(|m| m.offset).collect();
        ensure!(
            offsets == [0, 1],
            "v{v} limits {part_max}/{max}: {offsets:?}"
        );
    }
    let (error, hw, r) = fetch_v0_v3(&mut c, 2, "fmt", 9, 1 << 20, 1 << 20)?;
    ensure!(
        (error, hw, r.len()) == (0, 9, 0),
        "at the end: {error} {hw} {}",
        r.len()
    );
    let (error, _, _) = fetch_v0_v3(&mut c, 0, "fmt", 100, 1 << 20, 1 << 20)?;
    ensure!(error == OFFSET_OUT_OF_RANGE, "past the end: {error}");

    // acks=0 at v2: no answer; the next request on the connection sees the record.
    send_raw(
        &mut c,
        PRODUCE,
        2,
        77,
        &produce_body("fmt", 0, &old_message(0, 0, 1, TS)),
    )?;
    let (_, hw, _) = fetch_v0_v3(&mut c, 3, "fmt", 9, 1 << 20, 1 << 20)?;
    ensure!(hw == 10, "after the acks=0 produce: hw {hw}");
    Ok(())
}

fn ensure_magic2(magic: u8) {
    assert_eq!(magic, 2, "a stored batch that is not v2"); // ok: test
}

#[test]
fn bad_message_sets_get_kafkas_errors_and_change_nothing() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("bad", 1, &[])?;
    let mut c = connect(&broker)?;
    let good = old_message(0, 0, 1, TS);
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let v0_in_v1 = gzip_wrapper(0, 1, 0, TS, &old_message(0, 0, 0, -1))?;
    let nested = gzip_wrapper(0, 1, 0, TS, &gzip_wrapper(0, 1, 0, TS, &good)?)?;
    let wrapper = gzip_wrapper(0, 1, 0, TS, &good)?;
    let zstd = message(0, 1, 4, TS, None, Some(b"(zstd)"));
    for (what, set, want) in [
        ("a bad CRC", bad_crc, CORRUPT_MESSAGE),
        (
            "a truncated message",
            good[..good.len() - 1].to_vec(),
            CORRUPT_MESSAGE,
        ),
        (
            "gzip that is not",
            message(0, 1, GZIP, TS, None, Some(b"not gzip")),
            CORRUPT_MESSAGE,
        ),
        (
            "mixed magics",
            [good.clone(), old_message(1, 1, 0, -1)].concat(),
            INVALID_RECORD,
        ),
        ("magic 0 inside magic 1", v0_in_v1, INVALID_RECORD),
        ("nested compression", nested, INVALID_RECORD),
        (
            "two compressed wrappers",
            [wrapper.clone(), wrapper].concat(),
            INVALID_RECORD,
        ),
        ("zstd in a wrapper", zstd, INVALID_RECORD),
        (
            "LogAppendTime without a timestamp",
            message(0, 1, LOG_APPEND_TIME, -1, None, Some(b"x")),
            INVALID_TIMESTAMP,
        ),
    ] {
        let (error, base) = produce_v0_v2(&mut c, 2, "bad", &set)?;
        ensure!(
            (error, base) == (want, -1),
            "{what}: error {error} at {base}, want {want}"
        );
    }
    // a null records field
    let mut r = call_raw(
        &mut c,
        PRODUCE,
        0,
        &Body::default()
            .i16(1)
            .i32(1000)
            .i32(1)
            .str("bad")
            .i32(1)
            .i32(0)
            .i32(-1),
    )?;
    r.count("responses")?;
    r.str("topic")?;
    r.count("partitions")?;
    r.i32("partition")?;
    ensure!(r.i16("error")? == CORRUPT_MESSAGE, "null records");
    ensure!(
        broker.watermarks("bad", 0)? == (0, 0),
        "a refused produce stored records"
    );
    // The connection still serves, and a good set still goes in.
    ensure!(
        produce_v0_v2(&mut c, 2, "bad", &good)? == (0, 0),
        "good after bad"
    );
    Ok(())
}

#[test]
fn zstd_batches_are_not_down_converted() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("z", 1, &[])?;
    let mut c = connect(&broker)?;
    let (code, base) = produce(
        &mut c,
        "z",
        compressed_batch(&["a", "b"], TS, Compression::Zstd)?,
    )?;
    ensure!((code, base) == (0, 0), "zstd produce: {code} {base}");
    // Below Fetch v10 Kafka answered zstd data UNSUPPORTED_COMPRESSION_TYPE; formats v0/v1
    // have no zstd, so Fetch v0-3 cannot have it.
    for v in 0..=3 {
        let (error, hw, r) = fetch_v0_v3(&mut c, v, "z", 0, 1 << 20, 1 << 20)?;
        ensure!(
            (error, hw, r.len()) == (UNSUPPORTED_COMPRESSION_TYPE, -1, 0),
            "Fetch v{v}: {error} {hw}"
        );
    }
    let resp = c.call(12, &fetch_request("z", 0, 100, 1, 1 << 20, 1 << 20))?;
    ensure!(
        partition0(&resp)?
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty()),
        "Fetch v12"
    );
    Ok(())
}

#[test]
fn newer_unserved_versions_are_answered_unsupported_version() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("old", 1, &[])?;
    let mut c = connect(&broker)?;
    // A newer version than advertised that kafka-protocol decodes: Metadata v13 carries a
    // top-level error code.
    let md = c.call(
        13,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic_name("old"))),
        ])),
    )?;
    ensure!(
        md.error_code == UNSUPPORTED_VERSION,
        "Metadata v13: {}",
        md.error_code
    );
    // The same connection still serves supported versions.
    let (code, base) = produce(&mut c, "old", record_batch(&["x"], TS)?)?;
    ensure!(
        code == 0 && base == 0,
        "produce after the error: {code} {base}"
    );
    Ok(())
}
