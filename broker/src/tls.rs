//! TLS for the SSL and SASL_SSL listeners, with rustls (ring; no OpenSSL). The server
//! config is built from PEM files (`ssl.certificate.location`, `ssl.key.location`,
//! `ssl.ca.location`) on the main thread at start and again on SIGHUP; the shards load the
//! current one per accepted connection from an `ArcSwap` (lock-free), so a reload changes
//! new handshakes and never drops a connection. A bad reload is logged and the old
//! certificates stay.
//!
//! ```text
//!  SIGHUP ─► reload thread: read PEMs ─► ServerConfig ─► ArcSwap::store
//!  shard accept ─► ArcSwap::load_full ─► TlsAcceptor::accept (bounded) ─► Conn
//! ```

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::BrokerConfig;

/// A TLS handshake that has not finished in this time closes its connection.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The current server configs of the TLS listeners: SSL listeners ask for client
/// certificates as `ssl.client.auth` says; SASL_SSL listeners authenticate with SASL and
/// do not (Kafka's rule since KIP-684). Shared by every shard and the reload thread;
/// readers never block.
#[derive(Clone)]
pub(crate) struct TlsConfig {
    ssl: Arc<ArcSwap<ServerConfig>>,
    sasl_ssl: Arc<ArcSwap<ServerConfig>>,
}

impl TlsConfig {
    /// Builds the configs from the settings; fails when a file is missing or unusable.
    pub(crate) fn load(config: &BrokerConfig) -> anyhow::Result<Self> {
        Ok(Self {
            ssl: Arc::new(ArcSwap::from_pointee(server_config(config, None)?)),
            sasl_ssl: Arc::new(ArcSwap::from_pointee(server_config(config, Some("none"))?)),
        })
    }

    /// The config for a connection accepted now on a listener with `sasl` or not.
    pub(crate) fn current(&self, sasl: bool) -> Arc<ServerConfig> {
        if sasl {
            self.sasl_ssl.load_full()
        } else {
            self.ssl.load_full()
        }
    }

    /// Reads the PEM files again; on error the old configs stay and the error is returned.
    pub(crate) fn reload(&self, config: &BrokerConfig) -> anyhow::Result<()> {
        let ssl = server_config(config, None)?;
        let sasl_ssl = server_config(config, Some("none"))?;
        self.ssl.store(Arc::new(ssl));
        self.sasl_ssl.store(Arc::new(sasl_ssl));
        Ok(())
    }
}

fn read(path: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    if path.trim().is_empty() {
        bail!("{what} is not set; an SSL or SASL_SSL listener needs it");
    }
    std::fs::read(path.trim()).with_context(|| format!("reading {what} {path}"))
}

fn certs(path: &str, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_reader_iter(&mut BufReader::new(&pem[..]))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what} {path}: not PEM certificates"))?;
    if certs.is_empty() {
        bail!("{what} {path} holds no certificate");
    }
    Ok(certs)
}

