//! rdkafka producer → sluice → rdkafka consumer, once per compression codec: 100,000 keyed
//! records over 12 partitions with acks=all. Every record must come back exactly once, at
//! the (partition, offset) its delivery report named, in send order within its partition,
//! in the partition the Java murmur2 partitioner picks for its key.

mod common;

use anyhow::{bail, ensure, Result};
use common::raw::{first_batch_codec, RawClient};
use common::{block_on, payload_seq, record_key, record_payload, BrokerProcess};
use rdkafka::producer::FutureRecord;
use sluice_proto::murmur2::partition_for_key;
use std::collections::{BTreeMap, HashMap};

const RECORDS: u64 = 100_000;
const PARTITIONS: i32 = 12;
const KEYS: u64 = 5_000;

fn roundtrip(codec: &str) -> Result<()> {
    let broker = BrokerProcess::spawn(2)?;
    let topic = format!("codec-{codec}");
    broker.create_topic(&topic, PARTITIONS, &[])?;

    let producer =
        broker.producer(&[("compression.codec", codec), ("batch.num.messages", "2000")])?;
    let mut futures = Vec::with_capacity(RECORDS as usize);
    for seq in 0..RECORDS {
        let key = record_key(seq, KEYS);
        let payload = record_payload(seq);
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        match producer.send_result(record) {
            Ok(f) => futures.push(f),
            Err((e, _)) => bail!("enqueue of seq {seq} failed: {e}"),
        }
    }
    // seq -> (partition, offset) from the delivery reports.
    let mut delivered: Vec<(i32, i64)> = Vec::with_capacity(RECORDS as usize);
    block_on(async {
        for (seq, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(Ok(d)) => delivered.push((d.partition, d.offset)),
                Ok(Err((e, _))) => bail!("seq {seq} not acknowledged: {e}"),
                Err(_) => bail!("seq {seq}: delivery future cancelled"),
            }
        }
        Ok(())
    })?;

    // Per partition, the offsets the broker assigned are 0..n without gaps.
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (seq, &(p, o)) in delivered.iter().enumerate() {
        let key = record_key(seq as u64, KEYS);
        ensure!(
            p == partition_for_key(key.as_bytes(), PARTITIONS),
            "seq {seq} key {key} went to partition {p}, murmur2 says {}",
            partition_for_key(key.as_bytes(), PARTITIONS)
        );
        per_partition.entry(p).or_default().push(o);
    }
    for (p, offsets) in &per_partition {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        ensure!(
            sorted == want,
            "partition {p}: acked offsets are not 0..{} without gaps",
            offsets.len()
        );
        let (low, high) = broker.watermarks(&topic, *p)?;
        ensure!(
            (low, high) == (0, offsets.len() as i64),
            "partition {p} watermarks {low}..{high}, acked {}",
            offsets.len()
        );
    }

    let consumed = broker.consume_all(&topic, PARTITIONS)?;
    ensure!(
        consumed.len() as u64 == RECORDS,
        "consumed {} records, produced {RECORDS}",
        consumed.len()
    );
    let mut seen = vec![false; RECORDS as usize];
    let mut last: HashMap<i32, (i64, u64)> = HashMap::new();
    for c in &consumed {
        let payload = c.payload.as_deref().unwrap_or_default();
        let seq = payload_seq(payload)?;
        ensure!(seq < RECORDS, "unknown seq {seq}");
        ensure!(
            !seen[seq as usize],
            "seq {seq} consumed twice (second at {}@{})",
            c.partition,
            c.offset
        );
        seen[seq as usize] = true;
        ensure!(
            (c.partition, c.offset) == delivered[seq as usize],
            "seq {seq} consumed at {}@{} but acked at {:?}",
            c.partition,
            c.offset,
            delivered[seq as usize]
        );
        ensure!(
            payload == record_payload(seq).as_bytes(),
            "seq {seq}: payload differs"
        );
        ensure!(
            c.key.as_deref() == Some(record_key(seq, KEYS).as_bytes()),
            "seq {seq}: key differs"
        );
        if let Some(&(prev_off, prev_seq)) = last.get(&c.partition) {
            ensure!(
                c.offset > prev_off && seq > prev_seq,
                "partition {} out of order: {prev_off}/{prev_seq} then {}/{seq}",
                c.partition,
                c.offset
            );
        }
        last.insert(c.partition, (c.offset, seq));
    }
    ensure!(seen.iter().all(|s| *s), "some records were never consumed");
    // Timestamps survive: librdkafka stamps create time, so every record has one.
    ensure!(
        consumed.iter().all(|c| c.timestamp.is_some_and(|t| t > 0)),
        "a record lost its timestamp"
    );
    drop(producer);

    // The broker keeps the producer's compression (compression.type=producer): the
    // stored batches carry the codec the producer chose.
    let want_codec = match codec {
        "none" => 0,
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        "zstd" => 4,
        other => bail!("unknown codec {other}"),
    };
    let mut raw = RawClient::connect(broker.addr())?;
    raw.negotiate()?;
    let (err, _, records) = raw.fetch_once(&topic, 0, 0)?;
    ensure!(err == 0, "raw fetch error {err}");
    let got = first_batch_codec(&records)?;
    ensure!(
        got == want_codec,
        "stored batch codec {got}, producer used {codec} ({want_codec})"
    );
    Ok(())
}

