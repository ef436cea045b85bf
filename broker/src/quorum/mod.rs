//! The metadata quorum, as the broker runs it: a raft node (`sluice_controller::Node`)
//! whose committed entries are batches of metadata records, on its own thread.
//!
//! ```text
//!  shard 0 ──Event::Op──► quorum thread ──leader? decide (ControllerLogic on the
//!                          │                speculative image) ─► propose ─► commit ─► reply
//!                          │             ──follower? forward to the leader's controller
//!                          │                listener (one short call thread) ─► reply
//!  peers ◄──raft messages──┤◄── controller listener (raft envelopes, forwarded calls)
//!                          └──ToShards::{Reset, Apply}──► shard 0 ─► every shard
//!                                 ◄──Event::Applied(index)── (shard 0, once all applied)
//! ```
//! Why a thread and not a task on shard 0: the raft store writes and fsyncs with blocking
//! calls (`StdFs`), which must never run on a shard (see ARCHITECTURE.md, departures).
//!
//! Invariants:
//! - the active controller decides only once it has applied every entry before its own
//!   term's first entry, against an image that also holds its proposals in flight;
//! - every op gets exactly one reply: at commit, on leadership loss (NOT_CONTROLLER), or
//!   past its deadline (REQUEST_TIMED_OUT); a reply's index is the entry to wait for;
//! - shards get every committed entry once, in order, after a `Reset` with the image the
//!   entries follow.

mod ops;
pub(crate) mod rpc;
mod state_machine;
mod status;
mod transport;

pub(crate) use state_machine::read_legacy_log;
use state_machine::{decode_batch, MetadataSm};
pub(crate) use status::{QuorumReading, QuorumStatus};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kafka_protocol::ResponseError;
use sluice_controller::envelope::Receiver;
use sluice_controller::{Node, NodeConfig, RaftMessage, RaftStore, StdFs, StoreConfig};
use sluice_proto::metadata::MetadataRecord;

use crate::config::{BrokerConfig, Quorum};
use crate::metadata::controller::{BrokerHeartbeat, ControllerLogic, MetadataOp, MetadataOpResult};
use crate::metadata::image::MetadataImage;

/// Directory of the raft log inside the data dir.
pub(crate) const RAFT_DIR: &str = "__raft";
/// The metadata log of releases before the quorum (imported once, then renamed).
pub(crate) const LEGACY_METADATA_DIR: &str = "__cluster_metadata-0";
/// Forwarded calls in flight from one node (each is a short-lived thread).
const MAX_FORWARDS: usize = 64;

/// The answer to an op and the metadata-log index to wait for (0: nothing written).
pub(crate) type OpReply = (MetadataOpResult, u64);

/// What the quorum thread is told.
pub(crate) enum Event {
    Peer(Box<RaftMessage>),
    Unreachable(u64),
    SnapshotSent(u64, bool),
    Op {
        op: MetadataOp,
        reply: flume::Sender<OpReply>,
        deadline: Instant,
        /// Came from another node: never forwarded again.
        forwarded: bool,
    },
    /// This node's shards have applied the metadata log up to this index.
    Applied(u64),
    Stop,
}

/// What the quorum thread tells shard 0.
#[derive(Debug)]
pub(crate) enum ToShards {
    /// The whole image as of `index` (at start, and after a snapshot from the leader).
    Reset {
        index: u64,
        records: Vec<MetadataRecord>,
    },
    /// The records of the committed entry at `index`.
    Apply {
        index: u64,
        records: Vec<MetadataRecord>,
    },
}

