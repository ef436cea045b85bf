//! Topics deleted and created again under the same name on a three-node cluster. A
//! partition directory is named by topic name only, so the new topic must never reopen
//! (or replicate from, or serve) the old topic's log: not on a node that was down while
//! the topic was deleted, and not from a leader that has not yet applied the change.
//! Every wait is bounded; the bounds are functional, not performance checks.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use common::block_on;
use common::checks::{
    consume_exactly, ensure_brokers, ensure_full_isr, ensure_led, one_besides, produce_and_consume,
    wait_settled,
};
use common::cluster::{ensure_same, Cluster, MetadataView, FAST_SETTINGS};
use rdkafka::admin::{NewTopic, TopicReplication};

/// Bound for metadata to converge after a change.
const CONVERGE: Duration = Duration::from_secs(20);
/// Bound for an admin change to succeed while the quorum recovers.
const CHANGE: Duration = Duration::from_secs(15);
/// Partitions of a topic placed on one node only, which keep it busy applying metadata.
const BULK: usize = 3000;

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
    wait_settled(&cluster, &cluster.ids(), "reborn", 1, CONVERGE)?;
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()?;
    for i in 0..50 {
        common::send_one(&producer, "reborn", &format!("stale-{i}"))?;
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
    wait_settled(&cluster, &cluster.ids(), "reborn", 1, CONVERGE)?;
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

/// A topic deleted and created again under the same name (same replicas, same leader)
/// while that leader is busy opening a big topic's partitions, so that it still holds the
/// old log when its followers already fetch the new topic (by name, as Fetch v12 does):
/// the new topic's partitions start above every leader epoch the old one reached, so the
/// followers' fetches (current leader epoch: the new one) are refused until the leader has
/// applied the change, and they copy none of the old records. Once the leader is killed,
/// a follower leads the new topic and serves only the new topic's records. (Without the
/// epoch floor the followers copied every old record, and served them after the kill.)
#[test]
fn followers_of_a_recreated_topic_copy_nothing_from_a_lagging_leader() -> Result<()> {
    // sessions long enough that the busy node stays unfenced (and the leader)
    let settings = [
        ("broker.session.timeout.ms", "20000"),
        ("broker.heartbeat.interval.ms", "300"),
        ("controller.quorum.election.timeout.ms", "500"),
    ];
    let mut cluster = Cluster::start(3, &settings)?;
    let controller = cluster.active_controller(CONVERGE)?;
    let (lagging, others) = one_besides(&cluster, controller);
    let replicas: Vec<i32> = std::iter::once(lagging)
        .chain(others.iter().copied())
        .map(|id| id as i32)
        .collect();
    let assignment = [replicas.as_slice()];
    let assigned = NewTopic::new("again", 1, TopicReplication::Variable(&assignment));
    let led_by_lagging = |views: &[MetadataView]| -> Result<i32> {
        let mut epoch = -1;
        for v in views {
            ensure_led(v, "again", 1)?;
            ensure_full_isr(v, "again")?;
            let p = &v.topic("again")?.partitions[0];
            ensure!(p.leader == lagging as i32, "node {}: {p:?}", v.from);
            epoch = p.leader_epoch;
        }
        Ok(epoch)
    };
    cluster.create_topic(&others, &assigned, CHANGE)?;
    let views = cluster.wait_views("again led", &cluster.ids(), CONVERGE, |views| {
        led_by_lagging(views)?;
        ensure_same(views)
    })?;
    let old_epoch = led_by_lagging(&views)?;
    let old_id = views[0].topic("again")?.id.clone();
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()?;
    for i in 0..100 {
        common::send_one(&producer, "again", &format!("old-{i}"))?;
    }

    // the leader falls behind on metadata: it opens a big topic's partitions first
    let bulk_admin = cluster.admin(&others)?;
    let bulk = std::thread::spawn(move || -> Result<()> {
        let bulk_replicas = [lagging as i32];
        let bulk_assignment = vec![&bulk_replicas[..]; BULK];
        let opts =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
        let t = NewTopic::new(
            "bulk",
            BULK as i32,
            TopicReplication::Variable(&bulk_assignment),
        );
        for r in block_on(bulk_admin.create_topics(&[t], &opts))? {
            if let Err((name, code)) = r {
                bail!("create {name}: {code:?}");
            }
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(50));
    let admin = cluster.admin(&others)?;
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in block_on(admin.delete_topics(&["again"], &opts))? {
        if let Err((name, code)) = r {
            bail!("delete {name}: {code:?}");
        }
    }
    cluster.wait_views("again deleted", &others, CONVERGE, |views| {
        for v in views {
            ensure!(v.topic("again").is_err(), "node {} lists again", v.from);
        }
        Ok(())
    })?;
    cluster.create_topic(&others, &assigned, CHANGE)?;
    let views = cluster.wait_views("again re-created", &others, CONVERGE, |views| {
        for v in views {
            let t = v.topic("again")?;
            ensure!(t.id != old_id, "node {}: still the old id", v.from);
        }
        led_by_lagging(views).map(drop)
    })?;
    let new_epoch = led_by_lagging(&views)?;
    ensure!(
        new_epoch > old_epoch,
        "the re-created partition starts at leader epoch {new_epoch}, the old one had {old_epoch}"
    );
    bulk.join()
        .map_err(|_| anyhow::anyhow!("the bulk creation panicked"))??;
    cluster.wait_views("all agree again", &cluster.ids(), CONVERGE, |views| {
        led_by_lagging(views)?;
        ensure_same(views)
    })?;
    let offset = common::send_one(&producer, "again", "new-0")?;
    ensure!(
        offset == 0,
        "the first record of the new topic has offset {offset}"
    );
    drop(producer);
    for id in &others {
        ensure!(
            !dir_contains(&cluster, *id, "again-0", b"old-")?,
            "follower {id} copied records of the deleted topic into the new one"
        );
    }

    // a follower takes over: the new topic has exactly its one record
    cluster.kill9(lagging)?;
    // the dead node is fenced once its 20 s session ends
    let failover = Duration::from_secs(60);
    cluster.wait_views("a follower leads", &others, failover, |views| {
        for v in views {
            let p = &v.topic("again")?.partitions[0];
            ensure!(
                p.leader >= 0 && p.leader != lagging as i32,
                "node {}: {p:?}",
                v.from
            );
        }
        Ok(())
    })?;
    let sent = BTreeMap::from([(0, vec!["new-0".to_string()])]);
    consume_exactly(&cluster, "again", &sent)
}
