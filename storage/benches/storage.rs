//! Storage benchmark (harness = false; prints a table). In one run: raw O_DIRECT
//! sequential write bandwidth to the bench directory (DmaFile, 1 MiB writes, 8 in flight,
//! one fdatasync), then the log's append throughput with group commit for 1 KiB records in
//! batches of 16 KiB / 64 KiB / 1 MiB, read throughput (cache and cold DMA), each as a
//! ratio to the raw figure; then 10,000 idle partitions ($SLUICE_BENCH_PARTITIONS) reopened
//! after a clean shutdown in a fresh child process (this binary re-run), which reports
//! VmRSS before/after and the open time. Before the throughput cases: durable-append
//! latency under a constant load (16 and 100 logs, paced 32 KiB batches, counted from the
//! intended append time) against serial 32 KiB write + fdatasync latency.
//! SLUICE_BENCH_ONLY=idle or =latency runs just that case; SLUICE_BENCH_ONLY=idempotence
//! runs plain vs idempotent appends (64 MiB of 16 KiB batches) and the producer-state
//! rebuild on the first idempotent append after reopen. SLUICE_BENCH_ONLY=cleaner runs
//! one log-cleaner pass over 256 MiB of 1 KiB records (64 Ki keys, about 4 versions of
//! each), uncompressed and zstd batches.
//! Directory: $SLUICE_BENCH_DIR, else the cargo target tmp dir (must support O_DIRECT).

use bytes::Bytes;
use sluice_proto::batch::{build_batch, SimpleRecord};
use sluice_storage::*;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const TOTAL: usize = 512 << 20;
const WINDOW: usize = 32 << 20;

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn make_batch(batch_bytes: usize) -> Bytes {
    let value = vec![0x5au8; 1024 - 80];
    let n = (batch_bytes / 1024).max(1);
    let recs: Vec<SimpleRecord<'_>> = (0..n)
        .map(|i| SimpleRecord {
            key: Some(b"key-0000"),
            value: Some(&value),
            timestamp: 1_700_000_000_000 + i as i64,
            headers: &[],
        })
        .collect();
    build_batch(0, &recs)
}

/// A scratch DMA file holding one page: non-empty at first open, so glommio's iopoll
/// probe reads real data.
async fn scratch_dma_file(path: &Path) -> glommio::io::DmaFile {
    std::fs::write(path, vec![0u8; 4096]).unwrap();
    glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .unwrap()
}

async fn raw_write(dir: &Path) -> f64 {
    let path = dir.join("raw.bin");
    let f = scratch_dma_file(&path).await;
    let chunk = 1 << 20;
    let t = Instant::now();
    let mut pos = 0u64;
    while (pos as usize) < TOTAL {
        let mut handles = Vec::new();
        for _ in 0..8 {
            let mut b = f.alloc_dma_buffer(chunk);
            b.as_bytes_mut().fill(0x5a);
            handles.push(f.write_at(b, pos));
            pos += chunk as u64;
        }
        for h in handles {
            h.await.unwrap();
        }
    }
    f.fdatasync().await.unwrap();
    let d = t.elapsed();
    f.close().await.unwrap();
    std::fs::remove_file(&path).unwrap();
    mib_s(TOTAL, d)
}

/// Reads `log` from offset 0 to `end` in 1 MiB reads; MiB/s.
async fn read_all(log: &PartitionLog, end: i64) -> f64 {
    let t = Instant::now();
    let mut next = 0;
    let mut rbytes = 0usize;
    while next < end {
        let bs = log.read(next, end, 1 << 20, true).await.unwrap();
        for b in bs {
            rbytes += b.len();
            next = sluice_proto::batch::RecordBatchHeader::parse(&b)
                .unwrap()
                .last_offset()
                + 1;
        }
    }
    mib_s(rbytes, t.elapsed())
}

