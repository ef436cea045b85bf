//! One chaos run, start to verdict:
//!
//! ```text
//!  cluster up ─► topics ─► meta line ─► workloads ─► schedule of faults (inject, hold,
//!  heal, quiet; crashes noted and restarted) ─► heal everything ─► workloads run on healed
//!  cluster ─► stop producers, consumers ─► settle (full ISRs) ─► final read-back ─► the
//!  consume-transform-produce workers catch up with it and stop ─► their group's committed
//!  offsets and output read back ─► the transactional topic's read-backs (read_committed,
//!  read_uncommitted) ─► checker ─► report
//! ```
//!
//! Invariants: every phase is bounded; the cluster (processes, proxies, tmpfs) is torn down
//! by `Cluster`'s drop on every path; a failing run keeps its directory (node logs and
//! data) and its history; a passing one keeps the history and removes the node
//! directories unless asked to keep them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::checker;
use crate::cluster::{Cluster, ClusterConfig};
use crate::ctp_workload;
use crate::history::{self, HistoryWriter, Kind, Meta, Phase, HEALED};
use crate::nemesis::{self, Active, Group};
use crate::report::Report;
use crate::txn_workload::{self, TXN_CLEANUP_INTERVAL_MS};
use crate::workload::{self, WorkloadConfig, Workloads};

/// Size of the disk node's tmpfs.
const TMPFS_MIB: u64 = 192;
/// Bounds of the phases.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for the consume-transform-produce workers to consume the whole input at the end.
const CTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the workloads keep going on the healed cluster before they stop.
const AFTER_HEAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub brokers: u32,
    pub duration: Duration,
    pub seed: u64,
    pub nemesis: Vec<Group>,
    pub report: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub bin: PathBuf,
    pub partitions: i32,
    pub producers: usize,
    pub rate: u64,
    /// Transactional producers (0: no transactional workload).
    pub txn_producers: usize,
    /// Consume-transform-produce workers (0: none).
    pub ctp_workers: usize,
    /// `--kill-cycles`: this many fast kill -9 cycles instead of the schedule (`duration`
    /// is then not used).
    pub kill_cycles: Option<u32>,
    pub cores: u32,
    pub keep: bool,
}

impl RunConfig {
    /// The command line that replays this run.
    pub fn replay(&self) -> String {
        let kinds: Vec<&str> = self.nemesis.iter().map(|g| g.name()).collect();
        let what = match self.kill_cycles {
            Some(n) => format!("--kill-cycles {n}"),
            None => format!(
                "--duration {}s --nemesis {}",
                self.duration.as_secs(),
                if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(",")
                }
            ),
        };
        format!(
            "sluice-chaos --brokers {} {what} --seed {} --partitions {} --producers {} --rate {} --txn-producers {} --ctp-workers {}",
            self.brokers,
            self.seed,
            self.partitions,
            self.producers,
            self.rate,
            self.txn_producers,
            self.ctp_workers
        )
    }
}

/// Set by SIGINT/SIGTERM: the schedule ends early, the run heals and checks as usual.
pub fn interrupted() -> &'static AtomicBool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    &FLAG
}

