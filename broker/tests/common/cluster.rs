//! Harness for the multi-process cluster tests: an N-node Sluice cluster started and
//! stopped by `deploy/local-cluster.sh` (every node a combined broker + controller on
//! 127.0.0.1 ports the script picks), plus per-broker metadata views and rdkafka helpers.
//! Invariants: every wait and loop is bounded; dropping a `Cluster` (also on panic)
//! resumes stopped nodes, runs `local-cluster.sh stop`, then SIGKILLs whatever node is
//! still alive, and prints the tail of every node log (captured by libtest, shown for
//! failing tests only); the cluster directory is a tempdir removed after that. With
//! `SLUICE_TEST_KEEP_LOGS=DIR` set, every node's whole log is first copied to
//! `DIR/<cluster tempdir name>/node-N.log` (for a failure the tails do not explain).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::block_on;
use super::raw::RawClient;

/// The cluster script, relative to this crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local-cluster.sh");
/// Bound for one run of the script (it has its own, shorter, timeouts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// `SLUICE_CLUSTER_TIMEOUT` given to the script: seconds to wait for Metadata.
const SCRIPT_READY_SECS: &str = "60";
/// Lines of each node log printed when the cluster is dropped.
const LOG_TAIL: usize = 80;

/// Broker settings that make failure detection quick enough for tests.
pub(crate) const FAST_SETTINGS: &[(&str, &str)] = &[
    ("broker.session.timeout.ms", "2000"),
    ("broker.heartbeat.interval.ms", "300"),
    ("controller.quorum.election.timeout.ms", "500"),
];

/// An N-node cluster in a tempdir, stopped on drop.
pub(crate) struct Cluster {
    /// Parent of `dir` and of the script's own output files.
    root: tempfile::TempDir,
    dir: PathBuf,
    n: u32,
    settings: String,
    kafka_ports: Vec<u16>,
    controller_ports: Vec<u16>,
    cluster_id: String,
    /// Every node PID seen, for the last-resort SIGKILL on drop.
    pids_seen: BTreeSet<u32>,
    script_runs: u32,
    /// Extra environment for the script (SLUICE_CLUSTER_INTERNAL, SLUICE_CLUSTER_CONFIG).
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `n` nodes with `settings` (as `--set name=value` on every node) and waits
    /// until every node's Metadata lists all of them.
    pub(crate) fn start(n: u32, settings: &[(&str, &str)]) -> Result<Self> {
        Self::start_env(n, settings, &[])
    }

    /// Like `start`, with more environment for `deploy/local-cluster.sh`.
    pub(crate) fn start_env(
        n: u32,
        settings: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()?;
        let dir = root.path().join("cluster");
        let mut cluster = Cluster {
            dir,
            root,
            n,
            settings: settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            kafka_ports: Vec::new(),
            controller_ports: Vec::new(),
            cluster_id: String::new(),
            pids_seen: BTreeSet::new(),
            script_runs: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let out = cluster.script(&["start", &n.to_string(), &cluster.dir_str()])?;
        cluster.load_env()?;
        let bootstrap = out.lines().last().unwrap_or_default().trim().to_string();
        ensure!(
            bootstrap == cluster.bootstrap(),
            "the script printed {bootstrap:?} as the bootstrap list, cluster.env says {:?}",
            cluster.bootstrap()
        );
        cluster.note_pids();
        Ok(cluster)
    }

    /// Starts every node again (after `stop_all`) on the same ports and data.
    pub(crate) fn start_again(&mut self) -> Result<()> {
        let (n, dir) = (self.n.to_string(), self.dir_str());
        self.script(&["start", &n, &dir])?;
        self.note_pids();
        Ok(())
    }

    /// Starts one stopped node again; the script waits until it lists itself.
    pub(crate) fn start_node(&mut self, id: u32) -> Result<()> {
        let dir = self.dir_str();
        self.script(&["start-node", &dir, &id.to_string()])?;
        self.note_pids();
        Ok(())
    }

    /// Stops every node (SIGTERM, then SIGKILL after the script's timeout).
    pub(crate) fn stop_all(&mut self) -> Result<()> {
        self.resume_all();
        let dir = self.dir_str();
        self.script(&["stop", &dir])?;
        Ok(())
    }

    pub(crate) fn n(&self) -> u32 {
        self.n
    }

    pub(crate) fn ids(&self) -> Vec<u32> {
        (1..=self.n).collect()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn node_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    pub(crate) fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub(crate) fn kafka_port(&self, id: u32) -> u16 {
        self.kafka_ports[id as usize - 1]
    }

    pub(crate) fn controller_port(&self, id: u32) -> u16 {
        self.controller_ports[id as usize - 1]
    }

    pub(crate) fn kafka_addr(&self, id: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port(id)))
    }

