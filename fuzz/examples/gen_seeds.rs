//! Writes seed corpora to `fuzz/corpus/<target>/` (run from `fuzz/`):
//! `cargo +nightly run --example gen_seeds`
//! Seeds: request frames for a range of APIs and versions built with kafka-protocol's
//! `Encodable` types, request bodies for every supported api/version, uncompressed
//! record batches from `sluice_proto::batch::build_batch`, message sets of formats v0/v1,
//! metadata records and segments.

use bytes::{Bytes, BytesMut};
use prost::Message;
use sluice_fuzz::SUPPORTED;
use sluice_proto::batch::{build_batch, build_compressed_batch, SimpleRecord};
use sluice_proto::kafka_protocol::messages::*;
use sluice_proto::kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_proto::message_set;
use sluice_proto::metadata::*;
use std::path::Path;

fn s(x: &'static str) -> StrBytes {
    StrBytes::from_static_str(x)
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn body<T: Encodable>(v: &T, version: i16) -> Option<Bytes> {
    let mut out = BytesMut::new();
    v.encode(&mut out, version).ok()?;
    Some(out.freeze())
}

/// A complete size-prefixed request frame.
fn frame(api: ApiKey, version: i16, corr: i32, body: &[u8]) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(s("fuzz-seed")));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, api.request_header_version(version))
        .ok()?;
    out.extend_from_slice(body);
    let mut f = (out.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&out);
    Some(f)
}

fn records(n: usize, base: i64) -> Bytes {
    let hdrs: [(&[u8], Option<&[u8]>); 2] = [(b"h", Some(b"v")), (b"n", None)];
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let recs: Vec<SimpleRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| SimpleRecord {
            key: if i % 3 == 2 { None } else { Some(k.as_bytes()) },
            value: if i % 4 == 3 { None } else { Some(b"value") },
            timestamp: 1_700_000_000_000 + i as i64 * 7 - (i as i64 % 2) * 20,
            headers: if i % 2 == 1 { &hdrs } else { &[] },
        })
        .collect();
    build_batch(base, &recs)
}

