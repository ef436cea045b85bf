//! Shared harness for the broker's integration tests: a real `sluice` process on an
//! ephemeral 127.0.0.1 port with a temp data dir, plus rdkafka client builders; `raw` is
//! a raw Kafka client, `kafka` the raw-protocol helpers the hardening suites share and
//! `checks` the cluster suites' shared checks and `old_wire` the pre-flexible layouts and message sets the old-version suites write.
//! Invariants: every wait is bounded; the child is killed when the guard drops (even on
//! panic); the data dir outlives
//! restarts so durability can be checked across processes.
//! The log tail printed on drop is captured by libtest and shown only for failing tests.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

pub(crate) mod checks;
pub(crate) mod cluster;
pub(crate) mod extra;
pub(crate) mod kafka;
pub(crate) mod old_wire;
pub(crate) mod raw;
pub(crate) mod txn;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// How long a broker may take from spawn to answering metadata.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for any single client operation against the broker.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// Returns a port that was free a moment ago (bind :0, read the port, drop the listener).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("ok: binding an ephemeral port");
    listener
        .local_addr()
        .expect("ok: bound socket has an address")
        .port()
}

/// Runs a future to completion on a fresh current-thread tokio runtime.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("ok: building a tokio runtime cannot fail in tests")
        .block_on(fut)
}

/// A `sluice` child process plus its port, data dir and logs; killed on drop.
pub(crate) struct BrokerProcess {
    child: Option<Child>,
    port: u16,
    cores: usize,
    data_dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    starts: u32,
    /// Extra command-line arguments (e.g. `--set name=value`), kept across restarts.
    extra_args: Vec<String>,
    /// Listeners besides PLAINTEXT on `port` (`SSL://127.0.0.1:P,...`).
    more_listeners: Option<String>,
}

impl BrokerProcess {
    /// Spawns a broker with `cores` shards on a fresh port and data dir; waits until ready.
    pub(crate) fn spawn(cores: usize) -> Result<Self> {
        Self::spawn_with(cores, &[])
    }

    /// Like `spawn`, with broker settings given as `--set name=value`.
    pub(crate) fn spawn_with(cores: usize, settings: &[(&str, &str)]) -> Result<Self> {
        Self::spawn_full(cores, settings, None, |_| Ok(()))
    }

