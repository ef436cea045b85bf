//! Incremental fetch sessions (KIP-227), kept per shard for the connections it serves. A
//! session remembers each partition's fetch offset and what was last reported, so a client
//! sends only changes and gets back only partitions with news. Partitions that returned
//! records move to the end of the session's order (as in Kafka), so when the response
//! budget runs out the others go first next time. Session ids are random and each session
//! belongs to the connection that created it: another connection naming it gets
//! FETCH_SESSION_ID_NOT_FOUND and cannot close it. Bounded: a connection keeps at most
//! `MAX_SESSIONS_PER_CONN` (its own oldest goes first), the shard at most `MAX_SESSIONS`
//! (the least recently used goes), and a closed connection's sessions go with it.

use std::sync::Arc;

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;

use crate::fast_map::FastMap;
use crate::shard_msg::FetchPartResult;

const MAX_SESSIONS: usize = 1000;
const MAX_SESSIONS_PER_CONN: usize = 8;

#[derive(Debug, Clone)]
struct SessionPart {
    fetch_offset: i64,
    max_bytes: i32,
    /// The client's current leader epoch for it (-1: none), as Kafka's cached partition.
    epoch: i32,
    /// The log start a follower reported (-1 from consumers).
    log_start: i64,
    last_hw: i64,
    last_log_start: i64,
}

/// A session's key of a partition: the topic is shared by all its partitions.
type Key = (Arc<str>, i32);

#[derive(Debug)]
struct Session {
    /// The connection that created it (`Conn::id`).
    conn: u64,
    next_epoch: i32,
    parts: FastMap<Key, SessionPart>,
    /// The keys of `parts` in the order they are read and answered.
    order: Vec<Key>,
    last_used: u64,
}

/// Owned by one shard; never crosses cores.
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    sessions: FastMap<i32, Session>,
    clock: u64,
}

/// One partition to read.
#[derive(Debug, Clone)]
pub(crate) struct PlanPart {
    /// Shared by every partition of the topic (one allocation per topic and request).
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) fetch_offset: i64,
    pub(crate) max_bytes: i32,
    /// The client's current leader epoch (Fetch v9+), -1 when it names none.
    pub(crate) epoch: i32,
    /// A follower's log start (Fetch v5+; -1 from consumers): DeleteRecords waits for it.
    pub(crate) log_start: i64,
    /// The partition's log start the session last told (-1: none, or no session).
    pub(crate) told_log_start: i64,
}

/// What to read for one request.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) session_id: i32,
    pub(crate) incremental: bool,
    /// In response order; a topic's partitions are adjacent unless a session's order
    /// interleaves them.
    pub(crate) parts: Vec<PlanPart>,
}

fn request_parts(req: &FetchRequest) -> Vec<PlanPart> {
    let mut out = Vec::with_capacity(req.topics.iter().map(|t| t.partitions.len()).sum());
    for t in &req.topics {
        let topic: Arc<str> = Arc::from(&*t.topic.0);
        out.extend(t.partitions.iter().map(|p| PlanPart {
            topic: topic.clone(),
            partition: p.partition,
            fetch_offset: p.fetch_offset,
            max_bytes: p.partition_max_bytes,
            epoch: p.current_leader_epoch,
            log_start: p.log_start_offset,
            told_log_start: -1,
        }));
    }
    out
}

impl Session {
    /// Adds a partition at the end of the order, or updates its position, limit, epoch and
    /// log start.
    fn upsert(&mut self, p: &PlanPart) {
        let key = (p.topic.clone(), p.partition);
        match self.parts.get_mut(&key) {
            Some(sp) => {
                sp.fetch_offset = p.fetch_offset;
                sp.max_bytes = p.max_bytes;
                sp.epoch = p.epoch;
                sp.log_start = p.log_start;
            }
            None => {
                self.parts.insert(
                    key.clone(),
                    SessionPart {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.max_bytes,
                        epoch: p.epoch,
                        log_start: p.log_start,
                        last_hw: -1,
                        last_log_start: -1,
                    },
                );
                self.order.push(key);
            }
        }
    }
}

