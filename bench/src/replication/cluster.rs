//! Local clusters for the workloads that start their own (`LocalCluster`): started with
//! the repository's cluster script, their node pids known, stopped on drop, on SIGINT and
//! SIGTERM (a signal thread), and killed if the script cannot stop them; the work
//! directory every workload that starts its own brokers runs in (`work_dir`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use super::count_isr_shrinks;
use crate::metadata::{find_script, parse_cluster_env, ClusterEnv};
use crate::procstat::{self, Target};

/// A cluster running now: its script, directory and the node pids once known.
type Live = (PathBuf, PathBuf, Vec<u32>);

/// Clusters running now, for the signal thread.
static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

fn register(script: &Path, dir: &Path, pids: &[u32]) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|(_, d, _)| d != dir);
        l.push((script.to_path_buf(), dir.to_path_buf(), pids.to_vec()));
    }
}

fn unregister(dir: &Path) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|(_, d, _)| d != dir);
    }
}

/// True if `pid` is alive and its command line names `dir` (a recycled pid is not ours).
fn runs_in(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    let alive = procstat::sample(Target::Pid(pid)).is_ok()
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
            .is_some_and(|r| !r.starts_with('Z'));
    alive && cmdline.windows(needle.len()).any(|w| w == needle)
}

#[allow(unsafe_code)]
fn sigkill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of this process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// `local-cluster.sh stop DIR`, then SIGKILL for any of `pids` still running in DIR (the
/// script cannot stop nodes whose directory or pid files are gone).
fn stop_cluster(script: &Path, dir: &Path, pids: &[u32]) -> Result<()> {
    let stopped = stop_with_script(script, dir);
    let left: Vec<u32> = pids.iter().copied().filter(|p| runs_in(*p, dir)).collect();
    for p in &left {
        sigkill(*p);
    }
    if !left.is_empty() {
        eprintln!(
            "warning: nodes {left:?} of {} survived `stop`; sent SIGKILL",
            dir.display()
        );
    }
    stopped
}

fn stop_with_script(script: &Path, dir: &Path) -> Result<()> {
    let out = Command::new(script)
        .arg("stop")
        .arg(dir)
        .output()
        .with_context(|| format!("running {} stop", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} stop {} failed ({}): {}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after
/// it) and starts a thread that waits for them: it stops every registered cluster and
/// exits with 128 + the signal. Call before any other thread is started.
#[allow(unsafe_code)]
pub(crate) fn install_signal_thread() -> Result<()> {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use; the libc
    // calls only read and write that set and this thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialized sigset_t owned by this closure; sigwait
            // writes the signal number into `sig`.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            eprintln!("replication: signal {sig}; stopping the clusters started ...");
            let live: Vec<Live> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            for (script, dir, pids) in live {
                if let Err(e) = stop_cluster(&script, &dir, &pids) {
                    eprintln!("warning: {e:#}");
                }
            }
            std::process::exit(128 + sig);
        })
        .context("spawning the signal thread")?;
    Ok(())
}

/// A cluster started by `local-cluster.sh start`; stopped (and its data removed unless
/// kept) by `stop` or on drop.
pub(crate) struct LocalCluster {
    script: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    name: String,
    env: ClusterEnv,
    keep_data: bool,
    running: bool,
    /// The node pids right after the start.
    started: Vec<u32>,
}

