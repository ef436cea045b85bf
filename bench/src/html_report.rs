//! `--report DIR`: one self-contained HTML page (`DIR/index.html`) with SVG plots of a run.
//!
//! ```text
//!  RunReport / SuiteReport / PartitionsReport ─► sections (tables + plotters SVG) ─► page
//!  page = <style> + settings (command line, date, machine, broker) + sections
//! ```
//! The page has no script and no external reference: CSS is inline, the plots are inline
//! `<svg>` drawn by plotters' SVG backend, whose text is plain `<text>` elements (so no
//! font is needed to draw, only to view). Every plotted number is one the run measured:
//! the per-second samples of `timeline`, and percentile curves read from the run's HDR
//! histograms. A series with no data is left out, a chart with no series is not drawn.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::engine::RunReport;
use crate::limits::Limits;
use crate::stats::{group_thousands, CurvePoint, LatencySummary};
use crate::suite::{Ratio, SuiteReport};
use crate::timeline::{RunCharts, TimelineSample};

mod bodies;
pub use bodies::{partitions_body, replication_body, tls_body};

const CHART_SIZE: (u32, u32) = (820, 380);
const FONT: &str = "sans-serif";

/// What the page says about the run besides its figures.
#[derive(Clone, Debug, Default)]
pub struct PageInfo {
    /// Page heading.
    pub title: String,
    /// (label, value) rows: command line, date, machine, broker.
    pub settings: Vec<(String, String)>,
}

impl PageInfo {
    /// Settings of this process: the command line, the date (UTC), the bench version and
    /// the machine (cores, CPU model, kernel), and what `/proc` tells of the broker when
    /// its pid is known (command line, executable).
    pub fn collect(title: &str, broker_pid: Option<u32>) -> Self {
        let mut s = vec![
            (
                "command line".to_string(),
                std::env::args().collect::<Vec<_>>().join(" "),
            ),
            ("date (UTC)".to_string(), utc_now()),
            (
                "sluice-bench".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        if let Ok(n) = std::thread::available_parallelism() {
            s.push(("cores".into(), n.to_string()));
        }
        if let Some(model) = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        }) {
            s.push(("CPU".into(), model));
        }
        if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
            s.push(("kernel".into(), k.trim().to_string()));
        }
        if let Some(pid) = broker_pid {
            s.push(("broker pid".into(), pid.to_string()));
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd)
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                s.push(("broker command line".into(), cmd));
            }
            if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                s.push(("broker executable".into(), exe.display().to_string()));
            }
        }
        Self {
            title: title.to_string(),
            settings: s,
        }
    }
}

/// The current time as `YYYY-MM-DD HH:MM:SS`, UTC.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_date(secs)
}

/// `("broker version", "<bin> --version" output)` when the binary answers it.
pub fn broker_version(bin: &str) -> Option<(String, String)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then(|| ("broker version".to_string(), v))
}

/// UNIX seconds as a UTC date (proleptic Gregorian, H. Hinnant's days-to-civil).
fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table with a header row; cells are escaped.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            let _ = write!(t, "<td>{}</td>", esc(c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>\n");
    t
}

/// (label, value) rows as a two-column table.
fn kv_table(rows: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    table(&["setting", "value"], &rows)
}

/// One named line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// A line chart over run time (seconds since the load started, t0), its key under it;
/// `window` shades
/// nothing but draws the measured window's bounds as dashed vertical lines. `None` when no
/// series has a point.
pub fn time_chart(
    title: &str,
    y_desc: &str,
    series: &[Series],
    window: Option<(f64, f64)>,
) -> Result<Option<String>> {
    let series: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    if series.is_empty() {
        return Ok(None);
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0f64, f64::max);
    // headroom for the legend in the upper right corner
    let y_max = if y_max > 0.0 { y_max * 1.3 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .light_line_style(BLACK.mix(0.03))
            .bold_line_style(BLACK.mix(0.15))
            .x_desc("seconds since the load started")
            .y_desc(y_desc)
            .x_label_formatter(&|x| short_number(*x))
            .y_label_formatter(&|y| short_number(*y))
            .draw()?;
        if let Some((a, b)) = window {
            let grey = ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1);
            for x in [a, b].into_iter().filter(|x| *x > 0.0 && *x <= x_max) {
                chart.draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, y_max)],
                    6,
                    4,
                    grey,
                ))?;
            }
        }
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?;
        }
        root.present()?;
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    Ok(Some(svg + &legend(&names)))
}

