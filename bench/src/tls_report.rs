//! The report of `sluice-bench tls`: one `Phase` per (round, listener, produce|consume),
//! the per-listener medians, the TLS/plaintext ratios against issue 19's target, and the
//! human table. Formatting and arithmetic only; `tls` measures.
//!
//! ```text
//!  phases ──► per listener: median (min..max) MB/s, median CPU s/GB ──► ratio rows
//!             ratio = median(listener) / median(PLAINTEXT); PASS when >= 1 - 30 %
//! ```
//! A failed phase is absent from `phases` and named in `errors`, never folded into a number.

use std::fmt::Write;

use serde::Serialize;

/// Issue 19's target: TLS may cost at most this fraction of plaintext throughput.
pub const MAX_TLS_COST: f64 = 0.30;

/// A listener of the broker under test, by its security protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl Protocol {
    /// Every listener, in the order of the first round.
    pub const ALL: [Protocol; 3] = [Protocol::Plaintext, Protocol::Ssl, Protocol::SaslSsl];

    /// Kafka's name (`security.protocol`, the listener name).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The listeners in round `round`'s order: rotated by one each round, so each one
    /// runs first, second and third equally often (page cache, heat, neighbours).
    pub fn order(round: u32) -> [Protocol; 3] {
        let mut all = Self::ALL;
        let n = all.len();
        all.rotate_left(round as usize % n);
        all
    }
}

/// Produce or consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Produce,
    Consume,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Produce => "produce",
            Direction::Consume => "consume",
        }
    }
}

/// One measured phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    pub round: u32,
    pub protocol: Protocol,
    pub direction: Direction,
    /// Throughput (payload, 10^6 B) in the measured window (produce: acked records).
    pub mb_per_sec: f64,
    pub msg_per_sec: f64,
    /// Payload bytes acked (produce) or received (consume) while the broker's CPU was
    /// counted: the whole phase, warm-up included.
    pub bytes: u64,
    /// Broker utime+stime over the phase, from /proc/<pid>/stat.
    pub broker_cpu_seconds: f64,
    /// `broker_cpu_seconds` per 10^9 B of `bytes`.
    pub broker_cpu_s_per_gb: Option<f64>,
    /// The bench's own CPU over the phase (it shares the cores with the broker).
    pub client_cpu_percent_of_core: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The engine's per-second samples and percentile curves, for `--report` (not in
    /// the JSON).
    #[serde(skip)]
    pub charts: crate::timeline::RunCharts,
}

/// Median, smallest and largest of some values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One listener over every round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerSummary {
    pub protocol: Protocol,
    pub produce_mb_per_sec: Option<Spread>,
    pub consume_mb_per_sec: Option<Spread>,
    pub produce_cpu_s_per_gb: Option<Spread>,
    pub consume_cpu_s_per_gb: Option<Spread>,
}

/// A secured listener's throughput against PLAINTEXT's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RatioRow {
    pub protocol: Protocol,
    pub direction: Direction,
    /// median(listener) / median(PLAINTEXT).
    pub ratio: f64,
    /// 1 - ratio: the share of plaintext throughput TLS costs.
    pub cost: f64,
    pub target: String,
    pub pass: bool,
}

/// Everything `tls` measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsReport {
    pub name: String,
    pub sluice_bin: String,
    pub work_dir: String,
    pub listeners: String,
    pub sasl_mechanism: String,
    pub cores: u32,
    pub settings: Vec<String>,
    pub rounds: u32,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    pub partitions: u32,
    pub message_size: usize,
    pub producers: u32,
    pub consumers: u32,
    pub linger_ms: f64,
    pub batch_size: u32,
    pub phases: Vec<Phase>,
    pub summary: Vec<ListenerSummary>,
    pub ratios: Vec<RatioRow>,
    pub errors: Vec<String>,
}

fn spread(
    phases: &[Phase],
    p: Protocol,
    d: Direction,
    f: impl Fn(&Phase) -> Option<f64>,
) -> Option<Spread> {
    let v: Vec<f64> = phases
        .iter()
        .filter(|x| x.protocol == p && x.direction == d)
        .filter_map(f)
        .collect();
    Spread::of(&v)
}

