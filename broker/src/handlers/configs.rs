//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (resource type 2)
//! and, read-only, for this broker (type 4). Topic values come from `topic_config`'s table;
//! changes are metadata records written by the controller.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response as inc;
use kafka_protocol::messages::{
    AlterConfigsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::admin::controller_call;
use crate::config::{all_settings, Kind};
use crate::metadata::controller::{ConfigChange, MetadataOp};
use crate::metadata::topic_config;
use crate::shard::ShardCtx;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    doc: &str,
    with_doc: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_config_source(source)
        .with_config_type(config_type)
        .with_documentation(with_doc.then(|| StrBytes::from_string(doc.to_string())))
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_source(source)
}

/// A topic setting's synonyms as Kafka lists them, most precedent first: the topic's
/// override (`overridden`), the broker setting that supplies its default when the broker's
/// config sets it, and the default itself (under the broker setting's name when there is
/// one).
fn topic_synonyms(
    ctx: &ShardCtx,
    defaults: &crate::config::BrokerConfig,
    s: Option<&topic_config::TopicSetting>,
    name: &str,
    overridden: Option<&String>,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if let Some(v) = overridden {
        out.push(synonym(name, v, DYNAMIC_TOPIC_CONFIG));
    }
    match s.and_then(|s| s.broker_key) {
        Some(key) => {
            let value = ctx.config_value(key);
            let default = defaults.config_value(key);
            if value != default {
                out.push(synonym(key, &value, STATIC_BROKER_CONFIG));
            }
            out.push(synonym(key, &default, DEFAULT_CONFIG));
        }
        None => out.push(synonym(
            name,
            s.map_or("", |s| s.fixed_default),
            DEFAULT_CONFIG,
        )),
    }
    out
}

pub(crate) async fn describe(
    ctx: Rc<ShardCtx>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for r in req.resources {
        // Null or empty both mean every config, as in Kafka.
        let keys: Option<Vec<String>> = r
            .configuration_keys
            .filter(|k| !k.is_empty())
            .map(|k| k.into_iter().map(|s| s.to_string()).collect());
        let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == n));
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let illegal = (r.resource_type == TOPIC)
            .then(|| crate::metadata::controller::validate_topic_name(&r.resource_name).err())
            .flatten();
        match r.resource_type {
            // Kafka validates the name first (Topic.validate)
            TOPIC if illegal.is_some() => {
                out.error_code = ResponseError::InvalidTopicException.code();
                out.error_message = illegal.map(StrBytes::from_string);
            }
            TOPIC => match ctx.image.borrow().topic(&r.resource_name) {
                Some(t) => {
                    let defaults = crate::config::BrokerConfig::default();
                    for (name, value, is_default) in
                        topic_config::effective(&t.configs, &ctx.config)
                    {
                        if !wanted(name) {
                            continue;
                        }
                        let s = topic_config::topic_setting(name);
                        let ty = topic_config::kafka_type(name);
                        let synonyms = topic_synonyms(
                            &ctx,
                            &defaults,
                            s,
                            name,
                            (!is_default).then_some(&value),
                        );
                        // the most precedent synonym is where the value comes from
                        let src = synonyms.first().map_or(DEFAULT_CONFIG, |s| s.source);
                        let mut e = entry(
                            name,
                            value,
                            src,
                            ty,
                            s.map_or("", |s| s.doc),
                            req.include_documentation,
                        );
                        if req.include_synonyms {
                            e = e.with_synonyms(synonyms);
                        }
                        out.configs.push(e);
                    }
                }
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message = Some(StrBytes::from_string(format!(
                        "Topic '{}' does not exist.",
                        &*r.resource_name
                    )));
                }
            },
            // the cluster's dynamic defaults: Sluice's broker settings are all static
            BROKER if r.resource_name.is_empty() => {}
            BROKER if *r.resource_name == *ctx.config.node_id().to_string() => {
                let defaults = crate::config::BrokerConfig::default();
                for s in all_settings() {
                    if !wanted(s.name) {
                        continue;
                    }
                    let value = ctx.config_value(s.name);
                    let default = defaults.config_value(s.name);
                    let src = if default == value {
                        DEFAULT_CONFIG
                    } else {
                        STATIC_BROKER_CONFIG
                    };
                    let mut synonyms = Vec::new();
                    if src == STATIC_BROKER_CONFIG {
                        synonyms.push(synonym(s.name, &value, STATIC_BROKER_CONFIG));
                    }
                    synonyms.push(synonym(s.name, &default, DEFAULT_CONFIG));
                    let ty = match s.kind {
                        Kind::Int { .. } => 5,
                        Kind::Bool => 1,
                        Kind::Ratio => 6,
                        _ => 2,
                    };
                    // static: read from the config file, not changed by AlterConfigs
                    let mut e = entry(s.name, value, src, ty, s.doc, req.include_documentation)
                        .with_read_only(true);
                    if req.include_synonyms {
                        e = e.with_synonyms(synonyms);
                    }
                    if crate::config::sensitive(s.name) {
                        e = e.with_value(None).with_is_sensitive(true);
                        for syn in e.synonyms.iter_mut() {
                            syn.value = None;
                        }
                    }
                    out.configs.push(e);
                }
            }
            _ => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(StrBytes::from_static_str(
                    "Unsupported resource type or unknown broker id.",
                ));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// One resource's change, or its immediate error.
