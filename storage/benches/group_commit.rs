//! Group commit with many partitions (issue 18, item 3), harness = false. For each case: N
//! logs on one shard, 1 KiB single-record batches appended round-robin at a fixed rate for
//! a while, with produce admission modelled (appends wait while the shard's unflushed bytes
//! are at the broker's `storage.unflushed.max.bytes`, 8 MiB by default). Reports the
//! achieved rate, append→durable latency counted from each batch's *intended* time (so a
//! stalled flusher is not hidden) at p50/p99/p99.9/max, flusher cycles and their mean time,
//! fsyncs per cycle, bytes written per byte appended, and CPU: the shard thread's
//! (getrusage RUSAGE_THREAD; it also runs this load generator) and the whole process's
//! (blocking helper and io_uring workers included).
//!
//! ```text
//!  pacer ─► log[k % N].append(1 KiB) ─► flusher ─► durable_signal ─► waiter(log): latency
//!            (waits while unflushed >= budget)
//! ```
//!
//! `journal-model` is not the storage crate: it models a per-shard write-ahead journal's
//! I/O with raw DMA files (one journal write + one fdatasync per cycle on a preallocated
//! journal; segment pages written behind without a sync by a task of their own, each pass
//! writing every log appended to since the last; every touched segment fdatasynced at a
//! checkpoint each 128 MiB of journal), to price design (a) before building it.
//!
//! Modes: `segment`, `filesystem` and `journal` are the storage crate with that
//! `FlushSync` (`storage.flush.sync`; `journal` with the default 1 GiB journal files,
//! created and zero-filled inside the measured case's setup, not its run: the setup writes
//! every log until a cycle went through the journal, for cases with at least the default
//! `journal_min_logs` (32) logs; smaller ones never journal).
//!
//! Environment: SLUICE_BENCH_LOGS (default "12,100,1000,10000"), SLUICE_BENCH_RATES (MB/s,
//! default "60,100"), SLUICE_BENCH_SECS (10), SLUICE_BENCH_MODES (default
//! "segment,filesystem,journal-model"), SLUICE_BENCH_BUDGET (bytes, 8388608),
//! SLUICE_BENCH_OPEN_FILES (the shard's `storage.max.open.files`, 4096),
//! SLUICE_BENCH_JOURNAL_BYTES (`storage.journal.bytes`, 1073741824),
//! SLUICE_BENCH_BEHIND_BYTES (`storage.journal.behind.max.bytes`, 268435456),
//! SLUICE_BENCH_NEIGHBOR_MBPS (a thread dirtying page cache on the same filesystem at
//! that rate, never syncing: another process's buffered writes), SLUICE_BENCH_DIR.

use bytes::Bytes;
use sluice_proto::batch::{build_batch, SimpleRecord};
use sluice_storage::*;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const RECORD: usize = 1024;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One batch of one record, `RECORD` bytes in all.
fn record_batch() -> Bytes {
    let probe = build_batch(
        0,
        &[SimpleRecord {
            key: Some(b"key-0000"),
            value: Some(&[]),
            timestamp: 1_700_000_000_000,
            headers: &[],
        }],
    );
    // the varint lengths grow by a byte or two with the value; aim a little low, then fix
    let mut vlen = RECORD.saturating_sub(probe.len() + 2);
    loop {
        let value = vec![0x5au8; vlen];
        let b = build_batch(
            0,
            &[SimpleRecord {
                key: Some(b"key-0000"),
                value: Some(&value),
                timestamp: 1_700_000_000_000,
                headers: &[],
            }],
        );
        if b.len() >= RECORD {
            return b;
        }
        vlen += 1;
    }
}

/// (user, system) CPU time of `who` (RUSAGE_THREAD or RUSAGE_SELF).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    #[allow(unsafe_code)]
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass by pointer.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

struct Report {
    mode: String,
    logs: usize,
    target_mb: f64,
    achieved_mb: f64,
    lat_us: Vec<u32>,
    cycles: u64,
    cycle_mean_ms: f64,
    fsyncs: u64,
    written: u64,
    appended: u64,
    shard_cpu: f64,
    proc_cpu: f64,
}