/// Per-listener medians of `phases`.
pub fn summarize(phases: &[Phase]) -> Vec<ListenerSummary> {
    Protocol::ALL
        .iter()
        .map(|&p| ListenerSummary {
            protocol: p,
            produce_mb_per_sec: spread(phases, p, Direction::Produce, |x| Some(x.mb_per_sec)),
            consume_mb_per_sec: spread(phases, p, Direction::Consume, |x| Some(x.mb_per_sec)),
            produce_cpu_s_per_gb: spread(phases, p, Direction::Produce, |x| x.broker_cpu_s_per_gb),
            consume_cpu_s_per_gb: spread(phases, p, Direction::Consume, |x| x.broker_cpu_s_per_gb),
        })
        .collect()
}

/// SSL and SASL_SSL against PLAINTEXT, produce and consume; rows whose medians are
/// missing (or PLAINTEXT's is zero) are left out.
pub fn ratios(summary: &[ListenerSummary]) -> Vec<RatioRow> {
    let get = |p: Protocol, d: Direction| {
        let s = summary.iter().find(|s| s.protocol == p)?;
        match d {
            Direction::Produce => s.produce_mb_per_sec,
            Direction::Consume => s.consume_mb_per_sec,
        }
        .map(|x| x.median)
    };
    let mut out = Vec::new();
    for p in [Protocol::Ssl, Protocol::SaslSsl] {
        for d in [Direction::Produce, Direction::Consume] {
            let (Some(tls), Some(plain)) = (get(p, d), get(Protocol::Plaintext, d)) else {
                continue;
            };
            if plain <= 0.0 {
                continue;
            }
            let ratio = tls / plain;
            out.push(RatioRow {
                protocol: p,
                direction: d,
                ratio,
                cost: 1.0 - ratio,
                target: format!("cost <= {:.0} %", MAX_TLS_COST * 100.0),
                pass: ratio >= 1.0 - MAX_TLS_COST - 1e-12,
            });
        }
    }
    out
}

fn cell(s: Option<Spread>, decimals: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.d$} ({:.d$}..{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => "-".into(),
    }
}

