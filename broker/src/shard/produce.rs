//! The produce path of a shard: admission (the unflushed-bytes budget and its turns),
//! producer-state loads, appends, and the acks=all wait for durability and the ISR,
//! all bounded by the request's timeout.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use sluice_storage::{PartitionLog, TruncationMark, TxnVerification};

use super::ShardCtx;
use crate::admission::ConnKey;
use crate::errors::{code, now_ms, storage_error_code};
use crate::router::BoxFuture;
use crate::shard_msg::{ProducePartResult, ShardResponse, Tp};
use kafka_protocol::ResponseError;

/// One partition of a produce request: its records, and how a transactional batch that
/// would start its producer's transaction there is checked (KIP-890).
type Part = (Tp, bytes::Bytes, TxnVerification);

/// How long acks=-1 waits for durability when the request's timeout_ms is not positive.
const DEFAULT_PRODUCE_TIMEOUT_MS: u64 = 30_000;

/// A partition's wait before its answer: (index in the answers, partition, log, what
/// was appended, acks=all: true for the ISR, false (acks=1) for this broker's own copy
/// only).
type AckWait = (usize, Tp, PartitionLog, Appended, bool);

/// What an append wrote, for the waits before its answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    /// The last offset written (for a duplicate, the original's).
    pub(crate) last: i64,
    /// The leader epoch the append was made under.
    pub(crate) epoch: i32,
    /// The log's truncation mark right after the append, before anything awaited: the
    /// waits fail if `last` is cut after it.
    pub(crate) mark: TruncationMark,
}

impl Appended {
    /// Call right after the append returned, with nothing awaited in between.
    pub(crate) fn now(log: &PartitionLog, last: i64, epoch: i32) -> Self {
        Appended {
            last,
            epoch,
            mark: log.truncation_mark(),
        }
    }
}

