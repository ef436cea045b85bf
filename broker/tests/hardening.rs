//! Hardening against greedy or hostile clients, each checked on a real `sluice` process:
//! produce backpressure (a flood of acks=0 or acks=1 produce keeps the broker's memory
//! bounded, acks=all traffic alongside is still acknowledged, nothing acknowledged or
//! sent is lost), long polls of clients that went away release their sockets and the
//! broker caps a client's max_wait, connection limits and idle closing, record batches
//! validated before append, internal topics refused to clients, amplification bounds
//! (duplicate names, partition counts, fetch size) and fetch sessions bound to the
//! connection that created them.
//! Invariants: every wait is bounded (a deadline or a socket timeout); every broker is a
//! `BrokerProcess`, killed when it drops; threads are scoped (joined before the test
//! returns) and flood threads stop when their flag is set, also on an early return;
//! nothing asserts on speed: latencies and memory are printed (see `--nocapture`), and
//! only memory has a bound. `SLUICE_FLOOD_SECS` (default 8) sets the flood's length.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use bytes::Bytes;
use common::raw::{
    compressed_batch, partition_result, produce_request, producer_batch, record_batch, FrameRead,
    RawClient,
};
use common::{block_on, open_fds, vm_rss_bytes, BrokerProcess};
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiVersionsRequest, CreatePartitionsRequest, DeleteTopicsRequest,
    FetchRequest, FetchResponse, IncrementalAlterConfigsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REQUEST: i16 = 42;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_RECORD: i16 = 87;

/// Base timestamp of the batches built here.
const TS: i64 = 1_700_000_000_000;

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A raw connection that has negotiated versions.
fn connect(broker: &BrokerProcess) -> Result<RawClient> {
    let mut c = RawClient::connect(broker.addr())?;
    c.negotiate()?;
    Ok(c)
}

fn fetch_request(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)])])
}

/// Partition 0 of the first topic of a Fetch response.
fn partition0(resp: &FetchResponse) -> Result<&PartitionData> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .with_context(|| {
            format!(
                "fetch response lacks partition 0 (error {})",
                resp.error_code
            )
        })
}

