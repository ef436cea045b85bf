//! The metrics endpoint (`metrics.listen`): a small, strict HTTP/1.1 server on shard 0, in
//! its own low-share task queue so a scrape cannot starve the Kafka requests of that shard.
//! One request per connection (`Connection: close`).
//!
//! ```text
//!  accept (≤ MAX_CONNECTIONS at once) ─► read the head (≤ MAX_HEAD bytes, ≤ READ_TIME)
//!    ─► parse_head: GET|HEAD /metrics | /health | /ready, else 404 / 405 / 400
//!    ─► answer (≤ WRITE_TIME) ─► close
//! ```
//! `parse_head` is sans-I/O; nothing a peer sends can make it allocate more than the head
//! it is given, or panic.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, Shares};

use super::scrape;
use super::text::CONTENT_TYPE;
use crate::quorum::QuorumStatus;
use crate::shard::ShardCtx;

/// Largest request head (request line and headers) read.
pub(super) const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
/// Bound on receiving the whole head, however slowly it trickles in.
pub(super) const READ_TIME: Duration = Duration::from_secs(5);
/// Bound on sending the answer to a reader that does not read.
pub(super) const WRITE_TIME: Duration = Duration::from_secs(10);
/// Bound on gathering a scrape from every shard.
const SCRAPE_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept.
pub(super) const MAX_CONNECTIONS: usize = 16;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Metrics,
    Health,
    Ready,
    NotFound,
    MethodNotAllowed,
}

/// A parsed request head: the route and whether the body is left out (HEAD).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) route: Route,
    pub(super) head_only: bool,
}

/// Where the head ends (after its blank line), if it is complete.
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a complete head (ending with CRLF CRLF). Err: the reason for a 400.
pub(super) fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "not ASCII")?;
    if !text.is_ascii() {
        return Err("not ASCII");
    }
    let mut lines = text
        .strip_suffix("\r\n\r\n")
        .ok_or("no blank line after the head")?
        .split("\r\n");
    let line = lines.next().ok_or("no request line")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !is_token(method) {
        return Err("malformed method");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("malformed request target");
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version"),
    };
    let mut host = false;
    for (i, header) in lines.enumerate() {
        if i >= MAX_HEADERS {
            return Err("too many headers");
        }
        let (name, value) = header.split_once(':').ok_or("malformed header")?;
        if !is_token(name) {
            return Err("malformed header name"); // also a folded line (leading space)
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err("malformed header value");
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            if host {
                return Err("more than one Host header");
            }
            host = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return Err("a request body is not accepted");
        }
    }
    if http11 && !host {
        return Err("HTTP/1.1 request without Host");
    }
    let head_only = method == "HEAD";
    let path = target.split('?').next().unwrap_or(target);
    let route = if method != "GET" && !head_only {
        Route::MethodNotAllowed
    } else {
        match path {
            "/metrics" => Route::Metrics,
            "/health" => Route::Health,
            "/ready" => Route::Ready,
            _ => Route::NotFound,
        }
    };
    Ok(Request { route, head_only })
}

