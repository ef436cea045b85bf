//! Whether an answer carries an error code, at the top level or for any topic, partition,
//! group or resource in it: what `sluice_request_errors_total` counts (as Kafka's
//! `ErrorsPerSec` counts error codes in responses). One impl per response type the broker
//! answers through `handlers::respond` or builds itself (Produce; Fetch is counted from its
//! partition results in `fetch.rs`).

use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, AlterUserScramCredentialsResponse,
    CreateAclsResponse, DeleteAclsResponse, DescribeAclsResponse, DescribeProducersResponse,
    DescribeTransactionsResponse, DescribeUserScramCredentialsResponse, EndTxnResponse,
    ListTransactionsResponse, SaslAuthenticateResponse, SaslHandshakeResponse,
    TxnOffsetCommitResponse, WriteTxnMarkersResponse,
};
use kafka_protocol::messages::{
    AlterConfigsResponse, AlterPartitionReassignmentsResponse, CreatePartitionsResponse,
    CreateTopicsResponse, DeleteGroupsResponse, DeleteRecordsResponse, DeleteTopicsResponse,
    DescribeClusterResponse, DescribeConfigsResponse, DescribeGroupsResponse,
    DescribeLogDirsResponse, ElectLeadersResponse, FindCoordinatorResponse, HeartbeatResponse,
    IncrementalAlterConfigsResponse, InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse,
    ListGroupsResponse, ListOffsetsResponse, ListPartitionReassignmentsResponse, MetadataResponse,
    OffsetCommitResponse, OffsetDeleteResponse, OffsetFetchResponse, OffsetForLeaderEpochResponse,
    ProduceResponse, SyncGroupResponse,
};

/// An answer that may carry error codes.
pub(crate) trait AnswerErrors {
    /// True if any error code in the answer is not 0.
    fn has_error(&self) -> bool;
}

/// Any of `items` has a non-zero code.
fn any<T>(items: &[T], code: impl Fn(&T) -> i16) -> bool {
    items.iter().any(|x| code(x) != 0)
}

/// Any entry of `inner` of any of `outer` has a non-zero code.
fn any_in<O, I>(outer: &[O], inner: impl Fn(&O) -> &[I], code: impl Fn(&I) -> i16) -> bool {
    outer.iter().any(|o| any(inner(o), &code))
}

/// One line per response type: `Type => |answer| whether it carries an error;`.
macro_rules! answer_errors {
    ($($t:ty => |$r:ident| $e:expr;)*) => {$(
        impl AnswerErrors for $t {
            fn has_error(&self) -> bool {
                let $r = self;
                $e
            }
        }
    )*};
}

answer_errors! {
    InitProducerIdResponse => |r| r.error_code != 0;
    DescribeClusterResponse => |r| r.error_code != 0;
    DescribeLogDirsResponse => |r| r.error_code != 0 || any(&r.results, |d| d.error_code);
    JoinGroupResponse => |r| r.error_code != 0;
    SyncGroupResponse => |r| r.error_code != 0;
    HeartbeatResponse => |r| r.error_code != 0;
    ListGroupsResponse => |r| r.error_code != 0;
    ListPartitionReassignmentsResponse => |r| r.error_code != 0;
    MetadataResponse => |r| any(&r.topics, |t| t.error_code)
        || any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    ProduceResponse => |r| any_in(&r.responses, |t| &t.partition_responses, |p| p.error_code);
    ListOffsetsResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    DeleteRecordsResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    OffsetForLeaderEpochResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    CreateTopicsResponse => |r| any(&r.topics, |t| t.error_code);
    DeleteTopicsResponse => |r| any(&r.responses, |t| t.error_code);
    CreatePartitionsResponse => |r| any(&r.results, |t| t.error_code);
    DescribeConfigsResponse => |r| any(&r.results, |c| c.error_code);
    AlterConfigsResponse => |r| any(&r.responses, |c| c.error_code);
    IncrementalAlterConfigsResponse => |r| any(&r.responses, |c| c.error_code);
    FindCoordinatorResponse => |r| r.error_code != 0 || any(&r.coordinators, |c| c.error_code);
    LeaveGroupResponse => |r| r.error_code != 0 || any(&r.members, |m| m.error_code);
    OffsetCommitResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    OffsetFetchResponse => |r| r.error_code != 0
        || any_in(&r.topics, |t| &t.partitions, |p| p.error_code)
        || any(&r.groups, |g| g.error_code)
        || r.groups.iter().any(|g| any_in(&g.topics, |t| &t.partitions, |p| p.error_code));
    DescribeGroupsResponse => |r| any(&r.groups, |g| g.error_code);
    DeleteGroupsResponse => |r| any(&r.results, |g| g.error_code);
    OffsetDeleteResponse => |r| r.error_code != 0
        || any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    ElectLeadersResponse => |r| r.error_code != 0
        || any_in(&r.replica_election_results, |t| &t.partition_result, |p| p.error_code);
    AlterPartitionReassignmentsResponse => |r| r.error_code != 0
        || any_in(&r.responses, |t| &t.partitions, |p| p.error_code);
    AddPartitionsToTxnResponse => |r| r.error_code != 0
        || any_in(&r.results_by_topic_v3_and_below, |t| &t.results_by_partition, |p| p.partition_error_code)
        || r.results_by_transaction.iter().any(|x| any_in(&x.topic_results, |t| &t.results_by_partition, |p| p.partition_error_code));
    AddOffsetsToTxnResponse => |r| r.error_code != 0;
    EndTxnResponse => |r| r.error_code != 0;
    TxnOffsetCommitResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    WriteTxnMarkersResponse => |r| r.markers.iter().any(|m| any_in(&m.topics, |t| &t.partitions, |p| p.error_code));
    DescribeProducersResponse => |r| any_in(&r.topics, |t| &t.partitions, |p| p.error_code);
    DescribeTransactionsResponse => |r| any(&r.transaction_states, |t| t.error_code);
    ListTransactionsResponse => |r| r.error_code != 0;
    SaslHandshakeResponse => |r| r.error_code != 0;
    SaslAuthenticateResponse => |r| r.error_code != 0;
    DescribeUserScramCredentialsResponse => |r| r.error_code != 0 || any(&r.results, |x| x.error_code);
    AlterUserScramCredentialsResponse => |r| any(&r.results, |x| x.error_code);
    DescribeAclsResponse => |r| r.error_code != 0;
    CreateAclsResponse => |r| any(&r.results, |x| x.error_code);
    DeleteAclsResponse => |r| any(&r.filter_results, |x| x.error_code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };

    #[test]
    fn nested_error_codes_count() {
        let ok = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_partition_responses(vec![PartitionProduceResponse::default()])]);
        assert!(!ok.has_error());
        let mut bad = ok.clone();
        bad.responses[0].partition_responses[0].error_code = 6;
        assert!(bad.has_error());
        assert!(HeartbeatResponse::default().with_error_code(27).has_error());
        assert!(!HeartbeatResponse::default().has_error());
        // a partition two levels down inside a group of OffsetFetch v8
        let mut fetch =
            OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                .with_topics(vec![OffsetFetchResponseTopics::default()
                    .with_partitions(vec![OffsetFetchResponsePartitions::default()])])]);
        assert!(!fetch.has_error());
        fetch.groups[0].topics[0].partitions[0].error_code = 3;
        assert!(fetch.has_error());
    }
}
