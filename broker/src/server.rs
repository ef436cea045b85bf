//! Starts the broker: one pinned glommio executor per shard, a channel mesh between them,
//! shard 0's controller replaying the metadata log, then a SO_REUSEPORT listener on every
//! shard. SIGTERM/SIGINT stop accepting, close every log cleanly and exit.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use sluice_storage::{FlushSync, ShardStorage, ShardStorageOptions};

use crate::config::{BrokerConfig, Pinning};
use crate::conn_limit::{ConnectionLimiter, RateLimitedLog};
use crate::connection::ListenerCtx;
use crate::mesh::Mesh;
use crate::quorum::{Event, QuorumStatus, ToShards};
use crate::router::{spawn_receivers, Envelope, Router};
use crate::shard::ShardCtx;

mod in_service;
pub(crate) use in_service::in_service;
use in_service::wait_until_in_service;

/// Reads or creates `<data_dir>/meta.properties`: the cluster id (configured, or random
/// for a single node) and this node's id. A data dir of another node or cluster is refused.
fn meta_properties(
    data_dir: &Path,
    node_id: i32,
    configured: Option<&str>,
) -> anyhow::Result<String> {
    let path = data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if let Some(id) = field("cluster.id=") {
            if let Some(n) = field("node.id=").and_then(|n| n.parse::<i32>().ok()) {
                if n != node_id {
                    anyhow::bail!(
                        "data dir {} belongs to node {n} (meta.properties), but node.id={node_id}",
                        data_dir.display()
                    );
                }
            }
            if let Some(c) = configured {
                if c != id {
                    anyhow::bail!(
                        "data dir {} belongs to cluster {id:?} (meta.properties), but cluster.id={c:?}",
                        data_dir.display()
                    );
                }
            }
            return Ok(id);
        }
    }
    let id = match configured {
        Some(c) => c.to_string(),
        None => {
            let mut raw = [0u8; 16];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut raw))
                .context("reading /dev/urandom")?;
            raw.iter()
                .map(|b| {
                    const ALPHABET: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    ALPHABET[usize::from(b & 63)] as char
                })
                .take(22)
                .collect()
        }
    };
    let tmp = data_dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("cluster.id={id}\nnode.id={node_id}\nversion=1\n"),
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Takes `<data_dir>/.lock` exclusively for the life of the process, as Kafka locks each log
/// dir: two brokers writing one data dir would corrupt it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data dir {} is in use by another process (lock {})",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Fails if something already listens on `addr`. The shards bind with SO_REUSEPORT, which
/// would otherwise let a second broker silently share the port; a plain bind does not.
/// After a kill -9 the old listener can outlive its process for a moment (the kernel tears
/// down its io_uring, which holds the socket, asynchronously), so a busy port is retried for
/// up to 10 s: a dead broker's socket goes away, a live broker's does not.
fn check_port_free(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut warned = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !warned {
                    tracing::info!(%addr, "address in use; waiting up to 10 s for it to be released");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
}

/// Binds a listener with SO_REUSEADDR (so a restart is not refused by the previous
/// process's TIME_WAIT connections, while `check_port_free` still sees a live listener) and,
/// for the shards' Kafka listeners, SO_REUSEPORT (every shard listens on the address, the
/// kernel spreads connections). The metrics listener is bound without it, so a second
/// process cannot silently share its port.
fn bind_listener(addr: std::net::SocketAddr, reuse_port: bool) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::IntoRawFd;
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(reuse_port)?;
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    let fd = sk.into_raw_fd();
    // SAFETY: `fd` is a bound, listening TCP socket that we own exclusively: into_raw_fd
    // released it from `sk`, so the listener becomes its only owner and closes it once.
    #[allow(unsafe_code)]
    let listener = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok(listener)
}

