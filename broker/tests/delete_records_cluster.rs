//! DeleteRecords on a three-node cluster (RF 3): the answer comes once every in-sync
//! replica's log start has passed the offset (Kafka's low watermark), each follower keeps
//! that start on its disk, and after the leader is killed (`kill -9`) the new leader still
//! starts there: deleted records never come back through a failover. A replica that was
//! down while the start moved past its log end, into the middle of a (transactional)
//! batch, catches up and rejoins the ISR.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use common::block_on;
use common::cluster::{wait_for, Cluster, FAST_SETTINGS};
use common::raw::RawClient;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "dr-rf3";
const WITHIN: Duration = Duration::from_secs(30);

/// (leader, ISR) of partition 0 as node `from` sees it.
fn leader_and_isr(cluster: &Cluster, from: u32) -> Result<(i32, Vec<i32>)> {
    leader_and_isr_of(cluster, from, TOPIC)
}

fn leader_and_isr_of(cluster: &Cluster, from: u32, topic: &str) -> Result<(i32, Vec<i32>)> {
    let v = cluster.view(from)?;
    let p = v
        .topic(topic)?
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .cloned()
        .context("no partition 0")?;
    Ok((p.leader, p.isr))
}

/// The log start a node saved for partition 0 of `topic` (None: no file yet).
fn saved_start_of(cluster: &Cluster, id: u32, topic: &str) -> Option<i64> {
    let f = cluster
        .node_dir(id)
        .join(format!("data/{topic}-0/log-start-offset-checkpoint"));
    let text = std::fs::read_to_string(f).ok()?;
    text.lines().nth(1)?.trim().parse().ok()
}

fn saved_start(cluster: &Cluster, id: u32) -> Option<i64> {
    saved_start_of(cluster, id, TOPIC)
}

#[test]
fn deleted_records_stay_deleted_on_every_replica_and_through_a_failover() -> Result<()> {
    let mut settings = FAST_SETTINGS.to_vec();
    settings.push(("min.insync.replicas", "2"));
    let mut cluster = Cluster::start(3, &settings)?;
    let all = cluster.ids();
    cluster.create_topic(
        &all,
        &NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3)).set("segment.bytes", "16384"),
        WITHIN,
    )?;
    wait_for("a full ISR", WITHIN, || {
        let (leader, isr) = leader_and_isr(&cluster, all[0])?;
        Ok((leader >= 0 && isr.len() == 3).then_some(()))
    })?;
    let producer: FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()?;
    let payload = "r".repeat(1000);
    block_on(async {
        for i in 0..200 {
            let rec = FutureRecord::to(TOPIC)
                .partition(0)
                .key("k")
                .payload(&payload);
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(20)).await {
                anyhow::bail!("produce #{i}: {e}");
            }
        }
        Ok(())
    })?;

    let admin = cluster.admin(&all)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(150))?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(WITHIN))
        .request_timeout(Some(WITHIN));
    let out = block_on(admin.delete_records(&tpl, &opts))?;
    let e = out.elements();
    ensure!(e.len() == 1, "{out:?}");
    e[0].error()
        .map_err(|err| anyhow::anyhow!("DeleteRecords: {err}"))?;
    ensure!(
        e[0].offset() == Offset::Offset(150),
        "low watermark: {out:?}"
    );
    // the answer waited for the ISR: every replica has the start on disk already
    for &id in &all {
        ensure!(
            saved_start(&cluster, id) == Some(150),
            "node {id}: {:?}",
            saved_start(&cluster, id)
        );
    }

    let (leader, _) = leader_and_isr(&cluster, all[0])?;
    ensure!(leader >= 0, "no leader");
    cluster.kill9(leader as u32)?;
    let rest: Vec<u32> = all
        .iter()
        .copied()
        .filter(|&i| i != leader as u32)
        .collect();
    let consumer: BaseConsumer = Cluster::client_config(&cluster.bootstrap_of(&rest))
        .set("group.id", "dr-cluster")
        .set("enable.auto.commit", "false")
        .create()?;
    let (low, high) = wait_for("watermarks from a new leader", WITHIN, || {
        let (l, _) = leader_and_isr(&cluster, rest[0])?;
        if l < 0 || l == leader {
            return Ok(None);
        }
        Ok(Some(consumer.fetch_watermarks(
            TOPIC,
            0,
            Duration::from_secs(5),
        )?))
    })?;
    ensure!((low, high) == (150, 200), "after failover: {low}..{high}");
    cluster.start_node(leader as u32)?;
    // the restarted old leader kept its start too
    wait_for("the old leader back in the ISR", WITHIN, || {
        let (_, isr) = leader_and_isr(&cluster, rest[0])?;
        Ok((isr.len() == 3).then_some(()))
    })?;
    ensure!(saved_start(&cluster, leader as u32) == Some(150));
    Ok(())
}

