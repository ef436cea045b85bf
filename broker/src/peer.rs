//! A Kafka-protocol connection from this broker to another broker's Kafka listener, one
//! exchange at a time: followers fetching from their leader (`replication.rs`), the
//! transaction coordinator writing markers to partition leaders (`txn_markers.rs`) and a
//! metrics scrape asking leaders for high watermarks (`metrics/remote_hw.rs`). Owned by
//! the task that opened it, on one shard; never crosses cores.
//!
//! Every exchange is bounded in time (`timeout`) and in answer size (`MAX_RESPONSE`); an
//! answer whose correlation id is not the request's is an error (the caller drops the
//! connection). The connection speaks the inter-broker listener's security protocol
//! (`PeerSecurity`): TLS with this broker's certificate as client certificate, and SASL
//! with the credentials of `sasl.jaas.config`, so the peer sees this broker's principal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::config::BrokerConfig;
use crate::security::client::SaslClientLogin;
use crate::socket::Socket;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest answer accepted from a peer.
const MAX_RESPONSE: usize = 64 << 20;

/// How this broker connects to the others' inter-broker listener: TLS (its own
/// certificate as client certificate) and SASL credentials, per the listener's protocol.
/// Built once at start on the main thread; shared read-only by every shard.
#[derive(Default)]
pub(crate) struct PeerSecurity {
    tls: Option<Arc<rustls::ClientConfig>>,
    /// (mechanism, username, password)
    sasl: Option<(String, String, String)>,
}

impl PeerSecurity {
    /// From the inter-broker listener's protocol and the ssl.*/sasl.* settings; an
    /// unusable combination fails the start.
    pub(crate) fn from_config(config: &BrokerConfig) -> anyhow::Result<Self> {
        let listeners = config.listeners()?;
        let protocol = listeners.inter_broker().protocol;
        let tls = if protocol.tls() {
            Some(Arc::new(
                client_tls(config).context("TLS toward the other brokers")?,
            ))
        } else {
            None
        };
        let sasl = if protocol.sasl() {
            let mechanism = config
                .str_value("sasl.mechanism.inter.broker.protocol")
                .to_ascii_uppercase();
            let (user, password) = crate::security::jaas::credentials(config.str_value("sasl.jaas.config"))
                .context("the inter-broker listener is SASL: sasl.jaas.config must name username and password")?;
            if SaslClientLogin::new(&mechanism, &user, &password).is_none() {
                bail!("sasl.mechanism.inter.broker.protocol {mechanism} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
            }
            Some((mechanism, user, password))
        } else {
            None
        };
        Ok(Self { tls, sasl })
    }
}

fn client_tls(config: &BrokerConfig) -> anyhow::Result<rustls::ClientConfig> {
    let ca = config.str_value("ssl.ca.location").trim();
    if ca.is_empty() {
        bail!("ssl.ca.location is needed to verify the other brokers' certificates");
    }
    let present = |name: &str| Some(config.str_value(name).trim()).filter(|v| !v.is_empty());
    crate::security::client::tls_client_config(
        ca,
        present("ssl.certificate.location"),
        present("ssl.key.location"),
        true,
    )
}

/// A connection to a peer's Kafka listener.
pub(crate) struct PeerConn {
    stream: Socket,
    correlation: i32,
    client_id: &'static str,
    timeout: Duration,
}

impl PeerConn {
    /// Connects to `addr` ("host:port"); requests carry `client_id`, and each exchange
    /// (the peer's long poll included) must complete within `timeout`.
    pub(crate) async fn open(
        addr: &str,
        client_id: &'static str,
        timeout: Duration,
        security: &PeerSecurity,
    ) -> anyhow::Result<Self> {
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(std::io::Error::from)?;
            let _ = tcp.set_nodelay(true);
            let stream = match &security.tls {
                None => Socket::Plain(tcp),
                Some(tls) => {
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let name = rustls::pki_types::ServerName::try_from(
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_string(),
                    )?;
                    let (tcp, tls) = futures_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await?
                        .into_inner();
                    Socket::Tls(Box::new(crate::socket::TlsSocket::new(tcp, tls)))
                }
            };
            Ok::<Socket, anyhow::Error>(stream)
        };
        let stream = future::or(async { Some(connect.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("connecting to {addr} timed out"))??;
        let mut conn = Self {
            stream,
            correlation: 0,
            client_id,
            timeout,
        };
        if let Some((mechanism, user, password)) = &security.sasl {
            conn.authenticate(mechanism, user, password)
                .await
                .with_context(|| format!("SASL toward {addr}"))?;
        }
        Ok(conn)
    }

    /// SaslHandshake v1 and SaslAuthenticate rounds; the peer's final SCRAM signature is
    /// checked too.
    async fn authenticate(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mut login = SaslClientLogin::new(mechanism, user, password)
            .with_context(|| format!("unknown SASL mechanism {mechanism}"))?;
        let hs = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(login.mechanism().to_string()));
        let resp = self.call(1, &hs).await?;
        if resp.error_code != 0 {
            bail!("SaslHandshake answered error {}", resp.error_code);
        }
        let mut send = login.first();
        for round in 0..2 {
            let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(send));
            let resp = self.call(1, &req).await?;
            if resp.error_code != 0 {
                bail!(
                    "SaslAuthenticate answered error {}: {}",
                    resp.error_code,
                    resp.error_message.as_deref().unwrap_or("")
                );
            }
            if login.mechanism() == "PLAIN" || round == 1 {
                return login
                    .verify_final(&resp.auth_bytes)
                    .map_err(anyhow::Error::msg);
            }
            send = login
                .respond(&resp.auth_bytes)
                .map_err(anyhow::Error::msg)?;
        }
        bail!("the SASL exchange did not end")
    }

    /// Sends `req` at `version` and reads its answer.
    pub(crate) async fn call<R: Request + Encodable>(
        &mut self,
        version: i16,
        req: &R,
    ) -> anyhow::Result<R::Response>
    where
        R::Response: Decodable + HeaderVersion,
    {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_RESPONSE {
                anyhow::bail!("answer of {len} bytes from a peer");
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok::<Bytes, anyhow::Error>(Bytes::from(buf))
        };
        let timeout = self.timeout;
        let timed = future::or(async { Some(exchange.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        let mut buf = timed.ok_or_else(|| anyhow::anyhow!("no answer from the peer in time"))??;
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version))?;
        if h.correlation_id != self.correlation {
            anyhow::bail!(
                "answer {} to request {}",
                h.correlation_id,
                self.correlation
            );
        }
        R::Response::decode(&mut buf, version)
    }
}
