//! `sluice topic offsets TOPIC [--partition P]...`: each partition's earliest offset (its
//! log start, the low watermark after DeleteRecords) and latest (the high watermark),
//! from its leader by ListOffsets, as Kafka's `kafka-get-offsets.sh` prints them.

use std::time::Instant;

use anyhow::Result;
use kafka_protocol::ResponseError;
use serde_json::json;

use super::client::{Client, EARLIEST, LATEST};
use super::format::{kafka_error, print_json, Format, Table};

/// The partitions of `topic` named in `named` (each must exist), or all of them, sorted.
pub(super) fn topic_partitions(
    client: &mut Client,
    topic: &str,
    named: &[i32],
    deadline: Instant,
) -> Result<Vec<i32>> {
    let leaders = client.leaders(&[topic.to_string()], false, deadline)?;
    let all: Vec<i32> = leaders.keys().map(|(_, p)| *p).collect();
    if named.is_empty() {
        return Ok(all);
    }
    if let Some(p) = named.iter().find(|p| !all.contains(p)) {
        return Err(kafka_error(
            ResponseError::UnknownTopicOrPartition.code(),
            &format!("partition {topic}-{p}"),
            None,
        ));
    }
    let mut v = named.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

pub(super) fn run(client: &mut Client, topic: &str, named: &[i32], format: Format) -> Result<()> {
    let deadline = Instant::now() + client.timeout();
    let parts: Vec<(String, i32)> = topic_partitions(client, topic, named, deadline)?
        .into_iter()
        .map(|p| (topic.to_string(), p))
        .collect();
    let earliest = client.list_offsets(&parts, EARLIEST)?;
    let latest = client.list_offsets(&parts, LATEST)?;
    let rows: Vec<(i32, i64, i64)> = parts
        .iter()
        .map(|tp| {
            let e = earliest.get(tp).copied().unwrap_or(-1);
            let l = latest.get(tp).copied().unwrap_or(-1);
            (tp.1, e, l)
        })
        .collect();
    match format {
        Format::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "EARLIEST", "LATEST"]);
            for (p, e, l) in &rows {
                t.row(vec![
                    topic.to_string(),
                    p.to_string(),
                    e.to_string(),
                    l.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&json!({
            "topic": topic,
            "partitions": rows
                .iter()
                .map(|(p, e, l)| json!({"partition": p, "earliest": e, "latest": l}))
                .collect::<Vec<_>>(),
        })),
    }
    Ok(())
}
