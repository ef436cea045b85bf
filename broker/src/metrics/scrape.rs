//! A scrape: every shard answers `ShardRequest::Metrics` with a `ShardSnapshot` taken on
//! its own thread; the scraping shard adds them up, joins committed offsets with high
//! watermarks into consumer lag, reads partition health from its copy of the image, and
//! writes the exposition. Family names and help texts are defined here, once.
//!
//! ```text
//!  shard k: snapshot(counters) + committed offsets of its coordinators
//!                              + high watermarks of its replicas ──► scraping shard
//!  scraping shard: Σ counters, lag{group,topic,partition} = max(0, hw − committed)
//!                  (hw of a partition led elsewhere: asked of its leader, remote_hw.rs)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::ApiKey;
use sluice_storage::{LatencyHistogram, StorageMetrics};

use super::text::{Exposition, Kind};
use super::{ApiCounters, ShardSnapshot, TopicCounters};
use crate::quorum::QuorumReading;
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse};

impl ShardCtx {
    /// This shard's part of a scrape (runs on this shard, yielding between partitions).
    pub(crate) async fn metrics_snapshot(&self) -> ShardSnapshot {
        let mut snap = self.metrics.snapshot(self.id);
        snap.storage = self.storage.metrics();
        snap.unflushed_bytes = self.storage.unflushed_bytes() as u64;
        snap.journal_behind_bytes = self.storage.journal_behind_bytes() as u64;
        let coordinators: Vec<_> = self.groups.borrow().values().cloned().collect();
        for c in coordinators {
            snap.committed.extend(c.committed_offsets());
            glommio::yield_if_needed().await;
        }
        for (i, (topic, partition, log)) in self.owned_logs().into_iter().enumerate() {
            if let Some(hw) = self.known_high_watermark(&topic, partition, &log) {
                snap.high_watermarks.push((topic, partition, hw));
            }
            breathe(i).await;
        }
        snap
    }
}

/// Lets other tasks of the shard run every few hundred steps of a long loop: a scrape
/// of many partitions or groups must not hold the shard.
async fn breathe(i: usize) {
    if i % 256 == 255 {
        glommio::yield_if_needed().await;
    }
}

/// Every shard's snapshot, added up.
#[derive(Default)]
struct Merged {
    topics: BTreeMap<String, TopicCounters>,
    apis: BTreeMap<i16, ApiCounters>,
    isr_shrinks: u64,
    isr_expands: u64,
    leader_elections: u64,
    connections: u64,
    auth: super::AuthCounters,
    storage: StorageMetrics,
    unflushed_bytes: u64,
    journal_behind_bytes: u64,
    shards: Vec<ShardSnapshot>,
    /// (group, topic, partition) → lag.
    lag: BTreeMap<(String, String, i32), i64>,
    /// Committed offsets (group, topic, partition, offset) of partitions without a high
    /// watermark here: led elsewhere, asked of their leaders (`remote_hw.rs`).
    remote: Vec<(String, String, i32, i64)>,
}

fn add_storage(to: &mut StorageMetrics, m: &StorageMetrics) {
    to.bytes_appended += m.bytes_appended;
    to.batches_appended += m.batches_appended;
    to.flushes += m.flushes;
    to.flush_cycles += m.flush_cycles;
    to.flush_cycle_durations.merge(&m.flush_cycle_durations);
    to.fsyncs += m.fsyncs;
    to.fsync_micros_total += m.fsync_micros_total;
    to.flush_dir_fsyncs += m.flush_dir_fsyncs;
    to.fsync_durations.merge(&m.fsync_durations);
    to.bytes_written += m.bytes_written;
    to.cache_hits += m.cache_hits;
    to.cache_misses += m.cache_misses;
    to.readahead_hits += m.readahead_hits;
    to.open_files += m.open_files;
    to.retired_files += m.retired_files;
    to.cleaner_passes += m.cleaner_passes;
    to.cleaner_bytes_read += m.cleaner_bytes_read;
    to.cleaner_bytes_written += m.cleaner_bytes_written;
    to.cleaner_bytes_reclaimed += m.cleaner_bytes_reclaimed;
    to.cleaner_records_removed += m.cleaner_records_removed;
    to.journal_bytes_written += m.journal_bytes_written;
    to.journal_checkpoints += m.journal_checkpoints;
}

