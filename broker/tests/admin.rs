//! Admin APIs through rdkafka's AdminClient: CreateTopics (and its errors), DeleteTopics,
//! CreatePartitions, DescribeConfigs/AlterConfigs, Metadata, and auto-creation of unknown
//! topics on produce and on metadata (auto.create.topics.enable defaults to true); and
//! DescribeLogDirs, which rdkafka does not send, through the raw client.
//! Every error is checked by its Kafka error code, as a Java client would see it.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::{block_on, BrokerProcess, OP_TIMEOUT};
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

fn opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(OP_TIMEOUT))
        .request_timeout(Some(OP_TIMEOUT))
}

/// Creates one topic and returns the per-topic result code (None = success).
fn try_create(broker: &BrokerProcess, topic: NewTopic<'_>) -> Result<Option<RDKafkaErrorCode>> {
    let admin = broker.admin()?;
    let results = block_on(admin.create_topics([&topic], &opts()))?;
    ensure!(results.len() == 1, "expected one result, got {results:?}");
    Ok(results
        .into_iter()
        .next()
        .and_then(|r| r.err())
        .map(|(_, code)| code))
}

/// Partition count of `topic` in metadata, or the topic-level error.
fn partition_count(
    broker: &BrokerProcess,
    topic: &str,
) -> Result<std::result::Result<usize, RDKafkaErrorCode>> {
    let client: BaseConsumer = broker.client_config().create()?;
    let md = client.fetch_metadata(Some(topic), OP_TIMEOUT)?;
    match md.topics().iter().find(|t| t.name() == topic) {
        None => Ok(Err(RDKafkaErrorCode::UnknownTopicOrPartition)),
        Some(t) => match t.error() {
            Some(e) => Ok(Err(e.into())),
            None => Ok(Ok(t.partitions().len())),
        },
    }
}

#[test]
fn create_topic_and_its_errors() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    let created = try_create(
        &broker,
        NewTopic::new("orders", 3, TopicReplication::Fixed(1)),
    )?;
    ensure!(created.is_none(), "create orders: {created:?}");
    broker.wait_for_topic("orders", 3)?;

    // Metadata: one broker, the topic with partitions 0..3 each led by that broker.
    let client: BaseConsumer = broker.client_config().create()?;
    let md = client.fetch_metadata(None, OP_TIMEOUT)?;
    ensure!(md.brokers().len() == 1, "brokers: {}", md.brokers().len());
    let broker_id = md.brokers()[0].id();
    ensure!(
        md.brokers()[0].port() == i32::from(broker.port()),
        "advertised port {}",
        md.brokers()[0].port()
    );
    let Some(t) = md.topics().iter().find(|t| t.name() == "orders") else {
        bail!("orders missing from full metadata")
    };
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    ensure!(ids == vec![0, 1, 2], "partition ids {ids:?}");
    for p in t.partitions() {
        ensure!(
            p.leader() == broker_id,
            "partition {} leader {}",
            p.id(),
            p.leader()
        );
        ensure!(
            p.replicas() == [broker_id] && p.isr() == [broker_id],
            "partition {} replicas {:?} isr {:?}",
            p.id(),
            p.replicas(),
            p.isr()
        );
    }

    let again = try_create(
        &broker,
        NewTopic::new("orders", 5, TopicReplication::Fixed(1)),
    )?;
    ensure!(
        again == Some(RDKafkaErrorCode::TopicAlreadyExists),
        "re-create gave {again:?}"
    );
    ensure!(
        partition_count(&broker, "orders")? == Ok(3),
        "re-create changed the partition count"
    );

    let too_long = "x".repeat(250);
    for bad in ["bad name!", "..", ".", "a/b", too_long.as_str()] {
        let r = try_create(&broker, NewTopic::new(bad, 1, TopicReplication::Fixed(1)))?;
        ensure!(
            r == Some(RDKafkaErrorCode::InvalidTopic),
            "create {bad:?} gave {r:?}, want INVALID_TOPIC_EXCEPTION"
        );
    }
    let r = try_create(
        &broker,
        NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon"),
    )?;
    ensure!(
        r == Some(RDKafkaErrorCode::InvalidConfig),
        "retention.ms=soon gave {r:?}, want INVALID_CONFIG"
    );
    Ok(())
}

