//! One client connection on the shard that accepted it. A reader decodes size-bounded
//! frames and dispatches each request; the ordered part of a request (e.g. a produce
//! append) runs before the next frame is read; the rest runs as a task. A writer sends the
//! answers strictly in request order.
//!
//! ```text
//!  socket ─► reader: take_frame ─► dispatch (ordered part) ─► spawn rest ─► queue (bounded)
//!  socket ◄─ writer: await queue head ─► write response chunks (record Bytes uncopied)
//! ```
//! A frame that cannot be decoded or exceeds `socket.request.max.bytes` closes this
//! connection only.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::handlers::{self, Dispatch, Response};
use crate::shard::ShardCtx;

/// A half of a connection: the reader and writer tasks share the stream, borrowing it only
/// inside one `poll_*` call (one thread, so never at the same time).
#[derive(Clone)]
struct Half(Rc<RefCell<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
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

type Pending = JoinHandle<Response>;

/// Serves one connection until the peer closes it or sends something unacceptable.
pub(crate) async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay");
    }
    let mut half = Half(Rc::new(RefCell::new(stream)));
    let depth = ctx.config.int("queued.max.requests").max(1) as usize;
    let (tx, rx) = local_channel::new_bounded::<Pending>(depth);
    let writer = glommio::spawn_local(write_loop(half.clone(), rx));
    if let Err(reason) = read_loop(&ctx, half.clone(), tx, &peer).await {
        tracing::info!(%peer, shard = ctx.id, %reason, "closing connection");
    }
    writer.await;
    let _ = half.close().await;
}

async fn read_loop(
    ctx: &Rc<ShardCtx>,
    mut half: Half,
    tx: local_channel::LocalSender<Pending>,
    peer: &str,
) -> Result<(), String> {
    let max_frame = ctx.config.int("socket.request.max.bytes") as usize;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            let frame =
                sluice_proto::frame::take_frame(&mut buf, max_frame).map_err(|e| e.to_string())?;
            let Some(frame) = frame else { break };
            match handlers::dispatch(ctx, frame, peer).await {
                Dispatch::Respond(fut) => {
                    let task = glommio::spawn_local(fut).detach();
                    if tx.send(task).await.is_err() {
                        return Err("writer gone".into());
                    }
                }
                Dispatch::Silent(fut) => {
                    glommio::spawn_local(fut).detach();
                }
                Dispatch::Close(reason) => return Err(reason),
            }
        }
        // Reserve room for the frame in flight (its size is already checked) or 64 KiB.
        let want = match sluice_proto::frame::peek_size(&buf) {
            Ok(Some(size)) => (size + 4).saturating_sub(buf.len()).clamp(4096, 4 << 20),
            _ => 64 * 1024,
        };
        let len = buf.len();
        buf.resize(len + want, 0);
        match half.read(&mut buf[len..]).await {
            Ok(0) => {
                buf.truncate(len);
                return if buf.is_empty() {
                    Ok(())
                } else {
                    Err("peer closed mid-frame".into())
                };
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Writes responses in request order. Small pieces are gathered into one write; large
/// record batches go to the socket as they are.
async fn write_loop(mut half: Half, rx: local_channel::LocalReceiver<Pending>) {
    const GATHER: usize = 16 * 1024;
    let mut out = BytesMut::with_capacity(GATHER * 4);
    while let Some(task) = rx.recv().await {
        let chunks = match task.await {
            Some(Ok(chunks)) => chunks,
            Some(Err(reason)) => {
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
    }
}

async fn write(half: &mut Half, bytes: &Bytes) -> std::io::Result<()> {
    half.write_all(bytes).await
}
