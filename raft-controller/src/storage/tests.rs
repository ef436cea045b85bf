//! Unit tests of the raft storage: reload round trips, torn and corrupt tails, conflict
//! truncation, compaction behind a snapshot, snapshot install, and a crash at every disk
//! operation of a scripted history (on `MemFs`).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};

use super::{RaftStore, StoreConfig};
use crate::error::Error;
use crate::fs::StdFs;
use crate::memfs::MemFs;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: Bytes::from(format!("entry {index} term {term}")),
        ..Default::default()
    }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn small() -> StoreConfig {
    StoreConfig { segment_bytes: 200 }
}

fn open_std(dir: &Path) -> RaftStore {
    RaftStore::open(StdFs, dir, small()).unwrap() // ok: test
}

fn all(store: &RaftStore) -> Vec<Entry> {
    let (lo, hi) = (store.first_log_index(), store.last_log_index() + 1);
    store
        .entries(lo, hi, None, GetEntriesContext::empty(false))
        .unwrap() // ok: test
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap() // ok: test
        .map(|e| e.unwrap().path()) // ok: test
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_and_reload_round_trip() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    assert!(!s.is_initialized());
    s.bootstrap(&[3, 1, 2]).unwrap(); // ok: test
    s.set_hard_state(&hs(1, 0, 0)).unwrap(); // ok: test
    assert!(
        s.append(&entries(1, 1, 2)).is_err(),
        "a term is durable before its entries"
    );
    for i in (1..=30).step_by(3) {
        s.append(&entries(i, i + 2, 1)).unwrap(); // ok: test
    }
    s.set_hard_state(&hs(1, 2, 30)).unwrap(); // ok: test
    s.set_hard_state(&hs(2, 2, 30)).unwrap(); // ok: test
    s.append(&entries(31, 40, 2)).unwrap(); // ok: test
    assert!(s.segment_count() > 2, "small segments roll");
    let before = all(&s);
    drop(s);

    let mut s = open_std(dir.path());
    assert_eq!(all(&s), before);
    assert_eq!((s.first_log_index(), s.last_log_index()), (1, 40));
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 30); // ok: test
                                                                  // a commit index recorded in memory only is lost at reopen, unless persisted
    s.set_commit(35).unwrap(); // ok: test
    drop(s);
    let mut s = open_std(dir.path());
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 30); // ok: test
    s.set_commit(38).unwrap(); // ok: test
    assert!(s.persist_commit().unwrap()); // ok: test
    drop(s);
    let mut s = open_std(dir.path());
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 38); // ok: test
    let state = s.initial_state().unwrap(); // ok: test
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!((state.hard_state.term, state.hard_state.vote), (2, 2));
    assert_eq!(s.term(35).unwrap(), 2); // ok: test
    assert_eq!(s.term(0).unwrap(), 0); // ok: test
    assert!(s.bootstrap(&[1, 2, 3]).is_ok());
    assert!(s.bootstrap(&[1, 2]).is_err());
}

#[test]
fn torn_tail_mid_entry_yields_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.set_hard_state(&hs(1, 0, 0)).unwrap(); // ok: test
    s.append(&entries(1, 12, 1)).unwrap(); // ok: test
    let count = s.segment_count();
    drop(s);
    let last = segment_files(dir.path()).pop().unwrap(); // ok: test
    let len = std::fs::metadata(&last).unwrap().len(); // ok: test
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap() // ok: test
        .set_len(len - 5)
        .unwrap(); // ok: test

    let mut s = open_std(dir.path());
    assert_eq!(s.last_log_index(), 11);
    assert_eq!(all(&s), entries(1, 11, 1));
    assert_eq!(s.segment_count(), count);
    s.set_hard_state(&hs(2, 0, 0)).unwrap(); // ok: test
    s.append(&entries(12, 14, 2)).unwrap(); // ok: test
    drop(s);
    let s = open_std(dir.path());
    assert_eq!(s.last_log_index(), 14);
    assert_eq!(s.term(12).unwrap(), 2); // ok: test
}

