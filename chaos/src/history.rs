//! The history of a run: one JSON object per line, appended as things happen, read back by
//! the checker. A line is an `Entry`: a time (ms since the run started), what happened
//! (`kind`, `phase`) and the operation's fields (worker, partition, offset, value, …).
//! Invariants: an operation's `invoke` line is written before the operation starts, so a
//! value can appear in the log only after its invoke is in the history; a completion
//! (`ok`/`fail`) carries the invoke's `id`. Writes go through one mutex; the file is
//! flushed every `FLUSH_EVERY` lines and when the writer is flushed or dropped.
//!
//! ```text
//! {"t":12,"kind":"produce","phase":"invoke","id":7,"worker":"w0","partition":1,"value":"w0-7"}
//! {"t":19,"kind":"produce","phase":"ok","id":7,"worker":"w0","partition":1,"offset":3}
//! {"t":25,"kind":"read","phase":"ok","worker":"a0","session":0,"partition":1,"offset":3,"value":"w0-7"}
//! {"t":900,"kind":"final_read","phase":"ok","partition":1,"offset":3,"value":"w0-7"}
//! {"t":950,"kind":"final_end","phase":"ok","partition":1,"offset":412}
//! {"t":30,"kind":"txn","phase":"invoke","id":9,"worker":"x0.0","detail":"commit"}
//! {"t":31,"kind":"txn_send","phase":"invoke","id":9,"worker":"x0.0","partition":2,"value":"x0.0-5"}
//! {"t":40,"kind":"txn_end","phase":"invoke","id":9,"worker":"x0.0","detail":"commit"}
//! {"t":52,"kind":"txn","phase":"ok","id":9,"worker":"x0.0","detail":"committed"}
//! {"t":990,"kind":"txn_final_read","phase":"ok","partition":2,"offset":7,"value":"x0.0-5","isolation":"read_committed"}
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// The `info` line written once every fault is healed and every node runs again.
pub const HEALED: &str = "every fault healed; every node running";

/// Lines between flushes of the history file.
const FLUSH_EVERY: u64 = 256;

/// What a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The run's parameters (first line): seed, topic, partitions, brokers, schedule.
    Meta,
    /// An idempotent acks=all produce of one unique value to one partition.
    Produce,
    /// A record a consumer (by assignment or in a group) read during the run.
    Read,
    /// A group offset commit (invoke: asked; ok/fail: the broker's answer, per partition).
    Commit,
    /// A group's committed offset as read back (OffsetFetch) during the run.
    Committed,
    /// A record read by the final read-back after every fault was healed.
    FinalRead,
    /// The final read-back of a partition is complete up to `offset` (its high watermark).
    FinalEnd,
    /// A fault injected (invoke) or healed (ok).
    Nemesis,
    /// A broker process exited without being told to.
    Crash,
    /// Anything else worth keeping (a broker not ready in time, a client recreated, …).
    Info,
    /// A transaction of a transactional producer (`id` is the transaction's): invoke when
    /// it begins (`detail`: the intended end, `commit` or `abort`); ok with `detail`
    /// `committed` or `aborted` when the client saw that end succeed; fail (`detail`
    /// `unknown`) when a call failed and the producer was replaced (outcome unknown).
    Txn,
    /// One record of a transaction (`id` is the transaction's): invoke before the send,
    /// ok with the offset of its delivery report, fail with the error.
    TxnSend,
    /// The transaction's end call (`detail`: `commit` or `abort`): invoke before the call,
    /// ok or fail with its answer. A transaction with no `commit` invoke can never commit.
    TxnEnd,
    /// A record of the transactional topic read by a read_committed consumer during the run.
    TxnRead,
    /// A record of the transactional topic read back after healing (`isolation`:
    /// `read_committed` or `read_uncommitted`).
    TxnFinalRead,
    /// The transactional topic's read-back of a partition is complete up to `offset` (the
    /// last stable offset for read_committed, the high watermark for read_uncommitted).
    TxnFinalEnd,
    /// A consume-transform-produce transaction (`id`): invoke (`detail`: its batch size);
    /// ok with `committed` or `aborted`; fail with `unknown` (a call failed or overran its
    /// bound and the incarnation was replaced). Its acknowledged commit is also written as
    /// `commit` ok lines of the group `chaos-ctp`, one per input partition.
    CtpTxn,
    /// The input offsets sent in the transaction: invoke per partition (`offset`: the next
    /// offset to consume), then one ok or fail for the call.
    CtpOffsets,
    /// The end call (`detail`: `commit` or `abort`): invoke before it, ok or fail.
    CtpEnd,
    /// The group `chaos-ctp`'s committed offset of an input partition after the workers
    /// stopped (read stable).
    CtpFinalCommitted,
    /// A record of the output topic read back read_committed after healing.
    CtpFinalRead,
    /// The output topic's read-back of a partition is complete up to `offset` (its LSO).
    CtpFinalEnd,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Invoke,
    Ok,
    /// Failed as far as the client knows; for a produce this is indefinite (the record may
    /// still have been written), so a failed value may appear at most once.
    Fail,
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the run started.
    pub t: u64,
    pub kind: Kind,
    pub phase: Phase,
    /// Links an operation's completion to its invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// A consumer's session: a new one after each (re)assignment or client restart; its
    /// reads of one partition must have rising offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A fault's kind (`nemesis` lines): `kill`, `pause`, `partition-leader`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Free text (a fault's description) or, for `meta`, the run's parameters as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The reader's isolation level (`txn_final_read`, `txn_final_end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