impl ShardCtx {
    /// Appends each part in arrival order, now if the shard is under its unflushed-bytes
    /// budget and nobody is waiting, else once its turn came and the flusher freed budget.
    /// Waiting for that turn and then (acks=-1) for durability takes at most `timeout_ms`
    /// in all; past it the answer is REQUEST_TIMED_OUT (not appended, if still waiting
    /// for its turn), as Kafka answers a produce whose replication outlasts its timeout.
    pub(super) fn produce(
        self: &Rc<Self>,
        acks: i16,
        timeout_ms: i32,
        conn: ConnKey,
        parts: Vec<Part>,
    ) -> BoxFuture<ShardResponse> {
        let timeout = Duration::from_millis(if timeout_ms > 0 {
            timeout_ms as u64
        } else {
            DEFAULT_PRODUCE_TIMEOUT_MS
        });
        let ctx = self.clone();
        // Idempotent batches for a partition whose producer state is not built yet (first
        // use after a start): build it with async reads before the append's turn, so the
        // append never reads the log synchronously on this shard.
        let to_load = self.logs_needing_producer_state(&parts);
        if to_load.is_empty() && self.admission.may_append_now() {
            let (results, waits) = self.append_parts(acks, parts);
            let started = std::time::Instant::now();
            return Box::pin(
                async move { ctx.answer_produce(results, waits, timeout, started).await },
            );
        }
        let ticket = self.admission.ticket(conn);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let not_appended = |parts: &[Part]| {
                // Not appended: the request's place is given up (the ticket drops), and
                // the client may retry, as after any Kafka produce timeout.
                ctx.warn_produce_timeout(
                    "room to append or a partition's producer state",
                    None,
                    started.elapsed(),
                );
                let message = format!(
                    "not appended within the request's timeout ({} ms): the shard's unflushed bytes stayed at storage.unflushed.max.bytes, or a partition's producer state was still loading",
                    timeout.as_millis()
                );
                let results = parts
                    .iter()
                    .map(|_| {
                        ProducePartResult::failed(
                            code(ResponseError::RequestTimedOut),
                            Some(message.clone()),
                        )
                    })
                    .collect();
                ShardResponse::Produce(results)
            };
            // the producer-state loads count against the timeout too: a load held up (by
            // the log's I/O permit, a slow disk) must not hold the answer past it (the
            // load itself goes on in its own task)
            let granted = within(timeout, started, async {
                load_producer_states(to_load).await;
                ticket.wait().await;
            })
            .await;
            if granted.is_none() {
                return not_appended(&parts);
            }
            // a truncation while this request waited unloads a partition's state: load it
            // again (twice at most), so that the append, right after the last check with
            // no wait between, finds it built; still within the timeout (the grant is held
            // meanwhile, and dropped with the ticket if the time runs out)
            let reloaded = within(timeout, started, async {
                for _ in 0..2 {
                    let again = ctx.logs_needing_producer_state(&parts);
                    if again.is_empty() {
                        break;
                    }
                    load_producer_states(again).await;
                }
            })
            .await;
            if reloaded.is_none() {
                return not_appended(&parts);
            }
            let (results, waits) = ctx.append_parts(acks, parts);
            ticket.finish();
            ctx.answer_produce(results, waits, timeout, started).await
        })
    }

    /// The logs of `parts` whose idempotent or transactional batches need the producer
    /// state and find it not built.
    fn logs_needing_producer_state(&self, parts: &[Part]) -> Vec<PartitionLog> {
        // plain (not idempotent) batches need no state: no log lookup for them
        let using: Vec<&Tp> = parts
            .iter()
            .filter(|(_, records, _)| PartitionLog::records_use_producer_state(records))
            .map(|(tp, _, _)| tp)
            .collect();
        if using.is_empty() {
            return Vec::new();
        }
        self.with_logs(|log| {
            using
                .iter()
                .filter_map(|tp| {
                    let log = log(&tp.topic, tp.partition)?;
                    (!log.producer_state_loaded()).then_some(log)
                })
                .collect()
        })
    }

    /// Appends each part; returns the answers and, for acks=-1, what to wait for.
    fn append_parts(&self, acks: i16, parts: Vec<Part>) -> (Vec<ProducePartResult>, Vec<AckWait>) {
        let now = now_ms();
        let mut results = Vec::with_capacity(parts.len());
        let mut waits = Vec::new();
        // one pass of lookups (a topic hashed once per run of its partitions)
        let logs: Vec<Option<PartitionLog>> = self.with_logs(|log| {
            parts
                .iter()
                .map(|(tp, _, _)| log(&tp.topic, tp.partition))
                .collect()
        });
        // the metrics' per-topic counts, added once per run of a topic's partitions
        let mut counted: Option<(std::sync::Arc<str>, usize, u64)> = None;
        let mut appended = false;
        for ((tp, records, verification), log) in parts.into_iter().zip(logs) {
            let Some(log) = log else {
                results.push(ProducePartResult::failed(
                    self.no_log_error(&tp.topic, tp.partition),
                    None,
                ));
                continue;
            };
            // leadership may have moved since the request was routed (or while it waited
            // for its turn): only the leader appends client batches
            let Some(epoch) = self.leader_epoch_here(&tp.topic, tp.partition) else {
                results.push(ProducePartResult::failed(
                    code(ResponseError::NotLeaderOrFollower),
                    None,
                ));
                continue;
            };
            let bytes = records.len();
            match log.append_with(records, now, verification) {
                Ok(info) => {
                    if !info.duplicate {
                        let count = info.last_offset - info.base_offset + 1;
                        let count = u64::try_from(count).unwrap_or(0);
                        match &mut counted {
                            Some((t, b, c)) if *t == tp.topic => {
                                *b += bytes;
                                *c += count;
                            }
                            _ => {
                                if let Some((t, b, c)) = counted.take() {
                                    self.metrics.produced(&t, b, c);
                                }
                                counted = Some((tp.topic.clone(), bytes, count));
                            }
                        }
                    }
                    appended = true;
                    // acks=1 waits for the leader's own copy to be durable: Kafka's
                    // answer follows its write to the page cache, which a kill -9 of the
                    // process does not lose; Sluice writes past any cache (O_DIRECT), so
                    // the same promise needs the flush
                    if acks != 0 {
                        waits.push((
                            results.len(),
                            tp.clone(),
                            log.clone(),
                            Appended::now(&log, info.last_offset, epoch),
                            acks == -1,
                        ));
                    }
                    results.push(ProducePartResult {
                        error: 0,
                        message: None,
                        base_offset: info.base_offset,
                        log_append_time: info.log_append_time_ms,
                        log_start_offset: info.log_start_offset,
                    });
                }
                Err(e) => results.push(ProducePartResult::failed(
                    storage_error_code(&e),
                    Some(e.to_string()),
                )),
            }
        }
        if let Some((t, b, c)) = counted {
            self.metrics.produced(&t, b, c);
        }
        if appended {
            self.leaders.appended.notify();
        }
        (results, waits)
    }

    /// Waits for what `waits` names (acks=all) until `started` + `timeout`, the request's
    /// arrival on this shard plus its timeout.
    async fn answer_produce(
        &self,
        mut results: Vec<ProducePartResult>,
        waits: Vec<AckWait>,
        timeout: Duration,
        started: std::time::Instant,
    ) -> ShardResponse {
        let deadline = started + timeout;
        let mut timed_out = None;
        for (i, tp, log, at, replicated) in waits {
            let waited = if replicated {
                self.wait_replicated(&tp.topic, tp.partition, &log, at, deadline)
                    .await
            } else {
                wait_own_copy(&log, at, deadline).await
            };
            let Err((error, message)) = waited else {
                continue;
            };
            if error == code(ResponseError::RequestTimedOut) && timed_out.is_none() {
                timed_out = Some((tp, log, at.last));
            }
            results[i] = ProducePartResult::failed(error, Some(message));
        }
        if let Some((tp, log, last)) = timed_out {
            self.warn_produce_timeout(
                "the record durable (acks=all: on every in-sync replica)",
                Some((&tp, &log, last)),
                started.elapsed(),
            );
        }
        ShardResponse::Produce(results)
    }

    /// Logs, at most once a second per shard, a produce answered REQUEST_TIMED_OUT, with
    /// what it waited for (`waiting`; for acks=all its first partition that timed out, and
    /// that log's durable offset and high watermark) and the shard's unflushed bytes: a
    /// wait that long means the flusher or a replica made no progress for the client's
    /// whole timeout. `waited` runs from the request's arrival on this shard.
    fn warn_produce_timeout(
        &self,
        waiting: &str,
        record: Option<(&Tp, &PartitionLog, i64)>,
        waited: Duration,
    ) {
        let Some(requests) = self.produce_timeouts.borrow_mut().hit() else {
            return;
        };
        let (topic, partition, offset, durable, hw) = match record {
            Some((tp, log, last)) => (
                &*tp.topic,
                tp.partition,
                last,
                log.durable_offset(),
                self.high_watermark(&tp.topic, tp.partition, log),
            ),
            None => ("", -1, -1, -1, -1),
        };
        tracing::warn!(
            shard = self.id,
            waiting,
            topic,
            partition,
            offset,
            durable_offset = durable,
            high_watermark = hw,
            unflushed_bytes = self.storage.unflushed_bytes(),
            admission_bytes = self.storage.admission_bytes(),
            waited_ms = waited.as_millis() as u64,
            requests_since_last_line = requests,
            "produce answered REQUEST_TIMED_OUT"
        );
    }

    /// acks=all: resolves once every ISR member has `last` on disk (the high watermark
    /// passed it) under the leadership of `epoch` that appended it. Fails (error code,
    /// message) when that leadership ends first (the next leader's log decides whether the
    /// record survives, so no ack: the client retries and idempotence drops a surviving
    /// copy), when it was cut from the log, or at `deadline`.
    pub(crate) async fn wait_replicated(
        &self,
        topic: &str,
        partition: i32,
        log: &PartitionLog,
        at: Appended,
        deadline: std::time::Instant,
    ) -> Result<(), (i16, String)> {
        let Appended { last, epoch, .. } = at;
        // the leader's own copy first (acks=1's whole wait): a failed flush (a full or
        // broken disk) is answered with its storage error at once, not left to time out;
        // a timeout falls through to the loop, which answers it
        if let Err((error, message)) = wait_own_copy(log, at, deadline).await {
            if error != code(ResponseError::RequestTimedOut) {
                return Err((error, message));
            }
        }
        loop {
            if self.leader_epoch_here(topic, partition) != Some(epoch) {
                return Err((
                    code(ResponseError::NotLeaderOrFollower),
                    "leadership moved before every in-sync replica had the record".to_string(),
                ));
            }
            if self.high_watermark(topic, partition, log) > last {
                return Ok(());
            }
            if log.log_end_offset() <= last {
                return Err((
                    code(ResponseError::NotLeaderOrFollower),
                    "the record was cut from this replica's log".to_string(),
                ));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let short = {
                    let image = self.image.borrow();
                    image.topic(topic).is_some_and(|t| {
                        let min = self.min_insync_replicas(t);
                        usize::try_from(partition)
                            .ok()
                            .and_then(|p| t.parts.get(p))
                            .is_some_and(|p| p.isr.len() < min)
                    })
                };
                return Err(if short {
                    (
                        code(ResponseError::NotEnoughReplicasAfterAppend),
                        "appended, but the ISR shrank below min.insync.replicas".to_string(),
                    )
                } else {
                    (
                        code(ResponseError::RequestTimedOut),
                        "not on every in-sync replica within the request's timeout".to_string(),
                    )
                });
            }
            future::or(
                future::or(self.storage.wait_progress(), self.leaders.moved.wait()),
                glommio::timer::sleep(left),
            )
            .await;
        }
    }
}

