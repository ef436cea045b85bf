//! Probe: what growing a segment file with every write costs, against writing into space
//! reserved ahead. Appends `--mb` MiB to one file with O_DIRECT writes of `--write` bytes
//! (one in flight, as a log's group commit does), `fdatasync` after every `--sync-every`th
//! write, and prints MB/s and the process's CPU seconds per GB (utime + stime of every
//! thread, io_uring's workers included). Modes:
//! - `grow`: each write extends the file (what segments do today);
//! - `fallocate`: the file is extended 64 MiB ahead with `fallocate` (unwritten extents);
//! - `zeroed`: the whole file is written with zeros and synced first (written extents),
//!   outside the measurement.
//!
//! ```sh
//! cargo run --release -p sluice-storage --example segment_extend -- grow 1024 262144 64 /work/tmp
//! ```
//! Arguments: MODE MB WRITE_BYTES SYNC_EVERY DIR. The file is removed afterwards.

use glommio::io::DmaFile;
use std::time::Instant;

/// The process's CPU seconds so far (all threads).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Args {
    mode: String,
    total: u64,
    write: usize,
    sync_every: u64,
    dir: String,
}

fn parse() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 5 {
        return Err(
            "usage: segment_extend grow|fallocate|zeroed MB WRITE_BYTES SYNC_EVERY DIR".into(),
        );
    }
    let num = |s: &str| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let args = Args {
        mode: a[0].clone(),
        total: num(&a[1])? << 20,
        write: num(&a[2])? as usize,
        sync_every: num(&a[3])?.max(1),
        dir: a[4].clone(),
    };
    if !["grow", "fallocate", "zeroed"].contains(&args.mode.as_str()) {
        return Err(format!("unknown mode {}", args.mode));
    }
    if args.write == 0 || !args.write.is_multiple_of(4096) {
        return Err("WRITE_BYTES must be a positive multiple of 4096".into());
    }
    Ok(args)
}

async fn run(a: Args) -> std::io::Result<()> {
    const AHEAD: u64 = 64 << 20;
    const ZERO_CHUNK: usize = 1 << 20;
    let path = format!("{}/segment_extend-{}.log", a.dir, a.mode);
    let _ = std::fs::remove_file(&path);
    let f = DmaFile::create(&path).await?;
    if a.mode == "zeroed" {
        let mut off = 0;
        while off < a.total {
            let mut b = f.alloc_dma_buffer(ZERO_CHUNK);
            b.as_bytes_mut().fill(0);
            f.write_at(b, off).await?;
            off += ZERO_CHUNK as u64;
        }
        f.fdatasync().await?;
    }
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let (mut pos, mut reserved, mut writes) = (0u64, 0u64, 0u64);
    while pos < a.total {
        if a.mode == "fallocate" && pos + a.write as u64 > reserved {
            reserved += AHEAD;
            f.pre_allocate(reserved, false).await?;
        }
        let mut b = f.alloc_dma_buffer(a.write);
        b.as_bytes_mut().fill(7);
        f.write_at(b, pos).await?;
        writes += 1;
        if writes.is_multiple_of(a.sync_every) {
            f.fdatasync().await?;
        }
        pos += a.write as u64;
    }
    let (cpu, took) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    let gb = a.total as f64 / 1e9;
    println!(
        "{} {} B writes, sync every {}: {:.0} MB/s, {:.2} CPU s/GB ({writes} writes in {took:.2} s)",
        a.mode,
        a.write,
        a.sync_every,
        gb * 1e3 / took,
        cpu / gb
    );
    f.close().await?;
    std::fs::remove_file(&path)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || run(args))
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
