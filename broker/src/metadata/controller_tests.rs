//! The controller's decisions against an image: placement, fencing, elections, ISR
//! changes, manual assignments, `__consumer_offsets` creation.

use super::*;
use std::collections::BTreeMap;

/// A heartbeat of broker `id` (its incarnation fixed) that has applied index 1000.
fn heartbeat(id: i32) -> BrokerHeartbeat {
    BrokerHeartbeat {
        node_id: id,
        incarnation: vec![id as u8; 16],
        host: "127.0.0.1".into(),
        port: 9000 + id,
        rack: None,
        applied: 1000,
        controller_addr: None,
        endpoints: Vec::new(),
    }
}

/// Brokers 1-3 registered and unfenced at `start`, under 1 s sessions.
fn three_brokers_1s_sessions() -> (MetadataImage, ControllerLogic, Instant) {
    let mut config = BrokerConfig::default();
    config.set("broker.session.timeout.ms", "1000").unwrap(); // ok: test
    let start = Instant::now();
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(config, &image, start);
    brokers(&mut image, &mut logic, &[1, 2, 3], false);
    (image, logic, start)
}

fn brokers(image: &mut MetadataImage, logic: &mut ControllerLogic, ids: &[i32], rack: bool) {
    let now = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let hb = BrokerHeartbeat {
            node_id: *id,
            incarnation: vec![*id as u8; 16],
            host: "127.0.0.1".into(),
            port: 9000 + id,
            rack: rack.then(|| format!("r{}", i % 2)),
            applied: 0,
            controller_addr: None,
            endpoints: Vec::new(),
        };
        let (_, r) = logic.decide(image, 10 + i as u64, MetadataOp::Heartbeat(hb.clone()), now);
        assert!(matches!(
            r,
            MetadataOpResult::Heartbeat { fenced: true, .. }
        ));
        let hb = BrokerHeartbeat {
            applied: 1000,
            ..hb
        };
        let (_, r) = logic.decide(image, 20 + i as u64, MetadataOp::Heartbeat(hb), now);
        assert!(
            matches!(r, MetadataOpResult::Heartbeat { fenced: false, .. }),
            "{r:?}"
        );
    }
}

fn create(
    image: &mut MetadataImage,
    logic: &mut ControllerLogic,
    name: &str,
    parts: i32,
    rf: i16,
) -> MetadataOpResult {
    let op = MetadataOp::CreateTopics {
        topics: vec![NewTopic {
            name: name.into(),
            partitions: parts,
            replication_factor: rf,
            configs: Vec::new(),
            assignments: Vec::new(),
        }],
        validate_only: false,
    };
    logic.decide(image, 100, op, Instant::now()).1
}

#[test]
fn placement_spreads_leaders_and_respects_rf() {
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, Instant::now());
    brokers(&mut image, &mut logic, &[1, 2, 3], false);
    create(&mut image, &mut logic, "t", 6, 3);
    let t = image.topic("t").unwrap(); // ok: test
    let mut leads = BTreeMap::new();
    for p in &t.parts {
        let mut r = p.replicas.clone();
        r.sort();
        assert_eq!(r, vec![1, 2, 3], "replicas distinct: {:?}", p.replicas);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        *leads.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leads.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    match create(&mut image, &mut logic, "u", 1, 4) {
        MetadataOpResult::Topics(t) => {
            assert_eq!(t[0].error, ResponseError::InvalidReplicationFactor.code())
        }
        other => panic!("{other:?}"),
    }
    // rf 2 on 3 brokers, many partitions: every pair distinct
    create(&mut image, &mut logic, "v", 30, 2);
    for p in &image.topic("v").unwrap().parts {
        // ok: test
        assert_eq!(p.replicas.len(), 2);
        assert_ne!(p.replicas[0], p.replicas[1]);
    }
}

