//! `sluice-bench tls` (issue 19): what TLS and SASL_SSL cost. One broker, started by the
//! bench, with a PLAINTEXT, an SSL and a SASL_SSL (SCRAM) listener; certificates made by
//! the bench (`tls_pki`), the SCRAM user added with `sluice user add` before the start.
//!
//! ```text
//!  work dir: ca.pem broker.pem broker.key(0600) bench.pw(0600) data/ broker.log
//!  sluice user add ─► sluice --listen PLAINTEXT://..,SSL://..,SASL_SSL://.. ─► preflight
//!  round r (listener order rotated by r), per listener, one fresh topic each:
//!    CreateTopics (over PLAINTEXT) ─► max produce acks=all via the listener (engine)
//!    ─► read the whole topic back via the listener ─► DeleteTopics
//!    broker utime+stime per phase (/proc/<pid>/stat) ─► CPU s per GB
//!  medians per listener ─► SSL, SASL_SSL / PLAINTEXT against "TLS costs <= 30 %"
//! ```
//! Every wait is bounded by --timeout (a phase by its duration plus that); the broker and
//! the `user add` child are killed on every path (`BrokerProcess` kills on drop).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker_process::{free_port, BrokerProcess, BrokerSpec};
use crate::engine::{self, LoadSpec, RunReport};
use crate::kafka::{self, consumer_config, parse_prop, ProducerSettings};
use crate::metadata::parse_secs;
use crate::record::KeyDistributor;
use crate::replication::{resolve, work_dir};
use crate::tls_pki::{self, Pki};
use crate::tls_report::{self, Direction, Phase, Protocol, TlsReport};

/// The SCRAM user the bench adds and authenticates as.
const USER: &str = "sluice-bench";
/// The mechanism of that user and of the SASL_SSL clients.
const MECHANISM: &str = "SCRAM-SHA-512";

