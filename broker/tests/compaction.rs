//! Compacted topics through the broker: `cleanup.policy=compact` topics keep the latest
//! record of every key at its original offset once the cleaner has run; records without a
//! key are refused with INVALID_RECORD; `__consumer_offsets` is compacted, so a group with
//! 100,000 commits restarts from a log the size of its latest offsets. Brokers run with
//! log.cleaner.backoff.ms=100 so the cleaner comes quickly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::kafka::{connect, topic_name};
use common::raw::RawClient;
use common::{block_on, BrokerProcess};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const CLEANER: &[(&str, &str)] = &[
    ("log.cleaner.backoff.ms", "100"),
    ("offsets.topic.num.partitions", "1"),
    ("offsets.topic.segment.bytes", "1048576"),
];

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The base offset of the newest segment in a partition directory.
fn active_segment_base(dir: &Path) -> Result<i64> {
    let mut bases = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<i64>().ok())
        {
            bases.push(base);
        }
    }
    bases.into_iter().max().context("no segment")
}

/// Waits (bounded) until `dir` holds at most `bytes`.
fn wait_smaller(dir: &Path, bytes: u64, what: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = dir_bytes(dir);
        if now <= bytes {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: {} still holds {now} bytes after 60 s, want <= {bytes}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One OffsetCommit of a simple (group-less member) consumer: generation -1, no member.
fn commit(c: &mut RawClient, group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) -> Result<()> {
    let version = c.version_for::<OffsetCommitRequest>(8)?;
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )]);
    let resp = c.call(version, &req)?;
    for t in &resp.topics {
        for p in &t.partitions {
            ensure!(
                p.error_code == 0,
                "commit {topic}/{}: error {}",
                p.partition_index,
                p.error_code
            );
        }
    }
    Ok(())
}

fn fetch_offsets(
    c: &mut RawClient,
    group: &str,
    topic: &str,
    parts: i32,
) -> Result<BTreeMap<i32, i64>> {
    let version = c.version_for::<OffsetFetchRequest>(7)?;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes((0..parts).collect())]));
    let resp = c.call(version, &req)?;
    ensure!(
        resp.error_code == 0,
        "OffsetFetch error {}",
        resp.error_code
    );
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            ensure!(
                p.error_code == 0,
                "OffsetFetch {}: error {}",
                p.partition_index,
                p.error_code
            );
            out.insert(p.partition_index, p.committed_offset);
        }
    }
    Ok(out)
}

#[test]
fn a_group_with_100k_commits_restarts_from_the_compacted_offsets_log() -> Result<()> {
    let mut broker = BrokerProcess::spawn_with(1, CLEANER)?;
    let (topic, group, parts) = ("commits", "g100k", 100);
    broker.create_topic(topic, parts, &[])?;
    let mut c = connect(&broker)?;
    let mut last = BTreeMap::new();
    for round in 0..1_000i64 {
        let offsets: BTreeMap<i32, i64> =
            (0..parts).map(|p| (p, round * 10 + i64::from(p))).collect();
        commit(&mut c, group, topic, &offsets)?;
        last = offsets;
    }
    let dir = broker.data_dir().join("__consumer_offsets-0");
    let (_, written) = broker.watermarks("__consumer_offsets", 0)?;
    ensure!(
        written >= 100_000,
        "100,000 commits wrote only {written} records"
    );
    // the cleaner keeps one record per partition in the cleaned segments; the active
    // segment (at most 1 MiB) is never cleaned: ~10 MB of commits come down to ~1 MiB
    let after = wait_smaller(&dir, (2 << 20) + (64 << 10), "__consumer_offsets")?;
    eprintln!("__consumer_offsets-0: {written} records in {after} bytes");
    ensure!(
        fetch_offsets(&mut c, group, topic, parts)? == last,
        "offsets before the restart"
    );
    drop(c);

    broker.kill9()?;
    broker.restart()?;
    let mut c = connect(&broker)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match fetch_offsets(&mut c, group, topic, parts) {
            Ok(got) if got == last => break,
            Ok(got) if Instant::now() > deadline => {
                bail!(
                    "after restart {} offsets differ, e.g. {:?}",
                    got.len(),
                    got.iter().next()
                )
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("OffsetFetch after restart")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    Ok(())
}

/// Sends `records` (key, value; None value = tombstone) to partition 0 and returns each
/// one's offset.
fn produce_keyed(
    broker: &BrokerProcess,
    topic: &str,
    records: &[(String, Option<String>)],
) -> Result<Vec<i64>> {
    let producer =
        broker.producer(&[("compression.type", "lz4"), ("batch.num.messages", "500")])?;
    let mut futures = Vec::new();
    for (k, v) in records {
        let mut rec = FutureRecord::to(topic).partition(0).key(k.as_str());
        if let Some(v) = v {
            rec = rec.payload(v.as_str());
        }
        match producer.send_result(rec) {
            Ok(f) => futures.push(f),
            Err((e, _)) => bail!("enqueue: {e}"),
        }
    }
    block_on(async {
        let mut offsets = Vec::new();
        for f in futures {
            match f.await {
                Ok(Ok(d)) => offsets.push(d.offset),
                Ok(Err((e, _))) => bail!("produce: {e}"),
                Err(_) => bail!("produce cancelled"),
            }
        }
        Ok(offsets)
    })
}

/// Every record of partition 0 below `end`: (offset, key, value).
fn read_all(
    broker: &BrokerProcess,
    topic: &str,
    end: i64,
) -> Result<Vec<(i64, String, Option<String>)>> {
    let c = broker.consumer(&[])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|(o, _, _)| *o < end - 1) {
        if Instant::now() > deadline {
            bail!(
                "read {} records of {topic}, the last at {:?}, want up to {}",
                out.len(),
                out.last().map(|r: &(i64, String, Option<String>)| r.0),
                end - 1
            );
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
            ));
        }
    }
    Ok(out)
}

