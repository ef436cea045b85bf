//! The leader's side of replication, per partition on its owning shard: where each
//! follower is (the offset of its last fetch, which it has on disk), the high watermark,
//! and the ISR changes the leader asks the controller for.
//!
//! ```text
//!  follower Fetch(offset F) ─► progress[tp][follower] = F (and when it was caught up)
//!  high watermark = min(leader durable, F of every other ISR member), never decreasing
//!     ─► consumers read below it, ListOffsets latest is it, acks=all waits for it
//!  follower not in the ISR with F >= high watermark ─► AlterPartition(ISR + follower)
//!  ISR member not caught up for replica.lag.time.max.ms ─► AlterPartition(ISR - it)
//! ```
//! A leader with an ISR of itself alone has the high watermark of a single node: its
//! durable offset. Progress is memory only: a new leader starts from nothing and its
//! high watermark waits for its followers' first fetches.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_storage::{PartitionLog, Signal};

use crate::fast_map::FastMap;
use crate::metadata::controller::{IsrChange, MetadataOp, MetadataOpResult};
use crate::metadata::image::TopicId;
use crate::shard::ShardCtx;
use crate::shard_msg::{ShardRequest, ShardResponse};

/// Where one follower is, from its last fetch.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The offset it fetched from (it has everything before on disk).
    offset: i64,
    /// The last time it was caught up with the leader.
    caught_up: Instant,
    /// Its log start (DeleteRecords waits for every ISR member's to pass the offset).
    log_start: i64,
}

#[derive(Debug, Default)]
struct Progress {
    followers: HashMap<i32, Follower>,
    hw: i64,
    /// An ISR change for this partition is with the controller.
    changing: bool,
    /// The leader epoch this progress belongs to.
    epoch: i32,
    /// When this leadership began here (a follower that never fetches under it lags
    /// from then on).
    started: Option<Instant>,
}

type Key = (TopicId, i32);

/// File name prefix of each shard's high-watermark checkpoint in the data dir.
const HW_CHECKPOINT: &str = "replication-offset-checkpoint";
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// "0\n<count>\n" then "<topic id hex> <partition> <high watermark>" lines, like Kafka's
/// replication-offset-checkpoint (with topic ids instead of names).
fn format_checkpoint(entries: &[(Key, i64)]) -> String {
    let mut out = format!("0\n{}\n", entries.len());
    for ((id, partition), hw) in entries {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{hex} {partition} {hw}\n"));
    }
    out
}

/// The entries of a checkpoint, or None if it is not one (wrong version or count, a bad
/// line).
fn parse_checkpoint(text: &str) -> Option<Vec<(Key, i64)>> {
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut out = Vec::new();
    for line in lines {
        let mut f = line.split(' ');
        let hex = f.next()?;
        let partition: i32 = f.next()?.parse().ok()?;
        let hw: i64 = f.next()?.parse().ok()?;
        if f.next().is_some() || hex.len() != 32 || hw < 0 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        out.push(((id, partition), hw));
    }
    (out.len() == count).then_some(out)
}

/// Per shard.
#[derive(Default)]
pub(crate) struct Leaders {
    /// By topic id and partition: a key that costs no allocation on the fetch path.
    progress: RefCell<FastMap<Key, Progress>>,
    /// Notified whenever a high watermark may have moved.
    pub(crate) moved: Signal,
    /// Notified when a client batch was appended here (not yet durable): wakes followers'
    /// long polls, which copy up to the log end.
    pub(crate) appended: Signal,
    /// Notified when a follower reports a higher log start: wakes DeleteRecords waiting
    /// for its low watermark (and nothing else).
    pub(crate) starts_moved: Signal,
    /// A high watermark changed or an entry went since the checkpoint was last written:
    /// an idle shard does not rebuild the checkpoint's list to find nothing new.
    hws_changed: Cell<bool>,
    /// The metadata image changed since entries of partitions gone from this node were
    /// last dropped.
    image_changed: Cell<bool>,
}

