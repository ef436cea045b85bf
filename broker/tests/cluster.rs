//! Three-process cluster tests: three combined broker + controller nodes started by
//! `deploy/local-cluster.sh`, driven with rdkafka clients and raw Metadata requests (which
//! one broker alone answers, with leader epochs).
//! Checked: a replicated topic looks the same from every broker; the metadata quorum
//! survives the active controller's death and the restarted node catches up; without a
//! quorum changes fail (never hang) while reads still answer; a full restart keeps the
//! metadata; a silent broker is fenced and comes back; garbage on the controller port is
//! dropped; a data dir refuses a different node id or voter set; replicated records survive
//! a leader kill and a stopped follower rejoins. (Longer replication scenarios:
//! `replication.rs`; topics deleted and created again: `recreated_topics.rs`.)
//! Every wait is bounded; the bounds are functional (generous), not performance checks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::block_on;
use common::checks::{
    consume_exactly, ensure_brokers, ensure_full_isr, ensure_led, one_besides, produce_and_consume,
    wait_settled,
};
use common::cluster::{
    ensure_same, run_binary_expecting_exit, try_create, Cluster, MetadataView, FAST_SETTINGS,
};
use common::extra::ExtraNode;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;

/// Bound for metadata to converge after a change (fencing takes ~2 s with FAST_SETTINGS).
const CONVERGE: Duration = Duration::from_secs(20);
/// Bound for an admin change to succeed while the quorum recovers.
const CHANGE: Duration = Duration::from_secs(15);

fn topic(name: &str, partitions: i32, rf: i32) -> NewTopic<'_> {
    NewTopic::new(name, partitions, TopicReplication::Fixed(rf))
}

/// A topic with 6 partitions and RF 3, created through one broker that is not the first,
/// looks exactly the same (leaders, epochs, replicas, ISR) from every broker; leaders are
/// spread; RF 4 on 3 brokers is refused; records produced with acks=all come back.
#[test]
fn rf3_topic_created_through_any_broker_agrees_everywhere() -> Result<()> {
    let cluster = Cluster::start(3, FAST_SETTINGS)?;
    let admin = cluster.admin(&[2])?;
    let created = try_create(&admin, &topic("rf3", 6, 3), Duration::from_secs(10))?;
    ensure!(created.is_ok(), "create rf3 through node 2: {created:?}");

    let views = cluster.wait_views("rf3 everywhere", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_brokers(v, &[1, 2, 3])?;
            ensure_led(v, "rf3", 6)?;
            ensure_full_isr(v, "rf3")?;
        }
        ensure_same(views)
    })?;
    for v in &views {
        // any broker forwards admin requests, so each names itself the controller
        ensure!(
            v.controller_id == v.from as i32,
            "node {} names {} the controller",
            v.from,
            v.controller_id
        );
        ensure!(
            v.cluster_id.as_deref() == Some(cluster.cluster_id()),
            "node {} says cluster id {:?}, cluster.env {:?}",
            v.from,
            v.cluster_id,
            cluster.cluster_id()
        );
    }
    let rf3 = views[0].topic("rf3")?;
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for p in &rf3.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort_unstable();
        ensure!(
            replicas == [1, 2, 3],
            "rf3-{}: replicas {:?}",
            p.partition,
            p.replicas
        );
        ensure!(
            p.replicas.contains(&p.leader),
            "rf3-{}: leader {} not a replica",
            p.partition,
            p.leader
        );
        ensure!(
            p.leader_epoch >= 0,
            "rf3-{}: leader epoch {}",
            p.partition,
            p.leader_epoch
        );
        *led.entry(p.leader).or_default() += 1;
    }
    ensure!(
        led == BTreeMap::from([(1, 2), (2, 2), (3, 2)]),
        "leaders not spread: partitions led per broker {led:?}; {:?}",
        rf3.partitions
    );

    // rdkafka, bootstrapped with one broker at a time, sees the same leaders/replicas/ISR
    for id in cluster.ids() {
        let client = cluster.metadata_client(id)?;
        let md = client.fetch_metadata(Some("rf3"), Duration::from_secs(10))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == "rf3")
            .with_context(|| format!("rdkafka via node {id}: no rf3"))?;
        ensure!(
            t.error().is_none(),
            "rdkafka via node {id}: {:?}",
            t.error()
        );
        let mut seen: Vec<(i32, i32, Vec<i32>, Vec<i32>)> = t
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
            .collect();
        seen.sort();
        let want: Vec<(i32, i32, Vec<i32>, Vec<i32>)> = rf3
            .partitions
            .iter()
            .map(|p| (p.partition, p.leader, p.replicas.clone(), p.isr.clone()))
            .collect();
        ensure!(
            seen == want,
            "rdkafka via node {id} (answered by {}): {seen:?}, raw Metadata: {want:?}",
            md.orig_broker_id()
        );
        let mut brokers: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        brokers.sort_unstable();
        ensure!(
            brokers == [1, 2, 3],
            "rdkafka via node {id}: brokers {brokers:?}"
        );
    }

    let rf4 = try_create(
        &cluster.admin(&[3])?,
        &topic("rf4", 1, 4),
        Duration::from_secs(10),
    )?;
    ensure!(
        rf4 == Err(RDKafkaErrorCode::InvalidReplicationFactor),
        "RF 4 on 3 brokers: {rf4:?}"
    );
    let after = cluster.view(1)?;
    ensure!(
        !after.topics.contains_key("rf4"),
        "rf4 exists after being refused"
    );

    produce_and_consume(&cluster, "rf3", 6, 20)?;

    // DescribeLogDirs on each broker lists all six partitions (each holds a replica of
    // every one, led or followed), and followers hold the leader's bytes: the sizes agree
    // once replication caught up
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut per_node = Vec::new();
        for id in cluster.ids() {
            let mut c = common::raw::RawClient::connect(cluster.kafka_addr(id))?;
            c.negotiate()?;
            let r = c.call(
                4,
                &kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None),
            )?;
            ensure!(
                r.error_code == 0 && r.results.len() == 1,
                "node {id}: {r:?}"
            );
            let sizes: Vec<(i32, i64)> = r.results[0]
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == "rf3")
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.partition_size))
                })
                .collect();
            per_node.push((id, sizes));
        }
        let parts: Vec<Vec<i32>> = per_node
            .iter()
            .map(|(_, s)| s.iter().map(|(p, _)| *p).collect())
            .collect();
        ensure!(
            parts.iter().all(|p| *p == [0, 1, 2, 3, 4, 5]),
            "DescribeLogDirs partitions per node: {per_node:?}"
        );
        let agree = per_node.windows(2).all(|w| w[0].1 == w[1].1);
        if agree && per_node[0].1.iter().any(|(_, size)| *size > 0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "replica sizes never agreed: {per_node:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Killing the active controller: the survivors elect another and a topic can be created
/// through them soon after; the killed node, started again, catches up (its own Metadata
/// lists the new topic and every broker) and forwards changes to the new controller.
#[test]
fn controller_failover_and_rejoin() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let old = cluster.active_controller(CONVERGE)?;
    let survivors: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != old).collect();

    let killed_at = Instant::now();
    cluster.kill9(old)?;
    let took = cluster.create_topic(&survivors, &topic("after-failover", 3, 2), CHANGE)?;
    let since_kill = killed_at.elapsed();
    eprintln!(
        "controller node {old} killed; topic created through nodes {survivors:?} {since_kill:?} \
         after the kill (the create call itself took {took:?})"
    );
    let new = cluster.active_controller(CONVERGE)?;
    ensure!(
        new != old,
        "node {old} was killed but is still named the controller"
    );
    eprintln!("new active controller: node {new}");

    // the dead node is fenced: the survivors no longer list it nor let it lead
    cluster.wait_views("the dead node fenced", &survivors, CONVERGE, |views| {
        for v in views {
            ensure_brokers(v, &survivors)?;
            ensure_led(v, "after-failover", 3)?;
            for p in &v.topic("after-failover")?.partitions {
                ensure!(
                    p.leader != old as i32,
                    "node {}: partition {} led by dead node {old}",
                    v.from,
                    p.partition
                );
            }
        }
        ensure_same(views)
    })?;

    cluster.start_node(old)?;
    let rejoined_at = Instant::now();
    cluster.wait_views(
        "the restarted node to catch up",
        &[old],
        CONVERGE,
        |views| {
            ensure_brokers(&views[0], &[1, 2, 3])?;
            ensure_led(&views[0], "after-failover", 3)
        },
    )?;
    eprintln!(
        "node {old} listed the new topic and all brokers {:?} after start-node returned",
        rejoined_at.elapsed()
    );
    cluster.wait_views("all nodes to agree", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_brokers(v, &[1, 2, 3])?;
        }
        ensure_same(views)
    })?;

    // the rejoined node forwards a change to the new controller
    cluster.create_topic(&[old], &topic("after-rejoin", 2, 3), CHANGE)?;
    cluster.wait_views(
        "after-rejoin everywhere",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for v in views {
                ensure_led(v, "after-rejoin", 2)?;
            }
            ensure_same(views)
        },
    )?;
    Ok(())
}

