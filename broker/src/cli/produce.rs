//! `sluice produce TOPIC`: one record per input line (stdin or `--file`), optionally split
//! into key and value at `--key-separator`, with `--header`s, sent with Produce v3+ as one
//! uncompressed v2 record batch per partition and request (built by `sluice_proto::batch`).
//! Keyed records go to murmur2(key) like the Java client; unkeyed ones round robin.
//!
//! ```text
//!  lines ─► chunk (≤ 256 KiB, or one line at a terminal) ─► partition ─► batch per partition
//!        ─► one Produce per leader ─► retry refused-unappended partitions (moved leader)
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::ResponseError;
use serde_json::json;
use sluice_proto::batch::{build_batch, SimpleRecord};
use sluice_proto::murmur2::partition_for_key;

use super::client::{retriable, topic_name, Client, RETRY_BACKOFF};
use super::format::{kafka_error, print_json, progress, split_kv, Format};
use super::ClientArgs;

/// A chunk is sent once it holds this many bytes of keys and values.
const CHUNK_BYTES: usize = 256 << 10;

#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (a line without SEP is an error,
    /// as in Kafka's console producer). Without it records have no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, repeatable: --header source=cli
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// all (-1), 1 or 0 (no answer is awaited, no offsets are known).
    #[arg(long, default_value = "all", allow_negative_numbers = true)]
    acks: String,
    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// One input line as a record.
struct Line {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// Offsets given to one partition's records.
#[derive(Default)]
struct Stats {
    records: u64,
    first: Option<i64>,
    last: Option<i64>,
}

pub(crate) fn run(args: &ProduceArgs) -> Result<()> {
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("--acks must be all, -1, 1 or 0, not '{other}'"),
    };
    let headers: Vec<(Vec<u8>, Vec<u8>)> = args
        .headers
        .iter()
        .map(|kv| split_kv(kv, "--header").map(|(k, v)| (k.into(), v.into())))
        .collect::<Result<_>>()?;
    let mut client = Client::connect(&args.client)?;
    let topic = args.topic.clone();
    let deadline = Instant::now() + client.timeout();
    // auto-creation as a Kafka producer would trigger it (when the broker allows it)
    let leaders = client.leaders(std::slice::from_ref(&topic), true, deadline)?;
    let count = leaders.len() as i32;
    if let Some(p) = args.partition {
        if !(0..count).contains(&p) {
            bail!("topic '{topic}' has {count} partitions; there is no partition {p}");
        }
    }
    let (reader, interactive): (Box<dyn BufRead>, bool) = match &args.file {
        Some(path) => (
            Box::new(BufReader::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
            false,
        ),
        None => (
            Box::new(std::io::stdin().lock()),
            std::io::stdin().is_terminal(),
        ),
    };
    let mut producer = Producer {
        client,
        topic,
        acks,
        headers,
        stats: BTreeMap::new(),
        total: 0,
    };
    let mut next_partition = 0i32;
    let mut chunk: BTreeMap<i32, Vec<Line>> = BTreeMap::new();
    let mut chunk_bytes = 0usize;
    let mut last_progress = Instant::now();
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("reading the input")?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let (key, value) = match &args.key_separator {
            None => (None, line.as_bytes().to_vec()),
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => bail!("line {} has no key separator '{sep}': {line:?}", n + 1),
            },
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                next_partition = (next_partition + 1) % count;
                next_partition
            }
        };
        chunk_bytes += value.len() + key.as_ref().map_or(0, Vec::len) + 16;
        chunk
            .entry(partition)
            .or_default()
            .push(Line { key, value });
        if interactive || chunk_bytes >= CHUNK_BYTES {
            producer.send(std::mem::take(&mut chunk))?;
            chunk_bytes = 0;
            if last_progress.elapsed() > Duration::from_secs(2) && !interactive {
                progress(&format!("produced {} records", producer.total));
                last_progress = Instant::now();
            }
        }
    }
    if !chunk.is_empty() {
        producer.send(chunk)?;
    }
    producer.report(args.client.format);
    Ok(())
}

/// The produce loop's state: the cluster, what to send, and what was acknowledged.
struct Producer {
    client: Client,
    topic: String,
    acks: i16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    stats: BTreeMap<i32, Stats>,
    total: u64,
}

