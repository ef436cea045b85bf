//! The raft log, hard state, conf state and snapshot of one controller node, durable on
//! disk and served to `raft::RawNode` from memory (`raft::Storage`).
//!
//! ```text
//!  append(entries) ─► [remove later segments, fsync dir] ─► [truncate conflicting tail, fsync]
//!                  ─► frames appended to the active segment ─► fsync (+ fsync dir if new file)
//!  set_term_vote ─► raft-state replaced atomically when term or vote changed
//!  create_snapshot(i) ─► snapshot file ─► raft-state (commit point) ─► drop segments ≤ i
//!  apply_snapshot(s)  ─► snapshot file ─► raft-state with generation+1 ─► drop all segments
//! ```
//! Invariants: the log in memory is exactly the entries in (snapshot index, last index],
//! each durable before `append` returns; only the last segment can have an unsynced tail,
//! so on open a torn or corrupt tail is cut there and damage anywhere else is `Corrupt`;
//! a term is durable before any entry of that term (`append` refuses otherwise). The
//! commit index (never past the durable log) alone is written lazily, with the next state
//! write: losing it costs a re-learn from the leader, never safety. All file calls block (the `Fs` it is given);
//! with `StdFs` the broker must call it from a helper thread. Owned by one node; memory
//! is bounded by the snapshot interval (entries past the snapshot).

mod files;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::{Error, Result};
use crate::fs::Fs;
use files::{FileKind, StateRecord, SNAPSHOT_MAGIC, STATE_FILE, STATE_MAGIC};

/// Settings of the raft storage.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// A segment at or past this size is closed and the next append starts a new one
    /// (bytes; default 1 MiB). Compaction deletes whole segments, so this bounds the bytes
    /// kept behind a snapshot.
    pub segment_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 20,
        }
    }
}

/// One log segment of the current generation.
#[derive(Debug, Clone)]
struct Segment {
    first_index: u64,
    /// Index of its last entry; `first_index - 1` when empty.
    last_index: u64,
    /// Valid bytes (the end of its last good frame).
    len: u64,
}

/// The durable raft state of one node. Owned by the node's driver; never shared.
pub struct RaftStore {
    fs: Box<dyn Fs>,
    dir: PathBuf,
    config: StoreConfig,
    hard_state: HardState,
    /// Term and vote as last written to `raft-state`.
    durable_term_vote: (u64, u64),
    /// The commit index in `raft-state` on disk.
    durable_commit: u64,
    conf_state: ConfState,
    /// Latest snapshot (data and metadata); index 0 when there is none.
    snapshot: Snapshot,
    generation: u64,
    /// Entries snapshot index + 1 ..= last index.
    entries: VecDeque<Entry>,
    /// Byte offset of each entry of `entries` within its segment.
    offsets: VecDeque<u64>,
    segments: Vec<Segment>,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("dir", &self.dir)
            .field("hard_state", &self.hard_state)
            .field("snapshot_index", &self.snapshot_index())
            .field("last_index", &self.last_log_index())
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn snapshot_meta(s: &Snapshot) -> (u64, u64) {
    s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term))
}