/// With two of three nodes dead, the survivor (the controller, so a stale leader is
/// tested) answers CreateTopics with a retriable error within the request's timeout, and
/// Metadata still answers with the topics it has; with the two back, changes work again
/// (the failed create may then complete: its error does not say it never will).
#[test]
fn no_quorum_no_changes_but_reads_answer() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&cluster.ids(), &topic("before", 3, 3), CHANGE)?;
    cluster.wait_views("before everywhere", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_led(v, "before", 3)?;
        }
        ensure_same(views)
    })?;
    let survivor = cluster.active_controller(CONVERGE)?;
    let dead: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != survivor)
        .collect();
    for id in &dead {
        cluster.kill9(*id)?;
    }

    let admin = cluster.admin(&[survivor])?;
    let op_timeout = Duration::from_secs(3);
    for attempt in 1..=2 {
        let started = Instant::now();
        let answer = try_create(&admin, &topic("during", 1, 1), op_timeout)?;
        let took = started.elapsed();
        eprintln!("CreateTopics without a quorum (attempt {attempt}): {answer:?} after {took:?}");
        match answer {
            Err(RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::NotController) => {}
            Err(RDKafkaErrorCode::OperationTimedOut) => {
                bail!("CreateTopics got no answer within the request's timeout (+2 s): the broker hung ({took:?})")
            }
            other => bail!("CreateTopics without a quorum: {other:?}, want a retriable error"),
        }
        ensure!(
            took < op_timeout + Duration::from_secs(5),
            "CreateTopics answered after {took:?}, past its {op_timeout:?} timeout + 5 s"
        );
    }

    // reads still answer, from the survivor's copy of the metadata
    let view = cluster.view(survivor)?;
    ensure_led(&view, "before", 3)?;
    ensure!(
        !view.topics.contains_key("during"),
        "a topic was created without a quorum: {:?}",
        view.topics.keys()
    );
    let md = cluster
        .metadata_client(survivor)?
        .fetch_metadata(None, Duration::from_secs(10))?;
    ensure!(
        md.topics().iter().any(|t| t.name() == "before"),
        "rdkafka Metadata from the survivor lacks topic before"
    );

    for id in &dead {
        cluster.start_node(*id)?;
    }
    let took = cluster.create_topic(&[survivor], &topic("after-quorum", 2, 3), CHANGE)?;
    eprintln!("with the quorum back, CreateTopics succeeded after {took:?}");
    cluster.wait_views(
        "after-quorum everywhere",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for v in views {
                ensure_brokers(v, &[1, 2, 3])?;
                ensure_led(v, "after-quorum", 2)?;
            }
            ensure_same(views)
        },
    )?;
    // A failed create may still take effect: the stale leader's proposal stays in its raft
    // log and commits once the quorum is back, although it was answered NOT_CONTROLLER
    // (in Kafka too a timed-out or NOT_CONTROLLER change may land; clients retry and see
    // TOPIC_ALREADY_EXISTS). Either way every node agrees (checked above).
    eprintln!(
        "the failed topic `during` exists after the quorum came back: {}",
        cluster.view(survivor)?.topics.contains_key("during")
    );
    Ok(())
}

