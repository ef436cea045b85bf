//! Incremental fetch sessions (KIP-227), kept per shard for the connections it serves. A
//! session remembers each partition's fetch offset and what was last reported, so a client
//! sends only changes and gets back only partitions with news. Partitions that returned
//! records move to the end of the session's order (as in Kafka), so when the response
//! budget runs out the others go first next time. Session ids are random and each session
//! belongs to the connection that created it: another connection naming it gets
//! FETCH_SESSION_ID_NOT_FOUND and cannot close it. Bounded: a connection keeps at most
//! `MAX_SESSIONS_PER_CONN` (its own oldest goes first), the shard at most `MAX_SESSIONS`
//! (the least recently used goes), and a closed connection's sessions go with it.

use std::collections::HashMap;

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;

use crate::shard_msg::{FetchPartResult, Tp};

const MAX_SESSIONS: usize = 1000;
const MAX_SESSIONS_PER_CONN: usize = 8;

#[derive(Debug, Clone)]
struct SessionPart {
    fetch_offset: i64,
    max_bytes: i32,
    last_hw: i64,
    last_log_start: i64,
}

#[derive(Debug)]
struct Session {
    /// The connection that created it (`Conn::id`).
    conn: u64,
    next_epoch: i32,
    parts: HashMap<(String, i32), SessionPart>,
    /// The keys of `parts` in the order they are read and answered.
    order: Vec<(String, i32)>,
    last_used: u64,
}

/// Owned by one shard; never crosses cores.
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    sessions: HashMap<i32, Session>,
    clock: u64,
}

/// What to read for one request.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) session_id: i32,
    pub(crate) incremental: bool,
    /// (partition, fetch offset, partition max bytes), in response order.
    pub(crate) parts: Vec<(Tp, i64, i32)>,
}

fn request_parts(req: &FetchRequest) -> Vec<(Tp, i64, i32)> {
    req.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    Tp {
                        topic: t.topic.0.to_string(),
                        partition: p.partition,
                    },
                    p.fetch_offset,
                    p.partition_max_bytes,
                )
            })
        })
        .collect()
}

impl Session {
    /// Adds a partition at the end of the order, or updates its position and limit.
    fn upsert(&mut self, tp: &Tp, fetch_offset: i64, max_bytes: i32) {
        let key = (tp.topic.clone(), tp.partition);
        match self.parts.get_mut(&key) {
            Some(sp) => {
                sp.fetch_offset = fetch_offset;
                sp.max_bytes = max_bytes;
            }
            None => {
                self.parts.insert(
                    key.clone(),
                    SessionPart {
                        fetch_offset,
                        max_bytes,
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
    fn create(&mut self, parts: &[(Tp, i64, i32)], conn: u64) -> i32 {
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
            parts: HashMap::with_capacity(parts.len()),
            order: Vec::with_capacity(parts.len()),
            last_used: 0,
        };
        for (tp, off, max) in parts {
            session.upsert(tp, *off, *max);
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
            for p in &f.partitions {
                forgotten |= s.parts.remove(&(f.topic.0.to_string(), *p)).is_some();
            }
        }
        if forgotten {
            let parts = &s.parts;
            s.order.retain(|k| parts.contains_key(k));
        }
        for (tp, off, max) in &parts {
            s.upsert(tp, *off, *max);
        }
        let parts = s
            .order
            .iter()
            .filter_map(|k| {
                let sp = s.parts.get(k)?;
                Some((
                    Tp {
                        topic: k.0.clone(),
                        partition: k.1,
                    },
                    sp.fetch_offset,
                    sp.max_bytes,
                ))
            })
            .collect();
        Ok(Plan {
            session_id: id,
            incremental: true,
            parts,
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
            .map(|((tp, _, _), r)| {
                let Some(sp) = s.parts.get_mut(&(tp.topic.clone(), tp.partition)) else {
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
        assert_eq!(inc.parts[1].1, 5);
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
        let order = |p: &Plan| {
            p.parts
                .iter()
                .map(|(tp, _, _)| tp.partition)
                .collect::<Vec<_>>()
        };
        let inc = s
            .resolve(&req(plan.session_id, 1, &[(0, 5)]), 12, 1)
            .unwrap(); // ok: test
        assert_eq!(order(&inc), vec![1, 2, 0]);
        assert_eq!(inc.parts[2].1, 5);
        s.record(&inc, &[r(true), r(false), r(false)]);
        let inc = s.resolve(&req(plan.session_id, 2, &[]), 12, 1).unwrap(); // ok: test
        assert_eq!(order(&inc), vec![2, 0, 1]);
        // nothing returned: the order stays
        s.record(&inc, &[r(false), r(false), r(false)]);
        let inc = s.resolve(&req(plan.session_id, 3, &[]), 12, 1).unwrap(); // ok: test
        assert_eq!(order(&inc), vec![2, 0, 1]);
    }
}
