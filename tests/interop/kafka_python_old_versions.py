"""kafka-python pinned to old broker versions (api_version=(1, 0, 0) and (0, 10, 2)) against
a running Sluice broker, as Kafka 3.9 served them.

(1, 0, 0): admin create + DescribeConfigs v0, acks=all produce (Produce v5), a two-member
group that consumes everything and commits, then a restarted member that must resume at
the commits (nothing committed comes back) and read only what was produced since.
(0, 10, 2): admin CreateTopics v1 / DeleteTopics v0; an acks=all gzip producer (Produce
v2, message format v1); a group member (JoinGroup v1, SyncGroup v0, Heartbeat v0,
LeaveGroup v0) that reads every record with Fetch v3 (format v1, with timestamps) and
commits offsets, which a (1, 0, 0) member of the same group then resumes from.
(0, 9): an acks=all producer (Produce v1, message format v0) and a group member that
reads every record with Fetch v1 (format v0, no timestamps). Sluice stores v2 batches
only and converts these formats on the way in and out.
Usage: kafka_python_old_versions.py BOOTSTRAP [TOPIC_PREFIX]. Exits non-zero on failure.
"""
import collections
import logging
import signal
import sys
import threading
import time
import traceback
import uuid

import kafka.errors as Errors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

NEW = (1, 0, 0)
OLD = (0, 10, 2)
V09 = (0, 9)
PARTITIONS = 4
COUNT = 400
MORE = 100
OLD_MORE = 150  # produced by each old producer
TIMEOUT = 60  # bound on every wait; the broker may delay a group's first rebalance 3 s


class _Recent(logging.Handler):
    """Keeps kafka-python's last log lines, printed when a check fails."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = collections.deque(maxlen=25)

    def emit(self, record):  # called with self.lock held
        self.lines.append("%.3f %s %s %s %s" % (record.created, record.threadName, record.name,
                                                record.levelname, record.getMessage()[:300]))

    def recent(self):
        with self.lock:
            return list(self.lines)


RECENT = _Recent()
_WARNINGS = logging.StreamHandler(sys.stderr)  # kafka-python's warnings, as before
_WARNINGS.setLevel(logging.WARNING)
logging.getLogger("kafka").addHandler(RECENT)
logging.getLogger("kafka").addHandler(_WARNINGS)
logging.getLogger("kafka").setLevel(logging.INFO)
MEMBERS = []  # every group member made; the open ones are described when a check fails


def describe(m):
    """A member's view of its group: generation, assignment, positions."""
    try:
        coord = m._coordinator
        gen = coord._generation
        parts = sorted(m.assignment(), key=lambda tp: (tp.topic, tp.partition))
        positions = {tp.partition: m._subscription.assignment[tp].position
                     for tp in parts if tp in m._subscription.assignment}
        return "state=%s generation=%s member=%s assigned=%s positions=%s" % (
            coord.state, gen.generation_id, gen.member_id, [tp.partition for tp in parts], positions)
    except Exception as e:  # a diagnostic must not hide the failure
        return "not described: %r" % (e,)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    for i, m in enumerate(MEMBERS):
        if not getattr(m, "_closed", False):
            print("    member %d: %s" % (i, describe(m)), flush=True)
    for line in RECENT.recent():
        print("    log " + line, flush=True)
    sys.exit(1)


def _killed(signum, _frame):
    fail("killed by signal %d (run.sh's bound)" % signum)


signal.signal(signal.SIGTERM, _killed)


def ok(msg):
    print("ok: " + msg, flush=True)


def member(bootstrap, group, topic, api_version):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, api_version=api_version,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=10000, heartbeat_interval_ms=1000,
                      request_timeout_ms=30000)
    c.subscribe([topic])
    MEMBERS.append(c)
    return c


def wait_topic(admin, topic):
    deadline = time.time() + TIMEOUT
    while topic not in admin.list_topics():
        if time.time() > deadline:
            fail("topic %s not listed" % topic)
        time.sleep(0.1)


def produce(bootstrap, topic, start, n):
    p = KafkaProducer(bootstrap_servers=bootstrap, api_version=NEW, acks="all", linger_ms=5)
    futures = [p.send(topic, key=b"k%d" % (i % 13), value=b"v-%d" % i)
               for i in range(start, start + n)]
    for f in futures:
        f.get(timeout=30)
    p.close()


def commit(m):
    """Commits what `m` consumed; a commit cut by a rebalance is made again after the next
    poll (its records may come again, which the checks allow before the restart)."""
    try:
        m.commit()
    except Errors.CommitFailedError:
        pass


