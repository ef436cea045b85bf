//! Helpers shared by the storage integration tests: a glommio runner, temp dirs on a
//! filesystem that supports O_DIRECT (under the cargo target dir), batch builders.
#![allow(dead_code, unreachable_pub)]

pub mod txn;

use bytes::Bytes;
use sluice_proto::batch::{build_batch, SimpleRecord};
use std::future::Future;

/// Runs `f` on a glommio executor with 4 blocking helper threads, as a broker shard has
/// several (`storage.blocking.threads`): the tests see calls on different directories run
/// at once.
pub fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::default()
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(4))
        .spawn(f)
        .expect("spawn executor") // ok: test setup
        .join()
        .expect("executor panicked") // ok: test setup
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir") // ok: test setup
}

/// One batch with `n` records of `size`-byte values; timestamps start at `ts`.
pub fn batch(n: usize, size: usize, ts: i64, tag: u8) -> Bytes {
    let vals: Vec<Vec<u8>> = (0..n)
        .map(|i| vec![tag.wrapping_add(i as u8); size])
        .collect();
    let recs: Vec<SimpleRecord<'_>> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| SimpleRecord {
            key: Some(b"k"),
            value: Some(v),
            timestamp: ts + i as i64,
            headers: &[],
        })
        .collect();
    build_batch(0, &recs)
}