/// Runs the chaos test; returns its report (already printed and written).
pub fn run(mut cfg: RunConfig) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        eprintln!("sluice-chaos: interrupted; ending the schedule, healing and checking");
        interrupted().store(true, Ordering::Relaxed);
    });

    let workdir = match &cfg.workdir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("sluice-chaos-{}-{}", cfg.seed, std::process::id()))
        }
    };
    std::fs::create_dir_all(&workdir)?;
    let history_path = cfg
        .history
        .clone()
        .unwrap_or_else(|| workdir.join("history.jsonl"));
    let hist = Arc::new(HistoryWriter::create(&history_path)?);
    println!("sluice-chaos: seed {} in {}", cfg.seed, workdir.display());

    // the disk nemesis needs a tmpfs; without one it is left out, said out loud
    let mut cluster_cfg = ClusterConfig {
        brokers: cfg.brokers,
        bin: cfg.bin.clone(),
        dir: workdir.join("cluster"),
        cores: cfg.cores,
        settings: broker_settings(cfg.brokers),
        tmpfs: cfg
            .nemesis
            .contains(&Group::Disk)
            .then_some((cfg.brokers, TMPFS_MIB)),
    };
    let mut cluster = match Cluster::new(cluster_cfg.clone(), rt.handle().clone()) {
        Ok(c) => c,
        Err(e) if cluster_cfg.tmpfs.is_some() => {
            let why = format!("disk nemesis skipped: {e:#}");
            println!("sluice-chaos: {why}");
            hist.write(&hist.entry(Kind::Info, Phase::Info).detail(why));
            cfg.nemesis.retain(|g| *g != Group::Disk);
            cluster_cfg.tmpfs = None;
            Cluster::new(cluster_cfg, rt.handle().clone())?
        }
        Err(e) => return Err(e),
    };

    let topic = "chaos".to_string();
    let txn_topic = "chaos-txn".to_string();
    let ctp_topic = "chaos-ctp-out".to_string();
    let with_txn = cfg.txn_producers > 0;
    let with_ctp = cfg.ctp_workers > 0;
    // every transactional id of the workloads: the coordinator faults aim at their nodes
    let txn_ids: Vec<String> = (0..cfg.txn_producers)
        .map(|n| format!("chaos-txn-{n}"))
        .chain((0..cfg.ctp_workers).map(|n| format!("chaos-ctp-{n}")))
        .collect();
    let faults = nemesis::available(&cfg.nemesis, cfg.brokers, !txn_ids.is_empty());
    let steps = match cfg.kill_cycles {
        Some(n) => nemesis::kill_cycles(cfg.seed, n),
        None => nemesis::schedule(cfg.seed, &faults, cfg.duration),
    };
    let meta = Meta {
        seed: cfg.seed,
        brokers: cfg.brokers,
        topic: topic.clone(),
        partitions: cfg.partitions,
        duration_ms: match cfg.kill_cycles {
            // the cycles' own holds and quiet times (restarts come on top)
            Some(_) => steps
                .iter()
                .map(|s| (s.hold + s.quiet).as_millis() as u64)
                .sum(),
            None => cfg.duration.as_millis() as u64,
        },
        nemesis: cfg.nemesis.iter().map(|g| g.name().to_string()).collect(),
        replay: cfg.replay(),
        schedule: steps.iter().map(|s| s.describe()).collect(),
        broker_binary: describe_binary(&cfg.bin),
        txn_topic: with_txn.then(|| txn_topic.clone()),
        ctp_topic: with_ctp.then(|| ctp_topic.clone()),
    };
    println!("sluice-chaos: broker binary {}", meta.broker_binary);
    hist.write(
        &hist
            .entry(Kind::Meta, Phase::Info)
            .detail(serde_json::to_string(&meta)?),
    );

    cluster
        .start_all(START_TIMEOUT)
        .context("starting the cluster")?;
    create_topic(&cluster, &topic, cfg.partitions, &rt).context("creating the topic")?;
    wait_settled(&cluster, &topic, cfg.partitions, SETTLE_TIMEOUT)
        .context("waiting for the new topic's leaders and ISRs")?;
    if with_txn {
        create_topic(&cluster, &txn_topic, cfg.partitions, &rt)
            .context("creating the transactional topic")?;
        wait_settled(&cluster, &txn_topic, cfg.partitions, SETTLE_TIMEOUT)
            .context("waiting for the transactional topic's leaders and ISRs")?;
    }
    if with_ctp {
        create_topic(&cluster, &ctp_topic, cfg.partitions, &rt)
            .context("creating the consume-transform-produce output topic")?;
        wait_settled(&cluster, &ctp_topic, cfg.partitions, SETTLE_TIMEOUT)
            .context("waiting for the output topic's leaders and ISRs")?;
    }
    let plan = match cfg.kill_cycles {
        Some(n) => format!("{n} kill -9 cycle(s)"),
        None => format!("{} fault step(s) over {:?}", steps.len(), cfg.duration),
    };
    println!(
        "sluice-chaos: {} broker(s) up at {}; {plan}",
        cfg.brokers,
        cluster.bootstrap(),
    );

    let wcfg = WorkloadConfig {
        bootstrap: cluster.bootstrap(),
        topic: topic.clone(),
        partitions: cfg.partitions,
        producers: cfg.producers,
        rate: cfg.rate,
        group_members: 2,
        group: "chaos-group".into(),
        txn_producers: cfg.txn_producers,
        txn_topic: txn_topic.clone(),
        seed: cfg.seed,
        ctp_workers: cfg.ctp_workers,
        ctp_topic: ctp_topic.clone(),
    };
    let mut work = Workloads::start(&wcfg, hist.clone(), rt.handle().clone())?;

    // the schedule
    let run_started = Instant::now();
    let run_deadline = run_started + cfg.duration;
    watch(&mut cluster, &hist, Duration::from_secs(3));
    for step in &steps {
        // kill cycles run to their count; a schedule to its duration
        let late = cfg.kill_cycles.is_none() && Instant::now() >= run_deadline;
        if interrupted().load(Ordering::Relaxed) || late {
            break;
        }
        let name = step.fault.name();
        let injected = nemesis::inject(&mut cluster, step, &topic, cfg.partitions, &txn_ids, &hist);
        let (what, active) = match injected {
            Ok(x) => x,
            Err(e) => (format!("injecting failed: {e:#}"), Active::Nothing),
        };
        println!(
            "[{:>6.1}s] {name}: {what}",
            run_started.elapsed().as_secs_f64()
        );
        hist.write(
            &hist
                .entry(Kind::Nemesis, Phase::Invoke)
                .fault(name)
                .detail(format!("{what}; links: {}", cluster.links.describe())),
        );
        watch(&mut cluster, &hist, step.hold);
        let healed = active.heal(&mut cluster);
        let healed = match healed {
            Ok(s) => s,
            Err(e) => format!("healing failed: {e:#}"),
        };
        hist.write(
            &hist
                .entry(Kind::Nemesis, Phase::Ok)
                .fault(name)
                .detail(healed.clone()),
        );
        println!(
            "[{:>6.1}s] {name} healed: {healed}",
            run_started.elapsed().as_secs_f64()
        );
        watch(&mut cluster, &hist, step.quiet);
    }

    // heal everything, bring every node back, let the workloads see the healed cluster
    cluster.heal_everything();
    for id in cluster.ids() {
        if !cluster.is_running(id) {
            let _ = cluster.spawn(id);
        }
    }
    let all: Vec<i32> = cluster.ids().iter().map(|i| *i as i32).collect();
    for id in cluster.ids() {
        if let Err(e) = cluster.wait_ready(id, &all, nemesis::RESTART_READY) {
            note(&hist, format!("after healing: {e:#}"));
        }
    }
    hist.write(&hist.entry(Kind::Info, Phase::Info).detail(HEALED));
    watch(&mut cluster, &hist, AFTER_HEAL);
    work.stop_producers();
    watch(&mut cluster, &hist, Duration::from_secs(2));
    work.stop_consumers();

    if let Err(e) = wait_settled(&cluster, &topic, cfg.partitions, SETTLE_TIMEOUT) {
        note(&hist, format!("not settled before the final read: {e:#}"));
    }
    let ends = match workload::final_read(&wcfg, &hist, FINAL_READ_TIMEOUT) {
        Ok(ends) => Some(ends),
        Err(e) => {
            note(&hist, format!("final read: {e:#}"));
            None
        }
    };
    if with_ctp {
        // the workers consume the whole input (its final ends), then stop
        let drained = match &ends {
            Some(ends) => work.drain_and_stop_ctp(ends, CTP_DRAIN_TIMEOUT),
            None => work.drain_and_stop_ctp(&Default::default(), Duration::ZERO),
        };
        if !drained {
            note(
                &hist,
                format!("the consume-transform-produce workers did not catch up with the input within {CTP_DRAIN_TIMEOUT:?}"),
            );
        }
        if let Err(e) = wait_settled(&cluster, &ctp_topic, cfg.partitions, SETTLE_TIMEOUT) {
            note(&hist, format!("output topic not settled: {e:#}"));
        }
        if let Err(e) = ctp_workload::final_read_ctp(&wcfg, &hist, FINAL_READ_TIMEOUT) {
            note(&hist, format!("final read of {ctp_topic}: {e:#}"));
        }
    }
    if with_txn {
        if let Err(e) = wait_settled(&cluster, &txn_topic, cfg.partitions, SETTLE_TIMEOUT) {
            note(&hist, format!("transactional topic not settled: {e:#}"));
        }
        if let Err(e) = txn_workload::final_read_txn(&wcfg, &hist, FINAL_READ_TIMEOUT) {
            note(&hist, format!("final read of {txn_topic}: {e:#}"));
        }
    }
    // a broker that died during the final phase is a crash too
    watch(&mut cluster, &hist, Duration::ZERO);
    hist.flush()?;
    drop(work);

    let stats = cluster.proxy_stats();
    let proxy_note = format!(
        "proxies: {} connections accepted, {} refused or cut, {} of unknown source (counted as clients)",
        stats.accepted.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.unknown_source.load(Ordering::Relaxed)
    );
    drop(cluster);

    let (entries, torn) = history::read(&history_path)?;
    let mut verdict = checker::check(&entries);
    verdict.notes.extend(torn);
    verdict.notes.push(proxy_note);
    let report = Report::new(verdict, &history_path, Some(&meta));
    println!("{}", report.text());
    println!(
        "sluice-chaos: done {:.0}s after the workloads started",
        run_started.elapsed().as_secs_f64()
    );
    if let Some(path) = &cfg.report {
        report.write_json(path)?;
    }
    if report.passed() && !cfg.keep {
        // the history stays (the report names it); node data and logs go
        let _ = std::fs::remove_dir_all(workdir.join("cluster"));
    } else if !report.passed() {
        println!(
            "sluice-chaos: kept {} (node logs and data) and the history for replay",
            workdir.display()
        );
    }
    Ok(report)
}

