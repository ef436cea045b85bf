//! Property test of the log cleaner: random produce (keys from a small or a large set,
//! tombstones, every codec, idempotent producers) / clock advance / compaction pass (some
//! stopped at a step of the swap as a crash would: `SwapStep`) / crash (no close) /
//! clean reopen sequences on a real compacted `PartitionLog` with tiny segments and a
//! small or tiny dedupe buffer (passes that stop where the key map fills), checked after
//! every step, and at every step of a swap that goes on, against a model:
//! - the log holds only records that were appended, each at its original offset, with its
//!   timestamp, key and value; no offset twice; the log start and end do not move;
//! - every key's latest record is there, at its offset; a latest tombstone goes only once
//!   `delete.retention.ms` has passed since the first pass that cleaned past it;
//! - every record at or above the furthest point a pass cleaned to (and the log's
//!   `clean_offset`, which is never above it) is untouched.
//!
//! Cases: 32 (override with PROPTEST_CASES).

mod common;
use common::{kv_batch, records_of, run, tempdir, Rec};
use proptest::prelude::*;
use sluice_proto::batch::RecordBatchHeader;
use sluice_storage::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

const CLOCK0: i64 = 1_700_000_000_000;
const RETENTION: i64 = 5_000;
const PIDS: [i64; 2] = [501, 502];

#[derive(Clone, Debug)]
struct BatchSpec {
    /// (key index, tombstone) per record.
    records: Vec<(u16, bool)>,
    codec: u8,
    producer: Option<u8>,
}

#[derive(Clone, Debug)]
enum Op {
    Produce(Vec<BatchSpec>),
    Advance(u16),
    /// A pass; with a step, stopped there as a crash would (the session ends).
    Compact(Option<SwapStep>),
    Crash,
    Reopen,
}

#[derive(Clone, Debug)]
struct Cfg {
    segment_bytes: u64,
    dedupe_bytes: usize,
    /// Read the whole log at every step of every swap.
    read_in_swap: bool,
}

fn step() -> impl Strategy<Value = SwapStep> {
    prop_oneof![
        Just(SwapStep::Cleaned),
        Just(SwapStep::HalfCommitted),
        Just(SwapStep::Committed),
        Just(SwapStep::Switched),
        Just(SwapStep::HalfRemoved),
        Just(SwapStep::Removed),
        Just(SwapStep::HalfInstalled),
        Just(SwapStep::Installed),
    ]
}

fn batch_spec(keys: u16) -> impl Strategy<Value = BatchSpec> {
    (
        prop::collection::vec((0..keys, prop::bool::weighted(0.15)), 1..6),
        prop_oneof![3 => Just(0u8), 1 => 1u8..=4],
        prop::option::weighted(0.3, 0u8..2),
    )
        .prop_map(|(records, codec, producer)| BatchSpec {
            records,
            codec,
            producer,
        })
}