#[test]
fn flipped_byte_in_last_segment_cuts_there() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.set_hard_state(&hs(1, 0, 0)).unwrap(); // ok: test
    s.append(&entries(1, 3, 1)).unwrap(); // ok: test
    s.append(&entries(4, 6, 1)).unwrap(); // ok: test
    assert_eq!(s.segment_count(), 1);
    drop(s);
    let seg = segment_files(dir.path()).pop().unwrap(); // ok: test
    let mut data = std::fs::read(&seg).unwrap(); // ok: test
    let frame = data.len() / 6;
    data[frame * 4 + 12] ^= 0x01; // inside entry 5
    std::fs::write(&seg, &data).unwrap(); // ok: test

    let s = open_std(dir.path());
    assert_eq!(all(&s), entries(1, 4, 1));
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, frame * 4); // ok: test
}

#[test]
fn damage_before_the_last_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.set_hard_state(&hs(1, 0, 0)).unwrap(); // ok: test
    for i in 1..=20 {
        s.append(&entries(i, i, 1)).unwrap(); // ok: test
    }
    drop(s);
    let first = segment_files(dir.path()).remove(0);
    let mut data = std::fs::read(&first).unwrap(); // ok: test
    data[10] ^= 0xff;
    std::fs::write(&first, &data).unwrap(); // ok: test
    let err = RaftStore::open(StdFs, dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn corrupt_state_file_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.set_hard_state(&hs(4, 1, 0)).unwrap(); // ok: test
    drop(s);
    let path = dir.path().join("raft-state");
    let mut data = std::fs::read(&path).unwrap(); // ok: test
    let last = data.len() - 1;
    data[last] ^= 0x10;
    std::fs::write(&path, &data).unwrap(); // ok: test
    let err = RaftStore::open(StdFs, dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn conflicting_tail_is_replaced_across_segments() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.set_hard_state(&hs(2, 0, 0)).unwrap(); // ok: test
    for i in 1..=20 {
        s.append(&entries(i, i, 1)).unwrap(); // ok: test
    }
    let segments = s.segment_count();
    s.append(&entries(8, 9, 2)).unwrap(); // ok: test
    assert!(s.segment_count() < segments);
    assert_eq!(s.last_log_index(), 9);
    let mut want = entries(1, 7, 1);
    want.extend(entries(8, 9, 2));
    assert_eq!(all(&s), want);
    s.set_hard_state(&hs(2, 0, 7)).unwrap(); // ok: test
    assert!(
        s.append(&entries(7, 7, 3)).is_err(),
        "committed entries are kept"
    );
    assert!(s.append(&entries(11, 11, 3)).is_err(), "gaps are refused");
    drop(s);
    assert_eq!(all(&open_std(dir.path())), want);
}

#[test]
fn compaction_behind_a_snapshot() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.bootstrap(&[1]).unwrap(); // ok: test
    s.set_hard_state(&hs(3, 1, 0)).unwrap(); // ok: test
    for i in 1..=100 {
        s.append(&entries(i, i, 1 + i / 50)).unwrap(); // ok: test
    }
    s.set_hard_state(&hs(3, 1, 100)).unwrap(); // ok: test
    let segments = s.segment_count();
    assert!(s.create_snapshot(101, Bytes::new()).is_err());
    s.create_snapshot(60, Bytes::from_static(b"image@60"))
        .unwrap(); // ok: test
    assert!(s.segment_count() < segments);
    assert!(s.create_snapshot(60, Bytes::new()).is_err(), "not newer");

    let check = |s: &RaftStore| {
        let ctx = || GetEntriesContext::empty(false);
        assert_eq!(s.first_index().unwrap(), 61); // ok: test
        assert_eq!(s.last_index().unwrap(), 100); // ok: test
        assert_eq!(s.term(60).unwrap(), 2); // ok: test
        assert!(matches!(
            s.term(59),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(55, 70, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(s.entries(61, 102, None, ctx()).is_err());
        let got = s.entries(61, 71, None, ctx()).unwrap(); // ok: test
        assert_eq!(got.len(), 10);
        assert_eq!(got[0].index, 61);
        assert_eq!(s.entries(61, 71, Some(0), ctx()).unwrap().len(), 1); // ok: test
        let snap = s.snapshot(0, 2).unwrap(); // ok: test
        assert_eq!(&snap.data[..], b"image@60");
        assert_eq!(snap.get_metadata().index, 60);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);
        assert!(s.snapshot(61, 2).is_err());
    };
    check(&s);
    let files = segment_files(dir.path()).len();
    assert_eq!(files, s.segment_count());
    drop(s);
    let mut s = open_std(dir.path());
    check(&s);
    // Compacting everything leaves no segment; the next append starts one.
    s.create_snapshot(100, Bytes::from_static(b"image@100"))
        .unwrap(); // ok: test
    assert_eq!(s.segment_count(), 0);
    s.append(&entries(101, 101, 3)).unwrap(); // ok: test
    drop(s);
    let s = open_std(dir.path());
    assert_eq!((s.first_log_index(), s.last_log_index()), (101, 101));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(), // ok: test
        3,
        "state, one snapshot, one segment"
    );
}

#[test]
fn installed_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap(); // ok: test
    let mut s = open_std(dir.path());
    s.bootstrap(&[1, 2, 3]).unwrap(); // ok: test
    s.set_hard_state(&hs(1, 1, 0)).unwrap(); // ok: test
    s.append(&entries(1, 20, 1)).unwrap(); // ok: test
    s.set_commit(5).unwrap(); // ok: test
    assert!(s.set_commit(21).is_err(), "commit stays within the log");
    let mut snap = Snapshot {
        data: Bytes::from_static(b"leader image"),
        ..Default::default()
    };
    let meta = snap.mut_metadata();
    meta.index = 50;
    meta.term = 3;
    meta.set_conf_state(ConfState {
        voters: vec![1, 2, 3, 4],
        ..Default::default()
    });
    s.apply_snapshot(snap.clone()).unwrap(); // ok: test
    assert!(s.apply_snapshot(snap).is_err(), "not newer");
    let check = |s: &RaftStore| {
        assert_eq!(s.first_log_index(), 51);
        assert_eq!(s.term(50).unwrap(), 3); // ok: test
        assert_eq!(s.hard_state().commit, 50);
        assert_eq!(s.hard_state().term, 3);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(&s.latest_snapshot().data[..], b"leader image");
    };
    check(&s);
    assert_eq!(s.last_log_index(), 50);
    assert!(segment_files(dir.path()).is_empty());
    s.append(&entries(51, 52, 3)).unwrap(); // ok: test
    drop(s);
    let s = open_std(dir.path());
    check(&s);
    assert_eq!(all(&s), entries(51, 52, 3));
}

