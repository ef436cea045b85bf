//! Topic-level configs, declared once: Kafka name, the broker setting that supplies the
//! default, what values are valid, and a one-line description. DescribeConfigs, CreateTopics
//! and the Alter*Configs APIs validate and render through this table; `log_config` turns a
//! topic's effective values into the storage engine's `LogConfig`.

use std::collections::BTreeMap;

use sluice_storage::{CleanupPolicy, LogConfig};

use crate::metadata::image::TopicInfo;

use crate::config::{compression_codec, BrokerConfig, COMPRESSION_TYPES};

#[derive(Debug, Clone, Copy)]
pub(crate) enum TopicKind {
    Long {
        min: i64,
    },
    /// An integer within [min, max]; `compression.gzip.level` also refuses 0 (Kafka's
    /// "[1,...,9] or -1").
    Range {
        min: i64,
        max: i64,
    },
    /// A decimal number within [0, 1].
    Ratio,
    Choice(&'static [&'static str]),
    /// Kafka's LIST with a ValidList: comma-separated items, each one of these; the
    /// empty list allowed. IncrementalAlterConfigs may APPEND to or SUBTRACT from it.
    List(&'static [&'static str]),
}

#[derive(Debug)]
pub(crate) struct TopicSetting {
    pub(crate) name: &'static str,
    /// Broker setting that supplies the default, or `None` for a fixed default.
    pub(crate) broker_key: Option<&'static str>,
    pub(crate) fixed_default: &'static str,
    pub(crate) kind: TopicKind,
    pub(crate) doc: &'static str,
}