#[test]
fn roundtrip_100k_keyed_uncompressed() -> Result<()> {
    roundtrip("none")
}

#[test]
fn roundtrip_100k_keyed_gzip() -> Result<()> {
    roundtrip("gzip")
}

#[test]
fn roundtrip_100k_keyed_snappy() -> Result<()> {
    roundtrip("snappy")
}

#[test]
fn roundtrip_100k_keyed_lz4() -> Result<()> {
    roundtrip("lz4")
}

#[test]
fn roundtrip_100k_keyed_zstd() -> Result<()> {
    roundtrip("zstd")
}

/// librdkafka's idempotent producer (InitProducerId, sequence numbers) end to end: every
/// record once, in order, no fatal idempotence error.
#[test]
fn idempotent_producer_roundtrip() -> Result<()> {
    const N: u64 = 20_000;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("idempotent", 4, &[])?;
    let producer = broker.producer(&[
        ("enable.idempotence", "true"),
        ("message.send.max.retries", "5"),
        ("max.in.flight.requests.per.connection", "5"),
    ])?;
    let mut futures = Vec::new();
    for seq in 0..N {
        let key = record_key(seq, 100);
        let payload = record_payload(seq);
        match producer.send_result(FutureRecord::to("idempotent").key(&key).payload(&payload)) {
            Ok(f) => futures.push(f),
            Err((e, _)) => bail!("enqueue {seq}: {e}"),
        }
    }
    let mut delivered = Vec::new();
    block_on(async {
        for (seq, f) in futures.into_iter().enumerate() {
            match f.await {
                Ok(Ok(d)) => delivered.push((d.partition, d.offset)),
                Ok(Err((e, _))) => bail!("seq {seq} not acked: {e}"),
                Err(_) => bail!("seq {seq}: delivery cancelled"),
            }
        }
        Ok(())
    })?;
    let consumed = broker.consume_all("idempotent", 4)?;
    ensure!(
        consumed.len() as u64 == N,
        "consumed {} of {N}",
        consumed.len()
    );
    for c in &consumed {
        let seq = payload_seq(c.payload.as_deref().unwrap_or_default())?;
        ensure!(
            delivered.get(seq as usize) == Some(&(c.partition, c.offset)),
            "seq {seq} at {}@{}, acked at {:?}",
            c.partition,
            c.offset,
            delivered.get(seq as usize)
        );
    }
    Ok(())
}