#[test]
fn a_replica_behind_a_log_start_inside_a_batch_catches_up() -> Result<()> {
    const T: &str = "dr-behind";
    let mut settings = FAST_SETTINGS.to_vec();
    settings.push(("min.insync.replicas", "2"));
    settings.push(("replica.lag.time.max.ms", "3000"));
    // the transactional batches below belong to no coordinator's transaction (they only
    // give the replicas producer state to build): KIP-890's verification off
    settings.push(("transaction.partition.verification.enable", "false"));
    let mut cluster = Cluster::start(3, &settings)?;
    let all = cluster.ids();
    cluster.create_topic(
        &all,
        &NewTopic::new(T, 1, TopicReplication::Fixed(3)),
        WITHIN,
    )?;
    let leader = wait_for("a full ISR", WITHIN, || {
        let (leader, isr) = leader_and_isr_of(&cluster, all[0], T)?;
        Ok((leader >= 0 && isr.len() == 3).then_some(leader as u32))
    })?;
    let follower = *all.iter().find(|&&i| i != leader).context("no follower")?;
    let others: Vec<u32> = all.iter().copied().filter(|&i| i != follower).collect();
    // transactional batches of 10 records (a replica must build the producer state to
    // take them): offsets [0, 10), [10, 20), ...
    let mut c = RawClient::connect(cluster.kafka_addr(leader))?;
    c.negotiate()?;
    let init = c.call(
        4,
        &kafka_protocol::messages::InitProducerIdRequest::default()
            .with_transaction_timeout_ms(600_000),
    )?;
    ensure!(init.error_code == 0, "InitProducerId: {}", init.error_code);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let mut sequence = 0;
    let mut send_batches = |c: &mut RawClient, n: usize| -> Result<()> {
        use sluice_proto::batch::{build_batch, set_transactional_producer, SimpleRecord};
        let value = [7u8; 100];
        let recs: Vec<SimpleRecord<'_>> = (0..10)
            .map(|_| SimpleRecord {
                key: None,
                value: Some(&value),
                timestamp: 1_700_000_000_000,
                headers: &[],
            })
            .collect();
        for _ in 0..n {
            let mut batch = build_batch(0, &recs).to_vec();
            set_transactional_producer(&mut batch, pid, epoch, sequence);
            sequence += 10;
            let (code, _) = common::kafka::produce_transactional(c, T, "dr-txn", batch.into())?;
            ensure!(code == 0, "produce: error {code}");
        }
        Ok(())
    };
    send_batches(&mut c, 10)?;
    cluster.kill9(follower)?;
    wait_for("the ISR without the stopped follower", WITHIN, || {
        let (_, isr) = leader_and_isr_of(&cluster, leader, T)?;
        Ok((!isr.contains(&(follower as i32))).then_some(()))
    })?;
    send_batches(&mut c, 10)?;
    // past the stopped follower's log end (100), inside the batch [150, 160)
    let admin = cluster.admin(&others)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(T, 0, Offset::Offset(155))?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(WITHIN))
        .request_timeout(Some(WITHIN));
    let out = block_on(admin.delete_records(&tpl, &opts))?;
    ensure!(out.elements()[0].offset() == Offset::Offset(155), "{out:?}");
    cluster.start_node(follower)?;
    wait_for("the restarted follower back in the ISR", WITHIN, || {
        let (_, isr) = leader_and_isr_of(&cluster, leader, T)?;
        Ok((isr.len() == 3).then_some(()))
    })?;
    wait_for("the follower's saved log start", WITHIN, || {
        Ok((saved_start_of(&cluster, follower, T) == Some(155)).then_some(()))
    })?;
    Ok(())
}
