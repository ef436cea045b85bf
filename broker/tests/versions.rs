//! Version matrix: every version the broker advertises in ApiVersions, for the data-path
//! and admin APIs, is exercised with a valid request whose response must decode at that
//! version and carry the expected content. Old and new clients pick different versions,
//! so an encoding slip in any one of them breaks real clients.

mod common;

use std::ops::RangeInclusive;

use anyhow::{bail, ensure, Result};
use bytes::Buf;
use common::raw::{record_batch, RawClient};
use common::BrokerProcess;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, FetchRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Versions both the broker (as advertised) and `kafka-protocol` support, capped.
fn versions<R: Request>(c: &RawClient, cap: i16) -> Result<RangeInclusive<i16>> {
    let hi = c.version_for::<R>(cap)?;
    let mut lo = hi;
    while lo > R::VERSIONS.min && c.version_for::<R>(lo - 1).is_ok() {
        lo -= 1;
    }
    Ok(lo..=hi)
}

fn setup() -> Result<(BrokerProcess, RawClient)> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("matrix", 2, &[("retention.ms", "123456789")])?;
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    Ok((broker, c))
}

#[test]
fn api_versions_every_version() -> Result<()> {
    let (_broker, mut c) = setup()?;
    for v in 0..=3 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let req = if v >= 3 {
            req
        } else {
            ApiVersionsRequest::default()
        };
        let resp = c.call(v, &req)?;
        ensure!(
            resp.error_code == 0,
            "ApiVersions v{v}: error {}",
            resp.error_code
        );
        ensure!(
            resp.api_keys.iter().any(|k| k.api_key == 0)
                && resp.api_keys.iter().any(|k| k.api_key == 1),
            "ApiVersions v{v} lacks Produce/Fetch"
        );
    }
    Ok(())
}

#[test]
fn data_path_every_version() -> Result<()> {
    let (broker, mut c) = setup()?;
    let mut produced = [0i64; 2];

    for v in versions::<MetadataRequest>(&c, 12)? {
        let topics = Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("matrix")))
        ]);
        let resp = c.call(v, &MetadataRequest::default().with_topics(topics))?;
        ensure!(
            resp.brokers.len() == 1,
            "Metadata v{v}: {} brokers",
            resp.brokers.len()
        );
        ensure!(
            resp.brokers[0].port == i32::from(broker.port()),
            "Metadata v{v}: advertised port {}",
            resp.brokers[0].port
        );
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("matrix"));
        let Some(t) = t else {
            bail!("Metadata v{v}: topic missing")
        };
        ensure!(
            t.error_code == 0 && t.partitions.len() == 2,
            "Metadata v{v}: {t:?}"
        );
    }

    for v in versions::<ProduceRequest>(&c, 12)? {
        let p = (v % 2) as i32;
        let value = format!("produce-v{v}");
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("matrix"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(record_batch(
                        &[value.as_str()],
                        1_700_000_000_000 + i64::from(v),
                    )?))])]);
        let resp = c.call(v, &req)?;
        let r = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first());
        let Some(r) = r else {
            bail!("Produce v{v}: no partition in response")
        };
        ensure!(r.error_code == 0, "Produce v{v}: error {}", r.error_code);
        ensure!(
            r.base_offset == produced[p as usize],
            "Produce v{v}: base offset {}, want {}",
            r.base_offset,
            produced[p as usize]
        );
        produced[p as usize] += 1;
    }

    for v in versions::<FetchRequest>(&c, 12)? {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("matrix"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp = c.call(v, &req)?;
        let part = resp.responses.first().and_then(|t| t.partitions.first());
        let Some(part) = part else {
            bail!("Fetch v{v}: no partition")
        };
        ensure!(
            part.error_code == 0,
            "Fetch v{v}: error {}",
            part.error_code
        );
        ensure!(
            part.high_watermark == produced[0],
            "Fetch v{v}: high watermark {}",
            part.high_watermark
        );
        let mut records = part.records.clone().unwrap_or_default();
        let mut n = 0;
        while records.has_remaining() {
            n += RecordBatchDecoder::decode(&mut records)?.records.len() as i64;
        }
        ensure!(
            n == produced[0],
            "Fetch v{v}: {n} records, want {}",
            produced[0]
        );
    }

    for v in versions::<ListOffsetsRequest>(&c, 10)? {
        for (ts, want) in [(-2i64, 0i64), (-1, produced[1])] {
            let req = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name("matrix"))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(ts)])]);
            let resp = c.call(v, &req)?;
            let p = resp.topics.first().and_then(|t| t.partitions.first());
            let Some(p) = p else {
                bail!("ListOffsets v{v}: no partition")
            };
            ensure!(
                p.error_code == 0 && p.offset == want,
                "ListOffsets v{v} ts {ts}: error {} offset {}, want {want}",
                p.error_code,
                p.offset
            );
        }
    }
    Ok(())
}