/// Checks a saved history alone.
pub fn check_file(path: &Path) -> Result<Report> {
    let (entries, torn) = history::read(path)?;
    let meta: Option<Meta> = entries
        .iter()
        .find(|e| e.kind == Kind::Meta)
        .and_then(|e| serde_json::from_str(e.detail.as_deref()?).ok());
    let mut verdict = checker::check(&entries);
    verdict.notes.extend(torn);
    Ok(Report::new(verdict, path, meta.as_ref()))
}

fn note(hist: &HistoryWriter, detail: String) {
    println!("sluice-chaos: {detail}");
    hist.write(&hist.entry(Kind::Info, Phase::Info).detail(detail));
}

/// Settings every broker gets (after node id, voters, listeners and cluster id).
fn broker_settings(brokers: u32) -> Vec<(String, String)> {
    let rf = brokers.min(3);
    let s = |k: &str, v: String| (k.to_string(), v);
    vec![
        s("broker.session.timeout.ms", "2000".into()),
        s("broker.heartbeat.interval.ms", "300".into()),
        s("controller.quorum.election.timeout.ms", "500".into()),
        s(
            "min.insync.replicas",
            if rf >= 3 { "2" } else { "1" }.into(),
        ),
        s("default.replication.factor", rf.to_string()),
        s("offsets.topic.replication.factor", rf.to_string()),
        s("offsets.topic.num.partitions", "5".into()),
        s("replica.lag.time.max.ms", "5000".into()),
        s("group.initial.rebalance.delay.ms", "0".into()),
        s("auto.create.topics.enable", "false".into()),
        s("storage.cache.bytes", (16u64 << 20).to_string()),
        s("storage.readahead.bytes", (4u64 << 20).to_string()),
        s("log.segment.bytes", (4u64 << 20).to_string()),
        s("transaction.state.log.num.partitions", "3".into()),
        s("transaction.state.log.replication.factor", rf.to_string()),
        s(
            "transaction.state.log.min.isr",
            if rf >= 3 { "2" } else { "1" }.into(),
        ),
        s(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            TXN_CLEANUP_INTERVAL_MS.to_string(),
        ),
    ]
}

