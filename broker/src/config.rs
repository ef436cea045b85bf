//! Broker configuration, declared once. Every setting has its Kafka-style name, default,
//! bounds and a one-line description in the settings table (`config/settings.rs`); the same table
//! renders `sluice --help`, validates the TOML file and `--set name=value` flags, and fills
//! `BrokerConfig`. Precedence: defaults < `--config FILE` < `--set` < dedicated flags
//! (`--listen`, ...).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};

mod listener_settings;
mod settings;

pub(crate) use settings::{
    all as all_settings, compression_codec, Kind, Setting, COMPRESSION_TYPES,
};

/// The metadata quorum as configured (see `BrokerConfig::quorum`).
#[derive(Debug, Clone)]
pub struct Quorum {
    pub node: i32,
    /// Roles: a broker serves Kafka clients; a controller is a voter of the quorum.
    pub broker: bool,
    pub controller: bool,
    /// Voter ids and their controller addresses; empty for a single-node quorum.
    pub voters: Vec<(i32, SocketAddr)>,
    /// Where this node's controller listener binds, if it has one.
    pub listener: Option<SocketAddr>,
    /// The configured or derived cluster id; `None` lets a single node pick a random one.
    pub cluster_id: Option<String>,
}

impl Quorum {
    /// Voter ids, this node alone for a single-node quorum.
    pub fn voter_ids(&self) -> Vec<i32> {
        if self.voters.is_empty() {
            vec![self.node]
        } else {
            self.voters.iter().map(|(id, _)| *id).collect()
        }
    }
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .with_context(|| format!("'{addr}' is not host:port"))?
        .next()
        .ok_or_else(|| anyhow!("'{addr}' resolves to no address"))
}

/// A cluster id every voter derives alike from the voter list (FNV-1a, base64url).
fn derived_cluster_id(voters: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in voters.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|i| ALPHABET[((h >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// The broker's resolved settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    values: BTreeMap<&'static str, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            values: all_settings()
                .map(|s| (s.name, s.default.to_string()))
                .collect(),
        }
    }
}

/// A setting whose value is a secret (a JAAS line holds passwords): DescribeConfigs
/// reports it as sensitive with no value, as Kafka does for its PASSWORD settings.
pub(crate) fn sensitive(name: &str) -> bool {
    name.ends_with("sasl.jaas.config") || name.contains("password")
}

fn setting(name: &str) -> anyhow::Result<&'static Setting> {
    all_settings()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("unknown setting '{name}' (see sluice --help)"))
}

fn validate(s: &Setting, value: &str) -> anyhow::Result<()> {
    match s.kind {
        Kind::Int { min, max } => {
            let v: i64 = value
                .trim()
                .parse()
                .with_context(|| format!("{} must be an integer, got '{value}'", s.name))?;
            if v < min || v > max {
                bail!("{} must be within [{min}, {max}], got {v}", s.name);
            }
            if v == 0 && s.name == "compression.gzip.level" {
                bail!("{} must be within [1, 9] or -1, got 0", s.name);
            }
        }
        Kind::Ratio => {
            let v: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("{} must be a number, got '{value}'", s.name))?;
            if !(0.0..=1.0).contains(&v) {
                bail!("{} must be within [0, 1], got {v}", s.name);
            }
        }
        Kind::Choice(options) => {
            if !options.contains(&value) {
                bail!("{} must be one of {options:?}, got '{value}'", s.name);
            }
        }
        Kind::Bool => {
            if value != "true" && value != "false" {
                bail!("{} must be true or false, got '{value}'", s.name);
            }
        }
        Kind::Listeners => crate::listeners::validate_list(s.name, value)?,
        Kind::Str => {}
    }
    Ok(())
}

/// Where the shard threads run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Each shard pinned to its own CPU, spread over every online CPU.
    Spread,
    /// Each shard pinned to its own CPU among these.
    Cpus(Vec<usize>),
    /// Not pinned: the kernel schedules the shard threads.
    Unpinned,
}