#[test]
fn admin_every_version() -> Result<()> {
    let (broker, mut c) = setup()?;
    for v in versions::<CreateTopicsRequest>(&c, 7)? {
        let topic = format!("created-v{v}");
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(3)
                .with_replication_factor(1)]);
        let resp = c.call(v, &req)?;
        let r = resp.topics.first();
        ensure!(
            r.is_some_and(|r| r.error_code == 0),
            "CreateTopics v{v}: {r:?}"
        );
        broker.wait_for_topic(&topic, 3)?;

        for pv in versions::<CreatePartitionsRequest>(&c, 3)? {
            let count = 4 + i32::from(pv);
            let req = CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name(&topic))
                    .with_count(count)]);
            let resp = c.call(pv, &req)?;
            let r = resp.results.first();
            ensure!(
                r.is_some_and(|r| r.error_code == 0),
                "CreatePartitions v{pv} -> {count}: {r:?}"
            );
            broker.wait_for_topic(&topic, count as usize)?;
        }
    }

    for v in versions::<DeleteTopicsRequest>(&c, 6)? {
        let topic = format!("deleted-v{v}");
        broker.create_topic(&topic, 1, &[])?;
        let req = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&topic)))
                ])
        } else {
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topic_names(vec![name(&topic)])
        };
        let resp = c.call(v, &req)?;
        let r = resp.responses.first();
        ensure!(
            r.is_some_and(|r| r.error_code == 0),
            "DeleteTopics v{v}: {r:?}"
        );
        let (code, _, _) = c.fetch_once(&topic, 0, 0)?;
        ensure!(
            code == 3,
            "DeleteTopics v{v}: fetch after delete gave error {code}"
        );
    }

    for v in versions::<DescribeConfigsRequest>(&c, 4)? {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("matrix"))
                .with_configuration_keys(None),
        ]);
        let resp = c.call(v, &req)?;
        let Some(r) = resp.results.first() else {
            bail!("DescribeConfigs v{v}: no result")
        };
        ensure!(
            r.error_code == 0,
            "DescribeConfigs v{v}: error {}",
            r.error_code
        );
        let retention = r.configs.iter().find(|e| e.name.as_str() == "retention.ms");
        ensure!(
            retention.and_then(|e| e.value.as_ref()).map(|s| s.as_str()) == Some("123456789"),
            "DescribeConfigs v{v}: retention.ms = {retention:?}"
        );
    }

    for v in versions::<InitProducerIdRequest>(&c, 4)? {
        let resp = c.call(
            v,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )?;
        ensure!(
            resp.error_code == 0 && resp.producer_id.0 >= 0,
            "InitProducerId v{v}: error {} id {}",
            resp.error_code,
            resp.producer_id.0
        );
    }

    for v in versions::<FindCoordinatorRequest>(&c, 6)? {
        let req = if v >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g1")])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g1"))
        };
        let resp = c.call(v, &req)?;
        let port = if v >= 4 {
            let Some(k) = resp.coordinators.first() else {
                bail!("FindCoordinator v{v}: no coordinator")
            };
            ensure!(
                k.error_code == 0,
                "FindCoordinator v{v}: error {}",
                k.error_code
            );
            k.port
        } else {
            ensure!(
                resp.error_code == 0,
                "FindCoordinator v{v}: error {}",
                resp.error_code
            );
            resp.port
        };
        ensure!(
            port == i32::from(broker.port()),
            "FindCoordinator v{v}: port {port}"
        );
    }

    if let Ok(range) = versions::<DescribeClusterRequest>(&c, 2) {
        for v in range {
            let resp = c.call(v, &DescribeClusterRequest::default())?;
            ensure!(
                resp.error_code == 0 && resp.brokers.len() == 1,
                "DescribeCluster v{v}: error {} brokers {}",
                resp.error_code,
                resp.brokers.len()
            );
        }
    }
    Ok(())
}

