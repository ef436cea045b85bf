//! The log cleaner's I/O helpers: a sealed segment read batch by batch in 1 MiB chunks
//! (DMA reads through the shard's open-file table), and the throttle that keeps a pass's
//! reads and writes under `cleaner_io_bytes_per_sec` (Kafka's Throttler). Owned by the
//! pass that uses them; never cross cores.

use crate::error::{corrupt, StorageError};
use crate::inner::LogInner;
use crate::shard::ShardStorage;
use bytes::Bytes;
use glommio::io::DmaFile;
use sluice_proto::batch::{RecordBatchHeader, RECORD_BATCH_OVERHEAD};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read from a segment file at once.
const READ_CHUNK: usize = 1 << 20;

/// CPU a pass uses before it lets the shard's other task queues run: the cleaner's queue
/// has few shares, but shares only count at a switch, and glommio switches a queue that
/// does not yield only at its preemption timer (tens of ms): produce and fetch would wait
/// that long (measured: produce p99 x7 with the cleaner running, before this).
const SLICE: Duration = Duration::from_micros(500);

/// Limits the bytes a pass reads and writes per second, and the CPU it takes at once.
pub(crate) struct Throttle {
    rate: u64,
    start: Instant,
    bytes: u64,
    slice: Instant,
}

impl Throttle {
    pub(crate) fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            start: Instant::now(),
            bytes: 0,
            slice: Instant::now(),
        }
    }

    /// Lets the shard's other task queues run once this pass has had `SLICE` of CPU.
    pub(crate) async fn breathe(&mut self) {
        if self.slice.elapsed() >= SLICE {
            glommio::executor().yield_task_queue_now().await;
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
        })
    }

    /// Makes `need` bytes from `pos` available in the chunk.
    async fn fill(
        &mut self,
        need: usize,
        t: &mut Throttle,
        read: &mut u64,
    ) -> Result<(), StorageError> {
        let len = need.max(READ_CHUNK).min((self.end - self.pos) as usize);
        let r = self.file.read_at(self.pos, len).await?;
        if r.len() < need {
            return Err(corrupt(format!(
                "segment {}: short read at {} ({} of {need} bytes)",
                self.base,
                self.pos,
                r.len()
            )));
        }
        self.chunk = Bytes::copy_from_slice(&r);
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
