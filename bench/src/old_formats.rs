//! `sluice-bench old-formats`: what serving message formats v0/v1 costs the broker. The
//! same records go in twice, to two one-partition topics: with Produce v2 (message sets of
//! format v1, which the broker up-converts) and with Produce v9 (v2 batches, stored as
//! sent). Then the v9 topic is read whole with Fetch v3 (down-converted to format v1) and
//! with Fetch v12 (stored batches, zero-copy). Each phase reports MB/s of record values and
//! the broker's CPU seconds (utime + stime of its pid) per GiB of them. A warm-up produce
//! goes first (a fresh broker's first gigabyte pays for growing its memory); then
//! `--rounds` rounds on fresh topics (deleted after each), summarised by their medians.
//!
//! ```text
//!  prebuilt requests (a few distinct ones, cycled) ──► raw TCP, acks=all, 8 in flight ──► broker
//!  fetch loop (one in flight, 1 MiB per partition) ◄── raw TCP ◄──────────────────────────┘
//! ```
//! librdkafka cannot be told which Produce / Fetch version to use, so this command speaks
//! the protocol itself (request frames from `kafka-protocol`, the old layouts by hand).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Args;
use serde::Serialize;
use sluice_proto::batch::{build_compressed_batch, BatchIter, SimpleRecord};
use sluice_proto::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_proto::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_proto::kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use sluice_proto::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_proto::message_set;
use sluice_proto::request::response_header_len;

use crate::procstat::{self, Target};

const GIB: f64 = (1u64 << 30) as f64;
/// Produce requests in flight at once.
const WINDOW: usize = 8;
/// Distinct prebuilt requests, sent in turn.
const DISTINCT: usize = 16;

/// `sluice-bench old-formats`.
#[derive(Args, Debug, Clone)]
pub struct OldFormatsArgs {
    /// MiB of record values to produce on each path (and so to fetch on each).
    #[arg(long, default_value_t = 1024)]
    pub mib: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Records per produce request (one batch, or one message set).
    #[arg(long, default_value_t = 256)]
    pub records_per_request: usize,
    /// Codec of the batches and message sets: none, gzip, snappy or lz4 (message formats
    /// v0/v1 have no zstd).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Topic name prefix; round N uses <prefix>-rN-v2 and <prefix>-rN-v9.
    #[arg(long, default_value = "old-formats")]
    pub topic_prefix: String,
    /// Rounds of the four phases.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    /// Record value bytes moved.
    pub value_bytes: u64,
    /// Bytes of record data on the wire (batches or message sets).
    pub wire_bytes: u64,
    pub seconds: f64,
    pub value_mb_per_s: f64,
    pub broker_cpu_seconds: f64,
    pub broker_cpu_seconds_per_gib: f64,
}

/// One phase over every round.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub name: String,
    pub value_mb_per_s_median: f64,
    pub broker_cpu_seconds_per_gib_median: f64,
    pub broker_cpu_seconds_per_gib_min: f64,
    pub broker_cpu_seconds_per_gib_max: f64,
}

