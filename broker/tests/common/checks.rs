//! Checks the cluster suites share: a topic led everywhere with full ISRs, the brokers a
//! view lists, and a produce-then-consume round trip that must return exactly what was
//! sent. Every wait is bounded; the bounds are functional, not performance checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;

use super::cluster::{ensure_same, Cluster, MetadataView};
use super::{block_on, consume_until};

/// Bound for a new leader's high watermark to catch up with its followers' positions.
const CONVERGE: Duration = Duration::from_secs(20);

/// Every partition of `name` in `v` is led, error-free, with `isr` as the ISR set.
pub(crate) fn ensure_led(v: &MetadataView, name: &str, partitions: usize) -> Result<()> {
    let t = v.topic(name)?;
    ensure!(
        t.error == 0,
        "node {}: topic {name} error {}",
        v.from,
        t.error
    );
    ensure!(
        t.partitions.len() == partitions,
        "node {}: topic {name} has {} partitions, want {partitions}",
        v.from,
        t.partitions.len()
    );
    for p in &t.partitions {
        ensure!(
            p.leader >= 0 && p.error == 0,
            "node {}: {name}-{} has leader {} error {}",
            v.from,
            p.partition,
            p.leader,
            p.error
        );
    }
    Ok(())
}

/// Waits (up to `within`) until every node in `ids` lists `name` with `partitions`
/// partitions, each led with its whole replica set in sync, and all of them agree.
pub(crate) fn wait_settled(
    cluster: &Cluster,
    ids: &[u32],
    name: &str,
    partitions: usize,
    within: Duration,
) -> Result<Vec<MetadataView>> {
    let what = format!("{name} led with full ISRs on {ids:?}");
    cluster.wait_views(&what, ids, within, |views| {
        for v in views {
            ensure_led(v, name, partitions)?;
            ensure_full_isr(v, name)?;
        }
        ensure_same(views)
    })
}

/// Every partition of `name` has its whole replica set in its ISR and nothing offline.
pub(crate) fn ensure_full_isr(v: &MetadataView, name: &str) -> Result<()> {
    for p in &v.topic(name)?.partitions {
        let replicas: BTreeSet<i32> = p.replicas.iter().copied().collect();
        let isr: BTreeSet<i32> = p.isr.iter().copied().collect();
        ensure!(
            replicas == isr && p.offline.is_empty(),
            "node {}: {name}-{}: replicas {:?}, isr {:?}, offline {:?}",
            v.from,
            p.partition,
            p.replicas,
            p.isr,
            p.offline
        );
    }
    Ok(())
}

pub(crate) fn ensure_brokers(v: &MetadataView, want: &[u32]) -> Result<()> {
    let want: BTreeSet<i32> = want.iter().map(|id| *id as i32).collect();
    ensure!(
        v.broker_ids() == want,
        "node {} lists brokers {:?}, want {want:?}",
        v.from,
        v.broker_ids()
    );
    Ok(())
}

/// Produces `per_partition` records to every partition of `name` (acks=all, through every
/// broker), consumes them back, and checks each partition returns exactly its records.
pub(crate) fn produce_and_consume(
    cluster: &Cluster,
    name: &str,
    partitions: i32,
    per_partition: usize,
) -> Result<BTreeMap<i32, Vec<String>>> {
    let producer: rdkafka::producer::FutureProducer = Cluster::client_config(&cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .create()?;
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut futures = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let payload = format!("{name}-p{p}-r{i}");
            let key = format!("k{i}");
            let record = FutureRecord::to(name)
                .partition(p)
                .key(&key)
                .payload(&payload);
            match producer.send_result(record) {
                Ok(f) => futures.push((p, f)),
                Err((e, _)) => bail!("enqueueing {payload}: {e}"),
            }
            sent.entry(p).or_default().push(payload);
        }
    }
    block_on(async {
        for (p, f) in futures {
            let delivery = tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .with_context(|| format!("no delivery report for partition {p} in 30 s"))?
                .context("producer dropped the delivery")?;
            if let Err((e, _)) = delivery {
                bail!("produce to {name}-{p}: {e}");
            }
        }
        Ok(())
    })?;
    consume_exactly(cluster, name, &sent)?;
    Ok(sent)
}

/// Reads every partition of `name` from the start and checks it holds exactly `sent`, in
/// order (the high watermark included).
pub(crate) fn consume_exactly(
    cluster: &Cluster,
    name: &str,
    sent: &BTreeMap<i32, Vec<String>>,
) -> Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = Cluster::client_config(&cluster.bootstrap())
        .set("group.id", "sluice-cluster-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "200")
        .create()?;
    let mut highs = BTreeMap::new();
    for (p, records) in sent {
        // after a leader change the new leader's high watermark catches up as its
        // followers report their positions
        let high = super::cluster::wait_for("the high watermark", CONVERGE, || {
            let (_, high) = consumer.fetch_watermarks(name, *p, Duration::from_secs(10))?;
            ensure!(
                high == records.len() as i64,
                "{name}-{p}: high watermark {high}, produced {}",
                records.len()
            );
            Ok(Some(high))
        })?;
        highs.insert(*p, high);
    }
    let got = consume_until(&consumer, name, &highs, Duration::from_secs(60))?;
    let mut by_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for c in got {
        let payload = String::from_utf8(c.payload.unwrap_or_default())?;
        by_partition
            .entry(c.partition)
            .or_default()
            .push((c.offset, payload));
    }
    for (p, want) in sent {
        let mut got = by_partition.remove(p).unwrap_or_default();
        got.sort();
        got.dedup();
        let got: Vec<String> = got.into_iter().map(|(_, v)| v).collect();
        ensure!(
            &got == want,
            "{name}-{p}: consumed {got:?}, produced {want:?}"
        );
    }
    Ok(())
}

/// A node other than `avoid`, and every node but that one.
pub(crate) fn one_besides(cluster: &Cluster, avoid: u32) -> (u32, Vec<u32>) {
    let one = cluster
        .ids()
        .into_iter()
        .find(|id| *id != avoid)
        .unwrap_or(1);
    let rest = cluster.ids().into_iter().filter(|id| *id != one).collect();
    (one, rest)
}
