//! Produce backpressure, checked on a real `sluice` process: a flood of acks=0 or acks=1
//! produce from 4 raw connections keeps the broker's memory bounded, an rdkafka acks=all
//! producer alongside is still acknowledged, and nothing acknowledged or sent is lost.
//!
//!   4 flood connections --(~1 MiB produce, acks=0|1)--> broker --> topic "flood"
//!   rdkafka (acks=all, a record every 20 ms) ----------> broker --> topic "acked"
//!   sampler thread: broker VmRSS every 200 ms, bounded by `RSS_BOUND`
//!
//! Invariants: every wait is bounded (a deadline or a socket timeout); every broker is a
//! `BrokerProcess`, killed when it drops; threads are scoped (joined before the test
//! returns) and flood threads stop when their flag is set, also on an early return;
//! nothing asserts on speed: latencies and memory are printed (see `--nocapture`), and
//! only memory has a bound. `SLUICE_FLOOD_SECS` (default 8) sets the flood's length.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use bytes::Bytes;
use common::kafka::{batch_headers, connect, fetch_request, high_watermark, partition0, TS};
use common::raw::{partition_result, produce_request, record_batch, RawClient};
use common::{block_on, vm_rss_bytes, BrokerProcess};
use kafka_protocol::messages::{FetchRequest, ProduceRequest};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Reads partition 0 of `topic` from offset 0 up to `end`, checking that the batches
/// follow one another without a gap or an overlap; returns the offset reached (the number
/// of records held when the log starts at 0).
fn count_held(client: &mut RawClient, topic: &str, end: i64) -> Result<i64> {
    let version = client.version_for::<FetchRequest>(12)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 0i64;
    while next < end {
        ensure!(
            Instant::now() < deadline,
            "reading {topic} back: at offset {next} of {end} after 120 s"
        );
        let req = fetch_request(topic, next, 0, 0, 32 << 20, 16 << 20);
        let resp = client.call(version, &req)?;
        let p = partition0(&resp)?;
        ensure!(
            p.error_code == 0,
            "fetch {topic} at {next}: error {}",
            p.error_code
        );
        let records = p.records.clone().unwrap_or_default();
        let headers = batch_headers(&records)?;
        ensure!(
            !headers.is_empty(),
            "fetch {topic} at {next} (log end {end}) returned no whole batch"
        );
        for (base, count, _) in headers {
            ensure!(
                base == next && count > 0,
                "{topic}: batch at offset {base} with {count} records where offset {next} was due"
            );
            next += i64::from(count);
        }
    }
    Ok(next)
}

/// The flood tests run one at a time: each wants the machine's disk and cores.
static FLOOD_LOCK: Mutex<()> = Mutex::new(());

const FLOOD_TOPIC: &str = "flood";
const ACKED_TOPIC: &str = "acked";
const FLOOD_CONNECTIONS: usize = 4;
const FLOOD_RECORDS: usize = 1000;
const FLOOD_VALUE_BYTES: usize = 1000;
/// Requests an acks=1 flood connection keeps unanswered.
const FLOOD_PIPELINE: usize = 8;
const CACHE_BYTES: u64 = 32 << 20;
const UNFLUSHED_BYTES: u64 = 8 << 20;
const INFLIGHT_BYTES: u64 = 32 << 20;
/// Bound on the broker's RSS during a flood. What the broker may hold by design: the
/// cache (32 MiB), the unflushed budget (8 MiB) and 4 connections x 32 MiB of request
/// bytes in flight = 168 MiB; an appended batch is a copy of its request frame, so the
/// unflushed bytes can exist twice (+8 MiB); each connection's read buffer asks for at
/// most 4 MiB more (+16 MiB); the debug binary, glommio's reactor and io memory, thread
/// stacks and allocator slack are well under 100 MiB (the idle broker is printed as
/// "rss at start"). That is under 300 MiB; 400 MiB leaves room for fragmentation. A broker
/// that reads without bound buffers the flood itself: gigabytes at loopback speed.
const RSS_BOUND: u64 = 400 << 20;