    /// Like `spawn_with`, with listeners besides PLAINTEXT on `port()` (`more_listeners`,
    /// Kafka's form) and `prepare` run on the data dir before the first start.
    pub(crate) fn spawn_full(
        cores: usize,
        settings: &[(&str, &str)],
        more_listeners: Option<&str>,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Self> {
        let mut broker = BrokerProcess {
            child: None,
            port: free_port(),
            cores,
            data_dir: tempfile::Builder::new().prefix("sluice-data-").tempdir()?,
            log_dir: tempfile::Builder::new().prefix("sluice-log-").tempdir()?,
            starts: 0,
            extra_args: settings
                .iter()
                .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
                .collect(),
            more_listeners: more_listeners.map(str::to_string),
        };
        prepare(broker.data_dir.path())?;
        // The port was free when picked, but another process (e.g. a client's outgoing
        // connection) may take it before the broker binds: then pick another.
        for _ in 0..3 {
            match broker.start() {
                Err(e)
                    if format!("{e:#}")
                        .to_lowercase()
                        .contains("address already in use") =>
                {
                    broker.port = free_port();
                }
                other => return other.map(|()| broker),
            }
        }
        broker.start()?;
        Ok(broker)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The running broker's process id (None once it was killed or stopped).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.log_dir.path().join(format!("broker-{start}.log"))
    }

    fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("broker already running");
        }
        self.starts += 1;
        let log = File::create(self.log_path(self.starts))?;
        let listen = match &self.more_listeners {
            Some(more) => format!("PLAINTEXT://{},{more}", self.bootstrap()),
            None => self.bootstrap(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--listen")
            .arg(&listen)
            .arg("--advertised-listener")
            .arg(&listen)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--cores")
            .arg(self.cores.to_string())
            // tests run brokers side by side: pinned, each one's shard 0 would share CPU 0
            .args(["--set", "cpuset=none"])
            // off unless a test sets it: side by side, brokers would race for its default port
            .args(["--set", "metrics.listen="])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning the sluice binary")?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls until a TCP connect succeeds and rdkafka gets metadata (bounded).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_err = String::from("no attempt made");
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "broker exited during startup with {status}\n{}",
                    self.log_tail(40)
                );
            }
            match TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)) {
                Ok(_) => {
                    let client: BaseConsumer = self.client_config().create()?;
                    match client.fetch_metadata(None, Duration::from_secs(3)) {
                        Ok(md) if !md.brokers().is_empty() => return Ok(()),
                        Ok(_) => last_err = "metadata lists no brokers".into(),
                        Err(e) => last_err = format!("metadata: {e}"),
                    }
                }
                Err(e) => last_err = format!("connect: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "broker not ready within {READY_TIMEOUT:?}: {last_err}\n{}",
            self.log_tail(40)
        )
    }

    /// True while the child process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the broker and reaps it.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    pub(crate) fn sigterm(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("broker is not running");
        };
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "broker did not exit within 30 s of SIGTERM\n{}",
            self.log_tail(40)
        )
    }

    /// Starts the broker again on the same port and data dir.
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.start()
    }

    /// Starts the broker again on the same port and data dir with another core count.
    pub(crate) fn restart_with_cores(&mut self, cores: usize) -> Result<()> {
        self.cores = cores;
        self.start()
    }

    /// The last `n` lines of the current (latest) broker log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let path = self.log_path(self.starts);
        let Ok(file) = File::open(&path) else {
            return format!("(no log at {})", path.display());
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- last {} lines of {} ---\n{}",
            lines.len() - from,
            path.display(),
            lines[from..].join("\n")
        )
    }

    /// Base client config: bootstrap, IPv4 and bounded socket timeouts.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "30000")
            .set("log_level", "4");
        cfg
    }

    /// A keyed producer that partitions like the Java client; acks=all, no retries, no
    /// idempotence (so the broker alone decides what is stored).
    pub(crate) fn producer(&self, extra: &[(&str, &str)]) -> Result<FutureProducer> {
        let mut cfg = self.client_config();
        cfg.set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        Ok(cfg.create()?)
    }

    /// An assign-only consumer (librdkafka needs a group.id for `assign`, but nothing is
    /// committed and no group is joined).
    pub(crate) fn consumer(&self, extra: &[(&str, &str)]) -> Result<BaseConsumer> {
        let mut cfg = self.client_config();
        cfg.set("group.id", "sluice-tests-assign-only")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("check.crcs", "true")
            .set("fetch.wait.max.ms", "200");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        Ok(cfg.create()?)
    }

    pub(crate) fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        Ok(self.client_config().create()?)
    }

    /// Creates a topic with replication factor 1 and the given configs; fails on any error.
    pub(crate) fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let admin = self.admin()?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
        let results = block_on(admin.create_topics([&topic], &opts))?;
        for r in results {
            if let Err((t, code)) = r {
                bail!("create topic {t}: {code:?}");
            }
        }
        self.wait_for_topic(name, partitions as usize)
    }

    /// Waits (bounded) until metadata shows `name` with `partitions` partitions, each led.
    pub(crate) fn wait_for_topic(&self, name: &str, partitions: usize) -> Result<()> {
        let client: BaseConsumer = self.client_config().create()?;
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match client.fetch_metadata(Some(name), Duration::from_secs(3)) {
                Ok(md) => {
                    if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                        let led = t.partitions().iter().filter(|p| p.leader() >= 0).count();
                        if t.error().is_none()
                            && t.partitions().len() == partitions
                            && led == partitions
                        {
                            return Ok(());
                        }
                        last = format!(
                            "error {:?}, {} partitions, {led} led",
                            t.error(),
                            t.partitions().len()
                        );
                    }
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("topic {name} never showed {partitions} led partitions: {last}")
    }

    /// (low, high) watermarks of one partition via ListOffsets.
    pub(crate) fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let c: BaseConsumer = self.client_config().create()?;
        Ok(c.fetch_watermarks(topic, partition, OP_TIMEOUT)?)
    }

    /// Consumes every partition of `topic` from the beginning up to the current high
    /// watermarks and returns the records in the order received.
    pub(crate) fn consume_all(&self, topic: &str, partitions: i32) -> Result<Vec<Consumed>> {
        let mut highs = BTreeMap::new();
        for p in 0..partitions {
            highs.insert(p, self.watermarks(topic, p)?.1);
        }
        let consumer = self.consumer(&[])?;
        consume_until(&consumer, topic, &highs, Duration::from_secs(120))
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // libtest captures this and shows it only for failing tests.
        eprintln!("{}", self.log_tail(60));
    }
}