/// DeleteTopics v6 as Kafka's controller answers it: a topic given by both name and id, or
/// by neither, and a name or id given twice are INVALID_REQUEST (answered once each) and
/// left alone; an id no topic has is UNKNOWN_TOPIC_ID; the rest are deleted.
#[test]
fn delete_topics_refuses_ambiguous_duplicate_and_unknown_topics() -> Result<()> {
    let (broker, mut c) = setup()?;
    for t in ["del-both", "del-twice", "del-id-twice", "del-ok"] {
        broker.create_topic(t, 1, &[])?;
    }
    let v = c.version_for::<MetadataRequest>(12)?;
    ensure!(v >= 10, "Metadata v10+ (topic ids) not offered");
    let meta = c.call(v, &MetadataRequest::default().with_topics(None))?;
    let id_of = |t: &str| {
        meta.topics
            .iter()
            .find(|m| m.name.as_ref().is_some_and(|n| n.0.as_str() == t))
            .map(|m| m.topic_id)
            .ok_or_else(|| anyhow::anyhow!("no metadata for {t}"))
    };
    let (both, twice_id) = (id_of("del-both")?, id_of("del-id-twice")?);
    let unknown = uuid::Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001);
    let by_name = |t: &str| DeleteTopicState::default().with_name(Some(name(t)));
    let by_id = |id| DeleteTopicState::default().with_topic_id(id);
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            by_name("del-both").with_topic_id(both),
            DeleteTopicState::default(),
            by_name("del-twice"),
            by_name("del-twice"),
            by_id(twice_id),
            by_id(twice_id),
            by_id(unknown),
            by_name("del-ok"),
        ]);
    ensure!(
        c.version_for::<DeleteTopicsRequest>(6)? == 6,
        "DeleteTopics v6 not offered"
    );
    let resp = c.call(6, &req)?;
    let code = |pick: &dyn Fn(
        &kafka_protocol::messages::delete_topics_response::DeletableTopicResult,
    ) -> bool| {
        let hits: Vec<i16> = resp
            .responses
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.error_code)
            .collect();
        hits
    };
    let named = |t: &'static str| {
        move |r: &kafka_protocol::messages::delete_topics_response::DeletableTopicResult| {
            r.name.as_ref().is_some_and(|n| n.0.as_str() == t)
        }
    };
    ensure!(
        code(&named("del-both")) == vec![42],
        "name and id: {:?}",
        resp.responses
    );
    ensure!(
        code(&|r| r.name.is_none() && r.topic_id.is_nil()) == vec![42],
        "neither name nor id: {:?}",
        resp.responses
    );
    ensure!(
        code(&named("del-twice")) == vec![42],
        "name twice: {:?}",
        resp.responses
    );
    ensure!(
        code(&|r| r.topic_id == twice_id) == vec![42],
        "id twice: {:?}",
        resp.responses
    );
    ensure!(
        code(&|r| r.topic_id == unknown) == vec![100],
        "unknown id: {:?}",
        resp.responses
    );
    ensure!(
        code(&named("del-ok")) == vec![0],
        "plain delete: {:?}",
        resp.responses
    );
    ensure!(
        resp.responses.len() == 6,
        "one answer each: {:?}",
        resp.responses
    );
    // the refused topics are still there; the deleted one is gone
    for t in ["del-both", "del-twice", "del-id-twice"] {
        let (code, _, _) = c.fetch_once(t, 0, 0)?;
        ensure!(code == 0, "{t} was deleted (fetch error {code})");
    }
    let (code, _, _) = c.fetch_once("del-ok", 0, 0)?;
    ensure!(code == 3, "del-ok still there (fetch error {code})");
    Ok(())
}