/// The broker's side of the quorum thread.
pub(crate) struct QuorumHandle {
    /// This process's broker incarnation (random per start).
    pub(crate) incarnation: Vec<u8>,
    /// The quorum as this node sees it, for metrics.
    pub(crate) status: Arc<QuorumStatus>,
    pub(crate) events: flume::Sender<Event>,
    pub(crate) to_shards: flume::Receiver<ToShards>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QuorumHandle {
    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        let _ = self.events.send(Event::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A proposal of this leader waiting to commit.
struct Pending {
    index: u64,
    term: u64,
    records: Vec<MetadataRecord>,
    result: MetadataOpResult,
    reply: Option<flume::Sender<OpReply>>,
    deadline: Instant,
}

/// An op waiting for a leader (or for this leader to be ready).
struct Waiting {
    op: MetadataOp,
    reply: flume::Sender<OpReply>,
    deadline: Instant,
    forwarded: bool,
}

/// What this node says about itself in its heartbeats.
#[derive(Clone)]
struct LocalBroker {
    /// Set on a broker-only node: where the leader sends it the log (it is a learner).
    controller_addr: Option<String>,
    incarnation: Vec<u8>,
    host: String,
    port: i32,
    rack: Option<String>,
    endpoints: Vec<sluice_proto::metadata::BrokerEndpoint>,
}

/// The controller listener's security, from `CONTROLLER` in
/// `listener.security.protocol.map` (Kafka's name for the controller listener): SSL and
/// SASL_SSL are mutual TLS with the node's `ssl.*` certificate, key and CA; SASL_PLAINTEXT
/// and SASL_SSL log in with SASL PLAIN, the users of
/// `listener.name.controller.plain.sasl.jaas.config`.
fn controller_security(config: &BrokerConfig) -> anyhow::Result<transport::ControllerSecurity> {
    use crate::listeners::SecurityProtocol;
    let map =
        crate::listeners::parse_protocol_map(config.str_value("listener.security.protocol.map"))?;
    let protocol = map
        .get("CONTROLLER")
        .copied()
        .unwrap_or(SecurityProtocol::Plaintext);
    let tls = if protocol.tls() {
        let server = crate::tls::server_config(config, Some("required"))
            .context("TLS on the controller listener")?;
        let ca = config.str_value("ssl.ca.location").trim();
        let present = |n: &str| Some(config.str_value(n).trim()).filter(|v| !v.is_empty());
        let client = crate::security::client::tls_client_config(
            ca,
            present("ssl.certificate.location"),
            present("ssl.key.location"),
            true,
        )
        .context("TLS toward the other controllers")?;
        Some(transport::ControllerTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    } else {
        None
    };
    let sasl = if protocol.sasl() {
        const JAAS: &str = "listener.name.controller.plain.sasl.jaas.config";
        let jaas = config.str_value(JAAS);
        let (user, password) = crate::security::jaas::credentials(jaas).with_context(|| {
            format!(
                "the controller listener is {}: {JAAS} must name username and password",
                protocol.name()
            )
        })?;
        let users = crate::security::jaas::users(jaas);
        if users.is_empty() {
            anyhow::bail!("{JAAS} names no user_NAME=\"PASSWORD\" the controller listener accepts");
        }
        let delay = config.int("connection.failed.authentication.delay.ms") as u64;
        Some(transport::ControllerSasl::new(
            user,
            password,
            users,
            Duration::from_millis(delay),
        ))
    } else {
        None
    };
    Ok(transport::ControllerSecurity { tls, sasl })
}

/// How often the quorum thread writes a moved commit index (one small atomic file write).
const COMMIT_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

struct Runner {
    node: Node<MetadataSm>,
    peers: Option<transport::Peers>,
    /// None on a controller-only node (it has no shards).
    to_shards: Option<flume::Sender<ToShards>>,
    /// A voter of the quorum (controller role); else a learner.
    voter: bool,
    /// Has the broker role: heartbeats and shards.
    broker: bool,
    /// Which voter a learner that knows no leader asks next.
    rotor: usize,
    voters: Vec<(i32, SocketAddr)>,
    voter_count: usize,
    config: BrokerConfig,
    local: i32,
    leader: Option<u64>,
    /// The term of the last leader change seen.
    term: u64,
    /// At start, until the locally committed entries are in the image: shards get one
    /// Reset afterwards instead of each entry.
    replaying: bool,
    logic: Option<ControllerLogic>,
    spec: Option<MetadataImage>,
    /// This leader decides once it has applied this index (its term's first entry).
    ready_at: Option<u64>,
    pending: VecDeque<Pending>,
    waiting: Vec<Waiting>,
    forwards: Arc<AtomicUsize>,
    /// The thread's own inbox, for forwarded calls to come back and be tried again.
    inbox: flume::Sender<Event>,
    legacy: Option<Vec<MetadataRecord>>,
    legacy_dir: std::path::PathBuf,
    /// The entry that imports the legacy log; once applied, the old log is renamed.
    legacy_index: Option<u64>,
    /// When the commit index is next written to disk if it moved (raft itself writes it
    /// only with a term or vote change): a node restarting without a quorum then serves
    /// what was committed until about a second before it stopped.
    next_commit_persist: Instant,
    me: LocalBroker,
    shards_applied: u64,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    heartbeat_answer: Option<flume::Receiver<OpReply>>,
    /// Published after every pass of the loop (metrics).
    status: Arc<QuorumStatus>,
}

/// Opens the raft log, checks it against the configured quorum, binds the controller
/// listener and starts the quorum thread.
pub(crate) fn start(
    config: &BrokerConfig,
    quorum: &Quorum,
    cluster_id: &str,
) -> anyhow::Result<QuorumHandle> {
    let data_dir = config.data_dir();
    let node_id = quorum.node as u64;
    let voter_ids: Vec<u64> = quorum.voter_ids().into_iter().map(|v| v as u64).collect();
    let raft_dir = data_dir.join(RAFT_DIR);
    let mut store = RaftStore::open(StdFs, &raft_dir, StoreConfig::default())
        .with_context(|| format!("opening the raft log in {}", raft_dir.display()))?;
    let fresh = !store.is_initialized();
    store.bootstrap(&voter_ids).map_err(|e| {
        anyhow::anyhow!(
            "the raft log in {} does not match controller.quorum.voters={:?} ({e}); start this node with the voters it was created with",
            raft_dir.display(),
            config.str_value("controller.quorum.voters")
        )
    })?;
    let legacy = read_legacy_log(&data_dir, quorum.node)?;
    if !legacy.is_empty() && voter_ids.len() > 1 && fresh {
        anyhow::bail!(
            "{} holds the metadata of a single-node release: start this data dir once as a single node (without controller.quorum.voters) to import it",
            data_dir.join(LEGACY_METADATA_DIR).display()
        );
    }
    let tick = Duration::from_millis(config.int("controller.quorum.tick.ms") as u64);
    let election_ms = config.int("controller.quorum.election.timeout.ms") as u64;
    let mut node_config = NodeConfig::new(node_id);
    node_config.election_tick = ((election_ms / tick.as_millis().max(1) as u64) as usize).max(3);
    node_config.heartbeat_tick = 1.max(node_config.election_tick / 5);
    node_config.snapshot_interval = config.int("controller.snapshot.interval.records") as u64;
    let mut node =
        Node::open(&node_config, store, MetadataSm::default()).context("starting the raft node")?;
    let (events_tx, events_rx) = flume::unbounded();
    let (shards_tx, shards_rx) = flume::unbounded();
    let peers = if quorum.voters.is_empty() {
        None
    } else {
        let addr = quorum.listener.ok_or_else(|| {
            anyhow::anyhow!("no controller listener address for node {}", quorum.node)
        })?;
        transport::configure(controller_security(config)?);
        let listener = transport::bind(addr)
            .with_context(|| format!("binding the controller listener {addr}"))?;
        transport::serve(
            listener,
            Receiver {
                cluster_id: cluster_id.to_string(),
                local_id: node_id,
                max_bytes: transport::MAX_FRAME,
            },
            events_tx.clone(),
        )?;
        tracing::info!(%addr, voters = ?voter_ids, "controller listener up");
        Some(transport::Peers::start(
            node_id,
            &quorum.voters,
            cluster_id,
            &events_tx,
        )?)
    };
    if voter_ids.len() == 1 && quorum.controller {
        node.campaign().context("electing the single voter")?;
    }
    let incarnation = rand::random::<[u8; 16]>().to_vec();
    let status = Arc::new(QuorumStatus::new(quorum.controller));
    let listeners = config.listeners()?;
    let (host, port) = {
        let ib = listeners.inter_broker();
        (ib.advertised_host.clone(), ib.advertised_port)
    };
    let endpoints = listeners
        .all
        .iter()
        .map(|l| sluice_proto::metadata::BrokerEndpoint {
            name: l.name.clone(),
            host: l.advertised_host.clone(),
            port: l.advertised_port,
            security_protocol: l.protocol.id(),
        })
        .collect();
    let rack = Some(config.str_value("broker.rack").to_string()).filter(|r| !r.is_empty());
    let runner = Runner {
        node,
        peers,
        to_shards: quorum.broker.then_some(shards_tx),
        voter: quorum.controller,
        broker: quorum.broker,
        rotor: 0,
        voter_count: voter_ids.len(),
        voters: quorum.voters.clone(),
        config: config.clone(),
        local: quorum.node,
        leader: None,
        term: 0,
        replaying: false,
        logic: None,
        spec: None,
        ready_at: None,
        pending: VecDeque::new(),
        waiting: Vec::new(),
        forwards: Arc::new(AtomicUsize::new(0)),
        inbox: events_tx.clone(),
        legacy: (!legacy.is_empty()).then_some(legacy),
        legacy_dir: data_dir.join(LEGACY_METADATA_DIR),
        legacy_index: None,
        next_commit_persist: Instant::now(),
        me: LocalBroker {
            controller_addr: (!quorum.controller)
                .then(|| quorum.listener.map(|a| a.to_string()))
                .flatten(),
            incarnation: incarnation.clone(),
            host,
            port,
            rack,
            endpoints,
        },
        shards_applied: 0,
        heartbeat_every: Duration::from_millis(config.int("broker.heartbeat.interval.ms") as u64),
        next_heartbeat: Instant::now(),
        heartbeat_answer: None,
        status: status.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("sluice-quorum".into())
        .spawn(move || runner.run(events_rx, tick))
        .context("starting the quorum thread")?;
    Ok(QuorumHandle {
        incarnation,
        status,
        events: events_tx,
        to_shards: shards_rx,
        thread: Some(thread),
    })
}

fn failed(code: ResponseError, message: impl Into<String>) -> OpReply {
    (MetadataOpResult::Failed(code.code(), message.into()), 0)
}

impl Runner {
    fn run(mut self, events: flume::Receiver<Event>, tick: Duration) {
        // Replay the locally committed entries into the image before the shards see it:
        // one Reset with the result, instead of every topic created and deleted since
        // the snapshot being opened and removed again on disk.
        self.replaying = true;
        if let Err(e) = self.drive() {
            tracing::error!(error = %e, "replaying the metadata log failed; exiting");
            std::process::exit(70);
        }
        self.replaying = false;
        self.send_to_shards(ToShards::Reset {
            index: self.node.status().applied,
            records: self.node.state_machine().image.to_records(),
        });
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match events.recv_timeout(wait) {
                Ok(e) => Some(e),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            };
            for ev in first.into_iter().chain(events.try_iter().take(4096)) {
                if !self.handle(ev) {
                    tracing::info!("quorum thread stopped");
                    return;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = now + tick;
                self.on_tick(now);
            }
            self.check_heartbeat_answer(now);
            if let Err(e) = self.drive() {
                // raft's memory may be ahead of its disk now: the only safe way on is a
                // restart from the log, as after a crash
                tracing::error!(error = %e, "the metadata quorum failed; exiting");
                std::process::exit(70);
            }
            self.status.publish(&self.node.status());
        }
    }

    fn send_to_shards(&self, msg: ToShards) {
        if let Some(tx) = &self.to_shards {
            let _ = tx.send(msg);
        }
    }

    fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Peer(msg) => {
                if let Err(e) = self.node.step(*msg) {
                    tracing::debug!(error = %e, "raft refused a peer message");
                }
            }
            Event::Unreachable(peer) => self.node.report_unreachable(peer),
            Event::SnapshotSent(peer, ok) => self.node.report_snapshot(peer, ok),
            Event::Op {
                op,
                reply,
                deadline,
                forwarded,
            } => self.submit(op, reply, deadline, forwarded),
            Event::Applied(i) => {
                let was = self.shards_applied;
                self.shards_applied = self.shards_applied.max(i);
                // registered and waiting to catch up: heartbeat as soon as caught up
                if let Some(b) = self.node.state_machine().image.broker(self.local) {
                    let epoch = u64::try_from(b.epoch).unwrap_or(u64::MAX);
                    if b.fenced && b.incarnation == self.me.incarnation && was < epoch && i >= epoch
                    {
                        self.next_heartbeat = Instant::now();
                    }
                }
            }
            Event::Stop => return false,
        }
        true
    }

    fn is_ready_leader(&mut self) -> bool {
        if !self.node.is_leader() {
            return false;
        }
        let Some(ready_at) = self.ready_at else {
            return false;
        };
        if self.logic.is_none() {
            if self.node.status().applied < ready_at {
                return false;
            }
            let image = &self.node.state_machine().image;
            self.logic = Some(ControllerLogic::new(
                self.config.clone(),
                image,
                Instant::now(),
            ));
            let mut spec = image.clone();
            tracing::info!(
                node = self.local,
                term = self.node.status().term,
                "active controller"
            );
            if let Some(legacy) = self.legacy.take() {
                if image.topics().next().is_none() {
                    tracing::info!(
                        records = legacy.len(),
                        "importing the metadata log of the single-node release"
                    );
                    let next = self.node.status().last_index + 1;
                    for r in &legacy {
                        spec.apply(next, r);
                    }
                    self.spec = Some(spec);
                    self.propose(
                        legacy,
                        MetadataOpResult::Topics(Vec::new()),
                        None,
                        Instant::now(),
                    );
                    // renamed once that entry committed (a crash before re-imports)
                    self.legacy_index = self.pending.back().map(|p| p.index);
                } else {
                    self.spec = Some(spec);
                    self.legacy_index = Some(0);
                }
            } else {
                self.spec = Some(spec);
            }
        }
        true
    }

    fn on_tick(&mut self, now: Instant) {
        if now >= self.next_commit_persist {
            self.next_commit_persist = now + COMMIT_PERSIST_INTERVAL;
            if let Err(e) = self.node.persist_commit() {
                tracing::warn!(error = %e, "cannot write the metadata commit index");
            }
        }
        // ops waiting for a leader: retry, or give up past their deadline
        for w in std::mem::take(&mut self.waiting) {
            if now >= w.deadline {
                let _ = w.reply.send(failed(
                    ResponseError::RequestTimedOut,
                    "no active controller within the request's timeout (an election is under way or a majority of controllers is down)",
                ));
                continue;
            }
            self.submit(w.op, w.reply, w.deadline, w.forwarded);
        }
        for p in self.pending.iter_mut() {
            if now >= p.deadline {
                if let Some(r) = p.reply.take() {
                    let _ = r.send(failed(
                        ResponseError::RequestTimedOut,
                        "the change did not commit within the request's timeout",
                    ));
                }
            }
        }
        if self.is_ready_leader() {
            let next = self.node.status().last_index + 1;
            // a combined leader assumes every voter is a broker: __consumer_offsets gets
            // min(its RF, voters) replicas; with separate roles it waits for its full RF
            let voters = if self.broker {
                self.voter_count
            } else {
                usize::MAX
            };
            if let (Some(logic), Some(spec)) = (self.logic.as_mut(), self.spec.as_mut()) {
                let records = logic.tick(spec, next, now, voters);
                if !records.is_empty() {
                    self.propose(
                        records,
                        MetadataOpResult::Topics(Vec::new()),
                        None,
                        now + Duration::from_secs(60),
                    );
                }
            }
        }
        self.sync_learner_peers();
        if self.broker && now >= self.next_heartbeat && self.heartbeat_answer.is_none() {
            self.next_heartbeat = now + self.heartbeat_every;
            let (tx, rx) = flume::bounded(1);
            self.heartbeat_answer = Some(rx);
            let hb = BrokerHeartbeat {
                node_id: self.local,
                incarnation: self.me.incarnation.clone(),
                host: self.me.host.clone(),
                port: self.me.port,
                rack: self.me.rack.clone(),
                applied: self.shards_applied,
                controller_addr: self.me.controller_addr.clone(),
                endpoints: self.me.endpoints.clone(),
            };
            self.submit(
                MetadataOp::Heartbeat(hb),
                tx,
                now + self.heartbeat_every.max(Duration::from_millis(500)),
                false,
            );
        }
    }

    fn check_heartbeat_answer(&mut self, now: Instant) {
        let Some(rx) = &self.heartbeat_answer else {
            return;
        };
        match rx.try_recv() {
            Ok((MetadataOpResult::Heartbeat { epoch, fenced }, _)) => {
                self.heartbeat_answer = None;
                // just registered, or caught up already: heartbeat again soon to unfence
                if fenced && self.shards_applied >= u64::try_from(epoch).unwrap_or(u64::MAX) {
                    self.next_heartbeat = now + Duration::from_millis(50);
                }
            }
            Ok((other, _)) => {
                self.heartbeat_answer = None;
                tracing::debug!(answer = ?other, "heartbeat not accepted");
                self.next_heartbeat = self.next_heartbeat.min(now + Duration::from_millis(200));
            }
            Err(flume::TryRecvError::Empty) => {}
            Err(flume::TryRecvError::Disconnected) => self.heartbeat_answer = None,
        }
    }

    /// Runs raft's ready loop: sends messages, hands committed entries to the shards,
    /// answers proposals that committed (or were overwritten), follows leader changes.
    fn drive(&mut self) -> sluice_controller::Result<()> {
        for _ in 0..64 {
            if !self.node.has_ready() {
                break;
            }
            let r = self.node.advance()?;
            if let Some(peers) = self.peers.as_mut() {
                for m in &r.messages {
                    if let Some(peer) = peers.send(m) {
                        self.node.report_unreachable(peer);
                    }
                }
            }
            let mut committed_terms = HashMap::new();
            if let Some(snap) = r.snapshot_restored {
                tracing::info!(
                    index = snap.index,
                    term = snap.term,
                    "metadata image restored from the leader's snapshot"
                );
                let status = self.node.status();
                self.send_to_shards(ToShards::Reset {
                    index: status.applied,
                    records: self.node.state_machine().image.to_records(),
                });
            } else {
                for c in &r.committed {
                    committed_terms.insert(c.index, c.term);
                    if self.replaying {
                        continue;
                    }
                    self.send_to_shards(ToShards::Apply {
                        index: c.index,
                        records: decode_batch(c.index, &c.data),
                    });
                }
            }
            let applied = self.node.status().applied;
            let mut overwritten = false;
            while self.pending.front().is_some_and(|p| p.index <= applied) {
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                let ok = committed_terms.get(&p.index) == Some(&p.term);
                overwritten |= !ok;
                if let Some(reply) = p.reply {
                    let _ = reply.send(if ok {
                        (p.result, p.index)
                    } else {
                        failed(
                            ResponseError::NotController,
                            "leadership changed before the change committed",
                        )
                    });
                }
            }
            if overwritten {
                self.rebuild_spec();
            }
            if self.legacy_index.is_some_and(|i| applied >= i) {
                self.legacy_index = None;
                let to = self.legacy_dir.with_extension("imported");
                // a blocking rename, on the quorum thread (never a shard)
                match std::fs::rename(&self.legacy_dir, &to) {
                    Ok(()) => {
                        tracing::info!(to = %to.display(), "metadata log of the single-node release imported")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot rename the imported metadata log"),
                }
            }
            if let Some(lc) = r.leader {
                self.on_leader_change(lc.leader);
            }
        }
        Ok(())
    }

    fn on_leader_change(&mut self, leader: Option<u64>) {
        let term = self.node.status().term;
        tracing::info!(node = self.local, leader = ?leader, term, "metadata quorum leader");
        self.leader = leader;
        // a new term ends whatever this node decided as a leader before; a leader of this
        // term decides once it has applied everything before its first entry
        if term != self.term || leader != Some(self.local as u64) {
            self.ready_at = None;
            self.logic = None;
            self.spec = None;
            // still in the log: the next leader may commit them, so the outcome is unknown
            // (REQUEST_TIMED_OUT, as Kafka answers a change whose fate it cannot tell)
            for p in self.pending.drain(..) {
                if let Some(r) = p.reply {
                    let _ = r.send(failed(
                        ResponseError::RequestTimedOut,
                        "this node stopped being the active controller before the change committed; it may still take effect",
                    ));
                }
            }
        }
        self.term = term;
        if leader == Some(self.local as u64) && self.ready_at.is_none() {
            self.ready_at = Some(self.node.status().last_index);
        }
        let now = Instant::now();
        for w in std::mem::take(&mut self.waiting) {
            self.submit(w.op, w.reply, w.deadline, w.forwarded);
        }
        // a new leader wants to hear from this broker soon
        self.next_heartbeat = self.next_heartbeat.min(now + Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod legacy_tests;
