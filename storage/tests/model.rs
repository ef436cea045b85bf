//! Property test: random sequences of append / wait_durable / read / truncate_to /
//! enforce_retention / offset_for_timestamp / clean reopen / crash (no close) run on a real
//! `PartitionLog` (tiny segments, tiny index interval, small or no cache) and, after every
//! step, are compared with an in-memory model: a list of batches (bytes with the assigned
//! base offset) plus segment bases. Cases: 32 (override with PROPTEST_CASES).

mod common;
use bytes::{Bytes, BytesMut};
use common::{run, tempdir};
use proptest::prelude::*;
use sluice_proto::batch::{build_batch, set_base_offset, SimpleRecord};
use sluice_storage::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLOCK0: i64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
struct BatchSpec {
    /// Per-record timestamp jitter around the model clock (so timestamps go backwards too).
    ts_jitter: Vec<i16>,
    value_size: u16,
    tag: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        batches: Vec<BatchSpec>,
        advance_ms: u16,
    },
    WaitDurable,
    Read {
        from: u16,
        max: u16,
        max_bytes: u16,
        min_one: bool,
    },
    Truncate {
        at: u16,
    },
    Retention {
        ms: Option<u16>,
        bytes: Option<u16>,
        advance_ms: u16,
        settle: bool,
    },
    OffsetForTs {
        delta: i16,
    },
    Reopen,
    /// End the executor without close (no marker, pending writes may be lost); with
    /// `settle`, everything appended is durable first.
    Crash {
        settle: bool,
    },
}

#[derive(Clone, Debug)]
struct CaseCfg {
    segment_bytes: u64,
    index_interval: u32,
    cache_bytes: usize,
    max_open_files: usize,
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        prop::collection::vec(-2000i16..2000, 1..5),
        0u16..400,
        any::<u8>(),
    )
        .prop_map(|(ts_jitter, value_size, tag)| BatchSpec {
            ts_jitter,
            value_size,
            tag,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(batch_spec(), 1..4), 0u16..400)
            .prop_map(|(batches, advance_ms)| Op::Append { batches, advance_ms }),
        3 => Just(Op::WaitDurable),
        6 => (any::<u16>(), any::<u16>(), 0u16..6000, any::<bool>())
            .prop_map(|(from, max, max_bytes, min_one)| Op::Read { from, max, max_bytes, min_one }),
        2 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        2 => (prop::option::of(0u16..5000), prop::option::of(0u16..8000), 0u16..3000, any::<bool>())
            .prop_map(|(ms, bytes, advance_ms, settle)| Op::Retention { ms, bytes, advance_ms, settle }),
        2 => (-3000i16..1500).prop_map(|delta| Op::OffsetForTs { delta }),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|settle| Op::Crash { settle }),
    ]
}

fn case_cfg() -> impl Strategy<Value = CaseCfg> {
    (
        600u64..4000,
        prop_oneof![Just(64u32), Just(300), Just(1024)],
        prop_oneof![Just(0usize), Just(3000), Just(1 << 20)],
        prop_oneof![Just(1usize), Just(2), Just(64)],
    )
        .prop_map(
            |(segment_bytes, index_interval, cache_bytes, max_open_files)| CaseCfg {
                segment_bytes,
                index_interval,
                cache_bytes,
                max_open_files,
            },
        )
}

/// One batch as the log must hold it.
#[derive(Clone, Debug)]
struct MBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
    /// Record timestamps in offset order.
    ts: Vec<i64>,
}

impl MBatch {
    fn max_ts(&self) -> i64 {
        self.ts.iter().copied().max().unwrap_or(-1) // ok: batches have >= 1 record
    }
}

/// The in-memory model of one log. Plain data (crosses the test's executor threads).
#[derive(Clone, Debug)]
struct Model {
    start: i64,
    end: i64,
    batches: Vec<MBatch>,
    /// Segment bases, ascending; the first is `start`, each is a batch boundary.
    seg_bases: Vec<i64>,
    /// Everything below this is known durable (from wait_durable or an observation).
    durable_lb: i64,
    config: LogConfig,
    clock: i64,
}