/// The four phases of each round, their medians, and what conversion costs next to its
/// counterpart.
#[derive(Debug, Clone, Serialize)]
pub struct OldFormatsReport {
    pub compression: String,
    pub message_size: usize,
    pub records_per_request: usize,
    pub value_mib_per_phase: f64,
    pub broker_pid: u32,
    pub rounds: Vec<Vec<Phase>>,
    pub summary: Vec<PhaseSummary>,
    /// Median broker CPU per GiB, Produce v2 / Produce v9.
    pub produce_cpu_ratio: f64,
    /// Median broker CPU per GiB, Fetch v3 / Fetch v12.
    pub fetch_cpu_ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One raw connection; owned by the command's thread.
struct Raw {
    stream: TcpStream,
    next: i32,
}

impl Raw {
    fn connect(bootstrap: &str) -> Result<Raw> {
        let stream =
            TcpStream::connect(bootstrap).with_context(|| format!("connect {bootstrap}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Raw { stream, next: 1 })
    }

    /// Writes a request frame (header v1, or v2 for flexible versions) around `body`.
    fn send(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Result<i32> {
        let corr = self.next;
        self.next += 1;
        self.stream
            .write_all(&request_frame(api, version, corr, body))?;
        Ok(corr)
    }

    /// Reads the response to `corr` and returns its body.
    fn recv(&mut self, api: ApiKey, version: i16, corr: i32) -> Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len);
        ensure!((4..=256 << 20).contains(&n), "response frame of {n} bytes");
        let mut buf = vec![0u8; n as usize];
        self.stream.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        let got = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        ensure!(got == corr, "correlation id {got}, want {corr}");
        b.advance(response_header_len(api, version));
        Ok(b)
    }
}

/// A request frame: size, header (v1, or v2 for flexible versions) and `body`.
pub(crate) fn request_frame(api: ApiKey, version: i16, corr: i32, body: &[u8]) -> BytesMut {
    let client = b"sluice-bench";
    let flexible = api.request_header_version(version) >= 2;
    let mut f = BytesMut::with_capacity(body.len() + 32);
    f.put_i32(0);
    f.put_i16(api as i16);
    f.put_i16(version);
    f.put_i32(corr);
    f.put_i16(client.len() as i16);
    f.put_slice(client);
    if flexible {
        f.put_u8(0);
    }
    f.put_slice(body);
    let size = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&size.to_be_bytes());
    f
}

fn codec_of(name: &str) -> Result<u8> {
    Ok(match name {
        "none" => 0,
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        other => bail!("compression {other}: message formats v0/v1 have none, gzip, snappy, lz4"),
    })
}

/// `DISTINCT` requests' record data: (v2 batch, format-v1 message set) of the same records.
/// Values are text with counters, so codecs have something to compress.
fn payloads(a: &OldFormatsArgs, codec: u8) -> Result<Vec<(Bytes, Bytes)>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    (0..DISTINCT)
        .map(|d| {
            let values: Vec<Vec<u8>> = (0..a.records_per_request)
                .map(|i| {
                    let mut v = Vec::with_capacity(a.message_size + 32);
                    let mut n = 0u64;
                    while v.len() < a.message_size {
                        v.extend_from_slice(format!("request {d} record {i} word {n} ").as_bytes());
                        n += 1;
                    }
                    v.truncate(a.message_size);
                    v
                })
                .collect();
            let recs: Vec<SimpleRecord<'_>> = values
                .iter()
                .enumerate()
                .map(|(i, v)| SimpleRecord {
                    key: None,
                    value: Some(v),
                    timestamp: now + i as i64,
                    headers: &[],
                })
                .collect();
            let batch = build_compressed_batch(0, &recs, codec)?;
            let set = message_set::from_record_batch(&batch, message_set::MAGIC_V1, 0, 1 << 30)?;
            Ok((batch, set))
        })
        .collect()
}

fn produce_v2_body(topic: &str, records: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(-1); // acks=all
    b.put_i32(30_000);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(1);
    b.put_i32(0);
    b.put_i32(records.len() as i32);
    b.put_slice(records);
    b.to_vec()
}

fn produce_v9_body(topic: &str, records: &Bytes) -> Result<Vec<u8>> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.clone()))])]);
    let mut b = BytesMut::new();
    req.encode(&mut b, 9)?;
    Ok(b.to_vec())
}

/// The error code of a one-partition Produce v2 answer.
fn produce_v2_error(mut b: Bytes) -> Result<i16> {
    ensure!(b.remaining() >= 8, "short Produce v2 answer");
    b.advance(4); // topics
    let n = b.get_i16() as usize;
    ensure!(b.remaining() >= n + 10, "short Produce v2 answer");
    b.advance(n + 4 + 4); // name, partitions, partition
    Ok(b.get_i16())
}

fn broker_cpu(pid: u32) -> Result<f64> {
    Ok(procstat::sample(Target::Pid(pid))?.cpu_seconds)
}

fn phase(name: &str, value_bytes: u64, wire_bytes: u64, t: Duration, cpu: f64) -> Phase {
    let secs = t.as_secs_f64();
    Phase {
        name: name.to_string(),
        value_bytes,
        wire_bytes,
        seconds: secs,
        value_mb_per_s: value_bytes as f64 / 1e6 / secs.max(1e-9),
        broker_cpu_seconds: cpu,
        broker_cpu_seconds_per_gib: cpu / (value_bytes as f64 / GIB),
    }
}

