//! The client side of SASL PLAIN and SCRAM-SHA-256/512 (RFC 5802), for Sluice's own
//! clients: the admin verbs and brokers connecting to other brokers. Sans-I/O: it turns the
//! server's SaslAuthenticate bytes into the next bytes to send, and checks the server's
//! final signature, so a client also authenticates the broker.
//!
//! ```text
//!  first() ─► client-first ─► server-first ─► respond() ─► client-final
//!         ─► server-final ─► verify_final() (ServerSignature)
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore};

use super::scram::ScramMechanism;

/// One client login: PLAIN (one message) or SCRAM (two rounds).
pub struct SaslClientLogin {
    mechanism: String,
    username: String,
    password: String,
    nonce: String,
    /// Set once the server-first message arrived (SCRAM).
    auth_message: String,
    server_key: Vec<u8>,
}

fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl SaslClientLogin {
    /// A login with `mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); None for another.
    pub fn new(mechanism: &str, username: &str, password: &str) -> Option<Self> {
        let mechanism = mechanism.to_ascii_uppercase();
        if mechanism != "PLAIN" && ScramMechanism::from_name(&mechanism).is_none() {
            return None;
        }
        let nonce: String = {
            use rand::Rng;
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect()
        };
        Some(Self {
            mechanism,
            username: username.to_string(),
            password: password.to_string(),
            nonce,
            auth_message: String::new(),
            server_key: Vec::new(),
        })
    }

    /// The mechanism, as SaslHandshake names it.
    pub fn mechanism(&self) -> &str {
        &self.mechanism
    }

    /// The first message.
    pub fn first(&self) -> Vec<u8> {
        if self.mechanism == "PLAIN" {
            return format!("\0{}\0{}", self.username, self.password).into_bytes();
        }
        format!("n,,n={},r={}", escape(&self.username), self.nonce).into_bytes()
    }

    /// The answer to the server's first SCRAM message (client-final).
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let m = ScramMechanism::from_name(&self.mechanism)
            .ok_or_else(|| "PLAIN has a single round".to_string())?;
        let sf = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in sf.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = BASE64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed server-first message: {sf}"));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend ours".into());
        }
        if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&iterations)
        {
            return Err(format!("the server asks for {iterations} iterations"));
        }
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!(
            "n={},r={},{sf},{without_proof}",
            escape(&self.username),
            self.nonce
        );
        let client_key = m.hmac(&salted, b"Client Key");
        let signature = m.hmac(&m.hash(&client_key), self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_key = m.hmac(&salted, b"Server Key");
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message (its signature proves it knows the credential).
    pub fn verify_final(&self, server_final: &[u8]) -> Result<(), String> {
        if self.mechanism == "PLAIN" {
            return Ok(());
        }
        let m = ScramMechanism::from_name(&self.mechanism).ok_or("unknown mechanism")?;
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or("")).ok())
            .ok_or_else(|| format!("malformed server-final message: {text}"))?;
        let expected = m.hmac(&self.server_key, self.auth_message.as_bytes());
        if v != expected {
            return Err("the server's signature is wrong: it does not know the credential".into());
        }
        Ok(())
    }
}

/// What AlterUserScramCredentials sends for a password: a random salt and the salted
/// password (`Hi(password, salt, iterations)`); None for an unknown mechanism.
pub fn salt_password(
    mechanism: &str,
    password: &str,
    iterations: u32,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let m = ScramMechanism::from_name(&mechanism.to_ascii_uppercase())?;
    let salt = rand::random::<[u8; 24]>().to_vec();
    let salted = m.salted_password(password.as_bytes(), &salt, iterations);
    Some((salt, salted))
}

/// Kafka's type code of a SCRAM mechanism (1 SHA-256, 2 SHA-512), or None.
pub fn scram_type_code(mechanism: &str) -> Option<i8> {
    ScramMechanism::from_name(&mechanism.to_ascii_uppercase()).map(|m| m.type_code())
}

/// The mechanism name of a type code.
pub fn scram_name(code: i8) -> &'static str {
    ScramMechanism::from_type_code(code).map_or("UNKNOWN", |m| m.name())
}

fn pem_certs(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{path}: not PEM certificates"))?;
    if certs.is_empty() {
        bail!("{path} holds no certificate");
    }
    Ok(certs)
}

/// A TLS client config: the CA file to verify servers with, an optional certificate and
/// key (PEM) to present, and whether the server's host name is checked (the chain always
/// is). For the admin verbs and for brokers dialing other brokers.
pub fn tls_client_config(
    ca: &str,
    cert: Option<&str>,
    key: Option<&str>,
    verify_host: bool,
) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in pem_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("{ca}: a certificate rustls cannot use"))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("ssl.ca.location")?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            inner: webpki,
            verify_host,
        }));
    Ok(match (cert, key) {
        (Some(cert), Some(key)) => {
            let key_pem = std::fs::read(key).with_context(|| format!("reading {key}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .with_context(|| format!("{key}: no PEM private key"))?;
            builder
                .with_client_auth_cert(pem_certs(cert)?, key)
                .context("ssl.certificate.location and ssl.key.location do not make a pair")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("ssl.certificate.location and ssl.key.location go together"),
    })
}

/// The WebPKI verifier, with host-name checking optional
/// (`ssl.endpoint.identification.algorithm=none`); the chain is always verified.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    verify_host: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{ScramCredential, ScramMockSecret, ScramServer, ScramStep};

    #[test]
    fn logs_in_against_the_server_and_checks_its_signature() {
        for mech in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let cred = ScramCredential::with_random_salt(mech, "s3cret", 4096);
            let lookup =
                |u: &str, m: ScramMechanism| (u == "a,b=c" && m == mech).then(|| cred.clone());
            let mut server = ScramServer::new(mech, ScramMockSecret::random());
            let mut client = SaslClientLogin::new(mech.name(), "a,b=c", "s3cret").unwrap();
            let ScramStep::Challenge(sf) = server.step(&client.first(), &lookup).unwrap() else {
                panic!("no challenge")
            };
            let cf = client.respond(&sf).unwrap();
            let ScramStep::Complete {
                server_final,
                username,
            } = server.step(&cf, &lookup).unwrap()
            else {
                panic!("not complete")
            };
            assert_eq!(username, "a,b=c");
            client.verify_final(&server_final).unwrap();
            assert!(client.verify_final(b"v=AAAA").is_err());
        }
        let plain = SaslClientLogin::new("plain", "u", "p").unwrap();
        assert_eq!(plain.first(), b"\0u\0p");
        assert!(SaslClientLogin::new("GSSAPI", "u", "p").is_none());
    }
}
