//! Physical references measured with io_uring: loopback TCP throughput between two
//! threads, O_DIRECT sequential write and read bandwidth, and the rate of 4 KiB
//! write + `fdatasync` pairs on the data directory's filesystem.
//!
//! ```text
//!  sender thread --io_uring Send 1 MiB--> 127.0.0.1 --io_uring Recv--> receiver thread
//!  data dir: [O_DIRECT writes, B bytes, QD n] -> fdatasync ; [O_DIRECT reads, B, QD n]
//!            [4 KiB O_DIRECT write -> (IO_LINK) fdatasync] x N, one pair in flight
//! ```
//! Every buffer handed to the kernel outlives its operation: each probe waits for all of
//! its completions before its buffers drop. Each probe runs for a bounded wall time.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use rand::RngCore;
use serde::Serialize;

use crate::stats::{LatencyHistogram, LatencySummary};

/// Buffer size for the loopback probe, and the default disk block.
const BULK: usize = 1 << 20;
/// Alignment required by O_DIRECT (logical block size of any common device or fs).
const ALIGN: usize = 4096;

/// How long and where to probe.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Directory on the filesystem to test (the broker's data dir).
    pub dir: PathBuf,
    /// Wall time per probe.
    pub per_probe: Duration,
    /// Largest scratch file for the bandwidth probes; writes wrap around past it.
    pub max_file_bytes: u64,
    /// O_DIRECT operations kept in flight by the bandwidth probes: each depth is tried
    /// and the best is the reference (a device's best depth varies; too deep a queue
    /// can be slower than a shallow one on a virtual disk).
    pub queue_depths: Vec<usize>,
    /// Bytes per O_DIRECT bandwidth operation (a multiple of 4 KiB).
    pub block_bytes: usize,
}

impl LimitsConfig {
    /// Defaults: 4 s per probe (about 24 s in total), QD 4 and 16, 2 GiB scratch file at most.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            per_probe: Duration::from_secs(4),
            max_file_bytes: 2 << 30,
            queue_depths: vec![4, 16],
            block_bytes: BULK,
        }
    }
}

/// The measured references. A probe that failed leaves `None` and a line in `errors`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Limits {
    /// Directory the disk probes used.
    pub dir: String,
    /// Bytes per O_DIRECT operation in the bandwidth probes.
    pub direct_block_bytes: usize,
    /// O_DIRECT operations in flight in the best write and the best read probe.
    pub direct_write_queue_depth: usize,
    pub direct_read_queue_depth: usize,
    /// Every depth tried.
    pub direct_queue_depths_tried: Vec<usize>,
    /// Loopback TCP throughput, bytes per second.
    pub loopback_bytes_per_sec: Option<f64>,
    /// O_DIRECT sequential write bandwidth including the closing fdatasync, bytes/s.
    pub direct_write_bytes_per_sec: Option<f64>,
    /// O_DIRECT sequential read bandwidth, bytes/s.
    pub direct_read_bytes_per_sec: Option<f64>,
    /// Completed 4 KiB write + fdatasync pairs per second.
    pub fdatasync_per_sec: Option<f64>,
    /// Latency of one 4 KiB write + fdatasync pair.
    pub fdatasync_latency: Option<LatencySummary>,
    /// Probes that could not run, and why.
    pub errors: Vec<String>,
}

/// Runs all probes. Never fails as a whole; failed probes are listed in `errors`.
pub fn measure(cfg: &LimitsConfig) -> Limits {
    let mut out = Limits {
        dir: cfg.dir.display().to_string(),
        ..Limits::default()
    };
    match loopback_tcp(cfg.per_probe) {
        Ok(v) => out.loopback_bytes_per_sec = Some(v),
        Err(e) => out.errors.push(format!("loopback tcp: {e}")),
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.dir) {
        out.errors
            .push(format!("data dir {}: {e}", cfg.dir.display()));
        return out;
    }
    let scratch = cfg
        .dir
        .join(format!(".sluice-bench-limits-{}", std::process::id()));
    let block = (cfg.block_bytes.clamp(ALIGN, 64 << 20) / ALIGN) * ALIGN;
    out.direct_block_bytes = block;
    let mut depths: Vec<usize> = cfg.queue_depths.iter().map(|&q| q.clamp(1, 256)).collect();
    if depths.is_empty() {
        depths.push(16);
    }
    depths.sort_unstable();
    depths.dedup();
    out.direct_queue_depths_tried = depths.clone();
    for qd in depths {
        match direct_write_then_read(&scratch, cfg.per_probe, cfg.max_file_bytes, qd, block) {
            Ok((w, r)) => {
                if out.direct_write_bytes_per_sec.is_none_or(|best| w > best) {
                    out.direct_write_bytes_per_sec = Some(w);
                    out.direct_write_queue_depth = qd;
                }
                if out.direct_read_bytes_per_sec.is_none_or(|best| r > best) {
                    out.direct_read_bytes_per_sec = Some(r);
                    out.direct_read_queue_depth = qd;
                }
            }
            Err(e) => out.errors.push(format!("O_DIRECT bandwidth, QD {qd}: {e}")),
        }
        let _ = std::fs::remove_file(&scratch);
    }
    match fdatasync_rate(&scratch, cfg.per_probe) {
        Ok((rate, lat)) => {
            out.fdatasync_per_sec = Some(rate);
            out.fdatasync_latency = lat.summary();
        }
        Err(e) => out.errors.push(format!("fdatasync rate: {e}")),
    }
    let _ = std::fs::remove_file(&scratch);
    out
}