#[test]
fn replication_factor_above_broker_count_is_rejected() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    let r = try_create(&broker, NewTopic::new("rf3", 1, TopicReplication::Fixed(3)))?;
    ensure!(
        r == Some(RDKafkaErrorCode::InvalidReplicationFactor),
        "rf=3 on one broker gave {r:?}"
    );
    Ok(())
}

#[test]
fn delete_topic_then_recreate_starts_empty() -> Result<()> {
    delete_then_recreate("doomed")
}

/// Kafka's longest name (249 characters): its partitions' deleted directories must still
/// fit a file name (255 bytes) with their `.<id>-delete` suffix.
#[test]
fn a_topic_with_the_longest_name_is_deleted_and_recreated() -> Result<()> {
    delete_then_recreate(&format!("doomed-{}", "x".repeat(242)))
}

fn delete_then_recreate(name: &str) -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic(name, 3, &[])?;
    let producer: FutureProducer = broker.producer(&[])?;
    block_on(async {
        for i in 0..30 {
            let v = format!("old-{i}");
            if let Err((e, _)) = producer
                .send(
                    FutureRecord::<(), _>::to(name).partition(i % 3).payload(&v),
                    Duration::from_secs(10),
                )
                .await
            {
                bail!("produce: {e}");
            }
        }
        Ok(())
    })?;
    let admin = broker.admin()?;
    let results = block_on(admin.delete_topics(&[name], &opts()))?;
    ensure!(results.iter().all(|r| r.is_ok()), "delete: {results:?}");
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        match partition_count(&broker, name)? {
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => break,
            other if Instant::now() > deadline => {
                bail!("deleted topic still in metadata: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    // The partition directories are renamed away at once and removed in the background.
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let left: Vec<String> = std::fs::read_dir(broker.data_dir())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&name[..6]))
            .collect();
        if left.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "deleted partitions still on disk: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = block_on(admin.delete_topics(&[name], &opts()))?;
    ensure!(
        matches!(
            results.as_slice(),
            [Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))]
        ),
        "deleting a missing topic gave {results:?}"
    );

    // Same name, new topic: empty, with the new partition count.
    broker.create_topic(name, 2, &[])?;
    for p in 0..2 {
        let w = broker.watermarks(name, p)?;
        ensure!(
            w == (0, 0),
            "re-created partition {p} has watermarks {w:?}: old data leaked"
        );
    }
    let consumed = broker.consume_all(name, 2)?;
    ensure!(
        consumed.is_empty(),
        "re-created topic returned {} old records",
        consumed.len()
    );
    // and it takes records
    block_on(async {
        for p in 0..2 {
            if let Err((e, _)) = producer
                .send(
                    FutureRecord::<(), _>::to(name).partition(p).payload("new"),
                    Duration::from_secs(10),
                )
                .await
            {
                bail!("produce to the re-created topic: {e}");
            }
        }
        Ok(())
    })?;
    ensure!(
        broker.consume_all(name, 2)?.len() == 2,
        "re-created topic lost records"
    );
    Ok(())
}

#[test]
fn create_partitions_grows_and_never_shrinks() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("growing", 3, &[])?;
    let admin = broker.admin()?;
    let results = block_on(admin.create_partitions([&NewPartitions::new("growing", 6)], &opts()))?;
    ensure!(results.iter().all(|r| r.is_ok()), "grow to 6: {results:?}");
    broker.wait_for_topic("growing", 6)?;

    // The new partition takes writes.
    let producer: FutureProducer = broker.producer(&[])?;
    let d = block_on(
        producer.send(
            FutureRecord::<(), _>::to("growing")
                .partition(5)
                .payload("p5"),
            Duration::from_secs(10),
        ),
    );
    match d {
        Ok(d) => ensure!(
            d.partition == 5 && d.offset == 0,
            "delivered at {}@{}",
            d.partition,
            d.offset
        ),
        Err((e, _)) => bail!("produce to new partition 5: {e}"),
    }

    let results = block_on(admin.create_partitions([&NewPartitions::new("growing", 2)], &opts()))?;
    ensure!(
        matches!(
            results.as_slice(),
            [Err((_, RDKafkaErrorCode::InvalidPartitions))]
        ),
        "shrinking to 2 gave {results:?}"
    );
    let results =
        block_on(admin.create_partitions([&NewPartitions::new("no-such-topic", 4)], &opts()))?;
    ensure!(
        matches!(
            results.as_slice(),
            [Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))]
        ),
        "growing a missing topic gave {results:?}"
    );
    ensure!(
        partition_count(&broker, "growing")? == Ok(6),
        "partition count changed by failed requests"
    );
    Ok(())
}

