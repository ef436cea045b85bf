//! The run's report: a one-page text summary (faults, operations, anomalies with the first
//! offending operations) and the same as JSON (`verdict`, `operations`, `faults`,
//! `anomalies`, `history`, plus details).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::checker::{Anomaly, Verdict};
use crate::history::Meta;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "pass" or "fail".
    pub verdict: String,
    pub operations: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    /// Counts by kind; empty on a pass.
    pub anomalies: BTreeMap<String, u64>,
    /// The history file's path.
    pub history: String,
    /// The first anomalies of each kind.
    pub first_anomalies: Vec<Anomaly>,
    pub produce_errors: BTreeMap<String, u64>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<u32>,
    /// The command that replays the run with the same schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_binary: Option<String>,
}

impl Report {
    pub fn new(v: Verdict, history: &Path, meta: Option<&Meta>) -> Self {
        Report {
            verdict: if v.passed() { "pass" } else { "fail" }.into(),
            operations: v.operations,
            faults: v.faults,
            anomalies: v.anomalies,
            history: history.display().to_string(),
            first_anomalies: v.examples,
            produce_errors: v.produce_errors,
            notes: v.notes,
            seed: meta.map(|m| m.seed),
            brokers: meta.map(|m| m.brokers),
            replay: meta.map(|m| m.replay.clone()),
            schedule: meta.map(|m| m.schedule.clone()),
            broker_binary: meta.map(|m| m.broker_binary.clone()),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The one-page text form.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== sluice-chaos report: {} ==",
            self.verdict.to_uppercase()
        );
        if let (Some(seed), Some(b)) = (self.seed, self.brokers) {
            let _ = writeln!(s, "seed {seed}, {b} broker(s)");
        }
        let _ = writeln!(s, "history: {}", self.history);
        if let Some(b) = &self.broker_binary {
            let _ = writeln!(s, "broker:  {b}");
        }
        if let Some(r) = &self.replay {
            let _ = writeln!(s, "replay:  {r}");
        }
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(s, "faults:     {}", join(&self.faults));
        let _ = writeln!(s, "operations: {}", join(&self.operations));
        if !self.produce_errors.is_empty() {
            let _ = writeln!(s, "produce errors: {}", join(&self.produce_errors));
        }
        let _ = writeln!(s, "anomalies:  {}", join(&self.anomalies));
        for a in &self.first_anomalies {
            let _ = writeln!(s, "  [{}] t={}ms {}", a.kind.name(), a.t, a.detail);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
