//! Config requests answered as Kafka answers them, on the wire: IncrementalAlterConfigs'
//! refusals (APPEND / SUBTRACT on a setting that is not a list, a null value, a key or a
//! resource named twice), values Kafka's parsers take (`TRUE`, `compact, delete`), and
//! what DescribeConfigs says of each setting (its type; broker settings read-only; no
//! cluster-wide dynamic defaults).

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::raw::RawClient;
use common::BrokerProcess;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;
const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn op(name: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(s(name))
        .with_config_operation(operation)
        .with_value(value.map(s))
}

fn resource(topic: &str, configs: Vec<AlterableConfig>) -> AlterConfigsResource {
    AlterConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(s(topic))
        .with_configs(configs)
}

/// The error code of each resource, in order.
fn alter(raw: &mut RawClient, resources: Vec<AlterConfigsResource>) -> Result<Vec<i16>> {
    let req = IncrementalAlterConfigsRequest::default().with_resources(resources);
    let resp = raw.call(1, &req)?;
    Ok(resp.responses.iter().map(|r| r.error_code).collect())
}

/// name -> (value, config type, read-only) of one resource.
fn describe(
    raw: &mut RawClient,
    ty: i8,
    name: &str,
) -> Result<BTreeMap<String, (String, i8, bool)>> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(s(name))]);
    let resp = raw.call(4, &req)?;
    let r = &resp.results[0];
    ensure!(
        r.error_code == 0,
        "DescribeConfigs {name}: error {}",
        r.error_code
    );
    Ok(r.configs
        .iter()
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (c.name.to_string(), (value, c.config_type, c.read_only))
        })
        .collect())
}

#[test]
fn incremental_alter_configs_refuses_what_kafka_refuses() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("conf", 1, &[])?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    for (what, configs, want) in [
        (
            "SUBTRACT on a LONG",
            vec![op("segment.ms", SUBTRACT, Some("5"))],
            INVALID_CONFIG,
        ),
        (
            "APPEND on a LONG",
            vec![op("retention.ms", APPEND, Some("5"))],
            INVALID_CONFIG,
        ),
        (
            "SET to null",
            vec![op("retention.ms", SET, None)],
            INVALID_REQUEST,
        ),
        (
            "a key twice",
            vec![
                op("retention.ms", SET, Some("1000")),
                op("retention.ms", SET, Some("2000")),
            ],
            INVALID_REQUEST,
        ),
    ] {
        let got = alter(&mut raw, vec![resource("conf", configs)])?;
        ensure!(got == vec![want], "{what}: {got:?}, want {want}");
    }
    // nothing of those took effect
    let d = describe(&mut raw, TOPIC, "conf")?;
    ensure!(d["segment.ms"].0 == "604800000" && d["retention.ms"].0 == "604800000");

    // the same resource twice: both refused
    let twice = alter(
        &mut raw,
        vec![
            resource("conf", vec![op("retention.ms", SET, Some("1000"))]),
            resource("conf", vec![op("segment.ms", SET, Some("1000"))]),
        ],
    )?;
    ensure!(twice == vec![INVALID_REQUEST, INVALID_REQUEST], "{twice:?}");

    // what Kafka's parsers take, stored in one form
    let ok = alter(
        &mut raw,
        vec![resource(
            "conf",
            vec![
                op("unclean.leader.election.enable", SET, Some("TRUE")),
                op("cleanup.policy", SET, Some("compact, delete")),
                op("retention.ms", SET, Some(" 3600000 ")),
            ],
        )],
    )?;
    ensure!(ok == vec![0], "{ok:?}");
    let d = describe(&mut raw, TOPIC, "conf")?;
    ensure!(
        d["unclean.leader.election.enable"].0 == "true",
        "{:?}",
        d["unclean.leader.election.enable"]
    );
    ensure!(
        d["cleanup.policy"].0 == "compact,delete",
        "{:?}",
        d["cleanup.policy"]
    );
    ensure!(d["retention.ms"].0 == "3600000", "{:?}", d["retention.ms"]);
    // APPEND / SUBTRACT on the list
    let got = alter(
        &mut raw,
        vec![resource(
            "conf",
            vec![op("cleanup.policy", SUBTRACT, Some("delete"))],
        )],
    )?;
    ensure!(got == vec![0]);
    ensure!(describe(&mut raw, TOPIC, "conf")?["cleanup.policy"].0 == "compact");
    // the last value too, as Kafka's ValidList takes the empty list (neither delete nor
    // compact: nothing is ever removed); an empty item is refused
    for (value, op_code, want) in [
        (Some("compact,,delete"), SET, INVALID_CONFIG),
        (Some("compact"), SUBTRACT, 0),
    ] {
        let got = alter(
            &mut raw,
            vec![resource("conf", vec![op("cleanup.policy", op_code, value)])],
        )?;
        ensure!(got == vec![want], "cleanup.policy {value:?}: {got:?}");
    }
    ensure!(describe(&mut raw, TOPIC, "conf")?["cleanup.policy"]
        .0
        .is_empty());
    // DELETE of a name no topic can have changes nothing and is not an error (Kafka's)
    let got = alter(
        &mut raw,
        vec![resource("conf", vec![op("no.such.config", DELETE, None)])],
    )?;
    ensure!(got == vec![0], "DELETE of an unknown name: {got:?}");
    Ok(())
}

