//! `sluice txn`: transactions as their coordinators and partition leaders see them, the
//! verbs of Kafka's `kafka-transactions.sh`: `list` (ListTransactions of every broker),
//! `describe ID` (DescribeTransactions at the id's coordinator), `producers TOPIC
//! PARTITION` (DescribeProducers at the leader) and `abort` of a hanging transaction (one
//! its coordinator does not know, holding a partition's last stable offset): the producer
//! whose transaction started at `--start-offset` is found with DescribeProducers, and an
//! ABORT marker is written with WriteTxnMarkers at its epochs, as Kafka's tool does.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
    TransactionalId, WriteTxnMarkersRequest,
};
use serde_json::{json, Value};

use super::client::{str_bytes, topic_name, Client};
use super::format::{kafka_error, print_json, Format, Table};
use super::ClientArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TxnVerb {
    /// Every transactional id the brokers' coordinators know, with its state.
    List,
    /// One transactional id: state, producer id and epoch, timeout, partitions.
    Describe { transactional_id: String },
    /// The producers of one partition (its leader's producer state).
    Producers { topic: String, partition: i32 },
    /// Abort the transaction that started at --start-offset of a partition (a hanging one).
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        start_offset: i64,
    },
}

pub(crate) fn run(verb: &TxnVerb, args: &ClientArgs) -> Result<()> {
    let mut client = Client::connect(args)?;
    match verb {
        TxnVerb::List => list(&mut client, args.format),
        TxnVerb::Describe { transactional_id } => {
            describe(&mut client, transactional_id, args.format)
        }
        TxnVerb::Producers { topic, partition } => {
            let states = producers(&mut client, topic, *partition)?;
            print_producers(&states, args.format);
            Ok(())
        }
        TxnVerb::Abort {
            topic,
            partition,
            start_offset,
        } => abort(&mut client, topic, *partition, *start_offset, args.format),
    }
}

