//! The metadata image: registered brokers, topics with their partitions (replicas, ISR,
//! leader, epochs) and topic configs, derived by applying metadata records in log order.
//! The controller thread keeps one (the raft state machine); each shard owns its own copy
//! (never shared), fed the same committed records.

use std::collections::BTreeMap;

use crate::fast_map::FastMap;

use sluice_proto::metadata::{
    AccessControlEntryRecord, MetadataRecord, PartitionRecord, Record, TopicRecord,
    UserScramCredentialRecord,
};

/// A topic id: 16 random bytes, as Kafka's topic UUIDs.
pub(crate) type TopicId = [u8; 16];

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PartitionState {
    pub(crate) replicas: Vec<i32>,
    pub(crate) isr: Vec<i32>,
    /// -1 when no in-sync replica is alive.
    pub(crate) leader: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) partition_epoch: i32,
    /// A reassignment in progress (KIP-455): replicas joining (already in `replicas`) and
    /// replicas leaving once every target replica is in the ISR. Empty otherwise.
    pub(crate) adding: Vec<i32>,
    pub(crate) removing: Vec<i32>,
}

impl PartitionState {
    fn from_record(p: &PartitionRecord) -> Self {
        Self {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
        }
    }

    /// The replicas the partition will have once its reassignment completes (all of them
    /// when none is in progress).
    pub(crate) fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    /// The replicas before the reassignment in progress began (all when none is).
    pub(crate) fn original(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding.contains(r))
            .collect()
    }

    pub(crate) fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    pub(crate) fn to_record(&self, id: &TopicId, partition: i32) -> MetadataRecord {
        MetadataRecord::new(Record::Partition(PartitionRecord {
            topic_id: id.to_vec(),
            partition_id: partition,
            replicas: self.replicas.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            isr: self.isr.clone(),
            partition_epoch: self.partition_epoch,
            adding_replicas: self.adding.clone(),
            removing_replicas: self.removing.clone(),
        }))
    }
}

/// One topic as the image knows it.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub(crate) name: String,
    pub(crate) id: TopicId,
    /// Number of partitions (`parts.len()`).
    pub(crate) partitions: i32,
    pub(crate) parts: Vec<PartitionState>,
    /// Topic-level overrides only; defaults come from the broker config.
    pub(crate) configs: BTreeMap<String, String>,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerInfo {
    pub(crate) node_id: i32,
    pub(crate) incarnation: Vec<u8>,
    /// The metadata-log index of its registration.
    pub(crate) epoch: i64,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) rack: Option<String>,
    pub(crate) fenced: bool,
    /// A broker-only node's controller listener (it follows the quorum as a learner).
    pub(crate) controller_addr: Option<String>,
    /// Its listeners' advertised endpoints; empty for a registration written before named
    /// listeners (then `host`/`port` serve every listener).
    pub(crate) endpoints: Vec<sluice_proto::metadata::BrokerEndpoint>,
}

impl BrokerInfo {
    /// Where a client connected on `listener` reaches this broker: that listener's
    /// endpoint, or None when the broker has no listener of that name (Kafka leaves such a
    /// broker out of the answer).
    pub(crate) fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// What applying a record changed, for the shard to act on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    PartitionAdded {
        topic: String,
        id: TopicId,
        partition: i32,
    },
    /// Replicas, ISR or leader of an existing partition changed.
    PartitionChanged {
        topic: String,
        id: TopicId,
        partition: i32,
    },
    TopicRemoved {
        topic: String,
        id: TopicId,
        partitions: i32,
    },
    ConfigChanged {
        topic: String,
    },
    /// An ACL was created or deleted: the shard's authorizer is rebuilt.
    AclsChanged,
}

/// Owned by one thread; never shared (changes arrive as records).
#[derive(Debug, Default, Clone)]
pub(crate) struct MetadataImage {
    topics: FastMap<String, TopicInfo>,
    names_by_id: FastMap<TopicId, String>,
    brokers: BTreeMap<i32, BrokerInfo>,
    pub(crate) next_producer_id: i64,
    /// The leader epoch new partitions start at: above every epoch a removed topic's
    /// partitions reached (`LeaderEpochFloorRecord`).
    pub(crate) next_leader_epoch: i32,
    /// SCRAM credentials by (user, mechanism type).
    scram: BTreeMap<(String, i32), UserScramCredentialRecord>,
    /// ACLs by id.
    acls: BTreeMap<Vec<u8>, AccessControlEntryRecord>,
}

