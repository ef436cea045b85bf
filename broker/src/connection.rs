//! One client connection on the shard that accepted it. A reader decodes size-bounded
//! frames and dispatches each request; the ordered part of a request (e.g. a produce
//! append) runs before the next frame is read; the rest runs as a task (a transaction
//! request's task ends before the next frame is read: `serial`). A writer sends the
//! answers strictly in request order.
//!
//! ```text
//!  socket ─► reader: take_frame ─► dispatch (ordered part) ─► spawn rest ─► queue (bounded)
//!  socket ◄─ writer: await queue head ─► write response chunks (record Bytes uncopied)
//! ```
//! A frame that cannot be decoded or exceeds `socket.request.max.bytes` closes this
//! connection only. Bounds: request and answer bytes in flight until the answer is written
//! (`connection.inflight.max.bytes`; past it the reader stops and TCP pushes back), idle time (`connections.max.idle.ms`), and a
//! receive buffer that grows only as bytes arrive. When the peer goes away, `Conn::closed`
//! ends its long polls at once.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::handlers::{self, Dispatch, Response};
use crate::security::principal::KafkaPrincipal;
use crate::shard::ShardCtx;
use crate::socket::Socket;
use sluice_storage::Signal;

/// A half of a connection: the reader and writer tasks share the stream, borrowing it only
/// inside one `poll_*` call (one thread, so never at the same time).
#[derive(Clone)]
struct Half(Rc<RefCell<Socket>>);

