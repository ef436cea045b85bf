//! `sluice consume TOPIC`: sessionless Fetch (v4–v12) from each partition's leader, one
//! line per record on stdout, until `--max-messages` records were printed or none arrived
//! for `--timeout`. Without `--group` it reads every partition (or `--partition`) from the
//! log end (or the start with `--from-beginning`); with `--group` it joins the group
//! (`member.rs`), starts from the group's committed offsets, and commits the offset after
//! the last record it printed every 5 s and at the end, so `group describe` shows exactly
//! what was consumed.
//!
//! ```text
//!  positions {partition → next offset} ─► Fetch per leader ─► batches ─► records ≥ position
//!      ─► print ─► position = offset + 1 ─► (group) commit positions
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use serde_json::json;
use sluice_proto::batch::RecordBatchHeader;

use super::client::{retriable, topic_name, Client, EARLIEST, LATEST, RETRY_BACKOFF};
use super::format::{kafka_error, progress, Format};
use super::group::{committed_offsets, Tp};
use super::member::{Heartbeat, Member};
use super::ClientArgs;

/// How often a group consumer commits what it printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one Fetch long poll waits.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    topic: String,
    /// Start at the earliest offset (default: the log end) where the group has no commit.
    #[arg(long)]
    from_beginning: bool,
    /// Consume as a member of this group, from its committed offsets, committing as it goes.
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
    /// Exit after printing this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Read only this partition (not with --group).
    #[arg(long)]
    partition: Option<i32>,
    /// Print the key before the value (tab-separated; "null" when absent).
    #[arg(long)]
    print_key: bool,
    /// Print partition:offset before the value.
    #[arg(long)]
    print_offset: bool,
    /// Print the headers (name=value,...) before the value.
    #[arg(long)]
    print_headers: bool,
    /// Idle exit and every network wait: exit after this long without a record.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// The consume loop's state.
struct Consumer<'a> {
    args: &'a ConsumeArgs,
    client: Client,
    /// Next offset to print, per assigned partition.
    positions: BTreeMap<i32, i64>,
    /// Leader of each partition, from the last Metadata (None: ask again).
    leaders: Option<BTreeMap<Tp, i32>>,
    printed: u64,
    out: std::io::StdoutLock<'static>,
}

