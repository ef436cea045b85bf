//! The cleaner across kill -9: a child process (this test binary, re-run on the ignored
//! `compaction_child` entry) appends keyed records (every codec, some tombstones) to a
//! compacted log with tiny segments and runs a cleaning pass after every few batches,
//! printing the durable offset as it goes; the parent SIGKILLs it at a random moment
//! (often inside a pass or its swap), reopens the log without a clean shutdown and checks:
//! offsets increase, every record is the one appended at its offset (key and value are
//! functions of the offset), every key's latest durable record is there (or a newer one of
//! that key), and nothing a crashed swap left (`.cleaned`, `.swap`) remains. Then the next
//! round continues the log. Rounds alternate between the `journal` and `segment` flush
//! modes (journal replay must not write a cleaned-away segment's old bytes back).

mod common;
use common::{
    all_records, child_crash_opts, crash_opts, kv_batch, run, spawn_crash_child, tempdir, xorshift,
    Rec, CRASH_SYNC_ENV, CRASH_SYNC_MODES,
};
use sluice_storage::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const KEYS: i64 = 23;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
        ..Default::default()
    }
}

fn key_of(offset: i64) -> Vec<u8> {
    format!("key-{}", offset.wrapping_mul(7919) % KEYS).into_bytes()
}

fn value_of(offset: i64) -> Option<Vec<u8>> {
    (offset % 11 != 5).then(|| format!("value-of-{offset}").into_bytes())
}

#[test]
#[ignore = "child process of kill9_during_cleaning_keeps_the_latest_records"]
fn compaction_child() {
    let Ok(dir) = std::env::var("SLUICE_COMPACT_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let opts = ShardStorageOptions {
        cleaner_enabled: false,
        ..child_crash_opts(dir.parent().unwrap())
    };
    run(move || async move {
        let shard = ShardStorage::start(opts);
        let log = PartitionLog::open(&shard, dir, config()).await.unwrap();
        for i in 0u64.. {
            let base = log.log_end_offset();
            let n = 1 + (i % 4) as i64;
            let recs: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                (base..base + n).map(|o| (key_of(o), value_of(o))).collect();
            let refs: Vec<(&[u8], Option<&[u8]>)> =
                recs.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            let info = log
                .append(kv_batch(&refs, 1000 + base, (i % 5) as u8, None), 0)
                .unwrap();
            assert_eq!(info.base_offset, base);
            let l = log.clone();
            glommio::spawn_local(async move {
                if l.wait_durable(info.last_offset).await.is_ok() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "D {}", info.last_offset);
                    let _ = out.flush();
                }
            })
            .detach();
            if i % 8 == 7 {
                log.wait_durable(info.last_offset).await.unwrap();
                println!("P");
                log.compact(1_000_000).await.unwrap();
                println!("p");
            }
        }
    });
}

#[test]
fn kill9_during_cleaning_keeps_the_latest_records() {
    let dir = tempdir();
    let path = dir.path().join("compact-crash");
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut durable_end = 0i64;
    let mut kills_in_pass = 0;
    let mut replayed_sets = 0;
    for round in 0..ROUNDS {
        let mode = CRASH_SYNC_MODES[round % 2];
        let mut child = spawn_crash_child(
            "compaction_child",
            &[
                ("SLUICE_COMPACT_DIR", path.display().to_string()),
                (CRASH_SYNC_ENV, mode.to_string()),
            ],
        );
        let run_for = Duration::from_millis(100 + xorshift(&mut rng) % 400);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut first_seen = None;
        // (durable end, the child is inside a pass)
        let mut state = (durable_end, false);
        let note = |l: &str, st: &mut (i64, bool)| {
            if let Some(o) = l
                .strip_prefix("D ")
                .and_then(|o| o.trim().parse::<i64>().ok())
            {
                st.0 = st.0.max(o + 1);
            }
            match l {
                "P" => st.1 = true,
                "p" => st.1 = false,
                _ => {}
            }
        };
        loop {
            match child.lines.recv_timeout(Duration::from_millis(5)) {
                Ok(l) => note(&l, &mut state),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            if first_seen.is_none() && state.0 > 0 {
                first_seen = Some(Instant::now());
            }
            if first_seen.is_some_and(|t| t.elapsed() >= run_for) || Instant::now() > deadline {
                break;
            }
        }
        for l in child.kill9() {
            note(&l, &mut state);
        }
        durable_end = state.0;
        kills_in_pass += usize::from(state.1);
        assert!(durable_end > 0, "round {round}: the child reported nothing");
        let p = path.clone();
        let (opts, sets) = crash_opts(dir.path(), mode);
        replayed_sets += sets;
        run(move || async move {
            let shard = ShardStorage::start(ShardStorageOptions {
                cleaner_enabled: false,
                ..opts
            });
            let log = PartitionLog::open(&shard, p.clone(), config())
                .await
                .unwrap();
            let leftovers: Vec<String> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
            assert!(log.log_end_offset() >= durable_end, "round {round}");
            let recs: Vec<Rec> = all_records(&log).await;
            let mut prev = -1;
            let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for r in &recs {
                assert!(r.0 > prev, "round {round}: offset {} after {prev}", r.0);
                prev = r.0;
                assert_eq!(
                    (r.2.clone(), r.3.clone()),
                    (Some(key_of(r.0)), value_of(r.0)),
                    "round {round}: record {} is not the one appended there",
                    r.0
                );
                latest.insert(key_of(r.0), r.0);
            }
            // every key's latest durable record, or a newer one of the key, is there
            let mut want: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for o in 0..durable_end {
                want.insert(key_of(o), o);
            }
            for (k, o) in &want {
                let got = latest.get(k).copied();
                assert!(
                    got.is_some_and(|g| g >= *o),
                    "round {round}: latest of {} was {o}, the log has {got:?}",
                    String::from_utf8_lossy(k)
                );
            }
            eprintln!(
                "round {round}: {} records of {} offsets, clean to {}; {kills_in_pass} kills so far inside a pass",
                recs.len(),
                log.log_end_offset(),
                log.clean_offset()
            );
            if round % 3 == 0 {
                log.close().await.unwrap();
            }
            shard.shutdown().await.unwrap();
        });
    }
    eprintln!("{replayed_sets} journal record sets replayed");
    assert!(
        replayed_sets > 0,
        "no journal round left anything to replay"
    );
}