type Planned = Result<ConfigChange, (i16, String)>;

async fn apply(
    ctx: &Rc<ShardCtx>,
    mut planned: Vec<(i8, StrBytes, Planned)>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, i16, Option<String>)> {
    // Kafka: a resource named twice is refused, every time it is named
    let mut seen: std::collections::HashMap<(i8, &str), usize> = Default::default();
    for (ty, name, _) in &planned {
        *seen.entry((*ty, name.as_str())).or_default() += 1;
    }
    let twice: Vec<bool> = planned
        .iter()
        .map(|(ty, name, _)| seen.get(&(*ty, name.as_str())).is_some_and(|&n| n > 1))
        .collect();
    drop(seen);
    for ((_, _, p), twice) in planned.iter_mut().zip(twice) {
        if twice {
            *p = Err((
                ResponseError::InvalidRequest.code(),
                "Each resource must appear at most once.".into(),
            ));
        }
    }
    let changes: Vec<ConfigChange> = planned
        .iter()
        .filter_map(|(_, _, p)| p.as_ref().ok().cloned())
        .collect();
    let mut outcomes = if changes.is_empty() {
        Vec::new().into_iter()
    } else {
        match controller_call(
            ctx,
            MetadataOp::AlterConfigs {
                changes: changes.clone(),
                validate_only,
            },
            super::admin::admin_timeout(0),
        )
        .await
        {
            Ok(o) => o.into_iter(),
            Err((code, msg)) => changes
                .iter()
                .map(|c| crate::metadata::controller::TopicOutcome {
                    name: c.topic.clone(),
                    error: code,
                    message: Some(msg.clone()),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
                .into_iter(),
        }
    };
    planned
        .into_iter()
        .map(|(ty, name, p)| match p {
            Ok(_) => match outcomes.next() {
                Some(o) => (ty, name, o.error, o.message),
                None => (ty, name, ResponseError::UnknownServerError.code(), None),
            },
            Err((code, msg)) => (ty, name, code, Some(msg)),
        })
        .collect()
}

fn not_topic(ty: i8) -> (i16, String) {
    if ty == BROKER {
        (
            ResponseError::InvalidRequest.code(),
            "Broker configs are static in Sluice; set them in the config file.".into(),
        )
    } else {
        (
            ResponseError::InvalidRequest.code(),
            format!("Unsupported resource type {ty}."),
        )
    }
}

pub(crate) async fn alter(
    ctx: Rc<ShardCtx>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let planned = req
        .resources
        .into_iter()
        .map(|r| {
            let p = if r.resource_type == TOPIC {
                Ok(ConfigChange {
                    topic: r.resource_name.to_string(),
                    set: r
                        .configs
                        .into_iter()
                        .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                        .collect(),
                    replace_all: true,
                })
            } else {
                Err(not_topic(r.resource_type))
            };
            (r.resource_type, r.resource_name, p)
        })
        .collect();
    let responses = apply(&ctx, planned, req.validate_only)
        .await
        .into_iter()
        .map(|(ty, name, code, msg)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(ty)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(msg.map(StrBytes::from_string))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Resolves SET / DELETE / APPEND / SUBTRACT against the topic's current overrides.
fn incremental_change(
    ctx: &ShardCtx,
    r: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
) -> Planned {
    if r.resource_type != TOPIC {
        return Err(not_topic(r.resource_type));
    }
    let current: BTreeMap<String, String> = match ctx.image.borrow().topic(&r.resource_name) {
        Some(t) => t.configs.clone(),
        None => {
            return Err((
                ResponseError::UnknownTopicOrPartition.code(),
                format!("Topic '{}' does not exist.", &*r.resource_name),
            ))
        }
    };
    let mut set: Vec<(String, Option<String>)> = Vec::new();
    for c in &r.configs {
        let name = c.name.to_string();
        let value = c.value.as_ref().map(|v| v.to_string());
        // Kafka's ConfigAdminManager and ConfigurationControlManager checks
        if set.iter().any(|(n, _)| *n == name) {
            return Err((
                ResponseError::InvalidRequest.code(),
                "Error due to duplicate config keys".into(),
            ));
        }
        if value.is_none() && c.config_operation != 1 {
            return Err((
                ResponseError::InvalidRequest.code(),
                format!("Null value not supported for : {name}"),
            ));
        }
        if matches!(c.config_operation, 2 | 3) && !topic_config::is_list(&name) {
            let op = if c.config_operation == 2 {
                "APPEND"
            } else {
                "SUBTRACT"
            };
            return Err((
                ResponseError::InvalidConfig.code(),
                format!("Can't {op} to key {name} because its type is not LIST."),
            ));
        }
        let list = |v: &Option<String>| -> Vec<String> {
            v.as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let base = current.get(&name).cloned().or_else(|| {
            topic_config::topic_setting(&name).map(|s| topic_config::default_value(s, &ctx.config))
        });
        let new = match c.config_operation {
            0 => value,
            1 => None,
            2 => {
                let mut items = list(&base);
                for v in list(&value) {
                    if !items.contains(&v) {
                        items.push(v);
                    }
                }
                Some(items.join(","))
            }
            3 => {
                let remove = list(&value);
                Some(
                    list(&base)
                        .into_iter()
                        .filter(|v| !remove.contains(v))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }
            op => {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    format!("Unknown config operation {op}."),
                ))
            }
        };
        set.push((name, new));
    }
    Ok(ConfigChange {
        topic: r.resource_name.to_string(),
        set,
        replace_all: false,
    })
}

pub(crate) async fn incremental_alter(
    ctx: Rc<ShardCtx>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> inc::IncrementalAlterConfigsResponse {
    let planned = req
        .resources
        .iter()
        .map(|r| {
            (
                r.resource_type,
                r.resource_name.clone(),
                incremental_change(&ctx, r),
            )
        })
        .collect();
    let responses = apply(&ctx, planned, req.validate_only)
        .await
        .into_iter()
        .map(|(ty, name, code, msg)| {
            inc::AlterConfigsResourceResponse::default()
                .with_resource_type(ty)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(msg.map(StrBytes::from_string))
        })
        .collect();
    inc::IncrementalAlterConfigsResponse::default().with_responses(responses)
}