/// Runs the broker until SIGTERM or SIGINT.
/// The shard threads' placement for `cpuset`. A CPU list must name enough online CPUs for
/// one shard each.
fn placement(config: &BrokerConfig, shards: usize) -> anyhow::Result<PoolPlacement> {
    Ok(match config.pinning() {
        Pinning::Spread => PoolPlacement::MaxSpread(shards, None),
        Pinning::Unpinned => PoolPlacement::Unbound(shards),
        Pinning::Cpus(cpus) => {
            let set = glommio::CpuSet::online()
                .map_err(|e| anyhow::anyhow!("reading the online CPUs: {e}"))?
                .filter(|l| cpus.contains(&l.cpu));
            let online = set.len();
            if online < shards {
                anyhow::bail!(
                    "cpuset {cpus:?} has {online} online CPUs for {shards} shards (set cores or cpuset)"
                );
            }
            PoolPlacement::MaxSpread(shards, Some(set))
        }
    })
}

pub fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let quorum = config.quorum()?;
    config.check_storage()?;
    let listeners = config.listeners()?;
    if quorum.broker {
        for l in &listeners.all {
            check_port_free(l.bind)?;
        }
    }
    let tls = if listeners.any_tls() && quorum.broker {
        let tls = crate::tls::TlsConfig::load(&config).context("TLS listeners")?;
        crate::tls::reload_on_sighup(tls.clone(), config.clone())?;
        Some(tls)
    } else {
        None
    };
    let bootstrap_users = crate::metadata::bootstrap_users::read(&data_dir)?;
    let peer_security = Arc::new(if quorum.broker {
        crate::peer::PeerSecurity::from_config(&config)?
    } else {
        crate::peer::PeerSecurity::default()
    });
    let listener_ctxs: Arc<Vec<Arc<ListenerCtx>>> = Arc::new(
        listeners
            .all
            .iter()
            .map(|l| {
                Arc::new(ListenerCtx {
                    listener: l.clone(),
                    tls: l.protocol.tls().then(|| tls.clone()).flatten(),
                })
            })
            .collect(),
    );
    let cluster = meta_properties(&data_dir, quorum.node, quorum.cluster_id.as_deref())?;
    // every shard's write-ahead journal (storage.flush.sync=journal) into its segments
    // before any shard opens a log: a changed `cores` moves partitions between shards
    let replayed = sluice_storage::replay_journals(&data_dir).with_context(|| {
        format!(
            "replaying the storage journals in {}",
            data_dir.join(sluice_storage::JOURNAL_DIR).display()
        )
    })?;
    if replayed.files > 0 {
        tracing::info!(
            journals = replayed.files,
            record_sets = replayed.record_sets,
            entries = replayed.entries,
            bytes = replayed.bytes,
            skipped = replayed.skipped,
            "replayed storage journals"
        );
    }
    {
        // logs deleted before a crash or stop: finish removing them, off the start path
        let data_dir = data_dir.clone();
        std::thread::Builder::new()
            .name("sluice-cleanup".into())
            .spawn(
                move || match sluice_storage::remove_deleted_dirs(&data_dir) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dirs = n, "removed logs deleted before this start"),
                    Err(e) => tracing::warn!(error = %e, "removing logs deleted before this start"),
                },
            )
            .context("starting the cleanup thread")?;
    }
    match sluice_storage::raise_fd_limit() {
        Ok(n) => tracing::info!(nofile = n, "raised RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "could not raise RLIMIT_NOFILE"),
    }
    // SIGTERM / SIGINT wakes the thread blocked on `signals` (it never polls); the shards
    // stop once `stop` is set, after a controlled shutdown moved this broker's leaderships
    // away (see `controlled_shutdown`)
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handler")?;
    let stop = Arc::new(AtomicBool::new(false));
    let shards = config.cores();
    let nofile = sluice_storage::fd_limit().unwrap_or(1024);
    let max_conns = (config.int("max.connections") as u64)
        .min(nofile / 2)
        .max(1) as usize;
    let limiter = ConnectionLimiter::new(max_conns, config.int("max.connections.per.ip") as usize);
    tracing::info!(
        max_connections = max_conns,
        nofile,
        "connection limit (max.connections, at most half the open-file limit)"
    );
    tracing::info!(
        listeners = %config.str_value("listeners"),
        data_dir = %data_dir.display(),
        shards,
        cluster_id = %cluster,
        "starting sluice"
    );
    let handle = crate::quorum::start(&config, &quorum, &cluster)?;
    if !quorum.broker {
        // a controller-only node: the quorum thread and its listener, no shards; its own
        // small metrics endpoint (the quorum's families, /health, /ready)
        tracing::info!(node = quorum.node, "controller-only node running");
        let endpoint = match config.metrics_listen() {
            Some(addr) => {
                match crate::metrics::controller_http::spawn(
                    addr,
                    handle.status.clone(),
                    stop.clone(),
                ) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        tracing::error!(%addr, error = %e, "cannot listen for metrics.listen: serving without the metrics endpoint");
                        None
                    }
                }
            }
            None => None,
        };
        let _ = signals.forever().next();
        stop.store(true, Ordering::Relaxed);
        if let Some(t) = endpoint {
            let _ = t.join();
        }
        handle.stop();
        tracing::info!("clean shutdown complete");
        return Ok(());
    }
    let (events, to_shards, incarnation, status) = (
        handle.events.clone(),
        handle.to_shards.clone(),
        handle.incarnation.clone(),
        handle.status.clone(),
    );
    {
        let (stop, events) = (stop.clone(), events.clone());
        let incarnation = incarnation.clone();
        let enabled = config.flag("controlled.shutdown.enable") && !quorum.voters.is_empty();
        let bound = Duration::from_millis(config.int("broker.session.timeout.ms") as u64);
        let node = quorum.node;
        std::thread::Builder::new()
            .name("sluice-shutdown".into())
            .spawn(move || {
                let _ = signals.forever().next();
                if enabled {
                    controlled_shutdown(&events, node, incarnation, bound);
                }
                stop.store(true, Ordering::Relaxed);
            })
            .context("starting the shutdown thread")?;
    }
    let mesh = Mesh::<Envelope>::new(shards, 4096);
    // each shard's own pool of blocking helpers, not pinned: they sleep in fsync
    let helpers = config.int("storage.blocking.threads") as usize;
    let results = LocalExecutorPoolBuilder::new(placement(&config, shards)?)
        .name("sluice-shard")
        .io_memory(2 << 20)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(helpers))
        .on_all_shards(move || {
            let config = config.clone();
            let stop = stop.clone();
            let cluster = cluster.clone();
            let mesh = mesh.clone();
            let net = Net {
                limiter: limiter.clone(),
                listeners: listener_ctxs.clone(),
                bootstrap_users: bootstrap_users.clone(),
                peer_security: peer_security.clone(),
            };
            let quorum = (
                events.clone(),
                to_shards.clone(),
                incarnation.clone(),
                status.clone(),
            );
            async move { shard_main(config, cluster, mesh, stop, shards, net, quorum).await }
        })
        .map_err(|e| anyhow::anyhow!("starting shard executors: {e}"))?
        .join_all();
    handle.stop();
    let mut failed = None;
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(anyhow::anyhow!("shard thread failed: {e:?}")),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("clean shutdown complete");
            Ok(())
        }
    }
}

