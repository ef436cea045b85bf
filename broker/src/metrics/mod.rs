//! Metrics: plain counters kept by each shard (`ShardMetrics`, no locks, no atomics), a
//! snapshot of them sent across the mesh on scrape (`ShardSnapshot`), and the endpoint on
//! shard 0 that merges the snapshots into the Prometheus text format.
//!
//! ```text
//!  GET /metrics ─► shard 0 (http.rs) ─► ShardRequest::Metrics to every shard (scrape.rs)
//!                                       ◄─ ShardSnapshot: counters, committed offsets,
//!                                          high watermarks, storage and executor stats
//!                  merge, lag = high watermark − committed offset ─► text.rs ─► response
//! ```
//! Counting costs a `Cell`/`RefCell` update on the shard where the event happens; nothing is
//! gathered until someone scrapes.

mod answers;
pub(crate) mod controller_http;
pub(crate) mod http;
mod remote_hw;
mod scrape;
mod text;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(crate) use answers::AnswerErrors;
use sluice_storage::{LatencyHistogram, StorageMetrics};

use crate::handlers::fetch_session::PlanPart;
use crate::metadata::image::PartitionState;
use crate::shard::ShardCtx;
use crate::shard_msg::FetchPartResult;
use kafka_protocol::messages::ApiKey;

/// Per-topic traffic counters of one shard.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicCounters {
    /// Record-batch bytes appended from producers.
    pub(crate) bytes_in: u64,
    pub(crate) records_in: u64,
    /// Record-batch bytes sent to consumers.
    pub(crate) bytes_out: u64,
    /// Record-batch bytes copied from leaders (this node a follower).
    pub(crate) replication_bytes_in: u64,
    /// Record-batch bytes sent to followers (this node the leader).
    pub(crate) replication_bytes_out: u64,
}

/// Per-API request counters of one shard.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiCounters {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) duration: LatencyHistogram,
}

/// The leadership of a partition this shard owns, as last seen in the image.
#[derive(Debug)]
struct Led {
    leader_epoch: i32,
    isr: Vec<i32>,
}

/// Authentication outcomes of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AuthCounters {
    pub(crate) tls_failed: u64,
    pub(crate) sasl_failed: u64,
    pub(crate) sasl_ok: u64,
    /// Connections closed at a request after their SASL session expired (KIP-368).
    pub(crate) sasl_expired: u64,
}

/// Counters of one shard. Owned by its shard (a field of `ShardCtx`, and the heartbeat
/// task's handle); never crosses cores: scrapes get a `ShardSnapshot` copy.
#[derive(Default)]
pub(crate) struct ShardMetrics {
    topics: RefCell<crate::fast_map::FastMap<String, TopicCounters>>,
    apis: RefCell<BTreeMap<i16, ApiCounters>>,
    /// Partitions this shard owns and this node leads.
    led: RefCell<HashMap<(String, i32), Led>>,
    isr_shrinks: Cell<u64>,
    isr_expands: Cell<u64>,
    leader_elections: Cell<u64>,
    /// Leadership and ISR changes count from StartServing on (`start_counting`): before,
    /// a restarted node replays its own metadata log, which may name it leader of
    /// partitions that moved while it was down.
    counting: Cell<bool>,
    /// Client connections open on this shard.
    connections: Cell<u64>,
    /// Authentication outcomes: TLS handshakes refused, SASL logins refused and accepted.
    auth: Cell<AuthCounters>,
    /// glommio's executor stats are taken (reset) on each read: the totals live here.
    runtime: Cell<Duration>,
    tasks: Cell<u64>,
    /// How late the shard's heartbeat timer (10 ms, up to 50 ms when idle) ran: the wait of a ready task in the
    /// default task queue, where connections and mesh requests run.
    task_lag: RefCell<LatencyHistogram>,
}

/// A copy of one shard's metrics for the scraping shard. `Send`, owns its data.
#[derive(Debug, Default)]
pub(crate) struct ShardSnapshot {
    pub(crate) shard: usize,
    pub(crate) topics: Vec<(String, TopicCounters)>,
    pub(crate) apis: Vec<(i16, ApiCounters)>,
    pub(crate) isr_shrinks: u64,
    pub(crate) isr_expands: u64,
    pub(crate) leader_elections: u64,
    pub(crate) connections: u64,
    pub(crate) auth: AuthCounters,
    pub(crate) storage: StorageMetrics,
    pub(crate) unflushed_bytes: u64,
    pub(crate) journal_behind_bytes: u64,
    /// CPU time of the shard thread (user + system).
    pub(crate) busy: Duration,
    /// Time the executor was not parked (running tasks or polling io_uring).
    pub(crate) runtime: Duration,
    pub(crate) tasks: u64,
    pub(crate) task_lag: LatencyHistogram,
    /// (group, topic, partition, committed offset) from this shard's group coordinators.
    pub(crate) committed: Vec<(String, String, i32, i64)>,
    /// (topic, partition, high watermark) of the partitions this shard holds a replica
    /// of: the leader's own, or the one a follower last heard from its leader.
    pub(crate) high_watermarks: Vec<(String, i32, i64)>,
}

