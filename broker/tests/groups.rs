//! Consumer-group tests: a real `sluice` process and librdkafka (rdkafka) group consumers.
//! Invariants checked: once a group is stable every partition is owned by exactly one
//! member; a closed or SIGKILLed member's partitions move to the others; cooperative-sticky
//! moves only what must move; range/roundrobin produce their documented shapes; committed
//! offsets survive SIGTERM and kill -9; groups are independent; churn keeps at-least-once.
//! A static member restarted in time keeps its partitions without a rebalance.
//! Every wait is bounded; brokers and kcat children are killed on drop.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{block_on, payload_seq, record_payload, BrokerProcess, OP_TIMEOUT};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::RebalanceProtocol;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The broker's minimum session timeout; members of these tests all use it.
const SESSION_TIMEOUT_MS: &str = "6000";
/// Bound for a group to reach an expected assignment (covers one session expiry).
const GROUP_TIMEOUT: Duration = Duration::from_secs(30);
/// An assignment must hold unchanged this long to count as the stable outcome.
const STABLE_FOR: Duration = Duration::from_secs(2);

/// A broker with a short `group.initial.rebalance.delay.ms` and no topic auto-creation,
/// plus the group-test client helpers below. Lifecycle comes from the shared harness.
struct Broker {
    proc: BrokerProcess,
}

impl Broker {
    fn spawn() -> Result<Self> {
        let proc = BrokerProcess::spawn_with(
            2,
            &[
                ("group.initial.rebalance.delay.ms", "200"),
                ("auto.create.topics.enable", "false"),
            ],
        )?;
        Ok(Broker { proc })
    }

    fn bootstrap(&self) -> String {
        self.proc.bootstrap()
    }

    fn start(&mut self) -> Result<()> {
        self.proc.restart()
    }

    fn kill9(&mut self) -> Result<()> {
        self.proc.kill9()
    }

    /// SIGTERM and a bounded wait for a clean (status 0) exit.
    fn sigterm(&mut self) -> Result<()> {
        let status = self.proc.sigterm()?;
        ensure!(status.success(), "broker exited with {status} on SIGTERM");
        Ok(())
    }

    fn config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "30000")
            .set("log_level", "3");
        cfg
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.config().create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
        for r in block_on(admin.create_topics([&topic], &opts))? {
            if let Err((t, code)) = r {
                bail!("create topic {t}: {code:?}");
            }
        }
        let c: BaseConsumer = self.config().create()?;
        let deadline = Instant::now() + OP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(3)) {
                if md.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                }) {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("topic {name} never showed {partitions} led partitions")
    }

    fn producer(&self) -> Result<FutureProducer> {
        Ok(self
            .config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "30000")
            .create()?)
    }

    /// Produces offsets `from..from + n` of one partition; the record at offset o carries
    /// seq `seq_of(partition, o)` (checked against the acked offsets).
    fn produce_to(&self, topic: &str, partition: i32, from: i64, n: i64) -> Result<()> {
        let producer = self.producer()?;
        block_on(async {
            for off in from..from + n {
                let payload = record_payload(seq_of(partition, off));
                let rec = FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&payload);
                match producer.send(rec, Duration::from_secs(15)).await {
                    Ok(d) => ensure!(d.offset == off, "acked at {} want {off}", d.offset),
                    Err((e, _)) => bail!("produce {topic}-{partition}@{off}: {e}"),
                }
            }
            Ok(())
        })
    }

    /// A consumer of `group` that joins nothing (for OffsetFetch / DescribeGroups only).
    fn observer(&self, group: &str) -> Result<BaseConsumer> {
        Ok(self
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?)
    }

    /// A group member subscribed to `topics` (manual commits, earliest by default).
    fn member(&self, group: &str, topics: &[&str], extra: &[(&str, &str)]) -> Result<Member> {
        let mut cfg = self.config();
        cfg.set("group.id", group)
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        let m: Member = cfg.create_with_context(Tracker::default())?;
        m.subscribe(topics)?;
        Ok(m)
    }
}

/// Kills (SIGKILL) and reaps a helper process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn seq_of(partition: i32, offset: i64) -> u64 {
    partition as u64 * 1_000_000 + offset as u64
}

type Tp = (String, i32);

/// One rebalance callback: (true = assign / false = revoke, its partitions).
type Event = (bool, BTreeSet<Tp>);

