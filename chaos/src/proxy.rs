//! The in-process TCP proxies every link of the cluster goes through, and the link table
//! the nemesis changes. Node 0 is this process (the clients); brokers are 1..=n.
//!
//! ```text
//!  controller links: node A's voters list names, for peer B, a proxy port of its own
//!                    (A→B): the connection's source and destination are known up front.
//!  kafka links:      every broker advertises one proxy port in front of it; on accept,
//!                    the peer's socket is looked up in /proc/net/tcp{,6} (its inode) and
//!                    the child broker holding `socket:[inode]` in /proc/<pid>/fd is the
//!                    source (none of them: this process, a client).
//! ```
//!
//! A link is directional: bytes from `from` to `to`, on any connection between the two,
//! whoever opened it. `cut` on either direction closes every connection between the two and
//! refuses new ones; `blocked` holds that direction's bytes (the sender's writes back up,
//! as with dropped packets) until the block is lifted; `delay_ms` delays each chunk.
//! Invariants: every pump ends when its connection closes, its link is cut, the proxies
//! stop, or after `MAX_HOLD` of holding bytes; nothing here blocks a runtime thread (the
//! /proc lookup runs on the blocking pool).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node of the link table: 0 is this process, 1..=n the brokers.
pub type NodeId = u32;

/// The client node (this process).
pub const CLIENT: NodeId = 0;

/// Longest a pump holds bytes on a blocked link before it closes the connection.
const MAX_HOLD: Duration = Duration::from_secs(600);
/// Bound for connecting to the proxied address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Read buffer per direction of a connection.
const BUF: usize = 64 * 1024;

/// The state of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkState {
    pub cut: bool,
    pub blocked: bool,
    pub delay_ms: u64,
}

/// Every link's state; changes wake the pumps.
pub struct Links {
    map: Mutex<HashMap<(NodeId, NodeId), LinkState>>,
    changes: watch::Sender<u64>,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            map: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
        }
    }
}

impl Links {
    pub fn get(&self, from: NodeId, to: NodeId) -> LinkState {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(from, to)).copied().unwrap_or_default()
    }

    /// Either direction between the two is cut.
    pub fn cut_between(&self, a: NodeId, b: NodeId) -> bool {
        self.get(a, b).cut || self.get(b, a).cut
    }

    pub fn update(&self, from: NodeId, to: NodeId, f: impl FnOnce(&mut LinkState)) {
        if from == to {
            return;
        }
        {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            f(map.entry((from, to)).or_default());
        }
        self.changes.send_modify(|g| *g += 1);
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn cut_groups(&self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.update(*x, *y, |s| s.cut = true);
                self.update(*y, *x, |s| s.cut = true);
            }
        }
    }

    /// Every link back to normal.
    pub fn heal_all(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.changes.send_modify(|g| *g += 1);
    }

    /// Links that are not normal, for the history.
    pub fn describe(&self) -> String {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, s)| **s != LinkState::default())
            .map(|((f, t), s)| format!("{f}->{t}:{s:?}"))
            .collect();
        v.sort();
        v.join(" ")
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The broker processes the /proc lookup may find: pid → node.
#[derive(Default)]
pub struct PidMap(Mutex<HashMap<u32, NodeId>>);

impl PidMap {
    pub fn set(&self, pid: u32, node: NodeId) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, n| *n != node);
        m.insert(pid, node);
    }

    fn snapshot(&self) -> Vec<(u32, NodeId)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(p, n)| (*p, *n)).collect()
    }
}

/// Who opens the connections a proxy accepts.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Always this node (a controller link).
    Fixed(NodeId),
    /// Found per connection through /proc.
    Lookup,
}

/// Counters shared by every proxy.
#[derive(Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    /// Connections whose source process was not found (counted as clients).
    pub unknown_source: AtomicU64,
    /// Connections refused or closed because their link was cut.
    pub refused: AtomicU64,
}

/// Every proxy of a cluster: stopped (all connections closed) on `stop` or drop.
pub struct Proxies {
    rt: Handle,
    links: Arc<Links>,
    pids: Arc<PidMap>,
    stats: Arc<ProxyStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxies {
    pub fn new(rt: Handle, links: Arc<Links>, pids: Arc<PidMap>) -> Self {
        Proxies {
            rt,
            links,
            pids,
            stats: Arc::new(ProxyStats::default()),
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Binds 127.0.0.1:0 and forwards what it accepts to `target` (node `dst`); returns
    /// the bound port.
    pub fn add(&mut self, src: Source, dst: NodeId, target: SocketAddr) -> anyhow::Result<u16> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let links = self.links.clone();
        let pids = self.pids.clone();
        let stats = self.stats.clone();
        let stop = self.stop.subscribe();
        let _guard = self.rt.enter();
        let listener = TcpListener::from_std(std_listener)?;
        let task = self.rt.spawn(accept_loop(
            listener, port, src, dst, target, links, pids, stats, stop,
        ));
        self.tasks.push(task);
        Ok(port)
    }

    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    port: u16,
    src: Source,
    dst: NodeId,
    target: SocketAddr,
    links: Arc<Links>,
    pids: Arc<PidMap>,
    stats: Arc<ProxyStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            // EMFILE and the like: back off a little rather than spin
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (links, pids, stats, stop) = (links.clone(), pids.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            let from = match src {
                Source::Fixed(n) => n,
                Source::Lookup => {
                    let pids = pids.snapshot();
                    let found =
                        tokio::task::spawn_blocking(move || find_source(peer.port(), port, &pids))
                            .await
                            .ok()
                            .flatten();
                    found.unwrap_or_else(|| {
                        stats.unknown_source.fetch_add(1, Ordering::Relaxed);
                        CLIENT
                    })
                }
            };
            serve(stream, from, dst, target, links, stats, stop).await;
        });
    }
}