#[test]
fn describe_and_alter_topic_configs() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("configured", 1, &[("retention.ms", "3600000")])?;
    let admin = broker.admin()?;
    let describe = |expect: &str| -> Result<()> {
        let results =
            block_on(admin.describe_configs([&ResourceSpecifier::Topic("configured")], &opts()))?;
        let Some(Ok(resource)) = results.first() else {
            bail!("describe configs: {results:?}")
        };
        let Some(entry) = resource.get("retention.ms") else {
            bail!("no retention.ms in {:?}", resource.entries)
        };
        ensure!(
            entry.value.as_deref() == Some(expect),
            "retention.ms = {:?}, want {expect}",
            entry.value
        );
        ensure!(!entry.is_default, "a topic override reported as default");
        // A default-valued config is described too (Kafka lists every topic config).
        ensure!(
            resource.get("cleanup.policy").is_some(),
            "cleanup.policy missing from describe"
        );
        Ok(())
    };
    describe("3600000")?;

    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("configured")).set("retention.ms", "7200000");
    let results = block_on(admin.alter_configs([&alter], &opts()))?;
    ensure!(results.iter().all(|r| r.is_ok()), "alter: {results:?}");
    describe("7200000")
}

/// Kafka answers UNKNOWN_TOPIC_OR_PARTITION for the resource. Checked on the wire: rust-rdkafka
/// 0.39 drops per-resource DescribeConfigs errors and always reports `Ok` with no entries.
#[test]
fn describe_configs_of_a_missing_topic_is_unknown_topic() -> Result<()> {
    use common::raw::RawClient;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let broker = BrokerProcess::spawn(2)?;
    let mut raw = RawClient::connect(broker.addr())?;
    for version in [1, 4] {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("absent-topic")),
        ]);
        let resp = raw.call(version, &req)?;
        ensure!(resp.results.len() == 1, "v{version}: {resp:?}");
        let r = &resp.results[0];
        ensure!(
            r.error_code == 3 && r.configs.is_empty(),
            "v{version}: describe of a missing topic gave {r:?}"
        );
    }
    Ok(())
}

#[test]
fn unknown_topics_are_auto_created_on_produce_and_metadata() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    let producer: FutureProducer = broker.producer(&[])?;
    let d = block_on(producer.send(
        FutureRecord::to("auto-produced").key("k").payload("v"),
        Duration::from_secs(20),
    ));
    match d {
        Ok(d) => ensure!(
            d.offset == 0,
            "first record of an auto-created topic at offset {}",
            d.offset
        ),
        Err((e, _)) => bail!("produce to unknown topic: {e}"),
    }
    let n = partition_count(&broker, "auto-produced")?;
    ensure!(
        matches!(n, Ok(c) if c >= 1),
        "auto-produced metadata: {n:?}"
    );

    // A producer's metadata request allows auto-creation; the topic then exists.
    let client: FutureProducer = broker.producer(&[])?;
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let md = client
            .client()
            .fetch_metadata(Some("auto-meta"), OP_TIMEOUT)?;
        let ok = md
            .topics()
            .iter()
            .any(|t| t.name() == "auto-meta" && t.error().is_none() && !t.partitions().is_empty());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("metadata never auto-created auto-meta");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        matches!(partition_count(&broker, "auto-meta")?, Ok(c) if c >= 1),
        "auto-meta not visible to other clients"
    );

    // A consumer's metadata request does not auto-create (allow_auto_topic_creation=false).
    let n = partition_count(&broker, "never-created")?;
    ensure!(
        n == Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "consumer metadata for a missing topic gave {n:?}"
    );
    Ok(())
}

