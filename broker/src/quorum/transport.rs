//! The controller listener and its peers, on plain threads (the quorum never runs on a
//! shard): raft messages one way, and broker-to-controller calls answered on the
//! connection they came on.
//!
//! ```text
//!  frame = u32 length (of what follows) | u8 kind | payload
//!  kind 0 RAFT   payload = raft envelope (sluice_controller::envelope)      one way
//!  kind 1 CALL   payload = rpc::RpcRequest    ─► answered by kind 2 ANSWER (rpc::RpcResponse)
//! ```
//! - one writer thread per peer drains a bounded queue onto one connection, reconnecting
//!   with a short back-off; a message it cannot deliver is dropped and reported to raft
//!   (`report_unreachable`, and `report_snapshot(false)` for a snapshot), which resends;
//! - one reader thread per accepted connection (at most `MAX_CONNECTIONS`); a frame longer
//!   than `MAX_FRAME` or of an unknown kind closes the connection, a malformed envelope is
//!   dropped and logged;
//! - a call is one short connection: connect, send, wait at most its timeout, close.
//! - with `CONTROLLER:SSL` (or `SASL_SSL`) in `listener.security.protocol.map` every
//!   connection is mutual TLS (rustls): both ends present a certificate chaining to
//!   `ssl.ca.location`, so only nodes holding one can speak raft or make calls;
//! - with `CONTROLLER:SASL_PLAINTEXT` or `SASL_SSL` the dialing side's first frame is a
//!   SASL PLAIN login (kind 3 AUTH, payload `authzid NUL user NUL password`) checked
//!   against the listener's JAAS users; the listener answers kind 4 AUTH_OK, or closes
//!   the connection after `connection.failed.authentication.delay.ms`. Nothing else is read
//!   before it. (`configure`, once at start.)

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, ServerConnection, StreamOwned};
use subtle::ConstantTimeEq as _;

use sluice_controller::envelope::{self, Receiver};
use sluice_controller::RaftMessage;

use super::{rpc, Event};
use crate::conn_limit::RateLimitedLog;
use crate::metadata::controller::{MetadataOp, MetadataOpResult};

const KIND_RAFT: u8 = 0;
const KIND_CALL: u8 = 1;
const KIND_ANSWER: u8 = 2;
const KIND_AUTH: u8 = 3;
const KIND_AUTH_OK: u8 = 4;
/// Largest frame accepted: a snapshot of the metadata image travels whole.
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// Largest frame read before a SASL login is accepted (the login itself).
const MAX_LOGIN_FRAME: usize = 4096;
/// Inbound connections served at once (each is a thread).
const MAX_CONNECTIONS: usize = 256;
/// An inbound connection that completes no frame for this long is closed, so idle or
/// dribbling connections cannot hold the listener's slots.
const FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// A peer connection unused this long is reopened before the next write (the receiver
/// closes idle ones after `FRAME_DEADLINE`, and a write into a closed one is lost).
const IDLE_REOPEN: Duration = Duration::from_secs(5);
/// Raft messages queued for one peer before new ones are dropped (raft resends).
const PEER_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connect, messages to that peer are dropped for this long.
const BACKOFF: Duration = Duration::from_millis(200);

/// The controller listener's TLS (both directions), when `CONTROLLER:SSL` or
/// `CONTROLLER:SASL_SSL` is configured.
pub(crate) struct ControllerTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

/// The controller listener's SASL PLAIN, when `CONTROLLER:SASL_*` is configured.
pub(crate) struct ControllerSasl {
    /// This node's login toward the other controllers.
    pub(crate) user: String,
    pub(crate) password: String,
    /// The logins the listener accepts: user → SHA-256 of the password (compared in
    /// constant time, so neither a password's bytes nor its length leak by timing).
    pub(crate) users: HashMap<String, [u8; 32]>,
    pub(crate) failure_delay: Duration,
}

