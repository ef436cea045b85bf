//! Logs with offset gaps, as compaction leaves them: segments written with `SegmentWriter`
//! from batches at chosen offsets (gaps before batches, a first batch after the segment's
//! base, segments ending before the next one begins), then opened as a log. Property
//! test over random layouts and damage (a torn or zero-padded tail, a flipped byte in an
//! earlier segment): recovery keeps exactly the valid prefix; reads at batch starts,
//! inside batches and in gaps return the batch holding the offset or the next one (cold,
//! through the sparse index, and sequentially through the read-ahead windows);
//! `offset_for_timestamp`; the idempotent-producer state rebuilt from the gapped log
//! (async load or synchronous fallback) recognises retries; appends continue at the log
//! end; a crash or a clean close and reopen keep everything; retention and truncation
//! work on gapped segments. Cases: 32 (override with PROPTEST_CASES).

mod common;
use bytes::Bytes;
use common::{run, tempdir};
use proptest::prelude::*;
use sluice_proto::batch::{build_batch, set_base_offset, RecordBatchHeader, SimpleRecord};
use sluice_storage::*;
use std::path::{Path, PathBuf};

const CLOCK0: i64 = 1_700_000_000_000;
const PIDS: [i64; 3] = [7001, 7002, 7003];

#[derive(Clone, Debug)]
struct BSpec {
    /// Offsets skipped before this batch.
    gap: u16,
    records: u8,
    value: u16,
    /// Index into `PIDS` for an idempotent batch.
    producer: Option<u8>,
}

#[derive(Clone, Debug)]
struct SSpec {
    /// Offsets between the previous segment's last batch and this segment's base.
    lead: u16,
    batches: Vec<BSpec>,
}

#[derive(Clone, Debug)]
enum Damage {
    None,
    /// The last segment file cut at this fraction of its length (a torn tail).
    Torn(u16),
    /// Zero bytes after the last segment's last batch (direct-I/O padding).
    Zeros(u16),
    /// A byte flipped inside a CRC-covered batch of a segment that is not the last (its
    /// time index lost, so recovery rescans it).
    Flip {
        seg: u8,
        batch: u8,
        at: u16,
    },
}

#[derive(Clone, Debug)]
struct Case {
    base0: u16,
    segs: Vec<SSpec>,
    interval: u32,
    cache: bool,
    damage: Damage,
    clean_close: bool,
    retention: Option<u16>,
    truncate: Option<u16>,
}

fn bspec() -> impl Strategy<Value = BSpec> {
    (
        prop_oneof![6 => Just(0u16), 3 => 1u16..5, 1 => 5u16..3000],
        1u8..5,
        0u16..300,
        prop::option::weighted(0.3, 0u8..3),
    )
        .prop_map(|(gap, records, value, producer)| BSpec {
            gap,
            records,
            value,
            producer,
        })
}

fn sspec() -> impl Strategy<Value = SSpec> {
    (
        prop_oneof![3 => Just(0u16), 1 => 1u16..4, 1 => 100u16..2000],
        prop::collection::vec(bspec(), 0..7),
    )
        .prop_map(|(lead, batches)| SSpec { lead, batches })
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => Just(Damage::None),
        2 => any::<u16>().prop_map(Damage::Torn),
        1 => (1u16..4000).prop_map(Damage::Zeros),
        2 => (any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(seg, batch, at)| Damage::Flip { seg, batch, at }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            0u16..50,
            prop::collection::vec(sspec(), 1..5),
            prop_oneof![Just(64u32), Just(300), Just(4096)],
            any::<bool>(),
        ),
        (
            damage(),
            any::<bool>(),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u16>()),
        ),
    )
        .prop_map(
            |((base0, segs, interval, cache), (damage, clean_close, retention, truncate))| Case {
                base0,
                segs,
                interval,
                cache,
                damage,
                clean_close,
                retention,
                truncate,
            },
        )
}

/// One batch as the log must hold it.
#[derive(Clone, Debug)]
struct MBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
    /// Timestamp of the first record (the others follow, one ms apart).
    ts: i64,
    /// (producer id, first sequence) of an idempotent batch.
    producer: Option<(i64, i32)>,
}

#[derive(Clone, Debug)]
struct MSeg {
    base: i64,
    batches: Vec<MBatch>,
}