impl Half {
    /// Appends at most `want` received bytes to `buf` (`Socket::poll_read_buf`).
    async fn read_buf(&mut self, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
        future::poll_fn(|cx| self.0.borrow_mut().poll_read_buf(cx, buf, want)).await
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// A listener's connections' common part: its name and protocol, and its TLS config.
/// Shared read-only by every shard.
pub(crate) struct ListenerCtx {
    pub(crate) listener: crate::listeners::Listener,
    pub(crate) tls: Option<crate::tls::TlsConfig>,
}

/// A response being made, and the connection's in-flight bytes it holds until written.
type Pending = JoinHandle<(Response, Inflight)>;

/// Request (and then response) bytes counted in the connection's in-flight total; given
/// back when dropped: for answered requests once the answer is written to the socket, so
/// a client that does not read its answers stops being read too.
struct Inflight {
    conn: Rc<Conn>,
    bytes: usize,
}

impl Inflight {
    fn new(conn: &Rc<Conn>, bytes: usize) -> Self {
        conn.add_inflight(bytes);
        Self {
            conn: conn.clone(),
            bytes,
        }
    }

    fn add(&mut self, bytes: usize) {
        self.conn.add_inflight(bytes);
        self.bytes += bytes;
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.conn.sub_inflight(self.bytes);
    }
}

/// What the handlers may know of the connection a request came on. Owned by the
/// connection's shard; never crosses cores.
pub(crate) struct Conn {
    /// Unique on this shard for the life of the process (fetch sessions bind to it).
    pub(crate) id: u64,
    pub(crate) peer: Rc<str>,
    /// Request bytes whose answers are not complete (acks=0 produce until appended).
    inflight: Cell<usize>,
    inflight_changed: Signal,
    closed: Cell<bool>,
    closed_notify: Signal,
    /// The listener it came in on.
    pub(crate) listener: Arc<ListenerCtx>,
    /// Kafka's principal: `User:ANONYMOUS`, the subject of a verified client certificate,
    /// or the SASL user once authenticated; set with `set_principal`, which keeps
    /// `identity` in step.
    principal: RefCell<Rc<str>>,
    /// `principal` parsed, and the client's IP address as ACL hosts are written: what every
    /// ACL check needs, made once per authentication rather than per check.
    identity: RefCell<KafkaPrincipal>,
    host: Box<str>,
    /// SASL authentication (SASL listeners), see `handlers::sasl`.
    pub(crate) sasl: RefCell<crate::handlers::sasl::SaslState>,
    /// The SASL mechanism the connection authenticated with (re-authentication keeps it).
    pub(crate) mechanism: RefCell<String>,
    /// After a v0 SaslHandshake: the next frames are bare SASL tokens.
    pub(crate) sasl_raw: Cell<bool>,
}

impl Conn {
    /// The client's IP address as text (what ACL hosts match).
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The principal as Kafka prints it (`User:alice`).
    pub(crate) fn principal(&self) -> Rc<str> {
        self.principal.borrow().clone()
    }

    /// The principal parsed, for ACL checks (borrowed only for the check).
    pub(crate) fn identity(&self) -> std::cell::Ref<'_, KafkaPrincipal> {
        self.identity.borrow()
    }

    /// A new principal (after SASL authentication).
    pub(crate) fn set_principal(&self, principal: Rc<str>) {
        *self.identity.borrow_mut() = parse_principal(&principal);
        *self.principal.borrow_mut() = principal;
    }

    /// The name of the listener the connection came in on.
    pub(crate) fn listener_name(&self) -> Rc<str> {
        Rc::from(self.listener.listener.name.as_str())
    }

    /// The peer went away (or the broker closed the connection).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Resolves once the connection is closed.
    pub(crate) async fn closed(&self) {
        while !self.closed.get() {
            self.closed_notify.wait().await;
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.closed_notify.notify();
    }

    fn add_inflight(&self, n: usize) {
        self.inflight.set(self.inflight.get() + n);
    }

    fn sub_inflight(&self, n: usize) {
        self.inflight.set(self.inflight.get().saturating_sub(n));
        self.inflight_changed.notify();
    }
}

/// Serves one connection until the peer closes it or sends something unacceptable.
pub(crate) async fn serve(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    id: u64,
    peer: String,
    listener: Arc<ListenerCtx>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let (stream, principal) = match &listener.tls {
        None => (Socket::Plain(stream), None),
        Some(tls) => match tls_handshake(tls, listener.listener.protocol.sasl(), stream).await {
            Ok(s) => {
                let (tcp, tls) = s.into_inner();
                let principal = tls
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(crate::tls::principal_of);
                tracing::debug!(
                    %peer,
                    version = ?tls.protocol_version(),
                    suite = ?tls.negotiated_cipher_suite().map(|s| s.suite()),
                    "TLS handshake done"
                );
                let socket = crate::socket::TlsSocket::new(tcp, tls);
                (Socket::Tls(Box::new(socket)), principal)
            }
            Err(reason) => {
                ctx.metrics.tls_handshake_failed();
                tracing::info!(%peer, listener = %listener.listener.name, %reason, "TLS handshake failed; connection closed");
                return;
            }
        },
    };
    let principal = principal.unwrap_or_else(|| ANONYMOUS.to_string());
    let conn = Rc::new(Conn {
        id,
        host: host_of(&peer).into(),
        identity: RefCell::new(parse_principal(&principal)),
        peer: Rc::from(peer),
        inflight: Cell::new(0),
        inflight_changed: Signal::default(),
        closed: Cell::new(false),
        closed_notify: Signal::default(),
        sasl: crate::handlers::sasl::new_state(listener.listener.protocol.sasl()),
        mechanism: RefCell::new(String::new()),
        sasl_raw: Cell::new(false),
        listener,
        principal: RefCell::new(Rc::from(principal)),
    });
    ctx.metrics.connection_opened();
    let mut half = Half(Rc::new(RefCell::new(stream)));
    let depth = ctx.config.int("queued.max.requests").max(1) as usize;
    let (tx, rx) = local_channel::new_bounded::<Pending>(depth);
    let writer = glommio::spawn_local(write_loop(half.clone(), rx));
    if let Err(reason) = read_loop(&ctx, half.clone(), tx, &conn).await {
        let principal = conn.principal();
        tracing::info!(peer = %conn.peer, %principal, shard = ctx.id, %reason, "closing connection");
    }
    // Long polls and other waits of this connection end now; their answers go nowhere.
    conn.close();
    ctx.fetch_sessions.borrow_mut().drop_conn(conn.id);
    writer.await;
    let _ = half.close().await;
    ctx.metrics.connection_closed();
}

/// The principal of a connection that has not authenticated (Kafka's).
pub(crate) const ANONYMOUS: &str = "User:ANONYMOUS";

/// The IP address of `peer` (`ip:port`, `[v6]:port`) as ACL hosts are written.
fn host_of(peer: &str) -> &str {
    let ip = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    ip.trim_start_matches('[').trim_end_matches(']')
}

/// A principal as ACLs compare it; text without a colon (never made here) is anonymous.
fn parse_principal(p: &str) -> KafkaPrincipal {
    KafkaPrincipal::parse(p).unwrap_or_else(|_| KafkaPrincipal::anonymous())
}

/// Runs the server side of a TLS handshake, bounded by `tls::HANDSHAKE_TIMEOUT`.
async fn tls_handshake(
    tls: &crate::tls::TlsConfig,
    sasl: bool,
    stream: TcpStream,
) -> Result<futures_rustls::server::TlsStream<TcpStream>, String> {
    let accept = futures_rustls::TlsAcceptor::from(tls.current(sasl)).accept(stream);
    let timeout = async {
        glommio::timer::sleep(crate::tls::HANDSHAKE_TIMEOUT).await;
        Err(format!(
            "no handshake within {} s",
            crate::tls::HANDSHAKE_TIMEOUT.as_secs()
        ))
    };
    future::or(async { accept.await.map_err(|e| e.to_string()) }, timeout).await
}

/// Bounds of one connection's reader, read once from the config.
struct ReadLimits {
    max_frame: usize,
    max_inflight: usize,
    idle: Duration,
    /// `request.deadline.ms`.
    deadline: Duration,
}

/// Reads ask for at most this much more than the larger of the bytes of the frame
/// arriving now and the last whole frame: a declared-but-unsent frame costs no more memory
/// than what the peer actually sent.
const FIRST_READ: usize = 64 * 1024;
/// A buffer this large with nothing in it is given back between requests.
const KEEP_CAPACITY: usize = 256 * 1024;

async fn read_loop(
    ctx: &Rc<ShardCtx>,
    mut half: Half,
    tx: local_channel::LocalSender<Pending>,
    conn: &Rc<Conn>,
) -> Result<(), String> {
    let limits = ReadLimits {
        max_frame: ctx.config.int("socket.request.max.bytes") as usize,
        max_inflight: ctx.config.int("connection.inflight.max.bytes") as usize,
        idle: Duration::from_millis(ctx.config.int("connections.max.idle.ms") as u64),
        deadline: Duration::from_millis(ctx.config.int("request.deadline.ms") as u64),
    };
    // Received bytes not yet taken as frames. Reads append to it without zeroing the
    // room first (`Half::read_buf`).
    let mut buf = BytesMut::new();
    let mut last_request = Instant::now();
    let mut last_frame = 0usize;
    loop {
        loop {
            // a failed acks=0 produce closed it: nothing after it is served, as in Kafka
            if conn.is_closed() {
                return Err("closed after a failed acks=0 produce".into());
            }
            let frame = sluice_proto::frame::take_frame(&mut buf, limits.max_frame)
                .map_err(|e| e.to_string())?;
            let Some(frame) = frame else { break };
            last_request = Instant::now();
            let (started, api) = (last_request, peek_api(&frame));
            let size = frame.len() + sluice_proto::frame::SIZE_PREFIX;
            last_frame = size;
            let watch = ctx.watchdog.track(&frame, &conn.peer);
            let mut inflight = Inflight::new(conn, size);
            // kept (a reference, not a copy) to answer the request if it passes its deadline
            let raw = frame.clone();
            match handlers::dispatch(ctx, frame, conn).await {
                Dispatch::Respond(fut) => {
                    let (deadline, peer) = (limits.deadline, conn.peer.clone());
                    let metrics = ctx.metrics.clone();
                    // a transaction's request is done before the next one is read
                    let (done_tx, done_rx) = if serial(api) {
                        let (t, r) = local_channel::new_bounded::<()>(1);
                        (Some(t), Some(r))
                    } else {
                        (None, None)
                    };
                    let task = glommio::spawn_local(async move {
                        let (r, late) = within_deadline(fut, raw, deadline, &peer).await;
                        metrics.request_done(api, started.elapsed(), late || r.is_err());
                        drop(watch);
                        if let Ok(chunks) = &r {
                            inflight.add(chunks.iter().map(Bytes::len).sum());
                        }
                        if let Some(done) = done_tx {
                            // ok: the reader may have gone (the connection closed)
                            let _ = done.try_send(());
                        }
                        (r, inflight)
                    })
                    .detach();
                    if tx.send(task).await.is_err() {
                        return Err("writer gone".into());
                    }
                    if let Some(done) = done_rx {
                        // None: the task was dropped (shutdown), nothing to wait for
                        let _ = done.recv().await;
                    }
                }
                Dispatch::Silent(fut) => {
                    let metrics = ctx.metrics.clone();
                    let conn = conn.clone();
                    glommio::spawn_local(async move {
                        let result = fut.await;
                        metrics.request_done(api, started.elapsed(), result.is_err());
                        drop((watch, inflight));
                        if let Err(reason) = result {
                            // the read loop sees it and ends the connection
                            tracing::info!(peer = %conn.peer, %reason, "closing connection");
                            conn.close();
                        }
                    })
                    .detach();
                }
                Dispatch::Close(reason) => {
                    ctx.metrics.request_done(api, started.elapsed(), true);
                    return Err(reason);
                }
            }
            if matches!(
                *conn.sasl.borrow(),
                crate::handlers::sasl::SaslState::Failed
            ) {
                // the failure's answer is queued; the writer sends it, then the close
                return Err("SASL authentication failed".into());
            }
            // A client sending back-to-back frames must not starve the shard.
            glommio::yield_if_needed().await;
        }
        let filled = buf.len();
        // Backpressure: past the in-flight bound stop reading; TCP pushes back.
        while conn.inflight.get() >= limits.max_inflight {
            conn.inflight_changed.wait().await;
        }
        if filled == 0 && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::new();
        }
        let want = match sluice_proto::frame::peek_size(&buf[..filled]) {
            // the rest of the frame in flight (its size is checked by take_frame)
            Ok(Some(size)) => (size + sluice_proto::frame::SIZE_PREFIX).saturating_sub(filled),
            _ => FIRST_READ,
        };
        let cap = FIRST_READ.max(filled).max(last_frame);
        let want = want.clamp(4096, cap).min(4 << 20);
        let read = loop {
            let idle_left = limits.idle.saturating_sub(last_request.elapsed());
            if idle_left.is_zero() && conn.inflight.get() == 0 {
                return Err(format!(
                    "idle for {} ms (connections.max.idle.ms)",
                    limits.idle.as_millis()
                ));
            }
            // Dropping a pending read loses nothing: glommio waits for readiness, then reads.
            let timer = async {
                glommio::timer::sleep(idle_left.max(Duration::from_millis(100))).await;
                None
            };
            // an acks=0 Produce that failed closes the connection (`Dispatch::Silent`)
            let closed = async {
                conn.closed().await;
                Some(Err(std::io::Error::other("closed by the broker")))
            };
            let read = async { Some(half.read_buf(&mut buf, want).await) };
            if let Some(r) = future::or(future::or(read, closed), timer).await {
                break r;
            }
        };
        match read {
            Ok(0) => {
                return if filled == 0 {
                    Ok(())
                } else {
                    Err("peer closed mid-frame".into())
                };
            }
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Requests that take effect only in the order a connection sent them: the transaction
/// coordinator's (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn) and
/// TxnOffsetCommit. Kafka handles one request of a connection at a time; Sluice pipelines
/// the rest, but an AddPartitionsToTxn waiting for the previous transaction to settle
/// must not be overtaken by the EndTxn sent after it (librdkafka sends both without
/// waiting), which would end the wrong transaction and leave the new one open.
fn serial(api: i16) -> bool {
    use kafka_protocol::messages::ApiKey;
    [
        ApiKey::InitProducerId,
        ApiKey::AddPartitionsToTxn,
        ApiKey::AddOffsetsToTxn,
        ApiKey::EndTxn,
        ApiKey::TxnOffsetCommit,
    ]
    .iter()
    .any(|k| *k as i16 == api)
}

/// The API key of a frame (-1 if it has none), for the request metrics.
fn peek_api(frame: &[u8]) -> i16 {
    sluice_proto::request::peek_api(frame).map_or(-1, |(api, _)| api)
}

/// A request's answer, or past `deadline` (`request.deadline.ms`) an error answer built
/// from the request (REQUEST_TIMED_OUT) or Err (the writer then closes the connection):
/// never no answer at all; true with it when the deadline passed. JoinGroup and SyncGroup
/// wait as long as their group's rebalance timeout, which the coordinator bounds, so they
/// are not cut here.
async fn within_deadline(
    fut: crate::router::BoxFuture<Response>,
    raw: Bytes,
    deadline: Duration,
    peer: &str,
) -> (Response, bool) {
    const JOIN_GROUP: i16 = 11;
    const SYNC_GROUP: i16 = 14;
    let api = peek_api(&raw);
    if api == JOIN_GROUP || api == SYNC_GROUP {
        return (fut.await, false);
    }
    let late = async {
        glommio::timer::sleep(deadline).await;
        None
    };
    if let Some(r) = future::or(async { Some(fut.await) }, late).await {
        return (r, false);
    }
    let frame = match sluice_proto::request::parse_request(raw) {
        Ok(f) => f,
        Err(e) => return (Err(e.to_string()), true),
    };
    let answer = handlers::unsupported::timed_out_answer(&frame);
    tracing::warn!(
        %peer,
        api = ?frame.api_key,
        version = frame.version(),
        correlation_id = frame.correlation_id(),
        deadline_ms = deadline.as_millis() as u64,
        answered = answer.is_ok(),
        "request passed request.deadline.ms: answered REQUEST_TIMED_OUT, or its connection closed"
    );
    (answer, true)
}

/// Writes responses in request order. Small pieces are gathered into one write; large
/// record batches go to the socket as they are.
async fn write_loop(mut half: Half, rx: local_channel::LocalReceiver<Pending>) {
    const GATHER: usize = 16 * 1024;
    let mut out = BytesMut::with_capacity(GATHER * 4);
    while let Some(task) = rx.recv().await {
        // `_inflight` is given back when this answer is written (or the writer stops)
        let (chunks, _inflight) = match task.await {
            Some((Ok(chunks), inflight)) => (chunks, inflight),
            Some((Err(reason), _)) => {
                tracing::warn!(%reason, "no response can be sent; closing connection");
                break;
            }
            None => break,
        };
        for chunk in chunks {
            if chunk.len() >= GATHER {
                if !out.is_empty() && write(&mut half, &out.split().freeze()).await.is_err() {
                    return;
                }
                if write(&mut half, &chunk).await.is_err() {
                    return;
                }
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        if !out.is_empty() && write(&mut half, &out.split().freeze()).await.is_err() {
            return;
        }
        // Over TLS a write completes once rustls has taken the bytes; the last records of
        // a large answer can still sit in its buffer (the socket was full) until flushed,
        // and the client would wait for them until its request timeout (~60 s stalls of
        // TLS consumers). Plain TCP has nothing to flush.
        if half.flush().await.is_err() {
            return;
        }
    }
}

async fn write(half: &mut Half, bytes: &Bytes) -> std::io::Result<()> {
    half.write_all(bytes).await
}
