//! The per-shard write-ahead journal's on-disk format and its replay (issue 18, design
//! (a); written by `storage.flush.sync=journal`, `journal_flush.rs`). A journal file is a zero-filled, preallocated file in `<data_dir>/__journal/`: one
//! header page naming its shard and epoch, then record sets, each one group-commit cycle,
//! padded to whole pages (one aligned DMA write). Every set carries the epoch and one
//! CRC32C over its header fields and entries, so a replay takes exactly the valid prefix:
//! it stops at the first set that is zero, torn, corrupt or of another epoch (a reused
//! file's stale tail). Replay runs before any shard opens a log, over every shard's
//! journals (a changed `cores` moves partitions between shards), writes each entry's bytes
//! at its position in its segment file (idempotent), syncs them, then retires the
//! journals, so nothing is replayed twice over later changes.
//!
//! ```text
//!  file:  | header page: "SLJH" shard epoch crc | set | set | ... | 0 0 0 (zero-filled)
//!  set:   "SLJS" epoch:u64 body_len:u32 entries:u32 crc:u32 | entry* | zeros to a page
//!  entry: dir_len:u16 dir  seg_base:i64  pos:u64  len:u32  bytes
//! ```

use crate::segment::{align_up, log_path, marker_path, PAGE};
use bytes::Bytes;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Directory of the journals inside the data directory (no `-` in it: never taken for a
/// partition directory).
pub const JOURNAL_DIR: &str = "__journal";
const FILE_MAGIC: &[u8; 4] = b"SLJH";
const SET_MAGIC: &[u8; 4] = b"SLJS";
/// magic, shard, epoch, live (and 3 zero bytes), crc.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 4 + 4;
/// magic, epoch, body length, entry count, crc.
const SET_HEADER_LEN: usize = 4 + 8 + 4 + 4 + 4;
/// Where the first record set of a journal file starts.
pub(crate) const FIRST_SET: u64 = PAGE;
/// Files kept open at once while replaying (each synced when it is closed).
const REPLAY_OPEN_FILES: usize = 256;

/// A journal file's name: its shard and which of the shard's two files (used in turn) it
/// is, so the files of every shard a data directory ever had sit side by side; replay
/// reads the header, not the name.
pub(crate) fn file_name(shard: u32, slot: usize) -> String {
    format!("shard-{shard}-{slot}.jnl")
}

/// The header page of a journal file: which shard wrote it, the epoch every record set
/// in it must carry, and whether those sets may still be needed (`live`) or are all in
/// synced segment files (retired: a checkpoint or a replay finished with them; the file
/// is kept, preallocated, for a later epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) shard: u32,
    pub(crate) epoch: u64,
    pub(crate) live: bool,
}

impl FileHeader {
    /// One page: the header, then zeros.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = vec![0u8; PAGE as usize];
        v[..4].copy_from_slice(FILE_MAGIC);
        v[4..8].copy_from_slice(&self.shard.to_be_bytes());
        v[8..16].copy_from_slice(&self.epoch.to_be_bytes());
        v[16] = u8::from(self.live);
        let crc = crc32c::crc32c(&v[..20]);
        v[20..24].copy_from_slice(&crc.to_be_bytes());
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Option<FileHeader> {
        if b.len() < HEADER_LEN || &b[..4] != FILE_MAGIC || b[16] > 1 {
            return None;
        }
        if crc32c::crc32c(&b[..20]).to_be_bytes() != b[20..24] {
            return None;
        }
        Some(FileHeader {
            shard: u32::from_be_bytes(b[4..8].try_into().ok()?),
            epoch: u64::from_be_bytes(b[8..16].try_into().ok()?),
            live: b[16] == 1,
        })
    }
}

/// One log's bytes in a record set: they belong at `pos` of segment `seg_base` in the
/// log directory `dir` (a name inside the data directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Shared by every entry of one log in a cycle (a count bump per batch, not a copy).
    pub(crate) dir: std::rc::Rc<str>,
    pub(crate) seg_base: i64,
    pub(crate) pos: u64,
    pub(crate) data: Bytes,
}