/// Records every rebalance callback of one member (rdkafka keeps it in an `Arc`).
#[derive(Default)]
struct Tracker {
    events: Mutex<Vec<Event>>,
}

impl ClientContext for Tracker {}

impl ConsumerContext for Tracker {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let ev = match r {
            Rebalance::Assign(tpl) => (true, tps(tpl)),
            Rebalance::Revoke(tpl) => (false, tps(tpl)),
            Rebalance::Error(_) => return,
        };
        if let Ok(mut events) = self.events.lock() {
            events.push(ev);
        }
    }
}

type Member = BaseConsumer<Tracker>;

fn tps(tpl: &TopicPartitionList) -> BTreeSet<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn all_tps(topics: &[&str], partitions: i32) -> BTreeSet<Tp> {
    topics
        .iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.to_string(), p)))
        .collect()
}

/// One consumed record.
#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    seq: u64,
}

/// Serves one member's callbacks and drains what it has fetched (bounded).
fn pump(m: &Member, sink: &mut Vec<Rec>, errors: &mut Vec<String>) -> Result<()> {
    let mut wait = Duration::from_millis(20);
    for _ in 0..2000 {
        match m.poll(wait) {
            None => break,
            Some(Ok(msg)) => sink.push(Rec {
                partition: msg.partition(),
                offset: msg.offset(),
                seq: payload_seq(msg.payload().unwrap_or_default())?,
            }),
            Some(Err(e)) => errors.push(e.to_string()),
        }
        wait = Duration::ZERO;
    }
    Ok(())
}

/// Each partition owned by exactly one member and together all of `want`.
fn full_disjoint(assigned: &[BTreeSet<Tp>], want: &BTreeSet<Tp>) -> bool {
    let total: usize = assigned.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<&Tp> = assigned.iter().flatten().collect();
    total == want.len() && union.len() == want.len() && want.iter().all(|tp| union.contains(tp))
}

/// Polls all members until `pred` holds on their assignments, unchanged for `STABLE_FOR`.
fn wait_assignments(
    members: &[&Member],
    what: &str,
    pred: impl Fn(&[BTreeSet<Tp>]) -> bool,
) -> Result<Vec<BTreeSet<Tp>>> {
    let deadline = Instant::now() + GROUP_TIMEOUT;
    let mut held: Option<(Instant, Vec<BTreeSet<Tp>>)> = None;
    let (mut sink, mut errors) = (Vec::new(), Vec::new());
    loop {
        for m in members {
            pump(m, &mut sink, &mut errors)?;
        }
        let cur = members
            .iter()
            .map(|m| Ok(tps(&m.assignment()?)))
            .collect::<Result<Vec<_>>>()?;
        if pred(&cur) {
            match &held {
                Some((since, prev)) if *prev == cur => {
                    if since.elapsed() >= STABLE_FOR {
                        return Ok(cur);
                    }
                }
                _ => held = Some((Instant::now(), cur.clone())),
            }
        } else {
            held = None;
        }
        if Instant::now() > deadline {
            errors.truncate(10);
            bail!("{what}: not reached in {GROUP_TIMEOUT:?}; last {cur:?}; errors {errors:?}");
        }
    }
}

/// DescribeGroups through librdkafka: (state, protocol, member count), retried until
/// `pred` holds (bounded).
fn wait_group(
    obs: &BaseConsumer,
    group: &str,
    pred: impl Fn(&str, &str, usize) -> bool,
) -> Result<(String, String, usize)> {
    let deadline = Instant::now() + GROUP_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match obs.fetch_group_list(Some(group), OP_TIMEOUT) {
            Ok(list) => {
                if let Some(g) = list.groups().iter().find(|g| g.name() == group) {
                    let got = (
                        g.state().to_string(),
                        g.protocol().to_string(),
                        g.members().len(),
                    );
                    if pred(&got.0, &got.1, got.2) {
                        return Ok(got);
                    }
                    last = format!("{got:?}");
                } else {
                    last = "group not listed".into();
                }
            }
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("group {group} never matched; last {last}")
}

/// OffsetFetch for `group` on partitions 0..n of `topic`.
fn committed<C: ConsumerContext>(
    obs: &BaseConsumer<C>,
    topic: &str,
    n: i32,
) -> Result<BTreeMap<i32, Offset>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let got = obs.committed_offsets(tpl, OP_TIMEOUT)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect())
}

