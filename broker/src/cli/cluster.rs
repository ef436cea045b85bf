//! `sluice cluster info|health`: one Metadata request of every topic (internal ones too)
//! gives the brokers, the controller, topic and partition counts, under-replicated
//! partitions (ISR smaller than the replica set) and offline ones (no leader). `health`
//! also has the controller decide a validate-only CreateTopics, and exits with status 3
//! when any partition is offline or under-replicated or no controller answers, so
//! scripts and probes can use it as is.

use anyhow::Result;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use serde_json::{json, Value};

use super::client::{topic_name, Client};
use super::format::{error_name, ids, print_json, Format, Table};
use super::ClientArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterVerb {
    /// Cluster id, controller, brokers, topic and partition counts, partitions at risk.
    Info,
    /// Exit 0 when healthy; exit 3 when a partition is offline or under-replicated or no
    /// controller answers (exit 1: the cluster could not be asked).
    ///
    /// The controller is checked with a validate-only CreateTopics of a topic named
    /// sluice-health-probe (nothing is created): Metadata's controller id cannot tell, as
    /// KRaft brokers, Sluice's included, name a live broker there and forward admin
    /// requests. It must be answered within two thirds of --timeout. A controller that lost
    /// its quorum still answers until it steps down, about one election timeout later.
    Health,
}

/// A partition worth reporting.
struct AtRisk {
    topic: String,
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

impl AtRisk {
    fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "leader": (self.leader >= 0).then_some(self.leader),
            "replicas": self.replicas,
            "isr": self.isr,
        })
    }
}

/// What one Metadata answer says about the cluster's health.
struct Summary {
    cluster_id: Option<String>,
    controller: Option<i32>,
    topics: usize,
    partitions: usize,
    under_replicated: Vec<AtRisk>,
    offline: Vec<AtRisk>,
}

impl Summary {
    fn of(md: &MetadataResponse) -> Self {
        let mut s = Summary {
            cluster_id: md.cluster_id.as_ref().map(|c| c.to_string()),
            controller: (md.controller_id.0 >= 0).then_some(md.controller_id.0),
            topics: 0,
            partitions: 0,
            under_replicated: Vec::new(),
            offline: Vec::new(),
        };
        let mut topics: Vec<_> = md.topics.iter().filter(|t| t.error_code == 0).collect();
        topics.sort_by_key(|t| t.name.as_ref().map(|n| n.0.to_string()));
        for t in topics {
            s.topics += 1;
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            let mut parts: Vec<_> = t.partitions.iter().collect();
            parts.sort_by_key(|p| p.partition_index);
            for p in parts {
                s.partitions += 1;
                let r = || AtRisk {
                    topic: name.clone(),
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                };
                if p.leader_id.0 < 0 {
                    s.offline.push(r());
                }
                if p.isr_nodes.len() < p.replica_nodes.len() {
                    s.under_replicated.push(r());
                }
            }
        }
        s
    }

    fn problems(&self, controller_probe: &Result<(), String>) -> Vec<String> {
        let mut out = Vec::new();
        if self.controller.is_none() {
            out.push("no controller is known".to_string());
        }
        if let Err(e) = controller_probe {
            out.push(format!(
                "the controller did not decide an admin request: {e}"
            ));
        }
        if !self.offline.is_empty() {
            out.push(format!("{} partition(s) offline", self.offline.len()));
        }
        if !self.under_replicated.is_empty() {
            out.push(format!(
                "{} partition(s) under-replicated",
                self.under_replicated.len()
            ));
        }
        out
    }
}