/// (base offset, records count, bytes) of each whole v2 batch in `records`, read from the
/// headers only; a partial batch at the end (allowed in a Fetch answer) is left out.
fn batch_headers(records: &[u8]) -> Result<Vec<(i64, i32, usize)>> {
    let be32 = |at: usize| {
        i32::from_be_bytes([
            records[at],
            records[at + 1],
            records[at + 2],
            records[at + 3],
        ])
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 61 <= records.len() {
        let mut base = [0u8; 8];
        base.copy_from_slice(&records[pos..pos + 8]);
        let len = be32(pos + 8);
        ensure!(len >= 49, "batch at byte {pos} has length {len}");
        let size = 12 + len as usize;
        if pos + size > records.len() {
            break;
        }
        out.push((i64::from_be_bytes(base), be32(pos + 57), size));
        pos += size;
    }
    Ok(out)
}

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

/// High watermark of partition 0 of `topic`, by a sessionless fetch.
fn high_watermark(client: &mut RawClient, topic: &str) -> Result<i64> {
    let (code, hw, _) = client.fetch_once(topic, 0, 0)?;
    ensure!(code == 0, "fetch {topic}: error {code}");
    Ok(hw)
}

// ---------------------------------------------------------------------------------------
// 1. Produce backpressure
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// 2. Long polls of vanished clients; the max_wait cap
// ---------------------------------------------------------------------------------------

/// The broker's open fds once they stop changing (bounded: 5 s).
fn settled_fds(pid: u32) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = open_fds(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = open_fds(pid)?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// 1,000 connections each park a Fetch (max_wait i32::MAX, min_bytes 1, at the log end)
/// and go away (at most 50 open at once); the broker's fd count returns to its baseline
/// within 10 s. With the default fetch.max.wait.ms (30 s) a broker that does not notice
/// the closed peers keeps their sockets until the long polls expire.
#[test]
fn disconnected_long_polls_release_their_sockets() -> Result<()> {
    const CONNECTIONS: usize = 1000;
    const WINDOW: usize = 50;
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("parked", 1, &[])?;
    let pid = broker.pid().context("broker not running")?;
    let mut control = connect(&broker)?;
    let version = control.version_for::<FetchRequest>(12)?;
    ensure!(
        high_watermark(&mut control, "parked")? == 0,
        "new topic not empty"
    );
    let baseline = settled_fds(pid)?;
    let req = fetch_request("parked", 0, i32::MAX, 1, 1 << 20, 1 << 20);
    let mut window = VecDeque::with_capacity(WINDOW + 1);
    for i in 0..CONNECTIONS {
        let mut c = RawClient::connect(broker.addr()).with_context(|| format!("connection {i}"))?;
        c.send(version, &req)
            .with_context(|| format!("fetch on connection {i}"))?;
        window.push_back(c);
        if window.len() > WINDOW {
            window.pop_front();
        }
    }
    // Positive control: the last 50 are parked and hold broker sockets, so the fd count
    // does see connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut peak = open_fds(pid)?;
    while peak < baseline + WINDOW - 5 {
        ensure!(
            Instant::now() < deadline,
            "with {WINDOW} connections open the broker has {peak} fds (baseline {baseline})"
        );
        std::thread::sleep(Duration::from_millis(50));
        peak = open_fds(pid)?;
    }
    for c in window.iter().take(5) {
        ensure!(
            !c.has_data_within(Duration::from_millis(200))?,
            "a fetch with min_bytes=1 on an empty partition was answered (or closed) instead of parked"
        );
    }
    drop(window);
    let released = Instant::now();
    let deadline = released + Duration::from_secs(10);
    let mut now = open_fds(pid)?;
    while now > baseline + 10 {
        ensure!(
            Instant::now() < deadline,
            "10 s after the last of {CONNECTIONS} long-poll clients went away the broker still has {now} fds (baseline {baseline}, peak {peak})"
        );
        std::thread::sleep(Duration::from_millis(100));
        now = open_fds(pid)?;
    }
    eprintln!(
        "long polls: fds baseline {baseline}, with {WINDOW} parked {peak}, back to {now} {:.1} s after the clients left",
        released.elapsed().as_secs_f64()
    );
    // The broker still serves the connection that stayed.
    ensure!(
        high_watermark(&mut control, "parked")? == 0,
        "control fetch"
    );
    Ok(())
}

/// A Fetch asking for max_wait_ms = i32::MAX on a connection that stays open is answered
/// (empty) once the broker's fetch.max.wait.ms (2 s here) passes.
#[test]
fn fetch_max_wait_is_capped_by_the_broker() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("fetch.max.wait.ms", "2000")])?;
    broker.create_topic("capped", 1, &[])?;
    let mut c = connect(&broker)?;
    let version = c.version_for::<FetchRequest>(12)?;
    let sent = Instant::now();
    let correlation = c.send(
        version,
        &fetch_request("capped", 0, i32::MAX, 1, 1 << 20, 1 << 20),
    )?;
    ensure!(
        !c.has_data_within(Duration::from_millis(500))?,
        "fetch with min_bytes=1 on an empty partition answered at once: not a long poll"
    );
    c.set_read_timeout(Duration::from_secs(15))?;
    let resp = match c.recv::<FetchRequest>(version, correlation) {
        Ok(r) => r,
        Err(e) => bail!(
            "fetch with max_wait_ms=i32::MAX not answered within 15 s although fetch.max.wait.ms=2000: {e}"
        ),
    };
    eprintln!(
        "max_wait cap: answered after {:.1} s (fetch.max.wait.ms=2000)",
        sent.elapsed().as_secs_f64()
    );
    ensure!(resp.error_code == 0, "fetch error {}", resp.error_code);
    let p = partition0(&resp)?;
    ensure!(p.error_code == 0, "partition error {}", p.error_code);
    ensure!(
        p.records.as_ref().is_none_or(|r| r.is_empty()),
        "empty partition returned records"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Connection limits and idle connections
// ---------------------------------------------------------------------------------------

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"))
}