async fn append_run(
    shard: &Rc<ShardStorage>,
    dir: PathBuf,
    batch_bytes: usize,
) -> (f64, u64, f64, f64) {
    let log = PartitionLog::open(shard, dir.clone(), LogConfig::default())
        .await
        .unwrap();
    let batch = make_batch(batch_bytes);
    let m0 = shard.metrics();
    let t = Instant::now();
    let mut written = 0usize;
    let mut inflight: std::collections::VecDeque<(i64, usize)> = Default::default();
    let mut inflight_bytes = 0usize;
    while written < TOTAL {
        let info = log.append(batch.clone(), 0).unwrap();
        written += batch.len();
        inflight.push_back((info.last_offset, batch.len()));
        inflight_bytes += batch.len();
        while inflight_bytes > WINDOW {
            let (off, len) = inflight.pop_front().unwrap();
            log.wait_durable(off).await.unwrap();
            inflight_bytes -= len;
        }
        glommio::yield_if_needed().await;
    }
    log.wait_durable(log.log_end_offset() - 1).await.unwrap();
    let d = t.elapsed();
    let m = shard.metrics();
    let flushes = m.flushes - m0.flushes;
    // read back: from the cache (recent batches), then cold from disk in a fresh shard
    let end = log.log_end_offset();
    let warm = read_all(&log, end).await;
    log.close().await.unwrap();
    let cold_shard = ShardStorage::start(ShardStorageOptions {
        cache_bytes: 0,
        ..Default::default()
    });
    let log = PartitionLog::open(&cold_shard, dir.clone(), LogConfig::default())
        .await
        .unwrap();
    let cold = read_all(&log, end).await;
    log.delete().await.unwrap();
    cold_shard.shutdown().await.unwrap();
    (mib_s(written, d), flushes, warm, cold)
}