/// Waits `d`, noting (as `crash` lines) any broker that exits on its own meanwhile and
/// starting it again so the run goes on.
fn watch(cluster: &mut Cluster, hist: &HistoryWriter, d: Duration) {
    let until = Instant::now() + d;
    loop {
        for (id, status) in cluster.take_exits() {
            let detail = format!(
                "node {id} exited on its own ({status}); its log ends:\n{}",
                cluster.log_tail(id, 15)
            );
            println!("sluice-chaos: CRASH {detail}");
            hist.write(&hist.entry(Kind::Crash, Phase::Info).detail(detail));
            if !cluster.is_running(id) {
                if let Err(e) = cluster.spawn(id) {
                    note(hist, format!("restarting node {id}: {e:#}"));
                }
            }
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(200).min(until - Instant::now()));
    }
}

fn create_topic(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        workload::client_config(&cluster.bootstrap()).create()?;
    let rf = cluster.brokers().min(3) as i32;
    let min_isr = if rf >= 3 { "2" } else { "1" };
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf))
        .set("min.insync.replicas", min_isr);
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(12)));
    let deadline = Instant::now() + TOPIC_TIMEOUT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let res = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), admin.create_topics([&new], &opts)).await
        });
        let err = match res {
            Ok(Ok(r)) => match r.into_iter().next() {
                Some(Ok(_)) => return Ok(()),
                Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)))
                    if attempts > 1 =>
                {
                    return Ok(())
                }
                Some(Err((_, code))) => format!("{code:?}"),
                None => "empty answer".into(),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 15 s".into(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("creating {topic}: {err} (after {attempts} attempts)");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until every partition of `topic` has a leader and a full ISR, as some live broker
/// sees it.
fn wait_settled(cluster: &Cluster, topic: &str, partitions: i32, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let last = match cluster.any_metadata(topic) {
            Ok((from, v)) => {
                let bad: Vec<String> = (0..partitions)
                    .filter_map(|p| match v.partitions.get(&p) {
                        None => Some(format!("{p}: missing")),
                        Some(pv) if pv.leader < 0 || pv.isr.len() < pv.replicas.len() => {
                            Some(format!(
                                "{p}: leader {} isr {:?} of {:?}",
                                pv.leader, pv.isr, pv.replicas
                            ))
                        }
                        Some(_) => None,
                    })
                    .collect();
                if bad.is_empty() {
                    return Ok(());
                }
                format!("node {from} says {}", bad.join("; "))
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("not settled after {within:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Path, size and modification time (seconds since the epoch) of the broker binary.
fn describe_binary(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            format!(
                "{} ({} bytes, modified at unix {mtime})",
                path.display(),
                m.len()
            )
        }
        Err(e) => format!("{} ({e})", path.display()),
    }
}