#[test]
fn manual_assignments_are_kept_or_refused() {
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, Instant::now());
    brokers(&mut image, &mut logic, &[1, 2, 3], false);
    let op = |name: &str, assignments: Vec<Vec<i32>>| MetadataOp::CreateTopics {
        topics: vec![NewTopic {
            name: name.into(),
            partitions: -1,
            replication_factor: -1,
            assignments,
            ..Default::default()
        }],
        validate_only: false,
    };
    let (_, r) = logic.decide(
        &mut image,
        50,
        op("m", vec![vec![3, 1], vec![2, 3]]),
        Instant::now(),
    );
    assert!(
        matches!(&r, MetadataOpResult::Topics(t) if t[0].error == 0 && t[0].partitions == 2 && t[0].replication_factor == 2),
        "{r:?}"
    );
    let parts = &image.topic("m").unwrap().parts; // ok: test
    assert_eq!(
        (parts[0].replicas.clone(), parts[0].leader),
        (vec![3, 1], 3)
    );
    assert_eq!(
        (parts[1].replicas.clone(), parts[1].leader),
        (vec![2, 3], 2)
    );
    for (bad, why) in [
        (vec![vec![1, 1]], "repeat"),
        (vec![vec![1, 9]], "unknown broker"),
        (vec![vec![1, 2], vec![3]], "uneven"),
        (vec![vec![]], "empty"),
    ] {
        let (recs, r) = logic.decide(&mut image, 51, op("bad", bad), Instant::now());
        assert!(recs.is_empty(), "{why}");
        assert!(
            matches!(&r, MetadataOpResult::Topics(t) if t[0].error == ResponseError::InvalidReplicaAssignment.code()),
            "{why}: {r:?}"
        );
    }
    // new partitions: as many lists as partitions added, of the topic's rf
    let more = |assignments: Vec<Vec<i32>>| MetadataOp::CreatePartitions {
        topics: vec![NewPartitions {
            topic: "m".into(),
            count: 3,
            assignments,
        }],
        validate_only: false,
    };
    let (_, r) = logic.decide(
        &mut image,
        52,
        more(vec![vec![1, 2], vec![2, 3]]),
        Instant::now(),
    );
    assert!(
        matches!(&r, MetadataOpResult::Topics(t) if t[0].error == ResponseError::InvalidReplicaAssignment.code()),
        "{r:?}"
    );
    let (_, r) = logic.decide(&mut image, 53, more(vec![vec![1]]), Instant::now());
    assert!(
        matches!(&r, MetadataOpResult::Topics(t) if t[0].error == ResponseError::InvalidReplicaAssignment.code()),
        "{r:?}"
    );
    let (_, r) = logic.decide(&mut image, 54, more(vec![vec![2, 1]]), Instant::now());
    assert!(
        matches!(&r, MetadataOpResult::Topics(t) if t[0].error == 0),
        "{r:?}"
    );
    assert_eq!(image.topic("m").unwrap().parts[2].replicas, vec![2, 1]); // ok: test
}

#[test]
fn racks_alternate_in_replica_lists() {
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, Instant::now());
    brokers(&mut image, &mut logic, &[1, 2, 3, 4], true); // racks r0: 1,3  r1: 2,4
    create(&mut image, &mut logic, "t", 8, 2);
    let rack = |n: i32| image.broker(n).and_then(|b| b.rack.clone());
    for p in &image.topic("t").unwrap().parts {
        // ok: test
        assert_ne!(rack(p.replicas[0]), rack(p.replicas[1]), "{:?}", p.replicas);
    }
}

#[test]
fn expired_session_fences_and_moves_leaders_then_unfence_restores() {
    let (mut image, mut logic, start) = three_brokers_1s_sessions();
    create(&mut image, &mut logic, "t", 3, 2);
    let before = image.topic("t").unwrap().parts.clone(); // ok: test
                                                          // 1 and 2 heartbeat, 3 goes silent
    let later = start + Duration::from_millis(1500);
    for id in [1, 2] {
        let hb = heartbeat(id);
        logic.decide(&mut image, 200, MetadataOp::Heartbeat(hb), later);
    }
    let recs = logic.tick(&mut image, 201, later, 3);
    assert!(!recs.is_empty());
    assert!(image.broker(3).unwrap().fenced); // ok: test
    for (p, old) in image.topic("t").unwrap().parts.iter().zip(&before) {
        // ok: test
        assert_ne!(p.leader, 3);
        assert!(!p.isr.contains(&3) || p.isr == vec![3]);
        if old.leader == 3 {
            assert_eq!(p.leader_epoch, old.leader_epoch + 1);
            assert!(p.leader == -1 || old.isr.contains(&p.leader));
        }
    }
    // 3 comes back with a new incarnation: registered fenced, then unfenced
    let hb = BrokerHeartbeat {
        node_id: 3,
        incarnation: vec![33; 16],
        host: "127.0.0.1".into(),
        port: 9003,
        rack: None,
        applied: 0,
        controller_addr: None,
        endpoints: Vec::new(),
    };
    let (_, r) = logic.decide(&mut image, 300, MetadataOp::Heartbeat(hb.clone()), later);
    assert_eq!(r_fenced(&r), Some((300, true)));
    let (_, r) = logic.decide(
        &mut image,
        301,
        MetadataOp::Heartbeat(BrokerHeartbeat {
            applied: 299,
            ..hb.clone()
        }),
        later,
    );
    assert_eq!(r_fenced(&r), Some((300, true)), "not caught up yet");
    let (_, r) = logic.decide(
        &mut image,
        302,
        MetadataOp::Heartbeat(BrokerHeartbeat { applied: 300, ..hb }),
        later,
    );
    assert_eq!(r_fenced(&r), Some((300, false)));
    for p in &image.topic("t").unwrap().parts {
        // ok: test
        assert_ne!(p.leader, -1);
    }
    // it rejoins an ISR when that partition's leader says it caught up
    let t = image.topic("t").unwrap().clone(); // ok: test
    let (i, p) = t
        .parts
        .iter()
        .enumerate()
        .find(|(_, p)| p.replicas.contains(&3) && !p.isr.contains(&3))
        .unwrap(); // ok: test
    let mut isr = p.isr.clone();
    isr.push(3);
    let change = IsrChange {
        topic: "t".into(),
        partition: i as i32,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: isr.clone(),
    };
    let stale = IsrChange {
        partition_epoch: p.partition_epoch - 1,
        ..change.clone()
    };
    let (recs, r) = logic.decide(&mut image, 303, MetadataOp::AlterPartition(stale), later);
    assert!(recs.is_empty() && matches!(r, MetadataOpResult::Failed(..)));
    let (recs, _) = logic.decide(&mut image, 304, MetadataOp::AlterPartition(change), later);
    assert_eq!(recs.len(), 1);
    assert_eq!(image.topic("t").unwrap().parts[i].isr, isr); // ok: test
}