/// Latency of one `bytes` O_DIRECT write followed by fdatasync, serially, on one file:
/// the floor under any durable append. Returns sorted microseconds.
async fn raw_write_sync_latency(dir: &Path, bytes: usize, n: usize) -> Vec<u64> {
    let path = dir.join("raw-sync.bin");
    let f = scratch_dma_file(&path).await;
    let mut lat = Vec::with_capacity(n);
    let mut pos = 4096u64;
    for _ in 0..n {
        let t = Instant::now();
        let mut b = f.alloc_dma_buffer(bytes);
        b.as_bytes_mut().fill(0x5a);
        f.write_at(b, pos).await.unwrap();
        f.fdatasync().await.unwrap();
        lat.push(t.elapsed().as_micros() as u64);
        pos += bytes as u64;
    }
    f.close().await.unwrap();
    std::fs::remove_file(&path).unwrap();
    lat.sort_unstable();
    lat
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

/// Durable-append latency under a constant load: `logs` partitions, 32 KiB batches
/// round-robin at `mib_per_s`, each latency counted from the batch's intended time (so a
/// stalled flusher is not hidden) to `wait_durable`. Returns sorted microseconds.
async fn paced_latency(
    shard: &Rc<ShardStorage>,
    dir: &Path,
    logs: usize,
    mib_per_s: f64,
    run: Duration,
) -> Vec<u64> {
    const BATCH: usize = 32 << 10;
    let mut ls = Vec::new();
    for i in 0..logs {
        let l = PartitionLog::open(shard, dir.join(format!("paced-{i}")), LogConfig::default())
            .await
            .unwrap();
        ls.push(l);
    }
    let batch = make_batch(BATCH);
    let every = Duration::from_secs_f64(batch.len() as f64 / (mib_per_s * (1 << 20) as f64));
    let lat = Rc::new(std::cell::RefCell::new(Vec::new()));
    let start = Instant::now();
    let mut waiters = Vec::new();
    let mut k = 0usize;
    while start.elapsed() < run {
        let intended = start + every * k as u32;
        let now = Instant::now();
        if intended > now {
            glommio::timer::sleep(intended - now).await;
        }
        let log = ls[k % logs].clone();
        let info = log.append(batch.clone(), 0).unwrap();
        let lat = lat.clone();
        waiters.push(glommio::spawn_local(async move {
            log.wait_durable(info.last_offset).await.unwrap();
            lat.borrow_mut().push(intended.elapsed().as_micros() as u64);
        }));
        k += 1;
    }
    for w in waiters {
        w.await;
    }
    for l in ls {
        l.delete().await.unwrap();
    }
    let mut v = std::mem::take(&mut *lat.borrow_mut());
    v.sort_unstable();
    v
}

/// VmRSS of this process in bytes, from /proc/self/status.
/// `make_batch` with producer id, epoch 0 and base sequence set, CRC recomputed.
fn idempotent_batch(batch_bytes: usize, pid: i64, seq: i32) -> Bytes {
    let mut v = make_batch(batch_bytes).to_vec();
    v[43..51].copy_from_slice(&pid.to_be_bytes());
    v[51..53].copy_from_slice(&0i16.to_be_bytes());
    v[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// Plain vs idempotent append throughput (batches prepared up front), then the time of the
/// first idempotent append after a clean reopen (it rebuilds the producer state).
async fn idempotence_run(dir: &Path) {
    const SIZE: usize = 16 << 10;
    const N: usize = (64 << 20) / SIZE;
    let shard = ShardStorage::start(ShardStorageOptions::default());
    let mut rates = Vec::new();
    for (name, idem) in [("plain", false), ("idempotent", true)] {
        let batches: Vec<Bytes> = (0..N)
            .map(|i| {
                if idem {
                    // 4 producers interleaved, as several clients on one partition
                    idempotent_batch(SIZE, (i % 4) as i64, (i / 4 * (SIZE / 1024)) as i32)
                } else {
                    make_batch(SIZE)
                }
            })
            .collect();
        let path = dir.join(format!("idem-{name}"));
        let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
            .await
            .unwrap();
        let t = Instant::now();
        let mut bytes = 0;
        for (i, b) in batches.into_iter().enumerate() {
            bytes += b.len();
            let info = log.append(b, 0).unwrap();
            if i % 1024 == 1023 {
                log.wait_durable(info.last_offset).await.unwrap();
            }
        }
        log.wait_durable(log.log_end_offset() - 1).await.unwrap();
        let rate = mib_s(bytes, t.elapsed());
        rates.push(rate);
        println!(
            "{:<44} {:>10.0}",
            format!("append 16 KiB batches, {name}"),
            rate
        );
        log.close().await.unwrap();
        if idem {
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            let seq = (N / 4 * (SIZE / 1024)) as i32;
            let b = idempotent_batch(SIZE, 0, seq);
            let t = Instant::now();
            let info = log.append(b, 0).unwrap();
            let d = t.elapsed();
            assert!(!info.duplicate);
            println!(
                "first idempotent append after reopen (rebuild from the snapshot): {:.1} ms",
                d.as_secs_f64() * 1000.0
            );
            log.close().await.unwrap();
            let log = PartitionLog::open(&shard, path.clone(), LogConfig::default())
                .await
                .unwrap();
            let t = Instant::now();
            log.load_producer_state().await.unwrap();
            let load = t.elapsed();
            let t = Instant::now();
            let info = log.append(idempotent_batch(SIZE, 1, seq), 0).unwrap();
            let append = t.elapsed();
            assert!(!info.duplicate && log.producer_state_loaded());
            println!(
                "async load_producer_state after reopen: {:.1} ms, then first append {:.3} ms",
                load.as_secs_f64() * 1000.0,
                append.as_secs_f64() * 1000.0
            );
            log.delete().await.unwrap();
        } else {
            PartitionLog::open(&shard, path, LogConfig::default())
                .await
                .unwrap()
                .delete()
                .await
                .unwrap();
        }
    }
    shard.shutdown().await.unwrap();
}

/// One cleaner pass over 256 MiB of 1 KiB records in 16-record batches (64 Ki keys, so
/// about 4 versions of each), plain and zstd: the pass's rate over the bytes it replaced,
/// and what it read and wrote.
async fn cleaner_run(dir: &Path) {
    const N: usize = (256 << 20) / (16 << 10);
    let shard = ShardStorage::start(ShardStorageOptions {
        cleaner_enabled: false,
        ..Default::default()
    });
    // zstd shrinks these records about 50 times: smaller segments, so there are several
    for (name, codec, segment_bytes) in [("none", 0u8, 64 << 20), ("zstd", 4, 1 << 20)] {
        let path = dir.join(format!("clean-{name}"));
        let cfg = LogConfig {
            segment_bytes,
            cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
            ..Default::default()
        };
        let log = PartitionLog::open(&shard, path, cfg).await.unwrap();
        let mut value = vec![0u8; 1000];
        for (i, b) in value.iter_mut().enumerate() {
            *b = (i * 7 % 61) as u8;
        }
        for i in 0..N {
            let keys: Vec<String> = (0..16)
                .map(|j| format!("key-{:08}", (i * 16 + j) * 40_503 % 65_536))
                .collect();
            let recs: Vec<SimpleRecord<'_>> = keys
                .iter()
                .map(|k| SimpleRecord {
                    key: Some(k.as_bytes()),
                    value: Some(&value),
                    timestamp: 1_700_000_000_000 + i as i64,
                    headers: &[],
                })
                .collect();
            let plain = build_batch(0, &recs);
            let b = if codec == 0 {
                plain
            } else {
                let body = sluice_proto::decompress::compress(codec, &plain[61..]).unwrap();
                let mut v = plain[..61].to_vec();
                v.extend_from_slice(&body);
                let len = (v.len() - 12) as i32;
                v[8..12].copy_from_slice(&len.to_be_bytes());
                v[22] |= codec;
                let crc = crc32c::crc32c(&v[21..]);
                v[17..21].copy_from_slice(&crc.to_be_bytes());
                Bytes::from(v)
            };
            let info = log.append(b, 0).unwrap();
            if i % 1024 == 1023 {
                log.wait_durable(info.last_offset).await.unwrap();
            }
        }
        log.wait_durable(log.log_end_offset() - 1).await.unwrap();
        let t = Instant::now();
        let p = log.compact(1_800_000_000_000).await.unwrap().unwrap();
        let d = t.elapsed();
        println!(
            "cleaner pass, {name}: {} -> {} MiB in {} segments ({} records removed) in {:.2} s: \
             {:.0} MiB/s of log cleaned, read {:.0} MiB/s, wrote {:.0} MiB/s",
            p.bytes_before >> 20,
            p.bytes_after >> 20,
            p.segments_before,
            p.records_removed,
            d.as_secs_f64(),
            mib_s(p.bytes_before as usize, d),
            mib_s(p.bytes_read as usize, d),
            mib_s(p.bytes_written as usize, d),
        );
        log.delete().await.unwrap();
    }
    shard.shutdown().await.unwrap();
}

fn vm_rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn partition_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("topic-{i}"))
}

/// Create `n` partitions of one batch each and close them cleanly (markers written), once.
async fn setup_idle_partitions(root: &Path, n: usize) -> Duration {
    let t = Instant::now();
    if root.join("done").exists() {
        return t.elapsed();
    }
    let _ = std::fs::remove_dir_all(root);
    let shard = ShardStorage::start(ShardStorageOptions::default());
    let b = make_batch(1024);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut logs = Vec::new();
        for &i in chunk {
            let log = PartitionLog::open(&shard, partition_dir(root, i), LogConfig::default())
                .await
                .unwrap();
            log.append(b.clone(), 0).unwrap();
            logs.push(log);
        }
        for l in &logs {
            l.wait_durable(0).await.unwrap();
        }
    }
    shard.shutdown().await.unwrap();
    std::fs::write(root.join("done"), b"").unwrap();
    t.elapsed()
}

