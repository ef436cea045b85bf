//! `sluice topic delete-records TOPIC --before OFFSET [--partition P]...`: DeleteRecords to
//! each partition's leader (Kafka's `kafka-delete-records.sh`), so records below OFFSET
//! (-1: the high watermark, everything) are gone for readers and their segments are freed.
//! Prints each partition's new low watermark; fails with the Kafka error name of the first
//! partition refused. Leaderless or moving partitions are retried until `--timeout`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::DeleteRecordsRequest;
use serde_json::json;

use super::client::{retriable, topic_name, Client};
use super::format::{kafka_error, print_json, Format, Table};

/// Moves the low watermark of `partitions` of `topic` (all if empty) to `before`.
pub(super) fn run(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    before: i64,
    format: Format,
) -> Result<()> {
    let deadline = Instant::now() + client.timeout();
    let mut left = super::offsets::topic_partitions(client, topic, partitions, deadline)?;
    let mut low: BTreeMap<i32, i64> = BTreeMap::new();
    while !left.is_empty() {
        let leaders = client.leaders(&[topic.to_string()], false, deadline)?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &left {
            let leader = leaders.get(&(topic.to_string(), *p)).copied().unwrap_or(-1);
            by_leader.entry(leader).or_default().push(*p);
        }
        let mut retry = Vec::new();
        let mut last_err = (0, String::new());
        for (leader, ps) in by_leader {
            // the broker answers (REQUEST_TIMED_OUT with the low watermark reached, if the
            // replicas are slow) well before the connection's read timeout
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout_ms = (left - left / 4).as_millis().min(i32::MAX as u128) as i32;
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        ps.iter()
                            .map(|p| {
                                DeleteRecordsPartition::default()
                                    .with_partition_index(*p)
                                    .with_offset(before)
                            })
                            .collect(),
                    )]);
            let answer = client.broker(leader).and_then(|c| c.call(2, &req));
            let resp = match answer {
                Ok((_, r)) => r,
                Err(e) => {
                    client.drop_conn(leader);
                    return Err(e);
                }
            };
            for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                let what = format!("deleting records of {topic}-{}", p.partition_index);
                if p.error_code == 0 {
                    low.insert(p.partition_index, p.low_watermark);
                } else if retriable(p.error_code) {
                    last_err = (p.error_code, what);
                    retry.push(p.partition_index);
                } else {
                    return Err(kafka_error(p.error_code, &what, None));
                }
            }
        }
        if !retry.is_empty() {
            if Instant::now() >= deadline {
                return Err(kafka_error(last_err.0, &last_err.1, None));
            }
            std::thread::sleep(super::client::RETRY_BACKOFF);
        }
        left = retry;
    }
    match format {
        Format::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "LOW-WATERMARK"]);
            for (p, lw) in &low {
                t.row(vec![topic.to_string(), p.to_string(), lw.to_string()]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&json!({
            "topic": topic,
            "partitions": low
                .iter()
                .map(|(p, lw)| json!({"partition": p, "low_watermark": lw}))
                .collect::<Vec<_>>(),
        })),
    }
    Ok(())
}