impl Report {
    fn header() {
        println!(
            "{:<14} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>6} {:>6}",
            "mode",
            "logs",
            "MB/s",
            "got",
            "p50 ms",
            "p99 ms",
            "p99.9",
            "max ms",
            "cycles",
            "cycle ms",
            "fsync/cyc",
            "wr/app",
            "shard",
            "proc"
        );
    }
    fn print(&self) {
        let cycles = self.cycles.max(1) as f64;
        println!(
            "{:<14} {:>6} {:>6.0} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>9.1} {:>9.1} {:>7.2} {:>5.0}% {:>5.0}%",
            self.mode,
            self.logs,
            self.target_mb,
            self.achieved_mb,
            pct(&self.lat_us, 0.5),
            pct(&self.lat_us, 0.99),
            pct(&self.lat_us, 0.999),
            pct(&self.lat_us, 1.0),
            self.cycles,
            self.cycle_mean_ms,
            self.fsyncs as f64 / cycles,
            self.written as f64 / self.appended.max(1) as f64,
            self.shard_cpu * 100.0,
            self.proc_cpu * 100.0,
        );
    }
}

/// Appends at `rate` bytes/s for `run`, calling `append(k, intended)` for batch k, waiting
/// on `blocked` (then `wake`) while the budget is spent. Returns the batches appended.
async fn pace<A, B, W, F>(rate: f64, run: Duration, mut append: A, blocked: B, wake: W) -> u64
where
    A: FnMut(u64, Instant),
    B: Fn() -> bool,
    W: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    let every = RECORD as f64 / rate;
    let start = Instant::now();
    let mut k = 0u64;
    loop {
        let el = start.elapsed();
        if el >= run {
            break;
        }
        let due = (el.as_secs_f64() / every) as u64;
        while k < due && !blocked() {
            append(k, start + Duration::from_secs_f64(k as f64 * every));
            k += 1;
        }
        if k < due {
            // the budget is spent: produce admission waits for the flusher
            futures_lite::future::or(wake(), glommio::timer::sleep(Duration::from_millis(5))).await;
        } else {
            glommio::timer::sleep(Duration::from_micros(500)).await;
        }
    }
    k
}

/// Per-log outstanding batches (last offset, intended time) and a signal for "not empty".
struct Outstanding {
    q: RefCell<VecDeque<(i64, Instant)>>,
    more: Signal,
}