impl ShardCtx {
    /// The high watermark of a partition this shard leads (its durable offset when it
    /// leads alone). On a node that does not lead the partition it is the local durable
    /// offset, which says nothing about the other replicas: acknowledgements go through
    /// `wait_replicated`, which checks the leadership first.
    pub(crate) fn high_watermark(&self, topic: &str, partition: i32, log: &PartitionLog) -> i64 {
        self.with_high_watermarks(|hw| hw(topic, partition, log))
    }

    /// Runs `f` with a `high_watermark` for many partitions: the metadata and the
    /// progress table are borrowed once, and a run of one topic's partitions looks the
    /// topic up once (a fetch of 10,000 partitions asks for every one of them).
    pub(crate) fn with_high_watermarks<R>(
        &self,
        f: impl FnOnce(&mut dyn FnMut(&str, i32, &PartitionLog) -> i64) -> R,
    ) -> R {
        let image = self.image.borrow();
        let mut all = self.leaders.progress.borrow_mut();
        let mut last = None;
        let mut hw = |topic: &str, partition: i32, log: &PartitionLog| -> i64 {
            let t = image.topic_in_run(&mut last, topic);
            self.high_watermark_in(&mut all, t, partition, log)
        };
        f(&mut hw)
    }

    fn high_watermark_in(
        &self,
        all: &mut FastMap<Key, Progress>,
        topic: Option<&crate::metadata::image::TopicInfo>,
        partition: i32,
        log: &PartitionLog,
    ) -> i64 {
        let durable = log.durable_offset();
        let Some(t) = topic else {
            return durable;
        };
        let state = match usize::try_from(partition).ok().and_then(|p| t.parts.get(p)) {
            Some(p) if p.leader == self.node_id => p,
            _ => return durable,
        };
        if state.replicas.len() == 1 {
            // no other replica, none joining: the high watermark is the durable offset,
            // with no progress entry to keep (a fetch asks this of every partition; the
            // entry's lookup cost 7-10 % of a 10,000-partition round). Replicas added
            // later start the entry while the ISR is still this node alone, so the high
            // watermark does not step back.
            log.set_clean_limit(durable);
            return durable;
        }
        let progress = all.entry((t.id, partition)).or_default();
        if progress.epoch != state.leader_epoch {
            // a new leadership: followers must show their positions again
            let hw = progress.hw.min(durable);
            if hw != progress.hw {
                self.leaders.hws_changed.set(true);
            }
            *progress = Progress {
                epoch: state.leader_epoch,
                hw,
                started: Some(Instant::now()),
                ..Progress::default()
            };
        }
        let mut hw = durable;
        for r in state.isr.iter().filter(|r| **r != self.node_id) {
            let at = progress
                .followers
                .get(r)
                .map_or(log.log_start_offset(), |f| f.offset);
            hw = hw.min(at);
        }
        if hw > progress.hw {
            progress.hw = hw;
            self.leaders.hws_changed.set(true);
        }
        let hw = progress.hw.min(durable);
        // compaction only below the high watermark: a record above it may still be cut by
        // a leader change, and a record it superseded must not be gone by then
        log.set_clean_limit(hw);
        hw
    }

    /// The high watermark this node knows for a partition it holds a replica of: its own
    /// as the leader, else the last one its leader reported (None before any).
    pub(crate) fn known_high_watermark(
        &self,
        topic: &str,
        partition: i32,
        log: &PartitionLog,
    ) -> Option<i64> {
        if self.leader_epoch_here(topic, partition).is_some() {
            return Some(self.high_watermark(topic, partition, log));
        }
        let hw = self.hw_of(self.key(topic, partition)?);
        (hw >= 0).then_some(hw)
    }