/// Child-process side (IDLE_CHILD_ENV set): RSS after the executor and shard are up, open
/// every partition and keep them open, RSS again; prints one `IDLE` line for the parent.
fn idle_child(root: PathBuf, n: usize) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions::default());
            let rss0 = vm_rss_bytes();
            let t = Instant::now();
            let mut logs = Vec::with_capacity(n);
            for i in 0..n {
                logs.push(
                    PartitionLog::open(&shard, partition_dir(&root, i), LogConfig::default())
                        .await
                        .unwrap(),
                );
            }
            let open = t.elapsed();
            let rss1 = vm_rss_bytes();
            assert!(logs.iter().all(|l| l.log_end_offset() == 1));
            println!("IDLE {n} {} {rss0} {rss1}", open.as_secs_f64());
            // no close: the parent only needs the numbers; a clean shutdown would rewrite
            // every marker and slow the next run
        })
        .unwrap()
        .join()
        .unwrap();
}

const IDLE_CHILD_ENV: &str = "SLUICE_BENCH_IDLE_CHILD";

/// Memory and open time of `n` idle partitions, measured in a fresh child process (this
/// binary re-run with IDLE_CHILD_ENV), so allocator reuse in this process cannot hide it.
/// Returns (setup, open time, RSS bytes before, RSS bytes after).
fn idle_partitions(dir: &Path, n: usize) -> (Duration, Duration, u64, u64) {
    let root = dir.join(format!("idle-{n}"));
    let r = root.clone();
    let setup = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { setup_idle_partitions(&r, n).await })
        .unwrap()
        .join()
        .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(IDLE_CHILD_ENV, &root)
        .env("SLUICE_BENCH_PARTITIONS", n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "idle child failed: {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("IDLE "))
        .unwrap_or_else(|| panic!("idle child printed no result: {stdout}"));
    let v: Vec<&str> = line.split_whitespace().collect();
    let open: f64 = v[1].parse().unwrap();
    let (rss0, rss1): (u64, u64) = (v[2].parse().unwrap(), v[3].parse().unwrap());
    (setup, Duration::from_secs_f64(open), rss0, rss1)
}

