//! Consumer-group membership for `sluice consume --group`: JoinGroup and SyncGroup with the
//! classic consumer protocol ("consumer", the "range" assignor, computed here when this
//! member leads), Heartbeat between fetches, OffsetCommit with the member's generation,
//! LeaveGroup at the end. Blocking and single-threaded: the consume loop calls `heartbeat`
//! often enough (every 3 s against a 10 s session).
//!
//! ```text
//!  join ─► JoinGroup (MEMBER_ID_REQUIRED: again with the id) ─► leader? range-assign
//!       ─► SyncGroup ─► assignment ─► fetch … heartbeat … REBALANCE_IN_PROGRESS ─► join
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;

use super::client::{retriable, str_bytes, topic_name, Client, RETRY_BACKOFF};
use super::format::kafka_error;
use super::group::{commit_offsets, decode_assignment, decode_versioned, group_id, Tp};

/// Session timeout asked for (Kafka's group.min.session.timeout.ms defaults to 6 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat interval: a third of the session, as Kafka's clients do.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// This process's membership of one group, subscribed to one topic.
pub(crate) struct Member {
    group: String,
    topic: String,
    member_id: String,
    generation: i32,
    last_heartbeat: Instant,
    /// Partitions of `topic` assigned in the current generation.
    pub(crate) assignment: Vec<i32>,
}

/// What a heartbeat found.
pub(crate) enum Heartbeat {
    Fine,
    /// The group is rebalancing (or forgot us): commit, then `join` again.
    Rejoin,
}

impl Member {
    pub(crate) fn new(group: &str, topic: &str) -> Self {
        Member {
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            generation: -1,
            last_heartbeat: Instant::now(),
            assignment: Vec::new(),
        }
    }

    /// Joins (or rejoins) the group and takes this member's assignment; bounded by the
    /// client's timeout plus the rebalance it may wait for.
    pub(crate) fn join(&mut self, client: &mut Client) -> Result<()> {
        let timeout = client.timeout();
        let deadline = Instant::now() + timeout + SESSION_TIMEOUT;
        let what = format!("joining group '{}'", self.group);
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) && Instant::now() >= deadline {
                return Err(kafka_error(
                    ResponseError::RebalanceInProgress.code(),
                    &what,
                    Some("the group did not settle within the timeout"),
                ));
            }
            let joined = self.join_once(client, timeout)?;
            let code = joined.error_code;
            if code == ResponseError::MemberIdRequired.code() {
                self.member_id = joined.member_id.to_string();
                continue;
            }
            if code == ResponseError::UnknownMemberId.code() {
                self.member_id.clear();
            }
            if code != 0 {
                let again = retriable(code)
                    || code == ResponseError::UnknownMemberId.code()
                    || code == ResponseError::RebalanceInProgress.code();
                if !again || Instant::now() >= deadline {
                    return Err(kafka_error(code, &what, None));
                }
                std::thread::sleep(RETRY_BACKOFF);
                continue;
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                let deadline = Instant::now() + timeout;
                range_assign(client, &joined.members, deadline)?
            } else {
                Vec::new()
            };
            let protocol = joined.protocol_name.clone();
            match self.sync(client, protocol, assignments)? {
                Some(partitions) => {
                    self.assignment = partitions;
                    self.last_heartbeat = Instant::now();
                    return Ok(());
                }
                None if Instant::now() < deadline => continue,
                None => {
                    return Err(kafka_error(
                        ResponseError::RebalanceInProgress.code(),
                        &what,
                        None,
                    ))
                }
            }
        }
    }

    fn join_once(
        &self,
        client: &mut Client,
        timeout: Duration,
    ) -> Result<kafka_protocol::messages::JoinGroupResponse> {
        let mut sub = BytesMut::new();
        sub.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![str_bytes(&self.topic)])
            .encode(&mut sub, 0)?;
        let req = JoinGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_session_timeout_ms(SESSION_TIMEOUT.as_millis() as i32)
            .with_rebalance_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_member_id(str_bytes(&self.member_id))
            .with_protocol_type(str_bytes("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(str_bytes("range"))
                .with_metadata(sub.freeze())]);
        let conn = client.coordinator(&self.group)?;
        let version = conn.version::<JoinGroupRequest>(9)?;
        // the coordinator may hold the answer for the rebalance (up to the rebalance
        // timeout we gave it, plus its initial delay)
        conn.with_read_timeout(timeout + SESSION_TIMEOUT, |c| c.call_at(version, &req))
    }

    /// SyncGroup; Some(partitions of our topic), or None when the group rebalanced again.
    fn sync(
        &mut self,
        client: &mut Client,
        protocol: Option<kafka_protocol::protocol::StrBytes>,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<Option<Vec<i32>>> {
        let req = SyncGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(str_bytes(&self.member_id))
            .with_assignments(assignments);
        let timeout = client.timeout();
        let conn = client.coordinator(&self.group)?;
        let version = conn.version::<SyncGroupRequest>(5)?;
        let req = if version >= 5 {
            req.with_protocol_type(Some(str_bytes("consumer")))
                .with_protocol_name(protocol)
        } else {
            req
        };
        let resp =
            conn.with_read_timeout(timeout + SESSION_TIMEOUT, |c| c.call_at(version, &req))?;
        if resp.error_code == ResponseError::RebalanceInProgress.code()
            || resp.error_code == ResponseError::IllegalGeneration.code()
        {
            return Ok(None);
        }
        if resp.error_code == ResponseError::UnknownMemberId.code() {
            self.member_id.clear();
            return Ok(None);
        }
        if resp.error_code != 0 {
            return Err(kafka_error(
                resp.error_code,
                &format!("syncing group '{}'", self.group),
                None,
            ));
        }
        let mut mine: Vec<i32> = decode_assignment(&resp.assignment)?
            .into_iter()
            .filter(|(t, _)| *t == self.topic)
            .map(|(_, p)| p)
            .collect();
        mine.sort_unstable();
        Ok(Some(mine))
    }

    pub(crate) fn heartbeat_due(&self) -> bool {
        self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL
    }

    pub(crate) fn heartbeat(&mut self, client: &mut Client) -> Result<Heartbeat> {
        let req = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(str_bytes(&self.member_id));
        let (_, resp) = client.coordinator(&self.group)?.call(4, &req)?;
        self.last_heartbeat = Instant::now();
        let code = resp.error_code;
        if code == 0 {
            return Ok(Heartbeat::Fine);
        }
        if code == ResponseError::UnknownMemberId.code() {
            self.member_id.clear();
            return Ok(Heartbeat::Rejoin);
        }
        if code == ResponseError::RebalanceInProgress.code()
            || code == ResponseError::IllegalGeneration.code()
        {
            return Ok(Heartbeat::Rejoin);
        }
        if retriable(code) {
            // the coordinator moved; the next heartbeat finds the new one
            return Ok(Heartbeat::Fine);
        }
        Err(kafka_error(
            code,
            &format!("heartbeat to group '{}'", self.group),
            None,
        ))
    }

    /// Commits `offsets` under this member's generation.
    pub(crate) fn commit(&self, client: &mut Client, offsets: &BTreeMap<Tp, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = client.coordinator(&self.group)?;
        commit_offsets(conn, &self.group, self.generation, &self.member_id, offsets)
    }

    /// Leaves the group so it rebalances at once instead of after the session timeout.
    pub(crate) fn leave(&self, client: &mut Client) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let conn = client.coordinator(&self.group)?;
        let version = conn.version::<LeaveGroupRequest>(5)?;
        let req = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(str_bytes(&self.member_id))
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_member_id(str_bytes(&self.member_id))
        };
        let resp = conn.call_at(version, &req)?;
        if resp.error_code != 0 && resp.error_code != ResponseError::UnknownMemberId.code() {
            return Err(kafka_error(
                resp.error_code,
                &format!("leaving group '{}'", self.group),
                None,
            ));
        }
        Ok(())
    }
}