impl FetchSessions {
    fn create(&mut self, parts: &[PlanPart], conn: u64) -> i32 {
        let own = self.sessions.values().filter(|s| s.conn == conn).count();
        if own >= MAX_SESSIONS_PER_CONN || self.sessions.len() >= MAX_SESSIONS {
            let victim = self
                .sessions
                .iter()
                .filter(|(_, s)| own < MAX_SESSIONS_PER_CONN || s.conn == conn)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            if let Some(v) = victim {
                self.sessions.remove(&v);
            }
        }
        let mut id: i32 = rand::random::<i32>() & i32::MAX;
        while id == 0 || self.sessions.contains_key(&id) {
            id = rand::random::<i32>() & i32::MAX;
        }
        let mut session = Session {
            conn,
            next_epoch: 1,
            parts: FastMap::with_capacity_and_hasher(parts.len(), Default::default()),
            order: Vec::with_capacity(parts.len()),
            last_used: 0,
        };
        for p in parts {
            session.upsert(p);
        }
        self.clock += 1;
        session.last_used = self.clock;
        self.sessions.insert(id, session);
        id
    }

    /// Forgets the sessions of a closed connection.
    pub(crate) fn drop_conn(&mut self, conn: u64) {
        self.sessions.retain(|_, s| s.conn != conn);
    }

    /// Removes session `id` if `conn` owns it.
    fn close_own(&mut self, id: i32, conn: u64) {
        if self.sessions.get(&id).is_some_and(|s| s.conn == conn) {
            self.sessions.remove(&id);
        }
    }