fn flood_secs() -> u64 {
    std::env::var("SLUICE_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(8)
}

/// Sets its flags when dropped, so an early return still stops the scoped threads.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.0 {
            f.store(true, Ordering::SeqCst);
        }
    }
}

/// What one flood connection did: produce requests written (each `FLOOD_RECORDS`
/// records) and the base offsets it was answered (acks=1 only, plus the closing one).
#[derive(Debug, Default)]
struct FloodStats {
    requests: u64,
    bases: Vec<i64>,
}

/// Floods `FLOOD_TOPIC` with `batch` until `stop`, then sends one acks=1 produce of the
/// same batch and waits for its answer: a connection's appends keep its order, so that
/// answer means every request it sent before was appended.
fn flood_connection(
    addr: SocketAddr,
    acks: i16,
    batch: &Bytes,
    stop: &AtomicBool,
) -> Result<FloodStats> {
    let mut c = RawClient::connect(addr)?;
    c.negotiate()?;
    // Backpressure stalls this connection's writes and answers by design; bounded anyway.
    c.set_write_timeout(Duration::from_secs(60))?;
    c.set_read_timeout(Duration::from_secs(60))?;
    let version = c.version_for::<ProduceRequest>(12)?;
    let mut stats = FloodStats::default();
    if acks == 0 {
        // acks=0 has no answer, so one frame (one correlation id) is written again and again.
        let (_, frame) =
            c.encode_request(version, &produce_request(FLOOD_TOPIC, 0, 0, batch.clone()))?;
        while !stop.load(Ordering::Relaxed) {
            c.write_raw(&frame).context("acks=0 flood write")?;
            stats.requests += 1;
        }
    } else {
        // Up to `FLOOD_PIPELINE` requests unanswered at a time: the broker's reader never
        // stops for them (8 MiB < connection.inflight.max.bytes), so only its produce
        // admission can hold the clients back.
        let req = produce_request(FLOOD_TOPIC, 0, acks, batch.clone());
        let mut unanswered = VecDeque::with_capacity(FLOOD_PIPELINE);
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping && unanswered.len() < FLOOD_PIPELINE {
                unanswered.push_back(c.send(version, &req)?);
                stats.requests += 1;
                continue;
            }
            let Some(correlation) = unanswered.pop_front() else {
                break;
            };
            let resp = c.recv::<ProduceRequest>(version, correlation)?;
            let (code, base) = partition_result(&resp)?;
            ensure!(code == 0, "acks={acks} flood produce: error {code}");
            stats.bases.push(base);
        }
    }
    let resp = c
        .call(version, &produce_request(FLOOD_TOPIC, 0, 1, batch.clone()))
        .context(
            "closing acks=1 produce after the flood (answered once all before it were appended)",
        )?;
    let (code, base) = partition_result(&resp)?;
    ensure!(
        code == 0,
        "closing acks=1 produce after the flood: error {code}"
    );
    stats.bases.push(base);
    stats.requests += 1;
    Ok(stats)
}