impl MSeg {
    fn size(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes.len() as u64).sum()
    }
    fn end(&self) -> i64 {
        self.batches.last().map_or(self.base, |b| b.last + 1)
    }
}

/// The log as it must be.
#[derive(Clone, Debug)]
struct Model {
    segs: Vec<MSeg>,
}

impl Model {
    fn start(&self) -> i64 {
        self.segs[0].base
    }
    fn end(&self) -> i64 {
        self.segs.last().map_or(0, MSeg::end)
    }
    fn batches(&self) -> impl Iterator<Item = &MBatch> {
        self.segs.iter().flat_map(|s| s.batches.iter())
    }
    /// The batch a read at `o` must start with.
    fn first_from(&self, o: i64) -> Option<&MBatch> {
        self.batches().find(|b| b.last >= o)
    }
    /// Offsets worth reading at: each batch's base, middle and last offset, and the first,
    /// middle and last offset of every gap.
    fn probes(&self) -> Vec<i64> {
        let mut out = Vec::new();
        let mut prev = self.start();
        for b in self.batches() {
            if b.base > prev {
                out.extend([prev, prev + (b.base - prev) / 2, b.base - 1]);
            }
            out.extend([b.base, b.base + (b.last - b.base) / 2, b.last]);
            prev = b.last + 1;
        }
        out.retain(|&o| o >= self.start() && o < self.end());
        out.sort_unstable();
        out.dedup();
        out
    }
    /// Retention by bytes: whole segments (never the last) from the front while the rest
    /// is still at least `bytes`.
    fn retain_bytes(&mut self, bytes: u64) {
        let mut total: u64 = self.segs.iter().map(MSeg::size).sum();
        while self.segs.len() > 1 && total - self.segs[0].size() >= bytes {
            total -= self.segs[0].size();
            self.segs.remove(0);
        }
    }
    /// `truncate_from(offset)`: batches whose last offset reaches `offset` go; the end is
    /// the last kept batch's end or the base of the segment holding `offset`.
    fn truncate(&mut self, offset: i64) -> i64 {
        if offset <= self.start() {
            self.segs = vec![MSeg {
                base: offset,
                batches: Vec::new(),
            }];
            return offset;
        }
        let i = self
            .segs
            .iter()
            .rposition(|s| s.base <= offset)
            .unwrap_or(0);
        self.segs.truncate(i + 1);
        self.segs[i].batches.retain(|b| b.last < offset);
        self.end()
    }
    /// The producers a rebuild knows (their last batch is in the newest two segments),
    /// with that batch.
    fn known_producers(&self) -> Vec<MBatch> {
        let mut last: Vec<(usize, MBatch)> = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            for b in &s.batches {
                if let Some((pid, _)) = b.producer {
                    last.retain(|(_, x)| x.producer.map(|p| p.0) != Some(pid));
                    last.push((i, b.clone()));
                }
            }
        }
        let newest = self.segs.len().saturating_sub(2);
        last.into_iter()
            .filter(|(i, _)| *i >= newest)
            .map(|(_, b)| b)
            .collect()
    }
}

