//! `sluice-bench partitions --raw-producers`: load-phase producers that speak the Kafka
//! protocol themselves instead of going through librdkafka.
//!
//! ```text
//!  sender thread: pacer ─► records due (partition i -> its producer, round robin)
//!     every linger.ms (or batch.size bytes): one Produce v9 request, acks=all, one v2
//!     batch per partition holding that partition's records ─► TCP, up to IN_FLIGHT
//!     requests unanswered
//!  reader thread: ProduceResponse ─► each record's partition error; ack latency =
//!     answer time - send time (and - intended time), as the librdkafka path counts it
//! ```
//! Why: with 10,000 partitions librdkafka needs more than a core of this 2-core machine
//! to produce 100 MB/s, and its own queueing then dominates the ack latency it reports.
//! This client costs a small fraction of that, so the latency it reports is the
//! broker's (plus the socket's). It speaks only to the bootstrap broker, which must lead
//! every partition (the partitions bench runs one broker).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use sluice_proto::batch::{build_batch, SimpleRecord};
use sluice_proto::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_proto::kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use sluice_proto::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_proto::request::response_header_len;

use crate::engine::Clock;
use crate::old_formats::request_frame;
use crate::pacer::{Pacer, Step};
use crate::partitions_load::{producer_share, LoadPlan, ProduceTally};
use crate::progress::Counters;
use crate::record::Payload;

/// Produce version spoken (v2 batches, flexible headers).
const VERSION: i16 = 9;
/// Requests unanswered at once on the connection.
const IN_FLIGHT: usize = 64;
/// How long the end waits for the answers still due.
const DRAIN: Duration = Duration::from_secs(60);

/// A request sent and not yet answered: when, and its records (partition index, intended
/// send time).
struct InFlight {
    sent: Duration,
    records: Vec<(u32, Duration)>,
}

/// What the two threads share.
struct Shared {
    in_flight: HashMap<i32, InFlight>,
    tally: ProduceTally,
}