fn list(client: &mut Client, format: Format) -> Result<()> {
    client.metadata(Some(&[]), false)?;
    let ids: Vec<i32> = client.brokers().keys().copied().collect();
    let mut txns: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for id in ids {
        let (_, resp) = client
            .broker(id)?
            .call(1, &ListTransactionsRequest::default())?;
        if resp.error_code != 0 {
            return Err(kafka_error(
                resp.error_code,
                &format!("listing the transactions of broker {id}"),
                None,
            ));
        }
        for t in resp.transaction_states {
            txns.insert(
                t.transactional_id.0.to_string(),
                (t.producer_id.0, t.transaction_state.to_string()),
            );
        }
    }
    match format {
        Format::Table => {
            let mut t = Table::new(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"]);
            for (id, (pid, state)) in &txns {
                t.row(vec![id.clone(), pid.to_string(), state.clone()]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&Value::Array(
            txns.iter()
                .map(|(id, (pid, state))| {
                    json!({"transactional_id": id, "producer_id": pid, "state": state})
                })
                .collect(),
        )),
    }
    Ok(())
}

fn describe(client: &mut Client, id: &str, format: Format) -> Result<()> {
    let conn = client.coordinator_of(id, 1)?;
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(str_bytes(id))]);
    let (_, resp) = conn.call(0, &req)?;
    let d = resp
        .transaction_states
        .into_iter()
        .next()
        .context("DescribeTransactions answered nothing")?;
    if d.error_code != 0 {
        return Err(kafka_error(
            d.error_code,
            &format!("describing '{id}'"),
            None,
        ));
    }
    let partitions: Vec<(String, i32)> = d
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), *p))
        })
        .collect();
    match format {
        Format::Table => {
            let mut t = Table::new(&[
                "TRANSACTIONAL-ID",
                "STATE",
                "PRODUCER-ID",
                "EPOCH",
                "TIMEOUT-MS",
                "START-MS",
                "PARTITIONS",
            ]);
            t.row(vec![
                id.to_string(),
                d.transaction_state.to_string(),
                d.producer_id.0.to_string(),
                d.producer_epoch.to_string(),
                d.transaction_timeout_ms.to_string(),
                d.transaction_start_time_ms.to_string(),
                partitions
                    .iter()
                    .map(|(t, p)| format!("{t}-{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
            print!("{}", t.render());
        }
        Format::Json => print_json(&json!({
            "transactional_id": id,
            "state": d.transaction_state.to_string(),
            "producer_id": d.producer_id.0,
            "producer_epoch": d.producer_epoch,
            "transaction_timeout_ms": d.transaction_timeout_ms,
            "transaction_start_time_ms": d.transaction_start_time_ms,
            "partitions": partitions.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}

/// The leader of `topic`-`partition` and its answer to DescribeProducers.
fn producers(client: &mut Client, topic: &str, partition: i32) -> Result<Vec<ProducerState>> {
    let deadline = std::time::Instant::now() + client.timeout();
    let leaders = client.leaders(&[topic.to_string()], false, deadline)?;
    let leader = *leaders
        .get(&(topic.to_string(), partition))
        .with_context(|| format!("no partition {topic}-{partition}"))?;
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(topic_name(topic))
        .with_partition_indexes(vec![partition])]);
    let (_, resp) = client.broker(leader)?.call(0, &req)?;
    let part = resp
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == partition)
        .context("DescribeProducers answered without the partition")?;
    if part.error_code != 0 {
        return Err(kafka_error(
            part.error_code,
            &format!("describing the producers of {topic}-{partition}"),
            part.error_message.as_deref(),
        ));
    }
    Ok(part.active_producers)
}

fn print_producers(states: &[ProducerState], format: Format) {
    match format {
        Format::Table => {
            let mut t = Table::new(&[
                "PRODUCER-ID",
                "EPOCH",
                "LAST-SEQUENCE",
                "LAST-TIMESTAMP",
                "COORDINATOR-EPOCH",
                "TXN-START-OFFSET",
            ]);
            for s in states {
                t.row(vec![
                    s.producer_id.0.to_string(),
                    s.producer_epoch.to_string(),
                    s.last_sequence.to_string(),
                    s.last_timestamp.to_string(),
                    s.coordinator_epoch.to_string(),
                    s.current_txn_start_offset.to_string(),
                ]);
            }
            print!("{}", t.render());
        }
        Format::Json => print_json(&Value::Array(
            states
                .iter()
                .map(|s| {
                    json!({
                        "producer_id": s.producer_id.0,
                        "producer_epoch": s.producer_epoch,
                        "last_sequence": s.last_sequence,
                        "last_timestamp": s.last_timestamp,
                        "coordinator_epoch": s.coordinator_epoch,
                        "current_txn_start_offset": s.current_txn_start_offset,
                    })
                })
                .collect(),
        )),
    }
}

fn abort(
    client: &mut Client,
    topic: &str,
    partition: i32,
    start: i64,
    format: Format,
) -> Result<()> {
    let states = producers(client, topic, partition)?;
    let Some(p) = states.iter().find(|s| s.current_txn_start_offset == start) else {
        bail!("no transaction of {topic}-{partition} started at offset {start} (see `sluice txn producers {topic} {partition}`)");
    };
    let epoch = i16::try_from(p.producer_epoch).context("producer epoch out of range")?;
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(p.producer_id)
        .with_producer_epoch(epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(p.coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![partition])])]);
    let deadline = std::time::Instant::now() + client.timeout();
    let leader =
        client.leaders(&[topic.to_string()], false, deadline)?[&(topic.to_string(), partition)];
    let (_, resp) = client.broker(leader)?.call(1, &req)?;
    let code = resp
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| &t.partitions)
        .find(|x| x.partition_index == partition)
        .map_or(-1, |x| x.error_code);
    if code != 0 {
        return Err(kafka_error(
            code,
            &format!("aborting the transaction at {topic}-{partition}@{start}"),
            None,
        ));
    }
    match format {
        Format::Table => println!(
            "aborted the transaction of producer {} (epoch {epoch}) that started at {topic}-{partition}@{start}",
            p.producer_id.0
        ),
        Format::Json => print_json(&json!({"topic": topic, "partition": partition, "start_offset": start, "producer_id": p.producer_id.0, "producer_epoch": epoch, "aborted": true})),
    }
    Ok(())
}