/// The leader's job: Kafka's RangeAssignor over every member's subscription (members
/// sorted by id; each topic's partitions split into consecutive ranges, the first
/// members taking one more when they do not divide evenly).
fn range_assign(
    client: &mut Client,
    members: &[JoinGroupResponseMember],
    deadline: Instant,
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let mut subs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in members {
        subs.insert(m.member_id.to_string(), decode_subscription(&m.metadata)?);
    }
    let mut topics: Vec<String> = subs.values().flatten().cloned().collect();
    topics.sort();
    topics.dedup();
    let leaders = client.leaders(&topics, false, deadline)?;
    let mut assigned: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for topic in &topics {
        let parts: Vec<i32> = leaders
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect();
        let takers: Vec<&String> = subs
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let n = takers.len();
        let (each, extra) = (parts.len() / n, parts.len() % n);
        let mut at = 0;
        for (i, m) in takers.iter().enumerate() {
            let take = each + usize::from(i < extra);
            assigned
                .entry((*m).clone())
                .or_default()
                .insert(topic.clone(), parts[at..at + take].to_vec());
            at += take;
        }
    }
    subs.keys()
        .map(|m| {
            let mut buf = BytesMut::new();
            buf.put_i16(0);
            let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
                assigned
                    .get(m)
                    .into_iter()
                    .flatten()
                    .map(|(t, ps)| {
                        consumer_protocol_assignment::TopicPartition::default()
                            .with_topic(topic_name(t))
                            .with_partitions(ps.clone())
                    })
                    .collect(),
            );
            a.encode(&mut buf, 0)?;
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(str_bytes(m))
                .with_assignment(buf.freeze()))
        })
        .collect()
}

/// Topics of a version-prefixed ConsumerProtocolSubscription.
fn decode_subscription(raw: &Bytes) -> Result<Vec<String>> {
    let s: ConsumerProtocolSubscription = decode_versioned(raw, "member subscription")?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::group::decode_assignment;

    #[test]
    fn assignment_round_trip() {
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![consumer_protocol_assignment::TopicPartition::default(
            )
            .with_topic(topic_name("t"))
            .with_partitions(vec![0, 2])])
            .encode(&mut buf, 0)
            .unwrap();
        assert_eq!(
            decode_assignment(&buf.freeze()).unwrap(),
            vec![("t".to_string(), 0), ("t".to_string(), 2)]
        );
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn subscription_round_trip() {
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![str_bytes("a"), str_bytes("b")])
            .encode(&mut buf, 0)
            .unwrap();
        assert_eq!(decode_subscription(&buf.freeze()).unwrap(), vec!["a", "b"]);
    }
}