pub(crate) fn run(args: &ConsumeArgs) -> Result<()> {
    let mut client = Client::connect(&args.client)?;
    let topic = args.topic.clone();
    let deadline = Instant::now() + client.timeout();
    let leaders = client.leaders(std::slice::from_ref(&topic), false, deadline)?;
    let all: Vec<i32> = leaders.keys().map(|(_, p)| *p).collect();
    if let Some(p) = args.partition {
        if !all.contains(&p) {
            bail!(
                "topic '{topic}' has {} partitions; there is no partition {p}",
                all.len()
            );
        }
    }
    let mut c = Consumer {
        args,
        client,
        positions: BTreeMap::new(),
        leaders: Some(leaders),
        printed: 0,
        out: std::io::stdout().lock(),
    };
    let mut member = match &args.group {
        Some(g) => {
            let mut m = Member::new(g, &topic);
            m.join(&mut c.client)?;
            c.start_at(&m.assignment.clone(), Some(g))?;
            Some(m)
        }
        None => {
            let parts = args.partition.map_or(all, |p| vec![p]);
            c.start_at(&parts, None)?;
            None
        }
    };
    let idle = args.client.timeout;
    let mut last_record = Instant::now();
    let mut last_commit = Instant::now();
    // nothing committed yet: the first commit stores the starting positions too, as a
    // Kafka consumer's auto-commit does
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    // Ctrl-C or SIGTERM ends the loop, so the group still gets the final commit and leave
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    let result = (|| -> Result<()> {
        loop {
            if args.max_messages.is_some_and(|m| c.printed >= m)
                || last_record.elapsed() >= idle
                || stop.load(Ordering::Relaxed)
            {
                return Ok(());
            }
            if let Some(m) = member.as_mut() {
                if m.heartbeat_due() {
                    if let Heartbeat::Rejoin = m.heartbeat(&mut c.client)? {
                        // commit what we printed under the old generation (best effort:
                        // the coordinator may already refuse it), then take the new share
                        let offsets = c.offsets();
                        let _ = m.commit(&mut c.client, &offsets);
                        m.join(&mut c.client)?;
                        let g = args.group.as_deref();
                        c.start_at(&m.assignment.clone(), g)?;
                        committed.clear();
                    }
                }
            }
            if c.positions.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let wait = POLL.min(idle.saturating_sub(last_record.elapsed()));
            if c.fetch_round(wait)? > 0 {
                last_record = Instant::now();
            }
            if let Some(m) = member.as_ref() {
                if last_commit.elapsed() >= COMMIT_INTERVAL && committed != c.positions {
                    let offsets = c.offsets();
                    m.commit(&mut c.client, &offsets)?;
                    committed = c.positions.clone();
                    last_commit = Instant::now();
                }
            }
        }
    })();
    c.out.flush().ok();
    if let Some(m) = member.as_ref() {
        if committed != c.positions {
            let offsets = c.offsets();
            m.commit(&mut c.client, &offsets)?;
        }
        if let Err(e) = m.leave(&mut c.client) {
            progress(&format!("leaving the group: {e:#}"));
        }
    }
    progress(&format!("consumed {} records", c.printed));
    match result {
        // the reader went away (`| head`): the end of the output, not an error
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

impl Consumer<'_> {
    /// Positions for `parts`: the group's commits first, then earliest or latest.
    fn start_at(&mut self, parts: &[i32], group: Option<&str>) -> Result<()> {
        let topic = &self.args.topic;
        self.positions.clear();
        let mut committed = BTreeMap::new();
        if let Some(g) = group {
            committed = committed_offsets(&mut self.client, g)?;
        }
        let mut missing: Vec<Tp> = Vec::new();
        for p in parts {
            match committed.get(&(topic.clone(), *p)) {
                Some(o) => {
                    self.positions.insert(*p, *o);
                }
                None => missing.push((topic.clone(), *p)),
            }
        }
        if !missing.is_empty() {
            let at = if self.args.from_beginning {
                EARLIEST
            } else {
                LATEST
            };
            for ((_, p), o) in self.client.list_offsets(&missing, at)? {
                self.positions.insert(p, o);
            }
        }
        Ok(())
    }

    /// Positions as the offsets to commit.
    fn offsets(&self) -> BTreeMap<Tp, i64> {
        self.positions
            .iter()
            .map(|(p, o)| ((self.args.topic.clone(), *p), *o))
            .collect()
    }

    /// One Fetch to each leader of an assigned partition; returns the records printed.
    fn fetch_round(&mut self, wait: Duration) -> Result<u64> {
        let topic = self.args.topic.clone();
        let leaders = match self.leaders.take() {
            Some(l) => l,
            None => {
                let deadline = Instant::now() + self.client.timeout();
                self.client
                    .leaders(std::slice::from_ref(&topic), false, deadline)?
            }
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in self.positions.keys() {
            if let Some(l) = leaders.get(&(topic.clone(), *p)) {
                by_leader.entry(*l).or_default().push(*p);
            }
        }
        self.leaders = Some(leaders);
        let before = self.printed;
        let n_leaders = by_leader.len().max(1) as u32;
        for (leader, parts) in by_leader {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms((wait / n_leaders).as_millis() as i32)
                .with_min_bytes(1)
                .with_max_bytes(8 << 20)
                .with_isolation_level(0)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(self.positions[p])
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]);
            let conn = self.client.broker(leader)?;
            let version = conn.version::<FetchRequest>(12)?;
            if version < 4 {
                bail!(
                    "the broker at {} serves Fetch only up to v{version}; v4 is needed",
                    conn.addr()
                );
            }
            let resp = match conn.call_at(version, &req) {
                Ok(r) => r,
                Err(e) => {
                    self.client.drop_conn(leader);
                    self.leaders = None;
                    return Err(e);
                }
            };
            if resp.error_code != 0 {
                return Err(kafka_error(resp.error_code, "fetching", None));
            }
            for t in resp.responses {
                for p in t.partitions {
                    let part = p.partition_index;
                    if p.error_code == ResponseError::OffsetOutOfRange.code() {
                        let at = if self.args.from_beginning {
                            EARLIEST
                        } else {
                            LATEST
                        };
                        let reset = self.client.list_offsets(&[(topic.clone(), part)], at)?;
                        if let Some(o) = reset.values().next() {
                            progress(&format!(
                                "partition {part}: offset {} is out of range, moving to {o}",
                                self.positions[&part]
                            ));
                            self.positions.insert(part, *o);
                        }
                        continue;
                    }
                    if retriable(p.error_code) {
                        // a moved leader: ask Metadata again next round
                        self.leaders = None;
                        std::thread::sleep(RETRY_BACKOFF);
                        continue;
                    }
                    if p.error_code != 0 {
                        return Err(kafka_error(
                            p.error_code,
                            &format!("fetching {topic}-{part}"),
                            None,
                        ));
                    }
                    if let Some(records) = p.records {
                        self.deliver(part, records)?;
                        if self.done() {
                            return Ok(self.printed - before);
                        }
                    }
                }
            }
        }
        self.out.flush()?;
        Ok(self.printed - before)
    }

    fn done(&self) -> bool {
        self.args.max_messages.is_some_and(|m| self.printed >= m)
    }

    /// Prints the records of `records` at or after the partition's position (stopping at
    /// --max-messages) and moves the position past them. A batch cut off at the end of
    /// the answer is left for the next fetch.
    fn deliver(&mut self, partition: i32, mut records: Bytes) -> Result<()> {
        while records.len() >= 12 {
            let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
            let total = 12 + len.max(0) as usize;
            if total > records.len() {
                break;
            }
            let batch = records.split_to(total);
            let header = RecordBatchHeader::parse(&batch)
                .with_context(|| format!("a record batch of {}-{partition}", self.args.topic))?;
            let pos = self.positions[&partition];
            if header.last_offset() < pos {
                continue;
            }
            if !header.is_control() {
                let mut buf = batch.clone();
                let set = RecordBatchDecoder::decode(&mut buf).with_context(|| {
                    format!(
                        "decoding the batch at offset {} of {}-{partition}",
                        header.base_offset, self.args.topic
                    )
                })?;
                for r in &set.records {
                    if r.offset < self.positions[&partition] {
                        continue;
                    }
                    self.print(partition, r)?;
                    self.positions.insert(partition, r.offset + 1);
                    if self.done() {
                        return Ok(());
                    }
                }
            }
            let next = self.positions[&partition].max(header.last_offset() + 1);
            self.positions.insert(partition, next);
        }
        Ok(())
    }

    fn print(&mut self, partition: i32, r: &Record) -> Result<()> {
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        self.printed += 1;
        match self.args.client.format {
            Format::Json => {
                let headers: Vec<_> = r
                    .headers
                    .iter()
                    .map(|(k, v)| json!({"key": k.to_string(), "value": text(v)}))
                    .collect();
                let line = json!({
                    "topic": self.args.topic,
                    "partition": partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp,
                    "key": text(&r.key),
                    "value": text(&r.value),
                    "headers": headers,
                });
                writeln!(self.out, "{line}")?;
            }
            Format::Table => {
                let mut fields = Vec::new();
                if self.args.print_offset {
                    fields.push(format!("{partition}:{}", r.offset));
                }
                if self.args.print_key {
                    fields.push(text(&r.key).unwrap_or_else(|| "null".into()));
                }
                if self.args.print_headers {
                    fields.push(
                        r.headers
                            .iter()
                            .map(|(k, v)| format!("{k}={}", text(v).unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                fields.push(text(&r.value).unwrap_or_else(|| "null".into()));
                writeln!(self.out, "{}", fields.join("\t"))?;
            }
        }
        Ok(())
    }
}