async fn storage_case(
    dir: PathBuf,
    logs: usize,
    rate: f64,
    run: Duration,
    budget: usize,
    opts: ShardStorageOptions,
    mode: &str,
) -> Report {
    // the journal is opened by the first cycle with `journal_min_logs` dirty logs: it
    // takes cycles through it before the clock starts
    let journaled = opts.flush_sync == FlushSync::Journal && logs >= opts.journal_min_logs;
    let shard = ShardStorage::start(opts);
    let mut ls = Vec::with_capacity(logs);
    for i in 0..logs {
        ls.push(
            PartitionLog::open(&shard, dir.join(format!("t-{i}")), LogConfig::default())
                .await
                .unwrap(),
        );
    }
    let batch = record_batch();
    // one batch made durable before the clock starts: the flusher is up (with the
    // journal: its files created and zero-filled)
    let first = ls[0].append(batch.clone(), 0).unwrap();
    ls[0].wait_durable(first.last_offset).await.unwrap();
    // and, with the journal, one batch on every log round after round until a cycle went
    // through it: its files are created and zero-filled here, not in the measured run
    let setup_bound = Instant::now() + Duration::from_secs(120);
    while journaled && shard.metrics().journal_bytes_written == 0 {
        assert!(
            Instant::now() < setup_bound,
            "the journal never took a cycle"
        );
        let mut waits = Vec::with_capacity(logs);
        for l in &ls {
            waits.push((l, l.append(batch.clone(), 0).unwrap().last_offset));
        }
        for (l, last) in waits {
            l.wait_durable(last).await.unwrap();
        }
    }
    let lat: Rc<RefCell<Vec<u32>>> = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(Cell::new(false));
    let outs: Vec<Rc<Outstanding>> = (0..logs)
        .map(|_| {
            Rc::new(Outstanding {
                q: RefCell::new(VecDeque::new()),
                more: Signal::default(),
            })
        })
        .collect();
    let mut waiters = Vec::with_capacity(logs);
    for (log, out) in ls.iter().zip(&outs) {
        let (log, out, lat, stop) = (log.clone(), out.clone(), lat.clone(), stop.clone());
        waiters.push(glommio::spawn_local(async move {
            loop {
                let front = out.q.borrow().front().map(|f| f.0);
                let Some(off) = front else {
                    if stop.get() {
                        return;
                    }
                    out.more.wait().await;
                    continue;
                };
                log.wait_durable(off).await.unwrap();
                let d = log.durable_offset();
                let now = Instant::now();
                let mut q = out.q.borrow_mut();
                let mut l = lat.borrow_mut();
                while q.front().is_some_and(|f| f.0 < d) {
                    let (_, t) = q.pop_front().unwrap();
                    l.push(now.duration_since(t).as_micros() as u32);
                }
            }
        }));
    }
    if std::env::var("SLUICE_BENCH_TRACE").is_ok() {
        let (sh, st) = (shard.clone(), stop.clone());
        glommio::spawn_local(async move {
            let t = Instant::now();
            while !st.get() {
                let m = sh.metrics();
                eprintln!(
                    "{:6.1}s unflushed {:>9} admission {:>9} cycles {} ckpts {} seg MB {} jnl MB {} fsyncs {}",
                    t.elapsed().as_secs_f64(),
                    sh.unflushed_bytes(),
                    sh.admission_bytes(),
                    m.flush_cycles,
                    m.journal_checkpoints,
                    m.bytes_written >> 20,
                    m.journal_bytes_written >> 20,
                    m.fsyncs,
                );
                glommio::timer::sleep(Duration::from_millis(250)).await;
            }
        })
        .detach();
    }
    let m0 = shard.metrics();
    let (cpu_t0, cpu_p0) = (cpu_time(libc::RUSAGE_THREAD), cpu_time(libc::RUSAGE_SELF));
    let t0 = Instant::now();
    let appended = pace(
        rate,
        run,
        |k, intended| {
            let i = (k % logs as u64) as usize;
            let info = ls[i].append(batch.clone(), 0).unwrap();
            let mut q = outs[i].q.borrow_mut();
            q.push_back((info.last_offset, intended));
            if q.len() == 1 {
                outs[i].more.notify();
            }
        },
        || shard.admission_bytes() >= budget,
        || shard.wait_progress(),
    )
    .await;
    stop.set(true);
    for o in &outs {
        o.more.notify();
    }
    for w in waiters {
        w.await;
    }
    let took = t0.elapsed();
    let (cpu_t, cpu_p) = (
        cpu_time(libc::RUSAGE_THREAD) - cpu_t0,
        cpu_time(libc::RUSAGE_SELF) - cpu_p0,
    );
    let m = shard.metrics();
    let cycles = m.flush_cycles - m0.flush_cycles;
    let cycle_secs = m.flush_cycle_durations.sum_seconds() - m0.flush_cycle_durations.sum_seconds();
    let mut v = std::mem::take(&mut *lat.borrow_mut());
    v.sort_unstable();
    Report {
        mode: mode.into(),
        logs,
        target_mb: rate / 1e6,
        achieved_mb: (appended as usize * batch.len()) as f64 / 1e6 / took.as_secs_f64(),
        lat_us: v,
        cycles,
        cycle_mean_ms: cycle_secs * 1000.0 / cycles.max(1) as f64,
        fsyncs: m.fsyncs - m0.fsyncs,
        // segment writes, and with the journal its record sets too
        written: m.bytes_written - m0.bytes_written + m.journal_bytes_written
            - m0.journal_bytes_written,
        appended: m.bytes_appended - m0.bytes_appended,
        shard_cpu: cpu_t.as_secs_f64() / took.as_secs_f64(),
        proc_cpu: cpu_p.as_secs_f64() / took.as_secs_f64(),
    }
}

// ---- design (a), modelled: a per-shard journal -------------------------------------------

const JOURNAL_BYTES: u64 = 256 << 20;
const CHECKPOINT_EVERY: u64 = 128 << 20;
const JOURNAL_HEADER: usize = 32;

async fn dma_open(path: &Path) -> glommio::io::DmaFile {
    glommio::io::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .unwrap()
}

