//! A blocking Kafka-protocol client for the admin verbs: one `std::net::TcpStream` per
//! broker, ApiVersions on every new connection to pick each request's version, Metadata to
//! find brokers and leaders, FindCoordinator for groups. It speaks only the Kafka protocol,
//! so it works against any Kafka-compatible broker, Apache Kafka included.
//! Invariants: every connect, read and write is bounded by the `--timeout`; a response must
//! echo its request's correlation id; a frame over 256 MiB is refused before allocating.
//!
//! ```text
//!  Client ── bootstrap Conn ── Metadata ──► brokers {id → host:port}
//!     └── Conn per broker id (lazy) ── requests to leaders, coordinators, the controller
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::format::kafka_error;
use super::security::{CliStream, ClientSecurity, SaslLogin};
use sluice_broker::security::client::SaslClientLogin;

/// Largest response frame accepted (a Fetch answer is bounded by the request's max_bytes).
const MAX_FRAME: usize = 256 << 20;
/// How long a topic Metadata does not know is waited for when it is not being created.
const UNKNOWN_TOPIC_GRACE: Duration = Duration::from_secs(2);
/// Pause between retries of a retriable error.
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// ListOffsets timestamps with a special meaning.
pub(crate) const LATEST: i64 = -1;
pub(crate) const EARLIEST: i64 = -2;

/// One connection to one broker, with the versions it supports.
pub(crate) struct Conn {
    stream: CliStream,
    addr: String,
    timeout: Duration,
    next_correlation: i32,
    /// api key → (min, max) as the broker advertised them.
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    /// Connects (bounded) and negotiates versions with ApiVersions.
    pub(crate) fn connect(
        addr: &str,
        timeout: Duration,
        security: &ClientSecurity,
    ) -> Result<Self> {
        let mut last = None;
        let addrs = addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr}"))?;
        for sa in addrs {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let mut conn = Conn {
                        stream: security.wrap(stream, host)?,
                        addr: addr.to_string(),
                        timeout,
                        next_correlation: 1,
                        versions: HashMap::new(),
                    };
                    conn.negotiate()?;
                    if let Some(login) = &security.sasl {
                        conn.authenticate(login)?;
                    }
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e).with_context(|| format!("connecting to {addr}")),
            None => bail!("{addr} resolves to no address"),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// ApiVersions v3; a broker that does not know v3 answers UNSUPPORTED_VERSION in the
    /// v0 layout with its ranges, and then v0 is used.
    fn negotiate(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = self.call_at(3, &req)?;
        if resp.error_code == ResponseError::UnsupportedVersion.code() {
            resp = self.call_at(0, &ApiVersionsRequest::default())?;
        }
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, "ApiVersions", None));
        }
        self.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// SASL login (SaslHandshake v1, then SaslAuthenticate rounds); the server's final
    /// SCRAM signature is checked too.
    fn authenticate(&mut self, login: &SaslLogin) -> Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mut client =
            SaslClientLogin::new(&login.mechanism, &login.username, &login.password)
                .with_context(|| format!("SASL mechanism {} is not supported", login.mechanism))?;
        let hs = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(client.mechanism().to_string()));
        let resp = self.call_at(1, &hs)?;
        if resp.error_code != 0 {
            let offered: Vec<String> = resp.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(kafka_error(resp.error_code, "SaslHandshake", None))
                .with_context(|| format!("the broker offers {offered:?}"));
        }
        let version = self.version::<SaslAuthenticateRequest>(2)?;
        let mut send = client.first();
        for round in 0..2 {
            let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(send));
            let resp = self.call_at(version, &req)?;
            if resp.error_code != 0 {
                return Err(kafka_error(
                    resp.error_code,
                    "SaslAuthenticate",
                    resp.error_message.as_deref(),
                ));
            }
            if client.mechanism() == "PLAIN" || round == 1 {
                return client
                    .verify_final(&resp.auth_bytes)
                    .map_err(|e| anyhow::anyhow!("SASL: {e}"));
            }
            send = client
                .respond(&resp.auth_bytes)
                .map_err(|e| anyhow::anyhow!("SASL: {e}"))?;
        }
        bail!("SASL: the exchange did not end")
    }

    /// The highest version of `R` both sides support, at most `cap`.
    pub(crate) fn version<R: Request>(&self, cap: i16) -> Result<i16> {
        let Some(&(bmin, bmax)) = self.versions.get(&R::KEY) else {
            bail!(
                "the broker at {} does not support {} (api key {})",
                self.addr,
                api_name(R::KEY),
                R::KEY
            );
        };
        let lo = bmin.max(R::VERSIONS.min);
        let hi = bmax.min(R::VERSIONS.max).min(cap);
        if lo > hi {
            bail!(
                "no common version of {} with the broker at {} (it serves {bmin}..={bmax}, this client {lo}..={hi})",
                api_name(R::KEY),
                self.addr
            );
        }
        Ok(hi)
    }

    /// Sends `req` at the best version up to `cap`; returns the version and the response.
    pub(crate) fn call<R: Request>(&mut self, cap: i16, req: &R) -> Result<(i16, R::Response)> {
        let version = self.version::<R>(cap)?;
        Ok((version, self.call_at(version, req)?))
    }

    /// Sends `req` at `version` and reads its response.
    pub(crate) fn call_at<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response> {
        let correlation = self.send_at(version, req)?;
        self.recv::<R>(version, correlation)
    }

    /// Sends `req` at `version` without reading an answer (acks=0 produce); returns the
    /// correlation id.
    pub(crate) fn send_at<R: Request>(&mut self, version: i16, req: &R) -> Result<i32> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-cli")));
        let mut body = BytesMut::with_capacity(256);
        body.extend_from_slice(&[0; 4]);
        header
            .encode(&mut body, R::header_version(version))
            .with_context(|| format!("encoding a {} header", api_name(R::KEY)))?;
        req.encode(&mut body, version)
            .with_context(|| format!("encoding {} v{version}", api_name(R::KEY)))?;
        let len = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&body)
            .with_context(|| format!("sending {} to {}", api_name(R::KEY), self.addr))?;
        Ok(correlation)
    }

    fn recv<R: Request>(&mut self, version: i16, correlation: i32) -> Result<R::Response> {
        let what = || format!("reading the {} answer from {}", api_name(R::KEY), self.addr);
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).with_context(what)?;
        let n = i32::from_be_bytes(len);
        if n < 0 || n as usize > MAX_FRAME {
            bail!("{} sent a frame of {n} bytes", self.addr);
        }
        let mut buf = vec![0u8; n as usize];
        self.stream.read_exact(&mut buf).with_context(what)?;
        let mut frame = Bytes::from(buf);
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        if header.correlation_id != correlation {
            bail!(
                "{} answered correlation id {} to request {correlation}",
                self.addr,
                header.correlation_id
            );
        }
        R::Response::decode(&mut frame, version)
            .with_context(|| format!("decoding {} v{version} answer", api_name(R::KEY)))
    }

    /// Raises the read timeout for one long wait (JoinGroup), bounded by the caller.
    pub(crate) fn with_read_timeout<T>(
        &mut self,
        t: Duration,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.stream.set_read_timeout(Some(t))?;
        let r = f(self);
        self.stream.set_read_timeout(Some(self.timeout))?;
        r
    }
}

