//! Kafka's named listeners: `listeners` (`NAME://host:port,…`), `advertised.listeners`,
//! `listener.security.protocol.map` and `inter.broker.listener.name`, parsed and checked
//! together once at start. A bare `host:port` (Sluice's older form) is the listener
//! `PLAINTEXT`. Every shard accepts on every listener; a connection knows its listener, and
//! Metadata answers with each broker's endpoint of that same listener name, as Kafka does.
//!
//! ```text
//!  listeners=PLAINTEXT://127.0.0.1:9092,SECURE://127.0.0.1:9093
//!  listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL
//!        └─► [Listener{PLAINTEXT, Plaintext, bind, advertised}, Listener{SECURE, SaslSsl, …}]
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};

/// How a listener's connections are secured (Kafka's `SecurityProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Self::Plaintext,
            "SSL" => Self::Ssl,
            "SASL_PLAINTEXT" => Self::SaslPlaintext,
            "SASL_SSL" => Self::SaslSsl,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
    /// Kafka's SecurityProtocol id.
    pub fn id(self) -> i32 {
        match self {
            Self::Plaintext => 0,
            Self::Ssl => 1,
            Self::SaslPlaintext => 2,
            Self::SaslSsl => 3,
        }
    }
    /// Connections are wrapped in TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    /// Connections must authenticate with SASL before anything but ApiVersions.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One listener, as configured. Shared read-only by every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    /// Upper-case, as Kafka normalises listener names.
    pub(crate) name: String,
    pub(crate) protocol: SecurityProtocol,
    pub(crate) bind: SocketAddr,
    /// Host and port given to clients for this listener.
    pub(crate) advertised_host: String,
    pub(crate) advertised_port: i32,
}

/// The parsed listener settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listeners {
    pub(crate) all: Vec<Listener>,
    /// Index in `all` of the listener other brokers use to reach this one.
    pub(crate) inter_broker: usize,
}

impl Listeners {
    pub(crate) fn inter_broker(&self) -> &Listener {
        &self.all[self.inter_broker]
    }
    /// Whether any listener needs TLS (certificates are then required at start).
    pub(crate) fn any_tls(&self) -> bool {
        self.all.iter().any(|l| l.protocol.tls())
    }
}

/// Kafka's default map: every protocol is also a listener name for itself.
pub(crate) const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// `NAME://host:port` or bare `host:port` → (name, host, port). An IPv6 host is written in
/// brackets (`[::1]:9092`); an empty host means every interface.
fn split_endpoint(s: &str) -> anyhow::Result<(String, String, u16)> {
    let s = s.trim();
    let (name, rest) = match s.split_once("://") {
        Some((n, r)) => (n.trim().to_ascii_uppercase(), r),
        None => ("PLAINTEXT".to_string(), s),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("'{s}': a listener name is letters, digits and '_'");
    }
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("'{s}' has no port (NAME://host:port)"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("'{s}': '{port}' is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((name, host.to_string(), port))
}

/// Checks the syntax of `listeners` or `advertised.listeners` (set-time validation).
pub(crate) fn validate_list(setting: &str, value: &str) -> anyhow::Result<()> {
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        split_endpoint(part).with_context(|| setting.to_string())?;
    }
    Ok(())
}

/// Checks the syntax of `listener.security.protocol.map`.
pub(crate) fn parse_protocol_map(
    value: &str,
) -> anyhow::Result<BTreeMap<String, SecurityProtocol>> {
    let mut map = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, proto) = part.split_once(':').with_context(|| {
            format!("listener.security.protocol.map: '{part}' is not NAME:PROTOCOL")
        })?;
        let proto = SecurityProtocol::parse(proto).with_context(|| {
            format!(
                "listener.security.protocol.map: '{proto}' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )
        })?;
        map.insert(name.trim().to_ascii_uppercase(), proto);
    }
    Ok(map)
}