/// One batch of `n` records at `base` with `value`-byte values; idempotent when
/// `producer` is (pid, first sequence) (CRC redone after setting them).
fn mk_batch(
    base: i64,
    n: usize,
    value: usize,
    ts: i64,
    tag: u8,
    producer: Option<(i64, i32)>,
) -> Bytes {
    let v = vec![tag; value];
    let recs: Vec<SimpleRecord<'_>> = (0..n)
        .map(|i| SimpleRecord {
            key: Some(b"k"),
            value: Some(&v),
            timestamp: ts + i as i64,
            headers: &[],
        })
        .collect();
    let mut b = build_batch(base, &recs).to_vec();
    if let Some((pid, seq)) = producer {
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(b)
}

fn layout(c: &Case) -> Model {
    let mut segs = Vec::new();
    let mut cursor = c.base0 as i64;
    let mut seqs = [0i32; 3];
    let mut k = 0i64;
    for s in &c.segs {
        // bases strictly increase, also after an empty segment
        let base = match segs.last() {
            Some(MSeg { base: prev, .. }) => (cursor + s.lead as i64).max(prev + 1),
            None => cursor + s.lead as i64,
        };
        cursor = base;
        let mut batches = Vec::new();
        for b in &s.batches {
            let first = cursor + b.gap as i64;
            let n = b.records as usize;
            let producer = b.producer.map(|p| {
                let p = p as usize;
                let seq = seqs[p];
                seqs[p] += n as i32;
                (PIDS[p], seq)
            });
            let ts = CLOCK0 + k * 10;
            k += 1;
            let bytes = mk_batch(first, n, b.value as usize, ts, k as u8, producer);
            batches.push(MBatch {
                base: first,
                last: first + n as i64 - 1,
                bytes,
                ts,
                producer,
            });
            cursor = first + n as i64;
        }
        segs.push(MSeg { base, batches });
    }
    Model { segs }
}

fn seg_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Damage the written files; returns the model recovery must give.
fn apply_damage(dir: &Path, m: &Model, d: &Damage) -> Model {
    let mut m = m.clone();
    let n = m.segs.len();
    match *d {
        Damage::None => {}
        Damage::Torn(frac) => {
            let last = &mut m.segs[n - 1];
            let size = last.size();
            let cut = size * frac as u64 / u16::MAX as u64;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(seg_file(dir, last.base, "log"))
                .unwrap();
            f.set_len(cut).unwrap();
            let mut pos = 0;
            last.batches.retain(|b| {
                pos += b.bytes.len() as u64;
                pos <= cut
            });
        }
        Damage::Zeros(k) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(seg_file(dir, m.segs[n - 1].base, "log"))
                .unwrap();
            f.write_all(&vec![0u8; k as usize]).unwrap();
        }
        Damage::Flip { seg, batch, at } => {
            let victims: Vec<usize> = (0..n - 1)
                .filter(|&i| !m.segs[i].batches.is_empty())
                .collect();
            if victims.is_empty() {
                return m;
            }
            let i = victims[seg as usize % victims.len()];
            let s = &mut m.segs[i];
            let j = batch as usize % s.batches.len();
            let pos: u64 = s.batches[..j].iter().map(|b| b.bytes.len() as u64).sum();
            let len = s.batches[j].bytes.len() as u64;
            // inside the CRC: from the attributes on
            let at = pos + 21 + at as u64 % (len - 21);
            let path = seg_file(dir, s.base, "log");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at as usize] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
            std::fs::remove_file(seg_file(dir, s.base, "timeindex")).unwrap();
            s.batches.truncate(j);
            m.segs.truncate(i + 1);
        }
    }
    m
}

fn config(c: &Case) -> LogConfig {
    LogConfig {
        index_interval_bytes: c.interval,
        retention_ms: -1,
        retention_bytes: -1,
        ..Default::default() // 1 GiB segments: appends stay in the last segment
    }
}

fn options(c: &Case) -> ShardStorageOptions {
    ShardStorageOptions {
        cache_bytes: if c.cache { 1 << 20 } else { 0 },
        ..Default::default()
    }
}

/// Everything a reader can see matches `m`.
async fn check(log: &PartitionLog, m: &Model, ctx: &str) {
    assert_eq!(log.log_start_offset(), m.start(), "{ctx}: log start");
    assert_eq!(log.log_end_offset(), m.end(), "{ctx}: log end");
    let end = m.end();
    // a read past every batch (the log may end in a gap) finds nothing
    if let Some(o) = m.batches().last().map(|b| b.last + 1).filter(|&o| o < end) {
        assert!(
            log.read(o, end, 1, true).await.unwrap().is_empty(),
            "{ctx}: read {o}"
        );
    }
    for o in m.probes() {
        let got = log
            .read(o, end, 1, true)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: read {o}: {e}"));
        let want = m.first_from(o).unwrap();
        assert_eq!(got.len(), 1, "{ctx}: read {o}");
        assert_eq!(
            got[0], want.bytes,
            "{ctx}: read at {o} (want batch {})",
            want.base
        );
    }
    // sequential, in small fetches (read-ahead windows open for cold readers)
    let mut next = m.start();
    let mut seen = Vec::new();
    while m.first_from(next).is_some() {
        let got = log.read(next, end, 700, true).await.unwrap();
        assert!(!got.is_empty(), "{ctx}: nothing at {next}");
        for b in got {
            let h = RecordBatchHeader::parse(&b).unwrap();
            next = h.last_offset() + 1;
            seen.push(b);
        }
    }
    let want: Vec<Bytes> = m.batches().map(|b| b.bytes.clone()).collect();
    assert_eq!(seen, want, "{ctx}: sequential read");
    if let Some(b) = m.batches().nth(m.batches().count() / 2) {
        let n = b.last - b.base;
        let (o, ts) = (b.base + n, b.ts + n);
        assert_eq!(
            log.offset_for_timestamp(ts).await.unwrap(),
            Some((o, ts)),
            "{ctx}: offset_for_timestamp"
        );
    }
}

