//! Topic-level configs, declared once: Kafka name, the broker setting that supplies the
//! default, what values are valid, and a one-line description. DescribeConfigs, CreateTopics
//! and the Alter*Configs APIs validate and render through this table; `log_config` turns a
//! topic's effective values into the storage engine's `LogConfig`.

use std::collections::BTreeMap;

use sluice_storage::LogConfig;

use crate::config::BrokerConfig;

#[derive(Debug, Clone, Copy)]
pub(crate) enum TopicKind {
    Long { min: i64 },
    Choice(&'static [&'static str]),
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
        broker_key: None,
        fixed_default: "delete",
        kind: TopicKind::Choice(&["delete", "compact", "compact,delete", "delete,compact"]),
        doc: "delete: drop old segments by retention (compaction is not implemented yet).",
    },
    TopicSetting {
        name: "compression.type",
        broker_key: None,
        fixed_default: "producer",
        kind: TopicKind::Choice(&["producer"]),
        doc: "Batches are stored exactly as the producer compressed them.",
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
        broker_key: None,
        fixed_default: "CreateTime",
        kind: TopicKind::Choice(&["CreateTime"]),
        doc: "Record timestamps are the producer's (LogAppendTime is not supported yet).",
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
        TopicKind::Choice(options) => {
            if options.contains(&value) {
                Ok(())
            } else {
                Err(format!("{name} must be one of {options:?}, got '{value}'"))
            }
        }
    }
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

/// The storage settings of a topic with these overrides.
pub(crate) fn log_config(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let get = |name: &str| -> i64 {
        overrides
            .get(name)
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| topic_setting(name).map(|s| default_value(s, broker).parse().unwrap_or(0)))
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
        // cleanup.policy and the compaction settings are not mapped yet: delete only
        ..LogConfig::default()
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
}
