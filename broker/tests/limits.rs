//! Limits a greedy or hostile client runs into, each checked on a real `sluice` process:
//! long polls of clients that went away release their sockets and the broker caps a
//! client's max_wait; connection limits (per ip, total) and idle closing; one request
//! cannot ask for unbounded work (duplicate names in Metadata, partition counts, fetch
//! size); the broker-wide partition limit; fetch sessions bound to the connection that
//! created them.
//! Invariants: every wait is bounded (a deadline or a socket timeout); every broker is a
//! `BrokerProcess`, killed when it drops, and every client socket is closed when the test
//! returns; nothing asserts on speed: times are printed (see `--nocapture`), and the
//! bounds are functional (10 s against a 30 s default long poll).

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::kafka::{
    all_topics, batch_headers, connect, create_partitions, fetch_request, high_watermark,
    partition0, produce, TS,
};
use common::raw::{record_batch, FrameRead, RawClient};
use common::{open_fds, send_one, BrokerProcess};
use kafka_protocol::messages::{ApiVersionsRequest, FetchRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};

const INVALID_PARTITIONS: i16 = 37;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

// ---------------------------------------------------------------------------------------
// 1. Long polls of vanished clients; the max_wait cap
// ---------------------------------------------------------------------------------------

/// The broker's open fds once they stop changing (bounded: 5 s).
fn settled_fds(pid: u32) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = open_fds(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = open_fds(pid)?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// 1,000 connections each park a Fetch (max_wait i32::MAX, min_bytes 1, at the log end)
/// and go away (at most 50 open at once); the broker's fd count returns to its baseline
/// within 10 s. With the default fetch.max.wait.ms (30 s) a broker that does not notice
/// the closed peers keeps their sockets until the long polls expire.
#[test]
fn disconnected_long_polls_release_their_sockets() -> Result<()> {
    const CONNECTIONS: usize = 1000;
    const WINDOW: usize = 50;
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("parked", 1, &[])?;
    let pid = broker.pid().context("broker not running")?;
    let mut control = connect(&broker)?;
    let version = control.version_for::<FetchRequest>(12)?;
    ensure!(
        high_watermark(&mut control, "parked")? == 0,
        "new topic not empty"
    );
    let baseline = settled_fds(pid)?;
    let req = fetch_request("parked", 0, i32::MAX, 1, 1 << 20, 1 << 20);
    let mut window = VecDeque::with_capacity(WINDOW + 1);
    for i in 0..CONNECTIONS {
        let mut c = RawClient::connect(broker.addr()).with_context(|| format!("connection {i}"))?;
        c.send(version, &req)
            .with_context(|| format!("fetch on connection {i}"))?;
        window.push_back(c);
        if window.len() > WINDOW {
            window.pop_front();
        }
    }
    // Positive control: the last 50 are parked and hold broker sockets, so the fd count
    // does see connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut peak = open_fds(pid)?;
    while peak < baseline + WINDOW - 5 {
        ensure!(
            Instant::now() < deadline,
            "with {WINDOW} connections open the broker has {peak} fds (baseline {baseline})"
        );
        std::thread::sleep(Duration::from_millis(50));
        peak = open_fds(pid)?;
    }
    for c in window.iter().take(5) {
        ensure!(
            !c.has_data_within(Duration::from_millis(200))?,
            "a fetch with min_bytes=1 on an empty partition was answered (or closed) instead of parked"
        );
    }
    drop(window);
    let released = Instant::now();
    let deadline = released + Duration::from_secs(10);
    let mut now = open_fds(pid)?;
    while now > baseline + 10 {
        ensure!(
            Instant::now() < deadline,
            "10 s after the last of {CONNECTIONS} long-poll clients went away the broker still has {now} fds (baseline {baseline}, peak {peak})"
        );
        std::thread::sleep(Duration::from_millis(100));
        now = open_fds(pid)?;
    }
    eprintln!(
        "long polls: fds baseline {baseline}, with {WINDOW} parked {peak}, back to {now} {:.1} s after the clients left",
        released.elapsed().as_secs_f64()
    );
    // The broker still serves the connection that stayed.
    ensure!(
        high_watermark(&mut control, "parked")? == 0,
        "control fetch"
    );
    Ok(())
}

/// A Fetch asking for max_wait_ms = i32::MAX on a connection that stays open is answered
/// (empty) once the broker's fetch.max.wait.ms (2 s here) passes.
#[test]
fn fetch_max_wait_is_capped_by_the_broker() -> Result<()> {
    let broker = BrokerProcess::spawn_with(1, &[("fetch.max.wait.ms", "2000")])?;
    broker.create_topic("capped", 1, &[])?;
    let mut c = connect(&broker)?;
    let version = c.version_for::<FetchRequest>(12)?;
    let sent = Instant::now();
    let correlation = c.send(
        version,
        &fetch_request("capped", 0, i32::MAX, 1, 1 << 20, 1 << 20),
    )?;
    ensure!(
        !c.has_data_within(Duration::from_millis(500))?,
        "fetch with min_bytes=1 on an empty partition answered at once: not a long poll"
    );
    c.set_read_timeout(Duration::from_secs(15))?;
    let resp = match c.recv::<FetchRequest>(version, correlation) {
        Ok(r) => r,
        Err(e) => bail!(
            "fetch with max_wait_ms=i32::MAX not answered within 15 s although fetch.max.wait.ms=2000: {e}"
        ),
    };
    eprintln!(
        "max_wait cap: answered after {:.1} s (fetch.max.wait.ms=2000)",
        sent.elapsed().as_secs_f64()
    );
    ensure!(resp.error_code == 0, "fetch error {}", resp.error_code);
    let p = partition0(&resp)?;
    ensure!(p.error_code == 0, "partition error {}", p.error_code);
    ensure!(
        p.records.as_ref().is_none_or(|r| r.is_empty()),
        "empty partition returned records"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Connection limits and idle connections
// ---------------------------------------------------------------------------------------

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"))
}

/// A connection from `source` that gets an ApiVersions answer; retried for up to 10 s
/// (the broker counts a closed connection out only once it has seen the close).
fn open_working(addr: SocketAddr, source: IpAddr) -> Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = RawClient::connect_from(addr, source).and_then(|mut c| {
            c.negotiate()?;
            Ok(c)
        });
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                bail!("no working connection from {source} within 10 s: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A new connection from `source` must be closed by the broker without an answer.
fn expect_refused(addr: SocketAddr, source: IpAddr, what: &str) -> Result<()> {
    let mut c = RawClient::connect_from(addr, source)?;
    c.set_read_timeout(Duration::from_secs(10))?;
    if c.send(3, &api_versions_request()).is_err() {
        return Ok(()); // reset before the request went out: closed
    }
    match c.read_frame() {
        Ok(FrameRead::Closed) => Ok(()),
        Ok(FrameRead::Frame(_)) => bail!("{what}: a connection past the limit was answered"),
        Ok(FrameRead::TimedOut) => {
            bail!("{what}: a connection past the limit was neither closed nor answered in 10 s")
        }
        Err(e) => bail!("{what}: reading from a refused connection: {e:#}"),
    }
}

fn log_has(broker: &BrokerProcess, needles: &[&str]) -> bool {
    broker
        .log_tail(5000)
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

/// Waits (bounded: 5 s) for a log line holding every one of `needles`.
fn wait_log(broker: &BrokerProcess, needles: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log_has(broker, needles) {
        ensure!(
            Instant::now() < deadline,
            "broker log has no line with {needles:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER_LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// `limit` connections from 127.0.0.1 work, the next is closed and logged, the ones
/// open still work, and closing one makes room for one more (and only one).
fn limit_holds(broker: &BrokerProcess, limit: usize, what: &str) -> Result<Vec<RawClient>> {
    let addr = broker.addr();
    ensure!(
        !log_has(broker, &["connection refused"]),
        "{what}: a connection was refused before the limit was reached"
    );
    let mut open = Vec::new();
    for _ in 0..limit {
        open.push(open_working(addr, LOCAL)?);
    }
    expect_refused(addr, LOCAL, what)?;
    wait_log(broker, &["connection refused"])?;
    for (i, c) in open.iter_mut().enumerate() {
        c.negotiate()
            .with_context(|| format!("{what}: admitted connection {i} after a refusal"))?;
    }
    drop(open.pop());
    open.push(open_working(addr, LOCAL)?);
    expect_refused(addr, LOCAL, &format!("{what}, after one was replaced"))?;
    Ok(open)
}

#[test]
fn max_connections_per_ip_is_enforced() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, &[("max.connections.per.ip", "5")])?;
    let _open = limit_holds(&broker, 5, "max.connections.per.ip=5")?;
    // The limit is per address: another host (127.0.0.2) still gets in.
    let mut other = open_working(broker.addr(), OTHER_LOCAL)?;
    other.negotiate()?;
    Ok(())
}

#[test]
fn max_connections_is_enforced() -> Result<()> {
    let broker = BrokerProcess::spawn_with(2, &[("max.connections", "4")])?;
    let open = limit_holds(&broker, 4, "max.connections=4")?;
    // The limit is broker-wide: another address is refused too.
    expect_refused(
        broker.addr(),
        OTHER_LOCAL,
        "max.connections=4 from 127.0.0.2",
    )?;
    drop(open);
    // All closed: there is room again.
    open_working(broker.addr(), OTHER_LOCAL)?;
    Ok(())
}

/// connections.max.idle.ms=1500: a silent connection and one dribbling a frame a byte at
/// a time are closed within 10 s and logged; a connection sending requests is not; an
/// rdkafka producer keeps working across the broker closing its idle connections.
#[test]
fn idle_connections_are_closed() -> Result<()> {
    const BOUND: Duration = Duration::from_secs(10);
    let broker = BrokerProcess::spawn_with(1, &[("connections.max.idle.ms", "1500")])?;
    broker.create_topic("idle", 1, &[])?;
    // Kafka clients retry a request whose connection the broker closed as idle.
    let producer = broker.producer(&[("linger.ms", "0"), ("message.send.max.retries", "3")])?;
    let first = send_one(&producer, "idle", "before")?;

    // A busy connection (a request every 500 ms) outlives the idle time several times.
    let mut busy = connect(&broker)?;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        busy.negotiate()
            .context("a connection sending a request every 500 ms was closed")?;
    }

    // A silent connection.
    let mut silent = RawClient::connect(broker.addr())?;
    silent.set_read_timeout(BOUND)?;
    let opened = Instant::now();
    match silent.read_frame()? {
        FrameRead::Closed => {}
        got => bail!("silent connection: want it closed within {BOUND:?}, got {got:?}"),
    }
    eprintln!(
        "idle: silent connection closed after {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    // Slowloris: declares a 1000-byte frame and sends one byte of it every 300 ms.
    let mut slow = RawClient::connect(broker.addr())?;
    let opened = Instant::now();
    slow.write_raw(&1000i32.to_be_bytes())?;
    let closed = loop {
        ensure!(
            opened.elapsed() < BOUND,
            "a connection dribbling one byte every 300 ms is still open after {BOUND:?}"
        );
        if slow.write_raw(&[0]).is_err() {
            break opened.elapsed();
        }
        match slow.has_data_within(Duration::from_millis(300)) {
            Ok(false) => {}
            Ok(true) | Err(_) => break opened.elapsed(), // EOF or reset
        }
    };
    eprintln!(
        "idle: slowloris connection closed after {:.1} s",
        closed.as_secs_f64()
    );
    wait_log(&broker, &["closing connection", "idle"])?;

    // rdkafka's own connections idled out meanwhile; the producer still works.
    let second = send_one(&producer, "idle", "after")?;
    ensure!(
        second == first + 1,
        "produce after the idle closes: offset {second}, want {}",
        first + 1
    );
    let admin: BaseConsumer = broker.client_config().create()?;
    admin.fetch_metadata(Some("idle"), Duration::from_secs(10))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Amplification and the broker partition limit
// ---------------------------------------------------------------------------------------

/// One request cannot ask for unbounded work or answers: a topic named 1,000 times is
/// answered once, a CreateTopics or CreatePartitions past request.partitions.max gets
/// INVALID_PARTITIONS, and a Fetch asking for i32::MAX bytes gets about fetch.max.bytes.
#[test]
fn request_amplification_is_bounded() -> Result<()> {
    const TOPIC: &str = "amp";
    const FETCH_MAX: usize = 1 << 20;
    let broker = BrokerProcess::spawn_with(1, &[("fetch.max.bytes", "1048576")])?;
    broker.create_topic(TOPIC, 1, &[])?;
    let mut c = connect(&broker)?;

    let names = vec![TOPIC; 1000];
    let md = c.metadata(Some(&names), false)?;
    let listed: Vec<Option<String>> = md
        .topics
        .iter()
        .map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    ensure!(
        listed == [Some(TOPIC.to_string())],
        "Metadata naming {TOPIC} 1,000 times answered {} topics",
        listed.len()
    );

    // Past request.partitions.max (10,000 by default).
    for (name, partitions) in [("amp-20000", 20_000), ("amp-10001", 10_001)] {
        let r = c.create_topics(&[(name, partitions)])?;
        ensure!(
            r == [(name.to_string(), INVALID_PARTITIONS)],
            "CreateTopics {name} with {partitions} partitions: {r:?}, want 37"
        );
    }
    let codes = create_partitions(&mut c, TOPIC, 10_002)?;
    ensure!(
        codes == [INVALID_PARTITIONS],
        "CreatePartitions {TOPIC} to 10,002: {codes:?}, want [37]"
    );
    let topics = all_topics(&mut c)?;
    ensure!(
        !topics.contains_key("amp-20000") && !topics.contains_key("amp-10001"),
        "a refused topic exists: {topics:?}"
    );
    ensure!(topics.get(TOPIC) == Some(&1), "{TOPIC} grew: {topics:?}");

    // ~3 MiB in 30 batches of ~100 KiB; a Fetch asking for everything gets ~1 MiB.
    let value = "f".repeat(1000);
    let values = vec![value.as_str(); 100];
    let batch = record_batch(&values, TS)?;
    for i in 0..30 {
        let (code, base) = produce(&mut c, TOPIC, batch.clone())?;
        ensure!(
            code == 0 && base == i * 100,
            "batch {i}: code {code}, base {base}"
        );
    }
    let version = c.version_for::<FetchRequest>(12)?;
    let resp = c.call(version, &fetch_request(TOPIC, 0, 0, 0, i32::MAX, i32::MAX))?;
    let p = partition0(&resp)?;
    ensure!(p.error_code == 0, "fetch error {}", p.error_code);
    let records = p.records.clone().unwrap_or_default();
    let batches = batch_headers(&records)?;
    eprintln!(
        "fetch max_bytes=i32::MAX with fetch.max.bytes=1 MiB: {} bytes, {} batches of {} bytes",
        records.len(),
        batches.len(),
        batch.len()
    );
    ensure!(!batches.is_empty(), "fetch returned no batch");
    ensure!(
        records.len() <= FETCH_MAX + batch.len(),
        "fetch returned {} bytes; fetch.max.bytes is {FETCH_MAX} (plus at most one batch of {})",
        records.len(),
        batch.len()
    );
    Ok(())
}

/// broker.partitions.max=100: topics are created until the broker's total would pass
/// 100, then refused with INVALID_PARTITIONS (as is a CreatePartitions past it), and the
/// total never passes it.
#[test]
fn broker_partition_limit_is_enforced() -> Result<()> {
    const MAX: usize = 100;
    let broker = BrokerProcess::spawn_with(1, &[("broker.partitions.max", "100")])?;
    let mut c = connect(&broker)?;
    let r = c.create_topics(&[("small", 5)])?;
    ensure!(r == [("small".to_string(), 0)], "small topic: {r:?}");
    let r = c.create_topics(&[("too-big", 101)])?;
    ensure!(
        r == [("too-big".to_string(), INVALID_PARTITIONS)],
        "101 partitions: {r:?}"
    );
    let (mut made, mut refused) = (0, 0);
    for i in 0..12 {
        let name = format!("fill-{i}");
        let r = c.create_topics(&[(&name, 10)])?;
        match r.as_slice() {
            [(n, 0)] if *n == name => made += 1,
            [(n, INVALID_PARTITIONS)] if *n == name => refused += 1,
            other => bail!("CreateTopics {name}: {other:?}"),
        }
    }
    let codes = create_partitions(&mut c, "small", 100)?;
    ensure!(
        codes == [INVALID_PARTITIONS],
        "CreatePartitions small to 100: {codes:?}, want [37]"
    );
    let topics = all_topics(&mut c)?;
    let total: usize = topics.values().sum();
    eprintln!(
        "broker.partitions.max=100: {made} of 12 topics of 10 created, {refused} refused; {total} partitions in Metadata"
    );
    ensure!(made >= 1, "no 10-partition topic fit under the limit");
    ensure!(
        refused >= 1,
        "12 topics of 10 partitions all fit under broker.partitions.max=100"
    );
    ensure!(
        total <= MAX,
        "the broker holds {total} partitions: {topics:?}"
    );
    ensure!(!topics.contains_key("too-big"), "too-big exists");
    ensure!(topics.get("small") == Some(&5), "small changed: {topics:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Fetch sessions
// ---------------------------------------------------------------------------------------

/// A Fetch v12 of partition 0 of `topic` in session (id, epoch); (top error, session id).
fn session_fetch(c: &mut RawClient, topic: &str, id: i32, epoch: i32) -> Result<(i16, i32)> {
    let req = fetch_request(topic, 0, 0, 0, 1 << 20, 1 << 20)
        .with_session_id(id)
        .with_session_epoch(epoch);
    let resp = c.call(12, &req)?;
    Ok((resp.error_code, resp.session_id))
}

#[test]
fn fetch_sessions_belong_to_their_connection() -> Result<()> {
    const TOPIC: &str = "sessions";
    // One shard: both connections reach the same session table.
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic(TOPIC, 1, &[])?;
    let mut a = connect(&broker)?;
    let mut b = connect(&broker)?;
    ensure!(
        a.version_for::<FetchRequest>(12)? == 12,
        "broker lacks Fetch v12"
    );

    let (code, id) = session_fetch(&mut a, TOPIC, 0, 0)?;
    ensure!(
        code == 0 && id != 0,
        "creating a session: error {code}, id {id}"
    );
    let (code, _) = session_fetch(&mut b, TOPIC, id, 1)?;
    ensure!(
        code == FETCH_SESSION_ID_NOT_FOUND,
        "another connection using session {id}: error {code}, want 70"
    );
    // Another connection's close (epoch -1) does not close A's session.
    let _ = session_fetch(&mut b, TOPIC, id, -1)?;
    let (code, got) = session_fetch(&mut a, TOPIC, id, 1)?;
    ensure!(
        code == 0 && got == id,
        "A's incremental fetch after B's close attempt: error {code}, session {got}"
    );
    let (code, _) = session_fetch(&mut a, TOPIC, id, 2)?;
    ensure!(code == 0, "A's next epoch: error {code}");

    // Ids are not handed out in sequence.
    let mut c = connect(&broker)?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (code, id) = session_fetch(&mut c, TOPIC, 0, 0)?;
        ensure!(code == 0 && id != 0, "new session: error {code}, id {id}");
        ids.push(id);
    }
    eprintln!("fetch sessions: ids {ids:?}");
    ensure!(
        !ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "session ids are consecutive: {ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    ensure!(unique.len() == ids.len(), "session ids repeat: {ids:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. The heap
// ---------------------------------------------------------------------------------------

/// The broker runs with transparent huge pages off (`THP_enabled: 0` in its
/// `/proc/<pid>/status`), and its heap holds none after 32 MiB were produced into the
/// batch cache: with them on, every growth of the heap was a 2 MiB zero-filling fault on a
/// shard's thread (main.rs, `disable_transparent_huge_pages`).
#[test]
fn the_heap_grows_without_huge_page_faults() -> Result<()> {
    let broker = BrokerProcess::spawn(1)?;
    broker.create_topic("heap", 1, &[])?;
    let pid = broker.pid().context("broker not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    ensure!(thp == Some("0"), "THP_enabled of the broker: {thp:?}");
    let mut c = connect(&broker)?;
    let value = "h".repeat(64 << 10);
    for i in 0..512 {
        let (err, _) = produce(&mut c, "heap", record_batch(&[&value], TS + i)?)?;
        ensure!(err == 0, "produce {i}: error {err}");
    }
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let huge_kb: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no AnonHugePages in smaps_rollup")?;
    // the few the process took before it turned them off (its start) stay
    ensure!(
        huge_kb <= 16 << 10,
        "{huge_kb} kB of huge pages after 32 MiB produced"
    );
    Ok(())
}