fn as_offsets(m: &BTreeMap<i32, i64>) -> BTreeMap<i32, Offset> {
    m.iter().map(|(p, o)| (*p, Offset::Offset(*o))).collect()
}

/// OffsetFetch by a fresh client of `group` must return exactly `want`.
fn expect_committed(
    broker: &Broker,
    group: &str,
    topic: &str,
    want: &BTreeMap<i32, i64>,
    when: &str,
) -> Result<()> {
    let got = committed(&broker.observer(group)?, topic, want.len() as i32)?;
    ensure!(
        got == as_offsets(want),
        "{when}: {group} has {got:?}, want {want:?}"
    );
    Ok(())
}

/// Synchronous OffsetCommit of `offsets` by a member.
fn commit_at(m: &Member, topic: &str, offsets: &BTreeMap<i32, i64>) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    Ok(m.commit(&tpl, CommitMode::Sync)?)
}

#[test]
fn three_members_own_six_partitions_and_close_hands_over() -> Result<()> {
    let broker = Broker::spawn()?;
    let (topic, group) = ("own6", "own6-g");
    broker.create_topic(topic, 6)?;
    let want = all_tps(&[topic], 6);
    let a = broker.member(group, &[topic], &[])?;
    let b = broker.member(group, &[topic], &[])?;
    let c = broker.member(group, &[topic], &[])?;
    let three = wait_assignments(&[&a, &b, &c], "3 members own 6 partitions", |s| {
        full_disjoint(s, &want) && s.iter().all(|m| m.len() == 2)
    })?;
    eprintln!("three members: {three:?}");
    let obs = broker.observer(group)?;
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 3)?;

    drop(c); // close(): LeaveGroup, so the others take over without waiting for a timeout
    let two = wait_assignments(&[&a, &b], "2 members after close own 6", |s| {
        full_disjoint(s, &want) && s.iter().all(|m| m.len() == 3)
    })?;
    eprintln!("after close: {two:?}");
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 2)?;
    Ok(())
}

#[test]
fn killed_member_is_replaced_after_session_timeout() -> Result<()> {
    let broker = Broker::spawn()?;
    let (topic, group) = ("kill6", "kill6-g");
    broker.create_topic(topic, 6)?;
    let want = all_tps(&[topic], 6);
    let a = broker.member(group, &[topic], &[])?;
    let b = broker.member(group, &[topic], &[])?;
    let mut kcat = kcat_member(&broker, group, topic, &[])?;
    // The two rdkafka members hold 2 partitions each only when a third member holds 2.
    let with_kcat = wait_assignments(&[&a, &b], "kcat joined as third member", |s| {
        let union: BTreeSet<&Tp> = s.iter().flatten().collect();
        s.iter().all(|m| m.len() == 2) && union.len() == 4
    })?;
    let obs = broker.observer(group)?;
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 3)?;

    kcat.0.kill()?; // SIGKILL: no LeaveGroup, the broker must expire the session
    kcat.0.wait()?;
    let killed_at = Instant::now();
    let after = wait_assignments(&[&a, &b], "survivors own all 6", |s| {
        full_disjoint(s, &want) && s.iter().all(|m| m.len() == 3)
    })?;
    eprintln!(
        "with kcat {with_kcat:?}; {:?} after kill -9: {after:?}",
        killed_at.elapsed()
    );
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 2)?;
    Ok(())
}

