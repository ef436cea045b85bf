//! DeleteRecords on the shard that owns the partitions (Kafka's
//! `ReplicaManager.deleteRecords` and `DelayedDeleteRecords`): each named partition this
//! node leads gets its log start moved up to the requested offset (-1: the high
//! watermark), durably, and the answer waits until every ISR member's log start has
//! passed it too — the low watermark — or the request's timeout ends the wait with
//! REQUEST_TIMED_OUT. Followers learn the new start from their next fetch
//! (`replication.rs`) and report theirs in the one after. Refused as Kafka refuses: a
//! topic whose `cleanup.policy` lacks `delete` (POLICY_VIOLATION), an offset below 0 or
//! past the high watermark (OFFSET_OUT_OF_RANGE); internal topics in the handler. The segments wholly below a new start are deleted at once, in
//! the background (time and size retention keep their own schedule).
//!
//! ```text
//!  (tp, offset) ─► checks ─► advance_log_start (file synced) ─► retention frees segments
//!                                   └─► wait: min(log start of leader and ISR) >= offset
//! ```

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use kafka_protocol::ResponseError;
use sluice_storage::PartitionLog;

use super::ShardCtx;
use crate::errors::{code, storage_error_code};
use crate::shard_msg::Tp;

/// A waiting request looks again at least this often (a missed wake-up costs no more).
const RECHECK: Duration = Duration::from_millis(100);

impl ShardCtx {
    /// (error code, low watermark) per part, in order.
    pub(super) async fn delete_records(
        self: &Rc<Self>,
        parts: Vec<(Tp, i64)>,
        timeout: Duration,
    ) -> Vec<(i16, i64)> {
        let started = Instant::now();
        let mut out = vec![(0i16, -1i64); parts.len()];
        // every partition's start moves at once: each move syncs a file
        let mut moves = Vec::new();
        for (i, (tp, offset)) in parts.iter().enumerate() {
            match self.delete_target(tp, *offset) {
                Ok((log, to)) => {
                    let l = log.clone();
                    let task = glommio::spawn_local(async move { l.advance_log_start(to).await });
                    moves.push((i, log, to, task));
                }
                Err(e) => out[i].0 = e,
            }
        }
        let mut waiting = Vec::with_capacity(moves.len());
        let moved_any = !moves.is_empty();
        for (i, log, to, task) in moves {
            match task.await {
                Ok(_) => {
                    let l = log.clone();
                    glommio::spawn_local(async move {
                        if let Err(e) = l.delete_segments_below_start().await {
                            tracing::warn!(error = %e, "deleting segments below a new log start");
                        }
                    })
                    .detach();
                    waiting.push((i, log, to));
                }
                Err(e) => out[i].0 = storage_error_code(&e),
            }
        }
        if moved_any {
            // followers' long polls return with the new start at once (not after their
            // wait), so they follow it and report theirs in the next fetch
            self.leaders.appended.notify();
        }
        loop {
            // created before the check: a follower's report between the two still wakes it
            // (an ISR change, which may also end the wait, is seen at the next recheck)
            let moved = self.leaders.starts_moved.wait();
            let mut reached = true;
            waiting.retain(|(i, log, to)| {
                let tp = &parts[*i].0;
                match self.low_watermark(&tp.topic, tp.partition, log) {
                    Some(low) => {
                        out[*i].1 = low;
                        let done = low >= *to;
                        reached &= done;
                        !done
                    }
                    None => {
                        out[*i] = (code(ResponseError::NotLeaderOrFollower), -1);
                        false
                    }
                }
            });
            if reached {
                return out;
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                for (i, _, _) in waiting {
                    out[i].0 = code(ResponseError::RequestTimedOut);
                }
                return out;
            }
            future::or(moved, glommio::timer::sleep(left.min(RECHECK))).await;
        }
    }

    /// The log and the offset its start moves to, or the partition's error code.
    fn delete_target(&self, tp: &Tp, offset: i64) -> Result<(PartitionLog, i64), i16> {
        let Some(log) = self.log(&tp.topic, tp.partition) else {
            return Err(self.no_log_error(&tp.topic, tp.partition));
        };
        if self.leader_epoch_here(&tp.topic, tp.partition).is_none() {
            return Err(code(ResponseError::NotLeaderOrFollower));
        }
        if !log.config().cleanup_policy.delete {
            return Err(code(ResponseError::PolicyViolation));
        }
        let hw = self.high_watermark(&tp.topic, tp.partition, &log);
        let to = if offset == -1 { hw } else { offset };
        if to < 0 || to > hw {
            return Err(code(ResponseError::OffsetOutOfRange));
        }
        Ok((log, to))
    }
}