async fn shard_main(
    config: BrokerConfig,
    cluster: String,
    mesh: Arc<Mesh<Envelope>>,
    stop: Arc<AtomicBool>,
    shards: usize,
    net: Net,
    quorum: (
        flume::Sender<Event>,
        flume::Receiver<ToShards>,
        Vec<u8>,
        Arc<QuorumStatus>,
    ),
) -> anyhow::Result<()> {
    let storage = ShardStorage::start(ShardStorageOptions {
        cache_bytes: config.int("storage.cache.bytes") as usize,
        readahead_bytes: config.int("storage.readahead.bytes") as usize,
        max_open_files: config.int("storage.max.open.files") as usize,
        retention_check_interval: Duration::from_millis(
            config.int("log.retention.check.interval.ms") as u64,
        ),
        cleaner_enabled: config.flag("log.cleaner.enable"),
        cleaner_dedupe_buffer_bytes: config.int("log.cleaner.dedupe.buffer.size") as usize,
        cleaner_backoff: Duration::from_millis(config.int("log.cleaner.backoff.ms") as u64),
        cleaner_io_bytes_per_sec: config.int("log.cleaner.io.max.bytes.per.second") as u64,
        cleaner_io_buffer_bytes: config.int("log.cleaner.io.buffer.size") as usize,
        flush_sync: FlushSync::parse(&config.config_value("storage.flush.sync"))
            .unwrap_or(FlushSync::Segment), // ok: validated on set
        journal_dir: Some(config.data_dir()),
        journal_shard: glommio::executor().id() as u32,
        journal_bytes: config.int("storage.journal.bytes") as u64,
        journal_behind_bytes: config.int("storage.journal.behind.max.bytes") as usize,
        journal_min_logs: config.int("storage.journal.min.partitions") as usize,
        ..ShardStorageOptions::default()
    });
    // Watches the stop flag from the start, every beat. The timer is also a heartbeat:
    // glommio 0.9 can miss waking a sleeping shard when another shard queues a message for
    // it (a start hung in about 1 of 1,200: both shards asleep, a mesh message unread).
    // Every pass of the reactor checks the channels, so a missed wake-up costs at most one
    // beat. While no other task runs between two beats the period doubles, up to
    // IDLE_BEAT: each wake-up of a parked shard costs ~0.1 ms of CPU here (io_uring
    // submissions, the context switch), so 100 a second were ~1 % of a core for a broker
    // doing nothing. Any other task puts it back to 10 ms, so a busy shard's bound stays
    // 10 ms and an idle one's is 50 ms. Its lateness is the shard's task-queue lag metric.
    let stopping = Rc::new(sluice_storage::Signal::default());
    let stopped = Rc::new(std::cell::Cell::new(false));
    let metrics = Rc::new(crate::metrics::ShardMetrics::default());
    {
        let (stopping, stopped, metrics) = (stopping.clone(), stopped.clone(), metrics.clone());
        glommio::spawn_local(async move {
            const BEAT: Duration = Duration::from_millis(10);
            const IDLE_BEAT: Duration = Duration::from_millis(50);
            let mut beat = BEAT;
            let mut tasks = metrics.tasks_executed();
            while !stop.load(Ordering::Relaxed) {
                let due = std::time::Instant::now() + beat;
                glommio::timer::sleep(beat).await;
                metrics.heartbeat_lag(std::time::Instant::now().saturating_duration_since(due));
                // one task run since the last beat is this loop's own previous one
                let now = metrics.tasks_executed();
                beat = if now.saturating_sub(tasks) <= 1 {
                    (beat * 2).min(IDLE_BEAT)
                } else {
                    BEAT
                };
                tasks = now;
            }
            stopped.set(true);
            stopping.notify();
        })
        .detach();
    }
    let links = mesh
        .claim()
        .ok_or_else(|| anyhow::anyhow!("more shard threads than shards"))?
        .connect()
        .await;
    drop(mesh);
    tracing::info!(shard = links.id, "connected to the other shards");
    let router = Rc::new(Router::new(links.id, links.senders));
    let ctx = Rc::new(ShardCtx::new(
        config.clone(),
        cluster,
        storage,
        router.clone(),
        shards,
        metrics,
        net.peer_security.clone(),
    ));
    ctx.load_hw_checkpoint().await;
    {
        let ctx = ctx.clone();
        spawn_receivers(links.receivers, router, move |req| ctx.start(req));
    }
    // shard 0 serves the metrics endpoint from here on: /ready says when the broker is in
    // service, /metrics works during the start too
    let metrics_endpoint = match (ctx.id, config.metrics_listen()) {
        (0, Some(addr)) => match bind_listener(addr, false) {
            Ok(listener) => Some(crate::metrics::http::spawn(
                ctx.clone(),
                listener,
                addr,
                quorum.2.clone(),
                quorum.3.clone(),
            )?),
            Err(e) => {
                // the broker serves without it; a probe of the endpoint reports the failure
                tracing::error!(%addr, error = %e, "cannot listen for metrics.listen: serving without the metrics endpoint");
                None
            }
        },
        _ => None,
    };
    if ctx.id == 0 {
        let _ = ctx.quorum.set(quorum.0.clone());
        glommio::spawn_local(follow_metadata(ctx.clone(), quorum.0, quorum.1)).detach();
        wait_until_in_service(&ctx, &config, &quorum.2, &stopped).await;
        if let Some(op) = net.bootstrap_users.clone() {
            apply_bootstrap_users(&ctx, op, config.data_dir()).await;
        }
        for s in 0..shards {
            ctx.call(s, crate::shard_msg::ShardRequest::StartServing)
                .await;
        }
    }
    while !ctx.ready.get() {
        ctx.ready_notify.wait().await;
    }
    {
        let ctx = ctx.clone();
        let every = Duration::from_millis(config.int("offsets.retention.check.interval.ms") as u64);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                ctx.expire_offsets().await;
            }
        })
        .detach();
    }
    let mut sockets = Vec::new();
    for l in net.listeners.iter() {
        let socket = bind_listener(l.listener.bind, true)
            .with_context(|| format!("binding {} ({})", l.listener.bind, l.listener.name))?;
        tracing::info!(shard = ctx.id, listener = %l.listener.name, protocol = l.listener.protocol.name(), addr = %l.listener.bind, "listening");
        sockets.push((socket, l.clone()));
    }
    glommio::spawn_local(ctx.clone().shrink_lagging_isrs()).detach();
    glommio::spawn_local(ctx.clone().checkpoint_hws()).detach();
    glommio::spawn_local(crate::admission::Admission::run(Rc::downgrade(
        &ctx.admission,
    )))
    .detach();
    glommio::spawn_local(crate::watchdog::Watchdog::run(
        Rc::downgrade(&ctx.watchdog),
        ctx.id,
    ))
    .detach();
    let accepts: Vec<_> = sockets
        .into_iter()
        .map(|(socket, l)| {
            glommio::spawn_local(accept_loop(ctx.clone(), socket, l, net.limiter.clone())).detach()
        })
        .collect();
    while !stopped.get() {
        stopping.wait().await;
    }
    for accept in accepts {
        accept.cancel();
    }
    if let Some(endpoint) = metrics_endpoint {
        endpoint.cancel();
    }
    tracing::info!(shard = ctx.id, "shutting down");
    ctx.shutdown().await;
    Ok(())
}