/// Stopping every node and starting the cluster again keeps every topic: its id,
/// partition count, replicas and configs.
#[test]
fn full_restart_keeps_metadata() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let configured = topic("keep-a", 4, 3)
        .set("retention.ms", "123456789")
        .set("segment.bytes", "1048576");
    cluster.create_topic(&[1], &configured, CHANGE)?;
    let compacted = topic("keep-b", 2, 2).set("cleanup.policy", "compact");
    cluster.create_topic(&[3], &compacted, CHANGE)?;
    cluster.create_topic(&[2], &topic("keep-c", 5, 1), CHANGE)?;
    let names = ["keep-a", "keep-b", "keep-c"];
    let counts = [4, 2, 5];

    let settled = |views: &[MetadataView]| -> Result<()> {
        for v in views {
            ensure_brokers(v, &[1, 2, 3])?;
            for (name, count) in names.iter().zip(counts) {
                ensure_led(v, name, count)?;
                ensure_full_isr(v, name)?;
            }
        }
        ensure_same(views)
    };
    let before = cluster.wait_views("topics everywhere", &cluster.ids(), CONVERGE, settled)?;
    let mut configs_before = BTreeMap::new();
    for name in names {
        configs_before.insert(name, cluster.topic_configs(2, name)?);
    }
    let find = |configs: &[(String, Option<String>, String)], key: &str| {
        configs
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, v, _)| v.clone())
    };
    ensure!(
        find(&configs_before["keep-a"], "retention.ms").as_deref() == Some("123456789"),
        "keep-a retention.ms: {:?}",
        configs_before["keep-a"]
    );
    ensure!(
        find(&configs_before["keep-b"], "cleanup.policy").as_deref() == Some("compact"),
        "keep-b cleanup.policy: {:?}",
        configs_before["keep-b"]
    );

    cluster.stop_all()?;
    for id in cluster.ids() {
        ensure!(
            !cluster.is_running(id),
            "node {id} still running after stop"
        );
    }
    cluster.start_again()?;

    let after = cluster.wait_views("topics after restart", &cluster.ids(), CONVERGE, settled)?;
    let shape = |v: &MetadataView| -> BTreeMap<String, (String, Vec<Vec<i32>>)> {
        v.topics
            .iter()
            .map(|(name, t)| {
                let replicas = t.partitions.iter().map(|p| p.replicas.clone()).collect();
                (name.clone(), (t.id.clone(), replicas))
            })
            .collect()
    };
    ensure!(
        shape(&after[0]) == shape(&before[0]),
        "topics (id, replicas per partition) before the restart: {:?}\nafter: {:?}",
        shape(&before[0]),
        shape(&after[0])
    );
    for id in cluster.ids() {
        for name in names {
            let now = cluster.topic_configs(id, name)?;
            ensure!(
                now == configs_before[name],
                "{name} configs via node {id} after the restart: {now:?}\nbefore: {:?}",
                configs_before[name]
            );
        }
    }
    Ok(())
}

/// A SIGSTOPped broker misses its heartbeats and is fenced: the others stop listing it,
/// move its leaderships (leader epoch +1) and drop it from ISRs; after SIGCONT it is
/// unfenced and back in every ISR.
#[test]
fn stopped_broker_is_fenced() -> Result<()> {
    let cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&cluster.ids(), &topic("fence", 6, 3), CHANGE)?;
    let before = wait_settled(&cluster, &cluster.ids(), "fence", 6, CONVERGE)?;
    let controller = cluster.active_controller(CONVERGE)?;
    let (victim, others) = one_besides(&cluster, controller);
    let v = victim as i32;
    let led_before: BTreeMap<i32, i32> = before[0]
        .topic("fence")?
        .partitions
        .iter()
        .filter(|p| p.leader == v)
        .map(|p| (p.partition, p.leader_epoch))
        .collect();
    ensure!(
        !led_before.is_empty(),
        "node {victim} leads no partition of fence: {:?}",
        before[0].topic("fence")?
    );

    let paused = cluster.sigstop(victim)?;
    let stopped_at = Instant::now();
    cluster.wait_views(
        "the stopped node to be fenced",
        &others,
        CONVERGE,
        |views| {
            for view in views {
                ensure_brokers(view, &others)?;
                for (name, t) in &view.topics {
                    for p in &t.partitions {
                        ensure!(
                            p.leader != v,
                            "node {}: {name}-{} still led by {victim}",
                            view.from,
                            p.partition
                        );
                    }
                }
                ensure_led(view, "fence", 6)?;
                for p in &view.topic("fence")?.partitions {
                    ensure!(
                        !p.isr.contains(&v) && p.offline.contains(&v),
                        "node {}: fence-{}: isr {:?}, offline {:?}",
                        view.from,
                        p.partition,
                        p.isr,
                        p.offline
                    );
                    if let Some(epoch) = led_before.get(&p.partition) {
                        ensure!(
                            p.leader_epoch > *epoch,
                            "node {}: fence-{} moved to {} with epoch {} (was {epoch})",
                            view.from,
                            p.partition,
                            p.leader,
                            p.leader_epoch
                        );
                    }
                }
            }
            ensure_same(views)
        },
    )?;
    eprintln!(
        "node {victim} fenced {:?} after SIGSTOP",
        stopped_at.elapsed()
    );

    paused.resume();
    let resumed_at = Instant::now();
    cluster.wait_views(
        "the resumed node to be back",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for view in views {
                ensure_brokers(view, &[1, 2, 3])?;
                ensure_led(view, "fence", 6)?;
                ensure_full_isr(view, "fence")?;
            }
            ensure_same(views)
        },
    )?;
    eprintln!(
        "node {victim} unfenced and in every ISR {:?} after SIGCONT",
        resumed_at.elapsed()
    );
    ensure!(
        cluster.is_running(victim),
        "node {victim} is not running after SIGCONT"
    );
    Ok(())
}