/// The human tables.
pub fn table(r: &TlsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== tls: one broker ({} core(s)), listeners PLAINTEXT / SSL / SASL_SSL ({}); {} round(s) of {:.0} s + {:.0} s warm-up per phase; 1 topic x {} partitions, {} B records, acks=all, {} producer(s), {} consumer(s)",
        r.cores,
        r.sasl_mechanism,
        r.rounds,
        r.duration_seconds,
        r.warmup_seconds,
        r.partitions,
        r.message_size,
        r.producers,
        r.consumers
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>24} {:>24} {:>22} {:>22}",
        "listener", "produce MB/s", "consume MB/s", "broker CPU s/GB prod", "broker CPU s/GB cons"
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>24} {:>24} {:>22} {:>22}",
        "", "median (min..max)", "median (min..max)", "median (min..max)", "median (min..max)"
    );
    for s in &r.summary {
        let _ = writeln!(
            out,
            "  {:<10} {:>24} {:>24} {:>22} {:>22}",
            s.protocol.name(),
            cell(s.produce_mb_per_sec, 1),
            cell(s.consume_mb_per_sec, 1),
            cell(s.produce_cpu_s_per_gb, 2),
            cell(s.consume_cpu_s_per_gb, 2)
        );
    }
    let _ = writeln!(
        out,
        "\n  target: TLS costs <= {:.0} % of plaintext throughput (median / PLAINTEXT median)",
        MAX_TLS_COST * 100.0
    );
    for row in &r.ratios {
        let _ = writeln!(
            out,
            "  {:<10} {:<8} {:>6.1} % of PLAINTEXT   cost {:>5.1} %   {}",
            row.protocol.name(),
            row.direction.name(),
            row.ratio * 100.0,
            row.cost * 100.0,
            if row.pass { "PASS" } else { "MISS" }
        );
    }
    let _ = writeln!(
        out,
        "\n  {:<5} {:<10} {:<8} {:>9} {:>12} {:>10} {:>12} {:>10}",
        "round", "listener", "phase", "MB/s", "msg/s", "CPU s/GB", "broker CPU s", "bench CPU%"
    );
    for p in &r.phases {
        let _ = writeln!(
            out,
            "  {:<5} {:<10} {:<8} {:>9.1} {:>12.0} {:>10} {:>12.1} {:>10}",
            p.round + 1,
            p.protocol.name(),
            p.direction.name(),
            p.mb_per_sec,
            p.msg_per_sec,
            p.broker_cpu_s_per_gb
                .map_or("-".into(), |x| format!("{x:.2}")),
            p.broker_cpu_seconds,
            p.client_cpu_percent_of_core
                .map_or("-".into(), |x| format!("{x:.0}")),
        );
    }
    for p in r.phases.iter().filter(|p| p.errors > 0) {
        let _ = writeln!(
            out,
            "  note: round {} {} {}: {} client error(s), first: {}",
            p.round + 1,
            p.protocol.name(),
            p.direction.name(),
            p.errors,
            p.first_error.as_deref().unwrap_or("-")
        );
    }
    for e in &r.errors {
        let _ = writeln!(out, "  ERROR: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(round: u32, protocol: Protocol, direction: Direction, mb: f64, cpu: f64) -> Phase {
        Phase {
            round,
            protocol,
            direction,
            mb_per_sec: mb,
            msg_per_sec: mb * 1e6 / 1024.0,
            bytes: 1_000_000_000,
            broker_cpu_seconds: cpu,
            broker_cpu_s_per_gb: Some(cpu),
            client_cpu_percent_of_core: Some(50.0),
            errors: 0,
            first_error: None,
            charts: Default::default(),
        }
    }

    #[test]
    fn rounds_rotate_the_listener_order() {
        use Protocol::*;
        assert_eq!(Protocol::order(0), [Plaintext, Ssl, SaslSsl]);
        assert_eq!(Protocol::order(1), [Ssl, SaslSsl, Plaintext]);
        assert_eq!(Protocol::order(2), [SaslSsl, Plaintext, Ssl]);
        assert_eq!(Protocol::order(3), Protocol::order(0));
    }

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("some");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Spread::of(&[f64::NAN, 1.0]).map(|s| s.median), Some(1.0));
    }

    #[test]
    fn ratios_take_medians_and_mark_the_target() {
        use Direction::*;
        use Protocol::*;
        let mut phases = Vec::new();
        for (r, plain, ssl, sasl) in [
            (0, 100.0, 80.0, 60.0),
            (1, 110.0, 70.0, 65.0),
            (2, 90.0, 75.0, 70.0),
        ] {
            phases.push(phase(r, Plaintext, Produce, plain, 1.0));
            phases.push(phase(r, Ssl, Produce, ssl, 1.5));
            phases.push(phase(r, SaslSsl, Produce, sasl, 1.6));
            phases.push(phase(r, Plaintext, Consume, 200.0, 0.5));
            phases.push(phase(r, Ssl, Consume, 140.0, 0.9));
        }
        let summary = summarize(&phases);
        assert_eq!(summary[0].produce_mb_per_sec.map(|s| s.median), Some(100.0));
        assert_eq!(summary[1].produce_cpu_s_per_gb.map(|s| s.median), Some(1.5));
        assert_eq!(summary[2].consume_mb_per_sec, None);
        let rows = ratios(&summary);
        // SSL produce 75 %, SSL consume 70 % (exactly the bound), SASL_SSL produce 65 %
        assert_eq!(rows.len(), 3);
        assert!((rows[0].ratio - 0.75).abs() < 1e-9 && rows[0].pass);
        assert_eq!((rows[1].protocol, rows[1].direction), (Ssl, Consume));
        assert!((rows[1].ratio - 0.70).abs() < 1e-9 && rows[1].pass);
        assert!((rows[2].cost - 0.35).abs() < 1e-9 && !rows[2].pass);
        let r = TlsReport {
            rounds: 3,
            phases,
            summary,
            ratios: rows,
            errors: vec!["round 2 SASL_SSL: boom".into()],
            ..TlsReport::default()
        };
        let t = table(&r);
        assert!(t.contains("PASS") && t.contains("MISS"), "{t}");
        assert!(t.contains("100.0 (90.0..110.0)"), "{t}");
        assert!(t.contains("ERROR: round 2 SASL_SSL: boom"), "{t}");
    }

    #[test]
    fn protocols_serialize_by_kafka_name() {
        let s = serde_json::to_string(&[Protocol::SaslSsl, Protocol::Plaintext]).expect("json");
        assert_eq!(s, r#"["SASL_SSL","PLAINTEXT"]"#);
        let d = serde_json::to_string(&Direction::Consume).expect("json");
        assert_eq!(d, r#""consume""#);
    }
}