/// Asks the active controller to move this broker's leaderships to other in-sync replicas
/// and keep it fenced, waiting at most `bound`, so clients move before the broker stops
/// answering (Kafka's controlled shutdown). Shards keep serving meanwhile.
fn controlled_shutdown(
    events: &flume::Sender<Event>,
    node: i32,
    incarnation: Vec<u8>,
    bound: Duration,
) {
    tracing::info!(
        node,
        "controlled shutdown: asking the controller to move leaderships"
    );
    let (tx, rx) = flume::bounded(1);
    let op = crate::metadata::controller::MetadataOp::ControlledShutdown {
        node_id: node,
        incarnation,
    };
    let sent = events.send(Event::Op {
        op,
        reply: tx,
        deadline: std::time::Instant::now() + bound,
        forwarded: false,
    });
    if sent.is_err() {
        return;
    }
    match rx.recv_timeout(bound + Duration::from_millis(500)) {
        Ok((crate::metadata::controller::MetadataOpResult::Heartbeat { .. }, index)) => {
            tracing::info!(node, index, "controlled shutdown: leaderships moved")
        }
        Ok((other, _)) => {
            tracing::warn!(node, answer = ?other, "controlled shutdown not done; stopping anyway")
        }
        Err(_) => tracing::warn!(
            node,
            "controlled shutdown: no answer in time; stopping anyway"
        ),
    }
}