/// Reads until the peer closes the connection (EOF or reset), bounded.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<bool> {
    stream.set_read_timeout(Some(within))?;
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// A raft message of type `t` from `from` to `to`, in the envelope of `cluster_id`.
fn envelope(
    cluster_id: &str,
    t: raft::eraftpb::MessageType,
    from: u64,
    to: u64,
) -> Result<Vec<u8>> {
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = 1_000_000;
    Ok(sluice_controller::envelope::encode(cluster_id, &m)?)
}

/// Sends `bytes` on a new connection to `addr`; `expect_close`: the node must close it.
fn send_garbage(
    addr: std::net::SocketAddr,
    what: &str,
    bytes: &[u8],
    expect_close: bool,
) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("{what}: connecting to {addr}"))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    // the node may close before reading everything: a reset while writing is fine
    let _ = s.write_all(bytes);
    if expect_close {
        ensure!(
            closed_within(&mut s, Duration::from_secs(5))?,
            "{what}: the controller listener at {addr} kept the connection open"
        );
    } else {
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = closed_within(&mut s, Duration::from_secs(5))?;
    }
    Ok(())
}

/// Garbage on the controller port of every node (random bytes, a frame claiming 1 GiB, an
/// empty frame, an undecodable call, undecodable or forged raft envelopes, unknown frame
/// kinds, a truncated frame) is dropped and logged; every node keeps running and the
/// cluster still makes changes.
#[test]
fn bad_controller_input_is_dropped() -> Result<()> {
    use raft::eraftpb::MessageType;
    let cluster = Cluster::start(3, FAST_SETTINGS)?;
    let pids: Vec<Option<u32>> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.pid(id))
        .collect();
    let cid = cluster.cluster_id().to_string();
    for id in cluster.ids() {
        let addr = cluster.controller_addr(id);
        let other = if id == 1 { 2 } else { 1 };
        let random: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        send_garbage(addr, "random bytes", &random, false)?;
        let mut huge = (1u32 << 30).to_be_bytes().to_vec();
        huge.push(0);
        huge.extend_from_slice(&[0xAB; 1024]);
        send_garbage(addr, "a frame claiming 1 GiB", &huge, true)?;
        send_garbage(addr, "a frame claiming u32::MAX", &[0xff; 16], true)?;
        send_garbage(addr, "an empty frame", &[0, 0, 0, 0, 0], true)?;
        send_garbage(addr, "an undecodable call", &frame(1, &[0xff; 64]), true)?;
        send_garbage(addr, "an empty call", &frame(1, &[]), true)?;
        send_garbage(addr, "an unknown kind", &frame(9, b"hello"), true)?;
        send_garbage(addr, "an answer frame", &frame(2, &[0x08, 0x01]), true)?;
        // raft envelopes are dropped one by one; the connection may stay open
        let mut envelopes = frame(0, &[0xff; 64]);
        envelopes.extend(frame(0, &[]));
        envelopes.extend(frame(
            0,
            &envelope(
                "another-cluster",
                MessageType::MsgHeartbeat,
                other,
                id as u64,
            )?,
        ));
        envelopes.extend(frame(
            0,
            &envelope(&cid, MessageType::MsgHeartbeat, other, 99)?,
        ));
        envelopes.extend(frame(
            0,
            &envelope(&cid, MessageType::MsgPropose, other, id as u64)?,
        ));
        envelopes.extend(frame(
            0,
            &envelope(&cid, MessageType::MsgHup, other, id as u64)?,
        ));
        send_garbage(addr, "bad raft envelopes", &envelopes, false)?;
        // a frame cut short: the node waits for the rest, then sees the connection end
        let mut truncated = frame(0, &[0x0a; 100]);
        truncated.truncate(20);
        send_garbage(addr, "a truncated frame", &truncated, false)?;
    }

    for (id, pid) in cluster.ids().into_iter().zip(&pids) {
        ensure!(
            cluster.pid(id) == *pid && pid.is_some(),
            "node {id} is no longer the process it was ({pid:?} → {:?})",
            cluster.pid(id)
        );
    }
    cluster.create_topic(&[2], &topic("after-garbage", 3, 3), CHANGE)?;
    cluster.wait_views(
        "after-garbage everywhere",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for v in views {
                ensure_brokers(v, &[1, 2, 3])?;
                ensure_led(v, "after-garbage", 3)?;
                ensure_full_isr(v, "after-garbage")?;
            }
            ensure_same(views)
        },
    )?;
    for id in cluster.ids() {
        let log = cluster.log(id);
        let warns: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("controller listener:"))
            .collect();
        ensure!(
            !warns.is_empty(),
            "node {id} logged no WARN about the controller listener"
        );
        for needle in [
            "frame of 1073741824 bytes",
            "bad call",
            "unknown frame kind",
            "raft message dropped",
        ] {
            ensure!(
                warns.iter().any(|l| l.contains(needle)),
                "node {id}: no controller-listener WARN with {needle:?}; its warnings: {warns:#?}"
            );
        }
        ensure!(
            !log.contains("panicked"),
            "node {id} logged a panic:\n{}",
            cluster.log_tail(id, 40)
        );
    }
    Ok(())
}

