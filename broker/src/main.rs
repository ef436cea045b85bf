//! `sluice`: starts a broker (`sluice` or `sluice serve`). With no arguments it listens on
//! 127.0.0.1:9092 and keeps data in ./sluice-data; `--config FILE`, `--set NAME=VALUE` and
//! the dedicated flags override the defaults, which are listed in `sluice --help`.
//! `sluice topic|group|cluster|produce|consume` are admin verbs (`cli/`): Kafka-protocol
//! clients of a running cluster, which never start the broker's runtime.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_broker::BrokerConfig;

mod cli;

/// mimalloc, not glibc malloc: after a burst glibc kept the freed request and batch buffers
/// (160 MiB RSS with nothing in flight, measured), while mimalloc purges freed pages back
/// to the OS within about a second (v3's `purge_delay`), without a background thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a Kafka-protocol event streaming broker",
    after_help = BrokerConfig::render_table(),
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (the same as `sluice` with no command); every setting is listed below.
    #[command(after_help = BrokerConfig::render_table())]
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

/// The broker's flags: `sluice [FLAGS]` and `sluice serve [FLAGS]`.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML file of settings (Kafka names as keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (setting `listeners`).
    #[arg(long)]
    listen: Option<String>,
    /// host:port announced to clients (setting `advertised.listeners`).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Data directory (setting `log.dirs`).
    #[arg(long)]
    data_dir: Option<String>,
    /// Number of shards, one pinned thread each; 0 = all cores (setting `cores`).
    #[arg(long)]
    cores: Option<String>,
    /// Any setting, repeatable: --set log.retention.ms=60000
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        None => serve(args.serve),
        Some(Command::Serve(serve_args)) => serve(serve_args),
        Some(Command::Admin(cmd)) => {
            restore_sigpipe();
            std::process::exit(cli::run(&cmd))
        }
    }
}

/// The admin verbs print to stdout; piped into `head` they must end quietly when the pipe
/// closes, as Kafka's tools and Unix tools do, not panic on a failed write (Rust ignores
/// SIGPIPE by default, so the write errors instead). The broker keeps SIGPIPE ignored: a
/// client closing its socket must not kill it.
fn restore_sigpipe() {
    // SAFETY: resets one signal's disposition to the default; no handler, no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A panic on any broker thread (a shard, the quorum, a blocking helper) ends the process
/// with exit code 70 once the usual message is printed. Otherwise the process lived on
/// with that thread gone: a quorum thread's panic left a node answering /health but
/// fenced for good, never serving again, where a supervisor restarts a process that
/// exits (Kafka halts on fatal errors too).
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("?"),
            "a broker thread panicked; exiting"
        );
        // SAFETY: ends the process at once, as abort would; no Rust state is touched.
        // `exit` would run atexit handlers while the other threads go on.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(70)
        }
    }));
}

/// Transparent huge pages off for the broker process (`PR_SET_THP_DISABLE`; a child would
/// inherit it, the broker starts none). mimalloc advises huge pages on its arenas, so whenever the heap grows
/// (the batch cache filling up, request buffers after mimalloc purged freed pages) a
/// shard's thread takes a fault that zero-fills a whole 2 MiB page: 1-2 ms on this
/// machine, stalling every partition of the shard. While a 1 GiB cache filled at 50 MB/s,
/// acks=all RF3 produce p99 was 98 ms with them and 7.2 ms without (p50 8.7 vs 2.9 ms);
/// 4 KiB faults spread the same zeroing over many small pauses. The cost is TLB reach;
/// max produce moved within this machine's noise (RF1 694 MB/s after, 713 before, in
/// different runs).
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments; touches no memory of this process.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(),
            "cannot disable transparent huge pages; heap growth may stall shards");
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    exit_on_panic();
    disable_transparent_huge_pages();
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config.apply_toml(&text)?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set expects NAME=VALUE, got '{kv}'"))?;
        config.set(k.trim(), v.trim())?;
    }
    for (name, value) in [
        ("listeners", &args.listen),
        ("advertised.listeners", &args.advertised_listener),
        ("log.dirs", &args.data_dir),
        ("cores", &args.cores),
    ] {
        if let Some(v) = value {
            config.set(name, v)?;
        }
    }
    sluice_broker::run(config)
}