impl Entry {
    pub(crate) fn encoded_len(&self) -> usize {
        2 + self.dir.len() + 8 + 8 + 4 + self.data.len()
    }
}

/// A log directory name a replay may write into: one plain path component.
fn safe_dir_name(d: &str) -> bool {
    !d.is_empty() && d != "." && d != ".." && !d.contains('/') && !d.contains('\0')
}

/// Bytes a record set of `entries` takes in the journal: padded to whole pages.
pub(crate) fn set_len(entries: &[Entry]) -> usize {
    set_len_of(entries.iter().map(Entry::encoded_len).sum())
}

/// Bytes a record set takes whose entries' `encoded_len`s sum to `body`.
pub(crate) fn set_len_of(body: usize) -> usize {
    align_up((SET_HEADER_LEN + body) as u64) as usize
}

/// Encodes a record set of `entries` for `epoch` into `out`, which must be `set_len`
/// bytes (the rest is zeroed). Panics if a directory name is longer than 65535 bytes or
/// an entry longer than 4 GiB (the caller's segments are far smaller).
pub(crate) fn encode_set(epoch: u64, entries: &[Entry], out: &mut [u8]) {
    let body_len: usize = entries.iter().map(Entry::encoded_len).sum();
    assert_eq!(out.len(), set_len(entries), "record set buffer size");
    out[..4].copy_from_slice(SET_MAGIC);
    out[4..12].copy_from_slice(&epoch.to_be_bytes());
    out[12..16].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[16..20].copy_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut at = SET_HEADER_LEN;
    for e in entries {
        let dir = e.dir.as_bytes();
        let mut put = |b: &[u8]| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&u16::try_from(dir.len())
            .expect("log directory name")
            .to_be_bytes());
        put(dir);
        put(&e.seg_base.to_be_bytes());
        put(&e.pos.to_be_bytes());
        put(&u32::try_from(e.data.len())
            .expect("entry size")
            .to_be_bytes());
        put(&e.data);
    }
    out[at..].fill(0);
    let crc = set_crc(&out[4..20], &out[SET_HEADER_LEN..SET_HEADER_LEN + body_len]);
    out[20..24].copy_from_slice(&crc.to_be_bytes());
}

fn set_crc(fields: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(fields), body)
}

/// What a set header says, if it is one of `epoch`: (body length, entry count, crc).
fn decode_set_header(h: &[u8], epoch: u64) -> Option<(usize, u32, u32)> {
    if h.len() < SET_HEADER_LEN || &h[..4] != SET_MAGIC {
        return None;
    }
    if u64::from_be_bytes(h[4..12].try_into().ok()?) != epoch {
        return None;
    }
    let body_len = u32::from_be_bytes(h[12..16].try_into().ok()?) as usize;
    let count = u32::from_be_bytes(h[16..20].try_into().ok()?);
    let crc = u32::from_be_bytes(h[20..24].try_into().ok()?);
    Some((body_len, count, crc))
}

/// Parses a set's body (its CRC already checked): exactly `count` entries filling it.
fn decode_body(body: &[u8], count: u32) -> Option<Vec<Entry>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let dl = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let dir = std::str::from_utf8(take(dl)?).ok()?.to_string();
        let seg_base = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let pos = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let data = Bytes::copy_from_slice(take(len)?);
        if !safe_dir_name(&dir) || seg_base < 0 || pos.checked_add(len as u64).is_none() {
            return None;
        }
        out.push(Entry {
            dir: dir.into(),
            seg_base,
            pos,
            data,
        });
    }
    (at == body.len()).then_some(out)
}

