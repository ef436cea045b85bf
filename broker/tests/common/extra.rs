//! A `sluice` process started by hand, outside `local-cluster.sh`: a broker-only node that
//! joins a running cluster (a new broker to move replicas to), or a node in a role the
//! script does not start.

use anyhow::{Context as _, Result};

use super::cluster::Cluster;

/// Killed (SIGKILL) on drop; its log tail is printed then (shown for failing tests only).
pub(crate) struct ExtraNode {
    child: std::process::Child,
    log: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl ExtraNode {
    /// Starts `sluice --data-dir <own tempdir>/data <args>`.
    pub(crate) fn spawn(args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-extra-").tempdir()?;
        let log = dir.path().join("log");
        let mut full = vec![
            "--data-dir".to_string(),
            dir.path().join("data").display().to_string(),
        ];
        full.extend(args.iter().cloned());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&full)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning an extra node")?;
        Ok(Self { child, log, dir })
    }

    /// A broker-only node `id` of `cluster` (a raft learner, not a voter) with the given
    /// extra settings; returns it and its Kafka address.
    pub(crate) fn broker_only(
        cluster: &Cluster,
        id: u32,
        settings: &[(&str, &str)],
    ) -> Result<(Self, String)> {
        let args = cluster.node_args(1)?;
        let voters = args
            .iter()
            .filter_map(|a| a.strip_prefix("controller.quorum.voters="))
            .next()
            .context("node 1 has no controller.quorum.voters")?
            .to_string();
        let kafka_port = super::free_port();
        let mut extra = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{kafka_port}"),
            "--cores".to_string(),
            "1".to_string(),
            "--set".to_string(),
            "cpuset=none".to_string(),
        ];
        for (k, v) in [
            ("node.id", id.to_string()),
            ("process.roles", "broker".to_string()),
            ("controller.quorum.voters", voters),
            (
                "controller.listener",
                format!("127.0.0.1:{}", super::free_port()),
            ),
            ("cluster.id", cluster.cluster_id().to_string()),
        ]
        .into_iter()
        .chain(settings.iter().map(|(k, v)| (*k, v.to_string())))
        {
            extra.push("--set".to_string());
            extra.push(format!("{k}={v}"));
        }
        Ok((Self::spawn(&extra)?, format!("127.0.0.1:{kafka_port}")))
    }

    /// The node's process id (for SIGSTOP/SIGCONT).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("----- extra node log -----\n{}", tail.join("\n"));
        }
    }
}