/// `""` → every CPU, `none` → unpinned, `0-3,6` → those CPUs.
fn parse_cpuset(value: &str) -> anyhow::Result<Pinning> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Pinning::Spread);
    }
    if value == "none" {
        return Ok(Pinning::Unpinned);
    }
    let cpu = |t: &str| -> anyhow::Result<usize> {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|c| *c < 4096)
            .with_context(|| format!("cpuset: '{t}' is not a CPU number"))
    };
    let mut cpus = Vec::new();
    for part in value.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (cpu(a)?, cpu(b)?);
                if a > b {
                    bail!("cpuset: the range {a}-{b} is empty");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(cpu(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(Pinning::Cpus(cpus))
}

impl BrokerConfig {
    /// Sets one setting by name, validating the value.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let s = setting(name)?;
        validate(s, value)?;
        if s.name == "cpuset" {
            parse_cpuset(value)?;
        }
        if s.name == "ssl.enabled.protocols" {
            let ok = value
                .split(',')
                .all(|v| matches!(v.trim(), "TLSv1.2" | "TLSv1.3"));
            if !ok || value.trim().is_empty() {
                bail!("ssl.enabled.protocols must list TLSv1.2 and/or TLSv1.3, got '{value}'");
            }
        }
        if s.name == "ssl.cipher.suites" {
            crate::tls::provider(value)?;
        }
        if s.name == "sasl.enabled.mechanisms" {
            for m in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                if !crate::handlers::sasl::MECHANISMS.contains(&m.to_ascii_uppercase().as_str()) {
                    bail!("sasl.enabled.mechanisms: {m} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)");
                }
            }
        }
        if s.name == "authorizer.class.name"
            && !value.trim().is_empty()
            && !crate::access::AUTHORIZERS.contains(&value.trim())
        {
            bail!(
                "authorizer.class.name: {value} is not supported (use {})",
                crate::access::AUTHORIZERS[0]
            );
        }
        if s.name == "super.users" {
            crate::security::principal::parse_super_users(value)
                .map_err(|e| anyhow!("super.users: {e}"))?;
        }
        if s.name == "listener.security.protocol.map" {
            crate::listeners::parse_protocol_map(value)?;
        }
        if s.name == "metrics.listen" && !value.trim().is_empty() {
            value.trim().parse::<SocketAddr>().with_context(|| {
                format!("metrics.listen must be ip:port or empty, got '{value}'")
            })?;
        }
        self.values.insert(s.name, value.to_string());
        Ok(())
    }

    /// Applies a TOML file of `name = value` pairs (Kafka names, quoted where they have dots).
    pub fn apply_toml(&mut self, text: &str) -> anyhow::Result<()> {
        let table: toml::Table = text.parse().context("config file is not valid TOML")?;
        for (k, v) in table {
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("setting '{k}' has an unsupported value {other}"),
            };
            self.set(&k, &value)?;
        }
        Ok(())
    }

    /// The current value of a setting as text.
    pub(crate) fn config_value(&self, name: &str) -> String {
        self.get(name).to_string()
    }
    fn get(&self, name: &str) -> &str {
        debug_assert!(
            all_settings().any(|s| s.name == name),
            "setting '{name}' is not declared in the settings table"
        );
        self.values.get(name).map(String::as_str).unwrap_or("")
    }
    pub(crate) fn int(&self, name: &str) -> i64 {
        self.get(name).trim().parse().unwrap_or(0) // ok: validated on set
    }
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name) == "true"
    }
    /// The listeners, checked together (see `listeners.rs`).
    pub(crate) fn listeners(&self) -> anyhow::Result<crate::listeners::Listeners> {
        crate::listeners::parse(
            self.get("listeners"),
            self.get("advertised.listeners"),
            self.get("listener.security.protocol.map"),
            self.get("inter.broker.listener.name"),
        )
    }
    /// Host and port other brokers reach this one on (the inter-broker listener's
    /// advertised endpoint); None when the listener settings do not parse.
    pub fn advertised(&self) -> Option<(String, i32)> {
        let l = self.listeners().ok()?;
        let ib = l.inter_broker();
        Some((ib.advertised_host.clone(), ib.advertised_port))
    }
    /// Where the metrics endpoint listens; None when `metrics.listen` is empty (off).
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.get("metrics.listen").trim().parse().ok() // ok: validated on set
    }
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("log.dirs"))
    }
    pub fn cores(&self) -> usize {
        match (self.int("cores"), self.pinning()) {
            (0, Pinning::Cpus(cpus)) => cpus.len().max(1),
            (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (n, _) => n as usize,
        }
    }
    /// Where the shard threads run (`cpuset`, validated when set).
    pub fn pinning(&self) -> Pinning {
        parse_cpuset(self.get("cpuset")).unwrap_or(Pinning::Spread) // ok: validated on set
    }
    pub(crate) fn node_id(&self) -> i32 {
        self.int("node.id") as i32
    }
    /// No `controller.quorum.voters`: a single node, its own quorum.
    pub(crate) fn single_node(&self) -> bool {
        self.str_value("controller.quorum.voters").trim().is_empty()
    }
    pub(crate) fn str_value(&self, name: &str) -> &str {
        self.get(name)
    }

    /// Settings that depend on each other: with `storage.flush.sync=journal`, a journal
    /// file holds at least 4 unflushed budgets (a cycle's record sets must fit the quarter
    /// of the active file a cycle leaves free; smaller, every cycle's logs would fail).
    pub fn check_storage(&self) -> anyhow::Result<()> {
        let (journal, budget) = (
            self.int("storage.journal.bytes"),
            self.int("storage.unflushed.max.bytes"),
        );
        if self.get("storage.flush.sync") == "journal" && journal < budget.saturating_mul(4) {
            bail!(
                "storage.journal.bytes ({journal}) must be at least 4 times storage.unflushed.max.bytes ({budget}) with storage.flush.sync=journal"
            );
        }
        Ok(())
    }

    /// The metadata quorum this node belongs to, checked: the voters parse, ids are unique,
    /// this node is one of them, roles are supported. Errors say what to fix.
    pub fn quorum(&self) -> anyhow::Result<Quorum> {
        let node = self.node_id();
        let roles: Vec<&str> = self
            .get("process.roles")
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if roles.iter().any(|r| *r != "broker" && *r != "controller") {
            bail!(
                "process.roles must name broker, controller or both, got '{}'",
                self.get("process.roles")
            );
        }
        let (broker, controller) = (roles.contains(&"broker"), roles.contains(&"controller"));
        if !broker && !controller {
            bail!("process.roles must name broker, controller or both");
        }
        if node < 1 {
            bail!("node.id must be at least 1 (raft ids are nonzero), got {node}");
        }
        let text = self.get("controller.quorum.voters").trim();
        let mut voters = Vec::new();
        if !text.is_empty() {
            for part in text.split(',') {
                let part = part.trim();
                let (id, addr) = part.split_once('@').ok_or_else(|| {
                    anyhow!("controller.quorum.voters: '{part}' is not id@host:port")
                })?;
                let id: i32 = id.trim().parse().map_err(|_| {
                    anyhow!("controller.quorum.voters: '{id}' in '{part}' is not a node id")
                })?;
                if id < 1 {
                    bail!("controller.quorum.voters: node ids start at 1, got {id}");
                }
                let addr: SocketAddr = resolve(addr.trim())
                    .with_context(|| format!("controller.quorum.voters: address of node {id}"))?;
                if voters.iter().any(|(v, _)| *v == id) {
                    bail!("controller.quorum.voters names node {id} twice");
                }
                voters.push((id, addr));
            }
            let voter = voters.iter().any(|(v, _)| *v == node);
            if controller && !voter {
                bail!(
                    "node.id={node} has the controller role but is not one of controller.quorum.voters ({text})"
                );
            }
            if !controller && voter {
                bail!(
                    "node.id={node} is one of controller.quorum.voters ({text}) but process.roles has no controller"
                );
            }
        } else if !(broker && controller) {
            bail!(
                "process.roles={} needs controller.quorum.voters: only a combined node can run alone",
                self.get("process.roles")
            );
        }
        let listener = match self.get("controller.listener").trim() {
            "" => voters.iter().find(|(v, _)| *v == node).map(|(_, a)| *a),
            a => Some(resolve(a).context("controller.listener")?),
        };
        if !voters.is_empty() && listener.is_none() {
            bail!("a broker-only node needs controller.listener (where the quorum's leader reaches it)");
        }
        let cluster_id = match self.get("cluster.id").trim() {
            "" if voters.is_empty() => None,
            "" => Some(derived_cluster_id(text)),
            id => {
                if id.len() > 64
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    bail!("cluster.id must be 1..64 characters of [A-Za-z0-9_-], got '{id}'");
                }
                Some(id.to_string())
            }
        };
        Ok(Quorum {
            node,
            broker,
            controller,
            voters,
            listener,
            cluster_id,
        })
    }

    /// Renders the settings table for `--help` and docs.
    pub fn render_table() -> String {
        let mut out = String::from("SETTINGS (config file keys and --set NAME=VALUE):\n");
        for s in all_settings() {
            let bounds = match s.kind {
                Kind::Int { min, max } => format!(" [{min}..{max}]"),
                Kind::Bool => " [true|false]".into(),
                Kind::Ratio => " [0..1]".into(),
                Kind::Choice(options) => format!(" [{}]", options.join("|")),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<34} default {:?}{}{}\n      {}\n",
                s.name,
                s.default,
                if s.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.unit)
                },
                bounds,
                s.doc
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_values() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.pinning(), Pinning::Spread);
        c.set("cpuset", "none").unwrap(); // ok: test
        assert_eq!(c.pinning(), Pinning::Unpinned);
        c.set("cpuset", "3,0-1,1").unwrap(); // ok: test
        assert_eq!(c.pinning(), Pinning::Cpus(vec![0, 1, 3]));
        assert_eq!(c.cores(), 3);
        c.set("cores", "2").unwrap(); // ok: test
        assert_eq!(c.cores(), 2);
        for bad in ["all", "2-1", "1,,2", "-1", "x-3", "5000"] {
            assert!(c.set("cpuset", bad).is_err(), "{bad}");
        }
        assert_eq!(c.pinning(), Pinning::Cpus(vec![0, 1, 3]));
    }

    #[test]
    fn a_journal_smaller_than_four_unflushed_budgets_is_refused() {
        let mut c = BrokerConfig::default();
        c.set("storage.flush.sync", "segment").unwrap(); // ok: test
        c.set("storage.journal.bytes", "16777216").unwrap(); // ok: test
        assert!(
            c.check_storage().is_ok(),
            "segment mode ignores the journal's size"
        );
        c.set("storage.flush.sync", "journal").unwrap(); // ok: test
        let e = c.check_storage().unwrap_err().to_string(); // ok: test
        assert!(e.contains("storage.journal.bytes"), "{e}");
        c.set("storage.unflushed.max.bytes", "4194304").unwrap(); // ok: test
        assert!(c.check_storage().is_ok());
        assert!(BrokerConfig::default().check_storage().is_ok());
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.metrics_listen().map(|a| a.port()), Some(9644));
        c.set("metrics.listen", "").unwrap(); // ok: test
        assert_eq!(c.metrics_listen(), None);
        c.set("metrics.listen", "0.0.0.0:9100").unwrap(); // ok: test
        assert_eq!(c.metrics_listen().map(|a| a.port()), Some(9100));
        for bad in ["9644", "localhost", "1.2.3.4:x"] {
            assert!(c.set("metrics.listen", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_validate_and_layer() {
        for s in all_settings() {
            validate(s, s.default).unwrap(); // ok: test
        }
        let mut c = BrokerConfig::default();
        assert_eq!(c.listeners().unwrap().inter_broker().bind.port(), 9092); // ok: test
        c.apply_toml("\"num.partitions\" = 3\n\"log.dirs\" = \"/x\"\n")
            .unwrap(); // ok: test
        assert_eq!(c.int("num.partitions"), 3);
        assert_eq!(c.data_dir(), PathBuf::from("/x"));
        assert!(c.set("num.partitions", "0").is_err());
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("auto.create.topics.enable", "yes").is_err());
        let q = c.quorum().unwrap(); // ok: test
        assert!(q.voters.is_empty() && q.listener.is_none() && q.cluster_id.is_none());
        assert_eq!(q.voter_ids(), vec![1]);
        assert!(q.broker && q.controller);
        c.set(
            "controller.quorum.voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9094",
        )
        .unwrap(); // ok: test
        let q = c.quorum().unwrap(); // ok: test
        assert_eq!(q.listener.map(|a| a.port()), Some(9093));
        assert!(q.cluster_id.is_some());
        c.set("node.id", "3").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a controller must be a voter");
        c.set("process.roles", "broker").unwrap(); // ok: test
        assert!(
            c.quorum().is_err(),
            "a broker-only node needs controller.listener"
        );
        c.set("controller.listener", "127.0.0.1:9095").unwrap(); // ok: test
        let q = c.quorum().unwrap(); // ok: test
        assert!(q.broker && !q.controller);
        c.set("node.id", "2").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a voter must have the controller role");
        c.set("controller.quorum.voters", "").unwrap(); // ok: test
        assert!(c.quorum().is_err(), "a broker alone has no quorum");
        c.set("advertised.listeners", "example:19092").unwrap(); // ok: test
        let l = c.listeners().unwrap(); // ok: test
        assert_eq!(l.all[0].advertised_host, "example");
        assert_eq!(l.all[0].advertised_port, 19092);
        assert!(BrokerConfig::render_table().contains("log.retention.ms"));
    }
}
