//! The `failover` workload: a local cluster (`deploy/local-cluster.sh`) whose active
//! controller is killed round after round, with the time until a new one is elected,
//! the cluster takes changes again and the killed node is back; its report table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::Consumer;

use super::node_logs::{majority_leader, node_view, read_log, unfenced_line, NodeView};
use super::{
    admin_client, create_call, delete_topics, error_counts, metadata_client, runtime, FailoverArgs,
    FailoverReport, FailoverRound, MsSummary,
};

/// What `deploy/local-cluster.sh` saved in DIR/cluster.env.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterEnv {
    /// Node count.
    pub n: usize,
    /// Kafka ports, node 1 first.
    pub kafka_ports: Vec<u16>,
    /// The saved SETTINGS line.
    pub settings: String,
}

/// Parses cluster.env.
pub fn parse_cluster_env(text: &str) -> Result<ClusterEnv> {
    let mut kv = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            kv.insert(k.trim().to_string(), v.to_string());
        }
    }
    let n: usize = kv
        .get("N")
        .ok_or_else(|| anyhow!("no N="))?
        .trim()
        .parse()
        .context("N")?;
    let kafka_ports = kv
        .get("KAFKA_PORTS")
        .ok_or_else(|| anyhow!("no KAFKA_PORTS="))?
        .split(',')
        .map(|p| p.trim().parse::<u16>().context("KAFKA_PORTS"))
        .collect::<Result<Vec<_>>>()?;
    if n == 0 || kafka_ports.len() != n {
        bail!("N={n} but {} Kafka ports", kafka_ports.len());
    }
    Ok(ClusterEnv {
        n,
        kafka_ports,
        settings: kv.get("SETTINGS").cloned().unwrap_or_default(),
    })
}

struct Cluster {
    dir: PathBuf,
    env: ClusterEnv,
    script: PathBuf,
}

fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may hold spaces or parens).
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

