//! Whether an answer carries an error code, at the top level or for any topic, partition,
//! group or resource in it: what `sluice_request_errors_total` counts (as Kafka's
//! `ErrorsPerSec` counts error codes in responses). One impl per response type the broker
//! answers through `handlers::respond` or builds itself (Produce; Fetch is counted from its
//! partition results in `fetch.rs`).

use kafka_protocol::messages::{
    AlterConfigsResponse, AlterPartitionReassignmentsResponse, CreatePartitionsResponse,
    CreateTopicsResponse, DeleteGroupsResponse, DeleteTopicsResponse, DescribeClusterResponse,
    DescribeConfigsResponse, DescribeGroupsResponse, ElectLeadersResponse, FindCoordinatorResponse,
    HeartbeatResponse, IncrementalAlterConfigsResponse, InitProducerIdResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, ListOffsetsResponse,
    ListPartitionReassignmentsResponse, MetadataResponse, OffsetCommitResponse,
    OffsetDeleteResponse, OffsetFetchResponse, OffsetForLeaderEpochResponse, ProduceResponse,
    SyncGroupResponse,
};

/// An answer that may carry error codes.
pub(crate) trait AnswerErrors {
    /// True if any error code in the answer is not 0.
    fn has_error(&self) -> bool;
}

/// Answers with one top-level `error_code`.
macro_rules! top_level {
    ($($t:ty),* $(,)?) => {$(
        impl AnswerErrors for $t {
            fn has_error(&self) -> bool {
                self.error_code != 0
            }
        }
    )*};
}

top_level!(
    InitProducerIdResponse,
    DescribeClusterResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    ListGroupsResponse,
    ListPartitionReassignmentsResponse,
);

impl AnswerErrors for MetadataResponse {
    fn has_error(&self) -> bool {
        self.topics
            .iter()
            .any(|t| t.error_code != 0 || t.partitions.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for ProduceResponse {
    fn has_error(&self) -> bool {
        self.responses
            .iter()
            .any(|t| t.partition_responses.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for ListOffsetsResponse {
    fn has_error(&self) -> bool {
        self.topics
            .iter()
            .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for OffsetForLeaderEpochResponse {
    fn has_error(&self) -> bool {
        self.topics
            .iter()
            .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for CreateTopicsResponse {
    fn has_error(&self) -> bool {
        self.topics.iter().any(|t| t.error_code != 0)
    }
}

impl AnswerErrors for DeleteTopicsResponse {
    fn has_error(&self) -> bool {
        self.responses.iter().any(|t| t.error_code != 0)
    }
}

impl AnswerErrors for CreatePartitionsResponse {
    fn has_error(&self) -> bool {
        self.results.iter().any(|t| t.error_code != 0)
    }
}

impl AnswerErrors for DescribeConfigsResponse {
    fn has_error(&self) -> bool {
        self.results.iter().any(|r| r.error_code != 0)
    }
}

impl AnswerErrors for AlterConfigsResponse {
    fn has_error(&self) -> bool {
        self.responses.iter().any(|r| r.error_code != 0)
    }
}

impl AnswerErrors for IncrementalAlterConfigsResponse {
    fn has_error(&self) -> bool {
        self.responses.iter().any(|r| r.error_code != 0)
    }
}

impl AnswerErrors for FindCoordinatorResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0 || self.coordinators.iter().any(|c| c.error_code != 0)
    }
}

impl AnswerErrors for LeaveGroupResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0 || self.members.iter().any(|m| m.error_code != 0)
    }
}

impl AnswerErrors for OffsetCommitResponse {
    fn has_error(&self) -> bool {
        self.topics
            .iter()
            .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for OffsetFetchResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0
            || self
                .topics
                .iter()
                .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
            || self.groups.iter().any(|g| {
                g.error_code != 0
                    || g.topics
                        .iter()
                        .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
            })
    }
}

impl AnswerErrors for DescribeGroupsResponse {
    fn has_error(&self) -> bool {
        self.groups.iter().any(|g| g.error_code != 0)
    }
}

impl AnswerErrors for DeleteGroupsResponse {
    fn has_error(&self) -> bool {
        self.results.iter().any(|g| g.error_code != 0)
    }
}

impl AnswerErrors for OffsetDeleteResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0
            || self
                .topics
                .iter()
                .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for ElectLeadersResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0
            || self
                .replica_election_results
                .iter()
                .any(|t| t.partition_result.iter().any(|p| p.error_code != 0))
    }
}

impl AnswerErrors for AlterPartitionReassignmentsResponse {
    fn has_error(&self) -> bool {
        self.error_code != 0
            || self
                .responses
                .iter()
                .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }
}