pub(crate) const TOPIC_SETTINGS: &[TopicSetting] = &[
    TopicSetting {
        name: "cleanup.policy",
        broker_key: Some("log.cleanup.policy"),
        fixed_default: "",
        kind: TopicKind::List(&["delete", "compact"]),
        doc: "delete: drop old segments by retention; compact: keep the latest record of every key (records need keys); both: compact, and drop by retention too.",
    },
    TopicSetting {
        name: "compression.type",
        broker_key: Some("compression.type"),
        fixed_default: "",
        kind: TopicKind::Choice(COMPRESSION_TYPES),
        doc: "producer: batches are stored as the producer compressed them; uncompressed, gzip, snappy, lz4 or zstd: a batch in another codec is recompressed in this one before it is stored.",
    },
    TopicSetting {
        name: "compression.gzip.level",
        broker_key: Some("compression.gzip.level"),
        fixed_default: "",
        kind: TopicKind::Range { min: -1, max: 9 },
        doc: "The gzip level the broker compresses at (compression.type=gzip): 1-9, or -1 for zlib's default (6).",
    },
    TopicSetting {
        name: "compression.lz4.level",
        broker_key: Some("compression.lz4.level"),
        fixed_default: "",
        kind: TopicKind::Range { min: 1, max: 17 },
        doc: "The lz4 level the broker compresses at (compression.type=lz4): 9 is LZ4's fast compressor, any other its high-compression mode (levels past 12 as 12).",
    },
    TopicSetting {
        name: "compression.zstd.level",
        broker_key: Some("compression.zstd.level"),
        fixed_default: "",
        kind: TopicKind::Range {
            min: -131_072,
            max: 22,
        },
        doc: "The zstd level the broker compresses at (compression.type=zstd).",
    },
    TopicSetting {
        name: "delete.retention.ms",
        broker_key: Some("log.cleaner.delete.retention.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "How long a tombstone (a record with a null value) stays readable after the cleaner first reaches it.",
    },
    TopicSetting {
        name: "index.interval.bytes",
        broker_key: Some("log.index.interval.bytes"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "Bytes between sparse offset-index entries.",
    },
    TopicSetting {
        name: "max.message.bytes",
        broker_key: Some("message.max.bytes"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "Largest record batch accepted.",
    },
    TopicSetting {
        name: "message.timestamp.after.max.ms",
        broker_key: Some("log.message.timestamp.after.max.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "A CreateTime record further in the future than this is rejected (INVALID_TIMESTAMP).",
    },
    TopicSetting {
        name: "message.timestamp.before.max.ms",
        broker_key: Some("log.message.timestamp.before.max.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "A CreateTime record older than this is rejected (INVALID_TIMESTAMP).",
    },
    TopicSetting {
        name: "message.timestamp.type",
        broker_key: Some("log.message.timestamp.type"),
        fixed_default: "",
        kind: TopicKind::Choice(&["CreateTime", "LogAppendTime"]),
        doc: "CreateTime: records keep the producer's timestamps; LogAppendTime: the broker stamps every batch with its clock at append.",
    },
    TopicSetting {
        name: "max.compaction.lag.ms",
        broker_key: Some("log.cleaner.max.compaction.lag.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 1 },
        doc: "Clean the log once its oldest uncleaned record is this old, whatever its dirty ratio.",
    },
    TopicSetting {
        name: "min.cleanable.dirty.ratio",
        broker_key: Some("log.cleaner.min.cleanable.ratio"),
        fixed_default: "",
        kind: TopicKind::Ratio,
        doc: "Clean the log once this share of it has not been cleaned yet.",
    },
    TopicSetting {
        name: "min.compaction.lag.ms",
        broker_key: Some("log.cleaner.min.compaction.lag.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 0 },
        doc: "Records younger than this are never compacted.",
    },
    TopicSetting {
        name: "min.insync.replicas",
        broker_key: Some("min.insync.replicas"),
        fixed_default: "",
        kind: TopicKind::Long { min: 1 },
        doc: "ISR size below which acks=all produce is refused with NOT_ENOUGH_REPLICAS.",
    },
    TopicSetting {
        name: "retention.bytes",
        broker_key: Some("log.retention.bytes"),
        fixed_default: "",
        kind: TopicKind::Long { min: -1 },
        doc: "Delete old segments past this partition size; -1 is unlimited.",
    },
    TopicSetting {
        name: "retention.ms",
        broker_key: Some("log.retention.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: -1 },
        doc: "Delete segments whose newest record is older; -1 keeps forever.",
    },
    TopicSetting {
        name: "segment.bytes",
        broker_key: Some("log.segment.bytes"),
        fixed_default: "",
        kind: TopicKind::Long { min: 14 },
        doc: "Roll to a new segment at this size.",
    },
    TopicSetting {
        name: "segment.ms",
        broker_key: Some("log.roll.ms"),
        fixed_default: "",
        kind: TopicKind::Long { min: 1 },
        doc: "Roll to a new segment after this age.",
    },
    TopicSetting {
        name: "unclean.leader.election.enable",
        broker_key: Some("unclean.leader.election.enable"),
        fixed_default: "",
        kind: TopicKind::Choice(&["true", "false"]),
        doc: "With no in-sync replica left, let an out-of-sync replica lead (it may lack acknowledged records).",
    },
];

pub(crate) fn topic_setting(name: &str) -> Option<&'static TopicSetting> {
    TOPIC_SETTINGS.iter().find(|s| s.name == name)
}

/// The type DescribeConfigs reports for a topic setting, Kafka's (`ConfigType`: 1 BOOLEAN,
/// 2 STRING, 3 INT, 5 LONG, 6 DOUBLE, 7 LIST).
pub(crate) fn kafka_type(name: &str) -> i8 {
    const INT: &[&str] = &[
        "segment.bytes",
        "max.message.bytes",
        "min.insync.replicas",
        "index.interval.bytes",
    ];
    match topic_setting(name).map(|s| s.kind) {
        _ if is_list(name) => 7,
        _ if INT.contains(&name) => 3,
        Some(TopicKind::Choice(["true", "false"])) => 1,
        Some(TopicKind::Range { .. }) => 3,
        Some(TopicKind::Long { .. }) => 5,
        Some(TopicKind::Ratio) => 6,
        _ => 2,
    }
}

/// True for Kafka's LIST-typed topic settings (`cleanup.policy`): the ones
/// IncrementalAlterConfigs may APPEND to or SUBTRACT from.
pub(crate) fn is_list(name: &str) -> bool {
    matches!(
        topic_setting(name).map(|s| s.kind),
        Some(TopicKind::List(_))
    )
}

/// The form a topic setting's value is stored in. Kafka's parsers trim a value, read a
/// boolean in any case and trim each item of a list, so `TRUE` and `compact, delete` are
/// taken; they are stored as `true` and `compact,delete`.
pub(crate) fn normalize(name: &str, value: &str) -> String {
    let v = value.trim();
    match topic_setting(name).map(|s| s.kind) {
        Some(TopicKind::Choice(["true", "false"])) => v.to_ascii_lowercase(),
        _ if is_list(name) => v.split(',').map(str::trim).collect::<Vec<_>>().join(","),
        _ => v.to_string(),
    }
}

/// Checks one topic config; the error text goes to the client with INVALID_CONFIG.
pub(crate) fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(s) = topic_setting(name) else {
        return Err(format!("unknown topic config '{name}'"));
    };
    match s.kind {
        TopicKind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err(format!("{name} must be an integer >= {min}, got '{value}'")),
        },
        TopicKind::Range { min, max } => match value.trim().parse::<i64>() {
            Ok(0) if name == "compression.gzip.level" => {
                Err(format!("{name} must be within [1, 9] or -1, got 0"))
            }
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ => Err(format!(
                "{name} must be an integer within [{min}, {max}], got '{value}'"
            )),
        },
        TopicKind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!(
                "{name} must be a number within [0, 1], got '{value}'"
            )),
        },
        TopicKind::List(options) => {
            let ok = value.trim().is_empty()
                || value.split(',').all(|item| options.contains(&item.trim()));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a list of {options:?} (or empty), got '{value}'"
                ))
            }
        }
        TopicKind::Choice(options) => {
            if options.contains(&value) {
                Ok(())
            } else {
                Err(format!("{name} must be one of {options:?}, got '{value}'"))
            }
        }
    }
}