/// Decodes the record set at the start of `buf` if it is a valid one of `epoch`:
/// its entries and the bytes it takes (whole pages). None ends the valid prefix.
pub(crate) fn decode_set(buf: &[u8], epoch: u64) -> Option<(Vec<Entry>, usize)> {
    let (body_len, count, crc) = decode_set_header(buf, epoch)?;
    let end = SET_HEADER_LEN.checked_add(body_len)?;
    let body = buf.get(SET_HEADER_LEN..end)?;
    if set_crc(&buf[4..20], body) != crc {
        return None;
    }
    let entries = decode_body(body, count)?;
    Some((entries, align_up(end as u64) as usize))
}

/// The valid prefix of a journal's record sets (the bytes after the header page); the
/// replay reads the same prefix from the file set by set.
#[cfg(test)]
pub(crate) fn valid_prefix(mut records: &[u8], epoch: u64) -> Vec<Vec<Entry>> {
    let mut sets = Vec::new();
    while let Some((entries, used)) = decode_set(records, epoch) {
        sets.push(entries);
        records = records.get(used..).unwrap_or(&[]);
    }
    sets
}

/// What a start-up replay did (`replay_journals`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalReplay {
    /// Live journal files replayed (then retired).
    pub files: usize,
    /// Valid record sets replayed.
    pub record_sets: usize,
    /// Entries written into segment files.
    pub entries: usize,
    /// Bytes written into segment files.
    pub bytes: u64,
    /// Entries of log directories that no longer exist (deleted logs), skipped.
    pub skipped: usize,
}

