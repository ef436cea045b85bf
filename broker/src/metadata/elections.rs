//! Partition-level decisions of the active controller besides ISR changes: leader
//! elections asked for by operators (ElectLeaders) or made by the controller itself
//! (preferred leaders back, `auto.leader.rebalance.enable`), and replica reassignments
//! (KIP-455: AlterPartitionReassignments).
//!
//! ```text
//!  reassign P from R to T:  replicas = T ++ (R - T), adding = T - R, removing = R - T
//!      new replicas fetch from the leader; the leader adds each to the ISR once caught up
//!  every T in the ISR ─► replicas = T, ISR ∩ T, adding/removing cleared; the leader, if
//!      it was removed, hands over to the first in-sync replica of T (epoch + 1)
//!  cancel ─► back to R (ISR ∩ R; a leader that was being added hands over)
//! ```
//! Each function applies its records to the (speculative) image as it goes, so a request
//! naming a partition twice sees its own first change; applying a partition record again
//! changes nothing.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use sluice_proto::metadata::MetadataRecord;

use super::controller::PartitionOutcome;
use super::image::{MetadataImage, PartitionState};

/// Which leader an election picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Election {
    /// The first replica, if it is alive and in sync.
    Preferred,
    /// Any live replica of a partition without a leader, in sync or not.
    Unclean,
}

/// One partition's new replica list (`None`: cancel its reassignment).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reassignment {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) replicas: Option<Vec<i32>>,
}

fn alive(image: &MetadataImage, node: i32) -> bool {
    image.broker(node).is_some_and(|b| !b.fenced)
}

fn outcome(
    topic: &str,
    partition: i32,
    error: Option<ResponseError>,
    message: String,
) -> PartitionOutcome {
    PartitionOutcome {
        topic: topic.to_string(),
        partition,
        error: error.map_or(0, |e| e.code()),
        message: error.map(|_| message),
    }
}

/// The state of `topic`/`partition` and the record that sets it to `next` (applied to
/// `image` at `index`).
fn commit(
    image: &mut MetadataImage,
    index: u64,
    topic: &str,
    partition: i32,
    next: &PartitionState,
    records: &mut Vec<MetadataRecord>,
) {
    let Some(id) = image.topic(topic).map(|t| t.id) else {
        return;
    };
    let record = next.to_record(&id, partition);
    image.apply(index, &record);
    records.push(record);
}

fn state_of<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<&'a PartitionState, (ResponseError, String)> {
    image.partition(topic, partition).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {topic}-{partition}"),
        )
    })
}

/// The new state of a partition after an election of `kind`, or why there is none
/// (Kafka's ElectLeaders errors).
fn elect_one(
    image: &MetadataImage,
    s: &PartitionState,
    kind: Election,
) -> Result<PartitionState, (ResponseError, String)> {
    let mut next = s.clone();
    match kind {
        Election::Preferred => {
            let Some(&preferred) = s.replicas.first() else {
                return Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    "the partition has no replicas".into(),
                ));
            };
            if s.leader == preferred {
                return Err((
                    ResponseError::ElectionNotNeeded,
                    format!("broker {preferred} already leads"),
                ));
            }
            if !s.isr.contains(&preferred) || !alive(image, preferred) {
                return Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    format!("preferred replica {preferred} is not alive and in sync"),
                ));
            }
            next.leader = preferred;
        }
        Election::Unclean => {
            if s.leader >= 0 {
                return Err((
                    ResponseError::ElectionNotNeeded,
                    format!("broker {} leads", s.leader),
                ));
            }
            let Some(live) = s.replicas.iter().copied().find(|r| alive(image, *r)) else {
                return Err((
                    ResponseError::EligibleLeadersNotAvailable,
                    "no replica is alive".into(),
                ));
            };
            next.leader = live;
            next.isr = vec![live];
        }
    }
    next.leader_epoch += 1;
    next.partition_epoch += 1;
    Ok(next)
}