fn merge(mut snaps: Vec<ShardSnapshot>) -> Merged {
    let mut m = Merged::default();
    let mut hws: HashMap<(String, i32), i64> = HashMap::new();
    let mut committed = Vec::new();
    for s in snaps.iter_mut() {
        for (topic, c) in s.topics.drain(..) {
            let t = m.topics.entry(topic).or_default();
            t.bytes_in += c.bytes_in;
            t.records_in += c.records_in;
            t.bytes_out += c.bytes_out;
            t.replication_bytes_in += c.replication_bytes_in;
            t.replication_bytes_out += c.replication_bytes_out;
        }
        for (api, c) in s.apis.drain(..) {
            let a = m.apis.entry(api).or_default();
            a.requests += c.requests;
            a.errors += c.errors;
            a.duration.merge(&c.duration);
        }
        m.isr_shrinks += s.isr_shrinks;
        m.isr_expands += s.isr_expands;
        m.leader_elections += s.leader_elections;
        m.connections += s.connections;
        m.auth.tls_failed += s.auth.tls_failed;
        m.auth.sasl_failed += s.auth.sasl_failed;
        m.auth.sasl_ok += s.auth.sasl_ok;
        m.auth.sasl_expired += s.auth.sasl_expired;
        add_storage(&mut m.storage, &s.storage);
        m.unflushed_bytes += s.unflushed_bytes;
        m.journal_behind_bytes += s.journal_behind_bytes;
        for (topic, partition, hw) in s.high_watermarks.drain(..) {
            hws.insert((topic, partition), hw);
        }
        committed.append(&mut s.committed);
    }
    for (group, topic, partition, offset) in committed {
        match hws.get(&(topic.clone(), partition)) {
            Some(hw) => {
                m.lag
                    .insert((group, topic, partition), (hw - offset).max(0));
            }
            None => m.remote.push((group, topic, partition, offset)),
        }
    }
    snaps.sort_by_key(|s| s.shard);
    m.shards = snaps;
    m
}

/// Partition health as this shard's image shows it for this node.
#[derive(Default)]
struct Health {
    /// Partitions this node leads whose ISR is smaller than their replica set (replicas
    /// a reassignment is adding left out, as Kafka counts).
    under_replicated: u64,
    /// Partitions this node leads.
    leaders: u64,
    /// Partitions with a replica on this node.
    replicas: u64,
    /// Partitions of the whole cluster without a leader (from this node's image).
    offline: u64,
}

fn health(ctx: &ShardCtx) -> Health {
    let image = ctx.image.borrow();
    let mut h = Health::default();
    for t in image.topics() {
        for p in &t.parts {
            if p.replicas.contains(&ctx.node_id) {
                h.replicas += 1;
            }
            if p.leader < 0 {
                h.offline += 1;
            }
            if p.leader == ctx.node_id {
                h.leaders += 1;
                if p.isr.len() < p.replicas.len().saturating_sub(p.adding.len()) {
                    h.under_replicated += 1;
                }
            }
        }
    }
    h
}

fn api_name(api: i16) -> String {
    ApiKey::try_from(api).map_or_else(|_| "Unknown".to_string(), |k| format!("{k:?}"))
}

/// Asks every shard for its snapshot and writes the exposition (on the calling shard).
/// `ready` is what `/ready` would answer now.
pub(crate) async fn render(ctx: &Rc<ShardCtx>, ready: bool, quorum: &QuorumReading) -> String {
    let mut pending = Vec::with_capacity(ctx.shards);
    for s in 0..ctx.shards {
        pending.push(ctx.submit(s, ShardRequest::Metrics).await);
    }
    let mut snaps = Vec::with_capacity(pending.len());
    for p in pending {
        if let ShardResponse::Metrics(s) = p.await {
            snaps.push(*s);
        }
    }
    let mut m = merge(snaps);
    if !m.remote.is_empty() {
        let parts: Vec<(String, i32)> = m
            .remote
            .iter()
            .map(|(_, t, p, _)| (t.clone(), *p))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let hws = super::remote_hw::high_watermarks(ctx, &parts).await;
        for (group, topic, partition, offset) in std::mem::take(&mut m.remote) {
            if let Some(hw) = hws.get(&(topic.clone(), partition)) {
                m.lag
                    .insert((group, topic, partition), (hw - offset).max(0));
            }
        }
    }
    glommio::yield_if_needed().await;
    let h = health(ctx);
    write(&m, &h, ready, quorum).await
}

async fn topic_family(
    e: &mut Exposition,
    m: &Merged,
    name: &str,
    help: &str,
    value: impl Fn(&TopicCounters) -> u64,
) {
    e.family(name, Kind::Counter, help);
    for (i, (topic, c)) in m.topics.iter().enumerate() {
        e.int(name, &[("topic", topic)], value(c));
        breathe(i).await;
    }
}