/// Runs the verb; Ok(false) means unhealthy (`health` only).
pub(crate) fn run(verb: &ClusterVerb, args: &ClientArgs) -> Result<bool> {
    let mut client = Client::connect(args)?;
    let md = client.metadata(None, false)?;
    let s = Summary::of(&md);
    let brokers: Vec<Value> = client
        .brokers()
        .values()
        .map(|b| json!({"id": b.id, "host": b.host, "port": b.port, "rack": b.rack}))
        .collect();
    let probe = match verb {
        ClusterVerb::Health if s.controller.is_some() => probe_controller(&mut client, args),
        _ => Ok(()),
    };
    let problems = s.problems(&probe);
    let risk_table = |title: &str, list: &[AtRisk]| {
        if list.is_empty() {
            return;
        }
        println!("{title}:");
        let mut t = Table::new(&["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"]);
        for r in list {
            t.row(vec![
                r.topic.clone(),
                r.partition.to_string(),
                if r.leader < 0 {
                    "none".into()
                } else {
                    r.leader.to_string()
                },
                ids(&r.replicas),
                ids(&r.isr),
            ]);
        }
        print!("{}", t.render());
    };
    match (verb, args.format) {
        (ClusterVerb::Info, Format::Table) => {
            println!("Cluster id: {}", s.cluster_id.as_deref().unwrap_or("-"));
            println!(
                "Controller: {}",
                s.controller.map_or("none known".into(), |c| c.to_string())
            );
            println!(
                "Topics: {}  Partitions: {}  Under-replicated: {}  Offline: {}",
                s.topics,
                s.partitions,
                s.under_replicated.len(),
                s.offline.len()
            );
            let mut t = Table::new(&["BROKER", "HOST", "PORT", "RACK"]);
            for b in client.brokers().values() {
                t.row(vec![
                    b.id.to_string(),
                    b.host.clone(),
                    b.port.to_string(),
                    b.rack.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", t.render());
            risk_table("Under-replicated partitions", &s.under_replicated);
            risk_table("Offline partitions", &s.offline);
        }
        (ClusterVerb::Health, Format::Table) => {
            if problems.is_empty() {
                println!(
                    "healthy: {} broker(s), controller {}, {} partition(s) fully replicated",
                    brokers.len(),
                    s.controller.unwrap_or(-1),
                    s.partitions
                );
            } else {
                println!("unhealthy: {}", problems.join(", "));
                risk_table("Under-replicated partitions", &s.under_replicated);
                risk_table("Offline partitions", &s.offline);
            }
        }
        (verb, Format::Json) => {
            let mut v = json!({
                "cluster_id": s.cluster_id,
                "controller": s.controller,
                "brokers": brokers,
                "topics": s.topics,
                "partitions": s.partitions,
                "under_replicated": s.under_replicated.iter().map(AtRisk::json).collect::<Vec<_>>(),
                "offline": s.offline.iter().map(AtRisk::json).collect::<Vec<_>>(),
            });
            if matches!(verb, ClusterVerb::Health) {
                v["healthy"] = json!(problems.is_empty());
                v["controller_answers"] = json!(probe.is_ok());
                v["problems"] = json!(problems);
            }
            print_json(&v);
        }
    }
    Ok(!matches!(verb, ClusterVerb::Health) || problems.is_empty())
}

/// The topic a validate-only CreateTopics names to reach the controller.
const PROBE_TOPIC: &str = "sluice-health-probe";

/// Whether the active controller decides admin requests: a validate-only CreateTopics
/// (nothing is created) answered with anything but REQUEST_TIMED_OUT or NOT_CONTROLLER,
/// within two thirds of the timeout (the rest is left for the answer to arrive).
fn probe_controller(client: &mut Client, args: &ClientArgs) -> Result<(), String> {
    let wait = args.timeout * 2 / 3;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(wait.as_millis().min(i32::MAX as u128) as i32)
        .with_validate_only(true)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(PROBE_TOPIC))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    let conn = client.controller().map_err(|e| format!("{e:#}"))?;
    // validate_only exists from v1; an older broker cannot be asked this way
    if conn
        .version::<CreateTopicsRequest>(7)
        .map_err(|e| format!("{e:#}"))?
        < 1
    {
        return Ok(());
    }
    let (_, resp) = conn.call(7, &req).map_err(|e| format!("{e:#}"))?;
    let code = resp.topics.first().map_or(0, |t| t.error_code);
    if code == ResponseError::RequestTimedOut.code() || code == ResponseError::NotController.code()
    {
        return Err(error_name(code));
    }
    Ok(())
}