/// A complete HTTP/1.1 answer that closes the connection.
pub(super) fn answer(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

pub(super) const PLAIN: &str = "text/plain; charset=utf-8";

/// Reads one request head within the bounds. None: the peer sent nothing usable in time
/// (closed, timed out) and gets no answer; Some(Err): a 400 is due.
async fn read_head(stream: &mut TcpStream) -> Option<Result<Request, &'static str>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let read = async {
        loop {
            match stream.read(&mut buf[len..]).await {
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
    };
    let timeout = async {
        glommio::timer::sleep(READ_TIME).await;
        None
    };
    future::or(read, timeout).await
}

/// `/ready`: this broker is registered, unfenced, has the metadata image and serves.
fn ready(ctx: &ShardCtx, incarnation: &[u8]) -> bool {
    ctx.ready.get() && crate::server::in_service(ctx, incarnation)
}

async fn serve_one(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    incarnation: Rc<Vec<u8>>,
    quorum: Arc<QuorumStatus>,
) {
    let Some(request) = read_head(&mut stream).await else {
        return;
    };
    let bytes = match request {
        Err(why) => answer("400 Bad Request", PLAIN, &format!("{why}\n"), false),
        Ok(Request { route, head_only }) => match route {
            Route::Health => answer("200 OK", PLAIN, "ok\n", head_only),
            Route::Ready if ready(&ctx, &incarnation) => {
                answer("200 OK", PLAIN, "ready\n", head_only)
            }
            Route::Ready => answer(
                "503 Service Unavailable",
                PLAIN,
                "not ready: not registered and unfenced with the controller, or not serving yet\n",
                head_only,
            ),
            Route::Metrics => {
                let is_ready = ready(&ctx, &incarnation);
                let reading = quorum.read();
                let scrape = async { Some(scrape::render(&ctx, is_ready, &reading).await) };
                let timeout = async {
                    glommio::timer::sleep(SCRAPE_TIME).await;
                    None
                };
                match future::or(scrape, timeout).await {
                    Some(text) => answer("200 OK", CONTENT_TYPE, &text, head_only),
                    None => answer(
                        "503 Service Unavailable",
                        PLAIN,
                        "a shard did not answer the scrape in time\n",
                        head_only,
                    ),
                }
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
    let write = async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
    };
    future::or(write, glommio::timer::sleep(WRITE_TIME)).await;
    let _ = stream.close().await;
}

/// Serves the endpoint on `listener` until the task is cancelled; runs in a task queue of
/// its own with a small share of the shard.
pub(crate) fn spawn(
    ctx: Rc<ShardCtx>,
    listener: TcpListener,
    addr: SocketAddr,
    incarnation: Vec<u8>,
    quorum: Arc<QuorumStatus>,
) -> anyhow::Result<glommio::task::JoinHandle<()>> {
    let tq = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::NotImportant,
        "sluice-metrics",
    );
    let incarnation = Rc::new(incarnation);
    let task = glommio::spawn_local_into(
        async move {
            tracing::info!(%addr, "metrics endpoint listening (/metrics, /health, /ready)");
            let active = Rc::new(Cell::new(0usize));
            loop {
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics endpoint: accept failed");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if active.get() >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                active.set(active.get() + 1);
                let (ctx, done, incarnation) = (ctx.clone(), active.clone(), incarnation.clone());
                let quorum = quorum.clone();
                let spawned = glommio::spawn_local_into(
                    async move {
                        serve_one(ctx, stream, incarnation, quorum).await;
                        done.set(done.get() - 1);
                    },
                    tq,
                );
                match spawned {
                    Ok(t) => {
                        t.detach();
                    }
                    Err(e) => {
                        active.set(active.get() - 1);
                        tracing::warn!(error = %e, "metrics endpoint: cannot spawn");
                    }
                }
            }
        },
        tq,
    )
    .map_err(|e| anyhow::anyhow!("spawning the metrics endpoint: {e}"))?;
    Ok(task.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, &'static str> {
        let end = head_end(s.as_bytes()).ok_or("incomplete")?;
        parse_head(&s.as_bytes()[..end])
    }

    fn route(s: &str) -> Route {
        parse(s).map(|r| r.route).unwrap_or(Route::NotFound)
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(
            route("GET /health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
            Route::Health
        );
        assert_eq!(route("GET /ready HTTP/1.1\r\nhost:x\r\n\r\n"), Route::Ready);
        assert_eq!(
            route("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::NotFound
        );
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::MethodNotAllowed
        );
        let head = parse("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(head.head_only);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "GET /metrics HTTP/1.1\r\n\r\n",                       // no Host
            "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n",            // version
            "GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n",           // double space
            "GET metrics HTTP/1.1\r\nHost: x\r\n\r\n",             // not origin-form
            "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", // obs-fold
            "GET /metrics HTTP/1.1\r\nHost x\r\n\r\n",             // no colon
            "GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", // two hosts
            "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "G\u{e9}T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            "\r\n\r\n",
            "GET /m\u{1}etrics HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_head(b"\xff\xfe\r\n\r\n").is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).is_err());
    }

    #[test]
    fn answers_are_complete() {
        let a = String::from_utf8(answer("200 OK", PLAIN, "ok\n", false)).unwrap();
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(a.contains("Content-Length: 3\r\n"));
        assert!(a.ends_with("\r\n\r\nok\n"));
        let h = String::from_utf8(answer("405 Method Not Allowed", PLAIN, "x", true)).unwrap();
        assert!(h.contains("Allow: GET, HEAD\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
    }
}