/// The last record of every key among those produced below offset `limit`, without
/// tombstones, in offset order.
fn latest_below(
    records: &[(String, Option<String>)],
    offsets: &[i64],
    limit: i64,
) -> Vec<(i64, String, Option<String>)> {
    let mut last: BTreeMap<&str, (i64, &Option<String>)> = BTreeMap::new();
    for ((k, v), o) in records.iter().zip(offsets) {
        if *o < limit {
            last.insert(k, (*o, v));
        }
    }
    let mut out: Vec<_> = last
        .into_iter()
        .filter(|(_, (_, v))| v.is_some())
        .map(|(k, (o, v))| (o, k.to_string(), v.clone()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_of_every_key_at_its_offset() -> Result<()> {
    let mut broker = BrokerProcess::spawn_with(1, CLEANER)?;
    let topic = "latest";
    broker.create_topic(
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    )?;
    // 20,000 updates of 200 keys, every 10th a tombstone, then one more write per key so
    // the last segment (never cleaned) holds nothing that decides the answer
    let mut records = Vec::new();
    for i in 0..20_000u32 {
        let key = format!("key-{}", (i * 7919) % 200);
        let value = (i % 10 != 9).then(|| format!("value-{i}-{}", "x".repeat(40)));
        records.push((key, value));
    }
    let offsets = produce_keyed(&broker, topic, &records)?;
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for ((k, v), o) in records.iter().zip(&offsets) {
        latest.insert(k.clone(), (*o, v.clone()));
    }
    let end = offsets.last().copied().unwrap_or(0) + 1;
    let check = |got: &[(i64, String, Option<String>)], what: &str| -> Result<()> {
        // whatever has been cleaned, the latest record of every key is there, unchanged
        let mut last: BTreeMap<&str, (i64, &Option<String>)> = BTreeMap::new();
        for (o, k, v) in got {
            last.insert(k, (*o, v));
        }
        for (k, (o, v)) in &latest {
            if v.is_some() {
                ensure!(
                    last.get(k.as_str()) == Some(&(*o, v)),
                    "{what}: key {k} reads {:?}, want {:?}",
                    last.get(k.as_str()),
                    (o, v)
                );
            }
        }
        Ok(())
    };
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let active = active_segment_base(&dir)?;
    ensure!(
        active > 10_000,
        "the active segment starts at {active}: too little to clean"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read_all(&broker, topic, end)?;
        check(&got, "while cleaning")?;
        // the active segment is never cleaned, and the cleaner's key map covers only what
        // lies below it: below it, each key keeps its last record there, tombstones go
        let cleaned_part: Vec<_> = got.iter().filter(|r| r.0 < active).cloned().collect();
        let want_part = latest_below(&records, &offsets, active);
        if cleaned_part == want_part {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after 60 s the log below {} still has {} records, want {}",
            end - 2_000,
            cleaned_part.len(),
            want_part.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    broker.kill9()?;
    broker.restart()?;
    let got = read_all(&broker, topic, end)?;
    check(&got, "after kill -9 and restart")?;
    Ok(())
}

#[test]
fn a_record_without_a_key_is_refused_by_a_compacted_topic() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, CLEANER)?;
    broker.create_topic("keyed", 1, &[("cleanup.policy", "compact")])?;
    let producer = broker.producer(&[])?;
    let result = block_on(
        producer.send(
            FutureRecord::<str, str>::to("keyed")
                .partition(0)
                .payload("no key"),
            Duration::from_secs(10),
        ),
    );
    match result {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {}
        other => bail!(
            "keyless record: {:?}, want INVALID_RECORD",
            other.map(|d| d.offset)
        ),
    }
    // a keyed record goes in
    block_on(producer.send(
        FutureRecord::to("keyed").partition(0).key("k").payload("v"),
        Duration::from_secs(10),
    ))
    .map_err(|(e, _)| e)?;
    Ok(())
}