/// `kcat -G` as a member of `group` in its own process (so it can die without LeaveGroup).
fn kcat_member(broker: &Broker, group: &str, topic: &str, extra: &[&str]) -> Result<ChildGuard> {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &broker.bootstrap(), "-G", group, topic, "-q", "-u"])
        .args([
            "-X",
            "broker.address.family=v4",
            "-X",
            "heartbeat.interval.ms=1000",
        ])
        .args(["-X", &format!("session.timeout.ms={SESSION_TIMEOUT_MS}")]);
    for x in extra {
        cmd.args(["-X", x]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning kcat -G")?;
    Ok(ChildGuard(child))
}

#[test]
fn static_member_restarted_in_time_keeps_its_partitions_without_rebalance() -> Result<()> {
    let broker = Broker::spawn()?;
    let (topic, group) = ("static6", "static6-g");
    broker.create_topic(topic, 6)?;
    let a = broker.member(group, &[topic], &[("group.instance.id", "static-a")])?;
    let b = broker.member(group, &[topic], &[("group.instance.id", "static-b")])?;
    let instance = ["group.instance.id=static-kcat"];
    let mut kcat = kcat_member(&broker, group, topic, &instance)?;
    let three = |s: &[BTreeSet<Tp>]| {
        let union: BTreeSet<&Tp> = s.iter().flatten().collect();
        s.iter().all(|m| m.len() == 2) && union.len() == 4
    };
    let before = wait_assignments(&[&a, &b], "static kcat joined", three)?;
    let obs = broker.observer(group)?;
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 3)?;
    for m in [&a, &b] {
        if let Ok(mut ev) = m.context().events.lock() {
            ev.clear();
        }
    }
    kcat.0.kill()?; // no LeaveGroup; static members never send one on close either
    kcat.0.wait()?;
    let _kcat = kcat_member(&broker, group, topic, &instance)?;
    // Past the session timeout of the killed process: the restarted instance replaced it
    // (KIP-345), so the group neither expired it nor rebalanced the others.
    let until = Instant::now() + Duration::from_millis(8000);
    let (mut sink, mut errors) = (Vec::new(), Vec::new());
    while Instant::now() < until {
        for m in [&a, &b] {
            pump(m, &mut sink, &mut errors)?;
        }
    }
    wait_group(&obs, group, |st, _, n| st == "Stable" && n == 3)?;
    for (i, m) in [&a, &b].into_iter().enumerate() {
        let events = m
            .context()
            .events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        ensure!(events.is_empty(), "member {i} was rebalanced: {events:?}");
        let now = tps(&m.assignment()?);
        ensure!(now == before[i], "member {i}: {:?} -> {now:?}", before[i]);
    }
    Ok(())
}

#[test]
fn cooperative_sticky_keeps_unmoved_partitions() -> Result<()> {
    let broker = Broker::spawn()?;
    let (topic, group) = ("coop6", "coop6-g");
    broker.create_topic(topic, 6)?;
    let want = all_tps(&[topic], 6);
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let a = broker.member(group, &[topic], &coop)?;
    let b = broker.member(group, &[topic], &coop)?;
    let before = wait_assignments(&[&a, &b], "2 cooperative members", |s| {
        full_disjoint(s, &want) && s.iter().all(|m| m.len() == 3)
    })?;
    ensure!(
        matches!(a.rebalance_protocol(), RebalanceProtocol::Cooperative),
        "librdkafka did not settle on the cooperative protocol"
    );
    for m in [&a, &b] {
        if let Ok(mut ev) = m.context().events.lock() {
            ev.clear();
        }
    }
    let c = broker.member(group, &[topic], &coop)?;
    let after = wait_assignments(&[&a, &b, &c], "3 cooperative members", |s| {
        full_disjoint(s, &want) && s.iter().all(|m| m.len() == 2)
    })?;
    eprintln!("before {before:?} after {after:?}");
    for (i, m) in [&a, &b].into_iter().enumerate() {
        ensure!(
            after[i].is_subset(&before[i]),
            "member {i} gained partitions it did not own: {:?} -> {:?}",
            before[i],
            after[i]
        );
        let events = m
            .context()
            .events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let revoked: BTreeSet<Tp> = events
            .iter()
            .filter(|(assign, _)| !assign)
            .flat_map(|(_, s)| s.iter().cloned())
            .collect();
        let moved: BTreeSet<Tp> = before[i].difference(&after[i]).cloned().collect();
        ensure!(
            revoked == moved,
            "member {i}: revoked {revoked:?} but only {moved:?} moved (events {events:?})"
        );
    }
    Ok(())
}

/// Two members over two 3-partition topics with one assignor; returns the stable
/// assignment (as a set of member sets) and the protocol the broker picked.
fn two_topic_assignment(strategy: &str) -> Result<(BTreeSet<BTreeSet<Tp>>, String)> {
    let broker = Broker::spawn()?;
    let (t1, t2, group) = ("asg-a", "asg-b", format!("asg-{strategy}"));
    broker.create_topic(t1, 3)?;
    broker.create_topic(t2, 3)?;
    let want = all_tps(&[t1, t2], 3);
    let cfg = [("partition.assignment.strategy", strategy)];
    let a = broker.member(&group, &[t1, t2], &cfg)?;
    let b = broker.member(&group, &[t1, t2], &cfg)?;
    let got = wait_assignments(&[&a, &b], strategy, |s| {
        full_disjoint(s, &want) && s.iter().all(|m| !m.is_empty())
    })?;
    let obs = broker.observer(&group)?;
    let (_, protocol, _) = wait_group(&obs, &group, |st, _, n| st == "Stable" && n == 2)?;
    Ok((got.into_iter().collect(), protocol))
}

