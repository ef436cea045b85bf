"""Consumer-group interop check (kafka-python and kcat -G) against a running Sluice broker.

A kafka-python group consumer commits chosen offsets; a second member of the same group
(auto_offset_reset=latest, so a lost commit shows as missing records) must resume exactly
at them; admin OffsetFetch/ListGroups/DescribeGroups agree; `kcat -G` in another group
reads every record and does not disturb the first group's offsets.
Usage: groups.py BOOTSTRAP [TOPIC_PREFIX]. Prints each check; exits non-zero on failure.
"""
import subprocess
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

PARTITIONS = 4
COUNT = 400
# The broker may run with the default group.initial.rebalance.delay.ms (3 s).
GROUP_TIMEOUT = 60


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok: " + msg, flush=True)


def consumer(bootstrap, group, reset):
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset=reset, session_timeout_ms=10000,
                         heartbeat_interval_ms=1000, request_timeout_ms=30000)


def consume_to_end(c, topic, ends, starts, what):
    """Polls until every partition p delivered offsets up to ends[p]-1 (those with
    starts[p] == ends[p] deliver nothing); returns {partition: [offsets in order]}."""
    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + GROUP_TIMEOUT

    def done():
        return all(starts[p] == ends[p] or (got[p] and got[p][-1] == ends[p] - 1)
                   for p in range(PARTITIONS))

    while not done():
        if time.time() > deadline:
            fail("%s: no end reached in %d s; got %s" % (
                what, GROUP_TIMEOUT, {p: (v[:1], len(v)) for p, v in got.items()}))
        for _tp, records in c.poll(timeout_ms=500).items():
            for r in records:
                if r.value.decode() != "v-%d-%d" % (r.partition, r.offset):
                    fail("%s: record %s at %d/%d" % (what, r.value, r.partition, r.offset))
                got[r.partition].append(r.offset)
    # A short extra poll shows that nothing before the committed offsets comes back.
    for _tp, records in c.poll(timeout_ms=1000).items():
        for r in records:
            got[r.partition].append(r.offset)
    return got


def committed_offsets(admin, group, topic):
    res = admin.list_group_offsets({group: None})
    offs = res.get(group, {})
    return {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}


def main():
    bootstrap = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "groups-py"
    run = uuid.uuid4().hex[:8]
    topic = "%s-%s" % (prefix, run)
    g1, g2 = "%s-g1-%s" % (prefix, run), "%s-kcat-%s" % (prefix, run)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)], timeout_ms=15000)
    deadline = time.time() + 15
    while topic not in admin.list_topics():
        if time.time() > deadline:
            fail("created topic %s not listed" % topic)
        time.sleep(0.1)

    # Value "v-<partition>-<offset>" so every record names where it must be.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=0)
    per_part = COUNT // PARTITIONS
    for p in range(PARTITIONS):
        for o in range(per_part):
            md = producer.send(topic, partition=p, value=("v-%d-%d" % (p, o)).encode()).get(30)
            if (md.partition, md.offset) != (p, o):
                fail("record v-%d-%d acked at %d/%d" % (p, o, md.partition, md.offset))
    producer.close()
    ends = {p: per_part for p in range(PARTITIONS)}
    ok("produced %d records to %s (%d partitions)" % (COUNT, topic, PARTITIONS))

    # 1. First member reads everything, then commits chosen offsets.
    chosen = {p: (p * 23 + 11) % per_part for p in range(PARTITIONS)}
    c1 = consumer(bootstrap, g1, "earliest")
    c1.subscribe([topic])
    got = consume_to_end(c1, topic, ends, {p: 0 for p in ends}, "first member")
    for p in range(PARTITIONS):
        if sorted(set(got[p])) != list(range(per_part)):
            fail("first member, partition %d: offsets %s..." % (p, got[p][:5]))
    c1.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in chosen.items()})
    for p, o in chosen.items():
        have = c1.committed(TopicPartition(topic, p))
        if have != o:
            fail("committed(%d) = %s after commit, want %d" % (p, have, o))
    c1.close(autocommit=False)
    ok("kafka-python member of %s read all %d records, committed %s" % (g1, COUNT, chosen))

    have = committed_offsets(admin, g1, topic)
    if have != chosen:
        fail("admin OffsetFetch of %s = %s, want %s" % (g1, have, chosen))
    ok("admin OffsetFetch returns the committed offsets")

    # 2. A new member of the same group resumes exactly at the committed offsets.
    c2 = consumer(bootstrap, g1, "latest")
    c2.subscribe([topic])
    got = consume_to_end(c2, topic, ends, chosen, "second member")
    for p in range(PARTITIONS):
        want = list(range(chosen[p], per_part))
        if got[p] != want:
            fail("second member, partition %d: committed %d, got %s" % (p, chosen[p], got[p][:8]))
    desc = admin.describe_groups([g1])[g1]
    members = desc["members"]
    assigned = sorted(p for m in members for a in m["member_assignment"]["assigned_partitions"]
                      if a["topic"] == topic for p in a["partitions"])
    if desc["group_state"] != "Stable" or len(members) != 1 or assigned != list(range(PARTITIONS)):
        fail("DescribeGroups %s: state %s, %d members, assigned %s" % (
            g1, desc["group_state"], len(members), assigned))
    ok("DescribeGroups: %s Stable, 1 member owning all %d partitions (%s)" % (
        g1, PARTITIONS, desc["protocol_data"]))
    c2.commit()
    c2.close(autocommit=False)
    ok("second member of %s resumed exactly at the committed offsets" % g1)
    have = committed_offsets(admin, g1, topic)
    if have != ends:
        fail("after the second member's commit %s has %s, want %s" % (g1, have, ends))
    ok("second member's commit reached the end offsets %s" % ends)

    # 3. kcat -G in another group reads every record; group g1 is untouched.
    cmd = ["kcat", "-b", bootstrap, "-G", g2, topic, "-e", "-q", "-f", "%p %o %s\\n",
           "-X", "broker.address.family=v4", "-X", "auto.offset.reset=earliest",
           "-X", "session.timeout.ms=10000"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=GROUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail("kcat -G %s did not reach the end within %d s" % (g2, GROUP_TIMEOUT))
    if out.returncode != 0:
        fail("kcat -G exited %d: %s" % (out.returncode, out.stderr[-500:]))
    seen = set()
    for line in out.stdout.splitlines():
        p, o, v = line.split(" ", 2)
        if v != "v-%s-%s" % (p, o):
            fail("kcat read %r" % line)
        seen.add((int(p), int(o)))
    want = {(p, o) for p in range(PARTITIONS) for o in range(per_part)}
    if seen != want:
        fail("kcat -G %s read %d distinct records, want %d" % (g2, len(seen), len(want)))
    ok("kcat -G %s read all %d records" % (g2, COUNT))
    have = committed_offsets(admin, g1, topic)
    if have != ends:
        fail("group %s offsets changed to %s by another group" % (g1, have))
    kcat_offs = committed_offsets(admin, g2, topic)
    if kcat_offs != ends:
        fail("kcat group %s committed %s on close, want %s" % (g2, kcat_offs, ends))
    ok("groups are independent: %s and %s both at the end offsets" % (g1, g2))

    groups = {g["group_id"] for g in admin.list_groups()}
    if g1 not in groups or g2 not in groups:
        fail("ListGroups shows %s, missing %s or %s" % (sorted(groups), g1, g2))
    ok("ListGroups lists both groups")
    admin.close()
    print("PASS: consumer groups (kafka-python + kcat -G)")


if __name__ == "__main__":
    main()