/// How the previous session ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Fresh,
    Clean,
    Crash { settled: bool },
}

impl Model {
    fn new(cfg: &CaseCfg) -> Model {
        Model {
            start: 0,
            end: 0,
            batches: Vec::new(),
            seg_bases: vec![0],
            durable_lb: 0,
            config: LogConfig {
                segment_bytes: cfg.segment_bytes,
                segment_ms: i64::MAX,
                retention_ms: -1,
                retention_bytes: -1,
                index_interval_bytes: cfg.index_interval,
                ..Default::default()
            },
            clock: CLOCK0,
        }
    }

    fn seg_size(&self, i: usize) -> u64 {
        let lo = self.seg_bases[i];
        let hi = self.seg_bases.get(i + 1).copied().unwrap_or(i64::MAX);
        self.batches
            .iter()
            .filter(|b| b.base >= lo && b.base < hi)
            .map(|b| b.bytes.len() as u64)
            .sum()
    }

    fn seg_max_ts(&self, i: usize) -> Option<i64> {
        let lo = self.seg_bases[i];
        let hi = self.seg_bases.get(i + 1).copied().unwrap_or(i64::MAX);
        self.batches
            .iter()
            .filter(|b| b.base >= lo && b.base < hi)
            .map(MBatch::max_ts)
            .max()
    }