/// Record shapes that are easy to get wrong: headers (including a null header value), a
/// null key, an empty value, a null value (tombstone) and a ~900 KB value.
#[test]
fn headers_null_keys_empty_and_large_values_roundtrip() -> Result<()> {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("shapes", 1, &[])?;
    let producer = broker.producer(&[("linger.ms", "0"), ("message.max.bytes", "1000000")])?;
    let big = "B".repeat(900_000);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "empty",
            value: Some(""),
        })
        .insert(Header::<&str> {
            key: "null",
            value: None,
        });
    block_on(async {
        let sends = vec![
            FutureRecord::to("shapes")
                .partition(0)
                .key("with-headers")
                .payload("h")
                .headers(headers),
            FutureRecord::<str, str>::to("shapes")
                .partition(0)
                .payload("no-key"),
            FutureRecord::to("shapes")
                .partition(0)
                .key("empty-value")
                .payload(""),
            FutureRecord::<str, str>::to("shapes")
                .partition(0)
                .key("tombstone"),
            FutureRecord::to("shapes")
                .partition(0)
                .key("big")
                .payload(big.as_str()),
        ];
        for (i, r) in sends.into_iter().enumerate() {
            match producer.send(r, std::time::Duration::from_secs(20)).await {
                Ok(d) => ensure!(d.offset == i as i64, "record {i} at offset {}", d.offset),
                Err((e, _)) => bail!("record {i}: {e}"),
            }
        }
        Ok(())
    })?;
    let consumer = broker.consumer(&[])?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("shapes", 0, rdkafka::Offset::Beginning)?;
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < 5 {
        ensure!(
            std::time::Instant::now() < deadline,
            "only {} of 5 records",
            got.len()
        );
        match consumer.poll(std::time::Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consume: {e}"),
            Some(Ok(m)) => {
                let hdrs: Vec<(String, Option<Vec<u8>>)> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                got.push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    hdrs,
                ));
            }
        }
    }
    let want_headers = vec![
        ("trace".to_string(), Some(b"abc".to_vec())),
        ("empty".to_string(), Some(Vec::new())),
        ("null".to_string(), None),
    ];
    ensure!(
        got[0]
            == (
                Some(b"with-headers".to_vec()),
                Some(b"h".to_vec()),
                want_headers
            ),
        "headers record: {:?}",
        got[0]
    );
    ensure!(
        got[1].0.is_none() && got[1].1.as_deref() == Some(b"no-key".as_slice()),
        "null-key record: {:?}",
        got[1]
    );
    ensure!(
        got[2].1.as_deref() == Some(b"".as_slice()),
        "empty value came back as {:?}",
        got[2].1
    );
    ensure!(
        got[3].0.as_deref() == Some(b"tombstone".as_slice()) && got[3].1.is_none(),
        "tombstone value came back as {:?}",
        got[3].1
    );
    ensure!(
        got[4].1.as_deref() == Some(big.as_bytes()),
        "900 KB value differs"
    );
    Ok(())
}

/// Several producers on separate connections (so, likely, separate shards) write to the
/// same partitions at once: every acked (partition, offset) is unique, each partition's
/// offsets are 0..n without gaps, and the consumer sees each record at its acked place.
#[test]
fn concurrent_producers_get_unique_contiguous_offsets() -> Result<()> {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 5_000;
    const PARTS: i32 = 3;
    let broker = BrokerProcess::spawn(2)?;
    broker.create_topic("shared", PARTS, &[])?;
    let results: Vec<Result<Vec<(u64, i32, i64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|w| {
                let broker = &broker;
                s.spawn(move || -> Result<Vec<(u64, i32, i64)>> {
                    let producer = broker.producer(&[("linger.ms", "1")])?;
                    let mut futures = Vec::new();
                    for i in 0..EACH {
                        let seq = w * EACH + i;
                        let key = record_key(seq, 97);
                        let payload = record_payload(seq);
                        match producer
                            .send_result(FutureRecord::to("shared").key(&key).payload(&payload))
                        {
                            Ok(f) => futures.push((seq, f)),
                            Err((e, _)) => bail!("enqueue {seq}: {e}"),
                        }
                    }
                    block_on(async {
                        let mut out = Vec::new();
                        for (seq, f) in futures {
                            match f.await {
                                Ok(Ok(d)) => out.push((seq, d.partition, d.offset)),
                                Ok(Err((e, _))) => bail!("seq {seq} not acked: {e}"),
                                Err(_) => bail!("seq {seq}: delivery cancelled"),
                            }
                        }
                        Ok(out)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("producer thread panicked"))
            })
            .collect()
    });
    let mut acked: HashMap<u64, (i32, i64)> = HashMap::new();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in results {
        for (seq, p, o) in r? {
            acked.insert(seq, (p, o));
            per_partition.entry(p).or_default().push(o);
        }
    }
    for (p, offsets) in &mut per_partition {
        offsets.sort_unstable();
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        ensure!(
            *offsets == want,
            "partition {p}: acked offsets are not unique and contiguous"
        );
    }
    let consumed = broker.consume_all("shared", PARTS)?;
    ensure!(
        consumed.len() as u64 == PRODUCERS * EACH,
        "consumed {}",
        consumed.len()
    );
    for c in &consumed {
        let seq = payload_seq(c.payload.as_deref().unwrap_or_default())?;
        ensure!(
            acked.get(&seq) == Some(&(c.partition, c.offset)),
            "seq {seq} at {}@{}, acked at {:?}",
            c.partition,
            c.offset,
            acked.get(&seq)
        );
    }
    Ok(())
}