/// Replaces the value of `--set name=...` in a node's arguments.
fn with_setting(args: &[String], name: &str, value: &str) -> Result<Vec<String>> {
    let prefix = format!("{name}=");
    let mut found = false;
    let out = args
        .iter()
        .map(|a| {
            if a.starts_with(&prefix) {
                found = true;
                format!("{name}={value}")
            } else {
                a.clone()
            }
        })
        .collect();
    ensure!(found, "no {name} in the node's arguments {args:?}");
    Ok(out)
}

/// A data dir refuses to start as another node id (meta.properties) or with another voter
/// set than its raft log was created with (controller.quorum.voters); neither attempt
/// harms the data: the cluster starts again afterwards.
#[test]
fn wrong_node_id_or_voters_refuse_to_start() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&[1], &topic("survives", 2, 3), CHANGE)?;
    cluster.stop_all()?;
    let args = cluster.node_args(1)?;
    let bound = Duration::from_secs(30);

    let wrong_id = with_setting(&args, "node.id", "2")?;
    let (status, output) =
        run_binary_expecting_exit(&wrong_id, &cluster.dir().join("wrong-id.out"), bound)?;
    eprintln!("node 1's data dir with node.id=2: {status}\n{output}");
    ensure!(
        !status.success(),
        "started with node.id=2 on node 1's data dir"
    );
    ensure!(
        output.contains("meta.properties"),
        "the refusal does not mention meta.properties:\n{output}"
    );

    let voters = args
        .iter()
        .find_map(|a| a.strip_prefix("controller.quorum.voters="))
        .context("no controller.quorum.voters in node 1's arguments")?;
    let spare = common::free_port();
    let more_voters = format!("{voters},4@127.0.0.1:{spare}");
    let wrong_voters = with_setting(&args, "controller.quorum.voters", &more_voters)?;
    let (status, output) = run_binary_expecting_exit(
        &wrong_voters,
        &cluster.dir().join("wrong-voters.out"),
        bound,
    )?;
    eprintln!("node 1 with a fourth voter: {status}\n{output}");
    ensure!(!status.success(), "started with another voter set");
    ensure!(
        output.contains("controller.quorum.voters"),
        "the refusal does not mention controller.quorum.voters:\n{output}"
    );

    let fewer_voters = voters
        .split(',')
        .filter(|v| !v.starts_with("3@"))
        .collect::<Vec<_>>()
        .join(",");
    let two_voters = with_setting(&args, "controller.quorum.voters", &fewer_voters)?;
    let (status, output) =
        run_binary_expecting_exit(&two_voters, &cluster.dir().join("two-voters.out"), bound)?;
    eprintln!("node 1 with voters 1 and 2 only: {status}\n{output}");
    ensure!(!status.success(), "started with a smaller voter set");
    ensure!(
        output.contains("controller.quorum.voters"),
        "the refusal does not mention controller.quorum.voters:\n{output}"
    );

    // nothing was damaged: the same cluster starts and still has its topic
    cluster.start_again()?;
    cluster.wait_views(
        "survives after restart",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for v in views {
                ensure_brokers(v, &[1, 2, 3])?;
                ensure_led(v, "survives", 2)?;
            }
            ensure_same(views)
        },
    )?;
    Ok(())
}

/// A voter that was down while the others took snapshots (every 8 entries) and compacted
/// their logs behind them catches up from the leader's snapshot, then from entries.
#[test]
fn lagging_voter_catches_up_from_a_snapshot() -> Result<()> {
    let mut settings = FAST_SETTINGS.to_vec();
    settings.push(("controller.snapshot.interval.records", "8"));
    let mut cluster = Cluster::start(3, &settings)?;
    let leader = cluster.active_controller(CONVERGE)?;
    let (lagging, up) = one_besides(&cluster, leader);
    cluster.kill9(lagging)?;
    let names: Vec<String> = (0..30).map(|i| format!("snap-{i}")).collect();
    for n in &names {
        cluster.create_topic(&up, &topic(n, 1, 2), CHANGE)?;
    }
    cluster.start_node(lagging)?;
    cluster.wait_views(
        "the lagging node to catch up",
        &[lagging],
        CONVERGE,
        |views| {
            ensure_brokers(&views[0], &[1, 2, 3])?;
            for n in &names {
                ensure_led(&views[0], n, 1)?;
            }
            Ok(())
        },
    )?;
    ensure!(
        cluster
            .log(lagging)
            .contains("metadata image restored from the leader's snapshot"),
        "node {lagging} caught up without installing the leader's snapshot"
    );
    cluster.wait_views("all nodes to agree", &cluster.ids(), CONVERGE, ensure_same)?;
    Ok(())
}