impl ShardMetrics {
    fn topic(&self, topic: &str, f: impl FnOnce(&mut TopicCounters)) {
        let mut topics = self.topics.borrow_mut();
        match topics.get_mut(topic) {
            Some(c) => f(c),
            None => f(topics.entry(topic.to_string()).or_default()),
        }
    }

    /// A producer's batches were appended (on the partition's shard).
    pub(crate) fn produced(&self, topic: &str, bytes: usize, records: u64) {
        self.topic(topic, |c| {
            c.bytes_in += bytes as u64;
            c.records_in += records;
        });
    }

    /// A follower appended `bytes` copied from its leader.
    pub(crate) fn replicated_in(&self, topic: &str, bytes: usize) {
        self.topic(topic, |c| c.replication_bytes_in += bytes as u64);
    }

    /// A Fetch answer carries `bytes` of `topic` (to a follower if `replica`).
    pub(crate) fn fetched(&self, topic: &str, bytes: usize, replica: bool) {
        if bytes == 0 {
            return;
        }
        self.topic(topic, |c| {
            if replica {
                c.replication_bytes_out += bytes as u64
            } else {
                c.bytes_out += bytes as u64
            }
        });
    }

    /// The topic is gone: its series go too.
    pub(crate) fn topic_removed(&self, topic: &str) {
        self.topics.borrow_mut().remove(topic);
        self.led.borrow_mut().retain(|(t, _), _| t != topic);
    }

    /// A request of `api` was answered (or closed its connection: `failed`) after `took`.
    pub(crate) fn request_done(&self, api: i16, took: Duration, failed: bool) {
        let mut apis = self.apis.borrow_mut();
        let c = apis.entry(api).or_default();
        c.requests += 1;
        c.errors += u64::from(failed);
        c.duration.observe(took);
    }

    /// A request of `api` was answered with an error code (top level or any partition).
    pub(crate) fn answered_error(&self, api: i16) {
        self.apis.borrow_mut().entry(api).or_default().errors += 1;
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.set(self.connections.get() + 1);
    }

    pub(crate) fn tls_handshake_failed(&self) {
        let mut a = self.auth.get();
        a.tls_failed += 1;
        self.auth.set(a);
    }

    /// A SASL authentication ended: accepted or refused.
    pub(crate) fn sasl_authenticated(&self, ok: bool) {
        let mut a = self.auth.get();
        if ok {
            a.sasl_ok += 1;
        } else {
            a.sasl_failed += 1;
        }
        self.auth.set(a);
    }

    /// A connection was closed because its SASL session expired (KIP-368).
    pub(crate) fn sasl_session_expired(&self) {
        let mut a = self.auth.get();
        a.sasl_expired += 1;
        self.auth.set(a);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
    }

    /// Tasks this shard has run since it started (call on the shard). Reading glommio's
    /// figures resets them, so they are added to this shard's totals here.
    pub(crate) fn tasks_executed(&self) -> u64 {
        let stats = glommio::executor().executor_stats();
        self.runtime.set(self.runtime.get() + stats.total_runtime());
        self.tasks.set(self.tasks.get() + stats.tasks_executed());
        self.tasks.get()
    }

    /// The heartbeat timer was due `lag` before it ran.
    pub(crate) fn heartbeat_lag(&self, lag: Duration) {
        self.task_lag.borrow_mut().observe(lag);
    }

    /// The image now says `state` for a partition this shard owns: counts leaderships
    /// this node gained and, under one leadership, ISR shrinks and expands.
    pub(crate) fn partition_changed(
        &self,
        topic: &str,
        partition: i32,
        state: &PartitionState,
        node: i32,
    ) {
        let mut led = self.led.borrow_mut();
        let key = (topic.to_string(), partition);
        if state.leader != node {
            led.remove(&key);
            return;
        }
        match led.get(&key) {
            _ if !self.counting.get() => {}
            Some(before) if before.leader_epoch == state.leader_epoch => {
                if state.isr.iter().any(|r| !before.isr.contains(r)) {
                    self.isr_expands.set(self.isr_expands.get() + 1);
                }
                if before.isr.iter().any(|r| !state.isr.contains(r)) {
                    self.isr_shrinks.set(self.isr_shrinks.get() + 1);
                }
            }
            _ => self.leader_elections.set(self.leader_elections.get() + 1),
        }
        led.insert(
            key,
            Led {
                leader_epoch: state.leader_epoch,
                isr: state.isr.clone(),
            },
        );
    }

    /// At StartServing: the counters start, with every partition the caught-up image says
    /// this shard leads counted as gained.
    pub(crate) fn start_counting(&self) {
        if !self.counting.replace(true) {
            let led = self.led.borrow().len() as u64;
            self.leader_elections.set(self.leader_elections.get() + led);
        }
    }