/// `fut`'s output, or None once `timeout` has passed since `started`.
pub(crate) async fn within<T>(
    timeout: Duration,
    started: std::time::Instant,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(timeout.saturating_sub(started.elapsed())).await;
        None
    })
    .await
}

/// Builds each log's producer state with async reads (`PartitionLog::load_producer_state`).
/// A failure is logged: the append then answers that partition KAFKA_STORAGE_ERROR
/// (`ProducerStateNotLoaded`, retriable) and never reads the log itself.
async fn load_producer_states(logs: Vec<PartitionLog>) {
    for log in logs {
        if let Err(e) = log.load_producer_state().await {
            tracing::warn!(error = %e, "loading producer state");
        }
    }
}

/// acks=1, and the first step of acks=all: resolves once this broker's copy of `last` is
/// durable, or fails (error code, message) with the flush's storage error or
/// REQUEST_TIMED_OUT at `deadline` (no timer when it is durable already, as the rest of
/// a request's partitions usually are once the first one is).
async fn wait_own_copy(
    log: &PartitionLog,
    at: Appended,
    deadline: std::time::Instant,
) -> Result<(), (i16, String)> {
    let mut durable = std::pin::pin!(log.wait_durable_from(at.last, at.mark));
    let done = match future::poll_once(&mut durable).await {
        Some(done) => Some(done),
        None => {
            let now = std::time::Instant::now();
            within(deadline.saturating_duration_since(now), now, durable).await
        }
    };
    match done {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err((storage_error_code(&e), e.to_string())),
        None => Err((
            code(ResponseError::RequestTimedOut),
            "not durable on the leader within the request's timeout".into(),
        )),
    }
}