fn main() {
    let _ = raise_fd_limit();
    let n_idle: usize = std::env::var("SLUICE_BENCH_PARTITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    if let Some(root) = std::env::var_os(IDLE_CHILD_ENV) {
        idle_child(PathBuf::from(root), n_idle);
        return;
    }
    let dir = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sluice-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.clone();
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    let only_idle = only == "idle";
    let only_latency = only == "latency";
    if only == "cleaner" {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { cleaner_run(&dir).await })
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    if only == "idempotence" {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { idempotence_run(&dir).await })
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            if only_idle {
                return;
            }
            println!(
                "sluice-storage bench: dir {}, {} MiB per run, {} MiB in flight",
                d.display(),
                TOTAL >> 20,
                WINDOW >> 20
            );
            let raw = raw_write(&d).await;
            println!("{:<44} {:>10} {:>8}", "case", "MiB/s", "vs raw");
            println!(
                "{:<44} {:>10.0} {:>8}",
                "raw O_DIRECT write (1 MiB x8, 1 fdatasync)", raw, "1.00"
            );
            let shard = ShardStorage::start(ShardStorageOptions::default());
            let raw_lat = raw_write_sync_latency(&d, 32 << 10, 2000).await;
            println!(
                "raw 32 KiB write + fdatasync, serial: p50 {:.2} ms, p99 {:.2} ms",
                pct(&raw_lat, 0.5),
                pct(&raw_lat, 0.99)
            );
            for (logs, rate) in [(16, 64.0), (16, 128.0), (100, 64.0)] {
                let lat = paced_latency(&shard, &d, logs, rate, Duration::from_secs(5)).await;
                println!(
                    "durable append, {logs} logs, {rate:.0} MiB/s of 32 KiB batches: \
                     p50 {:.2} ms ({:.1}x raw p50), p99 {:.2} ms ({:.1}x raw p99), max {:.2} ms",
                    pct(&lat, 0.5),
                    pct(&lat, 0.5) / pct(&raw_lat, 0.5),
                    pct(&lat, 0.99),
                    pct(&lat, 0.99) / pct(&raw_lat, 0.99),
                    pct(&lat, 1.0)
                );
            }
            if only_latency {
                shard.shutdown().await.unwrap();
                return;
            }
            for (name, size) in [
                ("16 KiB", 16 << 10),
                ("64 KiB", 64 << 10),
                ("1 MiB", 1 << 20),
            ] {
                let (mbs, flushes, warm, cold) =
                    append_run(&shard, d.join(format!("log-{size}")), size).await;
                println!(
                    "{:<44} {:>10.0} {:>8.2}",
                    format!("append {name} batches ({flushes} flushes)"),
                    mbs,
                    mbs / raw
                );
                println!(
                    "{:<44} {:>10.0} {:>8.2}",
                    format!("read {name} batches, cache"),
                    warm,
                    warm / raw
                );
                println!(
                    "{:<44} {:>10.0} {:>8.2}",
                    format!("read {name} batches, cold DMA"),
                    cold,
                    cold / raw
                );
            }
            shard.shutdown().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    if only_latency {
        return;
    }
    let (setup, open, rss0, rss1) = idle_partitions(&dir, n_idle);
    let per_kib = rss1.saturating_sub(rss0) as f64 / 1024.0 / n_idle as f64;
    println!(
        "{n_idle} idle partitions (fresh process): open after clean shutdown {:.2} s (target <= 5 s), \
         {per_kib:.1} KiB RSS each (target <= 64 KiB; VmRSS {:.1} -> {:.1} MiB), setup {:.1} s",
        open.as_secs_f64(),
        rss0 as f64 / (1 << 20) as f64,
        rss1 as f64 / (1 << 20) as f64,
        setup.as_secs_f64()
    );
}
