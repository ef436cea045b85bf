//! The durability checks of `sluice-bench partitions`: one acks=all record to every
//! partition (seed), and after a restart every partition's latest offset against the
//! offsets those records were acked at (verify).
//!
//! ```text
//!  seed:   send 1 record per partition ─► delivery reports ─► expected[i] = offset + 1
//!  verify: ListOffsets (latest) of every partition, one round ─► latest[i] >= expected[i]?
//!          a round that fails as a whole is retried (bounded); the first failure is kept
//! ```
//! A shortfall is an error in the layout's report; a late answer is a note.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::{consumer_config, producer_config, ProducerSettings};
use crate::partitions_load::TopicPartition;
use crate::partitions_report::{LayoutRun, Verify};
use crate::record::Payload;

/// Partitions named in `Verify::examples` and in the error line.
const EXAMPLES: usize = 5;

/// Offsets of the seed records, by partition index; the delivery callback's half.
struct SeedAcks {
    offsets: Mutex<Vec<Option<i64>>>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for SeedAcks {}

impl ProducerContext for SeedAcks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Ok(m) => {
                if let Ok(mut o) = self.offsets.lock() {
                    if let Some(slot) = o.get_mut(index) {
                        *slot = Some(m.offset());
                    }
                }
            }
            Err((e, _)) => {
                if let Ok(mut f) = self.first_error.lock() {
                    f.get_or_insert_with(|| format!("seed delivery: {e}"));
                }
            }
        }
    }
}

/// Produces one acks=all record to every partition and raises `expected[i]` to the
/// acked offset + 1. Returns the records acked; a partition without an ack is an error.
pub(crate) fn seed(
    bootstrap: &str,
    parts: &[TopicPartition],
    settings: &ProducerSettings,
    message_size: usize,
    expected: &mut [i64],
    timeout: Duration,
) -> Result<u64> {
    let ctx = SeedAcks {
        offsets: Mutex::new(vec![None; parts.len()]),
        first_error: Mutex::new(None),
    };
    let producer: ThreadedProducer<SeedAcks> = producer_config(bootstrap, settings)
        .create_with_context(ctx)
        .context("creating the seed producer")?;
    let mut payload = Payload::new(message_size, &mut rand::rng());
    let bytes = payload.stamp(0);
    let deadline = Instant::now() + timeout;
    for (i, (topic, p)) in parts.iter().enumerate() {
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, i)
            .partition(*p)
            .payload(bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("seeding {topic}-{p}: {e}"),
            }
        }
    }
    let flushed = producer.flush(deadline.saturating_duration_since(Instant::now()));
    let ctx = producer.context();
    let offsets = ctx
        .offsets
        .lock()
        .map_err(|_| anyhow!("seed offsets poisoned"))?
        .clone();
    let mut acked = 0;
    let mut unacked = Vec::new();
    for (i, o) in offsets.iter().enumerate() {
        match o {
            Some(off) => {
                acked += 1;
                expected[i] = expected[i].max(off + 1);
            }
            None => unacked.push(format!("{}-{}", parts[i].0, parts[i].1)),
        }
    }
    if !unacked.is_empty() {
        let why = ctx.first_error.lock().ok().and_then(|f| f.clone());
        bail!(
            "{} of {} partitions did not ack their seed record ({}; {}): {}",
            unacked.len(),
            parts.len(),
            flushed.err().map_or("flushed".into(), |e| e.to_string()),
            why.unwrap_or_else(|| "no delivery error".into()),
            unacked[..unacked.len().min(EXAMPLES)].join(", ")
        );
    }
    Ok(acked)
}

/// Every partition's latest offset, in one ListOffsets round of a fresh client.
fn latest_offsets(
    bootstrap: &str,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<HashMap<(String, i32), Result<i64, String>>> {
    let client: BaseConsumer = consumer_config(bootstrap, None, false, &[])
        .create()
        .context("creating an offsets client")?;
    let mut tpl = TopicPartitionList::with_capacity(parts.len());
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, Offset::End)?;
    }
    let got = client
        .offsets_for_times(tpl, timeout)
        .context("ListOffsets (latest) of every partition")?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let v = match (e.error(), e.offset()) {
                (Err(err), _) => Err(err.to_string()),
                (Ok(()), Offset::Offset(o)) => Ok(o),
                (Ok(()), other) => Err(format!("no offset ({other:?})")),
            };
            ((e.topic().to_string(), e.partition()), v)
        })
        .collect())
}

/// Checks every partition's latest offset against `expected`. A round that fails as a
/// whole is retried every 200 ms until `timeout`; the attempts and the first failure are
/// kept in the result.
pub(crate) fn verify(
    bootstrap: &str,
    parts: &[TopicPartition],
    expected: &[i64],
    timeout: Duration,
) -> Result<Verify> {
    let t = Instant::now();
    let deadline = t + timeout;
    let mut v = Verify {
        partitions: parts.len() as u64,
        ..Verify::default()
    };
    let latest = loop {
        v.attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match latest_offsets(bootstrap, parts, left.min(Duration::from_secs(30))) {
            Ok(l) => break l,
            Err(e) if Instant::now() + Duration::from_millis(200) < deadline => {
                v.first_failure.get_or_insert(format!("{e:#}"));
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.context(format!("{} attempts in {timeout:?}", v.attempts))),
        }
    };
    v.answered_after_seconds = t.elapsed().as_secs_f64();
    for (i, (t, p)) in parts.iter().enumerate() {
        let problem = match latest.get(&(t.clone(), *p)) {
            None => Some("not in the ListOffsets answer".to_string()),
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(o)) if *o < expected[i] => Some(format!(
                "latest offset {o}, acked up to {}",
                expected[i] - 1
            )),
            Some(Ok(_)) => None,
        };
        if let Some(what) = problem {
            v.missing += 1;
            if v.examples.len() < EXAMPLES {
                v.examples.push(format!("{t}-{p}: {what}"));
            }
        }
    }
    Ok(v)
}

/// Records a failed check in `errors`, and ListOffsets rounds that failed before one
/// answered in `notes`.
pub(crate) fn check(what: &str, v: &Verify, run: &mut LayoutRun) {
    if v.missing > 0 {
        run.errors.push(format!(
            "{what}: {} of {} partitions lost acked records: {}",
            v.missing,
            v.partitions,
            v.examples.join("; ")
        ));
    }
    if let Some(f) = &v.first_failure {
        run.notes.push(format!(
            "{what}: ListOffsets answered only at attempt {}, {:.2} s after the start was complete; first failure: {f}",
            v.attempts, v.answered_after_seconds
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_record_is_an_error_and_a_late_answer_a_note() {
        let mut run = LayoutRun::default();
        let ok = Verify {
            partitions: 3,
            attempts: 1,
            ..Verify::default()
        };
        check("x", &ok, &mut run);
        assert!(run.errors.is_empty() && run.notes.is_empty());
        let lost = Verify {
            partitions: 3,
            missing: 1,
            examples: vec!["t-2: latest offset 0, acked up to 0".into()],
            attempts: 4,
            first_failure: Some("UnknownTopicOrPartition".into()),
            answered_after_seconds: 0.75,
        };
        check("after kill -9", &lost, &mut run);
        assert_eq!(
            run.errors,
            vec!["after kill -9: 1 of 3 partitions lost acked records: t-2: latest offset 0, acked up to 0"]
        );
        assert_eq!(
            run.notes,
            vec!["after kill -9: ListOffsets answered only at attempt 4, 0.75 s after the start was complete; first failure: UnknownTopicOrPartition"]
        );
    }
}