/// Brokers (and partition leaders) a broker at `addr` reports, through rdkafka.
fn brokers_at(addr: &str) -> Result<BTreeSet<i32>> {
    let consumer: rdkafka::consumer::BaseConsumer = Cluster::client_config(addr).create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(5))?;
    Ok(md.brokers().iter().map(|b| b.id()).collect())
}

/// A broker-only node (process.roles=broker) joins a cluster of three combined nodes as a
/// raft learner: it follows the metadata log, is listed, leads replicas, and is fenced
/// when it dies. A node whose controller role is taken away keeps voting but stops being
/// a broker.
#[test]
fn broker_only_and_controller_only_roles() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let (node4, addr4) = ExtraNode::broker_only(&cluster, 4, FAST_SETTINGS)?;
    common::cluster::wait_for("the broker-only node listed everywhere", CONVERGE, || {
        for a in [addr4.clone(), cluster.bootstrap_of(&[1])] {
            let b = brokers_at(&a)?;
            ensure!(b == BTreeSet::from([1, 2, 3, 4]), "{a} lists {b:?}");
        }
        Ok(Some(()))
    })?;
    // RF 4 needs the learner as a replica; created through the learner (forwarded)
    let admin = Cluster::client_config(&addr4).create::<rdkafka::admin::AdminClient<_>>()?;
    let deadline = Instant::now() + CHANGE;
    loop {
        match try_create(&admin, &topic("on-four", 4, 4), Duration::from_secs(3))? {
            Ok(()) => break,
            Err(code) if Instant::now() < deadline => eprintln!("retrying: {code:?}"),
            Err(code) => bail!("creating an RF 4 topic through node 4: {code:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.wait_views("node 4 leads a partition", &[1, 2, 3], CONVERGE, |views| {
        for v in views {
            let t = v.topic("on-four")?;
            ensure!(
                t.partitions.iter().any(|p| p.leader == 4),
                "node {}: {t:?}",
                v.from
            );
        }
        ensure_same(views)
    })?;
    drop(node4); // kill -9
    cluster.wait_views("node 4 fenced", &[1, 2, 3], CONVERGE, |views| {
        for v in views {
            ensure!(
                !v.broker_ids().contains(&4),
                "node {} still lists 4",
                v.from
            );
            for p in &v.topic("on-four")?.partitions {
                ensure!(p.leader != 4, "node {} still has 4 leading", v.from);
            }
        }
        Ok(())
    })?;

    // node 3 restarted as controller only: still a voter, no longer a broker
    cluster.kill9(3)?;
    let args3 = cluster.node_args(3)?;
    let metrics_port = common::free_port();
    let mut ctl = vec!["--set".to_string(), "process.roles=controller".to_string()];
    // its own data dir comes from its saved arguments
    let mut saved = args3.clone();
    let dd = saved
        .iter()
        .position(|a| a == "--data-dir")
        .context("no --data-dir")?;
    let data_dir = saved.remove(dd + 1);
    saved.remove(dd);
    ctl.extend(saved);
    // last, so it wins over the script's own metrics.listen
    ctl.extend([
        "--set".to_string(),
        format!("metrics.listen=127.0.0.1:{metrics_port}"),
    ]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--data-dir", &data_dir])
        .args(&ctl)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reap = Reap(child);
    cluster.wait_views("node 3 no longer a broker", &[1, 2], CONVERGE, |views| {
        for v in views {
            ensure!(
                v.broker_ids() == BTreeSet::from([1, 2]),
                "node {}: {:?}",
                v.from,
                v.broker_ids()
            );
        }
        Ok(())
    })?;
    // the controller-only node serves the quorum's metrics, /health and /ready
    common::cluster::wait_for("node 3's controller metrics", CONVERGE, || {
        let (status, body) = http_get(metrics_port, "/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        let value = |name: &str| -> Option<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        };
        let leader = value("sluice_metadata_quorum_leader");
        ensure!(value("sluice_controller_voter") == Some(1.0), "{body}");
        ensure!(
            matches!(leader, Some(l) if (1.0..=3.0).contains(&l)),
            "{body}"
        );
        ensure!(
            value("sluice_controller_active") == Some(if leader == Some(3.0) { 1.0 } else { 0.0 }),
            "{body}"
        );
        ensure!(
            !body.contains("sluice_bytes_in_total"),
            "a controller-only node has no broker families"
        );
        Ok(Some(()))
    })?;
    ensure!(http_get(metrics_port, "/ready")?.0 == 200);
    ensure!(http_get(metrics_port, "/health")?.0 == 200);
    // with node 3 voting, one of 1 and 2 can be down and changes still commit
    cluster.kill9(2)?;
    cluster.create_topic(&[1], &topic("with-controller-only", 1, 1), CHANGE)?;
    Ok(())
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.1, one request): (status, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// SIGTERM moves a broker's leaderships before it stops (controlled shutdown): with a
/// session timeout far longer than the test, the survivors lead every partition as soon
/// as the node is gone, and acks=all produce keeps working. With RF 3 and
/// min.insync.replicas=3, acks=all is refused with NOT_ENOUGH_REPLICAS once a replica
/// left the ISR.
#[test]
fn sigterm_moves_leaderships_first_and_min_insync_is_enforced() -> Result<()> {
    let settings = [
        ("broker.session.timeout.ms", "60000"),
        ("broker.heartbeat.interval.ms", "300"),
        ("controller.quorum.election.timeout.ms", "500"),
    ];
    let mut cluster = Cluster::start(3, &settings)?;
    let controller = cluster.active_controller(CONVERGE)?;
    let (leaving, staying) = one_besides(&cluster, controller);
    cluster.create_topic(&staying, &topic("moved", 6, 3), CHANGE)?;
    let strict =
        NewTopic::new("strict", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "3");
    cluster.create_topic(&staying, &strict, CHANGE)?;
    cluster.wait_views("topics everywhere", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_led(v, "moved", 6)?;
            ensure!(v
                .topic("moved")?
                .partitions
                .iter()
                .any(|p| p.leader == leaving as i32));
        }
        Ok(())
    })?;
    let stopped_at = Instant::now();
    cluster.sigterm(leaving, Duration::from_secs(30))?;
    eprintln!(
        "node {leaving} stopped {:?} after SIGTERM",
        stopped_at.elapsed()
    );
    // far below the 60 s session timeout: only the controlled shutdown can explain it
    let views = cluster.wait_views(
        "leaderships moved",
        &staying,
        Duration::from_secs(10),
        |views| {
            for v in views {
                for p in &v.topic("moved")?.partitions {
                    ensure!(
                        p.leader >= 0 && p.leader != leaving as i32,
                        "node {}: partition {} led by {}",
                        v.from,
                        p.partition,
                        p.leader
                    );
                    ensure!(!p.isr.contains(&(leaving as i32)));
                }
            }
            ensure_same(views)
        },
    )?;
    ensure!(
        stopped_at.elapsed() < Duration::from_secs(30),
        "leaderships moved only after {:?}",
        stopped_at.elapsed()
    );
    // a moved partition's new epoch: a fetch naming the old one is FENCED_LEADER_EPOCH,
    // one naming a newer one UNKNOWN_LEADER_EPOCH, the current one is served
    let moved = views[0]
        .topic("moved")?
        .partitions
        .iter()
        .find(|p| p.leader_epoch > 0)
        .context("no partition changed leader")?;
    let mut raw = common::raw::RawClient::connect(cluster.kafka_addr(moved.leader as u32))?;
    raw.negotiate()?;
    let at = |raw: &mut common::raw::RawClient, e: i32| -> Result<i16> {
        Ok(raw.fetch_at_epoch("moved", moved.partition, 0, e)?.0)
    };
    ensure!(
        at(&mut raw, moved.leader_epoch - 1)? == 74,
        "old epoch not fenced"
    );
    ensure!(
        at(&mut raw, moved.leader_epoch + 1)? == 75,
        "newer epoch not unknown"
    );
    ensure!(
        at(&mut raw, moved.leader_epoch)? == 0,
        "current epoch refused"
    );
    drop(views);
    produce_and_consume(&cluster, "moved", 6, 20)?;
    // the strict topic's ISR is down to 2 < min.insync.replicas=3
    let producer: rdkafka::producer::FutureProducer =
        Cluster::client_config(&cluster.bootstrap_of(&staying))
            .set("acks", "all")
            .set("message.timeout.ms", "5000")
            .set("retries", "0")
            .create()?;
    let sent = block_on(producer.send(
        FutureRecord::<(), [u8]>::to("strict").payload(b"x"),
        Duration::from_secs(10),
    ));
    match sent {
        Err((e, _)) => ensure!(
            e.rdkafka_error_code() == Some(RDKafkaErrorCode::NotEnoughReplicas),
            "unexpected error {e:?}"
        ),
        Ok(d) => bail!("acks=all with ISR 2 < min.insync 3 was acknowledged: {d:?}"),
    }
    Ok(())
}

/// Followers copy the leader's batches: once every replica's log matches the leader's,
/// kill -9 of the leader loses nothing, the new leader serves every acknowledged record
/// at its offset, and the old leader rejoins as a follower and catches up.
#[test]
fn replicated_records_survive_a_leader_kill() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&cluster.ids(), &topic("rep", 2, 3), CHANGE)?;
    cluster.wait_views("rep everywhere", &cluster.ids(), CONVERGE, |views| {
        for v in views {
            ensure_led(v, "rep", 2)?;
        }
        ensure_same(views)
    })?;
    let sent = produce_and_consume(&cluster, "rep", 2, 300)?;
    // replicated: every replica's segment file is the leader's, byte for byte
    let node_dirs: Vec<std::path::PathBuf> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.node_dir(id))
        .collect();
    // the segment's bytes without the zero tail of its last direct-I/O page (recovery
    // after kill -9 cuts that tail; a running replica keeps it)
    let segment = move |id: u32, p: i32| {
        let mut bytes =
            std::fs::read(node_dirs[id as usize - 1].join(format!("data/rep-{p}/{:020}.log", 0)))
                .unwrap_or_default();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    };
    common::cluster::wait_for("followers to copy the leader", CONVERGE, || {
        for p in 0..2 {
            let copies: Vec<Vec<u8>> = (1..=3).map(|id| segment(id, p)).collect();
            ensure!(!copies[0].is_empty(), "rep-{p} is empty on node 1");
            ensure!(
                copies.iter().all(|c| *c == copies[0]),
                "rep-{p} differs between replicas"
            );
        }
        Ok(Some(()))
    })?;
    let views = cluster.wait_views("leaders", &[1], CONVERGE, |_| Ok(()))?;
    let leader = views[0].topic("rep")?.partitions[0].leader as u32;
    cluster.kill9(leader)?;
    let survivors: Vec<u32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster.wait_views("a new leader", &survivors, CONVERGE, |views| {
        for v in views {
            for p in &v.topic("rep")?.partitions {
                ensure!(
                    p.leader >= 0 && p.leader != leader as i32,
                    "partition {} led by {}",
                    p.partition,
                    p.leader
                );
            }
        }
        ensure_same(views)
    })?;
    consume_exactly(&cluster, "rep", &sent)?;
    // the old leader comes back as a follower and copies what it missed
    cluster.start_node(leader)?;
    common::cluster::wait_for("the old leader to catch up", CONVERGE, || {
        for p in 0..2 {
            let copies: Vec<Vec<u8>> = (1..=3).map(|id| segment(id, p)).collect();
            ensure!(
                copies.iter().all(|c| *c == copies[0]),
                "rep-{p} differs between replicas"
            );
        }
        Ok(Some(()))
    })?;
    Ok(())
}

