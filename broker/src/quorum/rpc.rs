//! Broker-to-controller calls on the controller listener: a metadata change or a broker
//! heartbeat forwarded to the active controller, and its answer, as Sluice's own prost
//! messages (Kafka's Envelope, BrokerRegistration and BrokerHeartbeat carry the same
//! information; Sluice's controllers are reached only by Sluice brokers).
//!
//! Invariant: decoding never panics; a message that does not decode or names an unknown
//! operation is an error and the caller drops the connection.

use prost::Message;

use crate::metadata::controller::{
    BrokerHeartbeat, ConfigChange, IsrChange, MetadataOp, MetadataOpResult, NewPartitions,
    NewTopic, PartitionOutcome, TopicOutcome, TopicRef,
};
use crate::metadata::elections::{Election, Reassignment};

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcRequest {
    /// Milliseconds the caller waits for the answer.
    #[prost(uint32, tag = "1")]
    pub(crate) timeout_ms: u32,
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12")]
    pub(crate) op: Option<Op>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Op {
    #[prost(message, tag = "2")]
    CreateTopics(CreateTopics),
    #[prost(message, tag = "3")]
    DeleteTopics(DeleteTopics),
    #[prost(message, tag = "4")]
    CreatePartitions(CreatePartitions),
    #[prost(message, tag = "5")]
    AlterConfigs(AlterConfigs),
    #[prost(message, tag = "6")]
    AllocateProducerId(AllocateProducerId),
    #[prost(message, tag = "7")]
    Heartbeat(Heartbeat),
    #[prost(message, tag = "8")]
    ControlledShutdown(ControlledShutdown),
    #[prost(message, tag = "9")]
    AlterPartition(AlterPartition),
    #[prost(message, tag = "10")]
    ElectLeaders(ElectLeaders),
    #[prost(message, tag = "11")]
    Reassign(Reassign),
    #[prost(message, tag = "12")]
    Security(crate::metadata::security_ops::SecurityOp),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WirePartition {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) partition: i32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ElectLeaders {
    /// Unclean election (else preferred).
    #[prost(bool, tag = "1")]
    pub(crate) unclean: bool,
    /// Every partition (`partitions` is then empty).
    #[prost(bool, tag = "2")]
    pub(crate) all: bool,
    #[prost(message, repeated, tag = "3")]
    pub(crate) partitions: Vec<WirePartition>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireReassignment {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) partition: i32,
    /// Cancel the reassignment in progress (`replicas` is then empty).
    #[prost(bool, tag = "3")]
    pub(crate) cancel: bool,
    #[prost(int32, repeated, tag = "4")]
    pub(crate) replicas: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Reassign {
    #[prost(message, repeated, tag = "1")]
    pub(crate) partitions: Vec<WireReassignment>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WirePartitionOutcome {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) partition: i32,
    #[prost(int32, tag = "3")]
    pub(crate) error: i32,
    #[prost(string, optional, tag = "4")]
    pub(crate) message: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AlterPartition {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) partition: i32,
    #[prost(int32, tag = "3")]
    pub(crate) leader: i32,
    #[prost(int32, tag = "4")]
    pub(crate) leader_epoch: i32,
    #[prost(int32, tag = "5")]
    pub(crate) partition_epoch: i32,
    #[prost(int32, repeated, tag = "6")]
    pub(crate) isr: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ControlledShutdown {
    #[prost(int32, tag = "1")]
    pub(crate) node_id: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) incarnation: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct KeyValue {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(string, optional, tag = "2")]
    pub(crate) value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireNewTopic {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(int32, tag = "2")]
    pub(crate) partitions: i32,
    #[prost(int32, tag = "3")]
    pub(crate) replication_factor: i32,
    #[prost(message, repeated, tag = "4")]
    pub(crate) configs: Vec<KeyValue>,
    #[prost(message, repeated, tag = "5")]
    pub(crate) assignments: Vec<Replicas>,
}

/// One partition's replica list.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Replicas {
    #[prost(int32, repeated, tag = "1")]
    pub(crate) replicas: Vec<i32>,
}

fn to_wire(lists: Vec<Vec<i32>>) -> Vec<Replicas> {
    lists
        .into_iter()
        .map(|replicas| Replicas { replicas })
        .collect()
}

fn from_wire(lists: Vec<Replicas>) -> Vec<Vec<i32>> {
    lists.into_iter().map(|r| r.replicas).collect()
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct CreateTopics {
    #[prost(message, repeated, tag = "1")]
    pub(crate) topics: Vec<WireNewTopic>,
    #[prost(bool, tag = "2")]
    pub(crate) validate_only: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireTopicRef {
    #[prost(string, optional, tag = "1")]
    pub(crate) name: Option<String>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) id: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct DeleteTopics {
    #[prost(message, repeated, tag = "1")]
    pub(crate) topics: Vec<WireTopicRef>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PartitionCount {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) count: i32,
    #[prost(message, repeated, tag = "3")]
    pub(crate) assignments: Vec<Replicas>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct CreatePartitions {
    #[prost(message, repeated, tag = "1")]
    pub(crate) topics: Vec<PartitionCount>,
    #[prost(bool, tag = "2")]
    pub(crate) validate_only: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireConfigChange {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(message, repeated, tag = "2")]
    pub(crate) set: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub(crate) replace_all: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AlterConfigs {
    #[prost(message, repeated, tag = "1")]
    pub(crate) changes: Vec<WireConfigChange>,
    #[prost(bool, tag = "2")]
    pub(crate) validate_only: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AllocateProducerId {}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Heartbeat {
    #[prost(int32, tag = "1")]
    pub(crate) node_id: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) incarnation: Vec<u8>,
    #[prost(string, tag = "3")]
    pub(crate) host: String,
    #[prost(int32, tag = "4")]
    pub(crate) port: i32,
    #[prost(string, optional, tag = "5")]
    pub(crate) rack: Option<String>,
    #[prost(uint64, tag = "6")]
    pub(crate) applied: u64,
    #[prost(string, optional, tag = "7")]
    pub(crate) controller_addr: Option<String>,
    #[prost(message, repeated, tag = "8")]
    pub(crate) endpoints: Vec<sluice_proto::metadata::BrokerEndpoint>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct WireOutcome {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) topic_id: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub(crate) error: i32,
    #[prost(string, optional, tag = "4")]
    pub(crate) message: Option<String>,
    #[prost(int32, tag = "5")]
    pub(crate) partitions: i32,
    #[prost(int32, tag = "6")]
    pub(crate) replication_factor: i32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcResponse {
    /// The metadata-log index the change committed at (0: nothing was written); the
    /// forwarding broker answers its client once its own shards applied that far.
    #[prost(uint64, tag = "1")]
    pub(crate) index: u64,
    #[prost(message, repeated, tag = "2")]
    pub(crate) topics: Vec<WireOutcome>,
    #[prost(int64, optional, tag = "3")]
    pub(crate) producer_id: Option<i64>,
    #[prost(int32, optional, tag = "4")]
    pub(crate) error: Option<i32>,
    #[prost(string, tag = "5")]
    pub(crate) message: String,
    #[prost(int64, optional, tag = "6")]
    pub(crate) broker_epoch: Option<i64>,
    #[prost(bool, tag = "7")]
    pub(crate) fenced: bool,
    /// The answer is per partition (`partitions`, possibly empty), not per topic.
    #[prost(bool, tag = "8")]
    pub(crate) per_partition: bool,
    #[prost(message, repeated, tag = "9")]
    pub(crate) partitions: Vec<WirePartitionOutcome>,
    /// The answer is a security one (`security`, possibly empty).
    #[prost(bool, tag = "10")]
    pub(crate) per_security: bool,
    #[prost(message, repeated, tag = "11")]
    pub(crate) security: Vec<crate::metadata::security_ops::SecurityOutcome>,
}

fn kv((k, v): (String, Option<String>)) -> KeyValue {
    KeyValue { key: k, value: v }
}

pub(crate) fn encode_op(op: &MetadataOp, timeout_ms: u32) -> Vec<u8> {
    let op = match op.clone() {
        MetadataOp::CreateTopics {
            topics,
            validate_only,
        } => Op::CreateTopics(CreateTopics {
            topics: topics
                .into_iter()
                .map(|t| WireNewTopic {
                    name: t.name,
                    partitions: t.partitions,
                    replication_factor: i32::from(t.replication_factor),
                    configs: t
                        .configs
                        .into_iter()
                        .map(|(k, v)| kv((k, Some(v))))
                        .collect(),
                    assignments: to_wire(t.assignments),
                })
                .collect(),
            validate_only,
        }),
        MetadataOp::DeleteTopics { topics } => Op::DeleteTopics(DeleteTopics {
            topics: topics
                .into_iter()
                .map(|t| match t {
                    TopicRef::Name(n) => WireTopicRef {
                        name: Some(n),
                        id: Vec::new(),
                    },
                    TopicRef::Id(id) => WireTopicRef {
                        name: None,
                        id: id.to_vec(),
                    },
                })
                .collect(),
        }),
        MetadataOp::CreatePartitions {
            topics,
            validate_only,
        } => Op::CreatePartitions(CreatePartitions {
            topics: topics
                .into_iter()
                .map(|p| PartitionCount {
                    topic: p.topic,
                    count: p.count,
                    assignments: to_wire(p.assignments),
                })
                .collect(),
            validate_only,
        }),
        MetadataOp::AlterConfigs {
            changes,
            validate_only,
        } => Op::AlterConfigs(AlterConfigs {
            changes: changes
                .into_iter()
                .map(|c| WireConfigChange {
                    topic: c.topic,
                    set: c.set.into_iter().map(kv).collect(),
                    replace_all: c.replace_all,
                })
                .collect(),
            validate_only,
        }),
        MetadataOp::AllocateProducerId => Op::AllocateProducerId(AllocateProducerId {}),
        MetadataOp::Heartbeat(h) => Op::Heartbeat(Heartbeat {
            node_id: h.node_id,
            incarnation: h.incarnation,
            host: h.host,
            port: h.port,
            rack: h.rack,
            applied: h.applied,
            controller_addr: h.controller_addr,
            endpoints: h.endpoints,
        }),
        MetadataOp::ControlledShutdown {
            node_id,
            incarnation,
        } => Op::ControlledShutdown(ControlledShutdown {
            node_id,
            incarnation,
        }),
        MetadataOp::AlterPartition(c) => Op::AlterPartition(AlterPartition {
            topic: c.topic,
            partition: c.partition,
            leader: c.leader,
            leader_epoch: c.leader_epoch,
            partition_epoch: c.partition_epoch,
            isr: c.isr,
        }),
        MetadataOp::ElectLeaders {
            election,
            partitions,
        } => Op::ElectLeaders(ElectLeaders {
            unclean: election == Election::Unclean,
            all: partitions.is_none(),
            partitions: partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| WirePartition { topic, partition })
                .collect(),
        }),
        MetadataOp::Reassign(requests) => Op::Reassign(Reassign {
            partitions: requests
                .into_iter()
                .map(|r| WireReassignment {
                    topic: r.topic,
                    partition: r.partition,
                    cancel: r.replicas.is_none(),
                    replicas: r.replicas.unwrap_or_default(),
                })
                .collect(),
        }),
        MetadataOp::Security(op) => Op::Security(op),
    };
    RpcRequest {
        timeout_ms,
        op: Some(op),
    }
    .encode_to_vec()
}

/// The operation and its wait bound (ms), or why the bytes are not a request.
pub(crate) fn decode_op(bytes: &[u8]) -> Result<(MetadataOp, u32), String> {
    let req = RpcRequest::decode(bytes).map_err(|e| format!("request does not decode: {e}"))?;
    let op = match req.op.ok_or("request names no operation")? {
        Op::CreateTopics(c) => MetadataOp::CreateTopics {
            topics: c
                .topics
                .into_iter()
                .map(|t| NewTopic {
                    name: t.name,
                    partitions: t.partitions,
                    replication_factor: i16::try_from(t.replication_factor).unwrap_or(i16::MAX),
                    configs: t
                        .configs
                        .into_iter()
                        .map(|c| (c.key, c.value.unwrap_or_default()))
                        .collect(),
                    assignments: from_wire(t.assignments),
                })
                .collect(),
            validate_only: c.validate_only,
        },
        Op::DeleteTopics(d) => MetadataOp::DeleteTopics {
            topics: d
                .topics
                .into_iter()
                .map(|t| match t.name {
                    Some(n) => Ok(TopicRef::Name(n)),
                    None => {
                        t.id.as_slice()
                            .try_into()
                            .map(TopicRef::Id)
                            .map_err(|_| "a topic id is not 16 bytes".to_string())
                    }
                })
                .collect::<Result<_, _>>()?,
        },
        Op::CreatePartitions(c) => MetadataOp::CreatePartitions {
            topics: c
                .topics
                .into_iter()
                .map(|p| NewPartitions {
                    topic: p.topic,
                    count: p.count,
                    assignments: from_wire(p.assignments),
                })
                .collect(),
            validate_only: c.validate_only,
        },
        Op::AlterConfigs(a) => MetadataOp::AlterConfigs {
            changes: a
                .changes
                .into_iter()
                .map(|c| ConfigChange {
                    topic: c.topic,
                    set: c.set.into_iter().map(|kv| (kv.key, kv.value)).collect(),
                    replace_all: c.replace_all,
                })
                .collect(),
            validate_only: a.validate_only,
        },
        Op::AllocateProducerId(_) => MetadataOp::AllocateProducerId,
        Op::Heartbeat(h) => MetadataOp::Heartbeat(BrokerHeartbeat {
            node_id: h.node_id,
            incarnation: h.incarnation,
            host: h.host,
            port: h.port,
            rack: h.rack,
            applied: h.applied,
            controller_addr: h.controller_addr,
            endpoints: h.endpoints,
        }),
        Op::ControlledShutdown(c) => MetadataOp::ControlledShutdown {
            node_id: c.node_id,
            incarnation: c.incarnation,
        },
        Op::AlterPartition(c) => MetadataOp::AlterPartition(IsrChange {
            topic: c.topic,
            partition: c.partition,
            leader: c.leader,
            leader_epoch: c.leader_epoch,
            partition_epoch: c.partition_epoch,
            isr: c.isr,
        }),
        Op::ElectLeaders(e) => MetadataOp::ElectLeaders {
            election: if e.unclean {
                Election::Unclean
            } else {
                Election::Preferred
            },
            partitions: (!e.all).then(|| {
                e.partitions
                    .into_iter()
                    .map(|p| (p.topic, p.partition))
                    .collect()
            }),
        },
        Op::Security(op) => MetadataOp::Security(op),
        Op::Reassign(r) => MetadataOp::Reassign(
            r.partitions
                .into_iter()
                .map(|p| Reassignment {
                    topic: p.topic,
                    partition: p.partition,
                    replicas: (!p.cancel).then_some(p.replicas),
                })
                .collect(),
        ),
    };
    Ok((op, req.timeout_ms))
}

pub(crate) fn encode_result(result: &MetadataOpResult, index: u64) -> Vec<u8> {
    let mut r = RpcResponse {
        index,
        ..Default::default()
    };
    match result {
        MetadataOpResult::Topics(t) => {
            r.topics = t
                .iter()
                .map(|o| WireOutcome {
                    name: o.name.clone(),
                    topic_id: o.topic_id.to_vec(),
                    error: i32::from(o.error),
                    message: o.message.clone(),
                    partitions: o.partitions,
                    replication_factor: i32::from(o.replication_factor),
                })
                .collect()
        }
        MetadataOpResult::ProducerId(p) => r.producer_id = Some(*p),
        MetadataOpResult::Heartbeat { epoch, fenced } => {
            r.broker_epoch = Some(*epoch);
            r.fenced = *fenced;
        }
        MetadataOpResult::Partitions(p) => {
            r.per_partition = true;
            r.partitions = p
                .iter()
                .map(|o| WirePartitionOutcome {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    error: i32::from(o.error),
                    message: o.message.clone(),
                })
                .collect();
        }
        MetadataOpResult::Security(s) => {
            r.per_security = true;
            r.security = s.clone();
        }
        MetadataOpResult::Failed(code, message) => {
            r.error = Some(i32::from(*code));
            r.message = message.clone();
        }
    }
    r.encode_to_vec()
}

pub(crate) fn decode_result(bytes: &[u8]) -> Result<(MetadataOpResult, u64), String> {
    let r = RpcResponse::decode(bytes).map_err(|e| format!("answer does not decode: {e}"))?;
    let code = |c: i32| i16::try_from(c).unwrap_or(-1);
    let result = if let Some(e) = r.error {
        MetadataOpResult::Failed(code(e), r.message)
    } else if let Some(p) = r.producer_id {
        MetadataOpResult::ProducerId(p)
    } else if let Some(epoch) = r.broker_epoch {
        MetadataOpResult::Heartbeat {
            epoch,
            fenced: r.fenced,
        }
    } else if r.per_security {
        MetadataOpResult::Security(r.security)
    } else if r.per_partition {
        MetadataOpResult::Partitions(
            r.partitions
                .into_iter()
                .map(|o| PartitionOutcome {
                    topic: o.topic,
                    partition: o.partition,
                    error: code(o.error),
                    message: o.message,
                })
                .collect(),
        )
    } else {
        MetadataOpResult::Topics(
            r.topics
                .into_iter()
                .map(|o| TopicOutcome {
                    name: o.name,
                    topic_id: o.topic_id.as_slice().try_into().unwrap_or([0; 16]),
                    error: code(o.error),
                    message: o.message,
                    partitions: o.partitions,
                    replication_factor: i16::try_from(o.replication_factor).unwrap_or(-1),
                })
                .collect(),
        )
    };
    Ok((result, r.index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_results_roundtrip() {
        let ops = [
            MetadataOp::CreateTopics {
                topics: vec![NewTopic {
                    name: "t".into(),
                    partitions: 3,
                    replication_factor: 2,
                    configs: vec![("retention.ms".into(), "5".into())],
                    assignments: vec![vec![1, 2], vec![2, 3]],
                }],
                validate_only: true,
            },
            MetadataOp::DeleteTopics {
                topics: vec![TopicRef::Name("a".into()), TopicRef::Id([3; 16])],
            },
            MetadataOp::CreatePartitions {
                topics: vec![NewPartitions {
                    topic: "a".into(),
                    count: 4,
                    assignments: vec![vec![3]],
                }],
                validate_only: false,
            },
            MetadataOp::AlterConfigs {
                changes: vec![ConfigChange {
                    topic: "a".into(),
                    set: vec![("x".into(), None), ("y".into(), Some("1".into()))],
                    replace_all: true,
                }],
                validate_only: false,
            },
            MetadataOp::AllocateProducerId,
            MetadataOp::ControlledShutdown {
                node_id: 3,
                incarnation: vec![1, 2],
            },
            MetadataOp::Heartbeat(BrokerHeartbeat {
                node_id: 2,
                incarnation: vec![9; 16],
                host: "h".into(),
                port: 1,
                rack: None,
                applied: 77,
                controller_addr: Some("127.0.0.1:1".into()),
                endpoints: Vec::new(),
            }),
            MetadataOp::ElectLeaders {
                election: Election::Unclean,
                partitions: Some(vec![("a".into(), 2)]),
            },
            MetadataOp::ElectLeaders {
                election: Election::Preferred,
                partitions: None,
            },
            MetadataOp::Reassign(vec![
                Reassignment {
                    topic: "a".into(),
                    partition: 1,
                    replicas: Some(vec![4, 2]),
                },
                Reassignment {
                    topic: "a".into(),
                    partition: 0,
                    replicas: None,
                },
            ]),
            MetadataOp::Security(crate::metadata::security_ops::SecurityOp {
                scram_deletions: vec![sluice_proto::metadata::RemoveUserScramCredentialRecord {
                    name: "u".into(),
                    mechanism: 2,
                }],
                ..Default::default()
            }),
        ];
        for op in ops {
            let (back, t) = decode_op(&encode_op(&op, 500)).unwrap(); // ok: test
            assert_eq!(t, 500);
            assert_eq!(format!("{back:?}"), format!("{op:?}"));
        }
        let results = [
            MetadataOpResult::ProducerId(5),
            MetadataOpResult::Failed(41, "x".into()),
            MetadataOpResult::Heartbeat {
                epoch: 8,
                fenced: true,
            },
            MetadataOpResult::Topics(vec![TopicOutcome {
                name: "a".into(),
                topic_id: [1; 16],
                error: 0,
                message: None,
                partitions: 3,
                replication_factor: 3,
            }]),
            MetadataOpResult::Partitions(vec![]),
            MetadataOpResult::Security(vec![crate::metadata::security_ops::SecurityOutcome {
                name: "u".into(),
                error: 91,
                ..Default::default()
            }]),
            MetadataOpResult::Partitions(vec![PartitionOutcome {
                topic: "a".into(),
                partition: 3,
                error: 84,
                message: Some("m".into()),
            }]),
        ];
        for r in results {
            let (back, i) = decode_result(&encode_result(&r, 12)).unwrap(); // ok: test
            assert_eq!(i, 12);
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
        assert!(decode_op(&[0xff, 0xff]).is_err());
        assert!(decode_op(&[]).is_err());
    }
}