/// Shard 0: applies what the quorum thread commits on every shard, in order, and tells it
/// how far this node's shards have applied.
async fn follow_metadata(
    ctx: Rc<ShardCtx>,
    events: flume::Sender<Event>,
    from_quorum: flume::Receiver<ToShards>,
) {
    use crate::shard_msg::ShardRequest;
    while let Ok(msg) = from_quorum.recv_async().await {
        let index = match msg {
            ToShards::Reset { index, records } => {
                ctx.broadcast(|| ShardRequest::Reset {
                    index,
                    records: records.clone(),
                })
                .await;
                tracing::info!(
                    index,
                    records = records.len(),
                    "metadata image loaded on every shard"
                );
                index
            }
            ToShards::Apply { index, records } => {
                ctx.broadcast(|| ShardRequest::Apply {
                    index,
                    records: records.clone(),
                })
                .await;
                index
            }
        };
        ctx.metadata_applied
            .set(ctx.metadata_applied.get().max(index));
        ctx.metadata_progress.notify();
        let _ = events.send(Event::Applied(index));
    }
}

/// Accepts connections on this shard's listener, within the broker's connection limits.
/// Puts the users of `sluice user add` into the metadata log (unless present) before the
/// broker serves; the file is then kept as `.applied`. A failure is logged and the broker
/// serves anyway (the file stays for the next start).
async fn apply_bootstrap_users(
    ctx: &Rc<ShardCtx>,
    op: crate::metadata::security_ops::SecurityOp,
    data_dir: std::path::PathBuf,
) {
    use crate::metadata::controller::MetadataOp;
    let users = op.scram_upserts.len();
    let bound = Some(Duration::from_secs(30));
    match crate::handlers::admin::controller_answer(ctx, MetadataOp::Security(op), bound).await {
        Ok(_) => {
            tracing::info!(users, "bootstrap SCRAM users are in the metadata log");
            // a rename, off the shard
            let _ = std::thread::Builder::new()
                .name("sluice-bootstrap".into())
                .spawn(move || {
                    if let Err(e) = crate::metadata::bootstrap_users::mark_applied(&data_dir) {
                        tracing::warn!(error = %format!("{e:#}"), "bootstrap users applied; keeping the file failed");
                    }
                });
        }
        Err((code, msg)) => tracing::error!(
            code,
            %msg,
            "bootstrap SCRAM users not applied; they are retried at the next start"
        ),
    }
}