/// What the journal model shares between its pacer, cycle and checkpoint tasks.
struct Journal {
    /// Records appended and not yet in a journal write: (log, intended time).
    pending: RefCell<Vec<(usize, Instant)>>,
    pending_bytes: Cell<usize>,
    wake: Signal,
    progress: Signal,
    lat: RefCell<Vec<u32>>,
    /// Bytes of each log's segment written so far (write-behind), and dirty since the
    /// last checkpoint.
    seg_len: RefCell<Vec<u64>>,
    seg_dirty: RefCell<Vec<bool>>,
    /// Bytes per log appended since the write-behind task's last pass.
    behind: RefCell<Vec<u64>>,
    behind_wake: Signal,
    behind_busy: Cell<bool>,
    cycle_running: Cell<bool>,
    cycles: Cell<u64>,
    cycle_secs: Cell<f64>,
    fsyncs: Cell<u64>,
    written: Cell<u64>,
    stop: Cell<bool>,
}

async fn journal_case(
    dir: PathBuf,
    logs: usize,
    rate: f64,
    run: Duration,
    budget: usize,
) -> Report {
    std::fs::create_dir_all(&dir).unwrap();
    // preallocated by writing it once: an overwrite changes no metadata, so its
    // fdatasync is a device cache flush
    let jpath = dir.join("journal");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&jpath).unwrap();
        let zero = vec![0u8; 1 << 20];
        for _ in 0..(JOURNAL_BYTES >> 20) {
            f.write_all(&zero).unwrap();
        }
        f.sync_all().unwrap();
    }
    let journal = Rc::new(dma_open(&jpath).await);
    let mut segs = Vec::with_capacity(logs);
    for i in 0..logs {
        segs.push(Rc::new(dma_open(&dir.join(format!("seg-{i}.log"))).await));
    }
    let segs = Rc::new(segs);
    let j = Rc::new(Journal {
        pending: RefCell::new(Vec::new()),
        pending_bytes: Cell::new(0),
        wake: Signal::default(),
        progress: Signal::default(),
        lat: RefCell::new(Vec::new()),
        seg_len: RefCell::new(vec![0; logs]),
        seg_dirty: RefCell::new(vec![false; logs]),
        behind: RefCell::new(vec![0; logs]),
        behind_wake: Signal::default(),
        behind_busy: Cell::new(false),
        cycle_running: Cell::new(true),
        cycles: Cell::new(0),
        cycle_secs: Cell::new(0.0),
        fsyncs: Cell::new(0),
        written: Cell::new(0),
        stop: Cell::new(false),
    });
    let cycle_task = {
        let (j, journal, segs) = (j.clone(), journal.clone(), segs.clone());
        glommio::spawn_local(async move {
            let mut pos = 0u64;
            let mut since_ckpt = 0u64;
            let mut ckpt: Option<glommio::Task<()>> = None;
            loop {
                let w = j.wake.wait();
                let taken = std::mem::take(&mut *j.pending.borrow_mut());
                if taken.is_empty() {
                    if j.stop.get() {
                        break;
                    }
                    w.await;
                    continue;
                }
                drop(w);
                let t = Instant::now();
                let bytes = taken.len() * (RECORD + JOURNAL_HEADER);
                let len = bytes.div_ceil(4096) * 4096;
                if pos + len as u64 > JOURNAL_BYTES {
                    pos = 0;
                }
                let mut buf = journal.alloc_dma_buffer(len);
                buf.as_bytes_mut().fill(0x11);
                journal.write_at(buf, pos).await.unwrap();
                journal.fdatasync().await.unwrap();
                pos += len as u64;
                since_ckpt += len as u64;
                j.fsyncs.set(j.fsyncs.get() + 1);
                j.written.set(j.written.get() + len as u64);
                let now = Instant::now();
                {
                    let mut l = j.lat.borrow_mut();
                    for (_, intended) in &taken {
                        l.push(now.duration_since(*intended).as_micros() as u32);
                    }
                }
                j.pending_bytes
                    .set(j.pending_bytes.get().saturating_sub(taken.len() * RECORD));
                j.cycles.set(j.cycles.get() + 1);
                j.cycle_secs
                    .set(j.cycle_secs.get() + t.elapsed().as_secs_f64());
                j.progress.notify();
                // write behind, off the cycle's path: bytes per log accumulate until the
                // write-behind task's next pass (one write per log and pass, its partial
                // tail page again), so busy cycles coalesce
                {
                    let mut acc = j.behind.borrow_mut();
                    for (i, _) in &taken {
                        acc[*i] += RECORD as u64;
                    }
                }
                j.behind_wake.notify();
                // checkpoint: every touched segment synced, then the journal space is free
                if since_ckpt >= CHECKPOINT_EVERY {
                    if let Some(c) = ckpt.take() {
                        c.await; // the journal cannot wrap over an unfinished checkpoint
                    }
                    // the checkpoint syncs what was written behind up to now
                    while j.behind_busy.get() || j.behind.borrow().iter().any(|&b| b > 0) {
                        j.behind_wake.notify();
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    since_ckpt = 0;
                    let (j2, segs2) = (j.clone(), segs.clone());
                    ckpt = Some(glommio::spawn_local(async move {
                        let dirty: Vec<usize> = {
                            let mut d = j2.seg_dirty.borrow_mut();
                            let v = (0..d.len()).filter(|&i| d[i]).collect();
                            d.iter_mut().for_each(|x| *x = false);
                            v
                        };
                        for chunk in dirty.chunks(64) {
                            let ws: Vec<_> = chunk
                                .iter()
                                .map(|&i| {
                                    let f = segs2[i].clone();
                                    glommio::spawn_local(
                                        async move { f.fdatasync().await.unwrap() },
                                    )
                                })
                                .collect();
                            for w in ws {
                                w.await;
                            }
                            j2.fsyncs.set(j2.fsyncs.get() + chunk.len() as u64);
                        }
                    }));
                }
            }
            if let Some(c) = ckpt.take() {
                c.await;
            }
        })
    };
    let behind_task = {
        let (j, segs) = (j.clone(), segs.clone());
        glommio::spawn_local(async move {
            loop {
                let w = j.behind_wake.wait();
                let per_log: Vec<(usize, u64)> = {
                    let mut acc = j.behind.borrow_mut();
                    let v = (0..acc.len())
                        .filter(|&i| acc[i] > 0)
                        .map(|i| (i, acc[i]))
                        .collect();
                    acc.iter_mut().for_each(|x| *x = 0);
                    v
                };
                if per_log.is_empty() {
                    if j.stop.get() && !j.cycle_running.get() {
                        return;
                    }
                    w.await;
                    continue;
                }
                drop(w);
                j.behind_busy.set(true);
                for chunk in per_log.chunks(64) {
                    let mut ws = Vec::new();
                    for &(i, n) in chunk {
                        let start = j.seg_len.borrow()[i];
                        let page = start / 4096 * 4096;
                        let end = start + n;
                        let wlen = (end.div_ceil(4096) * 4096 - page) as usize;
                        j.seg_len.borrow_mut()[i] = end;
                        j.seg_dirty.borrow_mut()[i] = true;
                        j.written.set(j.written.get() + wlen as u64);
                        let f = segs[i].clone();
                        ws.push(glommio::spawn_local(async move {
                            let mut b = f.alloc_dma_buffer(wlen);
                            b.as_bytes_mut().fill(0x22);
                            f.write_at(b, page).await.unwrap();
                        }));
                    }
                    for w in ws {
                        w.await;
                    }
                }
                j.behind_busy.set(false);
            }
        })
    };
    let (cpu_t0, cpu_p0) = (cpu_time(libc::RUSAGE_THREAD), cpu_time(libc::RUSAGE_SELF));
    let t0 = Instant::now();
    let appended = pace(
        rate,
        run,
        |k, intended| {
            let i = (k % logs as u64) as usize;
            j.pending.borrow_mut().push((i, intended));
            j.pending_bytes.set(j.pending_bytes.get() + RECORD);
            j.wake.notify();
        },
        || j.pending_bytes.get() >= budget,
        || j.progress.wait(),
    )
    .await;
    j.stop.set(true);
    j.wake.notify();
    cycle_task.await;
    let took = t0.elapsed();
    j.cycle_running.set(false);
    j.behind_wake.notify();
    behind_task.await;
    journal.close_rc().await.unwrap();
    // the tasks holding them are done: close every file, so later cases have descriptors
    if let Ok(segs) = Rc::try_unwrap(segs) {
        for f in segs {
            f.close_rc().await.unwrap();
        }
    }
    let (cpu_t, cpu_p) = (
        cpu_time(libc::RUSAGE_THREAD) - cpu_t0,
        cpu_time(libc::RUSAGE_SELF) - cpu_p0,
    );
    let mut v = std::mem::take(&mut *j.lat.borrow_mut());
    v.sort_unstable();
    let cycles = j.cycles.get();
    Report {
        mode: "journal-model".into(),
        logs,
        target_mb: rate / 1e6,
        achieved_mb: (appended as usize * RECORD) as f64 / 1e6 / took.as_secs_f64(),
        lat_us: v,
        cycles,
        cycle_mean_ms: j.cycle_secs.get() * 1000.0 / cycles.max(1) as f64,
        fsyncs: j.fsyncs.get(),
        written: j.written.get(),
        appended: appended * RECORD as u64,
        shard_cpu: cpu_t.as_secs_f64() / took.as_secs_f64(),
        proc_cpu: cpu_p.as_secs_f64() / took.as_secs_f64(),
    }
}