fn shape(sets: &[&[(&str, i32)]]) -> BTreeSet<BTreeSet<Tp>> {
    sets.iter()
        .map(|s| s.iter().map(|(t, p)| (t.to_string(), *p)).collect())
        .collect()
}

#[test]
fn range_and_roundrobin_assign_everything_once() -> Result<()> {
    // Range splits each topic by partition ranges: the first member gets p0-p1 of both.
    let (range, proto) = two_topic_assignment("range")?;
    ensure!(proto == "range", "group protocol {proto}, want range");
    let want = shape(&[
        &[("asg-a", 0), ("asg-a", 1), ("asg-b", 0), ("asg-b", 1)],
        &[("asg-a", 2), ("asg-b", 2)],
    ]);
    ensure!(range == want, "range assignment {range:?}, want {want:?}");
    // Roundrobin deals all 6 partitions (sorted by topic, partition) alternately.
    let (rr, proto) = two_topic_assignment("roundrobin")?;
    ensure!(
        proto == "roundrobin",
        "group protocol {proto}, want roundrobin"
    );
    let want = shape(&[
        &[("asg-a", 0), ("asg-a", 2), ("asg-b", 1)],
        &[("asg-a", 1), ("asg-b", 0), ("asg-b", 2)],
    ]);
    ensure!(rr == want, "roundrobin assignment {rr:?}, want {want:?}");
    Ok(())
}

/// Consumes with a fresh member of `group` until every partition reaches `high`; checks
/// that partition p delivers exactly offsets `start[p]..high` in order (the member uses
/// auto.offset.reset=latest, so a lost commit shows up as missing records).
fn resume_exactly(
    broker: &Broker,
    topic: &str,
    group: &str,
    start: &BTreeMap<i32, i64>,
    high: i64,
) -> Result<()> {
    let m = broker.member(group, &[topic], &[("auto.offset.reset", "latest")])?;
    let mut got: BTreeMap<i32, Vec<i64>> = start.keys().map(|p| (*p, Vec::new())).collect();
    let (mut sink, mut errors) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + GROUP_TIMEOUT;
    let done = |got: &BTreeMap<i32, Vec<i64>>| {
        got.iter()
            .all(|(p, v)| start[p] == high || v.last() == Some(&(high - 1)))
    };
    while !done(&got) {
        ensure!(
            Instant::now() < deadline,
            "group {group} did not resume: got {got:?} from {start:?}; errors {errors:?}"
        );
        pump(&m, &mut sink, &mut errors)?;
        for r in sink.drain(..) {
            ensure!(r.seq == seq_of(r.partition, r.offset), "wrong record {r:?}");
            got.entry(r.partition).or_default().push(r.offset);
        }
    }
    // Give a partition already at its end time to show that nothing older is redelivered.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        pump(&m, &mut sink, &mut errors)?;
    }
    for r in sink.drain(..) {
        got.entry(r.partition).or_default().push(r.offset);
    }
    for (p, from) in start {
        let want: Vec<i64> = (*from..high).collect();
        ensure!(
            got[p] == want,
            "{group} partition {p}: committed {from}, got offsets {:?}",
            got[p]
        );
    }
    Ok(())
}