/// The key of a chart, as HTML under it (inside the SVG a legend box covers curves).
fn legend(names: &[&str]) -> String {
    let mut out = String::from("<figcaption>");
    for (i, n) in names.iter().enumerate() {
        let RGBColor(r, g, b) = color(i);
        let _ = write!(
            out,
            "<span class=\"key\"><span style=\"color:#{r:02x}{g:02x}{b:02x}\">&#9632;</span> {}</span>",
            esc(n)
        );
    }
    out.push_str("</figcaption>");
    out
}

/// Axis labels: 1234.6 -> "1235", 2.0 -> "2", 0.25 -> "0.25", 0.001 -> "0.001",
/// 12_000_000 -> "12M".
fn short_number(v: f64) -> String {
    let a = v.abs();
    let text = if a >= 1e6 {
        return format!("{}M", trim_zeros(format!("{:.1}", v / 1e6)));
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        // two significant digits below 100
        let decimals = (1.0 - a.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    };
    trim_zeros(text)
}

/// "2.50" -> "2.5", "2.0" -> "2"; integers unchanged.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Position of a percentile on the plot's x axis: log10(1 / (1 - p)).
fn percentile_x(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-12).log10()
}

/// Label of an x position: 0 -> "0", 1 -> "90", 2 -> "99", 3 -> "99.9" (between
/// decades: the percentile with one more digit than the decade below).
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.floor() as i32 - 2).max(0) as usize + usize::from(x.fract().abs() > 1e-6);
    format!("{p:.digits$}")
}

/// Latency percentile curves (x: percentile on the log scale of 1/(1-p), y: ms on a log
/// scale), as OMB and Redpanda publish them, the key under it. `None` when no curve has a
/// point.
pub fn percentile_chart(title: &str, curves: &[(String, &[CurvePoint])]) -> Result<Option<String>> {
    let curves: Vec<&(String, &[CurvePoint])> =
        curves.iter().filter(|(_, c)| !c.is_empty()).collect();
    if curves.is_empty() {
        return Ok(None);
    }
    let all = || curves.iter().flat_map(|(_, c)| c.iter());
    let x_max = all()
        .map(|p| percentile_x(p.percentile))
        .fold(1.0f64, f64::max)
        .ceil();
    // whole decades: plotters labels a log axis at powers of ten only, so a range
    // inside one decade would have no label
    let lo = all().map(|p| p.ms).fold(f64::INFINITY, f64::min).max(0.001);
    let hi = all().map(|p| p.ms).fold(0.0f64, f64::max).max(lo);
    // (a hair wider, so rounding cannot drop the end labels)
    let y_min = 10f64.powf(lo.log10().floor()) * 0.999;
    let y_max = 10f64.powf((hi * 1.05).log10().ceil()).max(y_min * 10.0) * 1.001;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(x_max as usize + 1)
            .light_line_style(BLACK.mix(0.03))
            .bold_line_style(BLACK.mix(0.15))
            .x_desc("percentile")
            .y_desc("latency, ms (log scale)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| short_number(*y))
            .draw()?;
        for (i, (_, c)) in curves.iter().enumerate() {
            let col = color(i);
            let pts = c.iter().map(|p| (percentile_x(p.percentile), p.ms));
            chart.draw_series(LineSeries::new(pts, col.stroke_width(2)))?;
        }
        root.present()?;
    }
    let names: Vec<&str> = curves.iter().map(|(n, _)| n.as_str()).collect();
    Ok(Some(svg + &legend(&names)))
}

/// MB/s of each second: `count` records of `size` bytes over the sample's span.
fn mb_per_sec(
    samples: &[TimelineSample],
    size: usize,
    f: impl Fn(&TimelineSample) -> u64,
) -> Vec<(f64, f64)> {
    let mut prev = 0.0;
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let dt = s.t_seconds - prev;
        prev = s.t_seconds;
        if dt > 0.0 {
            out.push((s.t_seconds, (f(s) * size as u64) as f64 / 1e6 / dt));
        }
    }
    out
}

fn points<T>(
    samples: &[TimelineSample],
    f: impl Fn(&TimelineSample) -> Option<T>,
    scale: impl Fn(T) -> f64,
) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t_seconds, scale(v))))
        .collect()
}

const MIB: f64 = 1024.0 * 1024.0;

/// Turns a run's per-second samples into one series' points.
type SamplesToPoints<'a> = dyn Fn(&[TimelineSample]) -> Vec<(f64, f64)> + 'a;

fn push_chart(out: &mut String, chart: Result<Option<String>>) -> Result<()> {
    if let Some(svg) = chart? {
        let _ = writeln!(out, "<figure>{svg}</figure>");
    }
    Ok(())
}