/// One record as the consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Consumed {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) timestamp: Option<i64>,
}

/// Assigns every partition in `highs` from the beginning and polls until each partition
/// has delivered everything below its high watermark (bounded by `timeout`).
pub(crate) fn consume_until(
    consumer: &BaseConsumer,
    topic: &str,
    highs: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Vec<Consumed>> {
    let mut tpl = TopicPartitionList::new();
    for p in highs.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next: HashMap<i32, i64> = highs.keys().map(|p| (*p, 0)).collect();
    let done = |next: &HashMap<i32, i64>| highs.iter().all(|(p, h)| next[p] >= *h);
    let mut out = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + timeout;
    while !done(&next) {
        if Instant::now() > deadline {
            bail!(
                "timed out consuming {topic}: got {} records; next offsets {next:?}, highs {highs:?}, errors {errors:?}",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            // Errors that do not stop fetching (e.g. a one-off group-coordinator error,
            // which librdkafka reports even for assign-only consumers) are kept for the
            // report; missing records still fail the test at the deadline.
            Some(Err(e)) => {
                errors.push(e.to_string());
                if errors.len() > 20 {
                    bail!("consume errors on {topic}: {errors:?}");
                }
            }
            Some(Ok(m)) => {
                let c = Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis(),
                };
                if let Some(n) = next.get_mut(&c.partition) {
                    *n = (*n).max(c.offset + 1);
                }
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Produces `value` to partition 0 of `topic` and waits (bounded: 20 s) for its ack;
/// returns the offset it was given.
pub(crate) fn send_one(producer: &FutureProducer, topic: &str, value: &str) -> Result<i64> {
    block_on(async {
        match producer
            .send(
                FutureRecord::<(), _>::to(topic).partition(0).payload(value),
                Duration::from_secs(20),
            )
            .await
        {
            Ok(d) => Ok(d.offset),
            Err((e, _)) => bail!("produce {value}: {e}"),
        }
    })
}

/// Deterministic test record: key `k<seq % keys>`, payload `seq=<seq> <filler>`.
pub(crate) fn record_key(seq: u64, keys: u64) -> String {
    format!("k{}", seq % keys)
}

pub(crate) fn record_payload(seq: u64) -> String {
    format!(
        "seq={seq:010} the quick brown fox jumps over the lazy dog {}",
        seq * 7919 % 100_003
    )
}

/// Parses the sequence number out of a payload made by `record_payload`.
pub(crate) fn payload_seq(payload: &[u8]) -> Result<u64> {
    let s = std::str::from_utf8(payload).context("payload is not UTF-8")?;
    let digits = s
        .strip_prefix("seq=")
        .and_then(|r| r.get(..10))
        .with_context(|| format!("payload has no seq: {s:?}"))?;
    Ok(digits.parse()?)
}

/// Resident set size of process `pid` in bytes (VmRSS from /proc/<pid>/status).
pub(crate) fn vm_rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed line {line:?}"))?
        .parse()?;
    Ok(kib * 1024)
}

/// Number of open file descriptors of process `pid` (entries of /proc/<pid>/fd).
pub(crate) fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count())
}
