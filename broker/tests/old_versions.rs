//! The request versions Kafka 3.9 served and 4.0 removed (KIP-896), spoken byte by byte
//! against a real broker: ListOffsets v0, OffsetCommit v0-1 / OffsetFetch v0-1,
//! DescribeConfigs v0, CreateTopics v0-1, DeleteTopics v0, plus Metadata and the group APIs
//! at v0. Requests are built and responses read field by field from Kafka's message JSON
//! for each version (`kafka-protocol` 0.18 no longer models these versions). Versions
//! Sluice does not serve (Produce v0-2, Fetch v0-3, and newer ones it does not advertise)
//! must get UNSUPPORTED_VERSION in a well-formed answer, and the connection stays usable.

mod common;

use anyhow::{bail, ensure, Context as _, Result};
use bytes::{Buf, Bytes};
use common::kafka::{connect, produce, topic_name, TS};
use common::raw::{record_batch, FrameRead, RawClient};
use common::BrokerProcess;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, MetadataRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNSUPPORTED_VERSION: i16 = 35;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const METADATA: i16 = 3;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const CREATE_TOPICS: i16 = 19;
const DELETE_TOPICS: i16 = 20;
const DESCRIBE_CONFIGS: i16 = 32;

/// A request body built field by field (non-flexible layout: big-endian, i16 string
/// lengths, i32 array counts).
#[derive(Default, Clone)]
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
    fn bytes(self, b: &[u8]) -> Self {
        let mut s = self.i32(b.len() as i32);
        s.0.extend_from_slice(b);
        s
    }
}

/// A response body read field by field; every read is checked.
struct Fields(Bytes);

impl Fields {
    fn take(&mut self, n: usize, what: &str) -> Result<Bytes> {
        ensure!(self.0.remaining() >= n, "response truncated at {what}");
        Ok(self.0.split_to(n))
    }
    fn i8(&mut self, what: &str) -> Result<i8> {
        Ok(self.take(1, what)?.get_i8())
    }
    fn i16(&mut self, what: &str) -> Result<i16> {
        Ok(self.take(2, what)?.get_i16())
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(self.take(4, what)?.get_i32())
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(self.take(8, what)?.get_i64())
    }
    fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.i32(what)?;
        ensure!((0..10_000).contains(&n), "{what}: count {n}");
        Ok(n as usize)
    }
    fn nullable_str(&mut self, what: &str) -> Result<Option<String>> {
        let n = self.i16(what)?;
        if n == -1 {
            return Ok(None);
        }
        ensure!(n >= 0, "{what}: length {n}");
        let b = self.take(n as usize, what)?;
        Ok(Some(
            String::from_utf8(b.to_vec()).context(what.to_string())?,
        ))
    }
    fn str(&mut self, what: &str) -> Result<String> {
        self.nullable_str(what)?
            .with_context(|| format!("{what} is null"))
    }
    fn done(&self, what: &str) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{what}: {} bytes left over",
            self.0.len()
        );
        Ok(())
    }
}

/// Sends `body` as `api` v`version` (request header v1) on a raw connection.
fn send_raw(c: &mut RawClient, api: i16, version: i16, corr: i32, body: &Body) -> Result<()> {
    let mut frame = Body::default()
        .i16(api)
        .i16(version)
        .i32(corr)
        .str("old-versions-test");
    frame.0.extend_from_slice(&body.0);
    let mut out = (frame.0.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame.0);
    c.write_raw(&out)
}

/// One request and its response body (response header v0: the correlation id).
fn call_raw(c: &mut RawClient, api: i16, version: i16, body: &Body) -> Result<Fields> {
    let corr = 4000 + i32::from(api) * 100 + i32::from(version);
    send_raw(c, api, version, corr, body)?;
    let mut f = match c.read_frame()? {
        FrameRead::Frame(f) => f,
        other => bail!("api {api} v{version}: want a response, got {other:?}"),
    };
    ensure!(f.len() >= 4, "api {api} v{version}: short frame");
    let got = f.get_i32();
    ensure!(
        got == corr,
        "api {api} v{version}: correlation {got}, want {corr}"
    );
    Ok(Fields(f))
}

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
    let broker = BrokerProcess::spawn_with(2, &[("group.initial.rebalance.delay.ms", "0")])?;
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
        (PRODUCE, 3),
        (FETCH, 4),
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