impl LocalCluster {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        script: &Path,
        bin: &Path,
        dir: PathBuf,
        logs: PathBuf,
        name: String,
        nodes: u32,
        cores: u32,
        settings: &str,
        keep_data: bool,
    ) -> Result<Self> {
        if dir.exists() {
            bail!(
                "{} exists already: remove it or use another --work-dir",
                dir.display()
            );
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        register(script, &dir, &[]);
        let mut me = LocalCluster {
            script: script.to_path_buf(),
            dir,
            logs,
            name,
            env: ClusterEnv {
                n: nodes as usize,
                kafka_ports: Vec::new(),
                settings: settings.to_string(),
            },
            keep_data,
            running: true,
            started: Vec::new(),
        };
        let out = Command::new(script)
            .arg("start")
            .arg(nodes.to_string())
            .arg(&me.dir)
            .env("SLUICE_BIN", bin)
            .env("SLUICE_CORES", cores.to_string())
            .env("SLUICE_CLUSTER_SETTINGS", settings)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} start {nodes} {} failed ({}):\n{}",
                script.display(),
                me.dir.display(),
                out.status,
                tail.join("\n")
            );
        }
        let env_path = me.dir.join("cluster.env");
        let text = fs::read_to_string(&env_path)
            .with_context(|| format!("reading {}", env_path.display()))?;
        me.env = parse_cluster_env(&text).context("cluster.env")?;
        me.started = me.pids()?.into_iter().map(|(_, p)| p).collect();
        register(&me.script, &me.dir, &me.started);
        Ok(me)
    }

    pub(crate) fn bootstrap(&self) -> String {
        bootstrap_list(&self.env.kafka_ports)
    }

    /// (node id, pid) of every node; an error if a node is not running.
    pub(crate) fn pids(&self) -> Result<Vec<(u64, u32)>> {
        (1..=self.env.n as u64)
            .map(|id| {
                let path = self.dir.join(format!("node-{id}")).join("pid");
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let pid = parse_pid(&text)
                    .ok_or_else(|| anyhow!("{}: not a pid: {text:?}", path.display()))?;
                procstat::sample(Target::Pid(pid))
                    .with_context(|| format!("node {id} (pid {pid}) is not running"))?;
                Ok((id, pid))
            })
            .collect()
    }

    pub(crate) fn node_log(&self, id: u64) -> String {
        fs::read(self.dir.join(format!("node-{id}")).join("log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub(super) fn isr_shrinks(&self) -> u64 {
        (1..=self.env.n as u64)
            .map(|id| count_isr_shrinks(&self.node_log(id)))
            .sum()
    }

    /// Stops every node, keeps the node logs, removes the data unless kept.
    pub(crate) fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let stopped = stop_cluster(&self.script, &self.dir, &self.started);
        unregister(&self.dir);
        let _ = fs::create_dir_all(&self.logs);
        for id in 1..=self.env.n as u64 {
            let from = self.dir.join(format!("node-{id}")).join("log");
            let to = self.logs.join(format!("{}-node-{id}.log", self.name));
            let _ = fs::copy(&from, &to);
        }
        if stopped.is_ok() && !self.keep_data {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        stopped
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "warning: stopping the cluster in {}: {e:#}",
                self.dir.display()
            );
        }
    }
}

/// 127.0.0.1:p1,127.0.0.1:p2,...
pub fn bootstrap_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pid in a pid file (one number, surrounding whitespace allowed).
pub fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|p| *p > 0)
}

/// The run's work directory (`given`, else a new /tmp/sluice-bench-<name>-<pid>), created
/// and absolute, and a copy of `bin` in it that every cluster runs: a rebuild of the tree
/// during the run cannot mix binaries. The copy is removed when the returned guard drops
/// (the nodes' logs stay).
pub(crate) fn work_dir(given: Option<&Path>, name: &str, bin: &Path) -> Result<WorkDir> {
    let work = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id())),
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work = fs::canonicalize(&work)?;
    let copy = work.join("sluice");
    fs::copy(bin, &copy)
        .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
    // On disk before any measurement: left dirty, the copy (over 100 MB with debug info)
    // is written back some 30 s later, in the middle of a measured phase, and every
    // broker `fdatasync` waits behind it.
    fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", copy.display()))?;
    Ok(WorkDir {
        dir: work,
        bin: copy,
    })
}

/// See [`work_dir`].
pub(crate) struct WorkDir {
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.bin);
    }
}

pub(crate) fn resolve(path: &Path, what: &str) -> Result<PathBuf> {
    let found = find_script(path).with_context(|| format!("{what} {}", path.display()))?;
    fs::canonicalize(&found).with_context(|| format!("{what} {}", found.display()))
}
