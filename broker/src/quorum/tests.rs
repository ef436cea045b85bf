//! The metadata state machine: a replay from the log and one from a snapshot agree.

use super::*;
use crate::metadata::controller::{BrokerHeartbeat, NewTopic, TopicRef};
use prost::Message as _;
use sluice_controller::StateMachine;
use sluice_proto::metadata::MetadataBatch;

/// Entries from a run of the controller: registrations, topics, deletes, fencing.
fn entries() -> Vec<(u64, Vec<u8>)> {
    let now = Instant::now();
    let mut image = MetadataImage::default();
    let mut logic = ControllerLogic::new(BrokerConfig::default(), &image, now);
    let mut out = Vec::new();
    let mut index = 1u64;
    let mut push = |records: Vec<MetadataRecord>, out: &mut Vec<(u64, Vec<u8>)>| {
        if !records.is_empty() {
            out.push((index, MetadataBatch { records }.encode_to_vec()));
            index += 1;
        }
    };
    for round in 0..3u64 {
        for id in 1..=3 {
            let hb = BrokerHeartbeat {
                node_id: id,
                incarnation: vec![id as u8, round as u8],
                host: "h".into(),
                port: id,
                rack: None,
                applied: 10_000,
                controller_addr: None,
                endpoints: Vec::new(),
            };
            for _ in 0..2 {
                let next = out.len() as u64 + 1;
                let (r, _) = logic.decide(&mut image, next, MetadataOp::Heartbeat(hb.clone()), now);
                push(r, &mut out);
            }
        }
        for t in 0..5 {
            let next = out.len() as u64 + 1;
            let op = MetadataOp::CreateTopics {
                topics: vec![NewTopic {
                    name: format!("t{round}-{t}"),
                    partitions: 1 + t,
                    replication_factor: 2,
                    configs: vec![("retention.ms".into(), "1000".into())],
                    assignments: Vec::new(),
                }],
                validate_only: false,
            };
            let (r, _) = logic.decide(&mut image, next, op, now);
            push(r, &mut out);
        }
        let next = out.len() as u64 + 1;
        let op = MetadataOp::DeleteTopics {
            topics: vec![TopicRef::Name(format!("t{round}-1"))],
        };
        let (r, _) = logic.decide(&mut image, next, op, now);
        push(r, &mut out);
        let next = out.len() as u64 + 1;
        let (r, _) = logic.decide(&mut image, next, MetadataOp::AllocateProducerId, now);
        push(r, &mut out);
    }
    out
}

#[test]
fn replay_from_log_and_from_snapshot_agree() {
    let entries = entries();
    assert!(entries.len() > 20);
    let mut full = MetadataSm::default();
    for (i, data) in &entries {
        full.apply(*i, data).unwrap(); // ok: test
    }
    let want = full.image.to_records();
    for cut in [1, entries.len() / 3, entries.len() / 2, entries.len() - 1] {
        let mut head = MetadataSm::default();
        for (i, data) in &entries[..cut] {
            head.apply(*i, data).unwrap(); // ok: test
        }
        let snap = head.snapshot().unwrap(); // ok: test
        let mut tail = MetadataSm::default();
        tail.restore(entries[cut - 1].0, &snap).unwrap(); // ok: test
        for (i, data) in &entries[cut..] {
            tail.apply(*i, data).unwrap(); // ok: test
        }
        assert_eq!(
            tail.image.to_records(),
            want,
            "snapshot after {cut} entries"
        );
    }
    // a shard fed a Reset of the snapshot reaches the same image, and the diff from
    // an older image names what changed
    let mut old = MetadataImage::default();
    for (i, data) in &entries[..5] {
        for r in decode_batch(*i, data) {
            old.apply(*i, &r);
        }
    }
    let changes = old.diff(&full.image);
    assert!(!changes.is_empty());
}

#[test]
fn undecodable_entry_is_skipped_alike() {
    let mut sm = MetadataSm::default();
    sm.apply(1, &[0xff, 0xff, 0xff]).unwrap(); // ok: test
    assert_eq!(sm.image.to_records().len(), 1); // only the producer-id record
}