/// A stopped follower leaves the ISR (fenced) and acks=all goes on with two replicas; once
/// resumed it copies what it missed and rejoins the ISR. Then the third replica and the
/// leader die (the third restarts so the quorum can act), and the rejoined follower, the
/// only in-sync replica left, leads with every acknowledged record in order.
#[test]
fn stopped_follower_catches_up_and_rejoins_the_isr() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    let t = NewTopic::new("catchup", 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
    cluster.create_topic(&cluster.ids(), &t, CHANGE)?;
    let views = wait_settled(&cluster, &cluster.ids(), "catchup", 1, CONVERGE)?;
    let leader = views[0].topic("catchup")?.partitions[0].leader as u32;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(1);
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()?;
    let mut send = |from: usize, to: usize| -> Result<()> {
        for i in from..to {
            let payload = format!("catchup-p0-r{i}");
            let delivered = block_on(
                producer.send(
                    FutureRecord::<(), str>::to("catchup")
                        .partition(0)
                        .payload(&payload),
                    Duration::from_secs(30),
                ),
            );
            if let Err((e, _)) = delivered {
                bail!("record {i}: {e}");
            }
            sent.entry(0).or_default().push(payload);
        }
        Ok(())
    };
    send(0, 100)?;
    {
        let _paused = cluster.sigstop(follower)?;
        cluster.wait_views(
            "the follower out of the ISR",
            &[leader],
            CONVERGE,
            |views| {
                let p = &views[0].topic("catchup")?.partitions[0];
                ensure!(!p.isr.contains(&(follower as i32)), "ISR still {:?}", p.isr);
                Ok(())
            },
        )?;
        send(100, 200)?; // acks=all with two in-sync replicas
    } // SIGCONT
    cluster.wait_views(
        "the follower back in the ISR",
        &cluster.ids(),
        CONVERGE,
        |views| {
            for v in views {
                ensure_full_isr(v, "catchup")?;
            }
            Ok(())
        },
    )?;
    send(200, 250)?;
    // the third node goes away for good; the rejoined follower must now have it all
    let third = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .unwrap_or(1);
    cluster.kill9(third)?;
    cluster.wait_views("third node fenced", &[leader], CONVERGE, |views| {
        let p = &views[0].topic("catchup")?.partitions[0];
        ensure!(!p.isr.contains(&(third as i32)), "ISR still {:?}", p.isr);
        Ok(())
    })?;
    send(250, 260)?;
    cluster.kill9(leader)?;
    // one node of three: no quorum to move leadership, so restart the third and let the
    // controller elect the rejoined follower (the only live ISR member)
    cluster.start_node(third)?;
    cluster.wait_views(
        "the follower leads",
        &[follower, third],
        CONVERGE,
        |views| {
            for v in views {
                let p = &v.topic("catchup")?.partitions[0];
                ensure!(
                    p.leader == follower as i32,
                    "node {}: leader {}",
                    v.from,
                    p.leader
                );
            }
            Ok(())
        },
    )?;
    consume_exactly(&cluster, "catchup", &sent)
}