    /// Kafka's low watermark of a partition this shard leads: the lowest log start of its
    /// replicas (here: of the ISR; a replica outside it learns the leader's log start when
    /// it fetches again), -1 while an ISR member has not reported one under this
    /// leadership. None if this node does not lead the partition.
    pub(crate) fn low_watermark(
        &self,
        topic: &str,
        partition: i32,
        log: &PartitionLog,
    ) -> Option<i64> {
        let image = self.image.borrow();
        let t = image.topic(topic)?;
        let state = usize::try_from(partition)
            .ok()
            .and_then(|p| t.parts.get(p))?;
        if state.leader != self.node_id {
            return None;
        }
        let mut low = log.log_start_offset();
        let all = self.leaders.progress.borrow();
        let progress = all
            .get(&(t.id, partition))
            .filter(|p| p.epoch == state.leader_epoch);
        for r in state.isr.iter().filter(|r| **r != self.node_id) {
            let start = progress
                .and_then(|p| p.followers.get(r))
                .map_or(-1, |f| f.log_start);
            low = low.min(start);
        }
        Some(low)
    }

    fn key(&self, topic: &str, partition: i32) -> Option<Key> {
        self.image.borrow().topic(topic).map(|t| (t.id, partition))
    }

    /// A follower fetched `tp` from `offset` (it has everything before on disk) with its
    /// log start at `log_start`: records its position, moves the high watermark, and asks
    /// to add it to the ISR once it has caught up.
    pub(crate) fn follower_fetched(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        follower: i32,
        offset: i64,
        log_start: i64,
    ) {
        let Some(log) = self.log(topic, partition) else {
            return;
        };
        let Some(key) = self.key(topic, partition) else {
            return;
        };
        let now = Instant::now();
        {
            let mut all = self.leaders.progress.borrow_mut();
            let progress = all.entry(key).or_default();
            let caught_up = offset >= log.durable_offset();
            let (since, start_before) = match progress.followers.get(&follower) {
                Some(f) if !caught_up => (f.caught_up, f.log_start),
                Some(f) => (now, f.log_start),
                None => (now, -1),
            };
            progress.followers.insert(
                follower,
                Follower {
                    offset,
                    caught_up: since,
                    log_start,
                },
            );
            if log_start > start_before {
                // a DeleteRecords may be waiting for this follower's log start
                self.leaders.starts_moved.notify();
            }
        }
        let before = self.hw_of(key);
        let hw = self.high_watermark(topic, partition, &log);
        if hw != before {
            self.leaders.moved.notify();
        }
        let state = self.image.borrow().partition(topic, partition).cloned();
        let Some(state) = state else { return };
        if state.leader != self.node_id
            || state.isr.contains(&follower)
            || !state.replicas.contains(&follower)
            || offset < hw
        {
            return;
        }
        let mut isr = state.isr.clone();
        isr.push(follower);
        self.change_isr(topic, partition, &state, isr);
    }

    /// A follower learned its leader's high watermark: kept, so that if this node leads
    /// next it starts from it (clamped to what it has) instead of from nothing, and the
    /// bound of the log cleaner.
    pub(crate) fn note_leader_hw(&self, topic: &str, partition: i32, hw: i64) {
        let Some(key) = self.key(topic, partition) else {
            return;
        };
        let mut all = self.leaders.progress.borrow_mut();
        let p = all.entry(key).or_default();
        p.epoch = -1; // not a leadership of ours: reset (keeping `hw`) when we lead
        if hw > p.hw {
            p.hw = hw;
            self.leaders.hws_changed.set(true);
        }
        if let Some(log) = self.log(topic, partition) {
            log.set_clean_limit(hw);
        }
    }

    fn hw_of(&self, key: Key) -> i64 {
        self.leaders
            .progress
            .borrow()
            .get(&key)
            .map_or(-1, |p| p.hw)
    }

    /// The metadata image changed (records applied or a new image): the next pass of
    /// `shrink_lagging_isrs` drops the entries of partitions gone from this node.
    pub(crate) fn note_image_changed(&self) {
        self.leaders.image_changed.set(true);
    }

