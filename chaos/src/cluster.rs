//! A cluster under control: N `sluice` processes started from the built binary, each with
//! its own data dir, every link through the proxies of `proxy.rs`.
//!
//! ```text
//!  node i: --listen 127.0.0.1:K[i] (real)  --advertised-listener 127.0.0.1:KP[i] (proxy)
//!          controller.listener 127.0.0.1:C[i] (real)
//!          controller.quorum.voters: i@C[i], and j@CP[i→j] for every other j (a proxy
//!          per ordered pair, so node i's raft traffic to j is the link i→j)
//! ```
//!
//! Invariants: every process started here is ended here (SIGCONT, SIGKILL and reaped on
//! drop, also on panic); every wait is bounded; readiness and metadata probes go to a
//! broker's real port (they are the harness looking, not a client under test). One node
//! may have its data dir on a small tmpfs (the disk nemesis), unmounted on drop.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use tokio::runtime::Handle;

use crate::proxy::{Links, NodeId, PidMap, Proxies, Source};

/// Bound for a SIGTERM'd broker to exit (controlled shutdown waits at most the session
/// timeout) before it gets SIGKILL.
const TERM_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound for one raw probe (connect, send, answer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of a node log read from its end when looking for the quorum leader.
const LOG_TAIL_BYTES: u64 = 512 * 1024;

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub brokers: u32,
    pub bin: PathBuf,
    /// Parent of every node's directory.
    pub dir: PathBuf,
    pub cores: u32,
    /// `--set name=value` for every node, after the harness's own.
    pub settings: Vec<(String, String)>,
    /// Put this node's data dir on a tmpfs of this many MiB (the disk nemesis).
    pub tmpfs: Option<(u32, u64)>,
}

