//! Metadata records: the ordered log from which topics, partitions and configs are derived,
//! as in Kafka's KRaft. They are Sluice's own `prost` messages (derive only, no `.proto`
//! files). Each record is stored as the value of one record in an uncompressed v2 batch of
//! the metadata log; replaying the log in order rebuilds the same state.

use prost::Message;

/// One metadata change.
#[derive(Clone, PartialEq, Message)]
pub struct MetadataRecord {
    #[prost(oneof = "Record", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub record: Option<Record>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Record {
    #[prost(message, tag = "1")]
    Topic(TopicRecord),
    #[prost(message, tag = "2")]
    Partition(PartitionRecord),
    #[prost(message, tag = "3")]
    Config(ConfigRecord),
    #[prost(message, tag = "4")]
    RemoveTopic(RemoveTopicRecord),
    #[prost(message, tag = "5")]
    ProducerIds(ProducerIdsRecord),
    #[prost(message, tag = "6")]
    RegisterBroker(RegisterBrokerRecord),
    #[prost(message, tag = "7")]
    FenceBroker(FenceBrokerRecord),
    #[prost(message, tag = "8")]
    UnfenceBroker(UnfenceBrokerRecord),
    #[prost(message, tag = "9")]
    UserScramCredential(UserScramCredentialRecord),
    #[prost(message, tag = "10")]
    RemoveUserScramCredential(RemoveUserScramCredentialRecord),
    #[prost(message, tag = "11")]
    AccessControlEntry(AccessControlEntryRecord),
    #[prost(message, tag = "12")]
    RemoveAccessControlEntry(RemoveAccessControlEntryRecord),
    #[prost(message, tag = "13")]
    LeaderEpochFloor(LeaderEpochFloorRecord),
}

/// The records of one metadata-log entry (one raft entry, applied atomically), and the
/// form of a snapshot of the whole image.
#[derive(Clone, PartialEq, Message)]
pub struct MetadataBatch {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<MetadataRecord>,
}

/// A topic came into existence.
#[derive(Clone, PartialEq, Message)]
pub struct TopicRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 16-byte topic id (a random UUID).
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
}

/// A partition of a topic exists (first record for it) or its state changed (later
/// records replace replicas, ISR, leader and epochs whole, as Kafka's PartitionChangeRecord).
/// A log written before clusters existed has empty `replicas`: the image reads that as
/// "this node, leader, epoch 0".
#[derive(Clone, PartialEq, Message)]
pub struct PartitionRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub topic_id: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub partition_id: i32,
    #[prost(int32, repeated, tag = "3")]
    pub replicas: Vec<i32>,
    /// The leader's node id, or -1 when no in-sync replica is alive.
    #[prost(int32, tag = "4")]
    pub leader: i32,
    #[prost(int32, tag = "5")]
    pub leader_epoch: i32,
    #[prost(int32, repeated, tag = "6")]
    pub isr: Vec<i32>,
    /// Bumped on every change of replicas, ISR or leader.
    #[prost(int32, tag = "7")]
    pub partition_epoch: i32,
    /// During a reassignment (KIP-455): replicas being added (in `replicas`, not yet all
    /// in the ISR) and replicas to remove once they are; both empty otherwise.
    #[prost(int32, repeated, tag = "8")]
    pub adding_replicas: Vec<i32>,
    #[prost(int32, repeated, tag = "9")]
    pub removing_replicas: Vec<i32>,
}

/// A broker registered (or registered again after a restart: a new incarnation). It
/// starts fenced; `epoch` is the metadata-log index of this record (0 when proposed: the
/// image fills it in when the record is applied at its index).
#[derive(Clone, PartialEq, Message)]
pub struct RegisterBrokerRecord {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    /// Random per process start.
    #[prost(bytes = "vec", tag = "2")]
    pub incarnation_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub epoch: i64,
    #[prost(string, tag = "4")]
    pub host: String,
    #[prost(int32, tag = "5")]
    pub port: i32,
    #[prost(string, optional, tag = "6")]
    pub rack: Option<String>,
    #[prost(bool, tag = "7")]
    pub fenced: bool,
    /// Where the quorum's leader reaches this broker as a raft learner (broker-only
    /// nodes); absent for voters, which are in `controller.quorum.voters`.
    #[prost(string, optional, tag = "8")]
    pub controller_addr: Option<String>,
    /// Every listener's advertised endpoint (`host`/`port` are the inter-broker
    /// listener's); empty in records written before named listeners: then `host`/`port`
    /// serve every listener.
    #[prost(message, repeated, tag = "9")]
    pub endpoints: Vec<BrokerEndpoint>,
}

/// One advertised listener of a broker.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct BrokerEndpoint {
    /// The listener name, upper case (`PLAINTEXT`, `SASL_SSL`, or a custom name).
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(int32, tag = "3")]
    pub port: i32,
    /// Kafka's SecurityProtocol id: 0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL.
    #[prost(int32, tag = "4")]
    pub security_protocol: i32,
}

