//! The admin verbs' client security, with librdkafka's setting names so a client config
//! carries over: `-X security.protocol=SASL_SSL -X ssl.ca.location=ca.pem …`, or the same
//! `name=value` lines in `--command-config FILE` (Kafka's tools take a properties file).
//! TLS with rustls (ring): the CA file, an optional client certificate (mTLS), host-name
//! verification unless `ssl.endpoint.identification.algorithm=none`. A setting this client
//! does not implement is an error, never ignored.
//!
//! ```text
//!  TcpStream ─► (SSL, SASL_SSL) rustls StreamOwned ─► CliStream ─► Kafka frames
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use sluice_broker::security::client::tls_client_config;

use sluice_broker::listeners::SecurityProtocol;

/// The security flags every admin verb takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SecurityArgs {
    /// A client setting, librdkafka's name (repeatable): -X security.protocol=SSL
    #[arg(
        short = 'X',
        long = "property",
        value_name = "NAME=VALUE",
        global = true
    )]
    pub(crate) property: Vec<String>,
    /// A file of NAME=VALUE lines with the same settings (Kafka tools' --command-config).
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) command_config: Option<PathBuf>,
}

/// SASL credentials of the client.
#[derive(Clone)]
pub(crate) struct SaslLogin {
    pub(crate) mechanism: String,
    pub(crate) username: String,
    pub(crate) password: String,
}

/// How the admin client connects: its TLS config and SASL login (per `security.protocol`).
#[derive(Clone, Default)]
pub(crate) struct ClientSecurity {
    tls: Option<Arc<ClientConfig>>,
    pub(crate) sasl: Option<SaslLogin>,
}

/// The settings this client implements.
const KNOWN: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

impl ClientSecurity {
    pub(crate) fn from_args(args: &SecurityArgs) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(path) = &args.command_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --command-config {}", path.display()))?;
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .with_context(|| format!("{}: '{line}' is not NAME=VALUE", path.display()))?;
                pairs.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        for p in &args.property {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("-X expects NAME=VALUE, got '{p}'"))?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        Self::from_pairs(&pairs)
    }

    fn from_pairs(pairs: &[(String, String)]) -> Result<Self> {
        let get = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
            bail!(
                "client setting '{k}' is not supported (known: {})",
                KNOWN.join(", ")
            );
        }
        let protocol = match get("security.protocol") {
            None => SecurityProtocol::Plaintext,
            Some(p) => SecurityProtocol::parse(p).with_context(|| {
                format!("security.protocol '{p}' is not plaintext, ssl, sasl_plaintext or sasl_ssl")
            })?,
        };
        let tls = if protocol.tls() {
            let verify_host = match get("ssl.endpoint.identification.algorithm") {
                None | Some("https") => true,
                Some("none") => false,
                Some(other) => {
                    bail!("ssl.endpoint.identification.algorithm '{other}' is not https or none")
                }
            };
            let ca = get("ssl.ca.location").context(
                "ssl.ca.location is needed with SSL (the CA of the broker's certificate)",
            )?;
            Some(Arc::new(tls_client_config(
                ca,
                get("ssl.certificate.location"),
                get("ssl.key.location"),
                verify_host,
            )?))
        } else {
            None
        };
        let sasl = if protocol.sasl() {
            let mechanism = get("sasl.mechanism")
                .or(get("sasl.mechanisms"))
                .unwrap_or("PLAIN")
                .to_ascii_uppercase();
            if !matches!(
                mechanism.as_str(),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
            ) {
                bail!("sasl.mechanism '{mechanism}' is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
            }
            Some(SaslLogin {
                mechanism,
                username: get("sasl.username")
                    .context("sasl.username is needed with SASL")?
                    .to_string(),
                password: get("sasl.password")
                    .context("sasl.password is needed with SASL")?
                    .to_string(),
            })
        } else {
            None
        };
        Ok(Self { tls, sasl })
    }

    /// Wraps a connected socket to `host` as the protocol needs (the TLS handshake runs on
    /// the first read or write, bounded by the socket's timeouts).
    pub(crate) fn wrap(&self, tcp: TcpStream, host: &str) -> Result<CliStream> {
        let Some(tls) = &self.tls else {
            return Ok(CliStream::Plain(tcp));
        };
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .with_context(|| format!("'{host}' is not a TLS server name"))?
            .to_owned();
        let conn = ClientConnection::new(tls.clone(), name).context("starting TLS")?;
        Ok(CliStream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

/// The admin client's socket: plain or TLS.
pub(crate) enum CliStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl CliStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(t)
    }
}

impl Read for CliStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for CliStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_checked() {
        let s = ClientSecurity::from_pairs(&[]).unwrap();
        assert!(s.tls.is_none() && s.sasl.is_none());
        assert!(ClientSecurity::from_pairs(&pairs(&[("ssl.keystore.location", "x")])).is_err());
        assert!(ClientSecurity::from_pairs(&pairs(&[("security.protocol", "tls")])).is_err());
        assert!(ClientSecurity::from_pairs(&pairs(&[("security.protocol", "ssl")])).is_err());
        assert!(
            ClientSecurity::from_pairs(&pairs(&[("security.protocol", "sasl_plaintext")])).is_err(),
            "no username"
        );
        let s = ClientSecurity::from_pairs(&pairs(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "scram-sha-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .unwrap();
        assert_eq!(s.sasl.unwrap().mechanism, "SCRAM-SHA-512");
    }
}