impl ControllerSasl {
    pub(crate) fn new(
        user: String,
        password: String,
        users: HashMap<String, String>,
        failure_delay: Duration,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|(u, p)| (u, digest(p.as_bytes())))
            .collect();
        Self {
            user,
            password,
            users,
            failure_delay,
        }
    }

    /// The user a PLAIN login names, if its password is that user's.
    fn check(&self, token: &[u8]) -> Option<String> {
        let m = crate::security::plain::parse_plain(token).ok()?;
        // a user name that is not known is checked against a fixed digest, so unknown
        // users and wrong passwords take the same time
        let want = self.users.get(&m.username).copied().unwrap_or([0xff; 32]);
        let ok = bool::from(digest(m.password.as_bytes()).ct_eq(&want))
            && self.users.contains_key(&m.username)
            && (m.authzid.is_empty() || m.authzid == m.username);
        ok.then_some(m.username)
    }

    fn login(&self) -> Vec<u8> {
        let mut token = Vec::with_capacity(self.user.len() + self.password.len() + 2);
        token.push(0);
        token.extend_from_slice(self.user.as_bytes());
        token.push(0);
        token.extend_from_slice(self.password.as_bytes());
        token
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// The controller listener's security, set once before the transport starts.
#[derive(Default)]
pub(crate) struct ControllerSecurity {
    pub(crate) tls: Option<ControllerTls>,
    pub(crate) sasl: Option<ControllerSasl>,
}

static SECURITY: OnceLock<ControllerSecurity> = OnceLock::new();

/// Sets the transport's security for the life of the process. A second call is ignored
/// (tests that start several nodes in one process run plaintext).
pub(crate) fn configure(security: ControllerSecurity) {
    let _ = SECURITY.set(security);
}

fn tls() -> Option<&'static ControllerTls> {
    SECURITY.get().and_then(|s| s.tls.as_ref())
}

fn sasl() -> Option<&'static ControllerSasl> {
    SECURITY.get().and_then(|s| s.sasl.as_ref())
}

/// A controller-listener socket: plain, or TLS as the accepting or the dialing side.
enum Socket {
    Plain(TcpStream),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Socket {
    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Server(s) => &s.sock,
            Socket::Client(s) => &s.sock,
        }
    }

    /// The accepting side of `stream`.
    fn accepted(stream: TcpStream) -> std::io::Result<Self> {
        Ok(match tls() {
            None => Socket::Plain(stream),
            Some(t) => {
                let conn =
                    ServerConnection::new(t.server.clone()).map_err(std::io::Error::other)?;
                Socket::Server(Box::new(StreamOwned::new(conn, stream)))
            }
        })
    }

    /// The dialing side toward `addr`: TLS, then the SASL login, per the listener's
    /// protocol. The stream's read timeout bounds the wait for the login's answer.
    fn dialed(stream: TcpStream, addr: SocketAddr) -> std::io::Result<Self> {
        let mut socket = match tls() {
            None => Socket::Plain(stream),
            Some(t) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let conn =
                    ClientConnection::new(t.client.clone(), name).map_err(std::io::Error::other)?;
                Socket::Client(Box::new(StreamOwned::new(conn, stream)))
            }
        };
        if let Some(sasl) = sasl() {
            write_frame(&mut socket, KIND_AUTH, &sasl.login())?;
            socket.flush()?;
            match read_frame(&mut socket) {
                Ok((KIND_AUTH_OK, _)) => {}
                Ok((kind, _)) => {
                    return Err(std::io::Error::other(format!(
                        "SASL login toward {addr} answered with frame kind {kind}"
                    )))
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("SASL login toward {addr} refused ({e}): check user and password of listener.name.controller.plain.sasl.jaas.config"),
                    ))
                }
            }
        }
        Ok(socket)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            Socket::Server(s) => s.read(buf),
            Socket::Client(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            Socket::Server(s) => s.write(buf),
            Socket::Client(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Socket::Plain(s) => s.flush(),
            Socket::Server(s) => s.flush(),
            Socket::Client(s) => s.flush(),
        }
    }
}

fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(payload.len() + 1).map_err(|_| std::io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&[kind])?;
    w.write_all(payload)
}