/// The partition errors of a Produce v0-2 answer (and its throttle time for v1+).
fn produce_errors(mut r: Fields, version: i16) -> Result<Vec<i16>> {
    let mut out = Vec::new();
    for _ in 0..r.count("responses")? {
        r.str("topic")?;
        for _ in 0..r.count("partitions")? {
            r.i32("partition")?;
            out.push(r.i16("error_code")?);
            r.i64("base_offset")?;
            if version >= 2 {
                r.i64("log_append_time")?;
            }
        }
    }
    if version >= 1 {
        r.i32("throttle_time_ms")?;
    }
    r.done(&format!("Produce v{version}"))?;
    Ok(out)
}

/// The partition errors of a Fetch v0-3 answer.
fn fetch_errors(mut r: Fields, version: i16) -> Result<Vec<(i16, i64)>> {
    if version >= 1 {
        r.i32("throttle_time_ms")?;
    }
    let mut out = Vec::new();
    for _ in 0..r.count("responses")? {
        r.str("topic")?;
        for _ in 0..r.count("partitions")? {
            r.i32("partition")?;
            let error = r.i16("error_code")?;
            let hw = r.i64("high_watermark")?;
            let n = r.i32("records length")?;
            ensure!(n == 0, "records of {n} bytes in an error answer");
            out.push((error, hw));
        }
    }
    r.done(&format!("Fetch v{version}"))?;
    Ok(out)
}

#[test]
fn unserved_versions_are_answered_unsupported_version() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("old", 1, &[])?;
    let mut c = connect(&broker)?;
    let batch = record_batch(&["x"], TS)?;

    // Produce v0-2 (message formats v0/v1): error 35 per partition, nothing stored.
    for v in 0..=2 {
        let body = Body::default()
            .i16(1)
            .i32(10_000)
            .i32(1)
            .str("old")
            .i32(1)
            .i32(0)
            .bytes(&batch);
        let errors = produce_errors(call_raw(&mut c, PRODUCE, v, &body)?, v)?;
        ensure!(errors == [UNSUPPORTED_VERSION], "Produce v{v}: {errors:?}");
    }
    ensure!(
        broker.watermarks("old", 0)? == (0, 0),
        "an unserved produce stored records"
    );
    // Fetch v0-3: error 35 per partition.
    for v in 0..=3 {
        let mut body = Body::default().i32(-1).i32(100).i32(1);
        if v >= 3 {
            body = body.i32(1 << 20);
        }
        let body = body.i32(1).str("old").i32(1).i32(0).i64(0).i32(1 << 20);
        let errors = fetch_errors(call_raw(&mut c, FETCH, v, &body)?, v)?;
        ensure!(
            errors == [(UNSUPPORTED_VERSION, -1)],
            "Fetch v{v}: {errors:?}"
        );
    }
    // The same connection still serves supported versions.
    let (code, base) = produce(&mut c, "old", batch.clone())?;
    ensure!(
        code == 0 && base == 0,
        "produce after the errors: {code} {base}"
    );

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

    // Produce v2 with acks=0 has no answer to carry the error: the connection closes.
    let body = Body::default()
        .i16(0)
        .i32(10_000)
        .i32(1)
        .str("old")
        .i32(1)
        .i32(0)
        .bytes(&batch);
    send_raw(&mut c, PRODUCE, 2, 77, &body)?;
    match c.read_frame()? {
        FrameRead::Closed => {}
        other => bail!("Produce v2 acks=0: want the connection closed, got {other:?}"),
    }
    ensure!(
        broker.watermarks("old", 0)? == (0, 1),
        "acks=0 unserved produce stored records"
    );
    Ok(())
}