    fn size(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes.len() as u64).sum()
    }

    fn is_boundary(&self, off: i64) -> bool {
        off == self.end || self.batches.iter().any(|b| b.base == off)
    }

    fn append(&mut self, specs: &[BatchSpec], advance: i64) -> (Bytes, Vec<MBatch>) {
        self.clock += advance;
        let mut wire = BytesMut::new();
        let mut out = Vec::new();
        let mut next = self.end;
        for s in specs {
            let value = vec![s.tag; s.value_size as usize];
            let ts: Vec<i64> = s.ts_jitter.iter().map(|j| self.clock + *j as i64).collect();
            let recs: Vec<SimpleRecord<'_>> = ts
                .iter()
                .map(|&t| SimpleRecord {
                    key: Some(b"k"),
                    value: Some(&value),
                    timestamp: t,
                    headers: &[],
                })
                .collect();
            let b = build_batch(0, &recs);
            wire.extend_from_slice(&b);
            let mut assigned = BytesMut::from(&b[..]);
            set_base_offset(&mut assigned, next);
            let mb = MBatch {
                base: next,
                last: next + ts.len() as i64 - 1,
                bytes: assigned.freeze(),
                ts,
            };
            next = mb.last + 1;
            out.push(mb);
        }
        (wire.freeze(), out)
    }

    fn apply_append(&mut self, new: Vec<MBatch>) {
        for b in new {
            let active = self.seg_bases.len() - 1;
            let size = self.seg_size(active);
            if size > 0 && size + b.bytes.len() as u64 > self.config.segment_bytes {
                self.seg_bases.push(b.base);
            }
            self.end = b.last + 1;
            self.batches.push(b);
        }
    }

    /// Batches a read must return.
    fn read(&self, from: i64, max_offset: i64, max_bytes: usize, min_one: bool) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in self.batches.iter().filter(|b| b.last >= from) {
            if b.last >= max_offset {
                break;
            }
            if total + b.bytes.len() > max_bytes && !(out.is_empty() && min_one) {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        out
    }

    /// Drop every batch at or after `end` (a batch boundary), as crash recovery does.
    fn cut(&mut self, end: i64) {
        self.batches.retain(|b| b.base < end);
        self.seg_bases.retain(|&s| s <= end);
        self.end = end;
        self.durable_lb = self.durable_lb.min(end);
    }

    fn truncate(&mut self, offset: i64) {
        if offset >= self.end {
            return;
        }
        if offset <= self.start {
            self.batches.clear();
            self.start = offset;
            self.end = offset;
            self.seg_bases = vec![offset];
            self.durable_lb = offset;
            return;
        }
        let Some(b) = self.batches.iter().find(|b| b.last >= offset) else {
            return;
        };
        let cut = b.base;
        self.batches.retain(|b| b.base < cut);
        // segments starting after the cut go; the one holding it is cut (maybe to empty)
        self.seg_bases.retain(|&s| s <= cut);
        self.end = cut;
        self.durable_lb = cut;
    }

    /// New log start if retention treats the first `sealed` segments as sealed and may
    /// (or may not) roll an expired active segment.
    fn retention_outcome(&self, now: i64, sealed: usize, allow_roll: bool) -> i64 {
        let cfg = &self.config;
        let n = self.seg_bases.len();
        let expired = |i: usize| {
            cfg.retention_ms >= 0
                && self
                    .seg_max_ts(i)
                    .is_some_and(|t| t < now.saturating_sub(cfg.retention_ms))
        };
        let mut total = self.size() as i64;
        let mut doomed = 0;
        for i in 0..sealed.min(n - 1) {
            let size = self.seg_size(i) as i64;
            let too_big = cfg.retention_bytes >= 0 && total - size >= cfg.retention_bytes;
            if !(expired(i) || too_big) {
                break;
            }
            total -= size;
            doomed += 1;
        }
        if allow_roll && doomed == n - 1 && self.seg_size(n - 1) > 0 && expired(n - 1) {
            return self.end;
        }
        self.seg_bases[doomed]
    }

    fn apply_retention(&mut self, new_start: i64) {
        self.batches.retain(|b| b.base >= new_start);
        self.seg_bases.retain(|&s| s >= new_start);
        if self.seg_bases.first() != Some(&new_start) {
            self.seg_bases.insert(0, new_start);
        }
        self.start = new_start;
        self.durable_lb = self.durable_lb.max(new_start);
    }

    /// (offset, timestamp) of the first record with timestamp >= ts.
    fn offset_for_ts(&self, ts: i64) -> Option<(i64, i64)> {
        self.batches.iter().find_map(|b| {
            b.ts.iter()
                .position(|&t| t >= ts)
                .map(|i| (b.base + i as i64, b.ts[i]))
        })
    }

    fn max_ts(&self) -> Option<i64> {
        self.batches.iter().map(MBatch::max_ts).max()
    }
}

fn disk_bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".log")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn offsets(v: &[Bytes]) -> Vec<i64> {
    v.iter()
        .map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            i64::from_be_bytes(a)
        })
        .collect()
}

/// Compare the log's bounds, size and max timestamp with the model.
fn check_state(log: &PartitionLog, m: &Model, ctx: &str) {
    assert_eq!(log.log_start_offset(), m.start, "{ctx}: log start");
    assert_eq!(log.log_end_offset(), m.end, "{ctx}: log end");
    let d = log.durable_offset();
    assert!(
        d >= m.durable_lb && d <= m.end && d >= m.start,
        "{ctx}: durable {d} not in [{}, {}] (start {})",
        m.durable_lb,
        m.end,
        m.start
    );
    assert_eq!(log.size_bytes(), m.size(), "{ctx}: size_bytes");
    let mt = log.max_timestamp();
    assert_eq!(mt.map(|x| x.0), m.max_ts(), "{ctx}: max timestamp");
    if let Some((_, off)) = mt {
        assert!(off >= m.start && off < m.end, "{ctx}: max ts offset {off}");
    }
}