/// A connection from `source` that gets an ApiVersions answer; retried for up to 10 s
/// (the broker counts a closed connection out only once it has seen the close).
fn open_working(addr: SocketAddr, source: IpAddr) -> Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = RawClient::connect_from(addr, source).and_then(|mut c| {
            c.negotiate()?;
            Ok(c)
        });
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                bail!("no working connection from {source} within 10 s: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A new connection from `source` must be closed by the broker without an answer.
fn expect_refused(addr: SocketAddr, source: IpAddr, what: &str) -> Result<()> {
    let mut c = RawClient::connect_from(addr, source)?;
    c.set_read_timeout(Duration::from_secs(10))?;
    if c.send(3, &api_versions_request()).is_err() {
        return Ok(()); // reset before the request went out: closed
    }
    match c.read_frame() {
        Ok(FrameRead::Closed) => Ok(()),
        Ok(FrameRead::Frame(_)) => bail!("{what}: a connection past the limit was answered"),
        Ok(FrameRead::TimedOut) => {
            bail!("{what}: a connection past the limit was neither closed nor answered in 10 s")
        }
        Err(e) => bail!("{what}: reading from a refused connection: {e:#}"),
    }
}

fn log_has(broker: &BrokerProcess, needles: &[&str]) -> bool {
    broker
        .log_tail(5000)
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

/// Waits (bounded: 5 s) for a log line holding every one of `needles`.
fn wait_log(broker: &BrokerProcess, needles: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log_has(broker, needles) {
        ensure!(
            Instant::now() < deadline,
            "broker log has no line with {needles:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER_LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// `limit` connections from 127.0.0.1 work, the next is closed and logged, the ones
/// open still work, and closing one makes room for one more (and only one).
fn limit_holds(broker: &BrokerProcess, limit: usize, what: &str) -> Result<Vec<RawClient>> {
    let addr = broker.addr();
    ensure!(
        !log_has(broker, &["connection refused"]),
        "{what}: a connection was refused before the limit was reached"
    );
    let mut open = Vec::new();
    for _ in 0..limit {
        open.push(open_working(addr, LOCAL)?);
    }
    expect_refused(addr, LOCAL, what)?;
    wait_log(broker, &["connection refused"])?;
    for (i, c) in open.iter_mut().enumerate() {
        c.negotiate()
            .with_context(|| format!("{what}: admitted connection {i} after a refusal"))?;
    }
    drop(open.pop());
    open.push(open_working(addr, LOCAL)?);
    expect_refused(addr, LOCAL, &format!("{what}, after one was replaced"))?;
    Ok(open)
}

#[test]
fn max_connections_per_ip_is_enforced() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, &[("max.connections.per.ip", "5")])?;
    let _open = limit_holds(&broker, 5, "max.connections.per.ip=5")?;
    // The limit is per address: another host (127.0.0.2) still gets in.
    let mut other = open_working(broker.addr(), OTHER_LOCAL)?;
    other.negotiate()?;
    Ok(())
}

#[test]
fn max_connections_is_enforced() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, &[("max.connections", "4")])?;
    let open = limit_holds(&broker, 4, "max.connections=4")?;
    // The limit is broker-wide: another address is refused too.
    expect_refused(
        broker.addr(),
        OTHER_LOCAL,
        "max.connections=4 from 127.0.0.2",
    )?;
    drop(open);
    // All closed: there is room again.
    open_working(broker.addr(), OTHER_LOCAL)?;
    Ok(())
}

fn send_one(producer: &FutureProducer, topic: &str, value: &str) -> Result<i64> {
    block_on(async {
        match producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(0).payload(value),
                Duration::from_secs(20),
            )
            .await
        {
            Ok(d) => Ok(d.offset),
            Err((e, _)) => bail!("produce {value}: {e}"),
        }
    })
}