def run_members(members, done, progress, what):
    """Polls each member from a thread of its own, committing its positions after every
    poll while it has partitions (a commit cut by a rebalance is not retried by kafka-python,
    and a member that keeps its partitions gets no records again), until
    `done(records so far)`; returns every record read (with repeats).

    One thread per consumer, as applications run them: kafka-python 3.0.12 drops the
    result of a join (JoinGroup, then SyncGroup) that completes while its consumer is
    outside poll() and sends a new JoinGroup. A leader's JoinGroup in a Stable group
    starts a rebalance (in Kafka too), so two members polled in turn from one thread can
    rebalance each other for minutes."""
    lock = threading.Lock()
    seen = []
    errors = []
    stop = threading.Event()

    def loop(m):
        try:
            while not stop.is_set():
                records = [r for rs in m.poll(timeout_ms=500).values() for r in rs]
                with lock:
                    seen.extend(records)
                if records or m.assignment():
                    commit(m)
        except Exception:  # reported by the main thread
            errors.append(traceback.format_exc(limit=4))

    threads = [threading.Thread(target=loop, args=(m,), daemon=True) for m in members]
    for t in threads:
        t.start()
    deadline = time.time() + TIMEOUT
    outcome = None
    while outcome is None:
        with lock:
            snapshot = list(seen)
        try:
            if errors:
                outcome = "%s: a member failed: %s" % (what, errors[0])
            elif done(snapshot):
                break
            elif time.time() > deadline:
                outcome = "%s: %s in %d s" % (what, progress(snapshot), TIMEOUT)
            else:
                time.sleep(0.1)
        except Exception:
            outcome = "%s: checking failed: %s" % (what, traceback.format_exc(limit=4))
    stop.set()
    for t in threads:
        t.join(timeout=TIMEOUT)
    if any(t.is_alive() for t in threads):
        # its consumer must not be used by this thread too
        fail("%s: a member's poll or commit did not return in %d s" % (what, TIMEOUT))
    if outcome is not None:
        fail(outcome)
    with lock:
        return list(seen)


def drain_records(members, want, what):
    """run_members until records of `want` distinct values arrived."""
    def values(records):
        return {value_of(r) for r in records}
    return run_members(members, lambda rs: len(values(rs)) >= want,
                       lambda rs: "%d of %d records" % (len(values(rs)), want), what)


def value_of(record):
    return int(record.value.decode().split("-")[1])


def drain(members, want, what):
    """drain_records, as the values seen."""
    return [value_of(r) for r in drain_records(members, want, what)]


def check_new(bootstrap, prefix):
    topic, group = prefix + "-new", prefix + "-g-new"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=NEW,
                             request_timeout_ms=15000)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"retention.ms": "7200000"})],
                        timeout_ms=15000)
    wait_topic(admin, topic)
    # kafka-python sends DescribeConfigs v0 to a 1.0 broker; its default filter keeps the
    # values v0 does not flag is_default: only the override.
    resource = [ConfigResource(ConfigResourceType.TOPIC, topic)]
    modified = admin.describe_configs(resource).get("topic", {}).get(topic, {})
    if list(modified) != ["retention.ms"] or modified["retention.ms"].get("value") != "7200000":
        fail("DescribeConfigs v0, modified: %r" % (modified,))
    configs = admin.describe_configs(resource, config_filter="all").get("topic", {}).get(topic, {})
    if not configs.get("cleanup.policy", {}).get("is_default"):
        fail("DescribeConfigs v0: cleanup.policy not default: %r" % (configs.get("cleanup.policy"),))
    ok("(1,0,0) admin: created %s, DescribeConfigs v0 lists %d configs" % (topic, len(configs)))
    admin.close()

    produce(bootstrap, topic, 0, COUNT)
    ok("(1,0,0) produced %d records with acks=all" % COUNT)

    a = member(bootstrap, group, topic, NEW)
    b = member(bootstrap, group, topic, NEW)
    seen = drain([a, b], COUNT, "two members")
    if set(seen) != set(range(COUNT)):
        fail("two members read %d distinct values, want 0..%d" % (len(set(seen)), COUNT))
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    # The members keep committing their positions until the commits reach the ends.
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, api_version=NEW,
                            enable_auto_commit=False)
    ends = watcher.end_offsets(tps)

    def committed():
        return {tp: watcher.committed(tp, timeout_ms=5000) for tp in tps}
    run_members([a, b], lambda _: committed() == ends,
                lambda _: "committed %r, end offsets %r" % (committed(), ends), "commits")
    watcher.close()
    ok("(1,0,0) two members read all %d records and committed the end offsets" % COUNT)

    # Restart one member; both must resume at the commits and read only what is new.
    b.close()
    b = member(bootstrap, group, topic, NEW)
    produce(bootstrap, topic, COUNT, MORE)
    seen = drain([a, b], MORE, "after restart")
    old = [v for v in seen if v < COUNT]
    if old:
        fail("after restart, %d committed records came back (e.g. %d)" % (len(old), old[0]))
    if set(seen) != set(range(COUNT, COUNT + MORE)):
        fail("after restart read %d distinct new values, want %d" % (len(set(seen)), MORE))
    a.close()
    b.close()
    ok("(1,0,0) restarted member resumed at the commits: %d new records, none repeated" % MORE)
    return topic


