//! Transaction helpers shared by the single-node and cluster suites: `sluice txn` with
//! JSON output, a partition's last transactional producer from it, and a late
//! transactional batch produced by hand (as a produce request held up past its
//! transaction's end would arrive). Each call is bounded by the CLI's or `RawClient`'s
//! own timeouts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use sluice_proto::batch::{build_batch, set_transactional_producer, SimpleRecord};

use super::raw::RawClient;

/// `sluice txn <args> --format json` against `bootstrap`, parsed.
pub(crate) fn sluice_txn(bootstrap: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["txn", "-b", bootstrap, "--format", "json"])
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "sluice txn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// (producer id, epoch, next sequence) of the first producer `sluice txn producers` lists
/// for `partition` of `topic`.
pub(crate) fn next_batch_of(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<(i64, i16, i32)> {
    let producers = sluice_txn(bootstrap, &["producers", topic, &partition.to_string()])?;
    let p = producers
        .as_array()
        .and_then(|a| a.first())
        .context("no producer listed")?;
    let pid = p["producer_id"].as_i64().context("producer_id")?;
    let epoch = p["producer_epoch"].as_i64().context("producer_epoch")?;
    let seq = p["last_sequence"].as_i64().context("last_sequence")?;
    Ok((pid, i16::try_from(epoch)?, i32::try_from(seq + 1)?))
}

/// Produces (acks=all, to the broker at `addr`, partition 0 of `topic`) a one-record
/// transactional batch of `producer` = (id, epoch, sequence) under `transactional_id`,
/// with no AddPartitionsToTxn before it; its error code. NOT_ENOUGH_REPLICAS (the
/// coordinator cannot verify yet: its markers for the last transaction are still being
/// written) is retried as a client would, for up to 20 s.
pub(crate) fn produce_late(
    addr: SocketAddr,
    topic: &str,
    transactional_id: &'static str,
    producer: (i64, i16, i32),
) -> Result<i16> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let error = produce_late_once(addr, topic, transactional_id, producer)?;
        if error != 19 || Instant::now() > deadline {
            return Ok(error);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce_late_once(
    addr: SocketAddr,
    topic: &str,
    transactional_id: &'static str,
    (pid, epoch, seq): (i64, i16, i32),
) -> Result<i16> {
    let mut batch = build_batch(
        0,
        &[SimpleRecord {
            key: None,
            value: Some(b"late"),
            timestamp: 1,
            headers: &[],
        }],
    )
    .to_vec();
    set_transactional_producer(&mut batch, pid, epoch, seq);
    let mut c = RawClient::connect(addr)?;
    c.negotiate()?;
    let (error, _) =
        super::kafka::produce_transactional(&mut c, topic, transactional_id, batch.into())?;
    Ok(error)
}
