//! OpenMessaging-Benchmark-style workload files, parsed into a validated `Workload`.
//!
//! Accepted syntax: the flat `key: value` YAML that OMB workload files use (`#` comments,
//! optional quotes), or TOML with the same keys. Keys keep OMB's camelCase names; the
//! Kafka driver settings OMB keeps in a separate driver file (acks, compression, batch
//! size, linger) live in the same file here. Unknown keys are rejected so typos surface.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::record::KeyDistributor;

/// A workload as written in the file (OMB field names).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Human-readable name, printed in the report.
    pub name: String,
    /// Number of topics.
    #[serde(default = "one")]
    pub topics: u32,
    /// Partitions per topic.
    pub partitions_per_topic: u32,
    /// Payload size in bytes.
    pub message_size: usize,
    /// OMB reads a payload file; Sluice uses random bytes of `messageSize` and ignores it.
    #[serde(default)]
    pub payload_file: Option<String>,
    /// Producer threads per topic.
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    /// Independent subscriptions (consumer groups) per topic; each reads every message.
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    /// Consumer threads per subscription.
    #[serde(default = "one", alias = "consumersPerSubscription")]
    pub consumer_per_subscription: u32,
    /// Target total produce rate in messages per second; 0 (or absent) means max.
    #[serde(default)]
    pub producer_rate: f64,
    /// OMB's backlog mode is not supported; only 0 is accepted.
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    /// Measured duration in minutes (OMB).
    #[serde(default)]
    pub test_duration_minutes: Option<f64>,
    /// Measured duration in seconds (takes precedence over minutes).
    #[serde(default)]
    pub test_duration_seconds: Option<f64>,
    /// Warm-up before measuring, in minutes (OMB).
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
    /// Warm-up in seconds (takes precedence over minutes).
    #[serde(default)]
    pub warmup_duration_seconds: Option<f64>,
    /// Key distribution.
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    /// Producer `acks`: "all" / "-1", "1" or "0".
    #[serde(default = "default_acks")]
    pub acks: String,
    /// Producer `compression.type`: none, gzip, zstd, lz4 or snappy.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Producer `batch.size` in bytes.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Producer `linger.ms`.
    #[serde(default = "default_linger")]
    pub linger_ms: f64,
}

fn one() -> u32 {
    1
}
fn default_acks() -> String {
    "all".to_string()
}
fn default_compression() -> String {
    "none".to_string()
}
fn default_batch_size() -> u32 {
    1 << 20
}
fn default_linger() -> f64 {
    1.0
}

impl Workload {
    /// Reads and validates a workload file; `.toml` files are TOML, anything else the
    /// flat YAML subset.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload {}", path.display()))?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let w = if is_toml {
            Self::from_toml(&text)
        } else {
            Self::from_yaml(&text)
        };
        w.with_context(|| format!("workload {}", path.display()))
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let w: Workload = toml::from_str(text)?;
        w.validate()?;
        Ok(w)
    }

    /// Parses flat `key: value` YAML text and validates it.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let map = parse_flat_yaml(text)?;
        let w: Workload = serde_json::from_value(serde_json::Value::Object(map))?;
        w.validate()?;
        Ok(w)
    }

    fn validate(&self) -> Result<()> {
        if self.topics == 0 || self.partitions_per_topic == 0 {
            bail!("topics and partitionsPerTopic must be at least 1");
        }
        if self.producers_per_topic == 0 {
            bail!("producersPerTopic must be at least 1");
        }
        if self.message_size == 0 || self.message_size > 64 << 20 {
            bail!(
                "messageSize must be in 1..=64 MiB, got {}",
                self.message_size
            );
        }
        if !(self.producer_rate.is_finite() && self.producer_rate >= 0.0) {
            bail!(
                "producerRate must be >= 0 (0 = max), got {}",
                self.producer_rate
            );
        }
        if self.consumer_backlog_size_gb != 0.0 {
            bail!("consumerBacklogSizeGB is not supported (must be 0)");
        }
        if self.duration().is_zero() {
            bail!("testDurationSeconds or testDurationMinutes must be > 0");
        }
        if !matches!(self.acks.as_str(), "all" | "-1" | "1" | "0") {
            bail!("acks must be all, -1, 1 or 0, got {:?}", self.acks);
        }
        if !matches!(
            self.compression.as_str(),
            "none" | "gzip" | "zstd" | "lz4" | "snappy"
        ) {
            bail!("unknown compression {:?}", self.compression);
        }
        if !(self.linger_ms.is_finite() && self.linger_ms >= 0.0) {
            bail!("lingerMs must be >= 0");
        }
        Ok(())
    }

    /// Measured duration.
    pub fn duration(&self) -> std::time::Duration {
        let secs = self
            .test_duration_seconds
            .or(self.test_duration_minutes.map(|m| m * 60.0))
            .unwrap_or(0.0);
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 1e7))
    }

    /// Warm-up before the measured window.
    pub fn warmup(&self) -> std::time::Duration {
        let secs = self
            .warmup_duration_seconds
            .or(self.warmup_duration_minutes.map(|m| m * 60.0))
            .unwrap_or(0.0);
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 1e7))
    }

    /// Target total rate, `None` for max throughput.
    pub fn rate(&self) -> Option<f64> {
        (self.producer_rate > 0.0).then_some(self.producer_rate)
    }
}