/// The rebuilt producer state knows the producers of the newest segments: a retry of a
/// producer's last batch is a duplicate with its original offsets, the next sequence is
/// appended, a sequence further on is refused. Returns the model with the appends.
async fn check_producers(log: &PartitionLog, mut m: Model, ctx: &str) -> Model {
    let known = m.known_producers();
    log.load_producer_state().await.unwrap();
    assert!(log.producer_state_loaded(), "{ctx}: async load");
    for (i, b) in known.into_iter().enumerate() {
        let ts = CLOCK0 + 5_000 + 10 * i as i64;
        let (pid, seq) = b.producer.unwrap();
        let n = (b.last - b.base + 1) as i32;
        let dup = log.append(b.bytes.clone(), CLOCK0).unwrap();
        assert!(
            dup.duplicate,
            "{ctx}: retry of producer {pid}'s batch {}",
            b.base
        );
        assert_eq!(
            (dup.base_offset, dup.last_offset),
            (b.base, b.last),
            "{ctx}"
        );
        let skip = mk_batch(0, 1, 5, CLOCK0, 1, Some((pid, seq + n + 1)));
        assert!(
            matches!(
                log.append(skip, CLOCK0),
                Err(StorageError::OutOfOrderSequence { .. })
            ),
            "{ctx}: producer {pid} skipping a sequence"
        );
        let next = mk_batch(0, 2, 5, ts, 2, Some((pid, seq + n)));
        let info = log.append(next.clone(), CLOCK0).unwrap();
        assert!(!info.duplicate);
        assert_eq!(info.base_offset, m.end(), "{ctx}: appended at the log end");
        push_appended(&mut m, next, info, ts, Some((pid, seq + n)));
    }
    m
}

fn push_appended(
    m: &mut Model,
    bytes: Bytes,
    info: AppendInfo,
    ts: i64,
    producer: Option<(i64, i32)>,
) {
    let mut v = bytes.to_vec();
    set_base_offset(&mut v, info.base_offset);
    let last = m.segs.len() - 1;
    m.segs[last].batches.push(MBatch {
        base: info.base_offset,
        last: info.last_offset,
        bytes: Bytes::from(v),
        ts,
        producer,
    });
}

/// Session 1: write the segments, damage them, open, check, append; close or crash.
async fn first_session(dir: PathBuf, c: Case) -> Model {
    let m = layout(&c);
    let n = m.segs.len();
    for (i, s) in m.segs.iter().enumerate() {
        let mut w = SegmentWriter::create(&dir, s.base, c.interval)
            .await
            .unwrap();
        for b in &s.batches {
            w.append(&b.bytes).await.unwrap();
        }
        assert_eq!(w.size(), s.size());
        let end = if i + 1 < n {
            m.segs[i + 1].base
        } else {
            w.next_offset()
        };
        w.finish(end).await.unwrap();
    }
    let m = apply_damage(&dir, &m, &c.damage);
    let shard = ShardStorage::start(options(&c));
    let log = PartitionLog::open(&shard, dir.clone(), config(&c))
        .await
        .unwrap();
    check(&log, &m, "recovered").await;
    let mut m = check_producers(&log, m, "recovered").await;
    let plain = mk_batch(0, 3, 20, CLOCK0 + 9_000, 3, None);
    let info = log.append(plain.clone(), CLOCK0).unwrap();
    assert_eq!(info.base_offset, m.end());
    push_appended(&mut m, plain, info, CLOCK0 + 9_000, None);
    log.wait_durable(info.last_offset).await.unwrap();
    check(&log, &m, "after appends").await;
    if c.clean_close {
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    } // else: stop as a crash would (no close, no marker)
    m
}

