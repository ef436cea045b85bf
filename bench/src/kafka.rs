//! librdkafka plumbing: producer and consumer configs, topic creation and deletion with
//! the AdminClient, waiting until a topic's partitions all have leaders.
//!
//! Producers use `partitioner=murmur2_random` (Java-compatible murmur2 for keyed records,
//! random/sticky for unkeyed ones), so keyed traffic lands where a Java client puts it.
//!
//! ```text
//!  defaults here ─► client properties (-X, every client) ─► --producer-prop / --consumer-prop
//! ```
//! Later layers win. The client properties are set once per process, before the first
//! client is made (`set_client_props`); they carry librdkafka's security settings
//! (`security.protocol`, `sasl.*`, `ssl.*`) to the admin, metadata, producer and consumer
//! clients alike.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// Producer settings shared by every producer thread of a run.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// `acks`: all, -1, 1 or 0.
    pub acks: String,
    /// `compression.type`.
    pub compression: String,
    /// `batch.size` in bytes.
    pub batch_size: u32,
    /// `linger.ms`.
    pub linger_ms: f64,
    /// Extra `key=value` librdkafka properties, applied last.
    pub extra: Vec<(String, String)>,
}

/// Parses `key=value` for `-X`/`--producer-prop`/`--consumer-prop`.
pub fn parse_prop(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.trim().is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// `-X` properties of this process: every librdkafka client gets them. Set once by `main`.
static CLIENT_PROPS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Sets the properties every client of this process gets (`-X`); an error if they were
/// set already (they must not change while clients exist).
pub fn set_client_props(props: Vec<(String, String)>) -> Result<()> {
    CLIENT_PROPS
        .set(props)
        .map_err(|_| anyhow!("client properties were set twice"))
}

/// The `-X` properties (empty unless `set_client_props` ran).
pub fn client_props() -> &'static [(String, String)] {
    CLIENT_PROPS.get().map_or(&[], Vec::as_slice)
}

fn apply(cfg: &mut ClientConfig, props: &[(String, String)]) {
    for (k, v) in props {
        cfg.set(k, v);
    }
}

/// The config every client starts from: bootstrap, client.id, log level, then `-X`.
/// Role defaults set after this should only touch keys the user is not expected to pass
/// with `-X`; the producer and consumer configs re-apply `-X` after their defaults.
pub fn client_config(bootstrap: &str, log_level: RDKafkaLogLevel) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-bench")
        .set_log_level(log_level);
    apply(&mut cfg, client_props());
    cfg
}

fn base_config(bootstrap: &str) -> ClientConfig {
    client_config(bootstrap, RDKafkaLogLevel::Warning)
}

/// The librdkafka config for a benchmark producer.
pub fn producer_config(bootstrap: &str, s: &ProducerSettings) -> ClientConfig {
    layered_producer_config(bootstrap, s, client_props())
}

/// `producer_config` with the `-X` layer given.
fn layered_producer_config(
    bootstrap: &str,
    s: &ProducerSettings,
    client: &[(String, String)],
) -> ClientConfig {
    let mut cfg = base_config(bootstrap);
    let acks = if s.acks == "-1" {
        "all"
    } else {
        s.acks.as_str()
    };
    cfg.set("acks", acks)
        .set("compression.type", &s.compression)
        .set("batch.size", s.batch_size.to_string())
        .set("linger.ms", format!("{}", s.linger_ms))
        .set("partitioner", "murmur2_random")
        // librdkafka's default depth: enough to keep a fast broker busy without piling
        // seconds of client-side queueing onto every max-mode latency.
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "1048576")
        // A broker that stops answering should fail the run, not hang it for 5 minutes.
        .set("message.timeout.ms", "60000");
    apply(&mut cfg, client);
    apply(&mut cfg, &s.extra);
    cfg
}

/// The librdkafka config for a benchmark consumer. `group` sets `group.id` (librdkafka
/// needs one even for assign(); metadata-only clients pass `None`).
pub fn consumer_config(
    bootstrap: &str,
    group: Option<&str>,
    earliest: bool,
    extra: &[(String, String)],
) -> ClientConfig {
    layered_consumer_config(bootstrap, group, earliest, client_props(), extra)
}

/// `consumer_config` with the `-X` layer given.
fn layered_consumer_config(
    bootstrap: &str,
    group: Option<&str>,
    earliest: bool,
    client: &[(String, String)],
    extra: &[(String, String)],
) -> ClientConfig {
    let mut cfg = base_config(bootstrap);
    cfg.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            if earliest { "earliest" } else { "latest" },
        );
    if let Some(g) = group {
        cfg.set("group.id", g);
    }
    apply(&mut cfg, client);
    apply(&mut cfg, extra);
    cfg
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(bootstrap)
        .create()
        .context("creating admin client")
}

/// Runs one admin call to completion on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("tokio runtime for admin calls")?;
    Ok(rt.block_on(f))
}