/// `sluice-bench tls`.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Broker binary (looked up like `replication --sluice-bin`); copied into the work dir.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice_bin: PathBuf,
    /// Where certificates, the data dir and the broker log go; default a new
    /// /tmp/sluice-bench-tls-<pid>, removed at the end unless --keep-data (a named one
    /// loses only its data dir, the broker key and the password file).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Shards of the broker (`--cores`).
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Broker setting, repeatable: --set name=value (after the bench's TLS and SASL ones).
    #[arg(long = "set", value_parser = parse_prop)]
    pub settings: Vec<(String, String)>,
    /// Rounds; each measures every listener once, in an order rotated by one per round.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Measured window of each produce phase (the consume phase reads what it wrote).
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    pub duration: Duration,
    /// Produce before the measured window.
    #[arg(long, default_value = "2s", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Partitions of each phase's topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Producer threads.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer threads.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// linger.ms of the producers.
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// batch.size of the producers.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u32,
    /// Extra producer property (librdkafka name), repeatable; applied last.
    #[arg(long = "producer-prop", value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,
    /// Extra consumer property, repeatable; applied last.
    #[arg(long = "consumer-prop", value_parser = parse_prop)]
    pub consumer_props: Vec<(String, String)>,
    /// Bound of every wait besides the phases themselves: start, CreateTopics, a stop.
    #[arg(long, default_value = "120s", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Keep the work dir (certificates and key, password file, data, broker log).
    #[arg(long)]
    pub keep_data: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// The broker's three listeners and the client settings each needs.
#[derive(Clone, Debug)]
struct Listeners {
    plaintext: u16,
    ssl: u16,
    sasl_ssl: u16,
    pki: Pki,
    password: String,
}

impl Listeners {
    fn port(&self, p: Protocol) -> u16 {
        match p {
            Protocol::Plaintext => self.plaintext,
            Protocol::Ssl => self.ssl,
            Protocol::SaslSsl => self.sasl_ssl,
        }
    }

    fn bootstrap(&self, p: Protocol) -> String {
        format!("127.0.0.1:{}", self.port(p))
    }

    /// `--listen`.
    fn spec(&self) -> String {
        Protocol::ALL
            .iter()
            .map(|&p| format!("{}://{}", p.name(), self.bootstrap(p)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// librdkafka's security settings for a client of listener `p`: the CA to verify
    /// the broker with (hostname checked: the certificate names 127.0.0.1), and the SCRAM
    /// login on SASL_SSL.
    fn client_props(&self, p: Protocol) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut set = |k: &str, val: &str| v.push((k.to_string(), val.to_string()));
        if p == Protocol::Plaintext {
            return v;
        }
        set("security.protocol", p.name());
        set("ssl.ca.location", &self.pki.ca.display().to_string());
        set("ssl.endpoint.identification.algorithm", "https");
        if p == Protocol::SaslSsl {
            set("sasl.mechanism", MECHANISM);
            set("sasl.username", USER);
            set("sasl.password", &self.password);
        }
        v
    }

    /// The broker settings of the listeners: certificate, key, no client certificates
    /// (SSL measures encryption; SASL_SSL authenticates with SCRAM), SCRAM-SHA-512 only.
    fn broker_settings(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.display().to_string();
        vec![
            ("ssl.certificate.location".into(), path(&self.pki.cert)),
            ("ssl.key.location".into(), path(&self.pki.key)),
            ("ssl.client.auth".into(), "none".into()),
            ("sasl.enabled.mechanisms".into(), MECHANISM.into()),
        ]
    }
}

/// A child process that is killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sluice user add USER --mechanism M --password-file F --data-dir D`, bounded by
/// `timeout`; its output is appended to `log`.
fn add_user(
    bin: &Path,
    data_dir: &Path,
    password_file: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = Command::new(bin)
        .args([
            "user",
            "add",
            USER,
            "--mechanism",
            MECHANISM,
            "--password-file",
        ])
        .arg(password_file)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {} user add", bin.display()))?;
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().context("waiting for user add")? {
            if !status.success() {
                bail!(
                    "sluice user add exited with {status}; see {}",
                    log.display()
                );
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("sluice user add did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until Metadata answers through listener `p` with its security settings (the
/// TLS handshake and the SCRAM login work), or the deadline, or the broker exits.
fn preflight(
    broker: &mut BrokerProcess,
    l: &Listeners,
    p: Protocol,
    deadline: Instant,
) -> Result<()> {
    broker.wait_listening(l.port(p), deadline)?;
    let client: BaseConsumer = consumer_config(&l.bootstrap(p), None, false, &l.client_props(p))
        .create()
        .with_context(|| format!("creating a {} metadata client", p.name()))?;
    let mut last = String::from("no answer yet");
    loop {
        broker.check_running()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no Metadata through the {} listener: {last}", p.name());
        }
        match client.fetch_metadata(None, left.min(Duration::from_secs(5))) {
            Ok(md) if !md.brokers().is_empty() => return Ok(()),
            Ok(_) => last = "Metadata without brokers".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The engine's figures of one phase as a `Phase`.
fn phase(
    round: u32,
    protocol: Protocol,
    direction: Direction,
    r: &RunReport,
    message_size: usize,
) -> Phase {
    let (tp, records) = match direction {
        Direction::Produce => (r.produced.as_ref(), r.acked_total),
        Direction::Consume => (r.consumed.as_ref(), r.consumed_total),
    };
    let bytes = records * message_size as u64;
    let cpu = r.broker.as_ref().map_or(0.0, |b| b.cpu_seconds);
    let errors = match direction {
        Direction::Produce => r.produce_errors,
        Direction::Consume => r.consume_errors,
    };
    Phase {
        round,
        protocol,
        direction,
        mb_per_sec: tp.map_or(0.0, |t| t.mb_per_sec),
        msg_per_sec: tp.map_or(0.0, |t| t.msg_per_sec),
        bytes,
        broker_cpu_seconds: cpu,
        broker_cpu_s_per_gb: (bytes > 0 && r.broker.is_some()).then(|| cpu / (bytes as f64 / 1e9)),
        client_cpu_percent_of_core: r.client.as_ref().map(|c| c.cpu_percent_of_core),
        errors,
        first_error: r.first_error.clone(),
        charts: r.charts.clone(),
    }
}

/// What one (round, listener) needs besides the args.
struct PhaseCtx<'a> {
    a: &'a TlsArgs,
    listeners: &'a Listeners,
    pid: u32,
    progress: bool,
}

impl PhaseCtx<'_> {
    fn spec(&self, p: Protocol, topic: &str, name: String) -> LoadSpec {
        let a = self.a;
        let security = self.listeners.client_props(p);
        let mut producer_extra = security.clone();
        producer_extra.extend(a.producer_props.iter().cloned());
        let mut consumer_extra = security;
        consumer_extra.extend(a.consumer_props.iter().cloned());
        LoadSpec {
            name,
            bootstrap: self.listeners.bootstrap(p),
            topics: vec![topic.to_string()],
            partitions: a.partitions,
            message_size: a.message_size,
            producers_per_topic: a.producers,
            subscriptions_per_topic: 0,
            consumers_per_subscription: a.consumers,
            rate: None,
            max_messages: None,
            warmup: a.warmup,
            duration: a.duration,
            keys: KeyDistributor::NoKey,
            producer: ProducerSettings {
                acks: "all".into(),
                compression: "none".into(),
                batch_size: a.batch_size,
                linger_ms: a.linger_ms,
                extra: producer_extra,
            },
            consume_from_beginning: true,
            consume_until: None,
            use_groups: false,
            consumer_extra,
            progress: self.progress,
            broker_pid: Some(self.pid),
        }
    }

    /// Max produce into a fresh topic through listener `p`, then read all of it back
    /// through `p`; the topic is deleted on every path.
    fn run(&self, round: u32, p: Protocol) -> Result<(Phase, Phase)> {
        let plain = self.listeners.bootstrap(Protocol::Plaintext);
        let topic = format!(
            "sluice-bench-tls-{:06x}-{}-{}",
            rand::random::<u32>() & 0xff_ffff,
            round + 1,
            p.name().to_ascii_lowercase()
        );
        let timeout = self.a.timeout;
        let created = kafka::create_topics(
            &plain,
            std::slice::from_ref(&topic),
            self.a.partitions,
            timeout,
        )?;
        let result = (|| {
            let produce = engine::run(&self.spec(p, &topic, format!("{} produce", p.name())))
                .with_context(|| format!("{} produce", p.name()))?;
            let count = kafka::topic_record_count(&plain, &topic, timeout)?;
            if count == 0 {
                bail!(
                    "{} produce: no record acked ({:?})",
                    p.name(),
                    produce.first_error
                );
            }
            let consume_spec = LoadSpec {
                producers_per_topic: 0,
                subscriptions_per_topic: 1,
                consume_until: Some(count),
                warmup: Duration::ZERO,
                // bounds the read: the produce phase's time again plus --timeout
                duration: self.a.warmup + self.a.duration + timeout,
                ..self.spec(p, &topic, format!("{} consume", p.name()))
            };
            let consume =
                engine::run(&consume_spec).with_context(|| format!("{} consume", p.name()))?;
            if consume.consumed_total < count {
                bail!(
                    "{} consume: read {} of {count} records within the bound",
                    p.name(),
                    consume.consumed_total
                );
            }
            let size = self.a.message_size;
            Ok((
                phase(round, p, Direction::Produce, &produce, size),
                phase(round, p, Direction::Consume, &consume, size),
            ))
        })();
        if let Err(e) = kafka::delete_topics(&plain, &created, timeout) {
            eprintln!("warning: could not delete {topic}: {e:#}");
        }
        result
    }
}

fn validate(a: &TlsArgs) -> Result<()> {
    if a.rounds == 0 || a.cores == 0 || a.partitions == 0 || a.producers == 0 || a.consumers == 0 {
        bail!("--rounds, --cores, --partitions, --producers and --consumers must be at least 1");
    }
    if a.message_size == 0 {
        bail!("--message-size must be at least 1");
    }
    // -X reaches every client, the PLAINTEXT admin ones included: security settings there
    // would break them, and each listener's clients get theirs from the bench.
    if let Some((k, _)) = kafka::client_props().iter().find(|(k, _)| {
        ["security.", "ssl.", "sasl."]
            .iter()
            .any(|p| k.starts_with(p))
    }) {
        bail!("tls sets each listener's security settings itself; drop -X {k}");
    }
    Ok(())
}

/// Runs every round on one broker.
pub fn run(a: &TlsArgs, progress: bool) -> Result<TlsReport> {
    validate(a)?;
    let bin = resolve(&a.sluice_bin, "broker binary")?;
    let wd = work_dir(a.work_dir.as_deref(), "tls", &bin)?;
    let (work, copy) = (wd.dir.clone(), wd.bin.clone());
    let result = run_in(a, &bin, &work, &copy, progress);
    if a.keep_data {
        if progress {
            eprintln!("tls: work dir kept: {}", work.display());
        }
    } else if a.work_dir.is_none() {
        if let Err(e) = std::fs::remove_dir_all(&work) {
            eprintln!("warning: removing {}: {e}", work.display());
        }
    } else {
        // a work dir the user named: only what this run made that holds data or secrets
        for name in ["data", "broker.key", "bench.pw"] {
            let p = work.join(name);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = removed.or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }) {
                eprintln!("warning: removing {}: {e}", p.display());
            }
        }
    }
    result
}

fn run_in(a: &TlsArgs, bin: &Path, work: &Path, copy: &Path, progress: bool) -> Result<TlsReport> {
    let say = |m: String| {
        if progress {
            eprintln!("tls: {m}");
        }
    };
    let pki = tls_pki::make(work)?;
    let password = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let password_file = work.join("bench.pw");
    tls_pki::write_file(&password_file, &format!("{password}\n"), true)?;
    let listeners = Listeners {
        plaintext: free_port()?,
        ssl: free_port()?,
        sasl_ssl: free_port()?,
        pki,
        password,
    };
    let data_dir = work.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("removing the old {}", data_dir.display()))?;
    }
    let log = work.join("broker.log");
    add_user(copy, &data_dir, &password_file, &log, a.timeout)?;
    let mut settings = listeners.broker_settings();
    settings.extend(a.settings.iter().cloned());
    let spec = BrokerSpec {
        bin: copy.to_path_buf(),
        data_dir,
        port: listeners.plaintext,
        listeners: Some(listeners.spec()),
        cores: a.cores,
        settings,
        log: log.clone(),
    };
    say(format!(
        "starting the broker: --listen {}",
        listeners.spec()
    ));
    let mut broker = spec.spawn()?;
    let deadline = Instant::now() + a.timeout;
    for p in Protocol::ALL {
        preflight(&mut broker, &listeners, p, deadline)
            .with_context(|| format!("broker log: {}", log.display()))?;
    }
    let pid = broker.pid()?;
    let ctx = PhaseCtx {
        a,
        listeners: &listeners,
        pid,
        progress,
    };
    let mut report = TlsReport {
        name: "tls".into(),
        sluice_bin: bin.display().to_string(),
        work_dir: work.display().to_string(),
        listeners: listeners.spec(),
        sasl_mechanism: MECHANISM.into(),
        cores: a.cores,
        settings: a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        rounds: a.rounds,
        warmup_seconds: a.warmup.as_secs_f64(),
        duration_seconds: a.duration.as_secs_f64(),
        partitions: a.partitions,
        message_size: a.message_size,
        producers: a.producers,
        consumers: a.consumers,
        linger_ms: a.linger_ms,
        batch_size: a.batch_size,
        ..TlsReport::default()
    };
    'rounds: for round in 0..a.rounds {
        for p in Protocol::order(round) {
            say(format!("round {}/{}: {}", round + 1, a.rounds, p.name()));
            match ctx.run(round, p) {
                Ok((produce, consume)) => {
                    say(format!(
                        "round {} {}: produce {:.1} MB/s, consume {:.1} MB/s",
                        round + 1,
                        p.name(),
                        produce.mb_per_sec,
                        consume.mb_per_sec
                    ));
                    report.phases.push(produce);
                    report.phases.push(consume);
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("round {} {}: {e:#}", round + 1, p.name()));
                    if let Err(e) = broker.check_running() {
                        report
                            .errors
                            .push(format!("{e:#}; broker log {}", log.display()));
                        break 'rounds;
                    }
                }
            }
        }
    }
    if broker.check_running().is_ok() {
        if let Err(e) = broker.terminate(a.timeout) {
            report.errors.push(format!("stopping the broker: {e:#}"));
        }
    }
    report.summary = tls_report::summarize(&report.phases);
    report.ratios = tls_report::ratios(&report.summary);
    Ok(report)
}

/// `sluice-bench tls`: runs, prints the table (or JSON), writes --json-out, hands the
/// report to `page` (the `--report` page); exits with an error after printing when a
/// phase failed.
pub fn tls_command(
    json: bool,
    quiet: bool,
    a: &TlsArgs,
    page: impl FnOnce(&TlsReport) -> Result<()>,
) -> Result<()> {
    let r = run(a, !quiet)?;
    crate::report::emit(json, a.json_out.as_deref(), &r, tls_report::table)?;
    page(&r)?;
    match r.errors.first() {
        None => Ok(()),
        Some(first) => bail!("{} error(s), first: {first}", r.errors.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: TlsArgs,
    }

    fn listeners() -> Listeners {
        Listeners {
            plaintext: 1,
            ssl: 2,
            sasl_ssl: 3,
            pki: Pki {
                ca: "/w/ca.pem".into(),
                cert: "/w/broker.pem".into(),
                key: "/w/broker.key".into(),
            },
            password: "pw".into(),
        }
    }

    #[test]
    fn defaults_parse() {
        let a = Cli::try_parse_from(["t"]).expect("parses").a;
        assert_eq!((a.rounds, a.partitions, a.message_size), (3, 8, 1024));
        assert_eq!(a.duration, Duration::from_secs(10));
        validate(&a).expect("valid");
        let a = Cli::try_parse_from(["t", "--rounds", "0"])
            .expect("parses")
            .a;
        assert!(validate(&a).is_err());
    }

    #[test]
    fn listeners_and_their_client_settings() {
        let l = listeners();
        assert_eq!(
            l.spec(),
            "PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:2,SASL_SSL://127.0.0.1:3"
        );
        assert!(l.client_props(Protocol::Plaintext).is_empty());
        let get = |p: Protocol, k: &str| {
            l.client_props(p)
                .into_iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v)
        };
        assert_eq!(
            get(Protocol::Ssl, "security.protocol").as_deref(),
            Some("SSL")
        );
        assert_eq!(
            get(Protocol::Ssl, "ssl.ca.location").as_deref(),
            Some("/w/ca.pem")
        );
        assert_eq!(get(Protocol::Ssl, "sasl.username"), None);
        assert_eq!(
            get(Protocol::SaslSsl, "security.protocol").as_deref(),
            Some("SASL_SSL")
        );
        assert_eq!(
            get(Protocol::SaslSsl, "sasl.mechanism").as_deref(),
            Some(MECHANISM)
        );
        assert_eq!(
            get(Protocol::SaslSsl, "sasl.password").as_deref(),
            Some("pw")
        );
        let b = l.broker_settings();
        assert!(b.contains(&("ssl.key.location".into(), "/w/broker.key".into())));
        assert!(b.contains(&("sasl.enabled.mechanisms".into(), MECHANISM.into())));
    }

    #[test]
    fn the_spec_puts_security_first_and_user_props_last() {
        let a = Cli::try_parse_from(["t", "--producer-prop", "security.protocol=x"])
            .expect("parses")
            .a;
        let l = listeners();
        let ctx = PhaseCtx {
            a: &a,
            listeners: &l,
            pid: 1,
            progress: false,
        };
        let s = ctx.spec(Protocol::Ssl, "t", "n".into());
        assert_eq!(s.bootstrap, "127.0.0.1:2");
        assert_eq!(s.producer.acks, "all");
        assert_eq!(
            s.producer.extra.first().map(|(k, _)| k.as_str()),
            Some("security.protocol")
        );
        assert_eq!(s.producer.extra.last().map(|(_, v)| v.as_str()), Some("x"));
        assert_eq!(s.broker_pid, Some(1));
    }
}
