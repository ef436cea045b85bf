//! The fetch path of a shard: reads of the partitions it owns (cold reads concurrently),
//! long polls waiting for data, and ListOffsets.

use std::time::Duration;

use futures_lite::future;
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::PartitionLog;

use super::ShardCtx;
use crate::errors::{code, storage_error_code};
use crate::shard_msg::{FetchPart, FetchPartResult, OffsetAnswer, Tp, WaitPart};
use kafka_protocol::ResponseError;

impl ShardCtx {
    /// Reads every part, the cold ones concurrently (one task per read, so the disk sees a
    /// queue deeper than one), then keeps whole partitions in order within `max_bytes`; the
    /// first non-empty partition is kept whole even if larger (KIP-74).
    pub(super) async fn fetch(
        &self,
        parts: Vec<FetchPart>,
        max_bytes: usize,
        replica: i32,
        read_committed: bool,
    ) -> Vec<FetchPartResult> {
        const READS_IN_FLIGHT: usize = 16;
        let mut out = Vec::with_capacity(parts.len());
        let mut reads: Vec<(usize, PartitionLog, i64, i64, usize)> = Vec::new();
        let mut committed_reads: Vec<(usize, PartitionLog, i64)> = Vec::new();
        // one pass without awaiting: a fetch may name 10,000 partitions every round
        let logs: Vec<Option<PartitionLog>> =
            self.with_logs(|log| parts.iter().map(|p| log(&p.topic, p.partition)).collect());
        // followers copy up to the log end (their fsyncs overlap the leader's; the high
        // watermark still waits for the leader's own); consumers see up to the high
        // watermark (read_committed: up to the last stable offset, below which every
        // transaction is decided; the transaction state is built on first need)
        let committed = read_committed && replica < 0;
        let mut load_failed: Vec<Option<i16>> = Vec::new();
        if committed {
            for log in logs.iter().flatten() {
                let failed = match log.producer_state_loaded() {
                    true => None,
                    false => log
                        .load_transaction_state()
                        .await
                        .err()
                        .map(|e| storage_error_code(&e)),
                };
                load_failed.push(failed);
            }
        }
        let mut load_failed = load_failed.into_iter();
        self.with_high_watermarks(|high_watermark| {
            for (part, log) in parts.iter().zip(logs) {
                let Some(log) = log else {
                    out.push(FetchPartResult::failed(
                        self.no_log_error(&part.topic, part.partition),
                    ));
                    continue;
                };
                if let Some(Some(error)) = committed.then(|| load_failed.next()).flatten() {
                    out.push(FetchPartResult::failed(error));
                    continue;
                }
                let high_watermark = high_watermark(&part.topic, part.partition, &log);
                let last_stable_offset = log.last_stable_offset(high_watermark);
                let hw = if replica >= 0 {
                    log.log_end_offset()
                } else if committed {
                    last_stable_offset
                } else {
                    high_watermark
                };
                let mut r = FetchPartResult {
                    error: 0,
                    high_watermark,
                    last_stable_offset,
                    log_start_offset: log.log_start_offset(),
                    aborted: committed.then(Vec::new),
                    batches: Vec::new(),
                };
                if part.fetch_offset < r.log_start_offset
                    || part.fetch_offset > log.log_end_offset()
                {
                    r.error = code(ResponseError::OffsetOutOfRange);
                } else if part.fetch_offset < hw {
                    let limit = part.max_bytes.min(max_bytes);
                    if committed {
                        committed_reads.push((out.len(), log.clone(), part.fetch_offset));
                    }
                    reads.push((out.len(), log, part.fetch_offset, hw, limit));
                }
                out.push(r);
            }
        });
        let first = reads.first().map(|r| r.0);
        let read = |(i, log, from, hw, limit): (usize, PartitionLog, i64, i64, usize)| async move {
            (i, log.read(from, hw, limit, Some(i) == first).await)
        };
        let mut done = Vec::with_capacity(reads.len());
        // reads in plan order until the budget is spent: partitions past it would be
        // dropped from the answer below, so reading them (often from disk) is waste. Up to
        // the first that needs the disk, memory answers at once, without a task each (at
        // 10,000 partitions a task per read was a large part of a round); from there, in
        // waves of tasks (the budget still spent in plan order)
        let mut read_bytes = 0usize;
        let mut reads = reads.into_iter().peekable();
        while let Some((i, log, from, hw, limit)) = reads.next_if(|_| read_bytes < max_bytes) {
            let left = max_bytes - read_bytes;
            match log.read_now(from, hw, limit.min(left), Some(i) == first) {
                Some(res) => {
                    if let Ok(batches) = &res {
                        read_bytes += batches.iter().map(|b| b.len()).sum::<usize>();
                    }
                    done.push((i, res));
                }
                None => {
                    let mut rest = vec![(i, log, from, hw, limit)];
                    rest.extend(reads);
                    reads = rest.into_iter().peekable();
                    break;
                }
            }
        }
        let mut reads: Vec<_> = reads.collect();
        if reads.len() == 1 && read_bytes < max_bytes {
            if let Some((i, log, from, hw, limit)) = reads.pop() {
                done.push(read((i, log, from, hw, limit.min(max_bytes - read_bytes))).await);
            }
        }
        let mut reads = reads.into_iter().peekable();
        while reads.peek().is_some() && read_bytes < max_bytes {
            let left = max_bytes - read_bytes;
            let wave: Vec<_> = reads
                .by_ref()
                .take(READS_IN_FLIGHT)
                .map(|(i, log, from, hw, limit)| {
                    glommio::spawn_local(read((i, log, from, hw, limit.min(left))))
                })
                .collect();
            for task in wave {
                let (i, res) = task.await;
                if let Ok(batches) = &res {
                    read_bytes += batches.iter().map(|b| b.len()).sum::<usize>();
                }
                done.push((i, res));
            }
        }
        let mut used = 0usize;
        for (i, res) in done {
            let r = &mut out[i];
            match res {
                Ok(batches) => r.batches = batches,
                Err(e) => r.error = storage_error_code(&e),
            }
        }
        // read_committed: the aborted transactions overlapping what was read, so the
        // client drops their records (Kafka's fetch with isolation level 1)
        for (i, log, from) in committed_reads {
            let r = &mut out[i];
            let Some(upper) = r
                .batches
                .last()
                .and_then(|b| RecordBatchHeader::parse(b).ok())
                .map(|h| h.last_offset() + 1)
            else {
                continue;
            };
            match log.aborted_transactions(from, upper).await {
                Ok(list) => {
                    let mut aborted: Vec<(i64, i64)> = list
                        .into_iter()
                        .map(|a| (a.producer_id, a.first_offset))
                        .collect();
                    // by first offset: the index keeps them in marker order (as Kafka's
                    // does), and KafkaJS's read_committed filter assumes this order (with
                    // overlapping transactions it let aborted records through); the Java
                    // client and librdkafka sort the list themselves
                    aborted.sort_by_key(|&(producer, first)| (first, producer));
                    r.aborted = Some(aborted);
                }
                Err(e) => {
                    r.error = storage_error_code(&e);
                    r.batches.clear();
                }
            }
        }
        for r in out.iter_mut() {
            let size = r.bytes();
            if used > 0 && used + size > max_bytes {
                r.batches.clear();
            } else {
                used += size;
            }
        }
        out
    }

