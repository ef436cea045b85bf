//! A `sluice` broker process the bench starts itself on a data dir it owns, for the
//! workloads that stop, kill and restart their broker (`partitions`) or need listeners
//! of their own (`tls`).
//!
//! ```text
//!  BrokerSpec::spawn: bin --listen 127.0.0.1:PORT|LISTENERS --data-dir DIR --cores N --set ... ─► log (appended)
//!  terminate(): SIGTERM, wait (bounded)  ─► the clean stop time; SIGKILL if it does not exit
//!  kill9():     SIGKILL, reap            ─► the next spawn recovers the data dir
//!  Drop:        SIGKILL, reap            ─► no path (error, panic) leaves a broker running
//! ```
//! The child also gets SIGKILL when the thread that spawned it dies (`PR_SET_PDEATHSIG`),
//! so a bench killed with SIGKILL does not leave it behind either.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How a broker is started; the same spec restarts it on the same data dir and port.
#[derive(Clone, Debug)]
pub(crate) struct BrokerSpec {
    /// The `sluice` binary.
    pub(crate) bin: PathBuf,
    /// Its data dir (`--data-dir`), kept across restarts.
    pub(crate) data_dir: PathBuf,
    /// Its Kafka port on 127.0.0.1 (the PLAINTEXT listener when `listeners` is given).
    pub(crate) port: u16,
    /// `--listen` in Kafka's `listeners` syntax (`PLAINTEXT://127.0.0.1:P,SSL://...`);
    /// `None` is `127.0.0.1:port`.
    pub(crate) listeners: Option<String>,
    /// `--cores` (shards).
    pub(crate) cores: u32,
    /// `--set name=value`, after the bench's own `metrics.listen=` (off: another broker on
    /// this machine may hold the default metrics port).
    pub(crate) settings: Vec<(String, String)>,
    /// stdout and stderr of every start, appended.
    pub(crate) log: PathBuf,
}

impl BrokerSpec {
    /// `127.0.0.1:port`.
    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker; it is running (not necessarily listening yet) when this returns.
    #[allow(unsafe_code)]
    pub(crate) fn spawn(&self) -> Result<BrokerProcess> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(self.listeners.clone().unwrap_or_else(|| self.bootstrap()))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            .args(["--set", "metrics.listen="]);
        for (k, v) in &self.settings {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("log file handle")?)
            .stderr(log);
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // prctl, which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok(BrokerProcess {
            child: Some(child),
            started: Instant::now(),
        })
    }
}

/// A running broker, killed on drop. Owned by the thread that spawned it.
#[derive(Debug)]
pub(crate) struct BrokerProcess {
    child: Option<Child>,
    started: Instant,
}

impl BrokerProcess {
    /// The process id, while it has not been stopped.
    pub(crate) fn pid(&self) -> Result<u32> {
        match &self.child {
            Some(c) => Ok(c.id()),
            None => bail!("the broker was stopped"),
        }
    }

    /// When `spawn` returned.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// An error if the broker has exited (with its status).
    pub(crate) fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the broker was stopped");
        };
        if let Some(status) = child.try_wait().context("checking the broker")? {
            self.child = None;
            bail!("the broker exited: {status}");
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit: the time it took. A broker that
    /// does not exit in time gets SIGKILL and the stop is an error; so is a non-zero exit.
    #[allow(unsafe_code)]
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            bail!("the broker was stopped");
        };
        let pid = libc::pid_t::try_from(child.id()).context("pid")?;
        let sent = Instant::now();
        // SAFETY: kill(2) with a pid we spawned and have not reaped (it cannot have been
        // recycled) and a valid signal number; no memory is shared.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = child.kill();
            let _ = child.wait();
            bail!("SIGTERM to the broker: {e}");
        }
        let deadline = sent + timeout;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the broker")? {
                let took = sent.elapsed();
                if !status.success() {
                    bail!("the broker exited with {status} after SIGTERM");
                }
                return Ok(took);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the broker did not exit within {timeout:?} of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`; an error at
    /// `deadline` or when the broker exits first.
    pub(crate) fn wait_listening(&mut self, port: u16, deadline: Instant) -> Result<()> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            self.check_running()?;
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on {addr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap: the next start has to recover.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("the broker was stopped");
        };
        child.kill().context("SIGKILL to the broker")?;
        child.wait().context("reaping the broker")?;
        Ok(())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until nothing accepts connections on 127.0.0.1:`port` any more, up to
/// `timeout`. A broker killed with SIGKILL can leave its listening socket open for a
/// moment after it was reaped (io_uring tears its ring down asynchronously), and a new
/// broker binding the port beside it (SO_REUSEPORT) would then share the connections
/// with a dead socket.
pub(crate) fn wait_port_closed(port: u16, timeout: Duration) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        if Instant::now() >= deadline {
            bail!("127.0.0.1:{port} still accepts connections {timeout:?} after the broker exited");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; the broker binds it next).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell script standing in for the broker: it gets the broker's arguments and runs
    /// `script`.
    fn fake_broker(dir: &std::path::Path, script: &str) -> BrokerSpec {
        let bin = dir.join("fake-sluice");
        std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).expect("write script");
        let mut perm = std::fs::metadata(&bin).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&bin, perm).expect("chmod");
        BrokerSpec {
            bin,
            data_dir: dir.join("data"),
            port: 1,
            listeners: None,
            cores: 1,
            settings: vec![("a".into(), "b".into())],
            log: dir.join("log"),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn terminate_times_a_clean_exit_and_the_log_gets_the_arguments() {
        let dir = temp_dir("bp-term");
        let spec = fake_broker(
            &dir,
            "echo \"$@\"; trap 'exit 0' TERM; while :; do sleep 0.01; done",
        );
        let mut b = spec.spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        b.check_running().expect("running");
        let took = b.terminate(Duration::from_secs(10)).expect("clean stop");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(b.pid().is_err());
        let log = std::fs::read_to_string(&spec.log).expect("log");
        assert!(
            log.contains("--cores 1 --set metrics.listen= --set a=b"),
            "{log}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broker_ignoring_sigterm_is_killed_and_drop_kills_too() {
        let dir = temp_dir("bp-kill");
        let spec = fake_broker(&dir, "trap '' TERM; while :; do sleep 0.01; done");
        let mut b = spec.spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(100));
        assert!(b.terminate(Duration::from_millis(300)).is_err());
        let b = spec.spawn().expect("spawn");
        let pid = b.pid().expect("pid");
        drop(b);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let mut c = spec.spawn().expect("spawn");
        c.kill9().expect("kill -9");
        assert!(c.check_running().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