/// connections.max.idle.ms=1500: a silent connection and one dribbling a frame a byte at
/// a time are closed within 10 s and logged; a connection sending requests is not; an
/// rdkafka producer keeps working across the broker closing its idle connections.
#[test]
fn idle_connections_are_closed() -> Result<()> {
    const BOUND: Duration = Duration::from_secs(10);
    let broker = BrokerProcess::spawn_with(1, &[("connections.max.idle.ms", "1500")])?;
    broker.create_topic("idle", 1, &[])?;
    // Kafka clients retry a request whose connection the broker closed as idle.
    let producer = broker.producer(&[("linger.ms", "0"), ("message.send.max.retries", "3")])?;
    let first = send_one(&producer, "idle", "before")?;

    // A busy connection (a request every 500 ms) outlives the idle time several times.
    let mut busy = connect(&broker)?;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        busy.negotiate()
            .context("a connection sending a request every 500 ms was closed")?;
    }

    // A silent connection.
    let mut silent = RawClient::connect(broker.addr())?;
    silent.set_read_timeout(BOUND)?;
    let opened = Instant::now();
    match silent.read_frame()? {
        FrameRead::Closed => {}
        got => bail!("silent connection: want it closed within {BOUND:?}, got {got:?}"),
    }
    eprintln!(
        "idle: silent connection closed after {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    // Slowloris: declares a 1000-byte frame and sends one byte of it every 300 ms.
    let mut slow = RawClient::connect(broker.addr())?;
    let opened = Instant::now();
    slow.write_raw(&1000i32.to_be_bytes())?;
    let closed = loop {
        ensure!(
            opened.elapsed() < BOUND,
            "a connection dribbling one byte every 300 ms is still open after {BOUND:?}"
        );
        if slow.write_raw(&[0]).is_err() {
            break opened.elapsed();
        }
        match slow.has_data_within(Duration::from_millis(300)) {
            Ok(false) => {}
            Ok(true) | Err(_) => break opened.elapsed(), // EOF or reset
        }
    };
    eprintln!(
        "idle: slowloris connection closed after {:.1} s",
        closed.as_secs_f64()
    );
    wait_log(&broker, &["closing connection", "idle"])?;

    // rdkafka's own connections idled out meanwhile; the producer still works.
    let second = send_one(&producer, "idle", "after")?;
    ensure!(
        second == first + 1,
        "produce after the idle closes: offset {second}, want {}",
        first + 1
    );
    let admin: BaseConsumer = broker.client_config().create()?;
    admin.fetch_metadata(Some("idle"), Duration::from_secs(10))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Record batches validated before append
// ---------------------------------------------------------------------------------------

const LAST_OFFSET_DELTA: usize = 23;
const PRODUCER_ID: usize = 43;
const RECORDS_COUNT: usize = 57;
const RECORDS_START: usize = 61;

/// Recomputes a v2 batch's CRC-32C (over [21..end), stored big-endian at [17..21)).
fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sets i32 header fields, then the CRC, so only semantic checks can catch the lie.
fn with_fields(batch: &Bytes, fields: &[(usize, i32)]) -> Bytes {
    let mut b = batch.to_vec();
    for (at, value) in fields {
        b[*at..*at + 4].copy_from_slice(&value.to_be_bytes());
    }
    fix_crc(&mut b);
    Bytes::from(b)
}

/// ORs `bits` into the attributes (low byte at 22), then fixes the CRC.
fn with_attributes(batch: &Bytes, bits: u8) -> Bytes {
    let mut b = batch.to_vec();
    b[22] |= bits;
    fix_crc(&mut b);
    Bytes::from(b)
}

/// A zigzag varint at the start of `b`: (value, bytes used).
fn varint(b: &[u8]) -> Result<(i64, usize)> {
    let mut raw = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    bail!("bad varint")
}

/// Byte position of record `index`'s offsetDelta varint in an uncompressed v2 batch.
fn offset_delta_pos(batch: &[u8], index: usize) -> Result<usize> {
    let mut pos = RECORDS_START;
    for _ in 0..index {
        let (len, n) = varint(&batch[pos..])?;
        pos += n + usize::try_from(len)?;
    }
    pos += varint(&batch[pos..])?.1; // length
    pos += 1; // attributes
    pos += varint(&batch[pos..])?.1; // timestampDelta
    Ok(pos)
}

/// Produce with acks=-1 to partition 0; (error code, base offset).
fn produce(client: &mut RawClient, topic: &str, batch: Bytes) -> Result<(i16, i64)> {
    let version = client.version_for::<ProduceRequest>(12)?;
    partition_result(&client.call(version, &produce_request(topic, 0, -1, batch))?)
}

#[test]
fn record_batches_are_validated_before_append() -> Result<()> {
    const TOPIC: &str = "checked";
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic(TOPIC, 1, &[("max.message.bytes", "65536")])?;
    let mut client = connect(&broker)?;
    let mut observer = connect(&broker)?;
    let good = record_batch(&["a", "b", "c"], TS)?;
    let (code, base) = produce(&mut client, TOPIC, good.clone())?;
    ensure!(
        code == 0 && base == 0,
        "first batch: code {code}, base {base}"
    );
    let mut end = 3i64;

    let one = record_batch(&["only"], TS)?;
    let huge_count = with_fields(
        &one,
        &[(RECORDS_COUNT, i32::MAX), (LAST_OFFSET_DELTA, i32::MAX - 1)],
    );
    let mut dup = good.to_vec();
    let at = offset_delta_pos(&dup, 1)?;
    ensure!(
        dup[at] == 2,
        "record 1's offsetDelta is not 1 (zigzag 2): {}",
        dup[at]
    );
    dup[at] = 0;
    fix_crc(&mut dup);
    let values = ["z0", "z1", "z2", "z3", "z4"];
    let zstd = compressed_batch(&values, TS, Compression::Zstd)?;
    ensure!(zstd[22] & 7 == 4, "encoder did not compress with zstd");
    let zstd_liar = with_fields(&zstd, &[(RECORDS_COUNT, 1000), (LAST_OFFSET_DELTA, 999)]);
    let mut pid7 = producer_batch(&["p"], TS, 7, 0, -1)?.to_vec();
    ensure!(
        pid7[PRODUCER_ID..PRODUCER_ID + 8] == 7i64.to_be_bytes(),
        "producer id not at byte 43"
    );
    fix_crc(&mut pid7);
    let big_value = "x".repeat(70_000);
    let too_large = record_batch(&[&big_value], TS)?;

    let cases: Vec<(&str, Bytes, i16)> = vec![
        (
            "one record, recordsCount 2^31-1 and lastOffsetDelta 2^31-2",
            huge_count,
            CORRUPT_MESSAGE,
        ),
        (
            "second record's offset delta 0",
            Bytes::from(dup),
            CORRUPT_MESSAGE,
        ),
        (
            "control batch",
            with_attributes(&good, 0x20),
            INVALID_RECORD,
        ),
        (
            "compression codec 7",
            with_attributes(&good, 0x07),
            INVALID_RECORD,
        ),
        (
            "producer id 7 with base sequence -1",
            Bytes::from(pid7),
            INVALID_RECORD,
        ),
        (
            "zstd batch claiming 1000 records holding 5",
            zstd_liar,
            CORRUPT_MESSAGE,
        ),
        (
            "batch over max.message.bytes (65536)",
            too_large,
            MESSAGE_TOO_LARGE,
        ),
    ];
    for (what, batch, want) in cases {
        let (code, _) = produce(&mut client, TOPIC, batch)?;
        ensure!(code == want, "{what}: error code {code}, want {want}");
        let hw = high_watermark(&mut observer, TOPIC)?;
        ensure!(hw == end, "{what}: log end moved from {end} to {hw}");
        // The same connection goes on: a valid batch lands at the old log end.
        let (code, base) = produce(&mut client, TOPIC, good.clone())?;
        ensure!(
            code == 0 && base == end,
            "valid batch after \"{what}\": code {code}, base {base}, want base {end}"
        );
        end += 3;
    }

    // Correct compressed batches are accepted and read back whole.
    for compression in [
        Compression::Zstd,
        Compression::Lz4,
        Compression::Gzip,
        Compression::Snappy,
    ] {
        let batch = compressed_batch(&values, TS, compression)?;
        let (code, base) = produce(&mut client, TOPIC, batch)?;
        ensure!(
            code == 0 && base == end,
            "valid {compression:?} batch: code {code}, base {base}, want base {end}"
        );
        let (code, _, mut records) = observer.fetch_once(TOPIC, 0, base)?;
        ensure!(
            code == 0,
            "fetch of the {compression:?} batch: error {code}"
        );
        let set = RecordBatchDecoder::decode(&mut records)?;
        let got: Vec<(i64, Option<Bytes>)> = set
            .records
            .iter()
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        let want: Vec<(i64, Option<Bytes>)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (base + i as i64, Some(Bytes::copy_from_slice(v.as_bytes()))))
            .collect();
        ensure!(got == want, "{compression:?} batch read back as {got:?}");
        end += values.len() as i64;
    }
    ensure!(
        high_watermark(&mut observer, TOPIC)? == end,
        "final log end"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Internal topics
// ---------------------------------------------------------------------------------------

const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Names and partition counts of every topic in an all-topics Metadata answer.
fn all_topics(c: &mut RawClient) -> Result<BTreeMap<String, usize>> {
    let md = c.metadata(None, false)?;
    Ok(md
        .topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len())))
        .collect())
}