/// Creates `names` with `partitions` partitions each (the broker's
/// `default.replication.factor`: replication factor -1 in CreateTopics) and waits
/// until every partition has a leader. Returns the names that were newly created; a topic
/// that already exists is reused with the partitions it has.
pub fn create_topics(
    bootstrap: &str,
    names: &[String],
    partitions: u32,
    timeout: Duration,
) -> Result<Vec<String>> {
    let client = admin(bootstrap)?;
    let partitions_i32 = i32::try_from(partitions).context("partition count")?;
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions_i32, TopicReplication::Fixed(-1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results =
        block_on(client.create_topics(new.iter(), &opts))?.context("CreateTopics request")?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("note: topic {name} already exists; reusing it");
            }
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    for name in names {
        let expect = created.contains(name).then_some(partitions);
        wait_for_leaders(bootstrap, name, expect, timeout)?;
    }
    Ok(created)
}

/// Deletes `names`; failures are returned, not ignored.
pub fn delete_topics(bootstrap: &str, names: &[String], timeout: Duration) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let client = admin(bootstrap)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = block_on(client.delete_topics(&refs, &opts))?.context("DeleteTopics request")?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("deleting topic {name}: {code}");
        }
    }
    Ok(())
}

/// Polls metadata until `topic` shows `partitions` partitions (or, given `None`, at least
/// one), each with a leader.
pub fn wait_for_leaders(
    bootstrap: &str,
    topic: &str,
    partitions: Option<u32>,
    timeout: Duration,
) -> Result<()> {
    let consumer: BaseConsumer = consumer_config(bootstrap, None, false, &[])
        .create()
        .context("creating metadata client")?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no metadata yet");
    while Instant::now() < deadline {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    let ready = t
                        .partitions()
                        .iter()
                        .filter(|p| p.leader() >= 0 && p.error().is_none())
                        .count();
                    let want = partitions.map_or(t.partitions().len().max(1), |p| p as usize);
                    if t.error().is_none() && ready == want {
                        return Ok(());
                    }
                    last = format!(
                        "{ready}/{want} partitions with a leader (topic error {:?})",
                        t.error()
                    );
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(anyhow!("topic {topic} not ready after {timeout:?}: {last}"))
}

/// A metadata client and the partition ids of `topic`; an error if the topic is missing
/// or the broker reports an error for it.
fn topic_partitions(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(BaseConsumer, Vec<i32>)> {
    let consumer: BaseConsumer = consumer_config(bootstrap, None, true, &[])
        .create()
        .context("creating metadata client")?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("metadata")?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} not in metadata"))?;
    if let Some(e) = t.error() {
        bail!("topic {topic}: {e:?}");
    }
    let ids = t.partitions().iter().map(|p| p.id()).collect();
    Ok((consumer, ids))
}

/// Sum over partitions of (high watermark - low watermark): the records a full read of
/// `topic` from the beginning returns.
pub fn topic_record_count(bootstrap: &str, topic: &str, timeout: Duration) -> Result<u64> {
    let (consumer, ids) = topic_partitions(bootstrap, topic, timeout)?;
    let mut total = 0u64;
    for id in ids {
        let (low, high) = consumer
            .fetch_watermarks(topic, id, timeout)
            .with_context(|| format!("watermarks of {topic}-{id}"))?;
        total += u64::try_from(high - low).unwrap_or(0);
    }
    Ok(total)
}

/// Number of partitions `topic` has, from metadata.
pub fn partition_count(bootstrap: &str, topic: &str, timeout: Duration) -> Result<u32> {
    Ok(topic_partitions(bootstrap, topic, timeout)?.1.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_parse() {
        assert_eq!(
            parse_prop("linger.ms=5"),
            Ok(("linger.ms".into(), "5".into()))
        );
        assert_eq!(parse_prop("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_prop("novalue").is_err());
        assert!(parse_prop("=x").is_err());
    }

    #[test]
    fn producer_config_uses_murmur2_and_overrides_win() {
        let s = ProducerSettings {
            acks: "-1".into(),
            compression: "zstd".into(),
            batch_size: 65536,
            linger_ms: 0.5,
            extra: vec![("linger.ms".into(), "7".into())],
        };
        let cfg = producer_config("127.0.0.1:1", &s);
        assert_eq!(cfg.get("partitioner"), Some("murmur2_random"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("compression.type"), Some("zstd"));
        assert_eq!(cfg.get("batch.size"), Some("65536"));
        assert_eq!(cfg.get("linger.ms"), Some("7"));
        let c = consumer_config("127.0.0.1:1", None, true, &[]);
        assert_eq!(c.get("group.id"), None);
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn client_props_come_after_the_defaults_and_before_the_role_props() {
        let prop = |k: &str, v: &str| (k.to_string(), v.to_string());
        let client = vec![
            prop("security.protocol", "SASL_SSL"),
            prop("linger.ms", "3"),
            prop("enable.auto.commit", "true"),
        ];
        let s = ProducerSettings {
            acks: "all".into(),
            compression: "none".into(),
            batch_size: 1024,
            linger_ms: 1.0,
            extra: vec![prop("linger.ms", "9")],
        };
        let p = layered_producer_config("127.0.0.1:1", &s, &client);
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            p.get("linger.ms"),
            Some("9"),
            "--producer-prop wins over -X"
        );
        let c = layered_consumer_config("127.0.0.1:1", None, false, &client, &[]);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            c.get("enable.auto.commit"),
            Some("true"),
            "-X wins over defaults"
        );
        let c = layered_consumer_config(
            "127.0.0.1:1",
            None,
            false,
            &client,
            &[prop("enable.auto.commit", "false")],
        );
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