/// A broker as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerInfo {
    pub(crate) id: i32,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) rack: Option<String>,
}

impl BrokerInfo {
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connections to a cluster: the bootstrap broker plus one per broker id, opened lazily.
pub(crate) struct Client {
    timeout: Duration,
    security: ClientSecurity,
    boot: Conn,
    brokers: BTreeMap<i32, BrokerInfo>,
    conns: HashMap<i32, Conn>,
}

impl Client {
    /// Connects to the first reachable address of the comma-separated `--bootstrap` list,
    /// with the client security settings.
    pub(crate) fn connect(args: &super::ClientArgs) -> Result<Self> {
        let security = ClientSecurity::from_args(&args.security)?;
        Self::connect_with(&args.bootstrap, args.timeout, security)
    }

    fn connect_with(bootstrap: &str, timeout: Duration, security: ClientSecurity) -> Result<Self> {
        let mut errors = Vec::new();
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Conn::connect(addr, timeout, &security) {
                Ok(boot) => {
                    return Ok(Client {
                        timeout,
                        security,
                        boot,
                        brokers: BTreeMap::new(),
                        conns: HashMap::new(),
                    })
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if errors.is_empty() {
            bail!("--bootstrap names no broker");
        }
        bail!("no bootstrap broker reachable: {}", errors.join("; "))
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bootstrap connection (any broker will do for this request).
    pub(crate) fn any(&mut self) -> &mut Conn {
        &mut self.boot
    }

    /// Brokers from the last Metadata answer.
    pub(crate) fn brokers(&self) -> &BTreeMap<i32, BrokerInfo> {
        &self.brokers
    }

    /// The connection to broker `id` (from the last Metadata), opened if needed.
    pub(crate) fn broker(&mut self, id: i32) -> Result<&mut Conn> {
        if !self.conns.contains_key(&id) {
            let Some(b) = self.brokers.get(&id) else {
                bail!("broker {id} is not in the cluster's metadata");
            };
            let conn = Conn::connect(&b.addr(), self.timeout, &self.security)
                .with_context(|| format!("connecting to broker {id}"))?;
            self.conns.insert(id, conn);
        }
        self.conns
            .get_mut(&id)
            .context("a connection inserted a moment ago is missing")
    }

    /// The connection to `host:port`, cached under broker `id` (a coordinator FindCoordinator
    /// named, which may not be in our Metadata yet).
    pub(crate) fn node(&mut self, id: i32, host: &str, port: i32) -> Result<&mut Conn> {
        self.brokers.entry(id).or_insert_with(|| BrokerInfo {
            id,
            host: host.to_string(),
            port,
            rack: None,
        });
        self.broker(id)
    }

    /// Forgets the connection to broker `id` (after an I/O error or a moved leader).
    pub(crate) fn drop_conn(&mut self, id: i32) {
        self.conns.remove(&id);
    }

    /// Metadata for `topics` (None: every topic); remembers the brokers it lists.
    pub(crate) fn metadata(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(auto_create)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }));
        let (_, resp) = self.boot.call(12, &req)?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerInfo {
                        id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        Ok(resp)
    }

    /// The connection to use for admin requests (CreateTopics and the like): the controller
    /// Metadata names when it is a known broker, else the bootstrap broker (which forwards).
    pub(crate) fn controller(&mut self) -> Result<&mut Conn> {
        let md = self.metadata(Some(&[]), false)?;
        let id = md.controller_id.0;
        if id >= 0 && self.brokers.contains_key(&id) && self.broker(id).is_ok() {
            return self.broker(id);
        }
        Ok(&mut self.boot)
    }

    /// Partitions of `topics` and each one's leader, waiting (until `deadline`) for every
    /// partition to have a leader. An unknown topic is waited for only briefly (a topic
    /// created a moment ago may not have reached every broker), unless `auto_create` asks
    /// the broker to create it.
    pub(crate) fn leaders(
        &mut self,
        topics: &[String],
        auto_create: bool,
        deadline: Instant,
    ) -> Result<BTreeMap<(String, i32), i32>> {
        let unknown_deadline = if auto_create {
            deadline
        } else {
            deadline.min(Instant::now() + UNKNOWN_TOPIC_GRACE)
        };
        loop {
            let md = self.metadata(Some(topics), auto_create)?;
            let mut out = BTreeMap::new();
            let mut not_ready = None;
            for t in &md.topics {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                if t.error_code != 0 {
                    not_ready = Some((t.error_code, format!("topic '{name}'")));
                    continue;
                }
                for p in &t.partitions {
                    if p.leader_id.0 < 0 {
                        not_ready = Some((
                            ResponseError::LeaderNotAvailable.code(),
                            format!("partition {name}-{}", p.partition_index),
                        ));
                    }
                    out.insert((name.clone(), p.partition_index), p.leader_id.0);
                }
            }
            match not_ready {
                None => return Ok(out),
                Some((code, what)) => {
                    let until = if code == ResponseError::UnknownTopicOrPartition.code() {
                        unknown_deadline
                    } else {
                        deadline
                    };
                    if !retriable(code) || Instant::now() >= until {
                        return Err(kafka_error(code, &what, None));
                    }
                }
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }

    /// ListOffsets at `timestamp` (LATEST, EARLIEST or ms) of each partition, from its
    /// leader, read_uncommitted (so LATEST is the high watermark). An offset of -1 means
    /// no record at or after the timestamp.
    pub(crate) fn list_offsets(
        &mut self,
        parts: &[(String, i32)],
        timestamp: i64,
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let deadline = Instant::now() + self.timeout;
        let mut topics: Vec<String> = parts.iter().map(|(t, _)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut out = BTreeMap::new();
        let mut left: Vec<(String, i32)> = parts.to_vec();
        while !left.is_empty() {
            let leaders = self.leaders(&topics, false, deadline)?;
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for tp in &left {
                let Some(&leader) = leaders.get(tp) else {
                    return Err(kafka_error(
                        ResponseError::UnknownTopicOrPartition.code(),
                        &format!("partition {}-{}", tp.0, tp.1),
                        None,
                    ));
                };
                by_leader.entry(leader).or_default().push(tp.clone());
            }
            let mut retry = Vec::new();
            let mut last_err = (0, String::new());
            for (leader, tps) in by_leader {
                let mut grouped: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &tps {
                    grouped.entry(t).or_default().push(*p);
                }
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(0)
                    .with_timeout_ms(self.timeout.as_millis().min(i32::MAX as u128) as i32)
                    .with_topics(
                        grouped
                            .iter()
                            .map(|(t, ps)| {
                                ListOffsetsTopic::default()
                                    .with_name(topic_name(t))
                                    .with_partitions(
                                        ps.iter()
                                            .map(|p| {
                                                ListOffsetsPartition::default()
                                                    .with_partition_index(*p)
                                                    .with_current_leader_epoch(-1)
                                                    .with_timestamp(timestamp)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                let conn = self.broker(leader)?;
                // v1 is the first with one offset per partition (v0 lists several)
                if conn.version::<ListOffsetsRequest>(9)? < 1 {
                    bail!("the broker at {} only serves ListOffsets v0", conn.addr());
                }
                let resp = match conn.call(9, &req) {
                    Ok((_, r)) => r,
                    Err(e) => {
                        self.drop_conn(leader);
                        return Err(e);
                    }
                };
                for t in &resp.topics {
                    for p in &t.partitions {
                        let tp = (t.name.0.to_string(), p.partition_index);
                        if p.error_code == 0 {
                            out.insert(tp, p.offset);
                        } else if retriable(p.error_code) {
                            last_err = (p.error_code, format!("partition {}-{}", tp.0, tp.1));
                            retry.push(tp);
                        } else {
                            return Err(kafka_error(
                                p.error_code,
                                &format!("ListOffsets of {}-{}", tp.0, tp.1),
                                None,
                            ));
                        }
                    }
                }
            }
            if !retry.is_empty() && Instant::now() >= deadline {
                return Err(kafka_error(last_err.0, &last_err.1, None));
            }
            if !retry.is_empty() {
                std::thread::sleep(RETRY_BACKOFF);
            }
            left = retry;
        }
        Ok(out)
    }

    /// The coordinator of `group` (retrying while it loads or moves, until the timeout).
    pub(crate) fn coordinator(&mut self, group: &str) -> Result<&mut Conn> {
        self.coordinator_of(group, 0)
    }

    /// The coordinator of `key`: a group (`key_type` 0) or a transactional id (1).
    pub(crate) fn coordinator_of(&mut self, group: &str, key_type: i8) -> Result<&mut Conn> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let conn = &mut self.boot;
            let version = conn.version::<FindCoordinatorRequest>(4)?;
            let key = StrBytes::from_string(group.to_string());
            let req = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
            } else {
                FindCoordinatorRequest::default().with_key(key)
            }
            .with_key_type(key_type);
            let resp = conn.call_at(version, &req)?;
            let (code, message, node, host, port) = if version >= 4 {
                match resp.coordinators.first() {
                    Some(c) => (
                        c.error_code,
                        c.error_message.clone(),
                        c.node_id.0,
                        c.host.to_string(),
                        c.port,
                    ),
                    None => bail!("FindCoordinator answered no coordinator for '{group}'"),
                }
            } else {
                (
                    resp.error_code,
                    resp.error_message.clone(),
                    resp.node_id.0,
                    resp.host.to_string(),
                    resp.port,
                )
            };
            if code == 0 {
                // a coordinator is known by its node id; refresh the address it gave
                if self
                    .brokers
                    .get(&node)
                    .is_some_and(|b| b.host != host || b.port != port)
                {
                    self.drop_conn(node);
                    self.brokers.remove(&node);
                }
                return self.node(node, &host, port);
            }
            if !retriable(code) || Instant::now() >= deadline {
                return Err(kafka_error(
                    code,
                    &format!("finding the coordinator of '{group}'"),
                    message.as_deref(),
                ));
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
    }
}

/// Errors worth retrying in a CLI: the cluster is moving, not refusing.
pub(crate) fn retriable(code: i16) -> bool {
    use ResponseError as E;
    [
        E::LeaderNotAvailable,
        E::NotLeaderOrFollower,
        E::UnknownTopicOrPartition,
        E::CoordinatorLoadInProgress,
        E::CoordinatorNotAvailable,
        E::NotCoordinator,
        E::NotController,
        E::FencedLeaderEpoch,
        E::UnknownLeaderEpoch,
        E::OffsetNotAvailable,
    ]
    .iter()
    .any(|e| e.code() == code)
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The request's name for messages ("Metadata"), from its api key.
pub(crate) fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|()| format!("api {key}"))
}
