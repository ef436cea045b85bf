//! CPU time and peak memory of a process, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`, used for the broker (given its pid) and for the bench itself.
//!
//! CPU seconds are user + system time (fields 14 and 15 of `stat`, in USER_HZ ticks);
//! peak RSS is `VmHWM`, the high-water mark since the process started; current RSS is
//! `VmRSS`, and open file descriptors are the entries of `/proc/<pid>/fd`.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

/// Kernel clock ticks per second in `/proc/*/stat`. Linux fixes USER_HZ at 100 on every
/// architecture this runs on (x86-64, aarch64), independent of the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// A point-in-time reading of one process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds consumed so far.
    pub cpu_seconds: f64,
    /// Peak resident set size so far, in bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Resource use of a process over a measured run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcUsage {
    /// The process id, or 0 for "this process".
    pub pid: u32,
    /// CPU seconds consumed during the run.
    pub cpu_seconds: f64,
    /// CPU use in percent of one core over the run (200 = both cores of a 2-core box).
    pub cpu_percent_of_core: f64,
    /// Peak RSS at the end of the run, in bytes.
    pub peak_rss_bytes: u64,
}

/// Which process to sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/proc/self`.
    SelfProcess,
    /// `/proc/<pid>`.
    Pid(u32),
}

impl Target {
    fn dir(self) -> String {
        match self {
            Target::SelfProcess => "/proc/self".to_string(),
            Target::Pid(pid) => format!("/proc/{pid}"),
        }
    }

    fn pid(self) -> u32 {
        match self {
            Target::SelfProcess => 0,
            Target::Pid(pid) => pid,
        }
    }
}

/// Reads the current CPU time and peak RSS of `target`.
pub fn sample(target: Target) -> Result<ProcSample> {
    let dir = target.dir();
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    Ok(ProcSample {
        cpu_seconds: parse_cpu_seconds(&stat)?,
        peak_rss_bytes: parse_vm_hwm(&status)?,
    })
}

/// Usage between two samples taken `wall` apart.
pub fn usage(target: Target, start: ProcSample, end: ProcSample, wall: Duration) -> ProcUsage {
    let cpu_seconds = (end.cpu_seconds - start.cpu_seconds).max(0.0);
    let secs = wall.as_secs_f64();
    ProcUsage {
        pid: target.pid(),
        cpu_seconds,
        cpu_percent_of_core: if secs > 0.0 {
            cpu_seconds / secs * 100.0
        } else {
            0.0
        },
        peak_rss_bytes: end.peak_rss_bytes,
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_seconds(stat: &str) -> Result<f64> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("malformed stat: no ')'"))?;
    // After ')' the fields start at field 3 (state); utime is field 14, stime 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("stat has no field {n}"))?
            .parse::<f64>()
            .with_context(|| format!("stat field {n}"))
    };
    Ok((field(14)? + field(15)?) / USER_HZ)
}

/// Resident memory and open file descriptors of a process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Footprint {
    /// Current resident set size in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub open_fds: u64,
}

/// Reads the current RSS and the open file descriptors of `pid` (fds are readable only
/// for this user's processes).
pub fn footprint(pid: u32) -> Result<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?;
    Ok(Footprint {
        rss_bytes: parse_status_kb(&status, "VmRSS:")?,
        open_fds: fds.count() as u64,
    })
}

/// The current resident set size (`VmRSS`) of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_kb(&status, "VmRSS:")
}

/// `VmHWM` in bytes from `/proc/<pid>/status` (the kernel reports kB).
pub fn parse_vm_hwm(status: &str) -> Result<u64> {
    parse_status_kb(status, "VmHWM:")
}

/// The `field` line (e.g. `VmRSS:`) of `/proc/<pid>/status`, in bytes.
fn parse_status_kb(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow!("status has no {field} line"))?;
    let kb: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} value"))?;
    Ok(kb * 1024)
}

/// The pid of the process listening on TCP `port` (IPv4 or IPv6), found by matching the
/// listening socket's inode in `/proc/net/tcp*` against `/proc/<pid>/fd` links. Only
/// processes whose fds this user may read are seen.
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols: sl, local_address, rem_address, st, ..., inode at index 9; 0A = LISTEN.
            if cols.len() > 9 && cols[3] == "0A" {
                let local_port = cols[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) {
                    inodes.insert(format!("socket:[{}]", cols[9]));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if link.to_str().is_some_and(|l| inodes.contains(l)) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_listening_on_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(find_listener_pid(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(find_listener_pid(port), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_name() {
        // Field 2 contains spaces and a ')'; utime=250, stime=150 ticks.
        let stat = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_cpu_seconds(stat).expect("parses"), 4.0);
        assert!(parse_cpu_seconds("garbage").is_err());
        assert!(parse_cpu_seconds("1 (x) S 1 2").is_err());
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tsluice\nVmPeak:\t  1000 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm(status).expect("parses"), 2048 * 1024);
        assert!(parse_vm_hwm("Name: x\n").is_err());
        assert_eq!(
            parse_status_kb(status, "VmRSS:").expect("parses"),
            1024 * 1024
        );
    }

    #[test]
    fn footprint_of_this_process() {
        // other tests open and close files concurrently: only check that both are read
        let _f = std::fs::File::open("/proc/self/status").expect("open");
        let f = footprint(std::process::id()).expect("own /proc readable");
        assert!(f.rss_bytes > 0 && f.open_fds > 0, "{f:?}");
        assert!(footprint(u32::MAX).is_err());
    }

    #[test]
    fn samples_this_process() {
        let a = sample(Target::SelfProcess).expect("proc self readable");
        // Burn a little CPU so the second sample cannot be smaller.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = sample(Target::SelfProcess).expect("proc self readable");
        assert!(b.cpu_seconds >= a.cpu_seconds);
        assert!(b.peak_rss_bytes > 0);
        let u = usage(Target::SelfProcess, a, b, Duration::from_secs(1));
        assert_eq!(u.pid, 0);
        assert!(u.cpu_percent_of_core >= 0.0);
        assert_eq!(u.peak_rss_bytes, b.peak_rss_bytes);
    }
}