/// The fsyncs each operation costs (what the broker's helper thread will pay).
#[test]
fn fsync_cost_per_operation() {
    let fs = MemFs::new();
    let mut s = RaftStore::open(fs.clone(), "/raft", StoreConfig::default()).unwrap(); // ok: test
    let cost = |s: &mut RaftStore, op: &dyn Fn(&mut RaftStore)| {
        let before = fs.syncs();
        op(s);
        fs.syncs() - before
    };
    assert_eq!(cost(&mut s, &|s| s.set_term_vote(1, 1).unwrap()), 2); // ok: test
                                                                      // The first append creates the segment: file + directory.
    assert_eq!(cost(&mut s, &|s| s.append(&entries(1, 5, 1)).unwrap()), 2); // ok: test
    assert_eq!(cost(&mut s, &|s| s.append(&entries(6, 9, 1)).unwrap()), 1); // ok: test
    assert_eq!(cost(&mut s, &|s| s.set_commit(9).unwrap()), 0); // ok: test
    assert_eq!(cost(&mut s, &|s| s.set_term_vote(1, 1).unwrap()), 0); // ok: test
                                                                      // the commit index alone, on demand: the state file (file + directory), then nothing
    assert_eq!(cost(&mut s, &|s| assert!(s.persist_commit().unwrap())), 2); // ok: test
    assert_eq!(cost(&mut s, &|s| assert!(!s.persist_commit().unwrap())), 0); // ok: test
                                                                             // Snapshot file (file + directory) and the state file (file + directory).
    let snap = |s: &mut RaftStore| s.create_snapshot(9, Bytes::from_static(b"img")).unwrap(); // ok: test
    assert_eq!(cost(&mut s, &snap), 4);
}

/// One step of the scripted history run against a failing disk.
#[derive(Clone)]
enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
    Snapshot(u64),
    Install(u64, u64),
}