impl Producer {
    /// Sends one chunk: a batch per partition, one request per leader, retrying partitions
    /// refused before any append (moved or missing leader) until the timeout.
    fn send(&mut self, chunk: BTreeMap<i32, Vec<Line>>) -> Result<()> {
        let deadline = Instant::now() + self.client.timeout();
        let now_ms = sluice_broker::now_ms();
        let header_refs: Vec<(&[u8], Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        let mut batches: BTreeMap<i32, (Bytes, u64)> = chunk
            .iter()
            .map(|(p, lines)| {
                let records: Vec<SimpleRecord<'_>> = lines
                    .iter()
                    .map(|l| SimpleRecord {
                        key: l.key.as_deref(),
                        value: Some(&l.value),
                        timestamp: now_ms,
                        headers: &header_refs,
                    })
                    .collect();
                (*p, (build_batch(0, &records), lines.len() as u64))
            })
            .collect();
        loop {
            let leaders =
                self.client
                    .leaders(std::slice::from_ref(&self.topic), false, deadline)?;
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in batches.keys() {
                let leader = leaders
                    .get(&(self.topic.clone(), *p))
                    .copied()
                    .with_context(|| format!("topic '{}' lost partition {p}", self.topic))?;
                by_leader.entry(leader).or_default().push(*p);
            }
            let mut last_refusal = None;
            for (leader, parts) in by_leader {
                let req = ProduceRequest::default()
                    .with_acks(self.acks)
                    .with_timeout_ms(self.client.timeout().as_millis().min(i32::MAX as u128) as i32)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name(&self.topic))
                        .with_partition_data(
                            parts
                                .iter()
                                .map(|p| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(batches[p].0.clone()))
                                })
                                .collect(),
                        )]);
                let conn = self.client.broker(leader)?;
                let version = conn.version::<ProduceRequest>(9)?;
                if version < 3 {
                    bail!(
                        "the broker at {} serves Produce only up to v{version}; v3 is needed for record batches",
                        conn.addr()
                    );
                }
                if self.acks == 0 {
                    conn.send_at(version, &req)?;
                    for p in &parts {
                        if let Some((_, n)) = batches.remove(p) {
                            self.note(*p, n, None);
                        }
                    }
                    continue;
                }
                let resp = match conn.call_at(version, &req) {
                    Ok(r) => r,
                    Err(e) => {
                        self.client.drop_conn(leader);
                        return Err(e);
                    }
                };
                for t in &resp.responses {
                    for p in &t.partition_responses {
                        let code = p.error_code;
                        if code == 0 {
                            if let Some((_, n)) = batches.remove(&p.index) {
                                self.note(p.index, n, Some(p.base_offset));
                            }
                        } else if retriable(code) || code == ResponseError::NotEnoughReplicas.code()
                        {
                            // refused before the append: safe to send again
                            last_refusal = Some((code, p.index, p.error_message.clone()));
                        } else {
                            return Err(kafka_error(
                                code,
                                &format!("producing to {}-{}", self.topic, p.index),
                                p.error_message.as_deref(),
                            ));
                        }
                    }
                }
            }
            if batches.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (code, p, msg) = last_refusal.unwrap_or((
                    ResponseError::RequestTimedOut.code(),
                    *batches.keys().next().unwrap_or(&-1),
                    None,
                ));
                return Err(kafka_error(
                    code,
                    &format!("producing to {}-{p}", self.topic),
                    msg.as_deref(),
                ));
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    fn note(&mut self, partition: i32, n: u64, base: Option<i64>) {
        let s = self.stats.entry(partition).or_default();
        s.records += n;
        if let Some(b) = base {
            s.first.get_or_insert(b);
            s.last = Some(b + n as i64 - 1);
        }
        self.total += n;
    }

    fn report(&self, format: Format) {
        match format {
            Format::Table => {
                let mut parts = Vec::new();
                for (p, s) in &self.stats {
                    match (s.first, s.last) {
                        (Some(f), Some(l)) => parts.push(format!("{p}: offsets {f}..={l}")),
                        _ => parts.push(format!("{p}: {} records", s.records)),
                    }
                }
                println!(
                    "Produced {} records to {}{}",
                    self.total,
                    self.topic,
                    if parts.is_empty() {
                        ".".to_string()
                    } else {
                        format!(" (partition {}).", parts.join(", partition "))
                    }
                );
            }
            Format::Json => print_json(&json!({
                "topic": self.topic,
                "records": self.total,
                "partitions": self.stats.iter().map(|(p, s)| json!({
                    "partition": p,
                    "records": s.records,
                    "first_offset": s.first,
                    "last_offset": s.last,
                })).collect::<Vec<_>>(),
            })),
        }
    }
}