/// What every shard needs to accept connections: the process-wide connection limiter and
/// the listeners.
struct Net {
    limiter: Arc<ConnectionLimiter>,
    listeners: Arc<Vec<Arc<ListenerCtx>>>,
    /// SCRAM users of `sluice user add`, applied by shard 0 before serving.
    bootstrap_users: Option<crate::metadata::security_ops::SecurityOp>,
    peer_security: Arc<crate::peer::PeerSecurity>,
}

async fn accept_loop(
    ctx: Rc<ShardCtx>,
    listener: TcpListener,
    on: Arc<ListenerCtx>,
    limiter: Arc<ConnectionLimiter>,
) {
    let mut refused_log = RateLimitedLog::new();
    let mut failed_log = RateLimitedLog::new();
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if let Some(n) = failed_log.hit() {
                    tracing::warn!(error = %e, count = n, shard = ctx.id, "accept failed");
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let admitted = match limiter.admit(ip) {
            Ok(a) => a,
            Err(why) => {
                if let Some(n) = refused_log.hit() {
                    tracing::warn!(%ip, limit = ?why, count = n, open = limiter.open(), shard = ctx.id, "connection refused: limit reached");
                }
                drop(stream);
                continue;
            }
        };
        let id = ctx.next_conn.get();
        ctx.next_conn.set(id + 1);
        let peer = peer.map_or_else(|| "?".to_string(), |a| a.to_string());
        let (ctx, on) = (ctx.clone(), on.clone());
        glommio::spawn_local(async move {
            crate::connection::serve(ctx, stream, id, peer, on).await;
            drop(admitted);
        })
        .detach();
    }
}