impl RaftStore {
    /// Opens (or creates) the storage in `dir`: reads the state and snapshot files, deletes
    /// leftovers (temp files, stale snapshots and segments), scans the log and cuts a torn
    /// or corrupt tail off the last segment.
    pub fn open(
        fs: impl Fs + 'static,
        dir: impl Into<PathBuf>,
        config: StoreConfig,
    ) -> Result<Self> {
        let mut fs: Box<dyn Fs> = Box::new(fs);
        let dir = dir.into();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create_dir", &dir, e))?;
        let names = fs.list(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut state = StateRecord::default();
        let mut segment_names = Vec::new();
        let mut snapshot_names = Vec::new();
        for name in &names {
            match files::classify(name) {
                FileKind::State => {
                    let path = dir.join(name);
                    let data = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
                    let body = files::unseal(STATE_MAGIC, &data)
                        .map_err(|why| Error::corrupt(&path, why))?;
                    state = prost::Message::decode(body)
                        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
                }
                FileKind::Segment {
                    generation,
                    first_index,
                } => segment_names.push((generation, first_index, name.clone())),
                FileKind::Snapshot { index, term } => snapshot_names.push((index, term, name)),
                FileKind::Temp => remove(&mut *fs, &dir.join(name))?,
                FileKind::Unknown => {}
            }
        }
        let conf_state = if state.conf_state.is_empty() {
            ConfState::default()
        } else {
            ConfState::parse_from_bytes(&state.conf_state)
                .map_err(|e| Error::corrupt(dir.join(STATE_FILE), e.to_string()))?
        };
        let snapshot = if state.snapshot_index == 0 {
            Snapshot::default()
        } else {
            read_snapshot(&mut *fs, &dir, state.snapshot_index, state.snapshot_term)?
        };
        for (index, term, name) in snapshot_names {
            if (index, term) != (state.snapshot_index, state.snapshot_term) {
                remove(&mut *fs, &dir.join(name))?;
            }
        }
        let mut current = Vec::new();
        for (generation, first_index, name) in segment_names {
            if generation == state.generation {
                current.push(first_index);
            } else {
                remove(&mut *fs, &dir.join(name))?;
            }
        }
        current.sort_unstable();

        let mut store = RaftStore {
            fs,
            dir,
            config,
            hard_state: HardState::default(),
            durable_term_vote: (state.term, state.vote),
            durable_commit: state.commit,
            conf_state,
            snapshot,
            generation: state.generation,
            entries: VecDeque::new(),
            offsets: VecDeque::new(),
            segments: Vec::new(),
        };
        store.recover_log(&current)?;
        let last = store.last_log_index();
        let commit = state.commit.max(state.snapshot_index);
        if commit > last {
            return Err(Error::corrupt(
                store.dir.join(STATE_FILE),
                format!("commit index {commit} is past the last log index {last}"),
            ));
        }
        let last_term = store.term_of(last).unwrap_or(0);
        if last_term > state.term {
            return Err(Error::corrupt(
                store.dir.join(STATE_FILE),
                format!(
                    "term {} is behind the log's last term {last_term}",
                    state.term
                ),
            ));
        }
        store.hard_state.term = state.term;
        store.hard_state.vote = state.vote;
        store.hard_state.commit = commit;
        Ok(store)
    }

    /// Scans the segments (ascending first indexes) into memory. Segments wholly behind
    /// the snapshot are deleted unread; a bad frame in the last segment cuts the file there.
    fn recover_log(&mut self, firsts: &[u64]) -> Result<()> {
        let snap_index = self.snapshot_index();
        let mut keep = Vec::new();
        for (k, &first) in firsts.iter().enumerate() {
            match firsts.get(k + 1) {
                Some(&next) if next.saturating_sub(1) <= snap_index => {
                    let path = self.segment_path(first);
                    remove(&mut *self.fs, &path)?;
                }
                _ => keep.push(first),
            }
        }
        let mut prev: Option<(u64, u64)> = None;
        for (k, &first) in keep.iter().enumerate() {
            let is_last = k + 1 == keep.len();
            let path = self.segment_path(first);
            let data = self
                .fs
                .read(&path)
                .map_err(|e| Error::io("read", &path, e))?;
            if let Some((prev_index, _)) = prev {
                if first != prev_index + 1 {
                    if first > snap_index + 1 {
                        return Err(Error::corrupt(
                            &path,
                            format!("log gap: segment starts at {first} after {prev_index}"),
                        ));
                    }
                    // Only compacted entries precede this segment; forget them.
                    prev = None;
                    self.entries.clear();
                    self.offsets.clear();
                }
            }
            let mut segment = Segment {
                first_index: first,
                last_index: first - 1,
                len: 0,
            };
            let mut pos = 0usize;
            loop {
                let bad = match files::decode_frame(&data[pos..]) {
                    Ok(None) => break,
                    Ok(Some((entry, len))) => {
                        let expected = segment.last_index + 1;
                        if entry.index != expected {
                            Some(format!(
                                "entry index {} where {expected} was due",
                                entry.index
                            ))
                        } else if prev.is_some_and(|(_, t)| entry.term < t) {
                            Some(format!(
                                "entry {} has a term lower than its predecessor",
                                entry.index
                            ))
                        } else {
                            prev = Some((entry.index, entry.term));
                            segment.last_index = entry.index;
                            if entry.index > snap_index {
                                self.entries.push_back(entry);
                                self.offsets.push_back(pos as u64);
                            }
                            pos += len;
                            None
                        }
                    }
                    Err(why) => Some(why),
                };
                if let Some(why) = bad {
                    if !is_last {
                        return Err(Error::corrupt(&path, format!("at byte {pos}: {why}")));
                    }
                    tracing::warn!(path = %path.display(), offset = pos, reason = %why,
                        "raft log: cutting a torn or corrupt tail");
                    self.fs
                        .truncate(&path, pos as u64)
                        .map_err(|e| Error::io("truncate", &path, e))?;
                    self.fs
                        .sync(&path)
                        .map_err(|e| Error::io("sync", &path, e))?;
                    break;
                }
            }
            segment.len = pos as u64;
            self.segments.push(segment);
        }
        let (snap_index, snap_term) = snapshot_meta(&self.snapshot);
        if let Some(e) = self.entries.front() {
            if e.index != snap_index + 1 || e.term < snap_term {
                return Err(Error::corrupt(
                    &self.dir,
                    format!(
                        "log starts at entry {} (term {}) after snapshot {snap_index} (term {snap_term})",
                        e.index, e.term
                    ),
                ));
            }
        }
        Ok(())
    }

    fn segment_path(&self, first_index: u64) -> PathBuf {
        self.dir
            .join(files::segment_name(self.generation, first_index))
    }

    /// Whether a configuration (voters) is known: bootstrapped, or from a snapshot.
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }

    /// Makes a fresh storage the start of a cluster of `voters`. On an initialized storage
    /// it succeeds if the voters are the same and refuses otherwise.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<()> {
        let mut sorted = voters.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() || sorted.contains(&0) {
            return Err(Error::Refused(format!("bad voter set {voters:?}")));
        }
        if self.is_initialized() {
            let mut have = self.conf_state.voters.clone();
            have.sort_unstable();
            return if have == sorted {
                Ok(())
            } else {
                Err(Error::Refused(format!(
                    "already initialized with voters {have:?}, not {sorted:?}"
                )))
            };
        }
        self.set_conf_state(ConfState {
            voters: sorted,
            ..Default::default()
        })
    }

    /// Appends entries durably, first cutting any conflicting tail at the first entry's
    /// index. The entries must be contiguous, leave no gap, overwrite nothing committed,
    /// and carry no term newer than the hard state's: a term is durable before its entries,
    /// so a crash in between cannot leave a log that is ahead of the node's term.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let (Some(first), Some(newest)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first_index, newest_index, newest_term) = (first.index, newest.index, newest.term);
        if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(Error::Refused("entries are not contiguous".to_string()));
        }
        let last = self.last_log_index();
        if first_index > last + 1 {
            return Err(Error::Refused(format!(
                "append at {first_index} leaves a gap after {last}"
            )));
        }
        let committed = self.hard_state.commit.max(self.snapshot_index());
        if first_index <= committed {
            return Err(Error::Refused(format!(
                "append at {first_index} would overwrite committed entries (commit {committed})"
            )));
        }
        if newest_term > self.hard_state.term {
            return Err(Error::Refused(format!(
                "entries of term {newest_term} before the hard state names that term (term {})",
                self.hard_state.term
            )));
        }
        if first_index <= last {
            self.truncate_from(first_index)?;
        }
        let roll = match self.segments.last() {
            None => true,
            Some(s) => s.len >= self.config.segment_bytes || s.last_index + 1 != first_index,
        };
        if roll {
            self.segments.push(Segment {
                first_index,
                last_index: first_index - 1,
                len: 0,
            });
        }
        let Some(segment) = self.segments.last() else {
            return Err(Error::Refused("no active segment".to_string()));
        };
        let base = segment.len;
        let path = self.segment_path(segment.first_index);
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            offsets.push(base + buf.len() as u64);
            files::encode_frame(e, &mut buf)?;
        }
        if roll {
            self.fs
                .write(&path, &buf)
                .map_err(|e| Error::io("create", &path, e))?;
        } else {
            self.fs
                .append(&path, &buf)
                .map_err(|e| Error::io("append", &path, e))?;
        }
        self.fs
            .sync(&path)
            .map_err(|e| Error::io("sync", &path, e))?;
        if roll {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
        }
        if let Some(segment) = self.segments.last_mut() {
            segment.len = base + buf.len() as u64;
            segment.last_index = newest_index;
        }
        self.entries.extend(entries.iter().cloned());
        self.offsets.extend(offsets);
        Ok(())
    }

    /// Drops entries `index..` from memory and disk: later segments are removed (and the
    /// removal made durable) before the containing segment is cut, so a crash in between
    /// leaves a prefix of the old log, never a gap.
    fn truncate_from(&mut self, index: u64) -> Result<()> {
        let pos = (index - self.first_log_index()) as usize;
        let Some(&offset) = self.offsets.get(pos) else {
            return Err(Error::Refused(format!("no entry {index} to truncate at")));
        };
        let k = self.segments.partition_point(|s| s.first_index <= index);
        if k == 0 {
            return Err(Error::Refused(format!("no segment holds entry {index}")));
        }
        let later: Vec<u64> = self.segments[k..].iter().map(|s| s.first_index).collect();
        for first in &later {
            let path = self.segment_path(*first);
            remove(&mut *self.fs, &path)?;
        }
        self.segments.truncate(k);
        if !later.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
        }
        let segment = &mut self.segments[k - 1];
        let path = self
            .dir
            .join(files::segment_name(self.generation, segment.first_index));
        self.fs
            .truncate(&path, offset)
            .map_err(|e| Error::io("truncate", &path, e))?;
        self.fs
            .sync(&path)
            .map_err(|e| Error::io("sync", &path, e))?;
        segment.len = offset;
        segment.last_index = index - 1;
        self.entries.truncate(pos);
        self.offsets.truncate(pos);
        Ok(())
    }

    /// Records term and vote; writes `raft-state` (atomically) when either changed. Call it
    /// before `append`ing the entries of the same `Ready`.
    pub fn set_term_vote(&mut self, term: u64, vote: u64) -> Result<()> {
        self.hard_state.term = term;
        self.hard_state.vote = vote;
        if (term, vote) != self.durable_term_vote {
            self.write_state()?;
        }
        Ok(())
    }

    /// Records the commit index, which must be in the (durable) log. It stays in memory
    /// until the next state write. Call it after `append`ing the entries it covers.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let last = self.last_log_index();
        if commit > last {
            return Err(Error::Refused(format!(
                "commit {commit} is past the last log index {last}"
            )));
        }
        self.hard_state.commit = commit;
        Ok(())
    }

    /// `set_term_vote`, then `set_commit`.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<()> {
        self.set_term_vote(hs.term, hs.vote)?;
        self.set_commit(hs.commit)
    }

    /// Records and durably writes a new configuration.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        self.conf_state = cs;
        self.write_state()
    }

    fn write_state(&mut self) -> Result<()> {
        let (snapshot_index, snapshot_term) = snapshot_meta(&self.snapshot);
        let conf_state = self
            .conf_state
            .write_to_bytes()
            .map_err(|e| Error::Refused(format!("cannot encode conf state: {e}")))?;
        let record = StateRecord {
            term: self.hard_state.term,
            vote: self.hard_state.vote,
            commit: self.hard_state.commit,
            conf_state,
            snapshot_index,
            snapshot_term,
            generation: self.generation,
        };
        let body = prost::Message::encode_to_vec(&record);
        let data = files::seal(STATE_MAGIC, &body);
        files::write_atomic(&mut *self.fs, &self.dir, STATE_FILE, &data)?;
        self.durable_term_vote = (record.term, record.vote);
        self.durable_commit = record.commit;
        Ok(())
    }

    /// Writes `raft-state` if the commit index moved since it was last written (else does
    /// nothing); returns whether it wrote. Optional, never needed for safety: a node that
    /// restarts without reaching a quorum then knows (and applies) more of its log.
    pub fn persist_commit(&mut self) -> Result<bool> {
        if self.hard_state.commit == self.durable_commit {
            return Ok(false);
        }
        self.write_state()?;
        Ok(true)
    }

    fn write_snapshot_file(&mut self, snap: &Snapshot) -> Result<()> {
        let (index, term) = snapshot_meta(snap);
        let body = snap
            .write_to_bytes()
            .map_err(|e| Error::Refused(format!("cannot encode snapshot: {e}")))?;
        let data = files::seal(SNAPSHOT_MAGIC, &body);
        files::write_atomic(
            &mut *self.fs,
            &self.dir,
            &files::snapshot_name(index, term),
            &data,
        )
    }

    /// Takes `data` (the state machine at applied index `index`) as the new snapshot and
    /// compacts the log behind it: entries ≤ `index` leave memory, and every segment whose
    /// entries are all ≤ `index` is deleted.
    pub fn create_snapshot(&mut self, index: u64, data: Bytes) -> Result<()> {
        let (old_index, old_term) = snapshot_meta(&self.snapshot);
        if index <= old_index || index > self.hard_state.commit || index > self.last_log_index() {
            return Err(Error::Refused(format!(
                "snapshot at {index}: outside (snapshot {old_index}, commit {}]",
                self.hard_state.commit
            )));
        }
        let term = self.term_of(index).map_err(raft::Error::Store)?;
        let mut snap = Snapshot {
            data,
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.write_snapshot_file(&snap)?;
        let drop = (index - old_index) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.offsets.drain(..drop.min(self.offsets.len()));
        self.snapshot = snap;
        self.write_state()?;
        if old_index > 0 {
            remove(
                &mut *self.fs,
                &self.dir.join(files::snapshot_name(old_index, old_term)),
            )?;
        }
        let stale = self.segments.partition_point(|s| s.last_index <= index);
        let stale: Vec<u64> = self
            .segments
            .drain(..stale)
            .map(|s| s.first_index)
            .collect();
        for first in stale {
            let path = self.segment_path(first);
            remove(&mut *self.fs, &path)?;
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log. The state
    /// file naming the snapshot and a new log generation is the commit point; segments of
    /// the old generation are then deleted (or, after a crash, on the next open).
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        let (index, term) = snapshot_meta(&snap);
        let (old_index, old_term) = snapshot_meta(&self.snapshot);
        if index <= old_index {
            return Err(Error::Refused(format!(
                "snapshot {index} is not newer than the one held ({old_index})"
            )));
        }
        self.write_snapshot_file(&snap)?;
        let old_segments: Vec<PathBuf> = self
            .segments
            .iter()
            .map(|s| self.segment_path(s.first_index))
            .collect();
        self.conf_state = snap.get_metadata().get_conf_state().clone();
        if term > self.hard_state.term {
            // A vote belongs to its term; the caller's hard state follows with the real one.
            self.hard_state.term = term;
            self.hard_state.vote = 0;
        }
        self.hard_state.commit = index;
        self.snapshot = snap;
        self.generation += 1;
        self.segments.clear();
        self.entries.clear();
        self.offsets.clear();
        self.write_state()?;
        if old_index > 0 {
            remove(
                &mut *self.fs,
                &self.dir.join(files::snapshot_name(old_index, old_term)),
            )?;
        }
        for path in old_segments {
            remove(&mut *self.fs, &path)?;
        }
        Ok(())
    }

    /// The hard state as raft last gave it (commit possibly not yet durable).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot, data included; its metadata index is 0 when there is none.
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Index of the latest snapshot (0 when none).
    pub fn snapshot_index(&self) -> u64 {
        snapshot_meta(&self.snapshot).0
    }

    /// First index still in the log (snapshot index + 1).
    pub fn first_log_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    /// Last index in the log (the snapshot index when the log is empty).
    pub fn last_log_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Number of segment files of the current generation.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn term_of(&self, index: u64) -> Result<u64, StorageError> {
        let (snap_index, snap_term) = snapshot_meta(&self.snapshot);
        if index == snap_index {
            return Ok(snap_term);
        }
        if index < snap_index {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((index - snap_index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }
}

fn remove(fs: &mut dyn Fs, path: &Path) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn read_snapshot(fs: &mut dyn Fs, dir: &Path, index: u64, term: u64) -> Result<Snapshot> {
    let path = dir.join(files::snapshot_name(index, term));
    let data = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
    let body = files::unseal(SNAPSHOT_MAGIC, &data).map_err(|why| Error::corrupt(&path, why))?;
    let snap =
        Snapshot::parse_from_bytes(body).map_err(|e| Error::corrupt(&path, e.to_string()))?;
    if snapshot_meta(&snap) != (index, term) {
        return Err(Error::corrupt(
            &path,
            "metadata does not match the file name",
        ));
    }
    Ok(snap)
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.first_log_index();
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_log_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out: Vec<Entry> = self
            .entries
            .range((low - first) as usize..(high - first) as usize)
            .cloned()
            .collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx).map_err(raft::Error::Store)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_log_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_log_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