#[test]
fn committed_offsets_survive_sigterm_and_kill9() -> Result<()> {
    let mut broker = Broker::spawn()?;
    let (topic, group) = ("resume3", "resume3-g");
    broker.create_topic(topic, 3)?;
    for p in 0..3 {
        broker.produce_to(topic, p, 0, 30)?;
    }
    // First member reads everything, then commits chosen offsets (as if it had processed
    // exactly the records before them).
    let first = BTreeMap::from([(0, 7), (1, 15), (2, 22)]);
    {
        let m = broker.member(group, &[topic], &[])?;
        let (mut sink, mut errors) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + GROUP_TIMEOUT;
        while sink.len() < 90 {
            ensure!(
                Instant::now() < deadline,
                "read {} of 90: {errors:?}",
                sink.len()
            );
            pump(&m, &mut sink, &mut errors)?;
        }
        commit_at(&m, topic, &first)?;
        expect_committed(&broker, group, topic, &first, "after commit")?;
    }
    broker.sigterm()?;
    broker.start()?;
    expect_committed(&broker, group, topic, &first, "after SIGTERM")?;
    resume_exactly(&broker, topic, group, &first, 30)?;

    // Second round: a member commits new offsets, then kill -9 and more records.
    let second = BTreeMap::from([(0, 20), (1, 25), (2, 30)]);
    {
        let m = broker.member(group, &[topic], &[])?;
        let (mut sink, mut errors) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + GROUP_TIMEOUT;
        while m.assignment()?.count() < 3 {
            ensure!(Instant::now() < deadline, "no assignment: {errors:?}");
            pump(&m, &mut sink, &mut errors)?;
        }
        commit_at(&m, topic, &second)?;
    }
    broker.kill9()?;
    broker.start()?;
    expect_committed(&broker, group, topic, &second, "after kill -9")?;
    for p in 0..3 {
        broker.produce_to(topic, p, 30, 5)?;
    }
    resume_exactly(&broker, topic, group, &second, 35)
}

#[test]
fn two_groups_read_the_same_topic_independently() -> Result<()> {
    let broker = Broker::spawn()?;
    let topic = "shared4";
    broker.create_topic(topic, 4)?;
    for p in 0..4 {
        broker.produce_to(topic, p, 0, 50)?;
    }
    let a1 = broker.member("shared-a", &[topic], &[])?;
    let a2 = broker.member("shared-a", &[topic], &[])?;
    let b1 = broker.member("shared-b", &[topic], &[])?;
    let mut got = [BTreeSet::new(), BTreeSet::new()];
    let (mut sink, mut errors) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + GROUP_TIMEOUT;
    while got[0].len() < 200 || got[1].len() < 200 {
        ensure!(
            Instant::now() < deadline,
            "group a has {} of 200, group b {}: {errors:?}",
            got[0].len(),
            got[1].len()
        );
        for (m, g) in [(&a1, 0), (&a2, 0), (&b1, 1)] {
            pump(m, &mut sink, &mut errors)?;
            for r in sink.drain(..) {
                ensure!(r.seq == seq_of(r.partition, r.offset), "wrong record {r:?}");
                got[g].insert((r.partition, r.offset));
            }
        }
    }
    let all: BTreeSet<(i32, i64)> = (0..4).flat_map(|p| (0..50).map(move |o| (p, o))).collect();
    ensure!(got[0] == all && got[1] == all, "a group missed records");
    // Group a commits everything it read; group b only half: offsets are per group.
    for m in [&a1, &a2] {
        m.commit_consumer_state(CommitMode::Sync)?;
    }
    let end: BTreeMap<i32, i64> = (0..4).map(|p| (p, 50)).collect();
    let mid: BTreeMap<i32, i64> = (0..4).map(|p| (p, 25)).collect();
    commit_at(&b1, topic, &mid)?;
    expect_committed(&broker, "shared-a", topic, &end, "per-group offsets")?;
    expect_committed(&broker, "shared-b", topic, &mid, "per-group offsets")?;
    let list = broker
        .observer("shared-a")?
        .fetch_group_list(None, OP_TIMEOUT)?;
    let names: BTreeSet<&str> = list.groups().iter().map(|g| g.name()).collect();
    ensure!(
        names.contains("shared-a") && names.contains("shared-b"),
        "ListGroups shows {names:?}"
    );
    Ok(())
}

/// (how many records were attempted, the acked seqs).
type Produced = (u64, BTreeSet<u64>);

