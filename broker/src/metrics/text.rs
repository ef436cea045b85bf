//! The Prometheus text exposition format, version 0.0.4: a `# HELP` and a `# TYPE` line
//! per family, then its samples, each family's lines together. Label values are escaped
//! (`\\`, `\"`, `\n`) and so is help text (`\\`, `\n`); names are the caller's constants.
//!
//! ```text
//!  # HELP sluice_bytes_in_total Record bytes appended by producers.
//!  # TYPE sluice_bytes_in_total counter
//!  sluice_bytes_in_total{topic="orders"} 1024
//! ```

use std::fmt::Write as _;

use sluice_storage::LatencyHistogram;

/// The `Content-Type` of this format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An exposition being written. Owned by the scrape that writes it.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its help and type lines. Its samples must follow before the next.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    fn series(&mut self, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        self.out.push_str(name);
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_none() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_value(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// One sample of an integer value.
    pub(crate) fn int(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.series(name, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample of a signed integer value (a gauge that may go below zero).
    pub(crate) fn signed(&mut self, name: &str, labels: &[(&str, &str)], value: i64) {
        self.series(name, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample of a real value.
    pub(crate) fn real(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.series(name, labels, None);
        self.out.push(' ');
        push_float(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's `_bucket{le}` series (cumulative, ending with `+Inf`), `_sum` and
    /// `_count`, for the family `name`.
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyHistogram) {
        let bucket = format!("{name}_bucket");
        for (le, n) in h.cumulative() {
            self.series(&bucket, labels, Some(("le", le)));
            let _ = writeln!(self.out, " {n}");
        }
        self.series(&bucket, labels, Some(("le", "+Inf")));
        let _ = writeln!(self.out, " {}", h.count());
        self.real(&format!("{name}_sum"), labels, h.sum_seconds());
        self.int(&format!("{name}_count"), labels, h.count());
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::default();
        e.family("sluice_x_total", Kind::Counter, "A \\ thing\nover lines.");
        e.int("sluice_x_total", &[("topic", "a\"b\\c\nd")], 7);
        e.family("sluice_y", Kind::Gauge, "Y.");
        e.int("sluice_y", &[], 3);
        e.real("sluice_y", &[("k", "v")], 0.5);
        e.signed("sluice_y", &[("k", "w")], -2);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP sluice_x_total A \\\\ thing\\nover lines.\n\
             # TYPE sluice_x_total counter\n\
             sluice_x_total{topic=\"a\\\"b\\\\c\\nd\"} 7\n\
             # HELP sluice_y Y.\n\
             # TYPE sluice_y gauge\n\
             sluice_y 3\n\
             sluice_y{k=\"v\"} 0.5\n\
             sluice_y{k=\"w\"} -2\n"
        );
    }

    #[test]
    fn histogram_series() {
        let mut h = LatencyHistogram::default();
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(20));
        let mut e = Exposition::default();
        e.family("sluice_d_seconds", Kind::Histogram, "D.");
        e.histogram("sluice_d_seconds", &[("api", "Produce")], &h);
        let text = e.finish();
        assert!(text.contains("sluice_d_seconds_bucket{api=\"Produce\",le=\"0.001\"} 0\n"));
        assert!(text.contains("sluice_d_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("sluice_d_seconds_bucket{api=\"Produce\",le=\"10\"} 1\n"));
        assert!(text.contains("sluice_d_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("sluice_d_seconds_sum{api=\"Produce\"} 20.002\n"));
        assert!(text.contains("sluice_d_seconds_count{api=\"Produce\"} 2\n"));
        assert_eq!(text.lines().count(), 2 + 17 + 2);
    }
}