/// Parses and cross-checks the four listener settings.
pub(crate) fn parse(
    listeners: &str,
    advertised: &str,
    protocol_map: &str,
    inter_broker_name: &str,
) -> anyhow::Result<Listeners> {
    let map = parse_protocol_map(protocol_map)?;
    let mut all: Vec<Listener> = Vec::new();
    for part in listeners.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, host, port) = split_endpoint(part).context("listeners")?;
        let protocol = *map.get(&name).with_context(|| {
            format!("listener {name} has no security protocol in listener.security.protocol.map")
        })?;
        if all.iter().any(|l| l.name == name) {
            bail!("listeners: the name {name} is used twice");
        }
        let ip: IpAddr = if host.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            host.parse()
                .with_context(|| format!("listeners: '{host}' is not an IP address"))?
        };
        let bind = SocketAddr::new(ip, port);
        if all.iter().any(|l| l.bind.port() == port && port != 0) {
            bail!("listeners: port {port} is used twice");
        }
        all.push(Listener {
            advertised_host: host,
            advertised_port: i32::from(port),
            name,
            protocol,
            bind,
        });
    }
    if all.is_empty() {
        bail!("listeners is empty");
    }
    let mut seen = Vec::new();
    for part in advertised.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, host, port) = split_endpoint(part).context("advertised.listeners")?;
        // a bare host:port with one listener advertises that listener, whatever its name
        let name = if !part.contains("://") && all.len() == 1 {
            all[0].name.clone()
        } else {
            name
        };
        let Some(l) = all.iter_mut().find(|l| l.name == name) else {
            bail!("advertised.listeners names {name}, which is not in listeners");
        };
        if seen.contains(&name) {
            bail!("advertised.listeners: the name {name} is used twice");
        }
        seen.push(name);
        l.advertised_host = host;
        l.advertised_port = i32::from(port);
    }
    for l in &mut all {
        if l.advertised_host.is_empty() {
            l.advertised_host = hostname();
        }
        if l.advertised_host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            bail!(
                "listener {}: {} cannot be advertised (set advertised.listeners)",
                l.name,
                l.advertised_host
            );
        }
    }
    let inter_broker = if inter_broker_name.trim().is_empty() {
        all.iter().position(|l| l.name == "PLAINTEXT").unwrap_or(0)
    } else {
        let want = inter_broker_name.trim().to_ascii_uppercase();
        all.iter()
            .position(|l| l.name == want)
            .with_context(|| format!("inter.broker.listener.name {want} is not in listeners"))?
    };
    Ok(Listeners { all, inter_broker })
}

/// This machine's host name, for a listener bound to every interface.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_address_is_plaintext() {
        let l = parse("127.0.0.1:9092", "", DEFAULT_PROTOCOL_MAP, "").unwrap();
        assert_eq!(l.all.len(), 1);
        assert_eq!(l.all[0].name, "PLAINTEXT");
        assert_eq!(l.all[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l.all[0].advertised_host, "127.0.0.1");
        assert_eq!(l.inter_broker().advertised_port, 9092);
    }

    #[test]
    fn bare_advertised_with_one_listener() {
        let l = parse(
            "SSL://127.0.0.1:9093",
            "10.0.0.1:19093",
            DEFAULT_PROTOCOL_MAP,
            "",
        )
        .unwrap();
        assert_eq!(l.all[0].advertised_host, "10.0.0.1");
        assert_eq!(l.all[0].advertised_port, 19093);
    }

    #[test]
    fn named_listeners_and_map() {
        let l = parse(
            "PLAINTEXT://127.0.0.1:9092,secure://127.0.0.1:9093,INTERNAL://[::1]:9094",
            "SECURE://broker1:19093",
            "PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL,INTERNAL:SSL",
            "internal",
        )
        .unwrap();
        assert_eq!(l.all.len(), 3);
        assert_eq!(l.all[1].name, "SECURE");
        assert_eq!(l.all[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(l.all[1].advertised_host, "broker1");
        assert_eq!(l.all[1].advertised_port, 19093);
        assert_eq!(l.all[2].bind, "[::1]:9094".parse().unwrap());
        assert_eq!(l.inter_broker().name, "INTERNAL");
        assert!(l.any_tls());
    }

    #[test]
    fn mistakes_are_refused() {
        let m = DEFAULT_PROTOCOL_MAP;
        assert!(
            parse("FOO://127.0.0.1:1", "", m, "").is_err(),
            "unmapped name"
        );
        assert!(parse("PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2", "", m, "").is_err());
        assert!(parse("PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:1", "", m, "").is_err());
        assert!(
            parse("PLAINTEXT://127.0.0.1", "", m, "").is_err(),
            "no port"
        );
        assert!(
            parse("PLAINTEXT://0.0.0.0:1", "", m, "").is_err(),
            "0.0.0.0 advertised"
        );
        assert!(parse("PLAINTEXT://0.0.0.0:1", "PLAINTEXT://h:1", m, "").is_ok());
        assert!(parse("PLAINTEXT://127.0.0.1:1", "SSL://h:1", m, "").is_err());
        assert!(parse("PLAINTEXT://127.0.0.1:1", "", m, "SSL").is_err());
        assert!(parse("PLAINTEXT://127.0.0.1:1", "", "PLAINTEXT:TLS", "").is_err());
        assert!(parse("", "", m, "").is_err());
    }
}