/// Another process's buffered writes: dirties page cache on the bench's filesystem at
/// `mbps`, never syncing, over a 1 GiB file it rewrites, until `stop`.
fn neighbor(dir: &Path, mbps: f64, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Seek, Write};
    let path = dir.join("neighbor.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x33u8; 1 << 20];
    let every = Duration::from_secs_f64(1.0 / mbps.max(0.001));
    let start = Instant::now();
    let mut n = 0u32;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = start + every * n;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if n.is_multiple_of(1024) {
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
        }
        f.write_all(&chunk).unwrap();
        n += 1;
    }
    drop(f);
    let _ = std::fs::remove_file(path); // ok: scratch
}

fn main() {
    let _ = raise_fd_limit();
    let root = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sluice-bench-gc"));
    std::fs::create_dir_all(&root).unwrap();
    let logs: Vec<usize> = env_list("SLUICE_BENCH_LOGS", "12,100,1000,10000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let rates: Vec<f64> = env_list("SLUICE_BENCH_RATES", "60,100")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let modes = env_list("SLUICE_BENCH_MODES", "segment,filesystem,journal-model");
    let run = Duration::from_secs_f64(env_num("SLUICE_BENCH_SECS", 10.0));
    let budget: usize = env_num("SLUICE_BENCH_BUDGET", 8 << 20);
    let open_files: usize = env_num("SLUICE_BENCH_OPEN_FILES", 4096);
    let journal_bytes: u64 = env_num("SLUICE_BENCH_JOURNAL_BYTES", 1 << 30);
    let journal_behind_bytes: usize = env_num("SLUICE_BENCH_BEHIND_BYTES", 256 << 20);
    let neighbor_mbps: f64 = env_num("SLUICE_BENCH_NEIGHBOR_MBPS", 0.0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nb = (neighbor_mbps > 0.0).then(|| {
        let (d, s) = (root.clone(), stop.clone());
        std::thread::spawn(move || neighbor(&d, neighbor_mbps, s))
    });
    println!(
        "group commit bench: dir {}, {} s per case, 1 KiB single-record batches, budget {} KiB{}",
        root.display(),
        run.as_secs_f64(),
        budget >> 10,
        if neighbor_mbps > 0.0 {
            format!(", neighbor dirtying {neighbor_mbps} MB/s of page cache")
        } else {
            String::new()
        }
    );
    Report::header();
    for mode in &modes {
        for &n in &logs {
            for &rate in &rates {
                let dir = root.join(format!("case-{mode}-{n}-{rate}"));
                let _ = std::fs::remove_dir_all(&dir);
                let (d, m) = (dir.clone(), mode.clone());
                let report = glommio::LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        if m == "journal-model" {
                            journal_case(d, n, rate * 1e6, run, budget).await
                        } else {
                            let flush_sync = FlushSync::parse(&m).unwrap_or_else(|| {
                                panic!("mode {m}: segment, filesystem, journal or journal-model")
                            });
                            let opts = ShardStorageOptions {
                                flush_sync,
                                journal_dir: Some(d.clone()),
                                max_open_files: open_files,
                                journal_bytes,
                                journal_behind_bytes,
                                ..Default::default()
                            };
                            storage_case(d, n, rate * 1e6, run, budget, opts, &m).await
                        }
                    })
                    .unwrap()
                    .join()
                    .unwrap();
                report.print();
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = nb {
        let _ = h.join();
    }
}