fn counter(e: &mut Exposition, name: &str, help: &str, value: u64) {
    e.family(name, Kind::Counter, help);
    e.int(name, &[], value);
}

fn gauge(e: &mut Exposition, name: &str, help: &str, value: u64) {
    e.family(name, Kind::Gauge, help);
    e.int(name, &[], value);
}

fn histogram(e: &mut Exposition, name: &str, help: &str, h: &LatencyHistogram) {
    e.family(name, Kind::Histogram, help);
    e.histogram(name, &[], h);
}

/// The metadata quorum as this node sees it: on every node, and all a controller-only
/// node's endpoint serves (`controller_http.rs`).
pub(crate) fn quorum_families(e: &mut Exposition, q: &QuorumReading) {
    gauge(
        e,
        "sluice_controller_active",
        "1 on the active controller (the metadata quorum's leader), else 0; summed over the cluster it is 1 while the quorum works.",
        u64::from(q.active),
    );
    gauge(
        e,
        "sluice_controller_voter",
        "1 if this node is a voter of the metadata quorum (a controller), 0 for a broker following the log.",
        u64::from(q.voter),
    );
    e.family(
        "sluice_metadata_quorum_leader",
        Kind::Gauge,
        "Node id of the metadata quorum's leader as this node knows it; -1 when it knows none.",
    );
    e.signed("sluice_metadata_quorum_leader", &[], q.leader);
    gauge(
        e,
        "sluice_metadata_quorum_term",
        "The metadata quorum's current raft term as this node knows it.",
        q.term,
    );
    gauge(
        e,
        "sluice_metadata_quorum_commit_index",
        "Index of the last metadata-log entry this node knows to be committed.",
        q.commit,
    );
    gauge(
        e,
        "sluice_metadata_applied_index",
        "Index of the last metadata-log entry this node has applied (behind the commit index: the node is catching up).",
        q.applied,
    );
}