/// Samples VmRSS every 200 ms until `done`; returns (max bytes, samples).
fn sample_rss(pid: u32, done: &AtomicBool) -> Result<(u64, usize)> {
    let (mut max, mut samples) = (0u64, 0usize);
    while !done.load(Ordering::Relaxed) {
        max = max.max(vm_rss_bytes(pid)?);
        samples += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((max, samples))
}

/// One acks=all record: what was sent, the offset its ack gave, and how long the ack took.
struct Acked {
    payload: String,
    offset: i64,
    latency: Duration,
}

/// Sends one record to partition 0 of `topic` every ~20 ms for `for_time` without
/// waiting for acks in between; returns every ack (fails on the first failed delivery).
/// Bounded: the producer's message.timeout.ms (30 s) ends every delivery.
fn produce_paced(producer: &FutureProducer, topic: &str, for_time: Duration) -> Result<Vec<Acked>> {
    block_on(async {
        let mut pending = Vec::new();
        let end = Instant::now() + for_time;
        let mut seq = 0u64;
        while Instant::now() < end {
            let payload = format!("acked-{seq:06}");
            let sent_at = Instant::now();
            let delivery = producer
                .send_result(
                    FutureRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload(&payload),
                )
                .map_err(|(e, _)| anyhow!("enqueueing record {seq}: {e}"))?;
            pending.push(tokio::spawn(async move {
                let r = delivery.await;
                (payload, r, sent_at.elapsed())
            }));
            seq += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut acked = Vec::with_capacity(pending.len());
        for task in pending {
            let (payload, r, latency) = task.await?;
            let offset = match r {
                Ok(Ok(d)) => d.offset,
                Ok(Err((e, _))) => bail!("acks=all send of {payload} failed: {e}"),
                Err(_) => bail!("acks=all send of {payload}: delivery canceled"),
            };
            acked.push(Acked {
                payload,
                offset,
                latency,
            });
        }
        Ok(acked)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The flood: `FLOOD_CONNECTIONS` raw connections produce ~1 MiB requests with `acks`
/// to one topic for `secs` while an rdkafka acks=all producer sends a record every 20 ms
/// to another, on a 1-shard broker with a 32 MiB cache and an 8 MiB unflushed budget.
fn flood(acks: i16, secs: u64) -> Result<()> {
    let _serial = FLOOD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let cache = CACHE_BYTES.to_string();
    let unflushed = UNFLUSHED_BYTES.to_string();
    let inflight = INFLIGHT_BYTES.to_string();
    let broker = BrokerProcess::spawn_with(
        1,
        &[
            ("storage.cache.bytes", cache.as_str()),
            ("storage.unflushed.max.bytes", unflushed.as_str()),
            ("connection.inflight.max.bytes", inflight.as_str()),
        ],
    )?;
    broker.create_topic(FLOOD_TOPIC, 1, &[])?;
    broker.create_topic(ACKED_TOPIC, 1, &[])?;
    let pid = broker.pid().context("broker not running")?;
    let value = "v".repeat(FLOOD_VALUE_BYTES);
    let values = vec![value.as_str(); FLOOD_RECORDS];
    let batch = record_batch(&values, TS)?;
    let producer = broker.producer(&[("linger.ms", "0")])?;
    // Warm-up (metadata, connection) before the clock starts; not counted.
    let warm = produce_paced(&producer, ACKED_TOPIC, Duration::from_millis(1))?;
    let rss_at_start = vm_rss_bytes(pid)?;

    let stop = AtomicBool::new(false);
    let sampled = AtomicBool::new(false);
    let addr = broker.addr();
    let started = Instant::now();
    // Results are kept apart so the memory verdict is reported even when a client failed.
    let (stats, acked, rss) = std::thread::scope(|s| {
        let flags = [&stop, &sampled];
        let _stop = StopOnDrop(&flags);
        let sampler = s.spawn(|| sample_rss(pid, &sampled));
        let floods: Vec<_> = (0..FLOOD_CONNECTIONS)
            .map(|_| s.spawn(|| flood_connection(addr, acks, &batch, &stop)))
            .collect();
        let acked = produce_paced(&producer, ACKED_TOPIC, Duration::from_secs(secs));
        stop.store(true, Ordering::SeqCst);
        let stats: Vec<Result<FloodStats>> = floods
            .into_iter()
            .map(|f| f.join().map_err(|_| anyhow!("flood thread panicked"))?)
            .collect();
        sampled.store(true, Ordering::SeqCst);
        let rss = sampler
            .join()
            .map_err(|_| anyhow!("rss sampler panicked"))
            .and_then(|r| r);
        (stats, acked, rss)
    });
    let flood_time = started.elapsed();

    let mb = |b: u64| b as f64 / f64::from(1 << 20);
    let (max_rss, samples) = rss?;
    eprintln!(
        "flood acks={acks}: broker rss at start {:.0} MiB, max {:.0} MiB over {samples} samples (bound {:.0} MiB)",
        mb(rss_at_start),
        mb(max_rss),
        mb(RSS_BOUND)
    );
    ensure!(samples > 0, "no RSS sample taken");
    ensure!(
        max_rss < RSS_BOUND,
        "broker RSS reached {:.0} MiB under the flood, bound {:.0} MiB: produce backpressure does not bound memory",
        mb(max_rss),
        mb(RSS_BOUND)
    );
    let acked = acked?;
    let mut latencies: Vec<Duration> = acked.iter().map(|a| a.latency).collect();
    latencies.sort();
    eprintln!(
        "flood acks={acks}: acks=all x{} latency p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let stats = stats.into_iter().collect::<Result<Vec<FloodStats>>>()?;
    let requests: u64 = stats.iter().map(|s| s.requests).sum();
    eprintln!(
        "flood acks={acks}: {secs} s of flood ({:.1} s until every connection's last answer), \
         {requests} requests of {} records ({:.0} MiB) over {FLOOD_CONNECTIONS} connections",
        flood_time.as_secs_f64(),
        FLOOD_RECORDS,
        mb(requests * batch.len() as u64),
    );
    ensure!(
        !acked.is_empty(),
        "no acks=all record was sent during the flood"
    );

    // Every acknowledged record of the acks=all topic is there, at the offset its ack gave.
    let consumed = broker.consume_all(ACKED_TOPIC, 1)?;
    let stored: BTreeMap<i64, Option<Vec<u8>>> = consumed
        .into_iter()
        .map(|c| (c.offset, c.payload))
        .collect();
    for a in warm.iter().chain(&acked) {
        ensure!(
            stored.get(&a.offset).and_then(|p| p.as_deref()) == Some(a.payload.as_bytes()),
            "{ACKED_TOPIC}: {} was acknowledged at offset {} but that offset holds {:?}",
            a.payload,
            a.offset,
            stored.get(&a.offset)
        );
    }
    ensure!(
        stored.len() == warm.len() + acked.len(),
        "{ACKED_TOPIC} holds {} records, {} were acknowledged",
        stored.len(),
        warm.len() + acked.len()
    );

    // The flooded topic holds every request sent (each connection's last answer came after
    // all its earlier requests were appended), and nothing else.
    let mut reader = connect(&broker)?;
    let log_end = high_watermark(&mut reader, FLOOD_TOPIC)?;
    let sent_records = requests as i64 * FLOOD_RECORDS as i64;
    ensure!(
        log_end == sent_records,
        "{FLOOD_TOPIC}: log end {log_end} after {requests} requests of {FLOOD_RECORDS} records ({sent_records})"
    );
    let mut bases: Vec<i64> = stats.iter().flat_map(|s| s.bases.iter().copied()).collect();
    bases.sort_unstable();
    let before = bases.len();
    bases.dedup();
    ensure!(
        bases.len() == before,
        "two produce answers gave the same base offset"
    );
    ensure!(
        bases
            .iter()
            .all(|b| b % FLOOD_RECORDS as i64 == 0 && *b < log_end),
        "an answered base offset is not a batch boundary below the log end {log_end}"
    );
    let read_started = Instant::now();
    let held = count_held(&mut reader, FLOOD_TOPIC, log_end)?;
    eprintln!(
        "flood acks={acks}: read {held} records back in {:.1} s",
        read_started.elapsed().as_secs_f64()
    );
    ensure!(
        held == log_end,
        "{FLOOD_TOPIC}: batches hold {held} records, log end is {log_end}"
    );
    Ok(())
}

/// acks=0 flood (no answers to throttle the clients: only the broker's bounds do).
#[test]
fn acks0_flood_keeps_memory_bounded_and_acks_all_served() -> Result<()> {
    flood(0, flood_secs())
}

/// acks=1 flood, each connection with up to `FLOOD_PIPELINE` requests unanswered.
#[test]
fn acks1_flood_keeps_memory_bounded_and_acks_all_served() -> Result<()> {
    flood(1, flood_secs().div_ceil(2))
}