    /// Resolves the request against its session: the partitions to read, or an error code.
    pub(crate) fn resolve(
        &mut self,
        req: &FetchRequest,
        version: i16,
        conn: u64,
    ) -> Result<Plan, i16> {
        let parts = request_parts(req);
        if version < 7 {
            return Ok(Plan {
                session_id: 0,
                incremental: false,
                parts,
            });
        }
        let (id, epoch) = (req.session_id, req.session_epoch);
        if epoch == -1 {
            self.close_own(id, conn);
            return Ok(Plan {
                session_id: 0,
                incremental: false,
                parts,
            });
        }
        if epoch == 0 {
            self.close_own(id, conn);
            let session_id = self.create(&parts, conn);
            return Ok(Plan {
                session_id,
                incremental: false,
                parts,
            });
        }
        self.clock += 1;
        let clock = self.clock;
        let Some(s) = self.sessions.get_mut(&id).filter(|s| s.conn == conn) else {
            return Err(ResponseError::FetchSessionIdNotFound.code());
        };
        if s.next_epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch.code());
        }
        s.next_epoch = s.next_epoch.wrapping_add(1).max(1);
        s.last_used = clock;
        let mut forgotten = false;
        for f in &req.forgotten_topics_data {
            let topic: Arc<str> = Arc::from(&*f.topic.0);
            for p in &f.partitions {
                forgotten |= s.parts.remove(&(topic.clone(), *p)).is_some();
            }
        }
        if forgotten {
            let parts = &s.parts;
            s.order.retain(|k| parts.contains_key(k));
        }
        for p in &parts {
            s.upsert(p);
        }
        let parts = s
            .order
            .iter()
            .filter_map(|k| {
                let sp = s.parts.get(k)?;
                Some(PlanPart {
                    topic: k.0.clone(),
                    partition: k.1,
                    fetch_offset: sp.fetch_offset,
                    max_bytes: sp.max_bytes,
                    epoch: sp.epoch,
                    log_start: sp.log_start,
                    told_log_start: sp.last_log_start,
                })
            })
            .collect();
        Ok(Plan {
            session_id: id,
            incremental: true,
            parts,
        })
    }

    /// A partition of the plan's incremental session whose log start moved since the
    /// session last reported it (as the plan was resolved): a follower's long poll answers that at once, so the follower moves
    /// its own start and the leader's DeleteRecords, waiting for it, completes. Told once
    /// (`record` notes it), so a follower slow to follow does not make every poll return.
    pub(crate) fn log_start_news(plan: &Plan, results: &[FetchPartResult]) -> bool {
        plan.parts.iter().zip(results).any(|(p, r)| {
            r.error == 0 && p.told_log_start >= 0 && p.told_log_start != r.log_start_offset
        })
    }

    /// Records what was sent; for incremental sessions, says which results to include.
    /// Partitions that returned records move to the end of the session's order.
    pub(crate) fn record(&mut self, plan: &Plan, results: &[FetchPartResult]) -> Vec<bool> {
        let Some(s) = self.sessions.get_mut(&plan.session_id) else {
            return vec![true; results.len()];
        };
        if results.iter().any(|r| !r.batches.is_empty()) && s.order.len() == results.len() {
            let (quiet, served): (Vec<_>, Vec<_>) = std::mem::take(&mut s.order)
                .into_iter()
                .zip(results)
                .partition(|(_, r)| r.batches.is_empty());
            s.order = quiet.into_iter().chain(served).map(|(k, _)| k).collect();
        }
        plan.parts
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let Some(sp) = s.parts.get_mut(&(p.topic.clone(), p.partition)) else {
                    return true;
                };
                let changed = r.error != 0
                    || !r.batches.is_empty()
                    || sp.last_hw != r.high_watermark
                    || sp.last_log_start != r.log_start_offset;
                sp.last_hw = r.high_watermark;
                sp.last_log_start = r.log_start_offset;
                !plan.incremental || changed
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn req(id: i32, epoch: i32, parts: &[(i32, i64)]) -> FetchRequest {
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, o)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(o)
                        })
                        .collect(),
                )])
    }

    #[test]
    fn full_then_incremental_then_errors() {
        let mut s = FetchSessions::default();
        let plan = s.resolve(&req(0, 0, &[(0, 0), (1, 0)]), 12, 1).unwrap(); // ok: test
        assert!(plan.session_id > 0 && !plan.incremental);
        let r = |hw| FetchPartResult {
            high_watermark: hw,
            ..Default::default()
        };
        assert_eq!(s.record(&plan, &[r(0), r(0)]), vec![true, true]);
        let inc = s
            .resolve(&req(plan.session_id, 1, &[(1, 5)]), 12, 1)
            .unwrap(); // ok: test
        assert!(inc.incremental);
        assert_eq!(inc.parts.len(), 2);
        assert_eq!(inc.parts[1].fetch_offset, 5);
        // Only the partition whose high watermark moved is reported.
        assert_eq!(s.record(&inc, &[r(0), r(9)]), vec![false, true]);
        assert_eq!(
            s.resolve(&req(plan.session_id, 1, &[]), 12, 1).unwrap_err(),
            ResponseError::InvalidFetchSessionEpoch.code()
        );
        assert_eq!(
            s.resolve(&req(999, 1, &[]), 12, 1).unwrap_err(),
            ResponseError::FetchSessionIdNotFound.code()
        );
        let legacy = s.resolve(&req(0, -1, &[(0, 3)]), 12, 1).unwrap(); // ok: test
        assert_eq!(legacy.session_id, 0);
    }

    /// A moved log start is news once: the poll that sees it answers at once, the ones
    /// after (the follower not yet moved) wait as usual.
    #[test]
    fn a_moved_log_start_is_news_until_reported() {
        let mut s = FetchSessions::default();
        let plan = s.resolve(&req(0, 0, &[(0, 0)]), 12, 1).unwrap(); // ok: test
        let r = |start| FetchPartResult {
            log_start_offset: start,
            ..Default::default()
        };
        let news = FetchSessions::log_start_news;
        assert!(!news(&plan, &[r(7)]), "never told: nothing to compare");
        s.record(&plan, &[r(0)]);
        let inc = s.resolve(&req(plan.session_id, 1, &[]), 12, 1).unwrap(); // ok: test
        assert!(!news(&inc, &[r(0)]));
        assert!(news(&inc, &[r(7)]));
        assert_eq!(s.record(&inc, &[r(7)]), vec![true]);
        let next = s.resolve(&req(plan.session_id, 2, &[]), 12, 1).unwrap(); // ok: test
        assert!(!news(&next, &[r(7)]), "told once");
        let sessionless = s.resolve(&req(0, -1, &[(0, 0)]), 12, 1).unwrap(); // ok: test
        assert!(!news(&sessionless, &[r(9)]));
    }

    /// As Kafka's cached partitions: an incremental request that does not name a
    /// partition leaves the leader epoch the client last gave for it, which every read
    /// of the session checks.
    #[test]
    fn a_session_keeps_each_partitions_leader_epoch() {
        let mut s = FetchSessions::default();
        let mut first = req(0, 0, &[(0, 0), (1, 0)]);
        first.topics[0].partitions[0].current_leader_epoch = 3;
        let plan = s.resolve(&first, 12, 1).unwrap(); // ok: test
        let epochs = |p: &Plan| {
            p.parts
                .iter()
                .map(|p| (p.partition, p.epoch))
                .collect::<Vec<_>>()
        };
        assert_eq!(epochs(&plan), vec![(0, 3), (1, -1)]);
        let mut next = req(plan.session_id, 1, &[(1, 0)]);
        next.topics[0].partitions[0].current_leader_epoch = 5;
        let inc = s.resolve(&next, 12, 1).unwrap(); // ok: test
        assert_eq!(epochs(&inc), vec![(0, 3), (1, 5)]);
    }

    #[test]
    fn sessions_belong_to_their_connection() {
        let mut s = FetchSessions::default();
        let mine = s.resolve(&req(0, 0, &[(0, 0)]), 12, 1).unwrap(); // ok: test
        let theirs = s.resolve(&req(0, 0, &[(0, 0)]), 12, 2).unwrap(); // ok: test
        assert_ne!(mine.session_id, theirs.session_id);
        // another connection can neither use nor close it
        assert_eq!(
            s.resolve(&req(mine.session_id, 1, &[]), 12, 2).unwrap_err(),
            ResponseError::FetchSessionIdNotFound.code()
        );
        s.resolve(&req(mine.session_id, -1, &[]), 12, 2).unwrap(); // ok: test
        s.resolve(&req(mine.session_id, 0, &[]), 12, 2).unwrap(); // ok: test
        assert!(s.resolve(&req(mine.session_id, 1, &[]), 12, 1).is_ok());
        // one connection creating many sessions evicts only its own
        for _ in 0..50 {
            s.resolve(&req(0, 0, &[(0, 0)]), 12, 3).unwrap(); // ok: test
        }
        assert!(s.resolve(&req(mine.session_id, 2, &[]), 12, 1).is_ok());
        assert!(s.resolve(&req(theirs.session_id, 1, &[]), 12, 2).is_ok());
        s.drop_conn(1);
        assert_eq!(
            s.resolve(&req(mine.session_id, 3, &[]), 12, 1).unwrap_err(),
            ResponseError::FetchSessionIdNotFound.code()
        );
    }

    #[test]
    fn partitions_that_returned_records_go_last() {
        let mut s = FetchSessions::default();
        let plan = s
            .resolve(&req(0, 0, &[(0, 0), (1, 0), (2, 0)]), 12, 1)
            .unwrap(); // ok: test
        let r = |data: bool| FetchPartResult {
            high_watermark: 10,
            batches: if data {
                vec![bytes::Bytes::from_static(b"x")]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        // partition 0 filled the budget; 1 and 2 got nothing
        s.record(&plan, &[r(true), r(false), r(false)]);
        let order = |p: &Plan| p.parts.iter().map(|p| p.partition).collect::<Vec<_>>();
        let inc = s
            .resolve(&req(plan.session_id, 1, &[(0, 5)]), 12, 1)
            .unwrap(); // ok: test
        assert_eq!(order(&inc), vec![1, 2, 0]);
        assert_eq!(inc.parts[2].fetch_offset, 5);
        s.record(&inc, &[r(true), r(false), r(false)]);
        let inc = s.resolve(&req(plan.session_id, 2, &[]), 12, 1).unwrap(); // ok: test
        assert_eq!(order(&inc), vec![2, 0, 1]);
        // nothing returned: the order stays
        s.record(&inc, &[r(false), r(false), r(false)]);
        let inc = s.resolve(&req(plan.session_id, 3, &[]), 12, 1).unwrap(); // ok: test
        assert_eq!(order(&inc), vec![2, 0, 1]);
    }
}