/// CreatePartitions as Kafka's controller answers it: a topic named twice is
/// INVALID_REQUEST, answered once, and keeps its partitions; the others grow.
#[test]
fn create_partitions_refuses_a_topic_named_twice() -> Result<()> {
    let (broker, mut c) = setup()?;
    broker.create_topic("grow-twice", 1, &[])?;
    broker.create_topic("grow-once", 1, &[])?;
    let grow = |t: &str, count: i32| {
        CreatePartitionsTopic::default()
            .with_name(name(t))
            .with_count(count)
    };
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            grow("grow-twice", 2),
            grow("grow-once", 3),
            grow("grow-twice", 4),
        ]);
    let v = c.version_for::<CreatePartitionsRequest>(3)?;
    let resp = c.call(v, &req)?;
    let codes = |t: &str| -> Vec<i16> {
        resp.results
            .iter()
            .filter(|r| r.name.0.as_str() == t)
            .map(|r| r.error_code)
            .collect()
    };
    ensure!(
        codes("grow-twice") == vec![42],
        "named twice: {:?}",
        resp.results
    );
    ensure!(
        codes("grow-once") == vec![0],
        "named once: {:?}",
        resp.results
    );
    broker.wait_for_topic("grow-once", 3)?;
    let v = c.version_for::<MetadataRequest>(12)?;
    let meta = c.call(v, &MetadataRequest::default().with_topics(None))?;
    let twice = meta
        .topics
        .iter()
        .find(|m| {
            m.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == "grow-twice")
        })
        .map(|m| m.partitions.len());
    ensure!(twice == Some(1), "grow-twice has {twice:?} partitions");
    Ok(())
}

/// Kafka's controller refuses every entry of a topic named twice in one CreateTopics
/// (INVALID_REQUEST, answered once) and creates the others.
#[test]
fn create_topics_refuses_a_topic_named_twice() -> Result<()> {
    let (broker, mut c) = setup()?;
    let topic = |t: &str, n: i32| {
        CreatableTopic::default()
            .with_name(name(t))
            .with_num_partitions(n)
            .with_replication_factor(1)
    };
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            topic("made-twice", 2),
            topic("made-once", 3),
            topic("made-twice", 4),
        ]);
    let v = c.version_for::<CreateTopicsRequest>(7)?;
    let resp = c.call(v, &req)?;
    let codes = |t: &str| -> Vec<i16> {
        resp.topics
            .iter()
            .filter(|r| r.name.0.as_str() == t)
            .map(|r| r.error_code)
            .collect()
    };
    ensure!(
        codes("made-twice") == vec![42],
        "named twice: {:?}",
        resp.topics
    );
    ensure!(
        codes("made-once") == vec![0],
        "named once: {:?}",
        resp.topics
    );
    broker.wait_for_topic("made-once", 3)?;
    let v = c.version_for::<MetadataRequest>(12)?;
    let meta = c.call(v, &MetadataRequest::default().with_topics(None))?;
    ensure!(
        !meta.topics.iter().any(|m| m
            .name
            .as_ref()
            .is_some_and(|n| n.0.as_str() == "made-twice")),
        "made-twice was created: {:?}",
        meta.topics
    );
    Ok(())
}