/// A heap buffer whose usable part starts at an `ALIGN`-aligned address, built from safe
/// code by over-allocating and skipping to the first aligned byte.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let mut storage = vec![0u8; len + ALIGN];
        rand::rng().fill_bytes(&mut storage);
        let addr = storage.as_ptr() as usize;
        let start = (ALIGN - addr % ALIGN) % ALIGN;
        Self {
            storage,
            start,
            len,
        }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.storage[self.start..self.start + self.len].as_mut_ptr()
    }
}

/// Pushes one entry and submits, waiting for at least `wait` completions.
#[allow(unsafe_code)]
fn push_and_submit(ring: &mut IoUring, entries: &[squeue::Entry], wait: usize) -> io::Result<()> {
    for entry in entries {
        // SAFETY: every entry points at a buffer (or socket/file) owned by the calling
        // probe, which waits for the entry's completion before releasing the buffer; the
        // ring is sized for the probe's maximum number of in-flight entries, so a push
        // failing means a logic error, reported as an error rather than ignored.
        unsafe {
            ring.submission()
                .push(entry)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
    }
    ring.submit_and_wait(wait)?;
    Ok(())
}

/// Pops one completion (after `submit_and_wait` guaranteed there is one).
fn pop(ring: &mut IoUring) -> io::Result<(u64, i32)> {
    ring.completion()
        .next()
        .map(|c| (c.user_data(), c.result()))
        .ok_or_else(|| io::Error::other("no completion after submit_and_wait"))
}

fn check(res: i32, what: &str) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::new(
            io::Error::from_raw_os_error(-res).kind(),
            format!("{what}: {}", io::Error::from_raw_os_error(-res)),
        ))
    } else {
        Ok(res as usize)
    }
}

/// Bytes per second one thread can push to another over 127.0.0.1.
pub fn loopback_tcp(duration: Duration) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sender = std::thread::spawn(move || -> io::Result<u64> {
        let stream = TcpStream::connect(addr)?;
        let mut ring = IoUring::new(4)?;
        let mut buf = AlignedBuf::new(BULK);
        let fd = types::Fd(stream.as_raw_fd());
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let send = opcode::Send::new(fd, buf.ptr(), BULK as u32).build();
            push_and_submit(&mut ring, &[send], 1)?;
            let (_, res) = pop(&mut ring)?;
            sent += check(res, "send")? as u64;
        }
        drop(stream); // EOF tells the receiver to stop
        Ok(sent)
    });
    let (conn, _) = listener.accept()?;
    let mut ring = IoUring::new(4)?;
    let mut buf = AlignedBuf::new(BULK);
    let fd = types::Fd(conn.as_raw_fd());
    let start = Instant::now();
    let mut received = 0u64;
    loop {
        let recv = opcode::Recv::new(fd, buf.ptr(), BULK as u32).build();
        push_and_submit(&mut ring, &[recv], 1)?;
        let (_, res) = pop(&mut ring)?;
        let n = check(res, "recv")?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let elapsed = start.elapsed();
    let sent = sender
        .join()
        .map_err(|_| io::Error::other("sender thread panicked"))??;
    if sent != received {
        return Err(io::Error::other(format!(
            "sent {sent} bytes but received {received}"
        )));
    }
    Ok(received as f64 / elapsed.as_secs_f64())
}

fn open_direct(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open O_DIRECT {}: {e}", path.display())))
}