/// Checks a topic's overrides together, once each value passed [`validate`]: Kafka refuses
/// a `max.compaction.lag.ms` below `min.compaction.lag.ms`.
pub(crate) fn validate_together(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Result<(), String> {
    let c = log_config(overrides, broker);
    if c.max_compaction_lag_ms < c.min_compaction_lag_ms {
        return Err(format!(
            "conflict topic config setting max.compaction.lag.ms ({}) < min.compaction.lag.ms ({})",
            c.max_compaction_lag_ms, c.min_compaction_lag_ms
        ));
    }
    Ok(())
}

/// Default of a topic setting under `broker`.
pub(crate) fn default_value(s: &TopicSetting, broker: &BrokerConfig) -> String {
    match s.broker_key {
        Some(k) => broker.config_value(k),
        None => s.fixed_default.to_string(),
    }
}

/// Every topic setting with its effective value and whether it is the default.
pub(crate) fn effective(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, bool)> {
    TOPIC_SETTINGS
        .iter()
        .map(|s| match overrides.get(s.name) {
            Some(v) => (s.name, v.clone(), false),
            None => (s.name, default_value(s, broker), true),
        })
        .collect()
}

/// The effective value of topic setting `name` under these overrides.
fn value_of(overrides: &BTreeMap<String, String>, broker: &BrokerConfig, name: &str) -> String {
    match overrides.get(name) {
        Some(v) => v.clone(),
        None => topic_setting(name).map_or_else(String::new, |s| default_value(s, broker)),
    }
}

/// A codec the broker stores batches in and its level (None: Kafka's default).
pub(crate) type TargetCodec = (u8, Option<i32>);

/// The codec a topic with these overrides stores batches in (`compression.type`, None
/// for `producer`), with the level of that codec (`compression.<codec>.level`; None for
/// uncompressed and snappy).
pub(crate) fn target_codec(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Option<TargetCodec> {
    let codec = compression_codec(&value_of(overrides, broker, "compression.type"))?;
    let level = match codec {
        1 => Some("compression.gzip.level"),
        3 => Some("compression.lz4.level"),
        4 => Some("compression.zstd.level"),
        _ => None,
    }
    .and_then(|name| value_of(overrides, broker, name).trim().parse().ok());
    Some((codec, level))
}

/// True if a topic with these overrides is stored in zstd (`compression.type=zstd`):
/// Kafka answers its partitions UNSUPPORTED_COMPRESSION_TYPE to consumers fetching below
/// Fetch v10, which cannot read zstd.
pub(crate) fn stores_zstd(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> bool {
    value_of(overrides, broker, "compression.type") == "zstd"
}

/// The storage settings of topic `t`. Internal topics store what their coordinators
/// write as written, whatever the broker's `compression.type` (they are created with
/// `producer`, as Kafka creates them, but older ones may lack the override): the
/// coordinators read their records back uncompressed at load.
pub(crate) fn topic_log_config(t: &TopicInfo, broker: &BrokerConfig) -> LogConfig {
    let mut c = log_config(&t.configs, broker);
    if crate::metadata::is_internal(&t.name) {
        c.compression = None;
        c.compression_level = None;
    }
    c
}

/// The storage settings of a topic with these overrides.
pub(crate) fn log_config(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let get = |name: &str| -> i64 {
        value_of(overrides, broker, name)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    LogConfig {
        segment_bytes: get("segment.bytes").max(14) as u64,
        segment_ms: get("segment.ms").max(1),
        retention_ms: get("retention.ms"),
        retention_bytes: get("retention.bytes"),
        index_interval_bytes: get("index.interval.bytes").clamp(0, i64::from(u32::MAX)) as u32,
        max_message_bytes: get("max.message.bytes").clamp(0, i64::from(u32::MAX)) as u32,
        timestamp_before_max_ms: get("message.timestamp.before.max.ms").max(0),
        timestamp_after_max_ms: get("message.timestamp.after.max.ms").max(0),
        log_append_time: value_of(overrides, broker, "message.timestamp.type") == "LogAppendTime",
        // validated when set; the default policy stands in for anything unparsable
        cleanup_policy: CleanupPolicy::parse(&value_of(overrides, broker, "cleanup.policy"))
            .unwrap_or_default(),
        min_cleanable_dirty_ratio: value_of(overrides, broker, "min.cleanable.dirty.ratio")
            .trim()
            .parse()
            .unwrap_or(0.5),
        delete_retention_ms: get("delete.retention.ms").max(0),
        min_compaction_lag_ms: get("min.compaction.lag.ms").max(0),
        max_compaction_lag_ms: get("max.compaction.lag.ms").max(1),
        compression: target_codec(overrides, broker).map(|(codec, _)| codec),
        compression_level: target_codec(overrides, broker).and_then(|(_, level)| level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_comes_from_a_declared_broker_setting() {
        let broker = BrokerConfig::default();
        for s in TOPIC_SETTINGS {
            let d = default_value(s, &broker);
            assert!(
                validate(s.name, &d).is_ok(),
                "{}: default '{d}' is invalid",
                s.name
            );
        }
    }

    #[test]
    fn validate_and_resolve() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("cleanup.policy", "delete").is_ok());
        assert!(validate("cleanup.policy", "nope").is_err());
        assert!(validate("no.such", "1").is_err());
        let broker = BrokerConfig::default();
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "1048576".to_string());
        let c = log_config(&o, &broker);
        assert_eq!(c.segment_bytes, 1_048_576);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.max_message_bytes, 1_048_588);
        let eff = effective(&o, &broker);
        assert!(eff
            .iter()
            .any(|(n, v, d)| *n == "segment.bytes" && v == "1048576" && !d));
        assert!(eff.iter().any(|(n, _, d)| *n == "retention.ms" && *d));
    }

    #[test]
    fn compression_type_reaches_the_log_config() {
        let mut broker = BrokerConfig::default();
        let none = BTreeMap::new();
        assert_eq!(log_config(&none, &broker).compression, None);
        broker.set("compression.type", "zstd").unwrap(); // ok: test
        assert_eq!(log_config(&none, &broker).compression, Some(4));
        assert!(stores_zstd(&none, &broker));
        for (value, codec) in [
            ("uncompressed", Some(0)),
            ("gzip", Some(1)),
            ("snappy", Some(2)),
            ("lz4", Some(3)),
            ("producer", None),
        ] {
            assert!(validate("compression.type", value).is_ok(), "{value}");
            let o = BTreeMap::from([("compression.type".to_string(), value.to_string())]);
            assert_eq!(log_config(&o, &broker).compression, codec, "{value}");
            assert!(!stores_zstd(&o, &broker));
        }
        // levels (KIP-390) follow the codec; gzip refuses 0 as Kafka does
        let o = BTreeMap::from([
            ("compression.type".to_string(), "gzip".to_string()),
            ("compression.gzip.level".to_string(), "9".to_string()),
            ("compression.zstd.level".to_string(), "-5".to_string()),
        ]);
        let c = log_config(&o, &broker);
        assert_eq!((c.compression, c.compression_level), (Some(1), Some(9)));
        assert_eq!(log_config(&none, &broker).compression_level, Some(3));
        assert!(validate("compression.gzip.level", "0").is_err());
        assert!(validate("compression.gzip.level", "-1").is_ok());
        assert!(validate("compression.lz4.level", "18").is_err());
        assert!(validate("compression.zstd.level", "-131072").is_ok());
        assert!(broker.set("compression.gzip.level", "0").is_err());
        // internal topics keep what their coordinators write, whatever the broker says
        let topic = |name: &str| TopicInfo {
            name: name.to_string(),
            id: Default::default(),
            partitions: 1,
            parts: Vec::new(),
            configs: BTreeMap::new(),
        };
        assert_eq!(
            topic_log_config(&topic("__consumer_offsets"), &broker).compression,
            None
        );
        assert_eq!(
            topic_log_config(&topic("orders"), &broker).compression,
            Some(4)
        );
        // the producer's names are not the topic's (Kafka refuses `none` too)
        assert!(validate("compression.type", "none").is_err());
        assert!(broker.set("compression.type", "none").is_err());
    }

    #[test]
    fn compaction_settings_reach_the_log_config() {
        let mut broker = BrokerConfig::default();
        assert_eq!(
            log_config(&BTreeMap::new(), &broker).cleanup_policy,
            CleanupPolicy::default()
        );
        broker.set("log.cleanup.policy", "compact").unwrap();
        broker
            .set("log.cleaner.min.cleanable.ratio", "0.25")
            .unwrap();
        let c = log_config(&BTreeMap::new(), &broker);
        assert!(c.cleanup_policy.compact && !c.cleanup_policy.delete);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.25);
        assert_eq!(c.delete_retention_ms, 86_400_000);
        let mut o = BTreeMap::new();
        for (k, v) in [
            ("cleanup.policy", "compact,delete"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "1000"),
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "60000"),
        ] {
            assert!(validate(k, v).is_ok(), "{k}={v}");
            o.insert(k.to_string(), v.to_string());
        }
        let c = log_config(&o, &broker);
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(
            (
                c.delete_retention_ms,
                c.min_compaction_lag_ms,
                c.max_compaction_lag_ms
            ),
            (1000, 5, 60000)
        );
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "x").is_err());
        assert!(validate("max.compaction.lag.ms", "0").is_err());
        assert!(validate_together(&o, &broker).is_ok());
        o.insert("min.compaction.lag.ms".into(), "60001".into());
        assert!(validate_together(&o, &broker).is_err());
    }
}