/// ElectLeaders: every named partition, or with `None` every partition of every topic
/// (then those already led by the wanted replica are left out of the answer, as Kafka
/// does).
pub(crate) fn elect_leaders(
    image: &mut MetadataImage,
    index: u64,
    kind: Election,
    partitions: Option<Vec<(String, i32)>>,
) -> (Vec<MetadataRecord>, Vec<PartitionOutcome>) {
    let all = partitions.is_none();
    let named: Vec<(String, i32)> = match partitions {
        Some(p) => p,
        None => image
            .topics()
            .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
            .collect(),
    };
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    let mut seen = BTreeSet::new();
    for (topic, partition) in named {
        if !seen.insert((topic.clone(), partition)) {
            continue;
        }
        let result = state_of(image, &topic, partition).and_then(|s| elect_one(image, s, kind));
        match result {
            Ok(next) => {
                tracing::info!(%topic, partition, leader = next.leader, epoch = next.leader_epoch, ?kind, "leader elected");
                commit(image, index, &topic, partition, &next, &mut records);
                outcomes.push(outcome(&topic, partition, None, String::new()));
            }
            Err((ResponseError::ElectionNotNeeded, _)) if all => {}
            Err((e, m)) => outcomes.push(outcome(&topic, partition, Some(e), m)),
        }
    }
    (records, outcomes)
}

/// Preferred leaders back (`auto.leader.rebalance.enable`): every partition whose first
/// replica is alive and in sync but does not lead gets it as leader.
pub(crate) fn rebalance_leaders(image: &mut MetadataImage, index: u64) -> Vec<MetadataRecord> {
    let imbalanced: Vec<(String, i32)> = image
        .topics()
        .flat_map(|t| {
            t.parts
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.replicas
                        .first()
                        .is_some_and(|p| *p != s.leader && s.isr.contains(p))
                })
                .map(|(p, _)| (t.name.clone(), p as i32))
                .collect::<Vec<_>>()
        })
        .collect();
    if imbalanced.is_empty() {
        return Vec::new();
    }
    let (records, _) = elect_leaders(image, index, Election::Preferred, Some(imbalanced));
    if !records.is_empty() {
        tracing::info!(partitions = records.len(), "preferred leaders restored");
    }
    records
}

/// The reassignment's end once every target replica is in the ISR: only the target
/// replicas remain, and a leader that is not one of them hands over to the first in-sync
/// target replica that is alive. Unchanged otherwise.
pub(crate) fn complete_if_ready(image: &MetadataImage, s: &PartitionState) -> PartitionState {
    let target = s.target();
    if !s.reassigning() || target.is_empty() || !target.iter().all(|r| s.isr.contains(r)) {
        return s.clone();
    }
    let mut next = s.clone();
    next.isr = s
        .isr
        .iter()
        .copied()
        .filter(|r| target.contains(r))
        .collect();
    next.replicas = target;
    next.adding.clear();
    next.removing.clear();
    hand_over(image, &mut next);
    next.partition_epoch += 1;
    next
}

/// A leader that is no longer a replica hands over to the first replica (in replica
/// order, so the preferred one first) that is in the ISR and alive, or to none (-1); the
/// leader epoch moves on.
fn hand_over(image: &MetadataImage, next: &mut PartitionState) {
    if next.replicas.contains(&next.leader) {
        return;
    }
    next.leader = next
        .replicas
        .iter()
        .copied()
        .find(|r| next.isr.contains(r) && alive(image, *r))
        .unwrap_or(-1);
    next.leader_epoch += 1;
}

/// Validates a target replica list: not empty, no duplicates, registered brokers only.
fn check_target(image: &MetadataImage, target: &[i32]) -> Result<(), (ResponseError, String)> {
    let bad = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    if target.is_empty() {
        return bad("the replica list is empty".into());
    }
    let unique: BTreeSet<i32> = target.iter().copied().collect();
    if unique.len() != target.len() {
        return bad(format!("the replica list {target:?} repeats a broker"));
    }
    if let Some(r) = target.iter().find(|r| image.broker(**r).is_none()) {
        return bad(format!("broker {r} is not registered"));
    }
    Ok(())
}