async fn serve(
    client: TcpStream,
    from: NodeId,
    to: NodeId,
    target: SocketAddr,
    links: Arc<Links>,
    stats: Arc<ProxyStats>,
    stop: watch::Receiver<bool>,
) {
    if links.cut_between(from, to) {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let forward = pump(cr, sw, from, to, links.clone(), stop.clone());
    let backward = pump(sr, cw, to, from, links.clone(), stop);
    // the first direction to end ends the connection (both halves dropped)
    let cut = tokio::select! {
        c = forward => c,
        c = backward => c,
    };
    if cut {
        stats.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies bytes `from` → `to` under the link's state; returns true if it ended because
/// the link was cut.
async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    from: NodeId,
    to: NodeId,
    links: Arc<Links>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut changes = links.subscribe();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            },
            c = changes.changed() => {
                if c.is_err() || links.cut_between(from, to) {
                    return true;
                }
                continue;
            }
            _ = stop.changed() => return false,
        };
        // hold the bytes while the direction is blocked (bounded by MAX_HOLD)
        let held = tokio::time::Instant::now();
        loop {
            if links.cut_between(from, to) {
                return true;
            }
            let s = links.get(from, to);
            if !s.blocked {
                if s.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(s.delay_ms)).await;
                }
                break;
            }
            if held.elapsed() >= MAX_HOLD {
                return true;
            }
            tokio::select! {
                c = changes.changed() => if c.is_err() { return true },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return false,
            }
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}

/// The node whose process holds the socket connected from 127.0.0.1:`peer_port` to our
/// proxy port `proxy_port`: its inode from /proc/net/tcp{,6}, then the pid whose fd table
/// has `socket:[inode]`. None if no broker (this process included as the client) has it.
fn find_source(peer_port: u16, proxy_port: u16, pids: &[(u32, NodeId)]) -> Option<NodeId> {
    let inode = socket_inode(peer_port, proxy_port)?;
    let want = format!("socket:[{inode}]");
    let me = std::process::id();
    let holds = |pid: u32| -> bool {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        dir.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .map(|l| l.as_os_str() == want.as_str())
                .unwrap_or(false)
        })
    };
    for (pid, node) in pids {
        if holds(*pid) {
            return Some(*node);
        }
    }
    holds(me).then_some(CLIENT)
}

/// The inode of the socket whose local port is `local` and remote port `remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            if port(f[1]) == Some(local) && port(f[2]) == Some(remote) {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inode != 0 {
                        return Some(inode);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("ok: runtime")
    }

    /// An echo server on 127.0.0.1 (one thread per connection, ends with its connection).
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("ok: bind");
        let addr = l.local_addr().expect("ok: addr");
        std::thread::spawn(move || {
            for s in l.incoming().take(16) {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(port: u16) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("ok: connect");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("ok: timeout");
        s
    }

    /// Sends `msg` and reads the echo: Some(bytes) or None on timeout/close.
    fn roundtrip(s: &mut std::net::TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        s.write_all(msg).ok()?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    #[test]
    fn forwards_cuts_blocks_and_heals() {
        let rt = runtime();
        let links = Arc::new(Links::default());
        let mut proxies = Proxies::new(rt.handle().clone(), links.clone(), Arc::default());
        let port = proxies.add(Source::Fixed(1), 2, echo()).expect("ok: proxy");

        let mut s = connect(port);
        assert_eq!(roundtrip(&mut s, b"hello").as_deref(), Some(&b"hello"[..]));

        // one-way block 2→1: the request passes, the answer is held until healed
        links.update(2, 1, |l| l.blocked = true);
        assert_eq!(roundtrip(&mut s, b"held"), None);
        links.heal_all();
        let mut late = [0u8; 4];
        s.read_exact(&mut late)
            .expect("ok: held bytes arrive after healing");
        assert_eq!(&late, b"held");

        // a cut closes the connection and refuses new ones
        links.update(1, 2, |l| l.cut = true);
        assert_eq!(roundtrip(&mut s, b"x"), None);
        let mut fresh = connect(port);
        assert_eq!(roundtrip(&mut fresh, b"y"), None);
        links.heal_all();
        let mut again = connect(port);
        assert_eq!(
            roundtrip(&mut again, b"back").as_deref(),
            Some(&b"back"[..])
        );

        // a delay is a delay
        links.update(1, 2, |l| l.delay_ms = 300);
        let t = std::time::Instant::now();
        assert!(roundtrip(&mut again, b"slow").is_some());
        assert!(t.elapsed() >= Duration::from_millis(300));
        proxies.stop();
    }

    #[test]
    fn the_source_of_a_connection_is_found_through_proc() {
        let rt = runtime();
        let links = Arc::new(Links::default());
        let mut proxies = Proxies::new(rt.handle().clone(), links.clone(), Arc::default());
        let port = proxies.add(Source::Lookup, 1, echo()).expect("ok: proxy");
        let s = connect(port);
        let peer = s.local_addr().expect("ok: addr").port();
        // this process holds the socket: it is the client
        assert_eq!(find_source(peer, port, &[]), Some(CLIENT));
        // listed as a broker's pid, it is that broker
        assert_eq!(find_source(peer, port, &[(std::process::id(), 3)]), Some(3));
        // and a link cut from the client to node 1 refuses it
        links.update(CLIENT, 1, |l| l.cut = true);
        let mut c = connect(port);
        assert_eq!(roundtrip(&mut c, b"z"), None);
    }
}