/// Runs producer `me` of the load until the window closes (or `stop`), then waits for
/// its answers; the tally is the librdkafka path's.
pub(crate) fn produce(
    plan: &LoadPlan,
    me: u32,
    clock: Clock,
    t0: Duration,
    window: (Duration, Duration),
    stop: &AtomicBool,
    counters: Arc<Counters>,
) -> Result<ProduceTally> {
    let (owned, tally) = producer_share(plan, me);
    // the plan's partition count fits in u32 (`partitions_load::run` checks it)
    let owned: Vec<u32> = owned.into_iter().map(|i| i as u32).collect();
    if owned.is_empty() {
        return Ok(tally);
    }
    let addr = plan.bootstrap.split(',').next().unwrap_or_default();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let reader = stream.try_clone().context("cloning the socket")?;
    reader.set_read_timeout(Some(Duration::from_millis(200)))?;
    let shared = Arc::new(Mutex::new(Shared {
        in_flight: HashMap::new(),
        tally,
    }));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let reader_dead = Arc::new(AtomicBool::new(false));
    let answers = {
        let (plan, shared, unanswered, sending, counters, dead) = (
            plan.clone(),
            shared.clone(),
            unanswered.clone(),
            sending.clone(),
            counters.clone(),
            reader_dead.clone(),
        );
        std::thread::Builder::new()
            .name(format!("parts-raw-answers-{me}"))
            .spawn(move || {
                let closer = reader.try_clone();
                let r = read_answers(
                    reader,
                    &plan,
                    clock,
                    window,
                    &shared,
                    &unanswered,
                    &sending,
                    &counters,
                );
                if r.is_err() {
                    // the sender stops, and its write in progress fails instead of
                    // blocking on a full socket
                    dead.store(true, Relaxed);
                    if let Ok(s) = closer {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                r
            })
            .context("spawning the answer reader")?
    };
    // the reader ends (within DRAIN) even if the sender panics
    let sender_done = SenderDone(&sending);
    let sent = send_loop(
        plan,
        &owned,
        clock,
        t0,
        window,
        (stop, &reader_dead),
        &counters,
        &mut stream,
        &shared,
        &unanswered,
    );
    drop(sender_done);
    let read = answers
        .join()
        .map_err(|_| anyhow!("the answer reader panicked"))?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let mut sh = shared
        .lock()
        .map_err(|_| anyhow!("producer tally poisoned"))?;
    let mut t = std::mem::take(&mut sh.tally);
    let left: u64 = sh.in_flight.values().map(|f| f.records.len() as u64).sum();
    let (sent, backlog, send_error) = sent;
    t.sent = sent;
    t.backlog = backlog;
    let mut note = |e: String| {
        t.first_error.get_or_insert(e);
    };
    if let Some(e) = send_error {
        t.errors += 1;
        note(e);
    }
    if let Err(e) = read {
        t.errors += 1;
        note(format!("answers: {e:#}"));
    }
    if left > 0 {
        t.errors += left;
        note(format!("{left} records never answered"));
    }
    Ok(t)
}

/// Tells the answer reader that nothing more will be sent, when dropped.
struct SenderDone<'a>(&'a AtomicBool);

impl Drop for SenderDone<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

/// The sender (it stops at the window's end, on `stop`, or once the answer reader
/// died: the two flags of `halt`): returns (records sent, records due but unsent at the window's end, the
/// error that ended it early).
#[allow(clippy::too_many_arguments)]
fn send_loop(
    plan: &LoadPlan,
    owned: &[u32],
    clock: Clock,
    t0: Duration,
    window: (Duration, Duration),
    halt: (&AtomicBool, &AtomicBool),
    counters: &Counters,
    stream: &mut TcpStream,
    shared: &Mutex<Shared>,
    unanswered: &AtomicUsize,
) -> (u64, u64, Option<String>) {
    let linger = Duration::from_secs_f64(plan.producer.linger_ms.max(0.0) / 1e3);
    let max_records = (plan.producer.batch_size as usize / plan.message_size.max(1)).max(1);
    let mut pacer = Pacer::new(Some(plan.msg_per_sec / plan.producers as f64));
    let mut payload = Payload::new(plan.message_size, &mut rand::rng());
    let mut due: Vec<(u32, Duration)> = Vec::new();
    let (mut sent, mut corr, mut last_send) = (0u64, 0i32, Duration::ZERO);
    let halted = || halt.0.load(Relaxed) || halt.1.load(Relaxed);
    loop {
        let now = clock.elapsed();
        if now >= window.1 || halted() {
            return (sent, pacer.backlog(now - t0) + due.len() as u64, None);
        }
        match pacer.step(now - t0) {
            Step::Send { index, intended } => {
                due.push((owned[(index % owned.len() as u64) as usize], t0 + intended));
                if due.len() < max_records {
                    continue;
                }
            }
            Step::Wait(d) => {
                let linger_left = (last_send + linger).saturating_sub(now);
                if due.is_empty() || !linger_left.is_zero() {
                    let nap = if due.is_empty() {
                        d
                    } else {
                        d.min(linger_left)
                    };
                    std::thread::sleep(nap.min(Duration::from_millis(5)));
                    continue;
                }
            }
        }
        while unanswered.load(Relaxed) >= IN_FLIGHT {
            if clock.elapsed() >= window.1 || halted() {
                let backlog = pacer.backlog(clock.elapsed() - t0) + due.len() as u64;
                return (sent, backlog, None);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let at = clock.elapsed();
        let value = payload.stamp(clock.unix_ns(at)).to_vec();
        corr = corr.wrapping_add(1);
        let frame = match produce_request(plan, &due, &value, clock.unix_ns(at)) {
            Ok(body) => request_frame(ApiKey::Produce, VERSION, corr, &body),
            Err(e) => return (sent, 0, Some(format!("encoding a request: {e:#}"))),
        };
        let records = std::mem::take(&mut due);
        let n = records.len() as u64;
        match shared.lock() {
            Ok(mut sh) => {
                sh.in_flight.insert(corr, InFlight { sent: at, records });
            }
            Err(_) => return (sent, 0, Some("producer tally poisoned".into())),
        }
        unanswered.fetch_add(1, Relaxed);
        if let Err(e) = stream.write_all(&frame) {
            // not sent: not in flight either (its records count as the one send error)
            if let Ok(mut sh) = shared.lock() {
                sh.in_flight.remove(&corr);
            }
            unanswered.fetch_sub(1, Relaxed);
            return (sent, 0, Some(format!("send: {e}")));
        }
        sent += n;
        counters.sent.fetch_add(n, Relaxed);
        last_send = at;
    }
}

/// A Produce v9 body (acks=all) with one batch per partition of `due`, each record's
/// value `value`.
fn produce_request(
    plan: &LoadPlan,
    due: &[(u32, Duration)],
    value: &[u8],
    unix_ns: u64,
) -> Result<Vec<u8>> {
    let mut per_part: HashMap<u32, usize> = HashMap::new();
    for (i, _) in due {
        *per_part.entry(*i).or_default() += 1;
    }
    let mut by_topic: HashMap<&str, Vec<PartitionProduceData>> = HashMap::new();
    let ts = (unix_ns / 1_000_000) as i64;
    for (i, n) in per_part {
        let (topic, partition) = &plan.partitions[i as usize];
        let recs: Vec<SimpleRecord<'_>> = (0..n)
            .map(|_| SimpleRecord {
                key: None,
                value: Some(value),
                timestamp: ts,
                headers: &[],
            })
            .collect();
        by_topic.entry(topic).or_default().push(
            PartitionProduceData::default()
                .with_index(*partition)
                .with_records(Some(build_batch(0, &recs))),
        );
    }
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(
            by_topic
                .into_iter()
                .map(|(t, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_data(parts)
                })
                .collect(),
        );
    let mut b = BytesMut::new();
    req.encode(&mut b, VERSION)?;
    Ok(b.to_vec())
}

/// Reads one answer frame; None when the read timed out with nothing read.
fn read_frame(r: &mut TcpStream) -> Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1]) {
        Ok(0) => bail!("the broker closed the connection"),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    }
    read_full(r, &mut len[1..])?;
    let n = i32::from_be_bytes(len);
    ensure!((4..=64 << 20).contains(&n), "answer frame of {n} bytes");
    let mut buf = vec![0u8; n as usize];
    read_full(r, &mut buf)?;
    Ok(Some(Bytes::from(buf)))
}