/// Populated bodies: (api, encoder at version).
fn populated() -> Vec<(ApiKey, Box<dyn Fn(i16) -> Option<Bytes>>)> {
    let topic = || TopicName(s("orders"));
    let mut v: Vec<(ApiKey, Box<dyn Fn(i16) -> Option<Bytes>>)> = Vec::new();
    v.push((
        ApiKey::Produce,
        Box::new(move |ver| {
            let p = produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records(3, 0)));
            let t = produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![p]);
            body(
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30000)
                    .with_topic_data(vec![t]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::Fetch,
        Box::new(move |ver| {
            let p = fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(5)
                .with_partition_max_bytes(1 << 20);
            let t = fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![p]);
            body(
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(-1)
                    .with_topics(vec![t]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::ListOffsets,
        Box::new(move |ver| {
            let p = list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1);
            let t = list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![p]);
            body(
                &ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![t]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::Metadata,
        Box::new(move |ver| {
            let t = metadata_request::MetadataRequestTopic::default().with_name(Some(topic()));
            body(
                &MetadataRequest::default()
                    .with_topics(Some(vec![t]))
                    .with_allow_auto_topic_creation(true),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::ApiVersions,
        Box::new(move |ver| {
            body(
                &ApiVersionsRequest::default()
                    .with_client_software_name(s("sluice-fuzz"))
                    .with_client_software_version(s("1.0")),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::CreateTopics,
        Box::new(move |ver| {
            let c = create_topics_request::CreatableTopicConfig::default()
                .with_name(s("retention.ms"))
                .with_value(Some(s("1000")));
            let t = create_topics_request::CreatableTopic::default()
                .with_name(topic())
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![c]);
            body(
                &CreateTopicsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(1000),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::DeleteTopics,
        Box::new(move |ver| {
            body(
                &DeleteTopicsRequest::default()
                    .with_topic_names(vec![topic()])
                    .with_timeout_ms(1000),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::InitProducerId,
        Box::new(move |ver| {
            body(
                &InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(60000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::DescribeConfigs,
        Box::new(move |ver| {
            let r = describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"));
            body(
                &DescribeConfigsRequest::default().with_resources(vec![r]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::FindCoordinator,
        Box::new(move |ver| {
            body(
                &FindCoordinatorRequest::default()
                    .with_key(s("group-1"))
                    .with_coordinator_keys(vec![s("group-1")]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::JoinGroup,
        Box::new(move |ver| {
            let p = join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(
                    b"\0\x01\0\0\0\x01\0\x06orders\xff\xff\xff\xff",
                ));
            body(
                &JoinGroupRequest::default()
                    .with_group_id(GroupId(s("group-1")))
                    .with_session_timeout_ms(10000)
                    .with_rebalance_timeout_ms(30000)
                    .with_member_id(s(""))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![p]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::Heartbeat,
        Box::new(move |ver| {
            body(
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(s("group-1")))
                    .with_generation_id(1)
                    .with_member_id(s("m-1")),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::OffsetCommit,
        Box::new(move |ver| {
            let p = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_committed_metadata(Some(s("")));
            let t = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![p]);
            body(
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("group-1")))
                    .with_generation_id_or_member_epoch(1)
                    .with_member_id(s("m-1"))
                    .with_topics(vec![t]),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::DescribeLogDirs,
        Box::new(move |ver| {
            let t = describe_log_dirs_request::DescribableLogDirTopic::default()
                .with_topic(topic())
                .with_partitions(vec![0, 2]);
            body(
                &DescribeLogDirsRequest::default().with_topics(Some(vec![t])),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::DeleteRecords,
        Box::new(move |ver| {
            let p = delete_records_request::DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(-1);
            let t = delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic())
                .with_partitions(vec![p]);
            body(
                &DeleteRecordsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(30_000),
                ver,
            )
        }),
    ));
    v.push((
        ApiKey::OffsetFetch,
        Box::new(move |ver| {
            let t = offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0, 1]);
            body(
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("group-1")))
                    .with_topics(Some(vec![t])),
                ver,
            )
        }),
    ));
    v
}

fn main() {
    // requests: [api selector][version selector][body]; every supported api/version with
    // a default body, plus populated bodies.
    let pop = populated();
    for (i, &(api, min, max)) in SUPPORTED.iter().enumerate() {
        for ver in min..=max {
            let sel = [i as u8, (ver - min) as u8];
            let dflt: Option<Bytes> = match api {
                ApiKey::Produce => body(&ProduceRequest::default(), ver),
                ApiKey::Fetch => body(&FetchRequest::default(), ver),
                ApiKey::ListOffsets => body(&ListOffsetsRequest::default(), ver),
                ApiKey::Metadata => body(&MetadataRequest::default(), ver),
                ApiKey::ApiVersions => body(&ApiVersionsRequest::default(), ver),
                ApiKey::CreateTopics => body(&CreateTopicsRequest::default(), ver),
                ApiKey::DeleteTopics => body(&DeleteTopicsRequest::default(), ver),
                ApiKey::InitProducerId => body(&InitProducerIdRequest::default(), ver),
                ApiKey::DescribeConfigs => body(&DescribeConfigsRequest::default(), ver),
                ApiKey::AlterConfigs => body(&AlterConfigsRequest::default(), ver),
                ApiKey::CreatePartitions => body(&CreatePartitionsRequest::default(), ver),
                ApiKey::IncrementalAlterConfigs => {
                    body(&IncrementalAlterConfigsRequest::default(), ver)
                }
                ApiKey::DescribeCluster => body(&DescribeClusterRequest::default(), ver),
                ApiKey::FindCoordinator => body(&FindCoordinatorRequest::default(), ver),
                ApiKey::JoinGroup => body(&JoinGroupRequest::default(), ver),
                ApiKey::SyncGroup => body(&SyncGroupRequest::default(), ver),
                ApiKey::Heartbeat => body(&HeartbeatRequest::default(), ver),
                ApiKey::LeaveGroup => body(&LeaveGroupRequest::default(), ver),
                ApiKey::OffsetCommit => body(&OffsetCommitRequest::default(), ver),
                ApiKey::OffsetFetch => body(&OffsetFetchRequest::default(), ver),
                ApiKey::DescribeGroups => body(&DescribeGroupsRequest::default(), ver),
                ApiKey::ListGroups => body(&ListGroupsRequest::default(), ver),
                ApiKey::DeleteGroups => body(&DeleteGroupsRequest::default(), ver),
                ApiKey::OffsetDelete => body(&OffsetDeleteRequest::default(), ver),
                ApiKey::DescribeLogDirs => body(&DescribeLogDirsRequest::default(), ver),
                ApiKey::DeleteRecords => body(&DeleteRecordsRequest::default(), ver),
                _ => None,
            };
            if let Some(b) = dflt {
                let mut d = sel.to_vec();
                d.extend_from_slice(&b);
                write("requests", &format!("{api:?}-v{ver}-default"), &d);
            }
            for (papi, enc) in &pop {
                if *papi == api {
                    if let Some(b) = enc(ver) {
                        let mut d = sel.to_vec();
                        d.extend_from_slice(&b);
                        write("requests", &format!("{api:?}-v{ver}-populated"), &d);
                    }
                }
            }
        }
    }

    // frame: [max_frame/4][chunk selector][frames...]; a few frames per seed, max 1020.
    let mut n = 0;
    let mut stream = Vec::new();
    for (api, enc) in &pop {
        let (_, min, max) = *SUPPORTED.iter().find(|e| e.0 == *api).unwrap();
        for ver in [min, (min + max) / 2, max] {
            let Some(b) = enc(ver) else { continue };
            let Some(f) = frame(*api, ver, n, &b) else {
                continue;
            };
            if f.len() > 1020 {
                continue;
            }
            let mut d = vec![255u8, 7];
            d.extend_from_slice(&f);
            write("frame", &format!("{api:?}-v{ver}"), &d);
            stream.extend_from_slice(&f);
            n += 1;
        }
    }
    let mut d = vec![255u8, 13];
    d.extend_from_slice(&stream[..stream.len().min(4000)]);
    write("frame", "stream", &d);
    write("frame", "oversize", &[1, 0, 0, 0, 1, 0, 0, 0]);
    write("frame", "negative", &[255, 0, 0xff, 0xff, 0xff, 0xff]);

    // record_batch / recovery_scan / metadata_records
    let b1 = records(1, 0);
    let b3 = records(3, 1);
    let b5 = records(5, 4);
    write("record_batch", "one", &b1);
    write("record_batch", "three", &b3);
    let mut chain = b1.to_vec();
    chain.extend_from_slice(&b3);
    chain.extend_from_slice(&b5);
    write("record_batch", "chain", &chain);
    let mut torn = chain.clone();
    torn.truncate(chain.len() - 9);
    write("record_batch", "torn", &torn);
    let mut gz = b3.to_vec();
    gz[22] |= 1;
    write("record_batch", "gzip-attr", &gz);

    // message_set: message sets of formats v0 and v1 (what Produce v0-2 carry), plain and
    // in a wrapper of each codec those formats have, made by down-converting v2 batches.
    let values: Vec<String> = (0..4).map(|i| format!("value-{i}")).collect();
    let simple: Vec<SimpleRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| SimpleRecord {
            key: (i % 2 == 0).then_some(&b"key"[..]),
            value: Some(v.as_bytes()),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: &[],
        })
        .collect();
    for codec in 0..=3u8 {
        let batch = build_compressed_batch(0, &simple, codec).unwrap();
        for magic in [message_set::MAGIC_V0, message_set::MAGIC_V1] {
            let set = message_set::from_record_batch(&batch, magic, 0, 1 << 20).unwrap();
            write("message_set", &format!("v{magic}-codec{codec}"), &set);
        }
    }

    let seg_in = |base: u8, sel: u8, bytes: &[u8]| {
        let mut d = vec![base, sel, 0x01, 0x00];
        d.extend_from_slice(bytes);
        d
    };
    write("recovery_scan", "chain", &seg_in(0, 0x08, &chain));
    write(
        "recovery_scan",
        "chain-small-page",
        &seg_in(0, 0x10, &chain),
    );
    write("recovery_scan", "torn", &seg_in(0, 0x08, &torn));
    let mut padded = chain.clone();
    padded.resize(4096, 0);
    write("recovery_scan", "padded", &seg_in(0, 0x08, &padded));
    let mut gap = b1.to_vec();
    gap.extend_from_slice(&records(2, 7)); // offset gap
    write("recovery_scan", "gap", &seg_in(0, 0x03, &gap));
    write(
        "recovery_scan",
        "base100",
        &seg_in(100, 0x02, &records(4, 100)),
    );

    let recs = [
        Record::Topic(TopicRecord {
            name: "orders".into(),
            topic_id: vec![7; 16],
        }),
        Record::Partition(PartitionRecord {
            topic_id: vec![7; 16],
            partition_id: 3,
            replicas: vec![1, 2],
            leader: 1,
            leader_epoch: 4,
            ..Default::default()
        }),
        Record::Config(ConfigRecord {
            resource_type: 2,
            resource_name: "orders".into(),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        }),
        Record::Config(ConfigRecord {
            resource_type: 4,
            resource_name: "1".into(),
            name: "x".into(),
            value: None,
        }),
        Record::RemoveTopic(RemoveTopicRecord {
            topic_id: vec![7; 16],
        }),
        Record::ProducerIds(ProducerIdsRecord {
            next_producer_id: 1000,
        }),
    ];
    let encoded: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| MetadataRecord::new(r.clone()).encode_to_vec())
        .collect();
    for (i, e) in encoded.iter().enumerate() {
        write("metadata_records", &format!("record-{i}"), e);
    }
    // a metadata log segment: one batch, each record's value a MetadataRecord
    let simple: Vec<SimpleRecord<'_>> = encoded
        .iter()
        .map(|e| SimpleRecord {
            key: None,
            value: Some(e),
            timestamp: 1_700_000_000_000,
            headers: &[],
        })
        .collect();
    write("metadata_records", "log-batch", &build_batch(0, &simple));
    // Sanity: the request seeds decode the way the broker decodes them.
    let (mut ok, mut total) = (0, 0);
    for e in std::fs::read_dir("corpus/requests").unwrap() {
        let d = std::fs::read(e.unwrap().path()).unwrap();
        if d.len() < 2 {
            continue;
        }
        // the selectors as the fuzz target reads them (the kept corpus also holds inputs
        // the fuzzer grew, whose selector bytes are any value)
        let (api, min, max) = SUPPORTED[d[0] as usize % SUPPORTED.len()];
        let version = min + (d[1] % (max - min + 1) as u8) as i16;
        let b = Bytes::copy_from_slice(&d[2..]);
        total += 1;
        if let Some(Ok(())) = sluice_fuzz::decode_request(api, version, &b) {
            ok += 1;
        }
    }
    let (mut fok, mut ftotal) = (0, 0);
    for e in std::fs::read_dir("corpus/frame").unwrap() {
        let d = std::fs::read(e.unwrap().path()).unwrap();
        if d.len() < 2 {
            continue;
        }
        let mut buf = BytesMut::from(&d[2..]);
        while let Ok(Some(f)) = sluice_proto::frame::take_frame(&mut buf, d[0] as usize * 4) {
            ftotal += 1;
            if let Ok(r) = sluice_proto::request::parse_request(f) {
                if let Some(Ok(())) = sluice_fuzz::decode_request(r.api_key, r.version(), &r.body) {
                    fok += 1;
                }
            }
        }
    }
    println!("seeds written under corpus/: {ok}/{total} request bodies decode, {fok}/{ftotal} frames parse and decode");
}