async fn check_read(
    log: &PartitionLog,
    m: &Model,
    from: i64,
    max: i64,
    mb: usize,
    one: bool,
    ctx: &str,
) {
    let got = log.read(from, max, mb, one).await;
    if from < m.start || from > m.end {
        assert!(
            matches!(got, Err(StorageError::OffsetOutOfRange { .. })),
            "{ctx}: read({from}) outside [{}, {}] gave {got:?}",
            m.start,
            m.end
        );
        return;
    }
    let got = got.unwrap_or_else(|e| panic!("{ctx}: read({from}, {max}, {mb}, {one}): {e}"));
    let want = m.read(from, max, mb, one);
    assert_eq!(
        offsets(&got),
        offsets(&want),
        "{ctx}: read({from}, {max}, {mb}, {one}) batch offsets"
    );
    assert!(
        got == want,
        "{ctx}: read({from}, {max}, {mb}, {one}) bytes differ"
    );
}

/// Reconcile the model with what `open` recovered after the previous session ended.
fn after_open(log: &PartitionLog, dir: &Path, m: &mut Model, prev: End) {
    let ctx = format!("reopen after {prev:?}");
    let e = log.log_end_offset();
    match prev {
        End::Crash { settled: false } => {
            assert!(
                e >= m.durable_lb && e <= m.end && m.is_boundary(e),
                "{ctx}: recovered end {e}, durable was {}, end was {}",
                m.durable_lb,
                m.end
            );
            if e < m.end {
                m.cut(e);
            }
        }
        _ => assert_eq!(e, m.end, "{ctx}: log end"),
    }
    // segment boundaries as recovery left them on disk
    let mut bases = disk_bases(dir);
    if bases.is_empty() {
        bases.push(m.start);
    }
    for &b in &bases {
        assert!(
            b >= m.start && b <= m.end && m.is_boundary(b),
            "{ctx}: segment base {b} is not a batch boundary in [{}, {}]",
            m.start,
            m.end
        );
    }
    if prev != (End::Crash { settled: false }) {
        let mut want = m.seg_bases.clone();
        if want.len() > bases.len() && m.seg_size(want.len() - 1) == 0 {
            want.pop(); // an empty active segment never written has no file
        }
        assert_eq!(bases, want, "{ctx}: segment bases");
    }
    m.seg_bases = bases;
    m.durable_lb = m.end;
    check_state(log, m, &ctx);
}