/// The broker missed its session timeout: no longer a leader, not in any ISR.
#[derive(Clone, PartialEq, Message)]
pub struct FenceBrokerRecord {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(int64, tag = "2")]
    pub epoch: i64,
}

/// The broker heartbeats and has caught up with the metadata log.
#[derive(Clone, PartialEq, Message)]
pub struct UnfenceBrokerRecord {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(int64, tag = "2")]
    pub epoch: i64,
}

/// A config was set (`value` present) or removed (`value` absent) on a resource.
#[derive(Clone, PartialEq, Message)]
pub struct ConfigRecord {
    /// Kafka's ConfigResource type: 2 = topic, 4 = broker.
    #[prost(int32, tag = "1")]
    pub resource_type: i32,
    #[prost(string, tag = "2")]
    pub resource_name: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, optional, tag = "4")]
    pub value: Option<String>,
}

/// A topic and all its partitions were deleted.
#[derive(Clone, PartialEq, Message)]
pub struct RemoveTopicRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub topic_id: Vec<u8>,
}

/// New partitions start at leader epoch `next_leader_epoch` or later. Only snapshots carry
/// it: in the log, removing a topic raises the floor above every leader epoch the topic's
/// partitions reached, so a topic created again under that name starts above any epoch a
/// broker that has not yet applied the removal still holds for the old log (whose fetches
/// by name, and those of its followers, are then fenced by epoch).
#[derive(Clone, PartialEq, Message)]
pub struct LeaderEpochFloorRecord {
    #[prost(int32, tag = "1")]
    pub next_leader_epoch: i32,
}

/// Producer ids below `next_producer_id` have been handed out.
#[derive(Clone, PartialEq, Message)]
pub struct ProducerIdsRecord {
    #[prost(int64, tag = "1")]
    pub next_producer_id: i64,
}

/// A user's SCRAM credential for one mechanism was set (Kafka's
/// UserScramCredentialRecord): salted, never the password.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct UserScramCredentialRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Kafka's ScramMechanism type: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    #[prost(int32, tag = "2")]
    pub mechanism: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub salt: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub stored_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub server_key: Vec<u8>,
    #[prost(int32, tag = "6")]
    pub iterations: i32,
}

/// A user's SCRAM credential for one mechanism was deleted.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RemoveUserScramCredentialRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub mechanism: i32,
}

/// An ACL was created (Kafka's AccessControlEntryRecord; codes are Kafka's wire codes).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct AccessControlEntryRecord {
    /// 16 random bytes, unique per ACL.
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub resource_type: i32,
    #[prost(string, tag = "3")]
    pub resource_name: String,
    #[prost(int32, tag = "4")]
    pub pattern_type: i32,
    #[prost(string, tag = "5")]
    pub principal: String,
    #[prost(string, tag = "6")]
    pub host: String,
    #[prost(int32, tag = "7")]
    pub operation: i32,
    #[prost(int32, tag = "8")]
    pub permission_type: i32,
}

/// An ACL was deleted.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct RemoveAccessControlEntryRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
}

impl MetadataRecord {
    pub fn new(record: Record) -> Self {
        Self {
            record: Some(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_kind() {
        let records = [
            Record::Topic(TopicRecord {
                name: "t".into(),
                topic_id: vec![7; 16],
            }),
            Record::Partition(PartitionRecord {
                topic_id: vec![7; 16],
                partition_id: 3,
                replicas: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                isr: vec![1, 2],
                partition_epoch: 0,
                adding_replicas: vec![2],
                removing_replicas: vec![],
            }),
            Record::Config(ConfigRecord {
                resource_type: 2,
                resource_name: "t".into(),
                name: "retention.ms".into(),
                value: None,
            }),
            Record::RemoveTopic(RemoveTopicRecord {
                topic_id: vec![7; 16],
            }),
            Record::ProducerIds(ProducerIdsRecord {
                next_producer_id: 1000,
            }),
            Record::RegisterBroker(RegisterBrokerRecord {
                node_id: 2,
                incarnation_id: vec![1; 16],
                epoch: 7,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: Some("r1".into()),
                fenced: true,
                controller_addr: Some("127.0.0.1:9093".into()),
                endpoints: vec![BrokerEndpoint {
                    name: "SASL_SSL".into(),
                    host: "broker2".into(),
                    port: 9094,
                    security_protocol: 3,
                }],
            }),
            Record::FenceBroker(FenceBrokerRecord {
                node_id: 2,
                epoch: 7,
            }),
            Record::UnfenceBroker(UnfenceBrokerRecord {
                node_id: 2,
                epoch: 7,
            }),
            Record::LeaderEpochFloor(LeaderEpochFloorRecord {
                next_leader_epoch: 12,
            }),
        ];
        for r in records {
            let m = MetadataRecord::new(r);
            let bytes = m.encode_to_vec();
            assert_eq!(MetadataRecord::decode(&bytes[..]).unwrap(), m); // ok: test
        }
        assert!(MetadataRecord::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