/// `read_exact` that rides out the socket's read timeout (a frame once begun is read whole).
fn read_full(r: &mut TcpStream, mut buf: &mut [u8]) -> Result<()> {
    let mut idle = 0;
    while !buf.is_empty() {
        match r.read(buf) {
            Ok(0) => bail!("the broker closed the connection mid-answer"),
            Ok(n) => {
                buf = &mut buf[n..];
                idle = 0;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                idle += 1;
                ensure!(idle < 300, "an answer stalled mid-frame for a minute");
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The reader: matches answers to requests until the sender is done and every request is
/// answered (or `DRAIN` after the sender stopped).
#[allow(clippy::too_many_arguments)]
fn read_answers(
    mut r: TcpStream,
    plan: &LoadPlan,
    clock: Clock,
    window: (Duration, Duration),
    shared: &Mutex<Shared>,
    unanswered: &AtomicUsize,
    sending: &AtomicBool,
    counters: &Counters,
) -> Result<()> {
    let mut sender_done_at = None;
    loop {
        if !sending.load(Relaxed) {
            let at = *sender_done_at.get_or_insert_with(|| clock.elapsed());
            if unanswered.load(Relaxed) == 0 || clock.elapsed() >= at + DRAIN {
                return Ok(());
            }
        }
        let Some(mut b) = read_frame(&mut r)? else {
            continue;
        };
        let now = clock.elapsed();
        let header = response_header_len(ApiKey::Produce, VERSION);
        ensure!(b.len() >= header.max(4), "short answer ({} bytes)", b.len());
        let corr = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        b.advance(header);
        let resp = ProduceResponse::decode(&mut b, VERSION).context("decoding an answer")?;
        let mut errors: HashMap<(&str, i32), i16> = HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                errors.insert((&t.name.0, p.index), p.error_code);
            }
        }
        let mut sh = shared
            .lock()
            .map_err(|_| anyhow!("producer tally poisoned"))?;
        let Some(req) = sh.in_flight.remove(&corr) else {
            bail!("an answer to correlation id {corr}, which is not in flight");
        };
        unanswered.fetch_sub(1, Relaxed);
        let in_window = |at: Duration| at >= window.0 && at <= window.1;
        let t = &mut sh.tally;
        for (i, intended) in req.records {
            let (topic, partition) = &plan.partitions[i as usize];
            match errors.get(&(topic.as_str(), *partition)) {
                Some(0) => {
                    counters.acked.fetch_add(1, Relaxed);
                    t.acked_total += 1;
                    if let Some(w) = t.written.get_mut(i as usize) {
                        *w = true;
                    }
                    if in_window(now) {
                        t.acked_in_window += 1;
                    }
                    if in_window(req.sent) {
                        t.hist.record(now.saturating_sub(req.sent));
                    }
                    if in_window(intended) {
                        t.hist_intended.record(now.saturating_sub(intended));
                    }
                }
                other => {
                    counters.errors.fetch_add(1, Relaxed);
                    t.errors += 1;
                    t.first_error.get_or_insert_with(|| match other {
                        Some(code) => format!("{topic}/{partition}: error code {code}"),
                        None => format!("{topic}/{partition}: missing from the answer"),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::batch::BatchIter;

    #[test]
    fn a_request_carries_one_batch_per_partition_with_its_records() {
        let parts: Vec<(String, i32)> = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)];
        let plan = crate::partitions_load::tests::plan(parts, 1);
        let due = [
            (0, Duration::ZERO),
            (2, Duration::ZERO),
            (0, Duration::ZERO),
        ];
        let body =
            produce_request(&plan, &due, b"value", 1_700_000_000_000_000_000).expect("encode");
        let req = ProduceRequest::decode(&mut Bytes::from(body), VERSION).expect("decode");
        assert_eq!(req.acks, -1);
        let mut got: Vec<(String, i32, usize)> = Vec::new();
        for t in &req.topic_data {
            for p in &t.partition_data {
                let records = p.records.clone().expect("records");
                let batches: Vec<_> = BatchIter::new(&records)
                    .map(|b| b.expect("batch").0)
                    .collect();
                assert_eq!(batches.len(), 1);
                got.push((
                    t.name.0.to_string(),
                    p.index,
                    batches[0].records_count as usize,
                ));
            }
        }
        got.sort();
        assert_eq!(got, vec![("a".into(), 0, 2), ("b".into(), 0, 1)]);
    }
}