/// Reads one frame; the body buffer grows only as bytes arrive.
fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    read_frame_within(r, MAX_FRAME)
}

/// Reads one frame of at most `max` bytes.
fn read_frame_within(r: &mut impl Read, max: usize) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (at most {max})"),
        ));
    }
    let mut body = Vec::new();
    r.take(len as u64 - 1).read_to_end(&mut body)?;
    if body.len() != len - 1 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((header[4], body))
}

/// One outgoing raft message, encoded.
pub(crate) struct Outgoing {
    pub(crate) bytes: Vec<u8>,
    pub(crate) snapshot: bool,
}

/// The sending side of every peer: raft id → queue of its writer thread.
pub(crate) struct Peers {
    queues: std::collections::HashMap<u64, flume::Sender<Outgoing>>,
    cluster_id: String,
    dropped: RateLimitedLog,
}

impl Peers {
    /// Starts one writer thread per peer (every voter but `local`).
    pub(crate) fn start(
        local: u64,
        voters: &[(i32, SocketAddr)],
        cluster_id: &str,
        events: &flume::Sender<Event>,
    ) -> std::io::Result<Self> {
        let mut queues = std::collections::HashMap::new();
        for (id, addr) in voters {
            let id = *id as u64;
            if id == local {
                continue;
            }
            let (tx, rx) = flume::bounded(PEER_QUEUE);
            let (addr, events) = (*addr, events.clone());
            std::thread::Builder::new()
                .name(format!("sluice-peer-{id}"))
                .spawn(move || peer_writer(id, addr, rx, events))?;
            queues.insert(id, tx);
        }
        Ok(Self {
            queues,
            cluster_id: cluster_id.to_string(),
            dropped: RateLimitedLog::new(),
        })
    }

    pub(crate) fn has(&self, id: u64) -> bool {
        self.queues.contains_key(&id)
    }

    /// Starts a writer for a peer that joined (a learner).
    pub(crate) fn add(&mut self, id: u64, addr: SocketAddr, events: &flume::Sender<Event>) {
        let (tx, rx) = flume::bounded(PEER_QUEUE);
        let events = events.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sluice-peer-{id}"))
            .spawn(move || peer_writer(id, addr, rx, events));
        match spawned {
            Ok(_) => {
                self.queues.insert(id, tx);
            }
            Err(e) => tracing::warn!(peer = id, error = %e, "cannot start a peer writer"),
        }
    }

    /// Queues `msg` for its receiver; a full queue drops it (raft resends) and reports the
    /// peer unreachable.
    pub(crate) fn send(&mut self, msg: &RaftMessage) -> Option<u64> {
        let q = self.queues.get(&msg.to)?;
        let bytes = match envelope::encode(&self.cluster_id, msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a raft message");
                return None;
            }
        };
        let snapshot = msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
        match q.try_send(Outgoing { bytes, snapshot }) {
            Ok(()) => None,
            Err(_) => {
                if let Some(n) = self.dropped.hit() {
                    tracing::warn!(peer = msg.to, count = n, "raft queue full: message dropped");
                }
                Some(msg.to)
            }
        }
    }
}