/// Session 2: reopen; check; retention; truncation; close.
async fn second_session(dir: PathBuf, c: Case, mut m: Model) -> Model {
    let shard = ShardStorage::start(options(&c));
    let log = PartitionLog::open(&shard, dir.clone(), config(&c))
        .await
        .unwrap();
    check(&log, &m, "reopened").await;
    if let Some(r) = c.retention {
        let total: u64 = m.segs.iter().map(MSeg::size).sum();
        let bytes = total * r as u64 / u16::MAX as u64;
        log.set_config(LogConfig {
            retention_bytes: bytes as i64,
            ..config(&c)
        });
        log.enforce_retention(CLOCK0).await.unwrap();
        m.retain_bytes(bytes);
        check(&log, &m, &format!("retention.bytes {bytes}")).await;
        if m.start() > 0 {
            assert!(matches!(
                log.read(m.start() - 1, m.end(), 1, true).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
        }
    }
    if let Some(t) = c.truncate {
        let span = (m.end() - m.start()) as u64;
        let offset = m.start() + (span * t as u64 / u16::MAX as u64) as i64;
        let want = m.truncate(offset);
        let got = log.truncate_from(offset).await.unwrap();
        assert_eq!(got, want, "truncate_from({offset})");
        assert!(got <= offset);
        check(&log, &m, &format!("truncated at {offset}")).await;
    }
    log.close().await.unwrap();
    shard.shutdown().await.unwrap();
    m
}

fn run_case(c: Case) {
    let tmp = tempdir();
    let dir = tmp.path().join("gaps-0");
    let (d, c1) = (dir.clone(), c.clone());
    let m = run(move || async move { first_session(d, c1).await });
    let (d, c2) = (dir.clone(), c.clone());
    let m = run(move || async move { second_session(d, c2, m).await });
    // after a clean close everything is trusted without a scan: the same log again
    let c3 = c.clone();
    run(move || async move {
        let shard = ShardStorage::start(options(&c3));
        let log = PartitionLog::open(&shard, dir, config(&c3)).await.unwrap();
        check(&log, &m, "reopened after close").await;
        let plain = mk_batch(0, 1, 1, CLOCK0, 4, None);
        assert_eq!(log.append(plain, CLOCK0).unwrap().base_offset, m.end());
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
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
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn gapped_logs_recover_read_and_change_like_their_model(c in case()) {
        run_case(c);
    }
}

/// A read at an offset in the gap at the end of a sealed segment, when the next batch is
/// still only in the pending queue (appended after open, not yet flushed), answers it.
#[test]
fn a_read_in_a_gap_before_a_pending_batch_finds_it() {
    let tmp = tempdir();
    let dir = tmp.path().join("gap-pending");
    run(move || async move {
        let a = mk_batch(10, 2, 50, CLOCK0, 1, None);
        let mut w = SegmentWriter::create(&dir, 0, 4096).await.unwrap();
        w.append(&a).await.unwrap();
        assert_eq!(w.next_offset(), 12);
        // a batch below the segment's next offset is refused
        assert!(w
            .append(&mk_batch(11, 1, 1, CLOCK0, 2, None))
            .await
            .is_err());
        w.finish(100).await.unwrap();
        SegmentWriter::create(&dir, 100, 4096)
            .await
            .unwrap()
            .finish(100)
            .await
            .unwrap();
        // an existing segment is not overwritten
        assert!(SegmentWriter::create(&dir, 0, 4096).await.is_err());
        let shard = ShardStorage::start(ShardStorageOptions {
            cache_bytes: 0,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, dir.clone(), LogConfig::default())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 100));
        let b = log
            .append(mk_batch(0, 1, 5, CLOCK0, 3, None), CLOCK0)
            .unwrap();
        assert_eq!(b.base_offset, 100);
        for o in [0, 5, 12, 50, 99, 100] {
            let got = log.read(o, 101, 1 << 20, true).await.unwrap();
            let first = RecordBatchHeader::parse(&got[0]).unwrap().base_offset;
            assert_eq!(first, if o < 12 { 10 } else { 100 }, "read at {o}");
        }
        log.wait_durable(100).await.unwrap();
        // a cut in the gap keeps the batch before it and ends the log there
        assert_eq!(log.truncate_from(50).await.unwrap(), 12);
        assert_eq!(log.log_end_offset(), 12);
        assert_eq!(
            log.append(mk_batch(0, 1, 5, CLOCK0, 4, None), CLOCK0)
                .unwrap()
                .base_offset,
            12
        );
        log.close().await.unwrap();
        shard.shutdown().await.unwrap();
    });
}