/// Sends `requests` requests of `bodies` (cycled) as Produce `version`, `WINDOW` in
/// flight, and checks every answer.
fn produce_all(c: &mut Raw, version: i16, bodies: &[Vec<u8>], requests: usize) -> Result<()> {
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    let answer = |c: &mut Raw, corr: i32| -> Result<()> {
        let mut b = c.recv(ApiKey::Produce, version, corr)?;
        let error = if version <= 2 {
            produce_v2_error(b)?
        } else {
            let r = ProduceResponse::decode(&mut b, version)?;
            r.responses[0].partition_responses[0].error_code
        };
        ensure!(error == 0, "Produce v{version}: error {error}");
        Ok(())
    };
    for i in 0..requests {
        if pending.len() == WINDOW {
            let corr = pending.pop_front().unwrap_or_default();
            answer(c, corr)?;
        }
        pending.push_back(c.send(ApiKey::Produce, version, &bodies[i % bodies.len()])?);
    }
    while let Some(corr) = pending.pop_front() {
        answer(c, corr)?;
    }
    Ok(())
}

/// Reads `topic` from offset 0 to `end` with Fetch `version`; returns the record bytes
/// received (batches or message sets).
fn fetch_all(c: &mut Raw, version: i16, topic: &str, end: i64) -> Result<u64> {
    let mut offset = 0i64;
    let mut bytes = 0u64;
    while offset < end {
        let (records, next) = if version <= 3 {
            let mut b = BytesMut::new();
            b.put_i32(-1);
            b.put_i32(500);
            b.put_i32(1);
            b.put_i32(50 << 20);
            b.put_i32(1);
            b.put_i16(topic.len() as i16);
            b.put_slice(topic.as_bytes());
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(offset);
            b.put_i32(1 << 20);
            let corr = c.send(ApiKey::Fetch, version, &b)?;
            let mut r = c.recv(ApiKey::Fetch, version, corr)?;
            // throttle, [topic, [partition, error, high watermark, records]]
            ensure!(r.remaining() >= 14, "short Fetch v{version} answer");
            r.advance(8);
            let n = r.get_i16() as usize;
            ensure!(r.remaining() >= n + 26, "short Fetch v{version} answer");
            r.advance(n + 8);
            let error = r.get_i16();
            ensure!(error == 0, "Fetch v{version}: error {error}");
            r.advance(8);
            let len = r.get_i32() as usize;
            ensure!(r.remaining() >= len, "short Fetch v{version} records");
            let set = r.split_to(len);
            // the next offset: after the last whole message (a wrapper has its last one's)
            let mut next = offset;
            for m in message_set::messages(&set) {
                next = m?.offset + 1;
            }
            (set.len(), next)
        } else {
            let req = FetchRequest::default()
                .with_replica_id(sluice_proto::kafka_protocol::messages::BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(50 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]);
            let mut b = BytesMut::new();
            req.encode(&mut b, version)?;
            let corr = c.send(ApiKey::Fetch, version, &b)?;
            let mut r = c.recv(ApiKey::Fetch, version, corr)?;
            let resp = FetchResponse::decode(&mut r, version)?;
            let p = &resp.responses[0].partitions[0];
            ensure!(
                p.error_code == 0,
                "Fetch v{version}: error {}",
                p.error_code
            );
            let records = p.records.clone().unwrap_or_default();
            let mut next = offset;
            for h in BatchIter::headers_only(&records) {
                next = h?.0.last_offset() + 1;
            }
            (records.len(), next)
        };
        ensure!(next > offset, "Fetch v{version} at {offset}: no progress");
        offset = next;
        bytes += records as u64;
    }
    Ok(bytes)
}