#[test]
fn create_topics_validate_only_and_broker_defaults() -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    let admin = broker.admin()?;
    // validate_only: the answer is success, but nothing is created.
    let topic = NewTopic::new("dry-run", 4, TopicReplication::Fixed(1));
    let r = block_on(admin.create_topics([&topic], &opts().validate_only(true)))?;
    ensure!(r.iter().all(|x| x.is_ok()), "validate_only create: {r:?}");
    let n = partition_count(&broker, "dry-run")?;
    ensure!(
        n == Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "validate_only created the topic: {n:?}"
    );
    // A validate_only request still reports what would fail.
    broker.create_topic("exists", 1, &[])?;
    let topic = NewTopic::new("exists", 1, TopicReplication::Fixed(1));
    let r = block_on(admin.create_topics([&topic], &opts().validate_only(true)))?;
    ensure!(
        matches!(
            r.as_slice(),
            [Err((_, RDKafkaErrorCode::TopicAlreadyExists))]
        ),
        "validate_only on an existing topic: {r:?}"
    );
    // -1 partitions and -1 replication factor mean "broker defaults" (KIP-464):
    // num.partitions = 1 and a replication factor of 1 on one broker.
    let topic = NewTopic::new("defaults", -1, TopicReplication::Fixed(-1));
    let r = block_on(admin.create_topics([&topic], &opts()))?;
    ensure!(r.iter().all(|x| x.is_ok()), "create with defaults: {r:?}");
    broker.wait_for_topic("defaults", 1)?;
    Ok(())
}

/// message.timestamp.type=LogAppendTime: the broker's clock replaces the producer's
/// timestamps, in the produce answer and in what consumers read, across a restart.
#[test]
fn log_append_time_topics_carry_the_broker_clock() -> Result<()> {
    use rdkafka::message::{Message, Timestamp};
    use rdkafka::{Offset, TopicPartitionList};
    let mut broker = BrokerProcess::spawn(1)?;
    broker.create_topic(
        "appendtime",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )?;
    let producer = broker.producer(&[])?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let delivery = block_on(
        producer.send(
            FutureRecord::to("appendtime")
                .partition(0)
                .key("k")
                .payload("v")
                .timestamp(1_000),
            Duration::from_secs(10),
        ),
    )
    .map_err(|(e, _)| e)?;
    let after = before + 60_000;
    match delivery.timestamp {
        Timestamp::LogAppendTime(t) => ensure!(
            (before..after).contains(&t),
            "append time {t} not near now {before}"
        ),
        other => bail!("produce answer timestamp {other:?}, want LogAppendTime"),
    }
    for round in 0..2 {
        let c = broker.consumer(&[])?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("appendtime", 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let m = loop {
            ensure!(Instant::now() < deadline, "round {round}: nothing consumed");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                break m?.detach();
            }
        };
        match m.timestamp() {
            Timestamp::LogAppendTime(t) => ensure!(
                (before..after).contains(&t),
                "round {round}: read time {t} not near now {before}"
            ),
            other => bail!("round {round}: read timestamp {other:?}, want LogAppendTime"),
        }
        broker.kill9()?;
        broker.restart()?;
    }
    // a CreateTime topic answers no append time, as Kafka does
    broker.create_topic("createtime", 1, &[])?;
    let producer = broker.producer(&[])?;
    let delivery = block_on(
        producer.send(
            FutureRecord::to("createtime")
                .partition(0)
                .key("k")
                .payload("v")
                .timestamp(before),
            Duration::from_secs(10),
        ),
    )
    .map_err(|(e, _)| e)?;
    ensure!(
        delivery.timestamp == Timestamp::CreateTime(before),
        "CreateTime topic answered {:?}",
        delivery.timestamp
    );
    Ok(())
}

/// The compaction settings are validated together, as Kafka does: a max.compaction.lag.ms
/// below min.compaction.lag.ms is INVALID_CONFIG, on create and on alter.
#[test]
fn compaction_lags_must_be_ordered() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    let topic = NewTopic::new("lags", 1, TopicReplication::Fixed(1))
        .set("min.compaction.lag.ms", "5000")
        .set("max.compaction.lag.ms", "1000");
    ensure!(
        try_create(&broker, topic)? == Some(RDKafkaErrorCode::InvalidConfig),
        "max < min accepted on create"
    );
    broker.create_topic("lags", 1, &[("max.compaction.lag.ms", "1000")])?;
    let admin = broker.admin()?;
    let alter = AlterConfig::new(ResourceSpecifier::Topic("lags"))
        .set("max.compaction.lag.ms", "1000")
        .set("min.compaction.lag.ms", "5000");
    // rust-rdkafka 0.39 reports per-resource AlterConfigs errors as Ok: check the outcome
    let _ = block_on(admin.alter_configs([&alter], &opts()))?;
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic("lags")], &opts()))?;
    let Some(Ok(resource)) = results.first() else {
        bail!("describe configs: {results:?}")
    };
    let min = resource
        .get("min.compaction.lag.ms")
        .and_then(|e| e.value.clone());
    ensure!(
        min.as_deref() == Some("0"),
        "max < min accepted on alter: min.compaction.lag.ms = {min:?}"
    );
    Ok(())
}

