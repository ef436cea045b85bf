//! A broker socket: plain TCP, or TLS over it (server side on SSL and SASL_SSL listeners,
//! client side toward another broker's inter-broker listener). One type for both so the
//! connection reader/writer and the peer client read and write the same way. Owned by
//! the task (or connection) that made it, on one shard; never crosses cores.
//!
//! After the handshake (futures-rustls) a TLS socket drives rustls itself, so that TLS
//! costs the cryptography and few system calls more than plain TCP:
//!
//! ```text
//!  read:  recv 4 KiB, then ≤ 64 KiB while the socket keeps filling it ─► rbuf ─► rustls
//!         (records decrypted) ─► caller's buffer, as many records as it holds
//!  write: caller's bytes ─► rustls (encrypted into ≤ 64 KiB of records, still in cache)
//!         ─► one send per record; what the socket did not take waits for the next write
//!         or the flush (the connection flushes after every answer)
//! ```
//! futures-rustls over glommio read 4 KiB per recv (rustls's read size) and returned at
//! most one record per read.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => s.poll_read(cx, buf),
        }
    }
}

impl Socket {
    /// Appends at most `want` received bytes to `dst`, into capacity that is not zeroed
    /// first: plain TCP recvs straight into `dst`'s spare capacity, TLS copies decrypted
    /// records out of rustls. Ready(Ok(0)) at the end of the stream (or `want` 0). Nothing
    /// is appended when Pending, so a dropped read loses nothing.
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Socket::Plain(s) => poll_recv_buf(s, cx, dst, want),
            Socket::Tls(s) => s.poll_read_into(cx, &mut Sink::Buf { dst, room: want }),
        }
    }
}

/// Bytes read through glommio when the socket has run dry: what arrives first after the
/// wait (then copied), the rest goes straight into the caller's buffer.
const DRY_READ: usize = 4 * 1024;