/// One node's process.
struct NodeProc {
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

/// A started cluster; everything is stopped and cleaned up on drop.
pub struct Cluster {
    cfg: ClusterConfig,
    pub links: Arc<Links>,
    pids: Arc<PidMap>,
    proxies: Proxies,
    cluster_id: String,
    kafka_real: Vec<u16>,
    kafka_proxy: Vec<u16>,
    ctrl_real: Vec<u16>,
    ctrl_proxy: HashMap<(NodeId, NodeId), u16>,
    nodes: Vec<NodeProc>,
    /// The tmpfs mount point, if mounted.
    mount: Option<PathBuf>,
    /// Nodes that exited on their own, not yet taken by `take_exits`.
    exits: Vec<(NodeId, String)>,
}

/// What one broker answered to Metadata.
#[derive(Debug, Clone, Default)]
pub struct MetadataView {
    pub brokers: Vec<i32>,
    /// partition → (error, leader, replicas, isr)
    pub partitions: BTreeMap<i32, PartitionView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionView {
    pub error: i16,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl Cluster {
    /// Binds every proxy, writes nothing yet; call `start_all`.
    pub fn new(cfg: ClusterConfig, rt: Handle) -> Result<Self> {
        ensure!(cfg.brokers >= 1, "at least one broker");
        let n = cfg.brokers;
        let links = Arc::new(Links::default());
        let pids = Arc::new(PidMap::default());
        let mut proxies = Proxies::new(rt, links.clone(), pids.clone());
        let kafka_real = free_ports(n as usize)?;
        let ctrl_real = free_ports(n as usize)?;
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut kafka_proxy = Vec::new();
        for id in 1..=n {
            kafka_proxy.push(proxies.add(Source::Lookup, id, addr(kafka_real[id as usize - 1]))?);
        }
        let mut ctrl_proxy = HashMap::new();
        for from in 1..=n {
            for to in 1..=n {
                if from != to {
                    let port =
                        proxies.add(Source::Fixed(from), to, addr(ctrl_real[to as usize - 1]))?;
                    ctrl_proxy.insert((from, to), port);
                }
            }
        }
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        let cluster_id = cluster_id(&cfg.dir);
        let mut cluster = Cluster {
            nodes: (0..n)
                .map(|_| NodeProc {
                    child: None,
                    paused: false,
                    starts: 0,
                })
                .collect(),
            cfg,
            links,
            pids,
            proxies,
            cluster_id,
            kafka_real,
            kafka_proxy,
            ctrl_real,
            ctrl_proxy,
            mount: None,
            exits: Vec::new(),
        };
        for id in 1..=n {
            std::fs::create_dir_all(cluster.node_dir(id))?;
        }
        if let Some((node, mib)) = cluster.cfg.tmpfs {
            let disk = cluster.node_dir(node).join("disk");
            std::fs::create_dir_all(&disk)?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&disk)
                .stdin(Stdio::null())
                .output()
                .context("running mount")?;
            if !out.status.success() {
                bail!(
                    "mount -t tmpfs on {} failed: {}",
                    disk.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            cluster.mount = Some(disk);
        }
        Ok(cluster)
    }

    pub fn brokers(&self) -> u32 {
        self.cfg.brokers
    }

    pub fn ids(&self) -> Vec<NodeId> {
        (1..=self.cfg.brokers).collect()
    }

    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.cfg.dir.join(format!("node-{id}"))
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        match self.cfg.tmpfs {
            Some((node, _)) if node == id => self.node_dir(id).join("disk").join("data"),
            _ => self.node_dir(id).join("data"),
        }
    }

    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("log")
    }

    /// The node whose data dir is on the small tmpfs, if mounted.
    pub fn disk_node(&self) -> Option<NodeId> {
        self.mount.as_ref().and(self.cfg.tmpfs.map(|(n, _)| n))
    }

    /// Node `id`'s real Kafka port (for the harness's own probes).
    pub fn kafka_port(&self, id: NodeId) -> u16 {
        self.kafka_real[id as usize - 1]
    }

    /// The bootstrap list clients use: every broker's proxy port.
    pub fn bootstrap(&self) -> String {
        self.kafka_proxy
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn proxy_stats(&self) -> &crate::proxy::ProxyStats {
        self.proxies.stats()
    }

    fn args(&self, id: NodeId) -> Vec<String> {
        let i = id as usize - 1;
        let voters = self
            .ids()
            .into_iter()
            .map(|j| {
                let port = if j == id {
                    self.ctrl_real[i]
                } else {
                    self.ctrl_proxy[&(id, j)]
                };
                format!("{j}@127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{}", self.kafka_real[i]),
            "--advertised-listener".into(),
            format!("127.0.0.1:{}", self.kafka_proxy[i]),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
            "--cores".into(),
            self.cfg.cores.to_string(),
        ];
        let mut set = |k: &str, v: &str| {
            args.push("--set".into());
            args.push(format!("{k}={v}"));
        };
        set("node.id", &id.to_string());
        // N brokers on one machine: pinned, every node's shard 0 would share CPU 0
        set("cpuset", "none");
        set("controller.quorum.voters", &voters);
        set(
            "controller.listener",
            &format!("127.0.0.1:{}", self.ctrl_real[i]),
        );
        set("cluster.id", &self.cluster_id);
        for (k, v) in &self.cfg.settings {
            set(k, v);
        }
        args
    }

    /// Spawns node `id` (not waiting for it).
    pub fn spawn(&mut self, id: NodeId) -> Result<()> {
        ensure!(!self.is_running(id), "node {id} is already running");
        let data = self.data_dir(id);
        std::fs::create_dir_all(&data)?;
        let args = self.args(id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let node = &mut self.nodes[id as usize - 1];
        node.starts += 1;
        writeln!(
            log,
            "===== sluice-chaos: start {} of node {id}: {} {}",
            node.starts,
            self.cfg.bin.display(),
            args.join(" ")
        )?;
        let child = Command::new(&self.cfg.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.cfg.bin.display()))?;
        self.pids.set(child.id(), id);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Spawns every node, then waits (bounded) until each lists all of them.
    pub fn start_all(&mut self, within: Duration) -> Result<()> {
        for id in self.ids() {
            self.spawn(id)?;
        }
        let all: Vec<i32> = self.ids().iter().map(|i| *i as i32).collect();
        let deadline = Instant::now() + within;
        for id in self.ids() {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_ready(id, &all, left).with_context(|| {
                format!(
                    "node {id} not ready; its log ends:\n{}",
                    self.log_tail(id, 30)
                )
            })?;
        }
        Ok(())
    }

    /// Waits (bounded) until node `id` answers Metadata listing every broker of `want`.
    pub fn wait_ready(&mut self, id: NodeId, want: &[i32], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(id) {
                bail!("node {id} exited while starting: {status}");
            }
            let last = match self.metadata(id, None) {
                Ok(v) if want.iter().all(|w| v.brokers.contains(w)) => return Ok(()),
                Ok(v) => format!("lists brokers {:?}", v.brokers),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("node {id} not ready after {within:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes[id as usize - 1].child.is_some()
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes[id as usize - 1].paused
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.nodes[id as usize - 1].child.as_ref().map(Child::id)
    }

    /// Nodes running and not paused.
    pub fn live(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|id| self.is_running(*id) && !self.is_paused(*id))
            .collect()
    }

    /// If node `id` was running and has exited on its own: reaps it, notes it for
    /// `take_exits`, and says how.
    pub fn exited(&mut self, id: NodeId) -> Option<String> {
        let node = &mut self.nodes[id as usize - 1];
        let child = node.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                node.child = None;
                node.paused = false;
                self.exits.push((id, status.to_string()));
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// Every node seen exiting on its own since the last call (and checks all now).
    pub fn take_exits(&mut self) -> Vec<(NodeId, String)> {
        for id in self.ids() {
            self.exited(id);
        }
        std::mem::take(&mut self.exits)
    }

    /// SIGKILL, reaped.
    pub fn kill9(&mut self, id: NodeId) -> Result<()> {
        let node = &mut self.nodes[id as usize - 1];
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        let _ = child.kill();
        child.wait()?;
        node.paused = false;
        Ok(())
    }

    /// SIGTERM (controlled shutdown), SIGKILL if still alive after `TERM_TIMEOUT`; returns
    /// whether it exited on its own.
    pub fn stop(&mut self, id: NodeId) -> Result<bool> {
        self.resume(id);
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + TERM_TIMEOUT;
        let node = &mut self.nodes[id as usize - 1];
        while Instant::now() < deadline {
            if let Some(child) = node.child.as_mut() {
                if child.try_wait()?.is_some() {
                    node.child = None;
                    return Ok(true);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9(id)?;
        Ok(false)
    }

    pub fn pause(&mut self, id: NodeId) -> Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        signal(pid, libc::SIGSTOP);
        self.nodes[id as usize - 1].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: NodeId) {
        if let Some(pid) = self.pid(id) {
            signal(pid, libc::SIGCONT);
        }
        self.nodes[id as usize - 1].paused = false;
    }

    /// Fills the tmpfs of the disk node until ENOSPC; returns the bytes written.
    pub fn fill_disk(&self) -> Result<u64> {
        let (Some(mount), Some((_, mib))) = (&self.mount, self.cfg.tmpfs) else {
            bail!("no tmpfs data dir");
        };
        let mut f = File::create(mount.join("filler"))?;
        let mut written = 0u64;
        let big = vec![0u8; 1 << 20];
        let small = vec![0u8; 4096];
        // bounded: the tmpfs holds at most `mib` MiB, then 256 4 KiB pieces at most
        for _ in 0..=mib {
            match f.write(&big) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        for _ in 0..256 {
            match f.write(&small) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.flush();
        Ok(written)
    }

    /// Removes the filler.
    pub fn free_disk(&self) {
        if let Some(m) = &self.mount {
            let _ = std::fs::remove_file(m.join("filler"));
        }
    }

    /// Metadata v1 from node `id`'s real listener: brokers, and `topic`'s partitions.
    pub fn metadata(&self, id: NodeId, topic: Option<&str>) -> Result<MetadataView> {
        metadata_v1(self.kafka_real[id as usize - 1], topic)
    }

    /// Metadata from the first live node that answers.
    pub fn any_metadata(&self, topic: &str) -> Result<(NodeId, MetadataView)> {
        let mut last = anyhow::anyhow!("no live node");
        for id in self.live() {
            match self.metadata(id, Some(topic)) {
                Ok(v) => return Ok((id, v)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The node coordinating transactional id `txn_id` (the leader of its
    /// `__transaction_state` partition), as the first live node that knows answers a raw
    /// FindCoordinator (key type 1); an error says why none was found.
    pub fn txn_coordinator(&self, txn_id: &str) -> Result<NodeId> {
        let mut last = String::from("no live node");
        for id in self.live() {
            match find_coordinator_v1(self.kafka_real[id as usize - 1], txn_id, 1) {
                Ok((0, node)) if node > 0 && self.is_running(node as NodeId) => {
                    return Ok(node as NodeId);
                }
                Ok((err, node)) => last = format!("node {id} answered error {err}, node {node}"),
                Err(e) => last = format!("node {id}: {e:#}"),
            }
        }
        bail!("no coordinator of {txn_id} found: {last}")
    }

    /// The active controller: the leader most running nodes name in the last
    /// `metadata quorum leader` line of their logs, if it is running and a majority of
    /// the voters agree.
    pub fn active_controller(&self) -> Option<NodeId> {
        let mut votes: BTreeMap<NodeId, u32> = BTreeMap::new();
        for id in self.live() {
            if let Some(l) = last_leader_in_log(&self.log_path(id)) {
                *votes.entry(l).or_default() += 1;
            }
        }
        let majority = self.cfg.brokers / 2 + 1;
        votes
            .into_iter()
            .find(|(l, v)| *v >= majority && self.is_running(*l))
            .map(|(l, _)| l)
    }

    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let text = read_tail(&self.log_path(id), LOG_TAIL_BYTES).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Heals every link, resumes every paused node, frees the disk.
    pub fn heal_everything(&mut self) {
        self.links.heal_all();
        for id in self.ids() {
            if self.is_paused(id) {
                self.resume(id);
            }
        }
        self.free_disk();
    }

    /// Ends every process (SIGCONT then SIGKILL, reaped).
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            if self.is_running(id) {
                self.resume(id);
                let _ = self.kill9(id);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        self.proxies.stop();
        if let Some(m) = self.mount.take() {
            let _ = std::fs::remove_file(m.join("filler"));
            let ok = Command::new("umount")
                .arg(&m)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
    }
}

/// Sends `sig` to `pid` (a child of this process).
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    if p <= 1 {
        return;
    }
    // SAFETY: kill(2) with a positive pid > 1 (a child this process spawned and has not
    // reaped, so the pid is not recycled) only sends a signal; it touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(p, sig);
    }
}

/// `n` distinct ports, bindable now, below the kernel's ephemeral range: a port handed
/// out for a listener on :0 (our proxies) or an outgoing connection is never one of them,
/// so a broker restarted later still finds its port free.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    ensure!(
        low > 12_000,
        "the ephemeral port range starts at {low}: no room below it"
    );
    let span = u32::from(low) - 10_000;
    let mut seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut out: Vec<u16> = Vec::new();
    // bounded: at most 1000 candidates
    for _ in 0..1000 {
        if out.len() == n {
            return Ok(out);
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 10_000 + ((seed >> 33) as u32 % span) as u16;
        if out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    bail!("found only {} free ports below {low}", out.len())
}

/// A 22-character cluster id ([A-Za-z0-9_-], no leading '-') from the directory and time.
fn cluster_id(dir: &Path) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    for b in dir.display().to_string().bytes().chain(nanos.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (0..22)
        .map(|i| {
            h = h.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i;
            ALPHABET[(h % 62) as usize] as char // letters and digits only
        })
        .collect()
}

fn read_tail(path: &Path, bytes: u64) -> Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut buf = Vec::new();
    f.take(bytes).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The leader named by the last `metadata quorum leader ... leader=Some(N)` line.
fn last_leader_in_log(path: &Path) -> Option<NodeId> {
    let text = read_tail(path, LOG_TAIL_BYTES).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("metadata quorum leader"))?;
    let rest = line.split("leader=Some(").nth(1)?;
    rest.split(')').next()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// A raw Metadata v1 client: the harness's own probe, independent of the clients under test.

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        ensure!(self.pos + n <= self.buf.len(), "truncated metadata answer");
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    fn count(&mut self) -> Result<usize> {
        let n = self.i32()?;
        ensure!((-1..=100_000).contains(&n), "bad array length {n}");
        Ok(n.max(0) as usize)
    }
    fn i32s(&mut self) -> Result<Vec<i32>> {
        let n = self.count()?;
        (0..n).map(|_| self.i32()).collect()
    }
}

/// Sends one request (`api_key`, `version`, `body` after the v1 header) to
/// 127.0.0.1:`port` and returns the answer's body after the correlation id.
fn raw_call(port: u16, api_key: i16, version: i16, body: &[u8]) -> Result<Vec<u8>> {
    let client_id = b"sluice-chaos";
    let mut req = Vec::new();
    req.extend_from_slice(&api_key.to_be_bytes());
    req.extend_from_slice(&version.to_be_bytes());
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    req.extend_from_slice(body);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    s.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    ensure!((8..64 << 20).contains(&len), "bad answer size {len}");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    ensure!(body[..4] == 7i32.to_be_bytes(), "wrong correlation id");
    body.drain(..4);
    Ok(body)
}

/// FindCoordinator v1 for `key` of `key_type` (0 group, 1 transactional id): (error code,
/// node id).
fn find_coordinator_v1(port: u16, key: &str, key_type: i8) -> Result<(i16, i32)> {
    let mut body = Vec::new();
    body.extend_from_slice(&(key.len() as i16).to_be_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(&key_type.to_be_bytes());
    let answer = raw_call(port, 10, 1, &body)?;
    let mut r = Reader {
        buf: &answer,
        pos: 0,
    };
    r.i32()?; // throttle time
    let error = r.i16()?;
    r.string()?; // error message (nullable)
    let node = r.i32()?;
    Ok((error, node))
}

fn metadata_v1(port: u16, topic: Option<&str>) -> Result<MetadataView> {
    let mut req = Vec::new();
    match topic {
        Some(t) => {
            req.extend_from_slice(&1i32.to_be_bytes());
            req.extend_from_slice(&(t.len() as i16).to_be_bytes());
            req.extend_from_slice(t.as_bytes());
        }
        None => req.extend_from_slice(&0i32.to_be_bytes()),
    }
    let body = raw_call(port, 3, 1, &req)?;
    let mut r = Reader { buf: &body, pos: 0 };
    let mut view = MetadataView::default();
    for _ in 0..r.count()? {
        view.brokers.push(r.i32()?);
        r.string()?; // host
        r.i32()?; // port
        r.string()?; // rack
    }
    r.i32()?; // controller id
    for _ in 0..r.count()? {
        let terr = r.i16()?;
        let name = r.string()?;
        r.take(1)?; // is_internal
        let n = r.count()?;
        if Some(name.as_str()) == topic {
            ensure!(terr == 0 || n > 0, "topic {name}: error {terr}");
        }
        for _ in 0..n {
            let error = r.i16()?;
            let id = r.i32()?;
            let leader = r.i32()?;
            let replicas = r.i32s()?;
            let isr = r.i32s()?;
            if Some(name.as_str()) == topic {
                view.partitions.insert(
                    id,
                    PartitionView {
                        error,
                        leader,
                        replicas,
                        isr,
                    },
                );
            }
        }
    }
    Ok(view)
}