#[allow(unsafe_code)]
fn kill9(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid")?;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Cluster {
    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn ids(&self) -> impl Iterator<Item = u64> {
        1..=self.env.n as u64
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.env.kafka_ports[id as usize - 1])
    }

    /// The node's pid if its pid file names a live process.
    fn pid(&self, id: u64) -> Option<u32> {
        let text = fs::read_to_string(self.node_dir(id).join("pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        pid_alive(pid).then_some(pid)
    }

    fn live(&self) -> Vec<u64> {
        self.ids().filter(|&id| self.pid(id).is_some()).collect()
    }

    fn view(&self, id: u64) -> NodeView {
        read_log(&self.node_dir(id).join("log"))
            .map(|l| node_view(&l))
            .unwrap_or_default()
    }

    /// Waits until the majority of the live nodes names a leader that is live and has
    /// logged `active controller` since; returns it and its view.
    fn active_controller(&self, timeout: Duration) -> Result<(u64, NodeView)> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let views: Vec<(u64, NodeView)> = live.iter().map(|&id| (id, self.view(id))).collect();
            let only: Vec<NodeView> = views.iter().map(|(_, v)| v.clone()).collect();
            let leader = majority_leader(&only);
            let mut why = format!(
                "live nodes {live:?}, last leader lines {:?}",
                views
                    .iter()
                    .map(|(id, v)| (id, v.last_leader.as_ref().map(|l| l.leader)))
                    .collect::<Vec<_>>()
            );
            if let Some(l) = leader {
                match views.iter().find(|(id, _)| *id == l) {
                    Some((_, v)) if v.active_since_leader.is_some() => return Ok((l, v.clone())),
                    Some(_) => {
                        let _ = write!(why, "; node {l} has not logged \"active controller\"");
                    }
                    None => {
                        let _ = write!(why, "; the majority's leader {l} is not running");
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("no active controller in the logs after {timeout:?}: {why}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `local-cluster.sh start-node DIR ID` with the settings saved in cluster.env.
    fn start_node(&self, id: u64) -> Result<()> {
        let out = Command::new(&self.script)
            .arg("start-node")
            .arg(&self.dir)
            .arg(id.to_string())
            .env_remove("SLUICE_CLUSTER_SETTINGS")
            .env_remove("SLUICE_CORES")
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} start-node {} {id} failed ({}):\n{}",
                self.script.display(),
                self.dir.display(),
                out.status,
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until some node's log shows the controller unfencing node `id` at or after
    /// `since`; returns that line's timestamp.
    fn wait_unfenced(&self, id: u64, since: SystemTime, timeout: Duration) -> Result<SystemTime> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in self.ids() {
                let Ok(log) = read_log(&self.node_dir(n).join("log")) else {
                    continue;
                };
                if let Some(t) = unfenced_line(&log, id, since) {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                bail!("no \"broker unfenced node={id}\" line in the node logs within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `id` answers Metadata listing every broker of the cluster. Each
    /// poll uses a fresh client bootstrapped with that node alone, so it is the one asked.
    fn wait_lists_all(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr(id);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match metadata_client(&addr).map(|c| c.fetch_metadata(None, Duration::from_secs(2))) {
                Ok(Ok(md)) => {
                    let ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                    if ids.len() >= self.env.n {
                        return Ok(());
                    }
                    last = format!("lists brokers {ids:?}");
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "node {id} ({addr}) did not list {} brokers within {timeout:?}: {last}",
            self.env.n
        )
    }
}

/// Finds the cluster script: as given if it exists, else under a parent directory of the
/// running binary (target/release/sluice-bench -> the repository).
pub fn find_script(script: &Path) -> Result<PathBuf> {
    if script.is_file() {
        return Ok(script.to_path_buf());
    }
    if script.is_relative() {
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                let p = dir.join(script);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    bail!(
        "cluster script {} not found (from the current directory or the binary's repository); pass --script PATH",
        script.display()
    )
}

fn since_ms(t: Option<SystemTime>, from: SystemTime) -> Option<f64> {
    let d = t?.duration_since(from).ok()?;
    Some(d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------
// `failover`.

/// Runs `sluice-bench failover`.
pub fn run_failover(a: &FailoverArgs, progress: bool) -> Result<FailoverReport> {
    let env_path = a.cluster_dir.join("cluster.env");
    let env = parse_cluster_env(
        &fs::read_to_string(&env_path)
            .with_context(|| format!("reading {}", env_path.display()))?,
    )
    .with_context(|| format!("parsing {}", env_path.display()))?;
    let script = find_script(&a.script)?;
    let cluster = Cluster {
        dir: a.cluster_dir.clone(),
        env,
        script,
    };
    if cluster.env.n < 2 {
        bail!("failover needs a cluster of at least 2 nodes");
    }
    let live = cluster.live();
    if live.len() != cluster.env.n {
        bail!(
            "only nodes {live:?} of {} are running; start the cluster first",
            cluster.env.n
        );
    }
    let partitions = i32::try_from(a.partitions).context("--partitions")?;
    let rf = i32::try_from(a.replication_factor).context("--replication-factor")?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let rt = runtime()?;
    let mut tried: Vec<String> = Vec::new();
    let mut rounds = Vec::new();
    let mut fatal = None;

    for round in 1..=a.rounds {
        let (victim, view) = match cluster.active_controller(a.wait_timeout) {
            Ok(x) => x,
            Err(e) => {
                fatal = Some(e.context(format!("round {round}")));
                break;
            }
        };
        let Some(pid) = cluster.pid(victim) else {
            fatal = Some(anyhow!("round {round}: node {victim} has no live pid"));
            break;
        };
        let killed_term = view.active_since_leader.and_then(|(_, t)| t);
        let survivors: Vec<u64> = cluster.ids().filter(|&id| id != victim).collect();
        let bootstrap: Vec<String> = survivors.iter().map(|&id| cluster.addr(id)).collect();
        let bootstrap = bootstrap.join(",");
        if progress {
            eprintln!(
                "round {round}: active controller is node {victim} (pid {pid}, term {}); kill -9",
                killed_term.map_or("?".into(), |t| t.to_string())
            );
        }

        let killed_wall = SystemTime::now();
        let killed_at = Instant::now();
        kill9(pid)?;
        let mut r = FailoverRound {
            round,
            killed_node: victim,
            killed_pid: pid,
            killed_term,
            ok: false,
            failover_ms: None,
            attempts: 0,
            errors: Vec::new(),
            success_call_ms: None,
            new_controller: None,
            elected_after_ms: None,
            active_after_ms: None,
            restart_ms: None,
            unfenced_after_ms: None,
        };
        let probe = (|| -> Result<()> {
            let admin = admin_client(&bootstrap)?;
            let mut errors = BTreeMap::new();
            while killed_at.elapsed() < a.give_up {
                r.attempts += 1;
                let name = format!("sluice-bench-failover-{tag}-r{round}-{}", r.attempts);
                tried.push(name.clone());
                let o = rt.block_on(create_call(
                    &admin,
                    std::slice::from_ref(&name),
                    partitions,
                    rf,
                    a.request_timeout,
                ));
                if o.failed.is_empty() && !o.created.is_empty() {
                    r.ok = true;
                    r.failover_ms = Some(killed_at.elapsed().as_secs_f64() * 1e3);
                    r.success_call_ms = Some(o.latency.as_secs_f64() * 1e3);
                    break;
                }
                for (_, e) in o.failed {
                    *errors.entry(e).or_insert(0) += 1;
                }
                if o.latency < Duration::from_millis(20) {
                    // An immediate refusal: don't spin.
                    std::thread::sleep(Duration::from_millis(20) - o.latency);
                }
            }
            r.errors = error_counts(&errors);
            Ok(())
        })();
        if progress {
            match (&probe, r.failover_ms) {
                (Err(e), _) => eprintln!("round {round}: probe failed: {e:#}"),
                (Ok(()), Some(ms)) => eprintln!(
                    "round {round}: CreateTopics succeeded {:.0} ms after the kill ({} attempt(s){})",
                    ms,
                    r.attempts,
                    if r.errors.is_empty() {
                        String::new()
                    } else {
                        let e: Vec<String> =
                            r.errors.iter().map(|e| format!("{} x{}", e.error, e.count)).collect();
                        format!("; {}", e.join(", "))
                    }
                ),
                (Ok(()), None) => eprintln!(
                    "round {round}: no CreateTopics succeeded within {:?} ({} attempts)",
                    a.give_up, r.attempts
                ),
            }
        }

        // Who took over, and when (from the survivors' logs).
        if let Ok((leader, v)) = cluster.active_controller(Duration::from_secs(10)) {
            if leader != victim {
                r.new_controller = Some(leader);
                r.active_after_ms =
                    since_ms(v.active_since_leader.and_then(|(t, _)| t), killed_wall);
                r.elected_after_ms = since_ms(v.last_leader.and_then(|l| l.at), killed_wall);
            }
        }

        // Bring the node back even if the probe failed, so the cluster is left whole, and
        // wait until the controller has unfenced it: only then is the cluster whole again.
        let restart_wall = SystemTime::now();
        let restart_at = Instant::now();
        let restarted = cluster
            .start_node(victim)
            .and_then(|()| cluster.wait_lists_all(victim, a.wait_timeout))
            .and_then(|()| {
                r.restart_ms = Some(restart_at.elapsed().as_secs_f64() * 1e3);
                if progress {
                    eprintln!(
                        "round {round}: node {victim} restarted and lists {} brokers after {:.1} s",
                        cluster.env.n,
                        restart_at.elapsed().as_secs_f64()
                    );
                }
                cluster.wait_unfenced(victim, restart_wall, a.wait_timeout)
            });
        match restarted {
            Ok(at) => {
                r.unfenced_after_ms = since_ms(Some(at), restart_wall);
                if progress {
                    eprintln!(
                        "round {round}: node {victim} unfenced {:.1} s after the restart",
                        r.unfenced_after_ms.unwrap_or(0.0) / 1e3
                    );
                }
            }
            Err(e) => {
                rounds.push(r);
                fatal = Some(e.context(format!("round {round}: restarting node {victim}")));
                break;
            }
        }
        rounds.push(r);
        if let Err(e) = probe {
            fatal = Some(e.context(format!("round {round}")));
            break;
        }
        if round < a.rounds {
            std::thread::sleep(a.settle);
        }
    }

    let mut deleted = 0;
    if !a.keep && !tried.is_empty() {
        let all: Vec<String> = cluster.ids().map(|id| cluster.addr(id)).collect();
        match delete_topics(&all.join(","), &tried, Duration::from_secs(30)) {
            Ok(d) => {
                deleted = d.deleted;
                if !d.errors.is_empty() && progress {
                    eprintln!("warning: deleting probe topics: {:?}", d.errors);
                }
            }
            Err(e) => eprintln!("warning: deleting probe topics: {e:#}"),
        }
    }
    if let Some(e) = fatal {
        if rounds.is_empty() {
            return Err(e);
        }
        eprintln!("error: {e:#} (reporting the rounds completed)");
    }

    let ok_ms: Vec<f64> = rounds.iter().filter_map(|r| r.failover_ms).collect();
    let active: Vec<f64> = rounds.iter().filter_map(|r| r.active_after_ms).collect();
    let restart: Vec<f64> = rounds.iter().filter_map(|r| r.restart_ms).collect();
    let unfenced: Vec<f64> = rounds.iter().filter_map(|r| r.unfenced_after_ms).collect();
    Ok(FailoverReport {
        name: "failover".into(),
        cluster_dir: a.cluster_dir.display().to_string(),
        nodes: cluster.env.n,
        cluster_settings: cluster.env.settings.clone(),
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        request_timeout_ms: a.request_timeout.as_secs_f64() * 1e3,
        rounds,
        failover: MsSummary::of(&ok_ms),
        active_after: MsSummary::of(&active),
        restart: MsSummary::of(&restart),
        unfenced_after: MsSummary::of(&unfenced),
        deleted_topics: deleted,
    })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

/// The human summary of a `failover` run.
pub fn failover_table(r: &FailoverReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== failover: {} nodes ({}), probe topics {} partitions RF {}, request timeout {:.0} ms",
        r.nodes,
        if r.cluster_settings.is_empty() {
            "default settings".to_string()
        } else {
            r.cluster_settings.clone()
        },
        r.partitions,
        r.replication_factor,
        r.request_timeout_ms
    );
    let _ = writeln!(
        out,
        "  {:>5} {:>6} {:>6} {:>12} {:>8} {:>10} {:>10} {:>8} {:>10} {:>11}  errors",
        "round",
        "killed",
        "new",
        "failover ms",
        "tries",
        "elected ms",
        "active ms",
        "call ms",
        "restart ms",
        "unfenced ms"
    );
    for x in &r.rounds {
        let errs: Vec<String> = x
            .errors
            .iter()
            .map(|e| format!("{} x{}", e.error, e.count))
            .collect();
        let _ = writeln!(
            out,
            "  {:>5} {:>6} {:>6} {:>12} {:>8} {:>10} {:>10} {:>8} {:>10} {:>11}  {}",
            x.round,
            x.killed_node,
            x.new_controller.map_or("?".into(), |n| n.to_string()),
            if x.ok {
                opt_ms(x.failover_ms)
            } else {
                "FAILED".into()
            },
            x.attempts,
            opt_ms(x.elected_after_ms),
            opt_ms(x.active_after_ms),
            opt_ms(x.success_call_ms),
            opt_ms(x.restart_ms),
            opt_ms(x.unfenced_after_ms),
            if errs.is_empty() {
                "-".into()
            } else {
                errs.join(", ")
            }
        );
    }
    let mut summary = |label: &str, s: &Option<MsSummary>| {
        if let Some(s) = s {
            let _ = writeln!(
                out,
                "  {label:<34} min {:.0} ms, median {:.0} ms, max {:.0} ms ({} rounds)",
                s.min_ms, s.median_ms, s.max_ms, s.count
            );
        }
    };
    summary("kill -9 -> first CreateTopics ok", &r.failover);
    summary("kill -9 -> new active controller", &r.active_after);
    summary("restart -> lists every broker", &r.restart);
    summary("restart -> unfenced", &r.unfenced_after);
    out
}