/// Runs the warm-up and the rounds against the broker at `bootstrap` (process `pid`).
pub fn run(bootstrap: &str, pid: u32, a: &OldFormatsArgs, quiet: bool) -> Result<OldFormatsReport> {
    let codec = codec_of(&a.compression)?;
    let per_request = (a.message_size * a.records_per_request) as u64;
    let requests = ((a.mib << 20) / per_request).max(1) as usize;
    let data = payloads(a, codec)?;
    let mut c = Raw::connect(bootstrap)?;
    let timeout = Duration::from_secs(30);

    let warmup = format!("{}-warmup", a.topic_prefix);
    crate::kafka::create_topics(bootstrap, std::slice::from_ref(&warmup), 1, timeout)?;
    let bodies = bodies(&data, 9, &warmup)?;
    produce_all(&mut c, 9, &bodies, requests.div_ceil(4))?;
    crate::kafka::delete_topics(bootstrap, std::slice::from_ref(&warmup), timeout)?;

    let mut rounds = Vec::new();
    for round in 0..a.rounds.max(1) {
        let topics = [
            format!("{}-r{round}-v2", a.topic_prefix),
            format!("{}-r{round}-v9", a.topic_prefix),
        ];
        crate::kafka::create_topics(bootstrap, &topics, 1, timeout)?;
        let phases = run_round(
            &mut c,
            pid,
            &data,
            requests,
            per_request,
            &topics,
            a.records_per_request,
        )?;
        if !quiet {
            for p in &phases {
                eprintln!(
                    "round {round}: {}: {:.0} MB/s, broker {:.2} CPU s ({:.2} per GiB)",
                    p.name, p.value_mb_per_s, p.broker_cpu_seconds, p.broker_cpu_seconds_per_gib
                );
            }
        }
        crate::kafka::delete_topics(bootstrap, &topics, timeout)?;
        rounds.push(phases);
    }
    let summary: Vec<PhaseSummary> = (0..4)
        .map(|i| {
            let cpu: Vec<f64> = rounds
                .iter()
                .map(|r| r[i].broker_cpu_seconds_per_gib)
                .collect();
            PhaseSummary {
                name: rounds[0][i].name.clone(),
                value_mb_per_s_median: median(rounds.iter().map(|r| r[i].value_mb_per_s).collect()),
                broker_cpu_seconds_per_gib_median: median(cpu.clone()),
                broker_cpu_seconds_per_gib_min: cpu.iter().copied().fold(f64::INFINITY, f64::min),
                broker_cpu_seconds_per_gib_max: cpu.iter().copied().fold(0.0, f64::max),
            }
        })
        .collect();
    let ratio = |a: usize, b: usize| {
        summary[a].broker_cpu_seconds_per_gib_median
            / summary[b].broker_cpu_seconds_per_gib_median.max(1e-9)
    };
    Ok(OldFormatsReport {
        compression: a.compression.clone(),
        message_size: a.message_size,
        records_per_request: a.records_per_request,
        value_mib_per_phase: (requests as u64 * per_request) as f64 / (1u64 << 20) as f64,
        broker_pid: pid,
        produce_cpu_ratio: ratio(0, 1),
        fetch_cpu_ratio: ratio(2, 3),
        rounds,
        summary,
    })
}

/// The produce request bodies for `topic` at `version` (2: message sets; else batches).
fn bodies(data: &[(Bytes, Bytes)], version: i16, topic: &str) -> Result<Vec<Vec<u8>>> {
    data.iter()
        .map(|(batch, set)| {
            if version == 2 {
                Ok(produce_v2_body(topic, set))
            } else {
                produce_v9_body(topic, batch)
            }
        })
        .collect()
}