/// The new state for one reassignment request on `s`.
fn reassign_one(
    image: &MetadataImage,
    s: &PartitionState,
    target: Option<Vec<i32>>,
) -> Result<PartitionState, (ResponseError, String)> {
    let original = s.original();
    let mut next = s.clone();
    match target {
        None => {
            if !s.reassigning() {
                return Err((
                    ResponseError::NoReassignmentInProgress,
                    "no reassignment is in progress".into(),
                ));
            }
            let isr: Vec<i32> = s
                .isr
                .iter()
                .copied()
                .filter(|r| original.contains(r))
                .collect();
            if isr.is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "cannot cancel: no original replica is in sync".into(),
                ));
            }
            next.replicas = original;
            next.isr = isr;
            next.adding.clear();
            next.removing.clear();
            hand_over(image, &mut next);
        }
        Some(target) => {
            check_target(image, &target)?;
            if target == s.replicas && !s.reassigning() {
                return Ok(next); // nothing to do
            }
            let removing: Vec<i32> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            next.adding = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            next.replicas = target.iter().chain(&removing).copied().collect();
            next.removing = removing;
            // replicas of an overridden reassignment that are not kept leave the ISR
            next.isr = s
                .isr
                .iter()
                .copied()
                .filter(|r| next.replicas.contains(r))
                .collect();
            if next.isr.is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "no replica in sync would remain".into(),
                ));
            }
            hand_over(image, &mut next);
        }
    }
    let mut next = complete_if_ready(image, &next);
    if next != *s {
        next.partition_epoch = s.partition_epoch + 1;
    }
    Ok(next)
}