/// Produces numbered records to `topic` (6 partitions, round-robin by seq) until `stop`;
/// the thread returns what it produced.
fn produce_until(
    broker: &Broker,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> Result<thread::JoinHandle<Result<Produced>>> {
    let producer = broker.producer()?;
    let topic = topic.to_string();
    Ok(thread::spawn(move || {
        block_on(async {
            let mut acked = BTreeSet::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for _ in 0..40 {
                    let payload = record_payload(seq);
                    let rec = FutureRecord::<(), _>::to(&topic)
                        .partition((seq % 6) as i32)
                        .payload(&payload);
                    // Enqueued now; a full local queue just means this seq is never acked.
                    if let Ok(fut) = producer.send_result(rec) {
                        batch.push((seq, fut));
                    }
                    seq += 1;
                }
                for (s, fut) in batch {
                    if let Ok(Ok(_)) = fut.await {
                        acked.insert(s);
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok((seq, acked))
        })
    }))
}

/// What the churn test's members have consumed so far.
#[derive(Default)]
struct Churn {
    consumed: BTreeSet<u64>,
    deliveries: usize,
    commit_failures: usize,
    sink: Vec<Rec>,
    errors: Vec<String>,
}

impl Churn {
    /// Processes whatever each member fetched, then commits its positions.
    fn round(&mut self, members: &[Member], for_time: Duration) -> Result<()> {
        let until = Instant::now() + for_time;
        while Instant::now() < until {
            for m in members {
                pump(m, &mut self.sink, &mut self.errors)?;
                let had = !self.sink.is_empty();
                for r in self.sink.drain(..) {
                    self.consumed.insert(r.seq);
                    self.deliveries += 1;
                }
                if had && m.commit_consumer_state(CommitMode::Sync).is_err() {
                    self.commit_failures += 1; // e.g. mid-rebalance: redelivery covers it
                }
            }
        }
        Ok(())
    }
}

#[test]
fn at_least_once_through_repeated_rebalances() -> Result<()> {
    let broker = Broker::spawn()?;
    let (topic, group) = ("churn6", "churn6-g");
    broker.create_topic(topic, 6)?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce_until(&broker, topic, stop.clone())?;
    let mut churn = Churn::default();
    let mut members = vec![
        broker.member(group, &[topic], &[])?,
        broker.member(group, &[topic], &[])?,
    ];
    // Every member's rebalance log, kept after the member is closed.
    let mut logs: Vec<Arc<Tracker>> = members.iter().map(|m| m.context().clone()).collect();
    churn.round(&members, Duration::from_millis(2500))?;
    for step in 0..6 {
        if step % 2 == 0 {
            members.push(broker.member(group, &[topic], &[])?);
            logs.extend(members.last().map(|m| m.context().clone()));
        } else {
            drop(members.remove(0)); // close: LeaveGroup mid-stream
        }
        churn.round(&members, Duration::from_millis(1500))?;
    }
    stop.store(true, Ordering::Relaxed);
    let (attempted, acked) = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    ensure!(acked.len() > 1000, "only {} records acked", acked.len());
    // Drain: the remaining members must eventually see every acked record.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&churn.consumed) {
        ensure!(
            Instant::now() < deadline,
            "{} acked records never consumed (first {:?}); errors {:?}",
            acked.difference(&churn.consumed).count(),
            acked
                .difference(&churn.consumed)
                .take(5)
                .collect::<Vec<_>>(),
            churn.errors.iter().take(10).collect::<Vec<_>>()
        );
        churn.round(&members, Duration::from_millis(500))?;
    }
    ensure!(
        churn.consumed.iter().all(|s| *s < attempted),
        "consumed a seq never produced"
    );
    // The churn really moved partitions: each of the 5 members owned some at some point.
    for (i, log) in logs.iter().enumerate() {
        let events = log.events.lock().map(|e| e.clone()).unwrap_or_default();
        ensure!(
            events.iter().any(|(assign, s)| *assign && !s.is_empty()),
            "member {i} never got partitions: {events:?}"
        );
    }
    let rebalances: usize = logs
        .iter()
        .map(|l| l.events.lock().map(|e| e.len()).unwrap_or(0))
        .sum();
    // The group's final commits reach the end of every partition.
    let obs = broker.observer(group)?;
    let mut highs = BTreeMap::new();
    for p in 0..6 {
        highs.insert(p, obs.fetch_watermarks(topic, p, OP_TIMEOUT)?.1);
    }
    let deadline = Instant::now() + GROUP_TIMEOUT;
    loop {
        churn.round(&members, Duration::from_millis(300))?;
        for m in &members {
            let _ = m.commit_consumer_state(CommitMode::Sync);
        }
        let got = committed(&obs, topic, 6)?;
        if got == as_offsets(&highs) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "committed {got:?}, highs {highs:?}"
        );
    }
    eprintln!(
        "produced {attempted}, acked {}, {} distinct delivered of {}, {} failed commits, \
         {rebalances} rebalance callbacks over {} members",
        acked.len(),
        churn.consumed.len(),
        churn.deliveries,
        churn.commit_failures,
        logs.len()
    );
    Ok(())
}