fn op(keys: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(batch_spec(keys), 1..8).prop_map(Op::Produce),
        3 => (0u16..4000).prop_map(Op::Advance),
        5 => Just(Op::Compact(None)),
        3 => step().prop_map(|s| Op::Compact(Some(s))),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn case() -> impl Strategy<Value = (Cfg, Vec<Op>)> {
    (
        prop_oneof![Just(5u16), Just(12), Just(150)],
        prop_oneof![Just(400u64), Just(1500), Just(6000)],
        prop_oneof![Just(24 * 64usize), Just(1 << 20)],
        prop::bool::weighted(0.3),
    )
        .prop_flat_map(|(keys, segment_bytes, dedupe_bytes, read_in_swap)| {
            (
                Just(Cfg {
                    segment_bytes,
                    dedupe_bytes,
                    read_in_swap,
                }),
                prop::collection::vec(op(keys), 1..40),
            )
        })
}

/// One appended record as the model keeps it.
#[derive(Clone, Debug, PartialEq)]
struct MRec {
    ts: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct Model {
    now: i64,
    /// Every record appended, by offset.
    appended: BTreeMap<i64, MRec>,
    end: i64,
    /// (offset cleaned up to, time) of every pass whose swap completed, or completes at
    /// the next open (stopped after its commit point).
    passes: Vec<(i64, i64)>,
    seqs: [i32; 2],
}

impl Model {
    /// The furthest offset a pass cleaned up to.
    fn cleaned_to(&self) -> i64 {
        self.passes.iter().map(|p| p.0).max().unwrap_or(0)
    }
    /// When a pass first cleaned past `offset`.
    fn first_cleaned(&self, offset: i64) -> Option<i64> {
        self.passes
            .iter()
            .filter(|p| p.0 > offset)
            .map(|p| p.1)
            .min()
    }
    /// The latest record of every key, by offset.
    fn latest(&self) -> BTreeMap<Vec<u8>, i64> {
        let mut out = BTreeMap::new();
        for (&o, r) in &self.appended {
            out.insert(r.key.clone(), o);
        }
        out
    }
}

fn config(cfg: &Cfg) -> LogConfig {
    LogConfig {
        segment_bytes: cfg.segment_bytes,
        index_interval_bytes: 100,
        cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
        delete_retention_ms: RETENTION,
        ..Default::default()
    }
}

async fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let end = log.log_end_offset();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < end {
        let got = log.read(next, end, 1 << 16, true).await.unwrap();
        assert!(!got.is_empty(), "nothing read at {next} of {end}");
        for b in got {
            let h = RecordBatchHeader::parse(&b).unwrap();
            assert!(h.base_offset >= next || h.last_offset() >= next);
            next = h.last_offset() + 1;
            out.extend(records_of(&b));
        }
    }
    out
}

/// The model's checks on what a read of the whole log returned.
fn check_records(recs: &[Rec], m: &Model, cleaned_to: i64, ctx: &str) {
    let mut prev = -1;
    for r in recs {
        assert!(r.0 > prev, "{ctx}: offset {} after {prev}", r.0);
        prev = r.0;
        let want = m
            .appended
            .get(&r.0)
            .unwrap_or_else(|| panic!("{ctx}: {r:?} never appended"));
        assert_eq!(
            (r.1, r.2.as_ref(), r.3.as_ref()),
            (want.ts, Some(&want.key), want.value.as_ref()),
            "{ctx}: record {} changed",
            r.0
        );
    }
    let present: std::collections::BTreeSet<i64> = recs.iter().map(|r| r.0).collect();
    for (k, o) in m.latest() {
        let r = &m.appended[&o];
        if present.contains(&o) {
            continue;
        }
        let expired =
            r.value.is_none() && m.first_cleaned(o).is_some_and(|t| m.now >= t + RETENTION);
        assert!(
            expired,
            "{ctx}: the latest record of {:?} (offset {o}, tombstone: {}) is gone",
            String::from_utf8_lossy(&k),
            r.value.is_none()
        );
    }
    for &o in m.appended.range(cleaned_to..).map(|(o, _)| o) {
        assert!(
            present.contains(&o),
            "{ctx}: offset {o} >= {cleaned_to} was cleaned"
        );
    }
}

async fn check(log: &PartitionLog, m: &Model, ctx: &str) {
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (0, m.end),
        "{ctx}"
    );
    let cleaned_to = m.cleaned_to();
    assert!(
        log.clean_offset() <= cleaned_to.max(0),
        "{ctx}: clean offset {}",
        log.clean_offset()
    );
    check_records(&read_all(log).await, m, cleaned_to, ctx);
}

