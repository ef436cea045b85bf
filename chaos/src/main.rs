//! `sluice-chaos`: runs a seeded fault schedule against a multi-process Sluice cluster and
//! checks the history it recorded (`sluice-chaos --brokers 3 --duration 10m --seed 7`), or
//! checks a saved history alone (`sluice-chaos check history.jsonl`). Exit status 0 only
//! when no anomaly was found; 1 on anomalies; 2 when the run itself could not be done.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use sluice_chaos::nemesis::Group;
use sluice_chaos::run::{self, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-chaos",
    about = "Fault injector and history checker for a multi-process Sluice cluster",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Brokers (combined broker+controller nodes): 1, 3 or 5.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// How long faults are injected: 90s, 10m, 1h (a plain number is seconds).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma-separated: kill, pause, partition, slow, disk, restart, all, none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the history (JSON lines) here (default: in the run's directory).
    #[arg(long)]
    history: Option<PathBuf>,
    /// The run's directory (node data and logs); default a new one under $TMPDIR.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// The broker binary (default: $SLUICE_BIN, else `sluice` next to this binary).
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// Partitions of the test topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Producer workers.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Produces per second, all producers together.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Transactional producers (each its own transactional.id) on the topic `chaos-txn`,
    /// with a read_committed consumer; 0 turns the transactional workload off.
    #[arg(long, default_value_t = 1)]
    txn_producers: usize,
    /// Consume-transform-produce workers (each its own transactional.id, all in the group
    /// `chaos-ctp`) from the topic `chaos` to `chaos-ctp-out`; 0 turns them off.
    #[arg(long, default_value_t = 1)]
    ctp_workers: usize,
    /// Instead of the schedule: this many fast kill -9 cycles (a node killed, restarted
    /// after 0.2–0.6 s, left alone 0.8–1.5 s once it answers); --duration is not used.
    #[arg(long)]
    kill_cycles: Option<u32>,
    /// Shards per broker.
    #[arg(long, default_value_t = 1)]
    cores: u32,
    /// Keep the node directories even when the run passes.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check a saved history; exits non-zero on any anomaly.
    Check {
        file: PathBuf,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn broker_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given.or_else(|| std::env::var_os("SLUICE_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("sluice"),
    };
    if !path.is_file() {
        bail!(
            "broker binary {} not found (build it: cargo build --release -p sluice-broker; or pass --sluice-bin / set SLUICE_BIN)",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sluice-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<bool> {
    if let Some(Cmd::Check { file, report }) = cli.cmd {
        let r = run::check_file(&file)?;
        println!("{}", r.text());
        if let Some(p) = report {
            r.write_json(&p)?;
        }
        return Ok(r.passed());
    }
    if ![1, 3, 5].contains(&cli.brokers) {
        bail!("--brokers must be 1, 3 or 5");
    }
    if cli.kill_cycles == Some(0) {
        bail!("--kill-cycles must be at least 1");
    }
    if cli.partitions < 1 || cli.producers < 1 || cli.rate < 1 {
        bail!("--partitions, --producers and --rate must be at least 1");
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
    });
    let cfg = RunConfig {
        brokers: cli.brokers,
        duration: cli.duration,
        seed,
        nemesis: Group::parse(&cli.nemesis)?,
        report: cli.report,
        history: cli.history,
        workdir: cli.workdir,
        bin: broker_binary(cli.sluice_bin)?,
        partitions: cli.partitions,
        producers: cli.producers,
        rate: cli.rate,
        txn_producers: cli.txn_producers,
        ctp_workers: cli.ctp_workers,
        kill_cycles: cli.kill_cycles,
        cores: cli.cores,
        keep: cli.keep,
    };
    let report = run::run(cfg)?;
    Ok(report.passed())
}
