//! Topics deleted and created again under the same name on a three-node cluster. A
//! partition directory is named by topic name only, so the new topic must never reopen
//! (or replicate from, or serve) the old topic's log on a node that was down while the
//! topic was deleted.
//! Every wait is bounded; the bounds are functional, not performance checks.

mod common;

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use common::block_on;
use common::checks::{ensure_brokers, ensure_full_isr, ensure_led, produce_and_consume};
use common::cluster::{ensure_same, Cluster, FAST_SETTINGS};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;

/// Bound for metadata to converge after a change.
const CONVERGE: Duration = Duration::from_secs(20);
/// Bound for an admin change to succeed while the quorum recovers.
const CHANGE: Duration = Duration::from_secs(15);

fn topic(name: &str, partitions: i32, rf: i32) -> NewTopic<'_> {
    NewTopic::new(name, partitions, TopicReplication::Fixed(rf))
}

/// The topic id in node `id`'s `partition.metadata` of `dir_name`, if the file is there.
fn marked_topic_id(cluster: &Cluster, id: u32, dir_name: &str) -> Option<String> {
    let path = cluster
        .node_dir(id)
        .join("data")
        .join(dir_name)
        .join("partition.metadata");
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .map(|s| s.trim().to_string())
}

/// Whether any file directly in node `id`'s partition directory contains `needle`.
fn dir_contains(cluster: &Cluster, id: u32, dir_name: &str, needle: &[u8]) -> Result<bool> {
    let dir = cluster.node_dir(id).join("data").join(dir_name);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let bytes = std::fs::read(entry?.path())?;
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A topic deleted while a node is down and created again under the same name once it is
/// back: the node must not reopen the old partition directory (named by topic name only)
/// as the new topic's log. `partition.metadata` records the topic id; a directory marked
/// with another id is deleted before the new log is created.
#[test]
fn a_recreated_topic_does_not_reopen_the_old_log() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&cluster.ids(), &topic("reborn", 1, 3), CHANGE)?;
    cluster.wait_views("reborn everywhere", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_led(v, "reborn", 1)?;
            ensure_full_isr(v, "reborn")?;
        }
        ensure_same(views)
    })?;
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()?;
    for i in 0..50 {
        let payload = format!("stale-{i}");
        let delivered = block_on(
            producer.send(
                FutureRecord::<(), str>::to("reborn")
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(30),
            ),
        );
        if let Err((e, _)) = delivered {
            bail!("record {i}: {e}");
        }
    }
    drop(producer);
    let views = cluster.wait_views("the leader", &[1], CONVERGE, |_| Ok(()))?;
    let leader = views[0].topic("reborn")?.partitions[0].leader as u32;
    let away = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(2);
    common::cluster::wait_for("the follower's copy", CONVERGE, || {
        Ok(dir_contains(&cluster, away, "reborn-0", b"stale-49")
            .unwrap_or(false)
            .then_some(()))
    })?;
    let old_id = marked_topic_id(&cluster, away, "reborn-0").context("no partition.metadata")?;
    cluster.kill9(away)?;
    let present: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != away).collect();
    let admin = cluster.admin(&present)?;
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in block_on(admin.delete_topics(&["reborn"], &opts))? {
        if let Err((name, code)) = r {
            bail!("delete {name}: {code:?}");
        }
    }
    cluster.wait_views("reborn gone", &present, CONVERGE, |views| {
        for v in views {
            ensure!(
                v.topic("reborn").is_err(),
                "node {} still lists reborn",
                v.from
            );
        }
        Ok(())
    })?;
    // back while no topic of that name exists: its directory stays on disk for now
    cluster.start_node(away)?;
    cluster.wait_views("all brokers back", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_brokers(v, &cluster.ids())?;
        }
        Ok(())
    })?;
    cluster.create_topic(&cluster.ids(), &topic("reborn", 1, 3), CHANGE)?;
    cluster.wait_views("reborn again", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_led(v, "reborn", 1)?;
            ensure_full_isr(v, "reborn")?;
        }
        ensure_same(views)
    })?;
    let sent = produce_and_consume(&cluster, "reborn", 1, 20)?;
    ensure!(sent[&0].len() == 20);
    ensure!(
        !dir_contains(&cluster, away, "reborn-0", b"stale-")?,
        "node {away} keeps records of the deleted topic (id {old_id}) in the new topic's log"
    );
    common::cluster::wait_for("the new topic's mark", CONVERGE, || {
        Ok(marked_topic_id(&cluster, away, "reborn-0").filter(|id| *id != old_id))
    })?;
    Ok(())
}