    /// Returns when any partition has data past its offset (for a follower: appended, for
    /// a consumer: below the high watermark), or after `wait_ms`.
    pub(super) async fn wait_data(&self, parts: &[WaitPart], wait_ms: u64, replica: i32) {
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let ready = self.with_logs(|log| {
                self.with_high_watermarks(|high_watermark| {
                    parts.iter().any(|(topic, partition, offset, start)| {
                        match log(topic, *partition) {
                            Some(log) => {
                                let end = if replica >= 0 {
                                    log.log_end_offset()
                                } else {
                                    high_watermark(topic, *partition, &log)
                                };
                                // a follower also wants a log start that moved since its
                                // fetch read (DeleteRecords waits for it to follow)
                                end > *offset
                                    || *offset < log.log_start_offset()
                                    || (replica >= 0 && log.log_start_offset() > *start)
                            }
                            None => true,
                        }
                    })
                })
            });
            let now = std::time::Instant::now();
            if ready || now >= deadline {
                return;
            }
            let appended = self.leaders.appended.wait();
            let appended = async {
                if replica >= 0 {
                    appended.await
                } else {
                    std::future::pending::<()>().await
                }
            };
            future::or(
                future::or(
                    future::or(self.storage.wait_progress(), self.leaders.moved.wait()),
                    appended,
                ),
                async {
                    glommio::timer::sleep(deadline - now).await;
                },
            )
            .await;
        }
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest, -3 max timestamp, else the
    /// first offset at or after a timestamp; nothing at or past the last fetchable offset
    /// (the high watermark, or with `read_committed` the last stable offset), as Kafka.
    pub(super) async fn list_offset(&self, tp: &Tp, ts: i64, read_committed: bool) -> OffsetAnswer {
        let Some(log) = self.log(&tp.topic, tp.partition) else {
            return OffsetAnswer {
                error: self.no_log_error(&tp.topic, tp.partition),
                timestamp: -1,
                offset: -1,
            };
        };
        if read_committed && !log.producer_state_loaded() {
            if let Err(e) = log.load_transaction_state().await {
                return OffsetAnswer {
                    error: storage_error_code(&e),
                    timestamp: -1,
                    offset: -1,
                };
            }
        }
        let hw = self.high_watermark(&tp.topic, tp.partition, &log);
        let fetchable = if read_committed {
            log.last_stable_offset(hw)
        } else {
            hw
        };
        let (timestamp, offset) = match ts {
            -2 => (-1, log.log_start_offset()),
            -1 => (-1, fetchable),
            -3 => match log.offset_of_max_timestamp().await {
                Ok(found) => found
                    .filter(|(_, offset)| *offset < fetchable)
                    .unwrap_or((-1, -1)),
                Err(e) => {
                    return OffsetAnswer {
                        error: storage_error_code(&e),
                        timestamp: -1,
                        offset: -1,
                    }
                }
            },
            ts => match log.offset_for_timestamp(ts).await {
                Ok(Some((offset, t))) if offset < fetchable => (t, offset),
                Ok(_) => (-1, -1),
                Err(e) => {
                    return OffsetAnswer {
                        error: storage_error_code(&e),
                        timestamp: -1,
                        offset: -1,
                    }
                }
            },
        };
        OffsetAnswer {
            error: 0,
            timestamp,
            offset,
        }
    }
}