/// The server config from the `ssl.*` settings; `client_auth` overrides `ssl.client.auth`
/// (`none` for SASL_SSL listeners, `required` for the controller listener).
pub(crate) fn server_config(
    config: &BrokerConfig,
    client_auth: Option<&str>,
) -> anyhow::Result<ServerConfig> {
    let chain = certs(
        config.str_value("ssl.certificate.location"),
        "ssl.certificate.location",
    )?;
    let key_pem = read(config.str_value("ssl.key.location"), "ssl.key.location")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
        format!(
            "ssl.key.location {}: no PEM private key (PKCS#8, PKCS#1 or SEC1; unencrypted)",
            config.str_value("ssl.key.location")
        )
    })?;
    let (provider, operator_order) = provider(config.str_value("ssl.cipher.suites"))?;
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = config
        .str_value("ssl.enabled.protocols")
        .split(',')
        .filter_map(|v| match v.trim() {
            "TLSv1.2" => Some(&rustls::version::TLS12),
            "TLSv1.3" => Some(&rustls::version::TLS13),
            _ => None,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("ssl.enabled.protocols")?;
    let auth = client_auth.unwrap_or_else(|| config.str_value("ssl.client.auth"));
    let builder = if auth == "none" {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in certs(config.str_value("ssl.ca.location"), "ssl.ca.location")? {
            roots
                .add(c)
                .context("ssl.ca.location: a certificate rustls cannot use")?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if auth == "requested" {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        builder.with_client_cert_verifier(verifier.build().context("ssl.ca.location")?)
    };
    let mut sc = builder
        .with_single_cert(chain, key)
        .context("ssl.certificate.location and ssl.key.location do not make a usable pair")?;
    sc.alpn_protocols.clear();
    // as Kafka (JSSE honours the server's order): the listed order is the preference
    sc.ignore_client_order = operator_order;
    Ok(sc)
}

/// The IANA name of a cipher suite (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), the names Kafka's `ssl.cipher.suites` takes;
/// rustls spells the TLS 1.3 ones `TLS13_...`.
fn iana_name(suite: rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The cipher suites this broker can offer, by IANA name, in its default preference.
pub(crate) fn cipher_suite_names() -> Vec<String> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .map(iana_name)
        .collect()
}

/// ring's provider with `ssl.cipher.suites` applied: empty keeps every suite in rustls's
/// order (and the client's preference decides, as without the setting in Kafka); a list
/// keeps only those suites, in the listed order, and `true` says that order is the
/// server's preference. An unknown name is an error.
pub(crate) fn provider(list: &str) -> anyhow::Result<(rustls::crypto::CryptoProvider, bool)> {
    let mut provider = rustls::crypto::ring::default_provider();
    let wanted: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok((provider, false));
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    for name in wanted {
        let Some(suite) = all
            .iter()
            .find(|s| iana_name(**s).eq_ignore_ascii_case(name))
        else {
            bail!(
                "ssl.cipher.suites: {name} is not supported; the supported suites are {}",
                cipher_suite_names().join(", ")
            );
        };
        if !provider.cipher_suites.contains(suite) {
            provider.cipher_suites.push(*suite);
        }
    }
    Ok((provider, true))
}

/// Reloads `tls` on every SIGHUP, on a thread of its own, until the process ends.
pub(crate) fn reload_on_sighup(tls: TlsConfig, config: BrokerConfig) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("sluice-tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match tls.reload(&config) {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        "SIGHUP: TLS certificates not reloaded; the old ones stay in use"
                    ),
                }
            }
        })
        .context("starting the TLS reload thread")?;
    Ok(())
}

/// Kafka's principal of a client certificate (`ssl.principal.mapping.rules=DEFAULT`): the
/// subject's distinguished name in RFC 2253 form, e.g. `User:CN=alice,OU=eng,O=acme`.
pub(crate) fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    crate::security::principal::principal_from_certificate(cert.as_ref())
        .ok()
        .map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_by_iana_name_in_the_listed_order() {
        let (all, ordered) = provider("").unwrap();
        assert!(!ordered);
        assert!(all.cipher_suites.len() >= 3);
        let names = cipher_suite_names();
        assert!(
            names.contains(&"TLS_AES_128_GCM_SHA256".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
        let (p, ordered) = provider(
            " tls_chacha20_poly1305_sha256 ,TLS_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256",
        )
        .unwrap();
        assert!(ordered);
        let got: Vec<String> = p.cipher_suites.iter().map(|s| iana_name(*s)).collect();
        assert_eq!(
            got,
            ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
        );
        // TLS 1.3 suites alone with both versions enabled: a config (TLS 1.3 only)
        let (p, _) = provider("TLS_AES_128_GCM_SHA256").unwrap();
        assert!(ServerConfig::builder_with_provider(Arc::new(p))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .is_ok());
        let err = provider("TLS_AES_128_GCM_SHA256,TLS_RSA_WITH_RC4_128_MD5").unwrap_err();
        assert!(
            err.to_string().contains("TLS_RSA_WITH_RC4_128_MD5"),
            "{err}"
        );
    }

    #[test]
    fn subject_in_rfc2253_order_with_escapes() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "eng");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let p = principal_of(cert.der()).unwrap();
        assert_eq!(p, "User:CN=alice,OU=eng,O=Acme\\, Inc.,C=US");
    }
}