async fn write(m: &Merged, h: &Health, ready: bool, quorum: &QuorumReading) -> String {
    let mut e = Exposition::default();
    quorum_families(&mut e, quorum);
    topic_family(
        &mut e,
        m,
        "sluice_bytes_in_total",
        "Record-batch bytes appended from producers, by topic.",
        |c| c.bytes_in,
    )
    .await;
    topic_family(
        &mut e,
        m,
        "sluice_records_in_total",
        "Records appended from producers, by topic.",
        |c| c.records_in,
    )
    .await;
    topic_family(
        &mut e,
        m,
        "sluice_bytes_out_total",
        "Record-batch bytes sent to consumers in Fetch answers, by topic.",
        |c| c.bytes_out,
    )
    .await;
    topic_family(
        &mut e,
        m,
        "sluice_replication_bytes_in_total",
        "Record-batch bytes this node copied from partition leaders, by topic.",
        |c| c.replication_bytes_in,
    )
    .await;
    topic_family(
        &mut e,
        m,
        "sluice_replication_bytes_out_total",
        "Record-batch bytes sent to followers in Fetch answers, by topic.",
        |c| c.replication_bytes_out,
    )
    .await;

    let apis: Vec<(String, &ApiCounters)> = m.apis.iter().map(|(a, c)| (api_name(*a), c)).collect();
    e.family(
        "sluice_requests_total",
        Kind::Counter,
        "Kafka requests read, by API.",
    );
    for (api, c) in &apis {
        e.int("sluice_requests_total", &[("api", api)], c.requests);
    }
    e.family(
        "sluice_request_errors_total",
        Kind::Counter,
        "Kafka requests answered with an error code (top level or for any partition, group or resource) or not answered (connection closed, UNSUPPORTED_VERSION, past request.deadline.ms), by API.",
    );
    for (api, c) in &apis {
        e.int("sluice_request_errors_total", &[("api", api)], c.errors);
    }
    e.family(
        "sluice_request_duration_seconds",
        Kind::Histogram,
        "Time from reading a Kafka request to its answer being ready to write (long polls and acks=all waits included), by API.",
    );
    for (api, c) in &apis {
        e.histogram(
            "sluice_request_duration_seconds",
            &[("api", api)],
            &c.duration,
        );
    }

    e.family(
        "sluice_consumer_group_lag",
        Kind::Gauge,
        "High watermark minus the group's committed offset, for committed partitions with a replica on the group coordinator's node.",
    );
    for (i, ((group, topic, partition), lag)) in m.lag.iter().enumerate() {
        let p = partition.to_string();
        e.signed(
            "sluice_consumer_group_lag",
            &[("group", group), ("topic", topic), ("partition", &p)],
            *lag,
        );
        breathe(i).await;
    }

    gauge(
        &mut e,
        "sluice_under_replicated_partitions",
        "Partitions this broker leads whose ISR is smaller than their replica set (replicas a reassignment is adding left out).",
        h.under_replicated,
    );
    gauge(
        &mut e,
        "sluice_offline_partitions",
        "Partitions of the cluster without a leader (none of their replicas can lead: every in-sync one is down), from this broker's metadata: each broker reports the cluster's count (Kafka's OfflinePartitionsCount).",
        h.offline,
    );
    gauge(
        &mut e,
        "sluice_leader_partitions",
        "Partitions this broker leads.",
        h.leaders,
    );
    gauge(
        &mut e,
        "sluice_partitions",
        "Partitions with a replica on this broker.",
        h.replicas,
    );
    counter(
        &mut e,
        "sluice_isr_shrinks_total",
        "ISR shrinks of partitions this broker leads.",
        m.isr_shrinks,
    );
    counter(
        &mut e,
        "sluice_isr_expands_total",
        "ISR expansions of partitions this broker leads.",
        m.isr_expands,
    );
    counter(
        &mut e,
        "sluice_leader_elections_total",
        "Partition leaderships this broker gained (each new leader epoch it leads).",
        m.leader_elections,
    );

    let s = &m.storage;
    counter(
        &mut e,
        "sluice_cleaner_passes_total",
        "Log cleaner passes completed (cleaned segments swapped in).",
        s.cleaner_passes,
    );
    counter(
        &mut e,
        "sluice_cleaner_bytes_read_total",
        "Bytes the log cleaner read (key maps and copies).",
        s.cleaner_bytes_read,
    );
    counter(
        &mut e,
        "sluice_cleaner_bytes_written_total",
        "Bytes of cleaned segments the log cleaner wrote.",
        s.cleaner_bytes_written,
    );
    counter(
        &mut e,
        "sluice_cleaner_bytes_reclaimed_total",
        "Bytes by which cleaned segments were smaller than those they replaced.",
        s.cleaner_bytes_reclaimed,
    );
    counter(
        &mut e,
        "sluice_cleaner_records_removed_total",
        "Records the log cleaner removed (superseded, expired tombstones).",
        s.cleaner_records_removed,
    );
    histogram(
        &mut e,
        "sluice_fsync_duration_seconds",
        "fdatasync of each segment written in a group commit.",
        &s.fsync_durations,
    );
    counter(
        &mut e,
        "sluice_fsyncs_total",
        "fdatasync calls on segment files (group commits and sealing rolled segments).",
        s.fsyncs,
    );
    counter(
        &mut e,
        "sluice_storage_flush_dir_fsyncs_total",
        "Directory fsyncs group commits waited for (segment files they created).",
        s.flush_dir_fsyncs,
    );
    counter(
        &mut e,
        "sluice_storage_flushes_total",
        "Group commits (one per log with pending batches per flusher cycle).",
        s.flushes,
    );
    counter(
        &mut e,
        "sluice_storage_flush_cycles_total",
        "Flusher cycles (each makes every log on the shard's dirty list durable).",
        s.flush_cycles,
    );
    histogram(
        &mut e,
        "sluice_storage_flush_cycle_seconds",
        "Wall time of each flusher cycle, from taking the dirty list to the last durable signal.",
        &s.flush_cycle_durations,
    );
    counter(&mut e, "sluice_storage_bytes_written_total", "Bytes written to segment files by the flusher (whole pages: the rewritten tail page and padding included).", s.bytes_written);
    counter(
        &mut e,
        "sluice_storage_bytes_appended_total",
        "Record-batch bytes appended to logs (producers, followers and group coordinators).",
        s.bytes_appended,
    );
    gauge(
        &mut e,
        "sluice_storage_unflushed_bytes",
        "Bytes appended and not yet durable.",
        m.unflushed_bytes,
    );
    gauge(
        &mut e,
        "sluice_storage_journal_behind_bytes",
        "With storage.flush.sync=journal: bytes durable in the journal, not yet written into their segment files (held in memory).",
        m.journal_behind_bytes,
    );
    counter(
        &mut e,
        "sluice_storage_journal_bytes_written_total",
        "With storage.flush.sync=journal: bytes of journal record sets written (whole pages).",
        s.journal_bytes_written,
    );
    counter(
        &mut e,
        "sluice_storage_journal_checkpoints_total",
        "With storage.flush.sync=journal: journal checkpoints (segments written since the last one synced, an epoch retired).",
        s.journal_checkpoints,
    );
    gauge(
        &mut e,
        "sluice_storage_open_files",
        "Open segment files.",
        s.open_files,
    );
    gauge(
        &mut e,
        "sluice_storage_retired_files",
        "Segment files removed from their logs (retention, compaction, deleted topics) whose disk space is still being freed, a few MiB per flush cycle.",
        s.retired_files,
    );
    counter(
        &mut e,
        "sluice_cache_hits_total",
        "Batches read from memory (batch cache or pending queue).",
        s.cache_hits,
    );
    counter(
        &mut e,
        "sluice_cache_misses_total",
        "Batches read from a read-ahead window or disk.",
        s.cache_misses + s.readahead_hits,
    );
    counter(
        &mut e,
        "sluice_readahead_hits_total",
        "Batches read from a read-ahead window.",
        s.readahead_hits,
    );
    counter(
        &mut e,
        "sluice_readahead_misses_total",
        "Batches read from disk (in neither memory nor a read-ahead window).",
        s.cache_misses,
    );

    gauge(
        &mut e,
        "sluice_connections",
        "Open Kafka client connections.",
        m.connections,
    );
    counter(
        &mut e,
        "sluice_tls_handshake_failures_total",
        "TLS handshakes refused or timed out on SSL and SASL_SSL listeners (untrusted or expired client certificates, plaintext clients on a TLS port).",
        m.auth.tls_failed,
    );
    counter(
        &mut e,
        "sluice_sasl_authentication_failures_total",
        "SASL logins refused (wrong password, unknown user, bad mechanism).",
        m.auth.sasl_failed,
    );
    counter(
        &mut e,
        "sluice_sasl_authentications_total",
        "SASL logins accepted (including re-authentications).",
        m.auth.sasl_ok,
    );
    counter(
        &mut e,
        "sluice_sasl_expired_connections_total",
        "Connections closed because a request came after their SASL session expired without re-authentication (connections.max.reauth.ms; Kafka's expired-connections-killed-count).",
        m.auth.sasl_expired,
    );
    gauge(
        &mut e,
        "sluice_broker_ready",
        "1 when /ready answers 200: registered, unfenced and serving.",
        u64::from(ready),
    );

    e.family(
        "sluice_shard_busy_seconds_total",
        Kind::Counter,
        "CPU time (user and system) of each shard thread.",
    );
    for s in &m.shards {
        let shard = s.shard.to_string();
        e.real(
            "sluice_shard_busy_seconds_total",
            &[("shard", &shard)],
            s.busy.as_secs_f64(),
        );
    }
    e.family(
        "sluice_shard_runtime_seconds_total",
        Kind::Counter,
        "Time each shard's executor was not parked: running tasks or polling io_uring (glommio).",
    );
    for s in &m.shards {
        let shard = s.shard.to_string();
        e.real(
            "sluice_shard_runtime_seconds_total",
            &[("shard", &shard)],
            s.runtime.as_secs_f64(),
        );
    }
    e.family(
        "sluice_shard_tasks_total",
        Kind::Counter,
        "Tasks each shard's executor ran (glommio).",
    );
    for s in &m.shards {
        let shard = s.shard.to_string();
        e.int("sluice_shard_tasks_total", &[("shard", &shard)], s.tasks);
    }
    e.family("sluice_shard_task_queue_lag_seconds", Kind::Histogram, "How late each shard's heartbeat timer (10 ms, up to 50 ms while idle) ran: the wait of a ready task in the shard's default task queue (connections, cross-shard requests).");
    for s in &m.shards {
        let shard = s.shard.to_string();
        e.histogram(
            "sluice_shard_task_queue_lag_seconds",
            &[("shard", &shard)],
            &s.task_lag,
        );
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_joins_commits_with_high_watermarks_across_shards() {
        let a = ShardSnapshot {
            shard: 1,
            committed: vec![
                ("g".into(), "t".into(), 0, 40),
                ("g".into(), "t".into(), 1, 90),
                ("g".into(), "gone".into(), 0, 5),
            ],
            topics: vec![(
                "t".into(),
                TopicCounters {
                    bytes_in: 10,
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let b = ShardSnapshot {
            shard: 0,
            high_watermarks: vec![("t".into(), 0, 100), ("t".into(), 1, 80)],
            topics: vec![(
                "t".into(),
                TopicCounters {
                    bytes_in: 5,
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let m = merge(vec![a, b]);
        assert_eq!(m.lag.len(), 2);
        assert_eq!(m.lag[&("g".into(), "t".into(), 0)], 60);
        assert_eq!(m.lag[&("g".into(), "t".into(), 1)], 0); // committed past the hw
        assert_eq!(m.topics["t"].bytes_in, 15);
        assert_eq!(m.shards[0].shard, 0);
    }
}