fn r_fenced(r: &MetadataOpResult) -> Option<(i64, bool)> {
    match r {
        MetadataOpResult::Heartbeat { epoch, fenced } => Some((*epoch, *fenced)),
        _ => None,
    }
}

#[test]
fn unclean_election_only_where_allowed() {
    let mut config = BrokerConfig::default();
    config.set("broker.session.timeout.ms", "1000").unwrap(); // ok: test
    let start = Instant::now();
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(config, &image, start);
    brokers(&mut image, &mut logic, &[1, 2], false);
    let r = create(&mut image, &mut logic, "dirty", 1, 2);
    assert!(
        matches!(&r, MetadataOpResult::Topics(t) if t[0].error == 0),
        "{r:?}"
    );
    let leader_of = |image: &MetadataImage, n: &str| image.topic(n).unwrap().parts[0].leader; // ok: test
    let dead = leader_of(&image, "dirty");
    // a clean topic led by the same broker (placement rotates its start)
    let mut clean = String::new();
    for i in 0..4 {
        let name = format!("clean{i}");
        let r = create(&mut image, &mut logic, &name, 1, 2);
        assert!(
            matches!(&r, MetadataOpResult::Topics(t) if t[0].error == 0),
            "{r:?}"
        );
        if leader_of(&image, &name) == dead {
            clean = name;
            break;
        }
    }
    assert!(!clean.is_empty());
    let op = MetadataOp::AlterConfigs {
        changes: vec![ConfigChange {
            topic: "dirty".into(),
            set: vec![("unclean.leader.election.enable".into(), Some("true".into()))],
            replace_all: false,
        }],
        validate_only: false,
    };
    logic.decide(&mut image, 50, op, start);
    // both ISRs shrink to the leader, then the leader dies
    for name in [clean.as_str(), "dirty"] {
        let p = image.topic(name).unwrap().parts[0].clone(); // ok: test
        let change = IsrChange {
            topic: name.into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![p.leader],
        };
        logic.decide(&mut image, 60, MetadataOp::AlterPartition(change), start);
    }
    let later = start + Duration::from_millis(1500);
    let live = if dead == 1 { 2 } else { 1 };
    let hb = heartbeat(live);
    logic.decide(&mut image, 70, MetadataOp::Heartbeat(hb), later);
    logic.tick(&mut image, 71, later, 2);
    assert_eq!(
        leader_of(&image, &clean),
        -1,
        "no unclean election by default"
    );
    assert_eq!(leader_of(&image, "dirty"), live);
    assert_eq!(image.topic("dirty").unwrap().parts[0].isr, vec![live]); // ok: test
}

#[test]
fn offsets_topic_waits_for_enough_brokers() {
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, Instant::now());
    brokers(&mut image, &mut logic, &[1], false);
    assert!(logic.tick(&mut image, 50, Instant::now(), 3).is_empty());
    assert!(image.topic(OFFSETS_TOPIC).is_none());
    brokers(&mut image, &mut logic, &[2, 3], false);
    assert!(!logic.tick(&mut image, 51, Instant::now(), 3).is_empty());
    let t = image.topic(OFFSETS_TOPIC).unwrap(); // ok: test
    assert_eq!(t.parts[0].replicas.len(), 3);
}