#[test]
fn internal_topics_are_refused_to_clients() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("group.initial.rebalance.delay.ms", "0")])?;
    broker.create_topic("grouped", 1, &[])?;
    let mut c = connect(&broker)?;
    let before = all_topics(&mut c)?;
    let Some(&offsets_partitions) = before.get(OFFSETS_TOPIC) else {
        bail!("{OFFSETS_TOPIC} is not in Metadata: {before:?}");
    };

    // Produce to two partitions of __consumer_offsets.
    let batch = record_batch(&["forged"], TS)?;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(OFFSETS_TOPIC))
            .with_partition_data(
                (0..2)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let version = c.version_for::<ProduceRequest>(12)?;
    let resp = c.call(version, &req)?;
    let codes: Vec<i16> = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect();
    ensure!(
        codes == [INVALID_TOPIC_EXCEPTION, INVALID_TOPIC_EXCEPTION],
        "produce to {OFFSETS_TOPIC}: error codes {codes:?}, want 17 for each partition"
    );

    // CreateTopics of reserved names.
    let reserved = ["__transaction_state", "__cluster_metadata"];
    let created = c.create_topics(&[(reserved[0], 1), (reserved[1], 1)])?;
    for name in reserved {
        let code = created.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
        ensure!(
            code == Some(INVALID_REQUEST),
            "CreateTopics {name}: {code:?}, want INVALID_REQUEST (42); all results {created:?}"
        );
    }
    // Not auto-created by a Metadata naming them either.
    let md = c.metadata(Some(&reserved), true)?;
    for t in &md.topics {
        ensure!(
            t.error_code != 0,
            "Metadata naming {:?} answered it without an error",
            t.name
        );
    }
    let topics = all_topics(&mut c)?;
    for name in reserved {
        ensure!(!topics.contains_key(name), "{name} exists: {topics:?}");
    }

    // DeleteTopics (names form: v1..=5).
    let version = c.version_for::<DeleteTopicsRequest>(5)?;
    let resp = c.call(
        version,
        &DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topic_names(vec![topic_name(OFFSETS_TOPIC)]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes == [INVALID_TOPIC_EXCEPTION],
        "DeleteTopics {OFFSETS_TOPIC}: {codes:?}, want [17]"
    );

    // IncrementalAlterConfigs and AlterConfigs on the topic (resource type 2).
    let version = c.version_for::<IncrementalAlterConfigsRequest>(1)?;
    let resp = c.call(
        version,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("1000")))]),
        ]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "IncrementalAlterConfigs on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );
    let version = c.version_for::<AlterConfigsRequest>(2)?;
    let resp = c.call(
        version,
        &AlterConfigsRequest::default().with_resources(vec![LegacyResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC))
            .with_configs(vec![LegacyConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000")))])]),
    )?;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "AlterConfigs on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );

    // CreatePartitions.
    let codes = create_partitions(&mut c, OFFSETS_TOPIC, offsets_partitions as i32 + 1)?;
    ensure!(
        codes.len() == 1 && codes[0] != 0,
        "CreatePartitions on {OFFSETS_TOPIC}: {codes:?}, want an error"
    );
    let after = all_topics(&mut c)?;
    ensure!(
        after.get(OFFSETS_TOPIC) == Some(&offsets_partitions),
        "{OFFSETS_TOPIC} changed: {:?} partitions, was {offsets_partitions}",
        after.get(OFFSETS_TOPIC)
    );

    // Consumer groups still work: a member reads a record and commits its offset.
    let producer = broker.producer(&[("linger.ms", "0")])?;
    let offset = send_one(&producer, "grouped", "for the group")?;
    let member: BaseConsumer = broker
        .client_config()
        .set("group.id", "hardening-group")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    member.subscribe(&["grouped"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        ensure!(
            Instant::now() < deadline,
            "group member got no record within 30 s"
        );
        match member.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => break m.offset(),
            Some(Err(e)) => eprintln!("group member: {e}"),
            None => {}
        }
    };
    ensure!(
        got == offset,
        "group member read offset {got}, produced {offset}"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("grouped", 0, Offset::Offset(offset + 1))?;
    member.commit(&tpl, CommitMode::Sync)?;
    let observer: BaseConsumer = broker
        .client_config()
        .set("group.id", "hardening-group")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ask = TopicPartitionList::new();
    ask.add_partition("grouped", 0);
    let committed = observer.committed_offsets(ask, common::OP_TIMEOUT)?;
    let got: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    ensure!(
        got == [Offset::Offset(offset + 1)],
        "committed offsets {got:?}, want {}",
        offset + 1
    );
    Ok(())
}

/// CreatePartitions growing `topic` to `count`; each topic's error code.
fn create_partitions(c: &mut RawClient, topic: &str, count: i32) -> Result<Vec<i16>> {
    let version = c.version_for::<CreatePartitionsRequest>(3)?;
    let resp = c.call(
        version,
        &CreatePartitionsRequest::default()
            .with_timeout_ms(15_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(count)]),
    )?;
    Ok(resp.results.iter().map(|r| r.error_code).collect())
}

// ---------------------------------------------------------------------------------------
// 6. Amplification
// ---------------------------------------------------------------------------------------

/// One request cannot ask for unbounded work or answers: a topic named 1,000 times is
/// answered once, a CreateTopics or CreatePartitions past request.partitions.max gets
/// INVALID_PARTITIONS, and a Fetch asking for i32::MAX bytes gets about fetch.max.bytes.
#[test]
fn request_amplification_is_bounded() -> Result<()> {
    const TOPIC: &str = "amp";
    const FETCH_MAX: usize = 1 << 20;
    let broker = BrokerProcess::spawn_with(1, &[("fetch.max.bytes", "1048576")])?;
    broker.create_topic(TOPIC, 1, &[])?;
    let mut c = connect(&broker)?;

    let names = vec![TOPIC; 1000];
    let md = c.metadata(Some(&names), false)?;
    let listed: Vec<Option<String>> = md
        .topics
        .iter()
        .map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    ensure!(
        listed == [Some(TOPIC.to_string())],
        "Metadata naming {TOPIC} 1,000 times answered {} topics",
        listed.len()
    );

    // Past request.partitions.max (10,000 by default).
    for (name, partitions) in [("amp-20000", 20_000), ("amp-10001", 10_001)] {
        let r = c.create_topics(&[(name, partitions)])?;
        ensure!(
            r == [(name.to_string(), INVALID_PARTITIONS)],
            "CreateTopics {name} with {partitions} partitions: {r:?}, want 37"
        );
    }
    let codes = create_partitions(&mut c, TOPIC, 10_002)?;
    ensure!(
        codes == [INVALID_PARTITIONS],
        "CreatePartitions {TOPIC} to 10,002: {codes:?}, want [37]"
    );
    let topics = all_topics(&mut c)?;
    ensure!(
        !topics.contains_key("amp-20000") && !topics.contains_key("amp-10001"),
        "a refused topic exists: {topics:?}"
    );
    ensure!(topics.get(TOPIC) == Some(&1), "{TOPIC} grew: {topics:?}");

    // ~3 MiB in 30 batches of ~100 KiB; a Fetch asking for everything gets ~1 MiB.
    let value = "f".repeat(1000);
    let values = vec![value.as_str(); 100];
    let batch = record_batch(&values, TS)?;
    for i in 0..30 {
        let (code, base) = produce(&mut c, TOPIC, batch.clone())?;
        ensure!(
            code == 0 && base == i * 100,
            "batch {i}: code {code}, base {base}"
        );
    }
    let version = c.version_for::<FetchRequest>(12)?;
    let resp = c.call(version, &fetch_request(TOPIC, 0, 0, 0, i32::MAX, i32::MAX))?;
    let p = partition0(&resp)?;
    ensure!(p.error_code == 0, "fetch error {}", p.error_code);
    let records = p.records.clone().unwrap_or_default();
    let batches = batch_headers(&records)?;
    eprintln!(
        "fetch max_bytes=i32::MAX with fetch.max.bytes=1 MiB: {} bytes, {} batches of {} bytes",
        records.len(),
        batches.len(),
        batch.len()
    );
    ensure!(!batches.is_empty(), "fetch returned no batch");
    ensure!(
        records.len() <= FETCH_MAX + batch.len(),
        "fetch returned {} bytes; fetch.max.bytes is {FETCH_MAX} (plus at most one batch of {})",
        records.len(),
        batch.len()
    );
    Ok(())
}

/// broker.partitions.max=100: topics are created until the broker's total would pass
/// 100, then refused with INVALID_PARTITIONS (as is a CreatePartitions past it), and the
/// total never passes it.
#[test]
fn broker_partition_limit_is_enforced() -> Result<()> {
    const MAX: usize = 100;
    let broker = BrokerProcess::spawn_with(1, &[("broker.partitions.max", "100")])?;
    let mut c = connect(&broker)?;
    let r = c.create_topics(&[("small", 5)])?;
    ensure!(r == [("small".to_string(), 0)], "small topic: {r:?}");
    let r = c.create_topics(&[("too-big", 101)])?;
    ensure!(
        r == [("too-big".to_string(), INVALID_PARTITIONS)],
        "101 partitions: {r:?}"
    );
    let (mut made, mut refused) = (0, 0);
    for i in 0..12 {
        let name = format!("fill-{i}");
        let r = c.create_topics(&[(&name, 10)])?;
        match r.as_slice() {
            [(n, 0)] if *n == name => made += 1,
            [(n, INVALID_PARTITIONS)] if *n == name => refused += 1,
            other => bail!("CreateTopics {name}: {other:?}"),
        }
    }
    let codes = create_partitions(&mut c, "small", 100)?;
    ensure!(
        codes == [INVALID_PARTITIONS],
        "CreatePartitions small to 100: {codes:?}, want [37]"
    );
    let topics = all_topics(&mut c)?;
    let total: usize = topics.values().sum();
    eprintln!(
        "broker.partitions.max=100: {made} of 12 topics of 10 created, {refused} refused; {total} partitions in Metadata"
    );
    ensure!(made >= 1, "no 10-partition topic fit under the limit");
    ensure!(
        refused >= 1,
        "12 topics of 10 partitions all fit under broker.partitions.max=100"
    );
    ensure!(
        total <= MAX,
        "the broker holds {total} partitions: {topics:?}"
    );
    ensure!(!topics.contains_key("too-big"), "too-big exists");
    ensure!(topics.get("small") == Some(&5), "small changed: {topics:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. Fetch sessions
// ---------------------------------------------------------------------------------------

/// A Fetch v12 of partition 0 of `topic` in session (id, epoch); (top error, session id).
fn session_fetch(c: &mut RawClient, topic: &str, id: i32, epoch: i32) -> Result<(i16, i32)> {
    let req = fetch_request(topic, 0, 0, 0, 1 << 20, 1 << 20)
        .with_session_id(id)
        .with_session_epoch(epoch);
    let resp = c.call(12, &req)?;
    Ok((resp.error_code, resp.session_id))
}

#[test]
fn fetch_sessions_belong_to_their_connection() -> Result<()> {
    const TOPIC: &str = "sessions";
    // One shard: both connections reach the same session table.
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic(TOPIC, 1, &[])?;
    let mut a = connect(&broker)?;
    let mut b = connect(&broker)?;
    ensure!(
        a.version_for::<FetchRequest>(12)? == 12,
        "broker lacks Fetch v12"
    );

    let (code, id) = session_fetch(&mut a, TOPIC, 0, 0)?;
    ensure!(
        code == 0 && id != 0,
        "creating a session: error {code}, id {id}"
    );
    let (code, _) = session_fetch(&mut b, TOPIC, id, 1)?;
    ensure!(
        code == FETCH_SESSION_ID_NOT_FOUND,
        "another connection using session {id}: error {code}, want 70"
    );
    // Another connection's close (epoch -1) does not close A's session.
    let _ = session_fetch(&mut b, TOPIC, id, -1)?;
    let (code, got) = session_fetch(&mut a, TOPIC, id, 1)?;
    ensure!(
        code == 0 && got == id,
        "A's incremental fetch after B's close attempt: error {code}, session {got}"
    );
    let (code, _) = session_fetch(&mut a, TOPIC, id, 2)?;
    ensure!(code == 0, "A's next epoch: error {code}");

    // Ids are not handed out in sequence.
    let mut c = connect(&broker)?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (code, id) = session_fetch(&mut c, TOPIC, 0, 0)?;
        ensure!(code == 0 && id != 0, "new session: error {code}, id {id}");
        ids.push(id);
    }
    eprintln!("fetch sessions: ids {ids:?}");
    ensure!(
        !ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "session ids are consecutive: {ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    ensure!(unique.len() == ids.len(), "session ids repeat: {ids:?}");
    Ok(())
}
