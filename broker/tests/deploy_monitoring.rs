//! Checks of the monitoring files in `deploy/` that need no broker: every `sluice_*` metric
//! the Grafana dashboard and the Prometheus alert rules name is a family the metrics module
//! exports (a histogram's `_bucket`, `_sum` and `_count` only for histogram families), the
//! dashboard's panels use its `datasource` variable and filter on `$instance`, each alert
//! rule has `for:`, a severity and a summary and description, and, where `promtool` is
//! installed (Debian's `prometheus` package), the rules pass `promtool check rules` and
//! their unit tests (`deploy/prometheus-alerts.test.yml`) pass `promtool test rules`
//! (skipped with a note otherwise).
//!
//! The exported names are read from the source of `broker/src/metrics/` (each file up to
//! its `#[cfg(test)]` module): family names are string literals there, written once.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> Result<String> {
    let path = format!("{ROOT}/{path}");
    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
}

/// The metric families the broker exports, and which of them are histograms.
struct Families {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

impl Families {
    fn load() -> Result<Families> {
        let dir = format!("{ROOT}/broker/src/metrics");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {dir}"))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        let mut names = BTreeSet::new();
        let mut histograms = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            // the tests' made-up families are not exported
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            names.extend(literals(code));
            // without whitespace, so rustfmt's line breaks do not matter
            let flat: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            for name in literals(code) {
                if flat.contains(&format!("\"{name}\",Kind::Histogram")) {
                    histograms.insert(name);
                }
            }
            // `histogram(<args>` whose first string literal comes before any `)`: the
            // helper `histogram(&mut e, "name", ...)` and `e.histogram("name", ...)`
            for (i, _) in flat.match_indices("histogram(") {
                let rest = &flat[i + "histogram(".len()..];
                if let (Some(quote), close) = (rest.find('"'), rest.find(')')) {
                    if close.is_none_or(|c| quote < c) {
                        if let Some(name) = literals(&rest[quote..]).into_iter().next() {
                            histograms.insert(name);
                        }
                    }
                }
            }
        }
        ensure!(
            names.len() >= 25 && names.contains("sluice_bytes_in_total"),
            "found only {names:?} in {dir}: has the metrics module moved?"
        );
        ensure!(
            histograms.contains("sluice_request_duration_seconds")
                && histograms.contains("sluice_fsync_duration_seconds"),
            "histogram families not recognised: {histograms:?}"
        );
        Ok(Families { names, histograms })
    }

    /// Whether a series name in a query belongs to an exported family.
    fn knows(&self, series: &str) -> bool {
        self.names.contains(series)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                series
                    .strip_suffix(suffix)
                    .is_some_and(|family| self.histograms.contains(family))
            })
    }

    /// The names in `text` that are not exported.
    fn unknown_in(&self, text: &str) -> Vec<String> {
        metric_names(text)
            .into_iter()
            .filter(|n| !self.knows(n))
            .collect()
    }
}

/// String literals of the form `"sluice_..."` (a whole literal of `[a-z0-9_]`).
fn literals(code: &str) -> Vec<String> {
    code.match_indices("\"sluice_")
        .filter_map(|(i, _)| {
            let rest = &code[i + 1..];
            let end = rest.find('"')?;
            let name = &rest[..end];
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

/// Every `sluice_[a-z0-9_]+` word in `text` (not preceded by a word character).
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices("sluice_")
        .filter(|(i, _)| !text[..*i].chars().next_back().is_some_and(word))
        .map(|(i, _)| {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn dashboard_queries_use_exported_metrics() -> Result<()> {
    let families = Families::load()?;
    let text = read("deploy/grafana-dashboard.json")?;
    let dashboard: Value = serde_json::from_str(&text).context("grafana-dashboard.json")?;

    let variables = dashboard["templating"]["list"]
        .as_array()
        .context("no templating.list")?;
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    let ds = variable("datasource").context("no datasource variable")?;
    ensure!(
        ds["type"] == "datasource" && ds["query"] == "prometheus",
        "{ds}"
    );
    ensure!(variable("instance").is_some(), "no instance variable");

    let mut queries = 0;
    let mut used = BTreeSet::new();
    for p in panels(&dashboard) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        ensure!(
            p["datasource"]["uid"] == "${datasource}",
            "panel {title:?}: datasource {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().context("a panel without targets")?;
        ensure!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().context("a target without expr")?;
            queries += 1;
            ensure!(
                expr.contains("$instance"),
                "panel {title:?}: {expr} ignores $instance"
            );
            let unknown = families.unknown_in(expr);
            ensure!(
                unknown.is_empty(),
                "panel {title:?}: {expr} names {unknown:?}, not exported"
            );
            used.extend(metric_names(expr));
        }
    }
    ensure!(queries >= 20, "only {queries} queries");
    // descriptions and variable queries too
    let unknown = families.unknown_in(&text);
    ensure!(unknown.is_empty(), "the dashboard names {unknown:?}");
    // and the dashboard covers what the broker exports
    let unused: Vec<_> = families
        .names
        .iter()
        .filter(|f| {
            !used.iter().any(|u| {
                u == *f
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| u.strip_suffix(s) == Some(f.as_str()))
            })
        })
        .collect();
    ensure!(unused.is_empty(), "no panel shows {unused:?}");
    Ok(())
}

#[test]
fn alert_rules_use_exported_metrics_and_say_what_to_check() -> Result<()> {
    let families = Families::load()?;
    let text = read("deploy/prometheus-alerts.yml")?;
    let unknown = families.unknown_in(&text);
    ensure!(unknown.is_empty(), "the alert rules name {unknown:?}");

    // without comments, split at each rule
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let rules: Vec<&str> = body.split("- alert:").skip(1).collect();
    ensure!(rules.len() >= 6, "only {} alert rules", rules.len());
    for rule in rules {
        let name = rule.split_whitespace().next().unwrap_or("?");
        for key in [
            "expr:",
            "for:",
            "labels:",
            "severity:",
            "annotations:",
            "summary:",
            "description:",
        ] {
            ensure!(rule.contains(key), "rule {name} has no {key}");
        }
    }
    for wanted in [
        "sluice_under_replicated_partitions",
        "sluice_offline_partitions",
        "sluice_consumer_group_lag",
        "sluice_storage_unflushed_bytes",
        "sluice_broker_ready",
        "sluice_request_duration_seconds_bucket",
        "sluice_fsync_duration_seconds_bucket",
        "node_filesystem_avail_bytes",
    ] {
        ensure!(text.contains(wanted), "no rule uses {wanted}");
    }
    Ok(())
}

#[test]
fn alert_rules_pass_promtool() -> Result<()> {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool is not installed (Debian: apt-get install prometheus): skipped");
        return Ok(());
    }
    for args in [
        ["check", "rules", "deploy/prometheus-alerts.yml"],
        ["test", "rules", "deploy/prometheus-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(ROOT)
            .output()?;
        ensure!(
            out.status.success(),
            "promtool {}: {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