fn peer_writer(
    id: u64,
    addr: SocketAddr,
    rx: flume::Receiver<Outgoing>,
    events: flume::Sender<Event>,
) {
    let mut conn: Option<BufWriter<Socket>> = None;
    let mut down_until: Option<Instant> = None;
    let mut last_write = Instant::now();
    let mut log = RateLimitedLog::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(255));
        if last_write.elapsed() > IDLE_REOPEN {
            conn = None;
        }
        last_write = Instant::now();
        if down_until.is_some_and(|t| Instant::now() < t) {
            report_failed(id, &batch, &events);
            continue;
        }
        if conn.is_none() {
            let dialed = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                // the TLS handshake's reads, if any, are bounded too
                let _ = s.set_read_timeout(Some(WRITE_TIMEOUT));
                Socket::dialed(s, addr)
            });
            match dialed {
                Ok(s) => {
                    conn = Some(BufWriter::with_capacity(256 << 10, s));
                    down_until = None;
                }
                Err(e) => {
                    if let Some(n) = log.hit() {
                        tracing::debug!(peer = id, %addr, error = %e, count = n, "cannot reach controller peer");
                    }
                    down_until = Some(Instant::now() + BACKOFF);
                    report_failed(id, &batch, &events);
                    continue;
                }
            }
        }
        let Some(w) = conn.as_mut() else { continue };
        let written = batch
            .iter()
            .try_for_each(|m| write_frame(w, KIND_RAFT, &m.bytes))
            .and_then(|()| w.flush());
        match written {
            Ok(()) => {
                for _ in batch.iter().filter(|m| m.snapshot) {
                    let _ = events.send(Event::SnapshotSent(id, true));
                }
            }
            Err(e) => {
                if let Some(n) = log.hit() {
                    tracing::debug!(peer = id, %addr, error = %e, count = n, "lost connection to controller peer");
                }
                conn = None;
                report_failed(id, &batch, &events);
            }
        }
    }
}

fn report_failed(id: u64, batch: &[Outgoing], events: &flume::Sender<Event>) {
    let _ = events.send(Event::Unreachable(id));
    if batch.iter().any(|m| m.snapshot) {
        let _ = events.send(Event::SnapshotSent(id, false));
    }
}

/// Binds the controller listener (fails at start if the address is taken).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sk = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sk.set_reuse_address(true)?;
    sk.bind(&addr.into())?;
    sk.listen(128)?;
    Ok(sk.into())
}

/// Serves the controller listener on its own thread.
pub(crate) fn serve(
    listener: TcpListener,
    receiver: Receiver,
    events: flume::Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-ctl-accept".into())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            let mut refused = RateLimitedLog::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    if let Some(n) = refused.hit() {
                        tracing::warn!(
                            count = n,
                            "controller listener: too many connections, refused"
                        );
                    }
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (receiver, events, open) = (receiver.clone(), events.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name("sluice-ctl-conn".into())
                    .spawn(move || {
                        serve_connection(stream, &receiver, &events);
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    tracing::warn!("controller listener: cannot start a connection thread");
                }
            }
        })?;
    Ok(())
}

/// Reads from a socket with a deadline for the frame under way: each read waits at most
/// until the deadline, so a peer that dribbles bytes cannot stretch a frame.
struct DeadlineReader {
    stream: Socket,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete frame in time",
            ));
        }
        self.stream.tcp().set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn serve_connection(stream: TcpStream, receiver: &Receiver, events: &flume::Sender<Event>) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(stream) = Socket::accepted(stream) else {
        return;
    };
    let mut reader = std::io::BufReader::with_capacity(
        256 << 10,
        DeadlineReader {
            stream,
            deadline: Instant::now() + FRAME_DEADLINE,
        },
    );
    if let Some(sasl) = sasl() {
        if !authenticate(&mut reader, sasl, &peer) {
            return;
        }
    }
    loop {
        reader.get_mut().deadline = Instant::now() + FRAME_DEADLINE;
        let (kind, body) = match read_frame(&mut reader) {
            Ok(f) => f,
            Err(e) => {
                match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        tracing::warn!(%peer, error = %e, "controller listener: bad frame, closing")
                    }
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        tracing::debug!(%peer, "controller listener: idle connection closed")
                    }
                    _ => {}
                }
                return;
            }
        };
        match kind {
            KIND_RAFT => match envelope::decode(&body, receiver) {
                Ok(msg) => {
                    if events.send(Event::Peer(Box::new(msg))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // a real peer never sends one: drop it and the connection
                    tracing::warn!(%peer, error = %e, "controller listener: raft message dropped, closing");
                    return;
                }
            },
            KIND_CALL => {
                let (op, timeout_ms) = match rpc::decode_op(&body) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "controller listener: bad call, closing");
                        return;
                    }
                };
                let timeout = Duration::from_millis(u64::from(timeout_ms.clamp(1, 300_000)));
                let (tx, rx) = flume::bounded(1);
                let sent = events.send(Event::Op {
                    op,
                    reply: tx,
                    deadline: Instant::now() + timeout,
                    forwarded: true,
                });
                if sent.is_err() {
                    return;
                }
                let (result, index) = rx
                    .recv_timeout(timeout + Duration::from_millis(500))
                    .unwrap_or_else(|_| {
                        (
                            MetadataOpResult::Failed(
                                kafka_protocol::ResponseError::RequestTimedOut.code(),
                                "the controller did not decide in time".into(),
                            ),
                            0,
                        )
                    });
                let answer = rpc::encode_result(&result, index);
                let writer = &mut reader.get_mut().stream;
                if write_frame(writer, KIND_ANSWER, &answer)
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    return;
                }
            }
            other => {
                tracing::warn!(%peer, kind = other, "controller listener: unknown frame kind, closing");
                return;
            }
        }
    }
}