/// A journal file's header; None if the file is shorter than one or it does not decode.
/// Blocking.
fn read_header(f: &std::fs::File) -> std::io::Result<Option<FileHeader>> {
    let mut h = vec![0u8; HEADER_LEN];
    match f.read_exact_at(&mut h, 0) {
        Ok(()) => Ok(FileHeader::decode(&h)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether one of shard `shard`'s journal files under `data_dir` holds a live epoch: one
/// that a replay has not written into the segments yet. Only this shard's: another
/// shard may already have opened its own (live) journal while this one starts.
/// Blocking (header reads).
pub(crate) fn shard_journal_live(data_dir: &Path, shard: u32) -> std::io::Result<bool> {
    for slot in 0..2 {
        let p = data_dir.join(JOURNAL_DIR).join(file_name(shard, slot));
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if read_header(&f)?.is_some_and(|h| h.live) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Replays every live journal in `<data_dir>/__journal` into its segment files, then
/// retires them (header rewritten as not live, synced; the files stay for reuse). Blocking, for the broker's main thread before any shard opens a log.
///
/// Per shard, files go in epoch order, each up to its first invalid record set. Each
/// entry's bytes are written at its position in `<data_dir>/<dir>/<seg_base>.log`
/// (created if the log directory exists: a segment rolled since the last checkpoint);
/// entries of a log directory that is gone are skipped. Every file written is synced,
/// the clean-shutdown marker of every log written to is removed (its end moved, so open
/// rescans it), then each journal's header says retired. A crash part way through replays
/// again: the writes are idempotent.
pub fn replay_journals(data_dir: &Path) -> std::io::Result<JournalReplay> {
    let jdir = data_dir.join(JOURNAL_DIR);
    let mut files = Vec::new();
    match std::fs::read_dir(&jdir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "jnl") {
                    files.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(JournalReplay::default()),
        Err(e) => return Err(e),
    }
    let mut headed = Vec::new();
    for p in files {
        let f = std::fs::File::open(&p)?;
        headed.push((read_header(&f)?, p, f));
    }
    headed.sort_by_key(|(h, p, _)| (h.map(|h| (h.shard, h.epoch)), p.clone()));
    let mut out = JournalReplay::default();
    let mut w = Writer::new(data_dir);
    for (header, path, f) in &headed {
        let Some(h) = header.filter(|h| h.live) else {
            tracing::debug!(journal = %path.display(), "journal retired or never used; nothing to replay");
            continue;
        };
        out.files += 1;
        let len = f.metadata()?.len();
        let mut at = FIRST_SET;
        let mut hdr = [0u8; SET_HEADER_LEN];
        while at + SET_HEADER_LEN as u64 <= len {
            f.read_exact_at(&mut hdr, at)?;
            let Some((body_len, _, _)) = decode_set_header(&hdr, h.epoch) else {
                break;
            };
            let end = at + (SET_HEADER_LEN + body_len) as u64;
            if end > len {
                break;
            }
            let mut buf = vec![0u8; SET_HEADER_LEN + body_len];
            f.read_exact_at(&mut buf, at)?;
            let Some((entries, used)) = decode_set(&buf_padded(buf), h.epoch) else {
                break;
            };
            for e in entries {
                w.apply(&e, &mut out)?;
            }
            out.record_sets += 1;
            at += used as u64;
        }
        tracing::info!(journal = %path.display(), shard = h.shard, epoch = h.epoch,
            replayed_to = at, "journal replayed");
    }
    w.finish()?;
    for (header, path, _) in &headed {
        if let Some(h) = header.filter(|h| h.live) {
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all_at(&FileHeader { live: false, ..h }.encode(), 0)?;
            f.sync_data()?;
        }
    }
    Ok(out)
}

/// `decode_set` wants whole pages after the body; a set read without its padding gets
/// zeros (the padding is not covered by the CRC).
fn buf_padded(mut buf: Vec<u8>) -> Vec<u8> {
    buf.resize(align_up(buf.len() as u64) as usize, 0);
    buf
}

/// The segment files a replay writes, a bounded number open at once; each is synced
/// before it is closed, and so are the directories of files it created.
struct Writer<'a> {
    data_dir: &'a Path,
    open: HashMap<PathBuf, std::fs::File>,
    /// Log directories written to (their markers go), with whether a file was created.
    dirs: HashMap<PathBuf, bool>,
}

impl<'a> Writer<'a> {
    fn new(data_dir: &'a Path) -> Self {
        Writer {
            data_dir,
            open: HashMap::new(),
            dirs: HashMap::new(),
        }
    }

    fn apply(&mut self, e: &Entry, out: &mut JournalReplay) -> std::io::Result<()> {
        let dir = self.data_dir.join(&*e.dir);
        if !dir.is_dir() {
            out.skipped += 1;
            return Ok(());
        }
        let path = log_path(&dir, e.seg_base);
        if !self.open.contains_key(&path) {
            if self.open.len() >= REPLAY_OPEN_FILES {
                self.sync_all()?;
            }
            let existed = path.exists();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            *self.dirs.entry(dir.clone()).or_default() |= !existed;
            self.open.insert(path.clone(), f);
        }
        if let Some(f) = self.open.get(&path) {
            f.write_all_at(&e.data, e.pos)?;
        }
        self.dirs.entry(dir).or_default();
        out.entries += 1;
        out.bytes += e.data.len() as u64;
        Ok(())
    }

    fn sync_all(&mut self) -> std::io::Result<()> {
        for (_, f) in self.open.drain() {
            f.sync_data()?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.sync_all()?;
        for (dir, created) in &self.dirs {
            let marker = marker_path(dir);
            let had_marker = match std::fs::remove_file(&marker) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if *created || had_marker {
                crate::blocking::sync_dir_now(dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            "[a-z]{1,8}-[0-9]{1,2}",
            0i64..1_000_000,
            0u64..1 << 40,
            proptest::collection::vec(any::<u8>(), 0..3000),
        )
            .prop_map(|(dir, seg_base, pos, data)| Entry {
                dir: dir.into(),
                seg_base,
                pos,
                data: Bytes::from(data),
            })
    }

    fn sets_strategy() -> impl Strategy<Value = Vec<Vec<Entry>>> {
        proptest::collection::vec(proptest::collection::vec(entry_strategy(), 0..6), 0..8)
    }

    /// The journal bytes after the header page: every set, then `tail` zero bytes.
    fn journal(epoch: u64, sets: &[Vec<Entry>], tail: usize) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for s in sets {
            starts.push(out.len());
            let mut buf = vec![0xAAu8; set_len(s)];
            encode_set(epoch, s, &mut buf);
            out.extend_from_slice(&buf);
        }
        out.resize(out.len() + tail, 0);
        (out, starts)
    }

    proptest! {
        #[test]
        fn encoded_sets_decode_to_themselves(epoch in any::<u64>(), sets in sets_strategy()) {
            let (bytes, _) = journal(epoch, &sets, 4096);
            prop_assert_eq!(valid_prefix(&bytes, epoch), sets.clone());
            // another epoch's reader takes nothing (a reused file's stale sets)
            if !sets.is_empty() {
                prop_assert!(valid_prefix(&bytes, epoch.wrapping_add(1)).is_empty());
            }
        }

        #[test]
        fn a_torn_tail_keeps_the_sets_before_it(
            epoch in any::<u64>(),
            sets in sets_strategy(),
            cut_at in any::<prop::sample::Index>(),
        ) {
            let (bytes, starts) = journal(epoch, &sets, 0);
            prop_assume!(!bytes.is_empty());
            let cut = cut_at.index(bytes.len());
            let mut torn = bytes[..cut].to_vec();
            torn.resize(bytes.len() + 4096, 0); // the preallocated file's zeros after it
            let whole = starts.iter().zip(&sets)
                .filter(|(s, set)| **s + set_len(set) <= cut)
                .count();
            let got = valid_prefix(&torn, epoch);
            // a set cut only in its zero padding still decodes whole
            prop_assert!(got.len() == whole || got.len() == whole + 1);
            prop_assert_eq!(&got[..], &sets[..got.len()]);
        }

        #[test]
        fn a_corrupt_byte_ends_the_prefix_at_its_set(
            epoch in any::<u64>(),
            sets in sets_strategy(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (mut bytes, starts) = journal(epoch, &sets, 0);
            prop_assume!(!bytes.is_empty());
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let hit = starts.iter().rposition(|s| *s <= i).unwrap_or(0);
            let got = valid_prefix(&bytes, epoch);
            let in_padding = i >= starts[hit] + SET_HEADER_LEN
                + sets[hit].iter().map(Entry::encoded_len).sum::<usize>();
            if in_padding {
                prop_assert_eq!(got, sets.clone());
            } else {
                prop_assert_eq!(&got[..], &sets[..hit]);
            }
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = FileHeader {
            shard: 3,
            epoch: 42,
            live: true,
        };
        let mut b = h.encode();
        assert_eq!(b.len(), PAGE as usize);
        assert_eq!(FileHeader::decode(&b), Some(h));
        let retired = FileHeader { live: false, ..h };
        assert_eq!(FileHeader::decode(&retired.encode()), Some(retired));
        b[9] ^= 1;
        assert_eq!(FileHeader::decode(&b), None);
        assert_eq!(FileHeader::decode(&[0u8; 4096]), None);
    }

    #[test]
    fn unsafe_directory_names_end_the_prefix() {
        for dir in ["..", ".", "", "a/b"] {
            let e = Entry {
                dir: dir.into(),
                seg_base: 0,
                pos: 0,
                data: Bytes::from_static(b"x"),
            };
            let (bytes, _) = journal(1, &[vec![e]], 0);
            assert!(valid_prefix(&bytes, 1).is_empty(), "{dir:?}");
        }
    }

    fn write_journal(dir: &Path, shard: u32, epoch: u64, sets: &[Vec<Entry>], stale: &[u8]) {
        let jdir = dir.join(JOURNAL_DIR);
        std::fs::create_dir_all(&jdir).unwrap();
        let mut file = FileHeader {
            shard,
            epoch,
            live: true,
        }
        .encode();
        let (body, _) = journal(epoch, sets, 0);
        file.extend_from_slice(&body);
        file.extend_from_slice(stale);
        file.resize(file.len() + 3 * PAGE as usize, 0);
        std::fs::write(jdir.join(file_name(shard, epoch as usize % 2)), file).unwrap();
    }

    fn entry(dir: &str, seg_base: i64, pos: u64, data: &[u8]) -> Entry {
        Entry {
            dir: dir.into(),
            seg_base,
            pos,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn replay_writes_entries_in_order_and_retires_the_journals() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("t-0")).unwrap();
        std::fs::create_dir(d.join("t-1")).unwrap();
        // t-0's segment has its first 4 bytes on disk (written behind before the crash)
        std::fs::write(log_path(&d.join("t-0"), 0), b"abcd").unwrap();
        std::fs::write(marker_path(&d.join("t-1")), b"stale").unwrap();
        // a stale set of an older epoch after the valid ones: never replayed
        let mut stale = vec![0u8; set_len(&[entry("t-0", 0, 0, b"ZZZZZZZZ")])];
        encode_set(6, &[entry("t-0", 0, 0, b"ZZZZZZZZ")], &mut stale);
        write_journal(
            d,
            0,
            7,
            &[
                vec![entry("t-0", 0, 0, b"abcd"), entry("t-1", 5, 0, b"123")],
                vec![entry("t-0", 0, 4, b"efgh"), entry("gone-0", 0, 0, b"x")],
            ],
            &stale,
        );
        // shard 1's later epoch (after a change of cores it may hold any log)
        write_journal(d, 1, 2, &[vec![entry("t-1", 5, 3, b"45")]], &[]);
        // a file never used (zeros), and a retired one
        std::fs::write(d.join(JOURNAL_DIR).join("shard-2-0.jnl"), vec![0u8; 8192]).unwrap();
        write_journal(d, 3, 9, &[vec![entry("t-0", 0, 0, b"ZZZZ")]], &[]);
        let p3 = d.join(JOURNAL_DIR).join(file_name(3, 1));
        let mut f3 = std::fs::read(&p3).unwrap();
        let retired = FileHeader {
            shard: 3,
            epoch: 9,
            live: false,
        };
        f3[..PAGE as usize].copy_from_slice(&retired.encode());
        std::fs::write(&p3, f3).unwrap();
        let r = replay_journals(d).unwrap();
        assert_eq!(
            r,
            JournalReplay {
                files: 2,
                record_sets: 3,
                entries: 4,
                bytes: 13,
                skipped: 1
            }
        );
        assert_eq!(
            std::fs::read(log_path(&d.join("t-0"), 0)).unwrap(),
            b"abcdefgh"
        );
        assert_eq!(
            std::fs::read(log_path(&d.join("t-1"), 5)).unwrap(),
            b"12345"
        );
        assert!(!marker_path(&d.join("t-1")).exists());
        assert!(!d.join("gone-0").exists());
        // every journal is retired and stays for reuse: nothing left to replay
        assert_eq!(std::fs::read_dir(d.join(JOURNAL_DIR)).unwrap().count(), 4);
        assert_eq!(replay_journals(d).unwrap(), JournalReplay::default());
        assert_eq!(
            std::fs::read(log_path(&d.join("t-1"), 5)).unwrap(),
            b"12345"
        );
    }

    #[test]
    fn replay_is_idempotent_over_segments_already_written() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("t-0")).unwrap();
        let sets = vec![
            vec![entry("t-0", 0, 0, b"hello ")],
            vec![entry("t-0", 0, 6, b"world")],
        ];
        std::fs::write(log_path(&d.join("t-0"), 0), b"hello world\0\0\0").unwrap();
        write_journal(d, 0, 1, &sets, &[]);
        replay_journals(d).unwrap();
        assert_eq!(
            std::fs::read(log_path(&d.join("t-0"), 0)).unwrap(),
            b"hello world\0\0\0"
        );
        // a crash before the journal was removed: the same replay again changes nothing
        write_journal(d, 0, 1, &sets, &[]);
        replay_journals(d).unwrap();
        assert_eq!(
            std::fs::read(log_path(&d.join("t-0"), 0)).unwrap(),
            b"hello world\0\0\0"
        );
    }
}