fn script() -> Vec<Op> {
    let mut ops = vec![Op::HardState(hs(1, 1, 0))];
    for i in 1..=12 {
        ops.push(Op::Append(entries(i, i, 1)));
    }
    ops.push(Op::HardState(hs(2, 2, 8)));
    ops.push(Op::Append(entries(9, 11, 2)));
    ops.push(Op::Snapshot(6));
    ops.push(Op::Append(entries(12, 16, 2)));
    ops.push(Op::HardState(hs(3, 1, 8)));
    ops.push(Op::Install(30, 4));
    ops.push(Op::Append(entries(31, 34, 3)));
    ops
}

/// What the storage must hold after the successful prefix of the script.
#[derive(Clone, Default, PartialEq, Debug)]
struct Model {
    log: Vec<(u64, u64)>,
    snapshot: u64,
    term_vote: (u64, u64),
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(es) => {
                self.log.retain(|&(i, _)| i < es[0].index);
                self.log.extend(es.iter().map(|e| (e.index, e.term)));
            }
            Op::HardState(h) => self.term_vote = (h.term, h.vote),
            Op::Snapshot(i) => {
                self.snapshot = *i;
                self.log.retain(|&(j, _)| j > *i);
            }
            Op::Install(i, t) => {
                self.snapshot = *i;
                self.log.clear();
                if *t > self.term_vote.0 {
                    self.term_vote = (*t, 0);
                }
            }
        }
    }
}

fn run(store: &mut RaftStore, op: &Op) -> Result<(), Error> {
    match op {
        Op::Append(es) => store.append(es),
        Op::HardState(h) => store.set_hard_state(h),
        Op::Snapshot(i) => store.create_snapshot(*i, Bytes::from(format!("image@{i}"))),
        Op::Install(i, t) => {
            let mut snap = Snapshot::default();
            let meta = snap.mut_metadata();
            meta.index = *i;
            meta.term = *t;
            store.apply_snapshot(snap)
        }
    }
}

fn observed(store: &RaftStore) -> Model {
    Model {
        log: all(store).iter().map(|e| (e.index, e.term)).collect(),
        snapshot: store.snapshot_index(),
        term_vote: (store.hard_state().term, store.hard_state().vote),
    }
}

/// Crashes the disk at every mutating operation of the script, with torn tails of every
/// length class; what reopens is the state before or after the interrupted operation, or
/// (for an append) the log cut somewhere inside the new entries — never anything else.
#[test]
fn crash_at_every_disk_operation_recovers_a_valid_state() {
    let dir = Path::new("/raft");
    let ops = script();
    for fail_at in 0.. {
        for keep in [0usize, 3, 9, usize::MAX] {
            let fs = MemFs::new();
            let mut store = RaftStore::open(fs.clone(), dir, small()).unwrap(); // ok: test
            store.bootstrap(&[1, 2, 3]).unwrap(); // ok: test
            fs.fail_after(fail_at);
            let mut model = Model::default();
            let mut failed = None;
            for op in &ops {
                if matches!(op, Op::Snapshot(_)) {
                    store.set_commit(8).unwrap(); // ok: test
                }
                match run(&mut store, op) {
                    Ok(()) => model.apply(op),
                    Err(_) => {
                        failed = Some(op.clone());
                        break;
                    }
                }
            }
            let Some(failed) = failed else {
                assert!(fail_at > 20, "the script touches the disk");
                return;
            };
            drop(store);
            fs.crash(&mut |tail| keep.min(tail));
            let store = RaftStore::open(fs.clone(), dir, small()).unwrap(); // ok: test
            let got = observed(&store);
            let mut after = model.clone();
            after.apply(&failed);
            let ok = got == model
                || got == after
                || match &failed {
                    Op::Append(es) => {
                        let cut = es[0].index;
                        let kept: Vec<(u64, u64)> = model
                            .log
                            .iter()
                            .filter(|(i, _)| *i < cut)
                            .copied()
                            .collect();
                        got.snapshot == model.snapshot
                            && got.term_vote == model.term_vote
                            && got.log.starts_with(&kept)
                            && (model.log.starts_with(&got.log) || after.log.starts_with(&got.log))
                    }
                    _ => false,
                };
            assert!(
                ok,
                "fail_at {fail_at} keep {keep}: got {got:?}\n before {model:?}\n after {after:?}"
            );
        }
    }
}