pub(crate) fn topic_id_of(bytes: &[u8]) -> Option<TopicId> {
    bytes.try_into().ok()
}

impl MetadataImage {
    pub(crate) fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }
    /// `topic` in a run of lookups: `last` keeps the previous name and its answer, so a
    /// run of one topic's partitions (a fetch of 10,000 partitions) hashes the name once.
    pub(crate) fn topic_in_run<'a>(
        &'a self,
        last: &mut Option<(String, Option<&'a TopicInfo>)>,
        name: &str,
    ) -> Option<&'a TopicInfo> {
        match last {
            Some((n, t)) if n == name => *t,
            _ => {
                let t = self.topics.get(name);
                *last = Some((name.to_string(), t));
                t
            }
        }
    }
    pub(crate) fn topic_by_id(&self, id: &TopicId) -> Option<&TopicInfo> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }
    /// Another topic whose name differs from `name` only by `.` against `_`: Kafka refuses
    /// to create such a pair (their metric names would be the same).
    pub(crate) fn colliding_topic(&self, name: &str) -> Option<&str> {
        if !name.contains(['.', '_']) {
            return None;
        }
        let same = |a: u8, b: u8| a == b || (matches!(a, b'.' | b'_') && matches!(b, b'.' | b'_'));
        self.topics
            .keys()
            .find(|t| {
                t.len() == name.len()
                    && t.as_str() != name
                    && t.bytes().zip(name.bytes()).all(|(a, b)| same(a, b))
            })
            .map(String::as_str)
    }

    pub(crate) fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics
            .get(topic)?
            .parts
            .get(usize::try_from(partition).ok()?)
    }
    pub(crate) fn broker(&self, node: i32) -> Option<&BrokerInfo> {
        self.brokers.get(&node)
    }
    /// Every registered broker, fenced or not, by node id.
    pub(crate) fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }
    /// A user's SCRAM credential for a mechanism (Kafka's type code: 1 SHA-256, 2 SHA-512).
    pub(crate) fn scram(&self, user: &str, mechanism: i32) -> Option<&UserScramCredentialRecord> {
        self.scram.get(&(user.to_string(), mechanism))
    }
    /// Every SCRAM credential, by user then mechanism.
    pub(crate) fn scram_credentials(&self) -> impl Iterator<Item = &UserScramCredentialRecord> {
        self.scram.values()
    }
    /// Every ACL, by id.
    pub(crate) fn acls(&self) -> impl Iterator<Item = &AccessControlEntryRecord> {
        self.acls.values()
    }
    /// Registered brokers that are not fenced, by node id.
    pub(crate) fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Applies one record of the metadata-log entry at `index`; unknown references are
    /// ignored (the log is the truth).
    pub(crate) fn apply(&mut self, index: u64, record: &MetadataRecord) -> Vec<Change> {
        let Some(r) = &record.record else {
            return Vec::new();
        };
        match r {
            Record::Topic(TopicRecord { name, topic_id }) => {
                if let Some(id) = topic_id_of(topic_id) {
                    self.names_by_id.insert(id, name.clone());
                    self.topics.insert(
                        name.clone(),
                        TopicInfo {
                            name: name.clone(),
                            id,
                            partitions: 0,
                            parts: Vec::new(),
                            configs: BTreeMap::new(),
                        },
                    );
                }
                Vec::new()
            }
            Record::Partition(p) => {
                let Some(id) = topic_id_of(&p.topic_id) else {
                    return Vec::new();
                };
                let Some(name) = self.names_by_id.get(&id).cloned() else {
                    return Vec::new();
                };
                let Some(t) = self.topics.get_mut(&name) else {
                    return Vec::new();
                };
                let state = PartitionState::from_record(p);
                let Ok(i) = usize::try_from(p.partition_id) else {
                    return Vec::new();
                };
                if let Some(old) = t.parts.get_mut(i) {
                    if *old == state {
                        return Vec::new();
                    }
                    *old = state;
                    return vec![Change::PartitionChanged {
                        topic: name,
                        id,
                        partition: p.partition_id,
                    }];
                }
                if i != t.parts.len() {
                    return Vec::new(); // partitions are added in order
                }
                t.parts.push(state);
                t.partitions = p.partition_id + 1;
                vec![Change::PartitionAdded {
                    topic: name,
                    id,
                    partition: p.partition_id,
                }]
            }
            Record::Config(c) => {
                let Some(t) = self.topics.get_mut(&c.resource_name) else {
                    return Vec::new();
                };
                match &c.value {
                    Some(v) => t.configs.insert(c.name.clone(), v.clone()),
                    None => t.configs.remove(&c.name),
                };
                vec![Change::ConfigChanged {
                    topic: c.resource_name.clone(),
                }]
            }
            Record::RemoveTopic(r) => {
                let Some(id) = topic_id_of(&r.topic_id) else {
                    return Vec::new();
                };
                let Some(name) = self.names_by_id.remove(&id) else {
                    return Vec::new();
                };
                match self.topics.remove(&name) {
                    Some(t) => {
                        let reached = t.parts.iter().map(|p| p.leader_epoch).max();
                        if let Some(e) = reached {
                            self.next_leader_epoch =
                                self.next_leader_epoch.max(e.saturating_add(1));
                        }
                        vec![Change::TopicRemoved {
                            topic: name,
                            id,
                            partitions: t.partitions,
                        }]
                    }
                    None => Vec::new(),
                }
            }
            Record::LeaderEpochFloor(f) => {
                self.next_leader_epoch = self.next_leader_epoch.max(f.next_leader_epoch);
                Vec::new()
            }
            Record::ProducerIds(p) => {
                self.next_producer_id = self.next_producer_id.max(p.next_producer_id);
                Vec::new()
            }
            Record::RegisterBroker(b) => {
                let epoch = if b.epoch > 0 {
                    b.epoch
                } else {
                    i64::try_from(index).unwrap_or(i64::MAX)
                };
                self.brokers.insert(
                    b.node_id,
                    BrokerInfo {
                        node_id: b.node_id,
                        incarnation: b.incarnation_id.clone(),
                        epoch,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                        fenced: b.fenced,
                        controller_addr: b.controller_addr.clone(),
                        endpoints: b.endpoints.clone(),
                    },
                );
                Vec::new()
            }
            Record::FenceBroker(f) => {
                if let Some(b) = self.brokers.get_mut(&f.node_id) {
                    if b.epoch == f.epoch {
                        b.fenced = true;
                    }
                }
                Vec::new()
            }
            Record::UserScramCredential(c) => {
                self.scram.insert((c.name.clone(), c.mechanism), c.clone());
                Vec::new()
            }
            Record::RemoveUserScramCredential(c) => {
                self.scram.remove(&(c.name.clone(), c.mechanism));
                Vec::new()
            }
            Record::AccessControlEntry(a) => {
                self.acls.insert(a.id.clone(), a.clone());
                vec![Change::AclsChanged]
            }
            Record::RemoveAccessControlEntry(a) => match self.acls.remove(&a.id) {
                Some(_) => vec![Change::AclsChanged],
                None => Vec::new(),
            },
            Record::UnfenceBroker(f) => {
                if let Some(b) = self.brokers.get_mut(&f.node_id) {
                    if b.epoch == f.epoch {
                        b.fenced = false;
                    }
                }
                Vec::new()
            }
        }
    }

    /// Records that rebuild this image from nothing (a snapshot).
    pub(crate) fn to_records(&self) -> Vec<MetadataRecord> {
        use sluice_proto::metadata::{
            ConfigRecord, LeaderEpochFloorRecord, ProducerIdsRecord, RegisterBrokerRecord,
        };
        let mut out = Vec::new();
        for b in self.brokers.values() {
            out.push(MetadataRecord::new(Record::RegisterBroker(
                RegisterBrokerRecord {
                    node_id: b.node_id,
                    incarnation_id: b.incarnation.clone(),
                    epoch: b.epoch,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    controller_addr: b.controller_addr.clone(),
                    endpoints: b.endpoints.clone(),
                },
            )));
        }
        let mut topics: Vec<_> = self.topics.values().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in topics {
            out.push(MetadataRecord::new(Record::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id: t.id.to_vec(),
            })));
            for (p, state) in t.parts.iter().enumerate() {
                out.push(state.to_record(&t.id, p as i32));
            }
            for (k, v) in &t.configs {
                out.push(MetadataRecord::new(Record::Config(ConfigRecord {
                    resource_type: 2,
                    resource_name: t.name.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                })));
            }
        }
        out.push(MetadataRecord::new(Record::ProducerIds(
            ProducerIdsRecord {
                next_producer_id: self.next_producer_id,
            },
        )));
        if self.next_leader_epoch > 0 {
            out.push(MetadataRecord::new(Record::LeaderEpochFloor(
                LeaderEpochFloorRecord {
                    next_leader_epoch: self.next_leader_epoch,
                },
            )));
        }
        for c in self.scram.values() {
            out.push(MetadataRecord::new(Record::UserScramCredential(c.clone())));
        }
        for a in self.acls.values() {
            out.push(MetadataRecord::new(Record::AccessControlEntry(a.clone())));
        }
        out
    }

    /// What a shard must do to go from `self` to `new` (a snapshot replaced the image):
    /// topics gone (or recreated under another id), partitions added or changed, configs.
    pub(crate) fn diff(&self, new: &MetadataImage) -> Vec<Change> {
        let mut out = Vec::new();
        for t in self.topics.values() {
            if new.topic_by_id(&t.id).is_none() {
                out.push(Change::TopicRemoved {
                    topic: t.name.clone(),
                    id: t.id,
                    partitions: t.partitions,
                });
            }
        }
        for t in new.topics.values() {
            let old = self.topic_by_id(&t.id);
            for (p, state) in t.parts.iter().enumerate() {
                let (topic, id, partition) = (t.name.clone(), t.id, p as i32);
                match old.and_then(|o| o.parts.get(p)) {
                    None => out.push(Change::PartitionAdded {
                        topic,
                        id,
                        partition,
                    }),
                    Some(o) if o != state => out.push(Change::PartitionChanged {
                        topic,
                        id,
                        partition,
                    }),
                    Some(_) => {}
                }
            }
            if old.is_none_or(|o| o.configs != t.configs) {
                out.push(Change::ConfigChanged {
                    topic: t.name.clone(),
                });
            }
        }
        if self.acls != new.acls {
            out.push(Change::AclsChanged);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::metadata::{ConfigRecord, PartitionRecord, RemoveTopicRecord};

    fn topic(name: &str, id: u8, parts: i32) -> Vec<MetadataRecord> {
        let mut v = vec![MetadataRecord::new(Record::Topic(TopicRecord {
            name: name.into(),
            topic_id: vec![id; 16],
        }))];
        for p in 0..parts {
            v.push(MetadataRecord::new(Record::Partition(PartitionRecord {
                topic_id: vec![id; 16],
                partition_id: p,
                ..Default::default()
            })));
        }
        v
    }

    #[test]
    fn apply_and_snapshot_roundtrip() {
        let mut img = MetadataImage::default();
        let mut changes = Vec::new();
        for r in topic("a", 1, 3).iter().chain(topic("b", 2, 1).iter()) {
            changes.extend(img.apply(1, r));
        }
        assert_eq!(changes.len(), 4);
        img.apply(
            2,
            &MetadataRecord::new(Record::Config(ConfigRecord {
                resource_type: 2,
                resource_name: "a".into(),
                name: "retention.ms".into(),
                value: Some("5".into()),
            })),
        );
        let removed = img.apply(
            2,
            &MetadataRecord::new(Record::RemoveTopic(RemoveTopicRecord {
                topic_id: vec![2; 16],
            })),
        );
        assert!(matches!(
            &removed[..],
            [Change::TopicRemoved { partitions: 1, .. }]
        ));
        assert!(img.topic("b").is_none());
        let mut copy = MetadataImage::default();
        for r in img.to_records() {
            copy.apply(9, &r);
        }
        let a = copy.topic("a").unwrap(); // ok: test
        assert_eq!(a.partitions, 3);
        assert_eq!(a.configs.get("retention.ms").map(String::as_str), Some("5"));
        assert_eq!(copy.topic_by_id(&[1; 16]).unwrap().name, "a"); // ok: test
    }
}