    pub(crate) fn controller_addr(&self, id: u32) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.controller_port(id)))
    }

    /// `127.0.0.1:port` of every node, node 1 first.
    pub(crate) fn bootstrap(&self) -> String {
        self.bootstrap_of(&self.ids())
    }

    /// `127.0.0.1:port` of the given nodes only.
    pub(crate) fn bootstrap_of(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|id| format!("127.0.0.1:{}", self.kafka_port(*id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node's command-line arguments as the script wrote them (binary not included).
    pub(crate) fn node_args(&self, id: u32) -> Result<Vec<String>> {
        let path = self.node_dir(id).join("args");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }

    /// Runs the script with `args`, bounded; returns its stdout; fails on a non-zero exit
    /// with its stderr (which holds the node log tails on a startup failure).
    fn script(&mut self, args: &[&str]) -> Result<String> {
        self.script_runs += 1;
        let out_path = self
            .root
            .path()
            .join(format!("script-{}.out", self.script_runs));
        let err_path = self
            .root
            .path()
            .join(format!("script-{}.err", self.script_runs));
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(args)
            .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
            .env("SLUICE_CORES", "1")
            .env("SLUICE_CLUSTER_TIMEOUT", SCRIPT_READY_SECS)
            .env("SLUICE_STOP_TIMEOUT", "10")
            .env("SLUICE_CLUSTER_SETTINGS", &self.settings)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?);
        let mut child = cmd.spawn().context("running deploy/local-cluster.sh")?;
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "local-cluster.sh {args:?} did not finish within {SCRIPT_TIMEOUT:?}; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !status.success() {
            bail!(
                "local-cluster.sh {args:?} failed with {status}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        Ok(stdout)
    }

    /// Reads `cluster.env` (KEY=value lines, not quoted).
    fn load_env(&mut self) -> Result<()> {
        let path = self.dir.join("cluster.env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut env = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        let ports = |key: &str| -> Result<Vec<u16>> {
            let v = env
                .get(key)
                .with_context(|| format!("cluster.env has no {key}"))?;
            v.split(',')
                .map(|p| {
                    p.parse::<u16>()
                        .with_context(|| format!("{key}: bad port {p:?}"))
                })
                .collect()
        };
        self.kafka_ports = ports("KAFKA_PORTS")?;
        self.controller_ports = ports("CONTROLLER_PORTS")?;
        self.cluster_id = env
            .get("CLUSTER_ID")
            .context("cluster.env has no CLUSTER_ID")?
            .clone();
        ensure!(
            self.kafka_ports.len() == self.n as usize
                && self.controller_ports.len() == self.n as usize,
            "cluster.env lists {} kafka and {} controller ports for {} nodes",
            self.kafka_ports.len(),
            self.controller_ports.len(),
            self.n
        );
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Processes.

    fn note_pids(&mut self) {
        for id in self.ids() {
            if let Some(pid) = self.pid(id) {
                self.pids_seen.insert(pid);
            }
        }
    }

    /// The PID of node `id` if it is running (its pid file names a live, non-zombie
    /// process whose command line holds the node's data dir).
    pub(crate) fn pid(&self, id: u32) -> Option<u32> {
        let text = std::fs::read_to_string(self.node_dir(id).join("pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        self.runs_node(pid, id).then_some(pid)
    }

    /// True if `pid` is alive, not a zombie, and runs node `id` of this cluster.
    fn runs_node(&self, pid: u32, id: u32) -> bool {
        if !process_alive(pid) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let want = self.node_dir(id).join("data").display().to_string();
        cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
    }

    /// True if `pid` runs any node of this cluster.
    fn runs_any_node(&self, pid: u32) -> bool {
        self.ids().into_iter().any(|id| self.runs_node(pid, id))
    }

    pub(crate) fn is_running(&self, id: u32) -> bool {
        self.pid(id).is_some()
    }

    /// SIGKILLs node `id` and waits (bounded) until its last thread is gone: a helper
    /// thread inside a sync finishes it first, and until then the process keeps its
    /// data dir's lock.
    pub(crate) fn kill9(&mut self, id: u32) -> Result<()> {
        self.signal_and_wait(id, libc::SIGKILL, "SIGKILL", Duration::from_secs(30))
    }

    /// SIGTERMs node `id` and waits (bounded) until it has exited.
    pub(crate) fn sigterm(&mut self, id: u32, within: Duration) -> Result<()> {
        self.signal_and_wait(id, libc::SIGTERM, "SIGTERM", within)
    }

    fn signal_and_wait(&mut self, id: u32, sig: i32, name: &str, within: Duration) -> Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        signal(pid, sig);
        let deadline = Instant::now() + within;
        while process_alive(pid) {
            ensure!(
                Instant::now() < deadline,
                "node {id} (pid {pid}) still alive {within:?} after {name}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGSTOPs node `id`; the guard SIGCONTs it when dropped (also on panic).
    pub(crate) fn sigstop(&self, id: u32) -> Result<Paused> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        signal(pid, libc::SIGSTOP);
        Ok(Paused {
            pid,
            resumed: false,
        })
    }

    /// SIGCONTs every running node (a stopped one would ignore SIGTERM until resumed).
    fn resume_all(&self) {
        for id in self.ids() {
            if let Some(pid) = self.pid(id) {
                signal(pid, libc::SIGCONT);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Logs.

    /// The node's whole log (all starts), ANSI escapes removed.
    pub(crate) fn log(&self, id: u32) -> String {
        let raw = std::fs::read(self.node_dir(id).join("log")).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    pub(crate) fn log_tail(&self, id: u32, lines: usize) -> String {
        let log = self.log(id);
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "----- {}/log (last {} lines) -----\n{}",
            self.node_dir(id).display(),
            all.len() - from,
            all[from..].join("\n")
        )
    }

    /// The leader named by the last `metadata quorum leader` line of node `id`'s log.
    pub(crate) fn last_known_leader(&self, id: u32) -> Option<Option<u32>> {
        self.log(id)
            .lines()
            .rev()
            .find(|l| l.contains("metadata quorum leader"))
            .map(parse_leader)
    }

    /// The active controller: the leader a majority of the voters names in the last
    /// `metadata quorum leader` line of their logs, among running nodes only, provided it
    /// runs and its log says `active controller` (bounded wait).
    pub(crate) fn active_controller(&self, within: Duration) -> Result<u32> {
        wait_for(
            "a majority to agree on the active controller",
            within,
            || {
                let mut votes: BTreeMap<u32, u32> = BTreeMap::new();
                let mut seen = Vec::new();
                for id in self.ids().into_iter().filter(|id| self.is_running(*id)) {
                    let leader = self.last_known_leader(id);
                    seen.push(format!("node {id}: {leader:?}"));
                    if let Some(Some(l)) = leader {
                        *votes.entry(l).or_default() += 1;
                    }
                }
                let majority = self.n / 2 + 1;
                let agreed = votes
                    .iter()
                    .find(|(l, v)| **v >= majority && self.is_running(**l))
                    .map(|(l, _)| *l);
                match agreed {
                    Some(l) if self.log(l).contains("active controller") => Ok(Some(l)),
                    _ => Err(anyhow::anyhow!("{}", seen.join("; "))),
                }
            },
        )
    }

    /// Copies every node's log under `$SLUICE_TEST_KEEP_LOGS`, when that is set.
    fn keep_logs(&self) {
        let Some(keep) = std::env::var_os("SLUICE_TEST_KEEP_LOGS") else {
            return;
        };
        let name = self.root.path().file_name().unwrap_or_default();
        let to = Path::new(&keep).join(name);
        if let Err(e) = std::fs::create_dir_all(&to) {
            eprintln!("keeping the node logs in {}: {e}", to.display());
            return;
        }
        for id in self.ids() {
            let from = self.node_dir(id).join("log");
            if let Err(e) = std::fs::copy(&from, to.join(format!("node-{id}.log"))) {
                eprintln!("keeping {}: {e}", from.display());
            }
        }
        eprintln!("node logs kept in {}", to.display());
    }

    fn print_log_tails(&self) {
        for id in self.ids() {
            eprintln!("{}\n", self.log_tail(id, LOG_TAIL));
        }
    }

    // ------------------------------------------------------------------------------------
    // Clients.

    /// The metadata node `id` answers (raw Metadata request: this broker alone answers).
    pub(crate) fn view(&self, id: u32) -> Result<MetadataView> {
        let mut c = RawClient::connect(self.kafka_addr(id))
            .with_context(|| format!("connecting to node {id}"))?;
        c.set_read_timeout(Duration::from_secs(10))?;
        c.negotiate()
            .with_context(|| format!("ApiVersions to node {id}"))?;
        let resp = c
            .metadata(None, false)
            .with_context(|| format!("Metadata from node {id}"))?;
        ensure!(
            resp.error_code == 0,
            "Metadata from node {id}: error {}",
            resp.error_code
        );
        let brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, (b.host.to_string(), b.port)))
            .collect();
        let topics = resp
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                let mut partitions: Vec<PartitionView> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionView {
                        partition: p.partition_index,
                        error: p.error_code,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                        isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                        offline: p.offline_replicas.iter().map(|r| r.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let view = TopicView {
                    id: t.topic_id.to_string(),
                    error: t.error_code,
                    partitions,
                };
                (name, view)
            })
            .collect();
        Ok(MetadataView {
            from: id,
            controller_id: resp.controller_id.0,
            cluster_id: resp.cluster_id.as_ref().map(|s| s.to_string()),
            brokers,
            topics,
        })
    }

    /// Waits (bounded) until `check` accepts the views of every node in `ids`; returns
    /// them. `check` gets all views at once and says what is wrong.
    pub(crate) fn wait_views(
        &self,
        what: &str,
        ids: &[u32],
        within: Duration,
        mut check: impl FnMut(&[MetadataView]) -> Result<()>,
    ) -> Result<Vec<MetadataView>> {
        wait_for(what, within, || {
            let views = ids
                .iter()
                .map(|id| self.view(*id))
                .collect::<Result<Vec<_>>>()?;
            check(&views)?;
            Ok(Some(views))
        })
    }

    /// rdkafka client settings for the given bootstrap list.
    pub(crate) fn client_config(bootstrap: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "500")
            .set("log_level", "3");
        cfg
    }

    pub(crate) fn admin(&self, ids: &[u32]) -> Result<AdminClient<DefaultClientContext>> {
        Ok(Self::client_config(&self.bootstrap_of(ids)).create()?)
    }

    /// An rdkafka metadata client whose only bootstrap broker is node `id`.
    pub(crate) fn metadata_client(&self, id: u32) -> Result<BaseConsumer> {
        Ok(Self::client_config(&self.bootstrap_of(&[id])).create()?)
    }

    /// Creates `topic` through the brokers `ids`, retrying retriable failures (an
    /// election, no controller yet) until `within` has passed. A topic that already
    /// exists after a retry counts as created (an earlier attempt committed). Returns the
    /// time it took.
    pub(crate) fn create_topic(
        &self,
        ids: &[u32],
        topic: &NewTopic<'_>,
        within: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        let admin = self.admin(ids)?;
        let mut attempts = 0u32;
        wait_for(&format!("creating topic {}", topic.name), within, || {
            attempts += 1;
            match try_create(&admin, topic, Duration::from_secs(3))? {
                Ok(()) => Ok(Some(started.elapsed())),
                Err(RDKafkaErrorCode::TopicAlreadyExists) if attempts > 1 => {
                    Ok(Some(started.elapsed()))
                }
                Err(code) if is_final(code) => {
                    bail!("create topic {}: {code:?} (not retriable)", topic.name)
                }
                Err(code) => Err(anyhow::anyhow!("attempt {attempts}: {code:?}")),
            }
        })
    }

    /// DescribeConfigs of `topic` through node `id`: (name, value, source) triples.
    pub(crate) fn topic_configs(
        &self,
        id: u32,
        topic: &str,
    ) -> Result<Vec<(String, Option<String>, String)>> {
        let admin = self.admin(&[id])?;
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let resource = ResourceSpecifier::Topic(topic);
        let fut = admin.describe_configs([&resource], &opts);
        let results = block_on(async {
            tokio::time::timeout(Duration::from_secs(15), fut)
                .await
                .map_err(|_| anyhow::anyhow!("DescribeConfigs {topic}: no answer in 15 s"))
        })??;
        let Some(first) = results.into_iter().next() else {
            bail!("DescribeConfigs {topic}: no result");
        };
        let resource = first.map_err(|e| anyhow::anyhow!("DescribeConfigs {topic}: {e:?}"))?;
        let mut out: Vec<_> = resource
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone(), format!("{:?}", e.source)))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.note_pids();
        self.resume_all();
        // libtest captures this and shows it only for failing tests.
        self.print_log_tails();
        self.keep_logs();
        let dir = self.dir_str();
        if let Err(e) = self.script(&["stop", &dir]) {
            eprintln!("stopping the cluster: {e:#}");
        }
        // last resort: anything of this cluster still alive gets SIGKILL
        let left: Vec<u32> = self
            .pids_seen
            .iter()
            .copied()
            .chain(self.ids().into_iter().filter_map(|id| self.pid(id)))
            .filter(|pid| self.runs_any_node(*pid))
            .collect();
        for pid in &left {
            eprintln!("node pid {pid} survived `local-cluster.sh stop`: SIGKILL");
            signal(*pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while left.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A SIGSTOPped node; dropping this sends SIGCONT.
pub(crate) struct Paused {
    pid: u32,
    resumed: bool,
}

impl Paused {
    pub(crate) fn resume(mut self) {
        self.resume_now();
    }

    fn resume_now(&mut self) {
        if !self.resumed {
            signal(self.pid, libc::SIGCONT);
            self.resumed = true;
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.resume_now();
    }
}

/// What one broker answered to Metadata (all topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetadataView {
    /// The node asked.
    pub(crate) from: u32,
    pub(crate) controller_id: i32,
    pub(crate) cluster_id: Option<String>,
    /// node id → (host, port)
    pub(crate) brokers: BTreeMap<i32, (String, i32)>,
    pub(crate) topics: BTreeMap<String, TopicView>,
}

impl MetadataView {
    pub(crate) fn broker_ids(&self) -> BTreeSet<i32> {
        self.brokers.keys().copied().collect()
    }

    pub(crate) fn topic(&self, name: &str) -> Result<&TopicView> {
        self.topics
            .get(name)
            .with_context(|| format!("node {} does not list topic {name}", self.from))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicView {
    pub(crate) id: String,
    pub(crate) error: i16,
    pub(crate) partitions: Vec<PartitionView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionView {
    pub(crate) partition: i32,
    pub(crate) error: i16,
    pub(crate) leader: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) replicas: Vec<i32>,
    pub(crate) isr: Vec<i32>,
    pub(crate) offline: Vec<i32>,
}

/// One CreateTopics of `topic` with the given operation timeout; the outer error is a
/// client failure, the inner one the topic's error code (timeouts map to
/// `RequestTimedOut`/`OperationTimedOut`).
pub(crate) fn try_create(
    admin: &AdminClient<DefaultClientContext>,
    topic: &NewTopic<'_>,
    op_timeout: Duration,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let opts = AdminOptions::new()
        .operation_timeout(Some(op_timeout))
        .request_timeout(Some(op_timeout + Duration::from_secs(2)));
    let fut = admin.create_topics([topic], &opts);
    let bound = op_timeout + Duration::from_secs(5);
    let answer = block_on(async { tokio::time::timeout(bound, fut).await });
    match answer {
        Err(_) => Ok(Err(RDKafkaErrorCode::OperationTimedOut)),
        Ok(Err(KafkaError::AdminOp(code))) => Ok(Err(code)),
        Ok(Err(e)) => match e.rdkafka_error_code() {
            Some(code) => Ok(Err(code)),
            None => bail!("create topic {}: {e}", topic.name),
        },
        Ok(Ok(results)) => match results.into_iter().next() {
            Some(Ok(_)) => Ok(Ok(())),
            Some(Err((_, code))) => Ok(Err(code)),
            None => bail!("create topic {}: empty answer", topic.name),
        },
    }
}

/// Errors of CreateTopics that no retry can fix.
fn is_final(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidReplicaAssignment
            | RDKafkaErrorCode::TopicAlreadyExists
    )
}

/// Polls `f` every 100 ms until it returns `Ok(Some(_))`, for at most `within`; `Err` is
/// "not yet" (kept as the reason for the timeout message).
pub(crate) fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    let mut last;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "not yet".into(),
            Err(e) => {
                // errors that say "never" end the wait at once
                if format!("{e:#}").contains("(not retriable)") {
                    return Err(e);
                }
                last = format!("{e:#}");
            }
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Parses `leader=Some(N)` / `leader=None` out of a `metadata quorum leader` line.
fn parse_leader(line: &str) -> Option<u32> {
    let rest = line.split("leader=Some(").nth(1)?;
    rest.split(')').next()?.trim().parse().ok()
}

/// Removes ANSI escape sequences (CSI: ESC [ ... final byte).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// True if `pid` exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    // Every thread, not only the main one: after SIGKILL the main thread turns zombie at
    // once while a helper thread inside fsync or syncfs finishes the call first, and the
    // process keeps its descriptors (the data dir's lock) until the last thread is gone.
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // the state follows the command name, which is in parentheses and may hold
            // spaces
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
    })
}

/// Sends `sig` to the process group `pid` leads (the script starts each node in a session
/// of its own) and to the process itself.
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    if p <= 1 {
        return;
    }
    // SAFETY: kill(2) with a positive pid (> 1) or the matching negative process-group id
    // only sends a signal; it touches no memory of this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-p, sig);
        libc::kill(p, sig);
    }
}

/// Asserts `views` are identical apart from who answered; says where they differ.
pub(crate) fn ensure_same(views: &[MetadataView]) -> Result<()> {
    let Some(first) = views.first() else {
        return Ok(());
    };
    for v in &views[1..] {
        ensure!(
            v.brokers == first.brokers,
            "node {} lists brokers {:?}, node {} lists {:?}",
            v.from,
            v.broker_ids(),
            first.from,
            first.broker_ids()
        );
        let names = |m: &MetadataView| m.topics.keys().cloned().collect::<Vec<_>>();
        ensure!(
            v.topics.keys().eq(first.topics.keys()),
            "node {} lists topics {:?}, node {} lists {:?}",
            v.from,
            names(v),
            first.from,
            names(first)
        );
        for (name, t) in &v.topics {
            let f = &first.topics[name];
            ensure!(
                t == f,
                "topic {name}: node {} says {t:?}, node {} says {f:?}",
                v.from,
                first.from
            );
        }
    }
    Ok(())
}

/// Node ids (1..) of `views`' answering nodes, for messages.
pub(crate) fn from_ids(views: &[MetadataView]) -> Vec<u32> {
    views.iter().map(|v| v.from).collect()
}

/// Runs the broker binary directly with `args` and waits (bounded) for it to exit;
/// returns (exit status, combined output), or an error if it was still running at the
/// bound (then it is killed).
pub(crate) fn run_binary_expecting_exit(
    args: &[String],
    output: &Path,
    within: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    let log = File::create(output)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning the sluice binary")?;
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(output).unwrap_or_default();
            return Ok((status, strip_ansi(&text)));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(output).unwrap_or_default();
            bail!(
                "the broker was still running {within:?} after start; output:\n{}",
                strip_ansi(&text)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
