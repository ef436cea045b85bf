//! Metadata records: the ordered log from which topics, partitions and configs are derived,
//! as in Kafka's KRaft. They are Sluice's own `prost` messages (derive only, no `.proto`
//! files). Each record is stored as the value of one record in an uncompressed v2 batch of
//! the metadata log; replaying the log in order rebuilds the same state.

use prost::Message;

/// One metadata change.
#[derive(Clone, PartialEq, Message)]
pub struct MetadataRecord {
    #[prost(oneof = "Record", tags = "1, 2, 3, 4, 5")]
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

/// A partition of a topic exists, with its replica placement.
#[derive(Clone, PartialEq, Message)]
pub struct PartitionRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub topic_id: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub partition_id: i32,
    #[prost(int32, repeated, tag = "3")]
    pub replicas: Vec<i32>,
    #[prost(int32, tag = "4")]
    pub leader: i32,
    #[prost(int32, tag = "5")]
    pub leader_epoch: i32,
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

/// Producer ids below `next_producer_id` have been handed out.
#[derive(Clone, PartialEq, Message)]
pub struct ProducerIdsRecord {
    #[prost(int64, tag = "1")]
    pub next_producer_id: i64,
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
                replicas: vec![1],
                leader: 1,
                leader_epoch: 0,
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
        ];
        for r in records {
            let m = MetadataRecord::new(r);
            let bytes = m.encode_to_vec();
            assert_eq!(MetadataRecord::decode(&bytes[..]).unwrap(), m); // ok: test
        }
        assert!(MetadataRecord::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