/// Produce v2 to `topics[0]`, Produce v9 to `topics[1]`, then Fetch v3 and Fetch v12 of
/// `topics[1]`, each measured.
fn run_round(
    c: &mut Raw,
    pid: u32,
    data: &[(Bytes, Bytes)],
    requests: usize,
    per_request: u64,
    topics: &[String; 2],
    records_per_request: usize,
) -> Result<Vec<Phase>> {
    let value_bytes = requests as u64 * per_request;
    let records = (requests * records_per_request) as i64;
    let mut phases = Vec::new();
    for (version, topic) in [(2i16, &topics[0]), (9, &topics[1])] {
        let bodies = bodies(data, version, topic)?;
        let wire: u64 = (0..requests)
            .map(|i| {
                let (b, s) = &data[i % data.len()];
                (if version == 2 { s.len() } else { b.len() }) as u64
            })
            .sum();
        let cpu0 = broker_cpu(pid)?;
        let t0 = Instant::now();
        produce_all(c, version, &bodies, requests)?;
        let t = t0.elapsed();
        let name = if version == 2 {
            "produce v2 (format v1, up-converted)"
        } else {
            "produce v9 (v2 batches, stored as sent)"
        };
        phases.push(phase(name, value_bytes, wire, t, broker_cpu(pid)? - cpu0));
    }
    for version in [3i16, 12] {
        let cpu0 = broker_cpu(pid)?;
        let t0 = Instant::now();
        let wire = fetch_all(c, version, &topics[1], records)?;
        let t = t0.elapsed();
        let name = if version == 3 {
            "fetch v3 (format v1, down-converted)"
        } else {
            "fetch v12 (v2 batches, zero-copy)"
        };
        phases.push(phase(name, value_bytes, wire, t, broker_cpu(pid)? - cpu0));
    }
    Ok(phases)
}

/// The report as a table (medians over the rounds).
pub fn table(r: &OldFormatsReport) -> String {
    let mut out = format!(
        "old message formats, compression {}, {} B values, {} per request, {:.0} MiB per phase, \
         {} rounds (broker pid {})\n",
        r.compression,
        r.message_size,
        r.records_per_request,
        r.value_mib_per_phase,
        r.rounds.len(),
        r.broker_pid
    );
    out.push_str(&format!(
        "{:<40} {:>9} {:>10} {:>22}\n",
        "phase (medians)", "MB/s", "wire MiB", "broker CPU s per GiB"
    ));
    for (i, p) in r.summary.iter().enumerate() {
        let wire = r.rounds.first().map_or(0, |ph| ph[i].wire_bytes);
        out.push_str(&format!(
            "{:<40} {:>9.0} {:>10.0} {:>8.2} ({:.2}-{:.2})\n",
            p.name,
            p.value_mb_per_s_median,
            wire as f64 / (1u64 << 20) as f64,
            p.broker_cpu_seconds_per_gib_median,
            p.broker_cpu_seconds_per_gib_min,
            p.broker_cpu_seconds_per_gib_max
        ));
    }
    out.push_str(&format!(
        "broker CPU per GiB: produce v2 / v9 = {:.2}x, fetch v3 / v12 = {:.2}x\n",
        r.produce_cpu_ratio, r.fetch_cpu_ratio
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn produce_v2_layouts() {
        // acks, timeout, [topic, [partition, records]]
        let body = produce_v2_body("t", b"abc");
        let want: Vec<u8> = [
            &(-1i16).to_be_bytes()[..],
            &30_000i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &1i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            &0i32.to_be_bytes(),
            &3i32.to_be_bytes(),
            b"abc",
        ]
        .concat();
        assert_eq!(body, want);
        // [topic, [partition, error, base offset, log append time]], throttle
        let answer: Vec<u8> = [
            &1i32.to_be_bytes()[..],
            &1i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            &0i32.to_be_bytes(),
            &87i16.to_be_bytes(),
            &(-1i64).to_be_bytes(),
            &(-1i64).to_be_bytes(),
            &0i32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(produce_v2_error(Bytes::from(answer)).unwrap(), 87); // ok: test
        assert!(produce_v2_error(Bytes::from_static(&[0, 0, 0, 1])).is_err());
    }

    #[test]
    fn payloads_are_the_same_records_both_ways() {
        let a = OldFormatsArgs {
            mib: 1,
            message_size: 100,
            records_per_request: 10,
            compression: "gzip".into(),
            topic_prefix: "t".into(),
            rounds: 1,
        };
        for (batch, set) in payloads(&a, 1).unwrap() {
            // ok: test
            let up = message_set::to_record_batch(&set, 1 << 20)
                .unwrap()
                .unwrap(); // ok: test
            let (_, want) = sluice_proto::batch::decode_stored_records(&batch, 1 << 20).unwrap(); // ok: test
            let (_, got) = sluice_proto::batch::decode_stored_records(&up, 1 << 20).unwrap(); // ok: test
            assert_eq!(got.len(), 10);
            assert_eq!(got, want);
        }
    }
}
