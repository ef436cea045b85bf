//! The log cleaner's I/O helpers: a sealed segment read batch by batch in chunks of half
//! `cleaner_io_buffer_bytes` (DMA reads through the shard's open-file table), and the
//! throttle that keeps a pass's reads and writes under `cleaner_io_bytes_per_sec` (Kafka's
//! Throttler), its CPU in short slices, and its disk I/O between the flusher's cycles.
//! Owned by the pass that uses them; never cross cores.

use crate::error::{corrupt, StorageError};
use crate::inner::LogInner;
use crate::shard::ShardStorage;
use bytes::Bytes;
use glommio::io::DmaFile;
use sluice_proto::batch::{RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// CPU a pass uses before it lets the shard's other tasks run: the cleaner's queue has
/// few shares, but shares only count at a switch, and glommio switches a queue that does
/// not yield only at its preemption timer (tens of ms): produce and fetch would wait that
/// long (measured: produce p99 x7 with the cleaner running, before this). A produce ack
/// crosses several such waits (the request's read, the flush write's and the sync's
/// completions), so the slice adds to the median several times over: 100 µs rather than
/// 500 took the median during cleaning from +70 % to +50 % of idle at the same cleaning
/// speed (bench/README.md, "A shorter cleaner slice").
const SLICE: Duration = Duration::from_micros(100);

/// How a pass steps aside after each `SLICE`: a timer this short, not a yield. glommio
/// reaps I/O completions (sockets, disk) only when its task queues run dry or a
/// latency-sensitive queue's timer fires, so a queue that yields but stays runnable is
/// picked again and again while the completions that would wake produce and fetch wait
/// in the ring (measured: produce p50 doubled while the cleaner ran). A sleeping pass
/// leaves nothing runnable but what those completions wake.
const STEP_ASIDE: Duration = Duration::from_micros(20);

/// Limits the bytes a pass reads and writes per second, the CPU it takes at once, and
/// when it uses the disk.
pub(crate) struct Throttle {
    rate: u64,
    start: Instant,
    bytes: u64,
    slice: Instant,
    shard: Weak<ShardStorage>,
}

impl Throttle {
    pub(crate) fn new(shard: &ShardStorage, rate: u64) -> Throttle {
        Throttle {
            rate,
            start: Instant::now(),
            bytes: 0,
            slice: Instant::now(),
            shard: shard.me.clone(),
        }
    }

    /// Waits for the pass's turn at the disk (`ShardStorage::disk_turn`).
    pub(crate) async fn disk_turn(&mut self) {
        if let Some(s) = self.shard.upgrade() {
            s.disk_turn().await;
        }
    }

    /// Lets the shard's other task queues run once this pass has had `SLICE` of CPU.
    pub(crate) async fn breathe(&mut self) {
        if self.slice.elapsed() >= SLICE {
            glommio::timer::sleep(STEP_ASIDE).await;
            self.slice = Instant::now();
        }
    }
    /// Account `n` bytes of I/O, sleeping if the pass is ahead of its rate.
    pub(crate) async fn io(&mut self, n: u64) {
        self.breathe().await;
        if self.rate == u64::MAX || self.rate == 0 {
            return;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed + Duration::from_millis(1) {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}

/// Reads a sealed segment file batch by batch, in chunks.
pub(crate) struct SegmentBatches {
    file: Rc<DmaFile>,
    base: i64,
    pos: u64,
    end: u64,
    chunk: Bytes,
    chunk_start: u64,
    /// Bytes read at once (more for a larger batch).
    read_chunk: usize,
}

impl SegmentBatches {
    pub(crate) async fn open(
        shard: &ShardStorage,
        log: &LogInner,
        base: i64,
        size: u64,
    ) -> Result<SegmentBatches, StorageError> {
        Ok(SegmentBatches {
            file: shard.segment_file(log, base, false).await?,
            base,
            pos: 0,
            end: size,
            chunk: Bytes::new(),
            chunk_start: 0,
            read_chunk: shard.opts.cleaner_read_chunk(),
        })
    }

    /// Makes `need` bytes from `pos` available in the chunk. What the chunk already holds
    /// from `pos` on is kept and only the rest is read: a batch larger than a read (1 MiB
    /// batches, 256 KiB reads) is not read twice.
    async fn fill(
        &mut self,
        need: usize,
        t: &mut Throttle,
        read: &mut u64,
    ) -> Result<(), StorageError> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        let kept = if self.chunk_start <= self.pos && self.pos < chunk_end {
            self.chunk.slice((self.pos - self.chunk_start) as usize..)
        } else {
            Bytes::new()
        };
        let want = need
            .max(self.read_chunk)
            .min((self.end - self.pos) as usize);
        let from = self.pos + kept.len() as u64;
        t.disk_turn().await;
        let r = self
            .file
            .read_at(from, want.saturating_sub(kept.len()))
            .await?;
        if kept.len() + r.len() < need {
            return Err(corrupt(format!(
                "segment {}: short read at {from} ({} of {need} bytes from {})",
                self.base,
                kept.len() + r.len(),
                self.pos
            )));
        }
        let mut chunk = Vec::with_capacity(kept.len() + r.len());
        chunk.extend_from_slice(&kept);
        chunk.extend_from_slice(&r);
        self.chunk = Bytes::from(chunk);
        self.chunk_start = self.pos;
        *read += r.len() as u64;
        t.io(r.len() as u64).await;
        Ok(())
    }

    /// The next whole batch, None at the end of the segment.
    pub(crate) async fn next(
        &mut self,
        t: &mut Throttle,
        read: &mut u64,
    ) -> Result<Option<Bytes>, StorageError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let have = |s: &SegmentBatches| s.chunk_start + s.chunk.len() as u64 - s.pos;
        if self.pos < self.chunk_start || have(self) < RECORD_BATCH_OVERHEAD as u64 {
            self.fill(RECORD_BATCH_OVERHEAD, t, read).await?;
        }
        let off = (self.pos - self.chunk_start) as usize;
        let h = RecordBatchHeader::parse(&self.chunk[off..])?;
        let size = h.total_size();
        if self.pos + size as u64 > self.end {
            return Err(corrupt(format!(
                "segment {}: batch at {} runs past its end",
                self.base, self.pos
            )));
        }
        if have(self) < size as u64 {
            self.fill(size, t, read).await?;
        }
        let off = (self.pos - self.chunk_start) as usize;
        self.pos += size as u64;
        Ok(Some(self.chunk.slice(off..off + size)))
    }
}

#[cfg(test)]
mod tests {
    use super::{SegmentBatches, Throttle};
    use crate::shard::TURN_MAX;
    use crate::{LogConfig, PartitionLog, SegmentWriter, ShardStorage, ShardStorageOptions};
    use futures_lite::future::poll_once;
    use std::time::{Duration, Instant};

    /// Batches smaller and larger than a read come back whole, in order, and each byte of
    /// the segment is read once.
    #[test]
    fn segment_batches_reads_each_byte_once() {
        let dir = crate::test_dir();
        let path = dir.path().join("t-0");
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                // values of 100 B to 40 KB against 8 KiB reads
                let mut batches = Vec::new();
                let mut w = SegmentWriter::create(&path, 0, 4096).await.unwrap(); // ok: test
                for (i, len) in [100usize, 20_000, 3_000, 40_000, 8_000, 9_000, 500]
                    .into_iter()
                    .enumerate()
                {
                    let b = crate::test_batch(i as i64, &vec![i as u8; len]);
                    w.append(&b).await.unwrap(); // ok: test
                    batches.push(b);
                }
                w.finish(batches.len() as i64).await.unwrap(); // ok: test
                let shard = ShardStorage::start(ShardStorageOptions {
                    cleaner_enabled: false,
                    cleaner_io_buffer_bytes: 16 << 10,
                    ..Default::default()
                });
                let log = PartitionLog::open(&shard, path, LogConfig::default())
                    .await
                    .unwrap(); // ok: test
                let size = log.inner.state().segments()[0].size;
                let total: usize = batches.iter().map(|b| b.len()).sum();
                assert_eq!(size, total as u64);
                let mut rd = SegmentBatches::open(&shard, &log.inner, 0, size)
                    .await
                    .unwrap(); // ok: test
                let (mut t, mut read) = (Throttle::new(&shard, u64::MAX), 0u64);
                for b in &batches {
                    let got = rd.next(&mut t, &mut read).await.unwrap(); // ok: test
                    assert_eq!(got.as_deref(), Some(&b[..]));
                }
                assert!(rd.next(&mut t, &mut read).await.unwrap().is_none()); // ok: test
                assert_eq!(read, size, "every byte read once");
                log.close().await.unwrap(); // ok: test
                shard.shutdown().await.unwrap(); // ok: test
            })
            .unwrap() // ok: test
            .join()
            .unwrap(); // ok: test
    }

    /// The cleaner's disk turn comes at once while the flusher is idle, waits for the end
    /// of a cycle under way, and never waits past its bound.
    #[test]
    fn disk_turn_waits_for_the_flusher_cycle() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let shard = ShardStorage::start(ShardStorageOptions {
                    cleaner_enabled: false,
                    ..Default::default()
                });
                let mut t = Throttle::new(&shard, u64::MAX);
                assert!(poll_once(t.disk_turn()).await.is_some(), "idle flusher");

                // a cycle under way (nothing is appended, so the flusher leaves it be)
                shard.flushing.set(true);
                let mut t2 = Throttle::new(&shard, u64::MAX);
                let mut turn = Box::pin(t2.disk_turn());
                assert!(poll_once(&mut turn).await.is_none(), "cycle under way");
                glommio::timer::sleep(Duration::from_millis(5)).await;
                assert!(
                    poll_once(&mut turn).await.is_none(),
                    "cycle still under way"
                );
                shard.flushing.set(false);
                shard.cycle_done.notify();
                assert!(poll_once(&mut turn).await.is_some(), "cycle ended");
                drop(turn);

                // a cycle that never ends holds the cleaner TURN_MAX, not longer
                shard.flushing.set(true);
                let started = Instant::now();
                t.disk_turn().await;
                assert!(started.elapsed() >= TURN_MAX);
                shard.flushing.set(false);
                shard.shutdown().await.unwrap(); // ok: test
            })
            .unwrap() // ok: test
            .join()
            .unwrap(); // ok: test
    }
}