/// A node restarted while the other two are down serves nothing (its controller quorum
/// cannot unfence it, as a KRaft broker's cannot): the metadata it has may be stale, and
/// leading with it lost acknowledged writes. With the cluster back, the high watermark
/// (checkpointed every 5 s, per shard) is what was committed before, not its log start.
#[test]
fn a_lone_restarted_node_waits_for_its_quorum_then_keeps_its_high_watermark() -> Result<()> {
    let mut cluster = Cluster::start(3, FAST_SETTINGS)?;
    cluster.create_topic(&cluster.ids(), &topic("hwc", 1, 3), CHANGE)?;
    wait_settled(&cluster, &cluster.ids(), "hwc", 1, CONVERGE)?;
    let sent = produce_and_consume(&cluster, "hwc", 1, 50)?;
    ensure!(sent[&0].len() == 50);
    let views = cluster.wait_views("the leader", &[1], CONVERGE, |_| Ok(()))?;
    let leader = views[0].topic("hwc")?.partitions[0].leader as u32;
    // past one checkpoint interval
    std::thread::sleep(Duration::from_secs(7));
    for id in cluster.ids() {
        if id != leader {
            cluster.kill9(id)?;
        }
    }
    cluster.kill9(leader)?;
    // alone: it does not start serving (the script waits for its Metadata, in vain)
    ensure!(
        cluster.start_node(leader).is_err(),
        "a lone node of three served without its quorum"
    );
    let _ = cluster.kill9(leader);
    cluster.start_again()?;
    let consumer: rdkafka::consumer::BaseConsumer =
        Cluster::client_config(&cluster.bootstrap_of(&[leader]))
            .set("group.id", "sluice-hw-checkpoint")
            .create()?;
    let (_, high) = consumer.fetch_watermarks("hwc", 0, Duration::from_secs(30))?;
    ensure!(
        high == 50,
        "the restarted leader's high watermark is {high}, not the 50 committed before"
    );
    Ok(())
}