/// AlterPartitionReassignments.
pub(crate) fn reassign(
    image: &mut MetadataImage,
    index: u64,
    requests: Vec<Reassignment>,
) -> (Vec<MetadataRecord>, Vec<PartitionOutcome>) {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for r in requests {
        let result = state_of(image, &r.topic, r.partition)
            .and_then(|s| reassign_one(image, s, r.replicas.clone()).map(|n| (s.clone(), n)));
        match result {
            Ok((before, next)) => {
                if next != before {
                    tracing::info!(topic = %r.topic, partition = r.partition, replicas = ?next.replicas, adding = ?next.adding, removing = ?next.removing, leader = next.leader, "reassignment");
                    commit(image, index, &r.topic, r.partition, &next, &mut records);
                }
                outcomes.push(outcome(&r.topic, r.partition, None, String::new()));
            }
            Err((e, m)) => outcomes.push(outcome(&r.topic, r.partition, Some(e), m)),
        }
    }
    (records, outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::metadata::{Record, RegisterBrokerRecord, TopicRecord, UnfenceBrokerRecord};

    fn image(brokers: &[i32], replicas: &[i32]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for b in brokers {
            img.apply(
                1,
                &MetadataRecord::new(Record::RegisterBroker(RegisterBrokerRecord {
                    node_id: *b,
                    incarnation_id: vec![*b as u8],
                    epoch: 1,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    fenced: true,
                    controller_addr: None,
                    endpoints: Vec::new(),
                })),
            );
            img.apply(
                2,
                &MetadataRecord::new(Record::UnfenceBroker(UnfenceBrokerRecord {
                    node_id: *b,
                    epoch: 1,
                })),
            );
        }
        img.apply(
            3,
            &MetadataRecord::new(Record::Topic(TopicRecord {
                name: "t".into(),
                topic_id: vec![1; 16],
            })),
        );
        let s = PartitionState {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            ..Default::default()
        };
        img.apply(3, &s.to_record(&[1; 16], 0));
        img
    }

    fn part(img: &MetadataImage) -> PartitionState {
        img.partition("t", 0).cloned().unwrap() // ok: test
    }

    fn isr_add(img: &mut MetadataImage, node: i32) {
        // what AlterPartition does: the new ISR, then completion
        let mut s = part(img);
        s.isr.push(node);
        s.partition_epoch += 1;
        let s = complete_if_ready(img, &s);
        img.apply(9, &s.to_record(&[1; 16], 0));
    }

    #[test]
    fn reassignment_adds_then_removes_and_moves_the_leader() {
        let mut img = image(&[1, 2, 3, 4], &[1, 2, 3]);
        let req = Reassignment {
            topic: "t".into(),
            partition: 0,
            replicas: Some(vec![4, 2, 3]),
        };
        let (recs, out) = reassign(&mut img, 5, vec![req]);
        assert_eq!(recs.len(), 1);
        assert_eq!(out[0].error, 0);
        let s = part(&img);
        assert_eq!(s.replicas, vec![4, 2, 3, 1]);
        assert_eq!(s.adding, vec![4]);
        assert_eq!(s.removing, vec![1]);
        assert_eq!(
            s.leader, 1,
            "the leader stays until the new replica is in sync"
        );
        assert_eq!(s.isr, vec![1, 2, 3]);
        assert_eq!(s.partition_epoch, 1);
        isr_add(&mut img, 4);
        let s = part(&img);
        assert_eq!(s.replicas, vec![4, 2, 3]);
        assert_eq!(s.isr, vec![2, 3, 4]);
        assert!(!s.reassigning());
        assert_eq!(s.leader, 4, "the first target replica leads");
        assert_eq!(s.leader_epoch, 1);
    }

    #[test]
    fn shrinking_completes_at_once_and_cancel_reverts() {
        let mut img = image(&[1, 2, 3, 4], &[1, 2, 3]);
        let shrink = Reassignment {
            topic: "t".into(),
            partition: 0,
            replicas: Some(vec![2, 3]),
        };
        reassign(&mut img, 5, vec![shrink]);
        let s = part(&img);
        assert_eq!(
            (s.replicas.clone(), s.isr.clone(), s.leader),
            (vec![2, 3], vec![2, 3], 2)
        );
        assert!(!s.reassigning());
        // start a move, then cancel it: back to where it was
        let grow = Reassignment {
            topic: "t".into(),
            partition: 0,
            replicas: Some(vec![4, 2]),
        };
        reassign(&mut img, 6, vec![grow]);
        assert!(part(&img).reassigning());
        let cancel = Reassignment {
            topic: "t".into(),
            partition: 0,
            replicas: None,
        };
        let (_, out) = reassign(&mut img, 7, vec![cancel.clone()]);
        assert_eq!(out[0].error, 0);
        let s = part(&img);
        assert_eq!(s.replicas, vec![2, 3]);
        assert!(!s.reassigning());
        let (_, out) = reassign(&mut img, 8, vec![cancel]);
        assert_eq!(out[0].error, ResponseError::NoReassignmentInProgress.code());
    }

    #[test]
    fn bad_targets_are_refused() {
        let mut img = image(&[1, 2, 3], &[1, 2, 3]);
        for (target, why) in [
            (vec![], "empty"),
            (vec![1, 1, 2], "repeated"),
            (vec![1, 2, 9], "unregistered"),
        ] {
            let req = Reassignment {
                topic: "t".into(),
                partition: 0,
                replicas: Some(target),
            };
            let (recs, out) = reassign(&mut img, 5, vec![req]);
            assert!(recs.is_empty(), "{why}");
            assert_eq!(
                out[0].error,
                ResponseError::InvalidReplicaAssignment.code(),
                "{why}"
            );
        }
        let req = Reassignment {
            topic: "nope".into(),
            partition: 0,
            replicas: Some(vec![1]),
        };
        let (_, out) = reassign(&mut img, 5, vec![req]);
        assert_eq!(out[0].error, ResponseError::UnknownTopicOrPartition.code());
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let mut img = image(&[1, 2, 3], &[1, 2, 3]);
        let one = Some(vec![("t".to_string(), 0)]);
        let (_, out) = elect_leaders(&mut img, 5, Election::Preferred, one.clone());
        assert_eq!(out[0].error, ResponseError::ElectionNotNeeded.code());
        // with every partition asked for, "not needed" is left out
        let (_, out) = elect_leaders(&mut img, 5, Election::Preferred, None);
        assert!(out.is_empty());
        // leadership moved away (as after a failover): the preferred replica gets it back
        let mut s = part(&img);
        s.leader = 2;
        s.leader_epoch = 4;
        img.apply(6, &s.to_record(&[1; 16], 0));
        let recs = rebalance_leaders(&mut img, 7);
        assert_eq!(recs.len(), 1);
        let s = part(&img);
        assert_eq!((s.leader, s.leader_epoch), (1, 5));
        // out of the ISR: not available
        let mut s = part(&img);
        s.leader = 3;
        s.isr = vec![2, 3];
        img.apply(8, &s.to_record(&[1; 16], 0));
        let (_, out) = elect_leaders(&mut img, 9, Election::Preferred, one.clone());
        assert_eq!(
            out[0].error,
            ResponseError::PreferredLeaderNotAvailable.code()
        );
        assert!(rebalance_leaders(&mut img, 9).is_empty());
        // unclean: only without a leader, and then any live replica alone in the ISR
        let (_, out) = elect_leaders(&mut img, 9, Election::Unclean, one.clone());
        assert_eq!(out[0].error, ResponseError::ElectionNotNeeded.code());
        let mut s = part(&img);
        s.leader = -1;
        s.isr = vec![3];
        img.apply(10, &s.to_record(&[1; 16], 0));
        let (recs, out) = elect_leaders(&mut img, 11, Election::Unclean, one);
        assert_eq!((recs.len(), out[0].error), (1, 0));
        let s = part(&img);
        assert_eq!((s.leader, s.isr.clone()), (1, vec![1]));
    }
}