async fn session(
    dir: PathBuf,
    cfg: CaseCfg,
    mut m: Model,
    prev: End,
    ops: Vec<Op>,
) -> (Model, End) {
    let shard = ShardStorage::start(ShardStorageOptions {
        cache_bytes: cfg.cache_bytes,
        max_open_files: cfg.max_open_files,
        retention_check_interval: Duration::from_secs(3600),
        ..Default::default()
    });
    let log = PartitionLog::open(&shard, dir.clone(), m.config.clone())
        .await
        .unwrap_or_else(|e| panic!("open after {prev:?}: {e}"));
    after_open(&log, &dir, &mut m, prev);
    check_read(
        &log,
        &m,
        m.start,
        i64::MAX,
        1 << 30,
        true,
        "full read after open",
    )
    .await;
    for (i, op) in ops.iter().enumerate() {
        let ctx = format!("op {i} {op:?}");
        match op {
            Op::Append {
                batches,
                advance_ms,
            } => {
                let (wire, new) = m.append(batches, *advance_ms as i64);
                let info = log
                    .append(wire, m.clock)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let last = new.last().map_or(m.end, |b| b.last);
                assert_eq!(
                    (info.base_offset, info.last_offset, info.log_start_offset),
                    (m.end, last, m.start),
                    "{ctx}: append info"
                );
                m.apply_append(new);
            }
            Op::WaitDurable => {
                if m.end > m.start {
                    log.wait_durable(m.end - 1)
                        .await
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(log.durable_offset(), m.end, "{ctx}");
                }
                m.durable_lb = m.end;
            }
            Op::Read {
                from,
                max,
                max_bytes,
                min_one,
            } => {
                let lo = (m.start - 1).max(0);
                let from = lo + (*from as i64) % (m.end + 2 - lo);
                let max_offset = match max % 4 {
                    0 => i64::MAX,
                    1 => m.end,
                    _ => from + (*max as i64) % (m.end + 2 - from).max(1),
                };
                check_read(
                    &log,
                    &m,
                    from,
                    max_offset,
                    *max_bytes as usize,
                    *min_one,
                    &ctx,
                )
                .await;
            }
            Op::Truncate { at } => {
                let lo = (m.start - 2).max(0);
                let at = lo + (*at as i64) % (m.end + 2 - lo);
                log.truncate_to(at)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: truncate_to({at}): {e}"));
                m.truncate(at);
                if at < m.end {
                    m.durable_lb = m.end;
                }
            }
            Op::Retention {
                ms,
                bytes,
                advance_ms,
                settle,
            } => {
                m.config.retention_ms = ms.map_or(-1, |x| x as i64);
                m.config.retention_bytes = bytes.map_or(-1, |x| x as i64);
                log.set_config(m.config.clone());
                m.clock += *advance_ms as i64;
                if *settle && m.end > m.start {
                    log.wait_durable(m.end - 1)
                        .await
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    m.durable_lb = m.end;
                }
                let durable_all = m.durable_lb == m.end;
                log.enforce_retention(m.clock)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let got = log.log_start_offset();
                let n = m.seg_bases.len();
                let allowed: Vec<i64> = if durable_all && *settle {
                    vec![m.retention_outcome(m.clock, n - 1, true)]
                } else {
                    let mut v: Vec<i64> = (0..n)
                        .map(|k| m.retention_outcome(m.clock, k, false))
                        .collect();
                    v.push(m.retention_outcome(m.clock, n - 1, true));
                    v
                };
                assert!(
                    allowed.contains(&got),
                    "{ctx}: log start after retention {got}, model allows {allowed:?} (segments {:?})",
                    m.seg_bases
                );
                m.apply_retention(got);
            }
            Op::OffsetForTs { delta } => {
                let ts = m.clock + *delta as i64;
                let got = log
                    .offset_for_timestamp(ts)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(
                    got,
                    m.offset_for_ts(ts),
                    "{ctx}: offset_for_timestamp({ts})"
                );
            }
            Op::Reopen => {
                log.close()
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
                shard
                    .shutdown()
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: shutdown: {e}"));
                return (m, End::Clean);
            }
            Op::Crash { settle } => {
                if *settle && m.end > m.start {
                    log.wait_durable(m.end - 1)
                        .await
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                }
                if *settle {
                    m.durable_lb = m.end;
                } else {
                    m.durable_lb = m.durable_lb.max(log.durable_offset());
                }
                return (m, End::Crash { settled: *settle });
            }
        }
        check_state(&log, &m, &ctx);
    }
    log.close()
        .await
        .unwrap_or_else(|e| panic!("final close: {e}"));
    shard
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("final shutdown: {e}"));
    (m, End::Clean)
}

fn run_case(cfg: CaseCfg, ops: Vec<Op>) {
    let tmp = tempdir();
    let dir = tmp.path().join("model-0");
    let mut m = Model::new(&cfg);
    let mut prev = End::Fresh;
    // one executor per session: a crash ends the session without closing anything
    let mut sessions: Vec<Vec<Op>> = vec![Vec::new()];
    for op in ops {
        let ends = matches!(op, Op::Reopen | Op::Crash { .. });
        if let Some(s) = sessions.last_mut() {
            s.push(op);
        }
        if ends {
            sessions.push(Vec::new());
        }
    }
    for s in sessions {
        let (d, c) = (dir.clone(), cfg.clone());
        let (m2, end) = run(move || async move { session(d, c, m, prev, s).await });
        m = m2;
        prev = end;
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(cfg in case_cfg(), ops in prop::collection::vec(op(), 1..40)) {
        run_case(cfg, ops);
    }
}