/// Runs `qd` bulk operations in flight until `duration` passes, returning bytes moved.
/// Offsets advance sequentially and wrap at `wrap_at`.
fn bulk_loop(
    file: &File,
    write: bool,
    duration: Duration,
    wrap_at: u64,
    qd: usize,
    block: usize,
) -> io::Result<u64> {
    let mut ring = IoUring::new((qd * 2).next_power_of_two() as u32)?;
    let mut bufs: Vec<AlignedBuf> = (0..qd).map(|_| AlignedBuf::new(block)).collect();
    let fd = types::Fd(file.as_raw_fd());
    let wrap_at = (wrap_at / block as u64).max(1) * block as u64;
    let mut next_offset = 0u64;
    let mut moved = 0u64;
    let mut in_flight = 0usize;
    let deadline = Instant::now() + duration;
    let mut entries = Vec::with_capacity(qd);
    for (slot, buf) in bufs.iter_mut().enumerate() {
        entries.push(bulk_entry(fd, write, buf, block, next_offset, slot));
        next_offset = (next_offset + block as u64) % wrap_at;
    }
    push_and_submit(&mut ring, &entries, 1)?;
    in_flight += entries.len();
    let mut first_err = None;
    while in_flight > 0 {
        if ring.completion().is_empty() {
            ring.submit_and_wait(1)?;
        }
        let (slot, res) = pop(&mut ring)?;
        in_flight -= 1;
        match check(res, if write { "write" } else { "read" }) {
            Ok(n) => moved += n as u64,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        if first_err.is_none() && Instant::now() < deadline {
            let slot = slot as usize;
            let entry = bulk_entry(fd, write, &mut bufs[slot], block, next_offset, slot);
            next_offset = (next_offset + block as u64) % wrap_at;
            push_and_submit(&mut ring, &[entry], 0)?;
            in_flight += 1;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(moved),
    }
}

fn bulk_entry(
    fd: types::Fd,
    write: bool,
    buf: &mut AlignedBuf,
    block: usize,
    offset: u64,
    slot: usize,
) -> squeue::Entry {
    let entry = if write {
        opcode::Write::new(fd, buf.ptr(), block as u32)
            .offset(offset)
            .build()
    } else {
        opcode::Read::new(fd, buf.ptr(), block as u32)
            .offset(offset)
            .build()
    };
    entry.user_data(slot as u64)
}

/// (write, read) bandwidth in bytes per second on `path`'s filesystem with O_DIRECT.
fn direct_write_then_read(
    path: &Path,
    duration: Duration,
    max_bytes: u64,
    qd: usize,
    block: usize,
) -> io::Result<(f64, f64)> {
    let file = open_direct(path, true)?;
    let start = Instant::now();
    let written = bulk_loop(&file, true, duration, max_bytes, qd, block)?;
    file.sync_data()?;
    let write_bw = written as f64 / start.elapsed().as_secs_f64();
    let readable = written.min(max_bytes);
    let start = Instant::now();
    let read = bulk_loop(&file, false, duration, readable, qd, block)?;
    let read_bw = read as f64 / start.elapsed().as_secs_f64();
    Ok((write_bw, read_bw))
}

/// Sequential 4 KiB O_DIRECT appends, each followed by a linked fdatasync; one pair in
/// flight, like a log whose every commit must be durable before the next.
fn fdatasync_rate(path: &Path, duration: Duration) -> io::Result<(f64, LatencyHistogram)> {
    let file = open_direct(path, true)?;
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new(4)?;
    let mut buf = AlignedBuf::new(ALIGN);
    let mut hist = LatencyHistogram::new();
    let start = Instant::now();
    let mut offset = 0u64;
    let mut pairs = 0u64;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        let write = opcode::Write::new(fd, buf.ptr(), ALIGN as u32)
            .offset(offset)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(0);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(1);
        push_and_submit(&mut ring, &[write, sync], 2)?;
        for _ in 0..2 {
            let (which, res) = pop(&mut ring)?;
            check(res, if which == 0 { "write" } else { "fdatasync" })?;
        }
        hist.record(t0.elapsed());
        offset += ALIGN as u64;
        pairs += 1;
    }
    Ok((pairs as f64 / start.elapsed().as_secs_f64(), hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned() {
        for len in [ALIGN, BULK] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.ptr() as usize % ALIGN, 0);
        }
    }

    #[test]
    fn short_probes_all_measure_positive_rates() {
        // Runs every probe briefly in the temp dir, which must support O_DIRECT (a real
        // disk, not tmpfs) and io_uring must be allowed: both hold on the target machine.
        let dir = std::env::temp_dir().join(format!("sluice-bench-test-{}", std::process::id()));
        let cfg = LimitsConfig {
            dir: dir.clone(),
            per_probe: Duration::from_millis(150),
            max_file_bytes: 16 << 20,
            queue_depths: vec![2, 4],
            block_bytes: 256 << 10,
        };
        let l = measure(&cfg);
        let _ = std::fs::remove_dir_all(&dir);
        let probes = [
            l.loopback_bytes_per_sec,
            l.direct_write_bytes_per_sec,
            l.direct_read_bytes_per_sec,
            l.fdatasync_per_sec,
        ];
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        for v in probes {
            let v = v.expect("probe ran");
            assert!(v.is_finite() && v > 0.0, "{l:?}");
        }
        assert_eq!(l.fdatasync_latency.is_some(), l.fdatasync_per_sec.is_some());
    }
}