/// `Socket::poll_read_buf` for plain TCP. The first attempt is a non-blocking recv into
/// `dst`'s spare capacity; only when the socket has nothing does the read go through
/// glommio's stream, which waits for readability (and keeps its own readiness state, which
/// a recv of ours does not disturb: a readiness poll it has armed fires on the next data).
fn poll_recv_buf(
    tcp: &mut TcpStream,
    cx: &mut Context<'_>,
    dst: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    if want == 0 {
        return Poll::Ready(Ok(0));
    }
    dst.reserve(want);
    let spare = &mut dst.spare_capacity_mut()[..want];
    loop {
        // SAFETY: recv writes at most `spare.len()` bytes at `spare`'s start, which is
        // `dst`'s allocated, unused capacity; `set_len` then covers only what it wrote.
        // Not zeroing that capacity first is the point: it cost a tenth of produce's CPU.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::recv(
                tcp.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            let n = r as usize;
            // SAFETY: as above, the kernel initialised `n` <= `want` bytes after `len`.
            #[allow(unsafe_code)]
            unsafe {
                dst.set_len(dst.len() + n)
            };
            return Poll::Ready(Ok(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => break,
            _ => return Poll::Ready(Err(e)),
        }
    }
    let mut first = [0u8; DRY_READ];
    let take = want.min(DRY_READ);
    match Pin::new(tcp).poll_read(cx, &mut first[..take]) {
        Poll::Ready(Ok(n)) => {
            dst.extend_from_slice(&first[..n]);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => s.poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => s.poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_close(cx),
            Socket::Tls(s) => s.poll_close(cx),
        }
    }
}

/// The first recv after the socket ran dry: enough for a request, cheap to allocate.
const RECV_MIN: usize = 4 * 1024;
/// Ciphertext read per recv while the peer streams: four full TLS records.
const RECV_MAX: usize = 64 * 1024;
/// Encrypted bytes rustls may hold unsent (rustls's default); a write encrypts at most up
/// to this, so the records are still in cache when the kernel copies them.
const SEND_LIMIT: usize = 64 * 1024;

/// Where `TlsSocket` puts decrypted bytes: a caller's slice, or the end of a buffer (at
/// most `room` more bytes, appended without zeroing).
enum Sink<'a> {
    Slice { buf: &'a mut [u8], filled: usize },
    Buf { dst: &'a mut BytesMut, room: usize },
}

impl Sink<'_> {
    fn full(&self) -> bool {
        match self {
            Sink::Slice { buf, filled } => *filled == buf.len(),
            Sink::Buf { room, .. } => *room == 0,
        }
    }

    /// rustls's plaintext into the sink (`Read::read`'s results: 0 at close_notify,
    /// WouldBlock when there is none yet).
    fn take(&mut self, r: &mut rustls::Reader<'_>) -> io::Result<usize> {
        match self {
            Sink::Slice { buf, filled } => {
                let n = r.read(&mut buf[*filled..])?;
                *filled += n;
                Ok(n)
            }
            Sink::Buf { dst, room } => {
                let chunk = r.fill_buf()?;
                let n = chunk.len().min(*room);
                dst.extend_from_slice(&chunk[..n]);
                r.consume(n);
                *room -= n;
                Ok(n)
            }
        }
    }
}

/// A TLS connection after its handshake: rustls's state and the TCP stream under it.
pub(crate) struct TlsSocket {
    tcp: TcpStream,
    tls: rustls::Connection,
    /// Ciphertext received and not yet given to rustls: `rbuf[rpos..rend]`. RECV_MIN
    /// when the socket has just run dry, growing to RECV_MAX while recvs fill it; given
    /// back when the socket has nothing more to read.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// The last recv filled `rbuf`: more is probably waiting in the socket.
    recv_full: bool,
    /// The peer closed its side of the TCP connection.
    eof: bool,
    /// close_notify is queued (poll_close ran once).
    closing: bool,
}

impl TlsSocket {
    /// Wraps a handshaken connection (anything rustls has already read stays in it).
    pub(crate) fn new(tcp: TcpStream, tls: impl Into<rustls::Connection>) -> Self {
        let mut tls = tls.into();
        tls.set_buffer_limit(Some(SEND_LIMIT));
        Self {
            tcp,
            tls,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            recv_full: false,
            eof: false,
            closing: false,
        }
    }

    /// Gives rustls received ciphertext until it has a record's plaintext (or takes no
    /// more), decrypting as it goes.
    fn feed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.rpos < self.rend && self.tls.wants_read() {
            let n = self.tls.read_tls(&mut &self.rbuf[self.rpos..self.rend])?;
            self.rpos += n;
            if let Err(e) = self.tls.process_new_packets() {
                // the alert describing the error, if the socket takes it now
                let _ = self.send(cx, false);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                break;
            }
        }
        if self.tls.wants_write() {
            // Records rustls makes on its own (a key update's answer, an alert): sent if
            // the socket takes them now, else with the next write or flush. Never
            // registers this (reader) task for writability: glommio keeps one waiter.
            let _ = self.send(cx, false);
        }
        Ok(())
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_read_into(cx, &mut Sink::Slice { buf, filled: 0 })
    }

    /// Decrypted bytes into `sink` until it is full or nothing more has arrived.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut Sink<'_>,
    ) -> Poll<io::Result<usize>> {
        if sink.full() {
            return Poll::Ready(Ok(0));
        }
        let mut filled = 0;
        loop {
            match sink.take(&mut self.tls.reader()) {
                // 0: close_notify received (clean end of stream)
                Ok(0) => return Poll::Ready(Ok(filled)),
                Ok(n) => {
                    filled += n;
                    if sink.full() {
                        return Poll::Ready(Ok(filled));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // rustls keeps the state: the error comes again on the next read
                Err(_) if filled > 0 => return Poll::Ready(Ok(filled)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.rpos < self.rend {
                let before = self.rpos;
                if let Err(e) = self.feed(cx) {
                    return Poll::Ready(if filled > 0 { Ok(filled) } else { Err(e) });
                }
                if self.rpos == before {
                    // rustls took nothing and has no plaintext: it must not spin here
                    return Poll::Ready(Err(io::Error::other("TLS: no progress on received data")));
                }
                continue;
            }
            if self.eof {
                // tells rustls the stream ended: its reader then reports a clean close or
                // UnexpectedEof (no close_notify)
                match self.tls.read_tls(&mut io::empty()) {
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(if filled > 0 { Ok(filled) } else { Err(e) }),
                }
                match sink.take(&mut self.tls.reader()) {
                    Ok(n) => return Poll::Ready(Ok(filled + n)),
                    Err(_) if filled > 0 => return Poll::Ready(Ok(filled)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if filled > 0 && !self.recv_full {
                // the socket had no more when last asked; do not spend a recv to learn it
                return Poll::Ready(Ok(filled));
            }
            let size = if self.recv_full { RECV_MAX } else { RECV_MIN };
            if self.rbuf.len() < size {
                self.rbuf.resize(size, 0);
            }
            match Pin::new(&mut self.tcp).poll_read(cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    (self.rpos, self.rend) = (0, 0);
                    self.eof = true;
                }
                Poll::Ready(Ok(n)) => {
                    (self.rpos, self.rend) = (0, n);
                    self.recv_full = n == self.rbuf.len();
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(if filled > 0 { Ok(filled) } else { Err(e) })
                }
                Poll::Pending => {
                    // nothing buffered and nothing to read: an idle connection holds no buffer
                    self.rbuf = Vec::new();
                    (self.rpos, self.rend) = (0, 0);
                    self.recv_full = false;
                    return if filled > 0 {
                        Poll::Ready(Ok(filled))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }

    /// Sends the ciphertext rustls holds. Ready(Ok) once none is left; Pending when the
    /// socket is full (with `register`, this task is woken when it takes more).
    fn send(&mut self, cx: &mut Context<'_>, register: bool) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut to = Sender {
                tcp: &mut self.tcp,
                cx,
                register,
            };
            match self.tls.write_tls(&mut to) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            // encrypts as much as fits under SEND_LIMIT with what is still unsent
            let n = self.tls.writer().write(buf)?;
            let sent = match self.send(cx, true) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => true,
                Poll::Pending => false,
            };
            if n > 0 {
                // the rest of its ciphertext goes with the next write or the flush
                return Poll::Ready(Ok(n));
            }
            if !sent {
                return Poll::Pending;
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tls.writer().flush()?;
        match self.send(cx, true) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.tcp).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closing {
            self.closing = true;
            self.tls.send_close_notify();
        }
        match self.send(cx, true) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match Pin::new(&mut self.tcp).poll_close(cx) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// rustls's output into the socket, one record (≤ 16 KiB + 22 B) per send, as futures-rustls
/// did. Sending all queued records in one sendmsg was measured too (sluice-bench tls,
/// interleaved runs): no less broker CPU per GB produced and a little more per GB
/// consumed; perf showed more of the loopback receiver's softirq work on the broker's
/// thread. The send goes through socket2 rather than glommio so that the reader's
/// opportunistic sends (`register` false) never replace the writer's wake-up.
struct Sender<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
    /// On a full socket, wait for writability through glommio (waking this task).
    register: bool,
}

impl Write for Sender<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.tcp.as_raw_fd();
        // SAFETY: `fd` is the open socket of `self.tcp`, which this borrow keeps alive (and
        // open) for the whole call; the BorrowedFd does not outlive the statement.
        #[allow(unsafe_code)]
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sent = socket2::SockRef::from(&fd)
            .send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.register => {
                // glommio tries the send once more and, still full, registers the wake-up
                match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::sync::Arc;

    /// A server and a client config trusting a fresh self-signed certificate for localhost.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap(); // ok: test
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap(); // ok: test
        let cert = params.self_signed(&key).unwrap(); // ok: test
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(); // ok: test
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap() // ok: test
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap(); // ok: test
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap(); // ok: test
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap() // ok: test
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// The server side of a TLS handshake over `tcp`.
    async fn accept_tls(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> Socket {
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .unwrap(); // ok: test
        let (tcp, tls) = tls.into_inner();
        Socket::Tls(Box::new(TlsSocket::new(tcp, tls)))
    }

    /// The client side, for "localhost".
    async fn connect_tls(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> Socket {
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap(); // ok: test
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap(); // ok: test
        let (tcp, tls) = tls.into_inner();
        Socket::Tls(Box::new(TlsSocket::new(tcp, tls)))
    }

    /// Bytes 0, 1, ... 250, 0, ... (a prime period: misplaced pieces do not line up).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Writes `data` in pieces of varied sizes (1 byte to 1 MiB), flushing now and then.
    async fn write_in_pieces(s: &mut Socket, data: &[u8]) {
        let sizes = [1, 7, 4096, 16_384, 16_385, 70_000, 1 << 20, 300];
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            s.write_all(&data[at..at + n]).await.unwrap(); // ok: test
            if i % 3 == 0 {
                s.flush().await.unwrap(); // ok: test
            }
            at += n;
            i += 1;
        }
        s.flush().await.unwrap(); // ok: test
    }

    async fn read_exact_len(s: &mut Socket, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        s.read_exact(&mut got).await.unwrap(); // ok: test
        got
    }

    /// Both directions carry megabytes in writes of every size through `TlsSocket`: every
    /// byte arrives, in order, with nothing left in rustls after a flush (the reader sees
    /// the last byte without the writer writing again), and close_notify ends the stream.
    #[test]
    fn tls_socket_carries_writes_of_every_size_both_ways() {
        const LEN: usize = 5 << 20;
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let (server_config, client_config) = configs();
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test
                let addr = listener.local_addr().unwrap(); // ok: test
                let server = glommio::spawn_local(async move {
                    let tcp = listener.accept().await.unwrap(); // ok: test
                    let mut s = accept_tls(tcp, server_config).await;
                    let got = read_exact_len(&mut s, LEN).await;
                    assert!(got == pattern(LEN), "server received other bytes");
                    // echo, then wait for the client's ack so the last write is proven sent
                    // by the flush alone
                    write_in_pieces(&mut s, &got).await;
                    let ack = read_exact_len(&mut s, 3).await;
                    assert_eq!(&ack, b"ack");
                    s.close().await.unwrap(); // ok: test
                });
                let tcp = glommio::net::TcpStream::connect(addr).await.unwrap(); // ok: test
                let mut s = connect_tls(tcp, client_config).await;
                write_in_pieces(&mut s, &pattern(LEN)).await;
                let echoed = read_exact_len(&mut s, LEN).await;
                assert!(echoed == pattern(LEN), "client received other bytes");
                s.write_all(b"ack").await.unwrap(); // ok: test
                s.flush().await.unwrap(); // ok: test
                                          // the server's close_notify: a clean end of stream
                let mut rest = Vec::new();
                assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0); // ok: test
                server.await;
            })
            .unwrap() // ok: test
            .join()
            .unwrap(); // ok: test
    }

    /// Reads `len` bytes with `poll_read_buf`, asking for a different amount each time, into
    /// a buffer that starts small (so it is grown, and shared with split-off parts, as the
    /// connection reader's is); then expects the end of the stream.
    async fn read_buf_len(s: &mut Socket, len: usize) -> Vec<u8> {
        let wants = [1, 4096, 10_000, 65_536, 1 << 20, 3];
        let (mut buf, mut got, mut i) = (BytesMut::new(), Vec::new(), 0);
        while got.len() + buf.len() < len {
            let want = wants[i % wants.len()];
            let before = buf.len();
            let n = futures_lite::future::poll_fn(|cx| s.poll_read_buf(cx, &mut buf, want))
                .await
                .unwrap(); // ok: test
            assert!(n > 0 && n <= want, "read {n} bytes when asked for {want}");
            assert_eq!(buf.len(), before + n);
            if i % 2 == 0 {
                // frames leave the buffer as the reader takes them
                got.extend_from_slice(&buf.split_to(buf.len() / 2));
            }
            i += 1;
        }
        got.extend_from_slice(&buf);
        let end = futures_lite::future::poll_fn(|cx| s.poll_read_buf(cx, &mut buf, 100)).await;
        assert_eq!(end.unwrap(), 0, "the end of the stream reads as 0"); // ok: test
        got
    }

    /// `poll_read_buf` (the connection reader's read, into capacity it does not zero)
    /// receives every byte in order over plain TCP and over TLS, whatever the writer's
    /// and the reader's sizes, waiting when the socket runs dry.
    #[test]
    fn read_buf_receives_every_byte_plain_and_tls() {
        const LEN: usize = 3 << 20;
        for tls in [false, true] {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .spawn(move || async move {
                    let (server_config, client_config) = configs();
                    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test
                    let addr = listener.local_addr().unwrap(); // ok: test
                    let server = glommio::spawn_local(async move {
                        let tcp = listener.accept().await.unwrap(); // ok: test
                        let mut s = match tls {
                            true => accept_tls(tcp, server_config).await,
                            false => Socket::Plain(tcp),
                        };
                        let got = read_buf_len(&mut s, LEN).await;
                        assert!(got == pattern(LEN), "received other bytes (tls {tls})");
                    });
                    let tcp = glommio::net::TcpStream::connect(addr).await.unwrap(); // ok: test
                    let mut s = match tls {
                        true => connect_tls(tcp, client_config).await,
                        false => Socket::Plain(tcp),
                    };
                    write_in_pieces(&mut s, &pattern(LEN)).await;
                    // kept open until the server has read everything: closing a socket
                    // with unread bytes (TLS 1.3 session tickets) resets the connection
                    s.close().await.unwrap(); // ok: test
                    server.await;
                    drop(s);
                })
                .unwrap() // ok: test
                .join()
                .unwrap(); // ok: test
        }
    }

    /// A peer that drops the TCP connection without close_notify is an error, not a
    /// clean end (a truncation attack must not look like the end of the data).
    #[test]
    fn tls_socket_reports_truncation() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let (server_config, client_config) = configs();
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test
                let addr = listener.local_addr().unwrap(); // ok: test
                let server = glommio::spawn_local(async move {
                    let tcp = listener.accept().await.unwrap(); // ok: test
                    let mut s = accept_tls(tcp, server_config).await;
                    let mut got = vec![0; 5];
                    s.read_exact(&mut got).await.unwrap(); // ok: test
                    assert_eq!(&got, b"hello");
                    let err = s.read(&mut got).await.unwrap_err(); // ok: test
                    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
                });
                let tcp = glommio::net::TcpStream::connect(addr).await.unwrap(); // ok: test
                let mut s = connect_tls(tcp, client_config).await;
                s.write_all(b"hello").await.unwrap(); // ok: test
                s.flush().await.unwrap(); // ok: test
                                          // closes the TCP connection without close_notify
                drop(s);
                server.await;
            })
            .unwrap() // ok: test
            .join()
            .unwrap(); // ok: test
    }
}