fn latency_row(name: &str, l: &LatencySummary) -> Vec<String> {
    vec![
        name.to_string(),
        group_thousands(l.count as f64),
        format!("{:.3}", l.p50_ms),
        format!("{:.3}", l.p90_ms),
        format!("{:.3}", l.p99_ms),
        format!("{:.3}", l.p999_ms),
        format!("{:.3}", l.max_ms),
    ]
}

const LATENCY_HEADER: [&str; 7] = [
    "latency", "samples", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
];

/// The throughput, CPU and RSS charts of one run's timeline.
fn timeline_charts(out: &mut String, name: &str, charts: &RunCharts, size: usize) -> Result<()> {
    let t = &charts.timeline;
    let win = charts.window_seconds;
    push_chart(
        out,
        time_chart(
            &format!("{name}: throughput per second"),
            "MB/s (10^6 B of payload)",
            &[
                Series {
                    name: "acked (produce)".into(),
                    points: if t.iter().any(|s| s.acked > 0) {
                        mb_per_sec(t, size, |s| s.acked)
                    } else {
                        Vec::new()
                    },
                },
                Series {
                    name: "received (consume)".into(),
                    points: if t.iter().any(|s| s.received > 0) {
                        mb_per_sec(t, size, |s| s.received)
                    } else {
                        Vec::new()
                    },
                },
            ],
            win,
        ),
    )?;
    push_chart(
        out,
        time_chart(
            &format!("{name}: CPU per second"),
            "% of one core",
            &[
                Series {
                    name: "broker".into(),
                    points: points(t, |s| s.broker_cpu_percent, |v| v),
                },
                Series {
                    name: "sluice-bench (client)".into(),
                    points: points(t, |s| s.client_cpu_percent, |v| v),
                },
            ],
            win,
        ),
    )?;
    push_chart(
        out,
        time_chart(
            &format!("{name}: broker resident memory"),
            "RSS, MiB",
            &[Series {
                name: "broker RSS".into(),
                points: points(t, |s| s.broker_rss_bytes, |v| v as f64 / MIB),
            }],
            win,
        ),
    )?;
    Ok(())
}

/// One load run: its settings, figures and charts.
pub fn run_section(heading: &str, r: &RunReport) -> Result<String> {
    let mut out = format!("<section><h2>{}</h2>\n", esc(heading));
    let rate = r
        .target_rate
        .map_or("max (as fast as librdkafka accepts)".into(), |v| {
            format!("{} msg/s", group_thousands(v))
        });
    out.push_str(&kv_table(&[
        ("workload".into(), r.name.clone()),
        (
            "topics × partitions".into(),
            format!("{} × {}", r.topics, r.partitions),
        ),
        ("message size".into(), format!("{} B", r.message_size)),
        ("target rate".into(), rate),
        ("acks".into(), r.acks.clone()),
        (
            "measured window".into(),
            match r.charts.window_seconds {
                Some((a, b)) => format!("{a:.1} s .. {b:.1} s after the load started"),
                None => "from the first record received to the last".into(),
            },
        ),
    ]));
    let mut rows = Vec::new();
    for (what, tp) in [("produced (acked)", &r.produced), ("consumed", &r.consumed)] {
        if let Some(t) = tp {
            rows.push(vec![
                what.to_string(),
                format!("{:.1}", t.mb_per_sec),
                group_thousands(t.msg_per_sec),
                format!("{:.2}", t.seconds),
            ]);
        }
    }
    if !rows.is_empty() {
        out.push_str(&table(&["throughput", "MB/s", "msg/s", "over s"], &rows));
    }
    let mut lat = Vec::new();
    if let Some(l) = &r.produce_latency {
        lat.push(latency_row("produce ack", l));
    }
    if let Some(l) = &r.e2e_latency {
        lat.push(latency_row("end-to-end", l));
    }
    if !lat.is_empty() {
        out.push_str(&table(&LATENCY_HEADER, &lat));
    }
    let mut usage = Vec::new();
    for (who, u) in [("broker", &r.broker), ("sluice-bench (client)", &r.client)] {
        if let Some(u) = u {
            usage.push(vec![
                who.to_string(),
                format!("{:.2}", u.cpu_seconds),
                format!("{:.0}", u.cpu_percent_of_core),
                format!("{:.0}", u.peak_rss_bytes as f64 / MIB),
            ]);
        }
    }
    if !usage.is_empty() {
        out.push_str(&table(
            &["process", "CPU s", "CPU % of a core", "peak RSS MiB"],
            &usage,
        ));
    }
    let errs = r.produce_errors + r.consume_errors;
    if errs > 0 {
        let _ = writeln!(
            out,
            "<p class=\"warn\">{} produce and {} consume errors; first: {}</p>",
            r.produce_errors,
            r.consume_errors,
            esc(r.first_error.as_deref().unwrap_or("-"))
        );
    }
    push_chart(
        &mut out,
        percentile_chart(
            &format!("{heading}: latency by percentile"),
            &[
                ("produce ack".to_string(), r.charts.ack_curve.as_slice()),
                ("end-to-end".to_string(), r.charts.e2e_curve.as_slice()),
            ],
        ),
    )?;
    timeline_charts(&mut out, heading, &r.charts, r.message_size)?;
    out.push_str("</section>\n");
    Ok(out)
}