    /// This shard's counters now (call on the shard: the executor and thread figures are
    /// the calling thread's). Committed offsets and high watermarks are added by the
    /// caller, which knows the coordinators and logs.
    pub(crate) fn snapshot(&self, shard: usize) -> ShardSnapshot {
        self.tasks_executed();
        ShardSnapshot {
            shard,
            topics: self
                .topics
                .borrow()
                .iter()
                .map(|(t, c)| (t.clone(), c.clone()))
                .collect(),
            apis: self
                .apis
                .borrow()
                .iter()
                .map(|(a, c)| (*a, c.clone()))
                .collect(),
            isr_shrinks: self.isr_shrinks.get(),
            isr_expands: self.isr_expands.get(),
            leader_elections: self.leader_elections.get(),
            connections: self.connections.get(),
            auth: self.auth.get(),
            busy: thread_cpu_time(),
            runtime: self.runtime.get(),
            tasks: self.tasks.get(),
            task_lag: self.task_lag.borrow().clone(),
            ..ShardSnapshot::default()
        }
    }
}

/// A Fetch answer is about to be encoded (on the connection's shard): counts the record
/// bytes of each partition it carries, by topic, and the answer as an error if any
/// partition in it has one.
pub(crate) fn count_fetch(
    ctx: &ShardCtx,
    parts: &[PlanPart],
    results: &[FetchPartResult],
    include: &[bool],
    replica: bool,
) {
    let mut error = false;
    for ((p, r), included) in parts.iter().zip(results).zip(include) {
        if *included {
            error |= r.error != 0;
            ctx.metrics.fetched(&p.topic, r.bytes(), replica);
        }
    }
    if error {
        ctx.metrics.answered_error(ApiKey::Fetch as i16);
    }
}

/// CPU time (user + system) of the calling thread; zero if the clock cannot be read.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass by pointer; the clock id is a
    // constant the kernel knows. No memory is shared with anything else.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: i32, epoch: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            ..PartitionState::default()
        }
    }

    #[test]
    fn leaderships_and_isr_changes_are_counted_once_each() {
        let m = ShardMetrics::default();
        m.start_counting();
        m.partition_changed("t", 0, &state(1, 0, &[1, 2, 3]), 1); // gained
        m.partition_changed("t", 0, &state(1, 0, &[1, 3]), 1); // shrink
        m.partition_changed("t", 0, &state(1, 0, &[3, 1]), 1); // same set: nothing
        m.partition_changed("t", 0, &state(1, 0, &[1, 2, 3]), 1); // expand
        m.partition_changed("t", 0, &state(2, 1, &[2, 3]), 1); // lost
        m.partition_changed("t", 0, &state(1, 2, &[1]), 1); // gained again
        m.partition_changed("u", 0, &state(2, 0, &[2]), 1); // another leader: nothing
        assert_eq!(m.leader_elections.get(), 2);
        assert_eq!(m.isr_shrinks.get(), 1);
        assert_eq!(m.isr_expands.get(), 1);
    }

    /// What a restarted node replays before StartServing (its own, possibly stale,
    /// metadata log) is not counted; the partitions it then leads count as gained once.
    #[test]
    fn changes_replayed_before_serving_are_not_counted() {
        let m = ShardMetrics::default();
        m.partition_changed("t", 0, &state(1, 0, &[1, 2, 3]), 1); // led before the crash
        m.partition_changed("t", 1, &state(1, 0, &[1, 2, 3]), 1);
        m.partition_changed("t", 0, &state(1, 0, &[1, 3]), 1); // a shrink then
        m.partition_changed("t", 1, &state(2, 1, &[2, 3]), 1); // moved while down
        m.start_counting();
        assert_eq!(m.leader_elections.get(), 1);
        assert_eq!(m.isr_shrinks.get(), 0);
        m.partition_changed("t", 0, &state(1, 0, &[1]), 1); // a shrink in service
        assert_eq!(m.isr_shrinks.get(), 1);
        m.start_counting(); // once
        assert_eq!(m.leader_elections.get(), 1);
    }

    #[test]
    fn topic_counters_add_up_and_go_with_their_topic() {
        let m = ShardMetrics::default();
        m.produced("a", 100, 3);
        m.produced("a", 50, 1);
        m.fetched("a", 70, false);
        m.fetched("a", 30, true);
        m.replicated_in("b", 9);
        let topics = m.topics.borrow().clone();
        assert_eq!(topics["a"].bytes_in, 150);
        assert_eq!(topics["a"].records_in, 4);
        assert_eq!(topics["a"].bytes_out, 70);
        assert_eq!(topics["a"].replication_bytes_out, 30);
        assert_eq!(topics["b"].replication_bytes_in, 9);
        m.topic_removed("a");
        assert!(!m.topics.borrow().contains_key("a"));
    }
}