/// `batch` from idempotent producer `pid`/`epoch` with first sequence `seq` (CRC redone).
pub fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize, tag: u8) -> Bytes {
    let mut v = batch(n, 10, 1000, tag).to_vec();
    v[43..51].copy_from_slice(&pid.to_be_bytes());
    v[51..53].copy_from_slice(&epoch.to_be_bytes());
    v[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// A copy of this test binary running one `#[ignore]`d test as a crash victim. Its stdout
/// lines (the harness's own prefix on the first one removed) arrive on `lines`; `kill9`
/// SIGKILLs it (no flush, no marker), and so does Drop.
pub struct CrashChild {
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<()>>,
    pub lines: std::sync::mpsc::Receiver<String>,
}

/// Starts the ignored test `test` of this binary in a child process with `env` set.
pub fn spawn_crash_child(test: &str, env: &[(&str, String)]) -> CrashChild {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    // the test harness writes "test NAME ... " before the test runs, without a newline:
    // the child's first line comes after it (and would not be recognised)
    let harness = format!("test {test} ... ");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = match line.strip_prefix(&harness) {
                Some(own) => own.to_string(),
                None => line,
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    CrashChild {
        child,
        reader: Some(reader),
        lines,
    }
}

impl CrashChild {
    /// SIGKILLs and reaps the child; returns the lines it printed that were not yet taken.
    pub fn kill9(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.lines.try_iter().collect()
    }
}

impl Drop for CrashChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flush modes a crash test rotates its rounds through, by round number: the broker's
/// default (`journal`, every cycle journaled) and the library's (`segment`).
pub const CRASH_SYNC_MODES: [&str; 2] = ["journal", "segment"];

/// The env variable that passes a round's flush mode to its crash child.
pub const CRASH_SYNC_ENV: &str = "SLUICE_CRASH_SYNC";

/// The crash tests' journal files: small, so checkpoints and epoch switches happen within
/// a round (a cycle journals at most a quarter of one; the rest waits for the next).
pub const CRASH_JOURNAL_BYTES: u64 = 16 << 20;

/// Shard options for logs whose journals live under `root`, in flush mode `mode`
/// (`journal`: every cycle journaled; `segment`; `filesystem`), after
/// replaying the journals there, as the broker does before any shard opens a log. Also
/// returns how many record sets that replay wrote back into segments.
pub fn crash_opts(
    root: &std::path::Path,
    mode: &str,
) -> (sluice_storage::ShardStorageOptions, usize) {
    let replayed = sluice_storage::replay_journals(root).unwrap(); // ok: test
    let opts = sluice_storage::ShardStorageOptions {
        flush_sync: sluice_storage::FlushSync::parse(mode).unwrap(), // ok: test
        journal_dir: Some(root.to_path_buf()),
        journal_bytes: CRASH_JOURNAL_BYTES,
        journal_min_logs: 1,
        ..Default::default()
    };
    (opts, replayed.record_sets)
}

/// `crash_opts` for a crash child: the mode its parent passed in `CRASH_SYNC_ENV`
/// (`segment` when unset).
pub fn child_crash_opts(root: &std::path::Path) -> sluice_storage::ShardStorageOptions {
    let mode = std::env::var(CRASH_SYNC_ENV).unwrap_or_else(|_| "segment".into());
    crash_opts(root, &mode).0
}

/// Removes the producer-state snapshots of the log in `dir`, so the next load rebuilds
/// from the log's tail as for a log written before snapshots existed.
pub fn remove_snapshots(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// xorshift64: the crash tests' cheap, seeded source of kill moments.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One record of a log as a test sees it: (offset, timestamp, key, value).
pub type Rec = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of a stored batch, any codec (decompressed, then decoded).
pub fn records_of(batch: &[u8]) -> Vec<Rec> {
    use sluice_proto::batch::{decode_records, records_section, RECORD_BATCH_OVERHEAD};
    let section = records_section(batch, 64 << 20).unwrap(); // ok: test
    let mut b = batch[..RECORD_BATCH_OVERHEAD].to_vec();
    b.extend_from_slice(&section);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[22] &= !0x07;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    decode_records(&Bytes::from(b))
        .unwrap() // ok: test
        .into_iter()
        .map(|r| {
            (
                r.offset,
                r.timestamp,
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()),
            )
        })
        .collect()
}

/// A batch of `records` ((key, value or None for a tombstone), timestamps from `ts`),
/// compressed with `codec` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), idempotent when
/// `producer` is (pid, epoch, first sequence).
pub fn kv_batch(
    records: &[(&[u8], Option<&[u8]>)],
    ts: i64,
    codec: u8,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    use sluice_proto::batch::RECORD_BATCH_OVERHEAD;
    let recs: Vec<SimpleRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| SimpleRecord {
            key: Some(k),
            value: *v,
            timestamp: ts + i as i64,
            headers: &[],
        })
        .collect();
    let plain = build_batch(0, &recs);
    let mut b = plain[..RECORD_BATCH_OVERHEAD].to_vec();
    b.extend_from_slice(
        &sluice_proto::decompress::compress(codec, &plain[RECORD_BATCH_OVERHEAD..]).unwrap(), // ok: test
    );
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[22] |= codec;
    if let Some((pid, epoch, seq)) = producer {
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

// ---- compacted logs ----

/// Every batch of the log, in order (read from its start to its end).
pub async fn all_batches(log: &sluice_storage::PartitionLog) -> Vec<bytes::Bytes> {
    let end = log.log_end_offset();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < end {
        let got = log.read(next, end, 1 << 20, true).await.unwrap();
        if got.is_empty() {
            break;
        }
        for b in got {
            next = sluice_proto::batch::RecordBatchHeader::parse(&b)
                .unwrap()
                .last_offset()
                + 1;
            out.push(b);
        }
    }
    out
}

pub async fn all_records(log: &sluice_storage::PartitionLog) -> Vec<Rec> {
    all_batches(log)
        .await
        .iter()
        .flat_map(|b| records_of(b))
        .collect()
}

pub fn compact_cfg() -> sluice_storage::LogConfig {
    sluice_storage::LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        cleanup_policy: sluice_storage::CleanupPolicy::parse("compact").unwrap(),
        delete_retention_ms: 1000,
        ..Default::default()
    }
}

pub fn quiet_shard() -> sluice_storage::ShardStorageOptions {
    sluice_storage::ShardStorageOptions {
        cleaner_enabled: false,
        ..Default::default()
    }
}

/// Appends `n` single-record batches of keys `key-0..key-{keys}` from `*next`, durable.
pub async fn fill(log: &sluice_storage::PartitionLog, next: &mut i64, n: i64, keys: i64) {
    for _ in 0..n {
        let i = *next;
        let k = format!("key-{}", i % keys).into_bytes();
        let v = format!("value-{i}").into_bytes();
        log.append(
            kv_batch(&[(&k, Some(&v))], 1000 + i, (i % 5) as u8, None),
            5000,
        )
        .unwrap();
        *next += 1;
    }
    log.wait_durable(*next - 1).await.unwrap();
}

/// The latest (offset, value) of every key among `recs`.
pub fn latest_of(recs: &[Rec]) -> std::collections::BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut out = std::collections::BTreeMap::new();
    for r in recs {
        out.insert(r.2.clone().unwrap(), (r.0, r.3.clone()));
    }
    out
}

/// After a crash: every batch a child reported durable (`expect`: base offset → (last
/// offset, CRC-32C of the batch)) reads back unchanged at its offsets, the log end is past
/// the last of them, and the log from its start to its end is whole batches without gaps.
/// `what` names the round and log in a failure.
pub async fn check_durable_batches(
    log: &sluice_storage::PartitionLog,
    expect: &std::collections::BTreeMap<i64, (i64, u32)>,
    what: &str,
) {
    let end = log.log_end_offset();
    if let Some((_, &(last, _))) = expect.iter().next_back() {
        assert!(end > last, "{what}: end {end} lost durable offset {last}");
    }
    for (&base, &(last, crc)) in expect {
        let b = log.read(base, end, 1, true).await.unwrap();
        let h = sluice_proto::batch::RecordBatchHeader::parse(&b[0]).unwrap();
        assert_eq!((h.base_offset, h.last_offset()), (base, last), "{what}");
        assert_eq!(crc32c::crc32c(&b[0]), crc, "{what}: batch {base} changed");
    }
    let mut next = log.log_start_offset();
    while next < end {
        let bs = log.read(next, end, 1 << 20, true).await.unwrap();
        for b in bs {
            let h = sluice_proto::batch::validate_batch(&b).unwrap();
            assert_eq!(h.base_offset, next, "{what}: gap");
            next = h.last_offset() + 1;
        }
    }
}

/// What crash children report durable, by log: base offset → (last offset, CRC-32C of
/// the stored batch).
pub type Durable = Vec<std::collections::BTreeMap<i64, (i64, u32)>>;

/// Notes a child's `D <log> <base> <last> <crc>` line in `durable` (other lines are not
/// reports and are skipped).
pub fn record_durable(durable: &mut Durable, line: &str) {
    let mut it = line.split_whitespace();
    if it.next() != Some("D") {
        return;
    }
    let v: Vec<i64> = it.filter_map(|x| x.parse().ok()).collect();
    if v.len() == 4 {
        durable[v[0] as usize].insert(v[1], (v[2], v[3] as u32));
    }
}