/// The physical references a run measured.
pub fn limits_section(l: &Limits) -> String {
    let gb = |v: Option<f64>| v.map_or("–".into(), |b| format!("{:.0} MB/s", b / 1e6));
    let mut rows = vec![
        vec!["loopback TCP".into(), gb(l.loopback_bytes_per_sec)],
        vec![
            format!(
                "O_DIRECT write (QD {}, {} KiB blocks)",
                l.direct_write_queue_depth,
                l.direct_block_bytes / 1024
            ),
            gb(l.direct_write_bytes_per_sec),
        ],
        vec![
            format!("O_DIRECT read (QD {})", l.direct_read_queue_depth),
            gb(l.direct_read_bytes_per_sec),
        ],
        vec![
            "4 KiB write + fdatasync".into(),
            l.fdatasync_per_sec
                .map_or("–".into(), |v| format!("{} /s", group_thousands(v))),
        ],
    ];
    if let Some(f) = &l.fdatasync_latency {
        rows.push(vec![
            "4 KiB write + fdatasync latency".into(),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                f.p50_ms, f.p99_ms, f.max_ms
            ),
        ]);
    }
    rows.push(vec!["probe directory".into(), l.dir.clone()]);
    let mut out = String::from("<section><h2>Physical references (io_uring probes)</h2>\n");
    out.push_str(&table(&["reference", "measured"], &rows));
    for e in &l.errors {
        let _ = writeln!(out, "<p class=\"warn\">probe failed: {}</p>", esc(e));
    }
    out.push_str("</section>\n");
    out
}

/// Results as ratios to their references, with the targets.
pub fn ratios_section(ratios: &[Ratio]) -> String {
    let rows: Vec<Vec<String>> = ratios
        .iter()
        .map(|r| {
            vec![
                r.metric.clone(),
                format!("{:.1} {}", r.measured, r.unit),
                format!("{} = {:.1} {}", r.reference_name, r.reference, r.unit),
                format!("{:.1} %", r.ratio * 100.0),
                r.target.clone().unwrap_or_default(),
                match r.pass {
                    Some(true) => "PASS".into(),
                    Some(false) => "MISS".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    format!(
        "<section><h2>Results against the references</h2>\n{}</section>\n",
        table(
            &["metric", "measured", "reference", "ratio", "target", ""],
            &rows
        )
    )
}

/// The body of a `suite` page.
pub fn suite_body(r: &SuiteReport) -> Result<String> {
    let mut out = ratios_section(&r.ratios);
    out.push_str(&limits_section(&r.limits));
    out.push_str(&run_section("Max produce (acks=all)", &r.max_produce)?);
    out.push_str(&run_section("Max consume", &r.max_consume)?);
    out.push_str(&run_section(
        "End-to-end at 50 % of max produce",
        &r.e2e_half_load,
    )?);
    Ok(out)
}

const STYLE: &str =
    "body{font-family:sans-serif;max-width:900px;margin:1em auto;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}\
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto}\
.key{margin-right:1.5em}figcaption{font-size:.9em}.warn{color:#a00}.note{color:#555;font-size:.9em}";

/// The whole page: settings first, then `body`.
pub fn page(info: &PageInfo, body: &str) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>{}</title>\n<style>{STYLE}</style></head><body>",
        esc(&info.title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(&info.title));
    out.push_str("<section><h2>Run</h2>\n");
    out.push_str(&kv_table(&info.settings));
    out.push_str(
        "<p class=\"note\">MB = 10<sup>6</sup> bytes of record payload. Percentile plots: \
         the x axis is the percentile on the log scale of 1/(1&minus;p) (each step one more \
         nine), the y axis latency in ms on a log scale, read from the run's HDR histograms \
         (3 significant digits); each curve ends at its maximum. Time plots: one sample per \
         second; dashed grey vertical lines bound the measured window.</p>\n</section>\n",
    );
    out.push_str(body);
    out.push_str("</body></html>\n");
    out
}

/// Writes `html` to `dir/index.html`, creating `dir`; returns the file's path.
pub fn write_page(dir: &Path, html: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests;