/// Parses `key: value` lines into a JSON object: numbers become numbers, `true`/`false`
/// booleans, everything else strings (quotes stripped). Nested YAML is rejected.
pub fn parse_flat_yaml(text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim_end();
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        if line.starts_with(char::is_whitespace) || line.trim_start().starts_with('-') {
            bail!("line {}: nested YAML is not supported: {raw:?}", n + 1);
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("line {}: expected `key: value`, got {raw:?}", n + 1))?;
        let key = key.trim();
        if key.is_empty() {
            bail!("line {}: empty key", n + 1);
        }
        let value = yaml_scalar(value.trim());
        if map.insert(key.to_string(), value).is_some() {
            bail!("line {}: duplicate key {key:?}", n + 1);
        }
    }
    Ok(map)
}

/// Removes a `#` comment that starts the line or follows whitespace, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_ws = true;
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (None, '"' | '\'') => quote = Some(ch),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_ws => return &line[..i],
            _ => {}
        }
        prev_ws = ch.is_whitespace();
    }
    line
}

fn yaml_scalar(v: &str) -> serde_json::Value {
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    if let Some(s) = unquoted {
        return serde_json::Value::String(s.to_string());
    }
    match v {
        "true" => return serde_json::Value::Bool(true),
        "false" => return serde_json::Value::Bool(false),
        "" | "~" | "null" => return serde_json::Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() {
            return serde_json::Value::from(f);
        }
    }
    serde_json::Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OMB: &str = r#"
# OMB classic, scaled
name: 1 topic / 100 partitions / 1kb
topics: 1
partitionsPerTopic: 100
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 20000   # msg/s
consumerBacklogSizeGB: 0
testDurationMinutes: 1
keyDistributor: "KEY_ROUND_ROBIN"
acks: all
lingerMs: 0.5
"#;

    #[test]
    fn parses_omb_yaml_with_defaults() {
        let w = Workload::from_yaml(OMB).expect("valid workload");
        assert_eq!(w.name, "1 topic / 100 partitions / 1kb");
        assert_eq!(w.partitions_per_topic, 100);
        assert_eq!(w.message_size, 1024);
        assert_eq!(w.rate(), Some(20000.0));
        assert_eq!(w.duration(), Duration::from_secs(60));
        assert_eq!(w.warmup(), Duration::ZERO);
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        assert_eq!(w.compression, "none");
        assert_eq!(w.linger_ms, 0.5);
        assert_eq!(w.batch_size, 1 << 20);
        assert_eq!(w.payload_file.as_deref(), Some("payload/payload-1Kb.data"));
    }

    #[test]
    fn toml_is_equivalent() {
        let toml = r#"
name = "max"
partitionsPerTopic = 1
messageSize = 100
testDurationSeconds = 5
warmupDurationSeconds = 1.5
producerRate = 0
keyDistributor = "NO_KEY"
compression = "zstd"
"#;
        let w = Workload::from_toml(toml).expect("valid");
        assert_eq!(w.rate(), None);
        assert_eq!(w.topics, 1);
        assert_eq!(w.duration(), Duration::from_secs(5));
        assert_eq!(w.warmup(), Duration::from_millis(1500));
        assert_eq!(w.key_distributor, KeyDistributor::NoKey);
    }

    #[test]
    fn rejects_bad_workloads() {
        let bad = |text: &str| Workload::from_yaml(text).is_err();
        let base = "name: x\npartitionsPerTopic: 1\nmessageSize: 10\ntestDurationSeconds: 1\n";
        assert!(!bad(base));
        assert!(bad(&format!("{base}partitionsPerTopc: 3\n")), "typo key");
        assert!(bad(&format!("{base}acks: 2\n")));
        assert!(bad(&format!("{base}compression: brotli\n")));
        assert!(bad(&format!("{base}producerRate: -5\n")));
        assert!(bad(&format!("{base}consumerBacklogSizeGB: 10\n")));
        assert!(bad(&format!("{base}name: again\n")), "duplicate key");
        assert!(
            bad("name: x\npartitionsPerTopic: 1\nmessageSize: 10\n"),
            "no duration"
        );
        assert!(bad(&format!("{base}nested:\n  a: 1\n")));
        assert!(bad(
            "partitionsPerTopic: 0\nname: x\nmessageSize: 1\ntestDurationSeconds: 1"
        ));
    }

    #[test]
    fn yaml_scalars_and_comments() {
        let m = parse_flat_yaml("a: 1\nb: 2.5\nc: 'x # y'\nd: true\ne: word # note\nf: a#b\n")
            .expect("parses");
        assert_eq!(m["a"], serde_json::json!(1));
        assert_eq!(m["b"], serde_json::json!(2.5));
        assert_eq!(m["c"], serde_json::json!("x # y"));
        assert_eq!(m["d"], serde_json::json!(true));
        assert_eq!(m["e"], serde_json::json!("word"));
        assert_eq!(m["f"], serde_json::json!("a#b"));
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/workloads exists") {
            let path = entry.expect("dir entry").path();
            Workload::from_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
        assert!(seen >= 3, "expected the OMB classics, found {seen}");
    }
}