    /// Every second: ISR members of partitions this shard leads that have not caught up
    /// for `replica.lag.time.max.ms` leave the ISR. A pass looks up progress only for
    /// partitions whose ISR has a member besides this node, and drops entries of
    /// partitions gone from this node only after the image changed, so an idle shard's
    /// pass costs no lookup, clone or allocation per partition led alone.
    pub(crate) async fn shrink_lagging_isrs(self: Rc<Self>) {
        let lag = Duration::from_millis(self.config.int("replica.lag.time.max.ms") as u64);
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            if self.leaders.image_changed.replace(false) {
                self.forget_gone_partitions();
            }
            for (topic, partition, state, lagging) in self.lagging_isr_members(Instant::now(), lag)
            {
                let isr: Vec<i32> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !lagging.contains(r))
                    .collect();
                tracing::warn!(%topic, partition, ?lagging, "followers fell behind: shrinking the ISR");
                self.change_isr(&topic, partition, &state, isr);
            }
        }
    }

    /// Drops the progress of partitions whose topic is gone or of which this node is no
    /// longer a replica (a follower's entry keeps its leader's high watermark for later).
    fn forget_gone_partitions(&self) {
        let image = self.image.borrow();
        let mut all = self.leaders.progress.borrow_mut();
        let before = all.len();
        all.retain(|(id, partition), _| {
            image
                .topic_by_id(id)
                .and_then(|t| t.parts.get(usize::try_from(*partition).ok()?))
                .is_some_and(|s| s.leader == self.node_id || s.replicas.contains(&self.node_id))
        });
        if all.len() != before {
            self.leaders.hws_changed.set(true);
        }
    }

    /// The partitions this shard leads with ISR members (other than itself) that have not
    /// caught up for `lag`: (topic, partition, its state, those members).
    fn lagging_isr_members(
        &self,
        now: Instant,
        lag: Duration,
    ) -> Vec<(
        String,
        i32,
        crate::metadata::image::PartitionState,
        Vec<i32>,
    )> {
        let mut out = Vec::new();
        let all = self.leaders.progress.borrow();
        if all.is_empty() {
            return out;
        }
        let image = self.image.borrow();
        for t in image.topics() {
            for (partition, state) in t.parts.iter().enumerate() {
                // led alone (every partition of a single node): no follower to drop
                if state.leader != self.node_id || state.isr.iter().all(|r| *r == self.node_id) {
                    continue;
                }
                let Ok(partition) = i32::try_from(partition) else {
                    continue;
                };
                // another shard's partition has no entry here
                let Some(p) = all.get(&(t.id, partition)) else {
                    continue;
                };
                if p.epoch != state.leader_epoch {
                    continue;
                }
                let lagging: Vec<i32> = state
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| *r != self.node_id)
                    .filter(|r| match p.followers.get(r) {
                        Some(f) => now.duration_since(f.caught_up) > lag,
                        // never fetched under this leadership: lagging since it began
                        None => p.started.is_some_and(|s| now.duration_since(s) > lag),
                    })
                    .collect();
                if !lagging.is_empty() {
                    out.push((t.name.clone(), partition, state.clone(), lagging));
                }
            }
        }
        out
    }

    /// The high watermarks this shard knows (as leader or from its leaders), by topic id
    /// and partition.
    fn known_hws(&self) -> Vec<(Key, i64)> {
        let mut v: Vec<(Key, i64)> = self
            .leaders
            .progress
            .borrow()
            .iter()
            .filter(|(_, p)| p.hw > 0)
            .map(|(k, p)| (*k, p.hw))
            .collect();
        v.sort_unstable();
        v
    }

    fn checkpoint_path(&self) -> std::path::PathBuf {
        self.config
            .data_dir()
            .join(format!("{HW_CHECKPOINT}-{}", self.id))
    }

    /// Reads this shard's high-watermark checkpoint (at start, before any metadata is
    /// applied): a restarted leader starts from the high watermark it had (clamped to its
    /// durable offset), not from its followers' first fetches, so what consumers see does
    /// not go back. A missing or unreadable file starts from nothing, as before.
    pub(crate) async fn load_hw_checkpoint(&self) {
        let path = self.checkpoint_path();
        let dir = self.config.data_dir();
        let text = sluice_storage::run_blocking(&dir, move || std::fs::read_to_string(path)).await;
        let text = match text {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the high-watermark checkpoint");
                return;
            }
        };
        match parse_checkpoint(&text) {
            Some(entries) => {
                let mut all = self.leaders.progress.borrow_mut();
                for (key, hw) in entries {
                    let p = all.entry(key).or_default();
                    p.epoch = -1;
                    p.hw = p.hw.max(hw);
                }
            }
            None => tracing::warn!("ignoring a malformed high-watermark checkpoint"),
        }
    }

    /// Writes the checkpoint if the high watermarks changed since the last write: to a
    /// temporary file, fsynced, renamed over the old one (on the blocking helper). Nothing
    /// to do, without building the list, when no high watermark moved since.
    async fn write_hw_checkpoint(&self, last: &mut Vec<(Key, i64)>) {
        if !self.leaders.hws_changed.replace(false) {
            return;
        }
        let now = self.known_hws();
        if now == *last {
            return;
        }
        let text = format_checkpoint(&now);
        let path = self.checkpoint_path();
        let dir = self.config.data_dir();
        let written = sluice_storage::run_blocking(&dir, move || -> std::io::Result<()> {
            use std::io::Write as _;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await;
        match written {
            Ok(()) => *last = now,
            Err(e) => {
                self.leaders.hws_changed.set(true); // tried again next time
                tracing::warn!(error = %e, "cannot write the high-watermark checkpoint")
            }
        }
    }

    /// Writes the checkpoint now, whatever changed (the clean shutdown's last one).
    pub(crate) async fn write_final_hw_checkpoint(&self) {
        self.leaders.hws_changed.set(true);
        self.write_hw_checkpoint(&mut Vec::new()).await;
    }

    /// Every `HW_CHECKPOINT_INTERVAL` (Kafka's replica.high.watermark.checkpoint.interval.ms
    /// default), until the shard stops.
    pub(crate) async fn checkpoint_hws(self: Rc<Self>) {
        let mut last = Vec::new();
        loop {
            glommio::timer::sleep(HW_CHECKPOINT_INTERVAL).await;
            self.write_hw_checkpoint(&mut last).await;
        }
    }

    /// Asks the controller for a new ISR (one change at a time per partition).
    fn change_isr(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        state: &crate::metadata::image::PartitionState,
        isr: Vec<i32>,
    ) {
        let Some(key) = self.key(topic, partition) else {
            return;
        };
        {
            let mut all = self.leaders.progress.borrow_mut();
            let p = all.entry(key).or_default();
            if p.changing {
                return;
            }
            p.changing = true;
        }
        let change = IsrChange {
            topic: topic.to_string(),
            partition,
            leader: self.node_id,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr,
        };
        let ctx = self.clone();
        glommio::spawn_local(async move {
            let answer = ctx
                .call(0, ShardRequest::Metadata(MetadataOp::AlterPartition(change.clone())))
                .await;
            match answer {
                ShardResponse::Metadata(MetadataOpResult::Failed(code, why)) => {
                    tracing::debug!(topic = %change.topic, partition = change.partition, code, %why, "ISR change refused")
                }
                _ => tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.isr, "ISR changed"),
            }
            if let Some(p) = ctx.leaders.progress.borrow_mut().get_mut(&key) {
                p.changing = false;
            }
            ctx.leaders.moved.notify();
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_roundtrip_and_malformed_files() {
        let entries = vec![(([7u8; 16], 0), 42), (([0xab; 16], 12), 0)];
        let text = format_checkpoint(&entries);
        assert_eq!(parse_checkpoint(&text), Some(entries));
        assert_eq!(parse_checkpoint("0\n0\n"), Some(Vec::new()));
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n07070707070707070707070707070707 0 5\n",
            "0\n1\n0707 0 5\n",
            "0\n1\n07070707070707070707070707070707 0 -5\n",
            "0\n1\n07070707070707070707070707070707 x 5\n",
            "0\n1\nzz070707070707070707070707070707 0 5\n",
        ] {
            assert_eq!(parse_checkpoint(bad), None, "{bad:?}");
        }
    }
}