/// The SASL PLAIN login that must open a connection: true once it is accepted and
/// answered; false (after the failure delay) when the connection is to be closed.
fn authenticate(
    reader: &mut std::io::BufReader<DeadlineReader>,
    sasl: &ControllerSasl,
    peer: &str,
) -> bool {
    // before the login, a frame is small: an unauthenticated peer cannot make this
    // thread hold up to MAX_FRAME
    let user = match read_frame_within(reader, MAX_LOGIN_FRAME) {
        Ok((KIND_AUTH, token)) => sasl.check(&token),
        Ok((kind, _)) => {
            tracing::warn!(%peer, kind, "controller listener: frame before the SASL login, closing");
            return false;
        }
        Err(_) => return false,
    };
    let Some(user) = user else {
        std::thread::sleep(sasl.failure_delay);
        tracing::warn!(%peer, "controller listener: SASL PLAIN login failed, closing");
        return false;
    };
    tracing::debug!(%peer, %user, "controller listener: SASL login accepted");
    let writer = &mut reader.get_mut().stream;
    write_frame(writer, KIND_AUTH_OK, &[])
        .and_then(|()| writer.flush())
        .is_ok()
}

/// Sends `op` to the controller at `addr` and waits at most `timeout` for its answer.
pub(crate) fn call(
    addr: SocketAddr,
    op: &MetadataOp,
    timeout: Duration,
) -> Result<(MetadataOpResult, u64), String> {
    let started = Instant::now();
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT.min(timeout))
        .map_err(|e| format!("cannot reach the controller at {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = tcp.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
    let mut s = Socket::dialed(tcp, addr).map_err(|e| format!("TLS toward {addr}: {e}"))?;
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
    write_frame(&mut s, KIND_CALL, &rpc::encode_op(op, timeout_ms))
        .and_then(|()| s.flush())
        .map_err(|e| format!("sending to the controller at {addr}: {e}"))?;
    // the controller answers within the timeout it was given; allow for the trip
    let _ = s
        .tcp()
        .set_read_timeout(Some(left + Duration::from_millis(1000)));
    let (kind, body) =
        read_frame(&mut s).map_err(|e| format!("no answer from the controller at {addr}: {e}"))?;
    if kind != KIND_ANSWER {
        return Err(format!(
            "the controller at {addr} answered with frame kind {kind}"
        ));
    }
    rpc::decode_result(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_bounds() {
        let mut buf = Vec::new();
        write_frame(&mut buf, KIND_CALL, b"hello").unwrap(); // ok: test
        let (k, body) = read_frame(&mut &buf[..]).unwrap(); // ok: test
        assert_eq!((k, &body[..]), (KIND_CALL, &b"hello"[..]));
        // declared length past the bound: refused before reading or allocating it
        let mut big = ((MAX_FRAME + 2) as u32).to_be_bytes().to_vec();
        big.push(KIND_RAFT);
        assert_eq!(
            read_frame(&mut &big[..]).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        ); // ok: test
           // zero length and a truncated body
        assert!(read_frame(&mut &[0u8, 0, 0, 0, 0][..]).is_err());
        assert!(read_frame(&mut &[0u8, 0, 0, 9, 1, 1][..]).is_err());
    }
}