def check_old(bootstrap, prefix, topic):
    group = prefix + "-g-old"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=OLD,
                             request_timeout_ms=15000)
    scratch = prefix + "-scratch"
    admin.create_topics([NewTopic(scratch, 2, 1)], timeout_ms=15000)  # CreateTopics v1
    wait_topic(admin, scratch)
    admin.delete_topics([scratch], timeout_ms=15000)  # DeleteTopics v0
    deadline = time.time() + TIMEOUT
    while scratch in admin.list_topics():
        if time.time() > deadline:
            fail("deleted topic %s still listed" % scratch)
        time.sleep(0.1)
    admin.close()
    ok("(0,10,2) admin: CreateTopics v1 and DeleteTopics v0")

    # Produce v2 (message format v1, gzip wrappers) and Produce v1 (message format v0).
    first_old = COUNT + MORE
    for api_version, codec, start in ((OLD, "gzip", first_old), (V09, None, first_old + OLD_MORE)):
        p = KafkaProducer(bootstrap_servers=bootstrap, api_version=api_version, acks="all",
                          compression_type=codec, linger_ms=5, retries=0)
        futures = [p.send(topic, key=b"k%d" % (i % 13), value=b"v-%d" % i)
                   for i in range(start, start + OLD_MORE)]
        for f in futures:
            f.get(timeout=30)
        p.close()
    total = COUNT + MORE + 2 * OLD_MORE
    ok("(0,10,2) produced %d records (Produce v2, gzip) and (0,9) %d (Produce v1)"
       % (OLD_MORE, OLD_MORE))

    # A group member at 0.10.2 reads everything with Fetch v3: message format v1, with the
    # producers' timestamps (none, -1, for what the (0,9) producer wrote in format v0).
    c = member(bootstrap, group, topic, OLD)
    records = drain_records([c], total, "(0,10,2) member")
    if {value_of(r) for r in records} != set(range(total)):
        fail("(0,10,2) member read %d distinct values, want %d" % (len({value_of(r) for r in records}), total))
    for r in records:
        v9 = value_of(r) >= first_old + OLD_MORE
        if (r.timestamp in (None, -1)) != v9 or (not v9 and r.timestamp < 1600000000000):
            fail("(0,10,2) member: value %d has timestamp %r" % (value_of(r), r.timestamp))
    ok("(0,10,2) member joined (%d partitions) and read all %d records with Fetch v3"
       % (len(c.assignment()), total))
    # It commits the middle of each partition with its generation and reads it back.
    ends = c.end_offsets(list(c.assignment()))  # ListOffsets v1
    if sum(ends.values()) != total:
        fail("(0,10,2) end offsets %r do not add up to %d" % (ends, total))
    chosen = {tp: OffsetAndMetadata(end // 2, "old", -1) for tp, end in ends.items() if end > 0}
    c.commit(chosen)
    for tp, om in chosen.items():
        got = c.committed(tp)
        if got != om.offset:
            fail("(0,10,2) committed %s: read back %r, want %d" % (tp, got, om.offset))
    c.close()  # LeaveGroup v0
    ok("(0,10,2) member committed %d offsets and read them back" % len(chosen))

    # A (1,0,0) member of the same group resumes exactly there.
    n = member(bootstrap, group, topic, NEW)
    first = {}
    deadline = time.time() + TIMEOUT
    while len(first) < len(chosen):
        if time.time() > deadline:
            fail("(1,0,0) member after the old one: first offsets %r" % first)
        for tp, records in n.poll(timeout_ms=300).items():
            if records:
                first.setdefault(tp, records[0].offset)
    for tp, om in chosen.items():
        if first.get(tp) != om.offset:
            fail("%s resumed at %r, want the old member's commit %d" % (tp, first.get(tp), om.offset))
    n.close()
    ok("(1,0,0) member resumed at the (0,10,2) member's commits")

    # A (0,9) member of another group reads everything with Fetch v1: message format v0.
    c = member(bootstrap, prefix + "-g-09", topic, V09)
    records = drain_records([c], total, "(0,9) member")
    if {value_of(r) for r in records} != set(range(total)):
        fail("(0,9) member read %d distinct values, want %d" % (len({value_of(r) for r in records}), total))
    stamped = [r for r in records if r.timestamp not in (None, -1)]
    if stamped:
        fail("(0,9) member: message format v0 has no timestamps, got %r" % (stamped[0].timestamp,))
    c.close()
    ok("(0,9) member read all %d records with Fetch v1 (message format v0)" % total)


def main():
    bootstrap = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "pyold-" + uuid.uuid4().hex[:6]
    topic = check_new(bootstrap, prefix)
    check_old(bootstrap, prefix, topic)
    print("ok: kafka-python at api_version (1, 0, 0), (0, 10, 2) and (0, 9)", flush=True)


if __name__ == "__main__":
    main()
