//! Helpers shared by the storage integration tests: a glommio runner, temp dirs on a
//! filesystem that supports O_DIRECT (under the cargo target dir), batch builders.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use sluice_proto::batch::{build_batch, SimpleRecord};
use std::future::Future;

pub fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::default()
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
