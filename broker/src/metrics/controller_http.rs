//! The metrics endpoint of a controller-only node (`metrics.listen`), which runs no shards:
//! plain threads serving the metadata quorum's families (`scrape::quorum_families`),
//! `/health` and `/ready` (ready: this node knows a quorum leader). Same strict HTTP as
//! the brokers' endpoint (`http.rs`: `parse_head`, `answer`, the same bounds), one request
//! per connection, at most `MAX_CONNECTIONS` at once.
//!
//! ```text
//!  accept thread ─► connection thread (read timeout, head ≤ MAX_HEAD) ─► answer ─► close
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{
    answer, head_end, parse_head, Request, Route, MAX_CONNECTIONS, MAX_HEAD, PLAIN, READ_TIME,
    WRITE_TIME,
};
use super::scrape::quorum_families;
use super::text::{Exposition, CONTENT_TYPE};
use crate::quorum::QuorumStatus;

/// Serves until `stop` is set (checked every 100 ms by the accept loop). Errors only when
/// the address cannot be bound.
pub(crate) fn spawn(
    addr: SocketAddr,
    quorum: Arc<QuorumStatus>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tracing::info!(%addr, "controller metrics endpoint listening (/metrics, /health, /ready)");
    let active = Arc::new(AtomicUsize::new(0));
    Ok(std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "controller metrics endpoint: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    continue; // dropped: closed
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (quorum, active) = (quorum.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("sluice-metrics-conn".into())
                    .spawn(move || {
                        serve_one(stream, &quorum);
                        active.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    tracing::warn!("controller metrics endpoint: cannot start a thread");
                }
            }
        })?)
}

/// Reads one head within `READ_TIME` in all; None when the peer sent nothing usable.
fn read_head(stream: &mut TcpStream) -> Option<Result<Request, &'static str>> {
    let deadline = Instant::now() + READ_TIME;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => len += n,
        }
        if let Some(end) = head_end(&buf[..len]) {
            return Some(parse_head(&buf[..end]));
        }
        if len == buf.len() {
            return Some(Err("request head too large"));
        }
    }
}

fn serve_one(mut stream: TcpStream, quorum: &QuorumStatus) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let Some(request) = read_head(&mut stream) else {
        return;
    };
    let q = quorum.read();
    let bytes = match request {
        Err(why) => answer("400 Bad Request", PLAIN, &format!("{why}\n"), false),
        Ok(Request { route, head_only }) => match route {
            Route::Health => answer("200 OK", PLAIN, "ok\n", head_only),
            Route::Ready if q.leader >= 0 => answer("200 OK", PLAIN, "ready\n", head_only),
            Route::Ready => answer(
                "503 Service Unavailable",
                PLAIN,
                "not ready: this controller knows no metadata quorum leader\n",
                head_only,
            ),
            Route::Metrics => {
                let mut e = Exposition::default();
                quorum_families(&mut e, &q);
                answer("200 OK", CONTENT_TYPE, &e.finish(), head_only)
            }
            Route::NotFound => answer("404 Not Found", PLAIN, "not found\n", head_only),
            Route::MethodNotAllowed => answer(
                "405 Method Not Allowed",
                PLAIN,
                "method not allowed\n",
                head_only,
            ),
        },
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIME));
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
}