async fn session(dir: PathBuf, cfg: Cfg, mut m: Model, ops: Vec<Op>, n0: usize) -> Model {
    let shard = ShardStorage::start(ShardStorageOptions {
        cleaner_enabled: false,
        cleaner_dedupe_buffer_bytes: cfg.dedupe_bytes,
        cache_bytes: 1 << 16,
        ..Default::default()
    });
    let log = PartitionLog::open(&shard, dir, config(&cfg)).await.unwrap();
    check(&log, &m, &format!("open before op {n0}")).await;
    for (i, op) in ops.iter().enumerate() {
        let ctx = format!("op {} {op:?}", n0 + i);
        match op {
            Op::Produce(batches) => {
                for b in batches {
                    let recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = b
                        .records
                        .iter()
                        .enumerate()
                        .map(|(j, &(k, tomb))| {
                            let key = format!("key-{k}").into_bytes();
                            let value = (!tomb).then(|| format!("v{}-{j}", m.end).into_bytes());
                            (key, value)
                        })
                        .collect();
                    let refs: Vec<(&[u8], Option<&[u8]>)> =
                        recs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                    let producer = b.producer.map(|p| {
                        let p = p as usize;
                        let seq = m.seqs[p];
                        m.seqs[p] += recs.len() as i32;
                        (PIDS[p], 0i16, seq)
                    });
                    let data = kv_batch(&refs, m.now, b.codec, producer);
                    // an idempotent append needs the producer state (an open or a
                    // truncation leaves it unbuilt): a no-op when it is built
                    log.load_producer_state().await.unwrap();
                    let info = log
                        .append(data, m.now)
                        .unwrap_or_else(|e| panic!("{ctx}: append: {e}"));
                    assert!(!info.duplicate, "{ctx}");
                    assert_eq!(info.base_offset, m.end, "{ctx}");
                    for (j, (key, value)) in recs.into_iter().enumerate() {
                        let ts = m.now + j as i64;
                        m.appended.insert(m.end + j as i64, MRec { ts, key, value });
                    }
                    m.end = info.last_offset + 1;
                }
                log.wait_durable(m.end - 1).await.unwrap();
            }
            Op::Advance(ms) => m.now += *ms as i64,
            Op::Compact(stop) => {
                let hook_model = Rc::new(std::cell::RefCell::new(None::<i64>));
                let (hm, stop, log2, mm) = (hook_model.clone(), *stop, log.clone(), m.clone());
                let read_in_swap = cfg.read_in_swap;
                let ctx2 = ctx.clone();
                let hook: CleanerHook = Rc::new(move |step, bound| {
                    let (hm, log2, mm, ctx2) = (hm.clone(), log2.clone(), mm.clone(), ctx2.clone());
                    Box::pin(async move {
                        if step >= SwapStep::Committed {
                            *hm.borrow_mut() = Some(bound); // the swap happens, now or at open
                        }
                        if read_in_swap {
                            // readers during the swap: before the switch the old log, after
                            // it the cleaned one; the model allows both
                            let mut mm = mm;
                            if step >= SwapStep::Committed {
                                mm.passes.push((bound, mm.now));
                            }
                            let recs = read_all(&log2).await;
                            check_records(
                                &recs,
                                &mm,
                                mm.cleaned_to(),
                                &format!("{ctx2} at {step:?}"),
                            );
                        }
                        stop != Some(step)
                    })
                });
                log.set_cleaner_hook(Some(hook));
                let res = log.compact(m.now).await;
                log.set_cleaner_hook(None);
                let swapped = *hook_model.borrow();
                match (stop, res) {
                    (None, Ok(Some(p))) => m.passes.push((p.clean_offset, m.now)),
                    (None, Ok(None)) => assert!(swapped.is_none(), "{ctx}"),
                    (Some(_), Err(_)) => {
                        if let Some(bound) = swapped {
                            m.passes.push((bound, m.now));
                        }
                        // the crash: nothing is closed
                        return m;
                    }
                    (Some(_), Ok(None)) => {} // nothing to clean: the hook never ran
                    (_, other) => panic!("{ctx}: {other:?}"),
                }
            }
            Op::Crash => return m,
            Op::Reopen => {
                log.close().await.unwrap();
                shard.shutdown().await.unwrap();
                return m;
            }
        }
        check(&log, &m, &ctx).await;
    }
    log.close().await.unwrap();
    shard.shutdown().await.unwrap();
    m
}

fn run_case(cfg: Cfg, ops: Vec<Op>) {
    let tmp = tempdir();
    let dir = tmp.path().join("compacted-0");
    let mut m = Model {
        now: CLOCK0,
        appended: BTreeMap::new(),
        end: 0,
        passes: Vec::new(),
        seqs: [0; 2],
    };
    // one executor per session: a crash ends it without closing anything
    let mut sessions: Vec<Vec<Op>> = vec![Vec::new()];
    for op in ops {
        let ends = matches!(op, Op::Reopen | Op::Crash | Op::Compact(Some(_)));
        if let Some(s) = sessions.last_mut() {
            s.push(op);
        }
        if ends {
            sessions.push(Vec::new());
        }
    }
    let mut n0 = 0;
    for s in sessions {
        let (d, c, len) = (dir.clone(), cfg.clone(), s.len());
        m = run(move || async move { session(d, c, m, s, n0).await });
        n0 += len;
    }
    // a last open checks what the last session left
    let c = cfg.clone();
    run(move || async move {
        let shard = ShardStorage::start(ShardStorageOptions {
            cleaner_enabled: false,
            ..Default::default()
        });
        let log = PartitionLog::open(&shard, dir, config(&c)).await.unwrap();
        check(&log, &m, "final open").await;
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
        max_shrink_iters: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compacted_log_matches_model((cfg, ops) in case()) {
        run_case(cfg, ops);
    }
}
