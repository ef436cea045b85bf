//! Checks of `deploy/` that need no broker: the example `sluice.toml` is accepted by the
//! broker's own config parser and describes node 1 of a 3-voter quorum, the systemd unit
//! starts `sluice serve` with that file and pins the same CPUs, and the unit passes
//! `systemd-analyze verify` where systemd-analyze is installed (skipped with a note
//! otherwise). Cheap: no process but systemd-analyze is started.

use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use sluice_broker::BrokerConfig;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn read(name: &str) -> Result<String> {
    let path = format!("{DEPLOY}/{name}");
    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
}

/// The value of `Key=` in the unit (the last one wins, as in systemd).
fn directive(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .next_back()
}

#[test]
fn example_config_is_node_1_of_3() -> Result<()> {
    let text = read("sluice.toml")?;
    let mut config = BrokerConfig::default();
    config.apply_toml(&text)?;
    let quorum = config.quorum()?;
    ensure!(
        quorum.node == 1 && quorum.broker && quorum.controller,
        "{quorum:?}"
    );
    let voters: Vec<String> = quorum
        .voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect();
    ensure!(
        voters == ["1@10.0.0.1:9093", "2@10.0.0.2:9093", "3@10.0.0.3:9093"],
        "{voters:?}"
    );
    ensure!(
        quorum.listener.map(|a| a.to_string()).as_deref() == Some("10.0.0.1:9093"),
        "{quorum:?}"
    );
    ensure!(config.data_dir().to_str() == Some("/var/lib/sluice"));
    ensure!(
        config.advertised() == Some(("10.0.0.1".to_string(), 9092)),
        "{:?}",
        config.advertised()
    );
    Ok(())
}

#[test]
fn unit_runs_the_example_config() -> Result<()> {
    let unit = read("sluice.service")?;
    let exec = directive(&unit, "ExecStart").context("no ExecStart")?;
    ensure!(
        exec.ends_with("sluice serve --config /etc/sluice/sluice.toml"),
        "{exec}"
    );
    for key in [
        "LimitMEMLOCK",
        "LimitNOFILE",
        "Restart",
        "TimeoutStopSec",
        "KillSignal",
    ] {
        ensure!(directive(&unit, key).is_some(), "the unit lacks {key}=");
    }
    // the shards' cpuset must lie within the process's CPUAffinity
    let toml: toml::Table = read("sluice.toml")?.parse()?;
    let cpuset = toml
        .get("cpuset")
        .and_then(|v| v.as_str())
        .context("sluice.toml has no cpuset")?;
    ensure!(
        directive(&unit, "CPUAffinity").as_deref() == Some(cpuset),
        "CPUAffinity {:?} != cpuset {cpuset}",
        directive(&unit, "CPUAffinity")
    );
    Ok(())
}

#[test]
fn unit_passes_systemd_analyze_verify() -> Result<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipped");
        return Ok(());
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built
    let unit =
        read("sluice.service")?.replace("/usr/local/bin/sluice", env!("CARGO_BIN_EXE_sluice"));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sluice.service");
    std::fs::write(&path, unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !stderr.contains("sluice.service"),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status.code()
    );
    Ok(())
}