impl Entry {
    pub fn new(t: u64, kind: Kind, phase: Phase) -> Self {
        Entry {
            t,
            kind,
            phase,
            id: None,
            worker: None,
            session: None,
            group: None,
            partition: None,
            offset: None,
            value: None,
            error: None,
            fault: None,
            detail: None,
            isolation: None,
        }
    }

    pub fn id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    pub fn worker(mut self, w: impl Into<String>) -> Self {
        self.worker = Some(w.into());
        self
    }

    pub fn session(mut self, s: u64) -> Self {
        self.session = Some(s);
        self
    }

    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.group = Some(g.into());
        self
    }

    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }

    pub fn offset(mut self, o: i64) -> Self {
        self.offset = Some(o);
        self
    }

    pub fn value(mut self, v: impl Into<String>) -> Self {
        self.value = Some(v.into());
        self
    }

    pub fn error(mut self, e: impl Into<String>) -> Self {
        self.error = Some(e.into());
        self
    }

    pub fn fault(mut self, f: impl Into<String>) -> Self {
        self.fault = Some(f.into());
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub fn isolation(mut self, i: Isolation) -> Self {
        self.isolation = Some(i.name().to_string());
        self
    }
}

/// A consumer's `isolation.level`, as the history names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// The run's parameters, kept as the `detail` of the `meta` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub seed: u64,
    pub brokers: u32,
    pub topic: String,
    pub partitions: i32,
    pub duration_ms: u64,
    pub nemesis: Vec<String>,
    /// The command line that replays this run (same seed, same schedule).
    pub replay: String,
    /// The fault schedule the seed gave, one description per step.
    pub schedule: Vec<String>,
    /// The broker binary: path, size and modification time (which build was tested).
    #[serde(default)]
    pub broker_binary: String,
    /// The transactional workload's topic (same partition count as `topic`); absent when
    /// the run had no transactional producers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_topic: Option<String>,
    /// The consume-transform-produce workload's output topic (its input is `topic`, same
    /// partition count); absent when the run had no such workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctp_topic: Option<String>,
}

/// Appends entries to a history file; shared by every workload and the nemesis.
pub struct HistoryWriter {
    started: Instant,
    next_id: AtomicU64,
    out: Mutex<Out>,
}

struct Out {
    file: BufWriter<File>,
    /// Lines since the last flush.
    lines: u64,
    /// The first write error, reported by `flush` (a history with holes must not pass).
    error: Option<String>,
}

impl HistoryWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(HistoryWriter {
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            out: Mutex::new(Out {
                file: BufWriter::new(file),
                lines: 0,
                error: None,
            }),
        })
    }

    /// Milliseconds since the writer was created.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// An entry stamped now.
    pub fn entry(&self, kind: Kind, phase: Phase) -> Entry {
        Entry::new(self.now(), kind, phase)
    }

    pub fn write(&self, e: &Entry) {
        let line = match serde_json::to_string(e) {
            Ok(l) => l,
            Err(err) => format!("{{\"serialize_error\":{:?}}}", err.to_string()),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let res = writeln!(out.file, "{line}");
        out.lines += 1;
        let res = res.and_then(|()| {
            if out.lines >= FLUSH_EVERY {
                out.lines = 0;
                out.file.flush()
            } else {
                Ok(())
            }
        });
        if let Err(err) = res {
            out.error.get_or_insert(err.to_string());
        }
    }

    /// Flushes the file; fails if any write so far failed.
    pub fn flush(&self) -> Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.file.flush()?;
        out.file.get_ref().sync_data()?;
        if let Some(e) = &out.error {
            anyhow::bail!("writing the history failed: {e}");
        }
        Ok(())
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.file.flush();
    }
}

/// Reads a history file. A line that does not parse is an error naming its number (a
/// truncated last line, as a crash of this process may leave, is skipped and reported
/// as the second value).
pub fn read(path: &Path) -> Result<(Vec<Entry>, Option<String>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::with_capacity(lines.len());
    let mut torn = None;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(e) if i + 1 == lines.len() => {
                torn = Some(format!("last line {} is torn ({e}); skipped", i + 1));
            }
            Err(e) => {
                anyhow::bail!("{}: line {}: {e}", path.display(), i + 1)
            }
        }
    }
    Ok((out, torn))
}