#[test]
fn a_controller_that_did_not_run_credits_sessions_instead_of_fencing_everyone() {
    let (mut image, mut logic, start) = three_brokers_1s_sessions();
    let fenced = |image: &MetadataImage| {
        [1, 2, 3]
            .into_iter()
            .filter(|id| image.broker(*id).is_some_and(|b| b.fenced))
            .collect::<Vec<i32>>()
    };
    assert!(logic.tick(&mut image, 100, start, 3).is_empty() || fenced(&image).is_empty());
    // the controller was stopped for 5 s (a session is 1 s): nobody is fenced at once
    let resumed = start + Duration::from_secs(5);
    logic.tick(&mut image, 101, resumed, 3);
    assert_eq!(fenced(&image), Vec::<i32>::new());
    // the controller runs again, ticks closer together than half a session; brokers 1
    // and 2 heartbeat, 3 stays silent: its session (credited the gap beyond half a
    // session, so half a session is left) ends 500 ms after the resume
    let ms = |m: u64| resumed + Duration::from_millis(m);
    for id in [1, 2] {
        logic.decide(
            &mut image,
            102,
            MetadataOp::Heartbeat(heartbeat(id)),
            ms(100),
        );
    }
    for (i, m) in [100u64, 200, 300, 400].into_iter().enumerate() {
        logic.tick(&mut image, 103 + i as u64, ms(m), 3);
    }
    assert_eq!(
        fenced(&image),
        Vec::<i32>::new(),
        "a session is not over yet"
    );
    logic.tick(&mut image, 110, ms(600), 3);
    assert_eq!(fenced(&image), vec![3]);

    // when every tick comes late, a silent broker still ages half a session per tick
    let (mut image, mut logic, start) = three_brokers_1s_sessions();
    logic.tick(&mut image, 200, start, 3);
    for k in 1..=4u64 {
        logic.tick(&mut image, 200 + k, start + Duration::from_secs(2 * k), 3);
    }
    assert_eq!(fenced(&image), vec![1, 2, 3]);
}

#[test]
fn a_topic_created_again_starts_above_the_leader_epochs_of_the_removed_one() {
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, Instant::now());
    brokers(&mut image, &mut logic, &[1, 2, 3], false);
    let epochs = |image: &MetadataImage, name: &str| -> Vec<i32> {
        let t = image.topic(name).unwrap(); // ok: test
        t.parts.iter().map(|p| p.leader_epoch).collect()
    };
    create(&mut image, &mut logic, "t", 2, 3);
    assert_eq!(epochs(&image, "t"), vec![0, 0]);
    // partition 1 has seen four elections
    let t = image.topic("t").unwrap().clone(); // ok: test
    let mut moved = t.parts[1].clone();
    moved.leader_epoch = 4;
    image.apply(1, &moved.to_record(&t.id, 1));
    let delete = MetadataOp::DeleteTopics {
        topics: vec![TopicRef::Name("t".into())],
    };
    logic.decide(&mut image, 101, delete, Instant::now());
    assert!(image.topic("t").is_none());
    assert_eq!(image.next_leader_epoch, 5);

    // the new "t" (and any new partition) starts above every epoch the old "t" reached,
    // so a broker still holding the old log at epoch 4 fences fetches of the new one
    create(&mut image, &mut logic, "t", 1, 3);
    assert_eq!(epochs(&image, "t"), vec![5]);
    let grow = MetadataOp::CreatePartitions {
        topics: vec![NewPartitions {
            topic: "t".into(),
            count: 2,
            assignments: Vec::new(),
        }],
        validate_only: false,
    };
    logic.decide(&mut image, 102, grow, Instant::now());
    assert_eq!(epochs(&image, "t"), vec![5, 5]);

    // a snapshot carries the floor; a removal never lowers it
    let mut copy = MetadataImage::default();
    for r in image.to_records() {
        copy.apply(7, &r);
    }
    assert_eq!(copy.next_leader_epoch, 5);
    create(&mut copy, &mut logic, "u", 1, 3);
    let delete_u = MetadataOp::DeleteTopics {
        topics: vec![TopicRef::Name("u".into())],
    };
    logic.decide(&mut copy, 103, delete_u, Instant::now());
    assert_eq!(copy.next_leader_epoch, 6);
}