/// DescribeLogDirs (what `kafka-log-dirs.sh --describe` sends): one directory, the data
/// dir, with every partition held here and its size on disk, on a broker of two shards
/// (each reports its own logs); the file system's total and usable bytes at v4; a request
/// naming partitions gets only those held here.
#[test]
fn describe_log_dirs_lists_each_partition_and_its_size() -> Result<()> {
    use common::raw::RawClient;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::DescribeLogDirsRequest;

    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("dirs-a", 4, &[])?;
    broker.create_topic("dirs-b", 1, &[])?;
    let producer = broker.producer(&[])?;
    let payload = "x".repeat(1000);
    for _ in 0..20 {
        common::send_one(&producer, "dirs-a", &payload)?;
    }
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;

    let all = c.call(4, &DescribeLogDirsRequest::default().with_topics(None))?;
    ensure!(all.error_code == 0, "DescribeLogDirs: {all:?}");
    ensure!(all.results.len() == 1, "one log dir: {all:?}");
    let dir = &all.results[0];
    ensure!(dir.error_code == 0, "{dir:?}");
    let want_dir = std::path::absolute(broker.data_dir())?;
    ensure!(
        std::path::Path::new(dir.log_dir.as_str()) == want_dir,
        "log dir {} vs {}",
        dir.log_dir.as_str(),
        want_dir.display()
    );
    ensure!(
        dir.total_bytes > 0 && dir.usable_bytes >= 0 && dir.usable_bytes <= dir.total_bytes,
        "volume: {} total, {} usable",
        dir.total_bytes,
        dir.usable_bytes
    );
    let sizes = |topics: &[kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsTopic]| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.partition_index, p.partition_size, p.offset_lag))
            })
            .collect::<Vec<_>>()
    };
    let listed = sizes(&dir.topics);
    let ours: Vec<_> = listed
        .iter()
        .filter(|(t, ..)| t.starts_with("dirs-"))
        .collect();
    ensure!(
        ours.iter()
            .map(|(t, p, ..)| (t.as_str(), *p))
            .collect::<Vec<_>>()
            == vec![
                ("dirs-a", 0),
                ("dirs-a", 1),
                ("dirs-a", 2),
                ("dirs-a", 3),
                ("dirs-b", 0)
            ],
        "partitions: {listed:?}"
    );
    // 20 records of 1,000 bytes went to dirs-a 0; nothing to the others
    ensure!(ours[0].2 >= 20_000, "dirs-a 0 holds 20 KB: {listed:?}");
    ensure!(
        ours[1..].iter().all(|(_, _, size, _)| *size == 0),
        "untouched partitions are empty: {listed:?}"
    );
    ensure!(ours.iter().all(|(.., lag)| *lag == 0), "{listed:?}");

    let named = c.call(
        1,
        &DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(common::kafka::topic_name("dirs-a"))
                .with_partitions(vec![0, 2, 9]),
            DescribableLogDirTopic::default()
                .with_topic(common::kafka::topic_name("no-such-topic"))
                .with_partitions(vec![0]),
        ])),
    )?;
    let named = sizes(&named.results[0].topics);
    ensure!(
        named
            .iter()
            .map(|(t, p, ..)| (t.as_str(), *p))
            .collect::<Vec<_>>()
            == vec![("dirs-a", 0), ("dirs-a", 2)],
        "named partitions: {named:?}"
    );
    Ok(())
}

/// Kafka refuses a topic whose name differs from an existing one only by `.` against `_`
/// (INVALID_TOPIC_EXCEPTION, "collides with existing topic").
#[test]
fn topic_names_differing_only_by_dot_and_underscore_collide() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("metrics.cpu_load", 1, &[])?;
    for name in ["metrics_cpu_load", "metrics.cpu.load", "metrics_cpu.load"] {
        let got = try_create(&broker, NewTopic::new(name, 1, TopicReplication::Fixed(1)))?;
        ensure!(
            got == Some(RDKafkaErrorCode::InvalidTopic),
            "{name} gave {got:?}"
        );
    }
    // other names with dots and underscores are fine
    let got = try_create(
        &broker,
        NewTopic::new("metrics.cpu_loads", 1, TopicReplication::Fixed(1)),
    )?;
    ensure!(got.is_none(), "metrics.cpu_loads gave {got:?}");
    Ok(())
}
