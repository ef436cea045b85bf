//! Storage benchmark (harness = false; prints a table). In one run: raw O_DIRECT
//! sequential write bandwidth to the bench directory (DmaFile, 1 MiB writes, 8 in flight,
//! one fdatasync), then the log's append throughput with group commit for 1 KiB records in
//! batches of 16 KiB / 64 KiB / 1 MiB, read throughput (cache and cold DMA), each as a
//! ratio to the raw figure; then 10,000 idle partitions reopened after a clean shutdown.
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

async fn raw_write(dir: &Path) -> f64 {
    let path = dir.join("raw.bin");
    // non-empty first open so glommio's iopoll probe reads real data
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let f = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .unwrap();
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
    let warm = mib_s(rbytes, t.elapsed());
    log.close().await.unwrap();
    let cold_shard = ShardStorage::start(ShardStorageOptions {
        cache_bytes: 0,
        ..Default::default()
    });
    let log = PartitionLog::open(&cold_shard, dir.clone(), LogConfig::default())
        .await
        .unwrap();
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
    let cold = mib_s(rbytes, t.elapsed());
    log.delete().await.unwrap();
    cold_shard.shutdown().await.unwrap();
    (mib_s(written, d), flushes, warm, cold)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

async fn idle_partitions(dir: &Path, n: usize) -> (Duration, Duration, f64) {
    let root = dir.join(format!("idle-{n}"));
    let t = Instant::now();
    if !root.join("done").exists() {
        let _ = std::fs::remove_dir_all(&root);
        let shard = ShardStorage::start(ShardStorageOptions::default());
        let b = make_batch(1024);
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let mut logs = Vec::new();
            for &i in chunk {
                let log = PartitionLog::open(
                    &shard,
                    root.join(format!("topic-{i}")),
                    LogConfig::default(),
                )
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
    }
    let setup = t.elapsed();
    let shard = ShardStorage::start(ShardStorageOptions::default());
    let rss0 = rss_bytes();
    let t = Instant::now();
    let mut logs = Vec::with_capacity(n);
    for i in 0..n {
        logs.push(
            PartitionLog::open(
                &shard,
                root.join(format!("topic-{i}")),
                LogConfig::default(),
            )
            .await
            .unwrap(),
        );
    }
    let open = t.elapsed();
    let per = (rss_bytes().saturating_sub(rss0)) as f64 / n as f64;
    assert!(logs.iter().all(|l| l.log_end_offset() == 1));
    drop(logs);
    (setup, open, per)
}

fn main() {
    let _ = raise_fd_limit();
    let dir = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sluice-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let n_idle: usize = std::env::var("SLUICE_BENCH_PARTITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let d = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            println!("sluice-storage bench: dir {}, {} MiB per run, {} MiB in flight", d.display(), TOTAL >> 20, WINDOW >> 20);
            let raw = raw_write(&d).await;
            println!("{:<44} {:>10} {:>8}", "case", "MiB/s", "vs raw");
            println!("{:<44} {:>10.0} {:>8}", "raw O_DIRECT write (1 MiB x8, 1 fdatasync)", raw, "1.00");
            let shard = ShardStorage::start(ShardStorageOptions::default());
            for (name, size) in [("16 KiB", 16 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20)] {
                let (mbs, flushes, warm, cold) = append_run(&shard, d.join(format!("log-{size}")), size).await;
                println!("{:<44} {:>10.0} {:>8.2}", format!("append {name} batches ({flushes} flushes)"), mbs, mbs / raw);
                println!("{:<44} {:>10.0} {:>8.2}", format!("read {name} batches, cache"), warm, warm / raw);
                println!("{:<44} {:>10.0} {:>8.2}", format!("read {name} batches, cold DMA"), cold, cold / raw);
            }
            shard.shutdown().await.unwrap();
            let (setup, open, per) = idle_partitions(&d, n_idle).await;
            println!(
                "{n_idle} idle partitions: open after clean shutdown {:.2} s (target <= 5 s), {:.1} KiB RSS each (target <= 64), setup {:.1} s",
                open.as_secs_f64(),
                per / 1024.0,
                setup.as_secs_f64()
            );
        })
        .unwrap()
        .join()
        .unwrap();
}