#[test]
fn describe_configs_reports_kafkas_types_and_static_broker_settings() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("typed", 1, &[])?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let d = describe(&mut raw, TOPIC, "typed")?;
    for (name, ty) in [
        ("cleanup.policy", 7),
        ("unclean.leader.election.enable", 1),
        ("segment.bytes", 3),
        ("max.message.bytes", 3),
        ("min.insync.replicas", 3),
        ("retention.ms", 5),
        ("min.cleanable.dirty.ratio", 6),
        ("compression.type", 2),
        ("compression.zstd.level", 3),
    ] {
        ensure!(
            d[name].1 == ty,
            "{name}: type {}, Kafka's is {ty}",
            d[name].1
        );
        ensure!(!d[name].2, "{name} read-only");
    }
    let b = describe(&mut raw, BROKER, "1")?;
    ensure!(
        !b.is_empty() && b.values().all(|v| v.2),
        "broker settings not all read-only"
    );
    // the cluster's dynamic defaults: none
    ensure!(describe(&mut raw, BROKER, "")?.is_empty());
    // an illegal topic name is INVALID_TOPIC_EXCEPTION (17), a missing one unknown (3)
    for (name, want) in [("", 17), ("bad name", 17), ("missing", 3)] {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s(name)),
        ]);
        let got = raw.call(4, &req)?.results[0].error_code;
        ensure!(
            got == want,
            "DescribeConfigs of topic {name:?}: {got}, want {want}"
        );
    }
    Ok(())
}

#[test]
fn describe_configs_lists_synonyms_most_precedent_first() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("compression.type", "lz4")])?;
    broker.create_topic("syn", 1, &[("retention.ms", "1000")])?;
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("syn"))]);
    let resp = raw.call(4, &req)?;
    // name -> (source, [(synonym name, value, source)])
    type Described = BTreeMap<String, (i8, Vec<(String, String, i8)>)>;
    let got: Described = resp.results[0]
        .configs
        .iter()
        .map(|c| {
            let syns = c
                .synonyms
                .iter()
                .map(|y| {
                    let v = y.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    (y.name.to_string(), v, y.source)
                })
                .collect();
            (c.name.to_string(), (c.config_source, syns))
        })
        .collect();
    let syn = |n: &str, v: &str, src: i8| (n.to_string(), v.to_string(), src);
    // DYNAMIC_TOPIC_CONFIG 1, STATIC_BROKER_CONFIG 4, DEFAULT_CONFIG 5
    ensure!(
        got["retention.ms"]
            == (
                1,
                vec![
                    syn("retention.ms", "1000", 1),
                    syn("log.retention.ms", "604800000", 5)
                ]
            ),
        "retention.ms: {:?}",
        got["retention.ms"]
    );
    ensure!(
        got["compression.type"]
            == (
                4,
                vec![
                    syn("compression.type", "lz4", 4),
                    syn("compression.type", "producer", 5)
                ]
            ),
        "compression.type: {:?}",
        got["compression.type"]
    );
    Ok(())
}
