"""kafka-python interop check against a running Sluice broker.

Creates a topic with the admin client, produces keyed records (acks=all, gzip), then reads
them back with an assign-only KafkaConsumer (no group): every record exactly once, offsets
increasing per partition, one partition per key, and seek() to an offset lands there; then
describe_log_dirs (DescribeLogDirs) lists each partition of the topic, with a size wherever
records went; on a topic of its own, delete_records (DeleteRecords) moves a partition's low
watermark, and a consumer from the beginning then starts there.
Usage: kafka_python_check.py BOOTSTRAP TOPIC COUNT. Exits non-zero with a reason on failure.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

PARTITIONS = 4


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)], timeout_ms=15000)
    deadline = time.time() + 15
    while topic not in admin.list_topics():
        if time.time() > deadline:
            fail("created topic %s not listed" % topic)
        time.sleep(0.1)
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                             linger_ms=5, retries=0)
    futures = []
    for i in range(count):
        key = ("key-%d" % (i % 50)).encode()
        futures.append((i, producer.send(topic, key=key, value=("value-%d" % i).encode())))
    acked = {}
    for i, f in futures:
        md = f.get(timeout=30)
        acked[i] = (md.partition, md.offset)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = {}
    last_offset = {}
    key_partition = {}
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                i = int(r.value.decode().split("-")[1])
                if i in seen:
                    fail("value-%d consumed twice" % i)
                seen[i] = (r.partition, r.offset)
                if r.offset <= last_offset.get(r.partition, -1):
                    fail("partition %d went backwards at offset %d" % (r.partition, r.offset))
                last_offset[r.partition] = r.offset
                if key_partition.setdefault(r.key, r.partition) != r.partition:
                    fail("key %r in two partitions" % r.key)
    if len(seen) != count:
        fail("consumed %d of %d records" % (len(seen), count))
    for i, pos in acked.items():
        if seen.get(i) != pos:
            fail("value-%d acked at %s, consumed at %s" % (i, pos, seen.get(i)))

    # seek() to a known offset returns exactly that record first.
    p, off = acked[count // 2]
    tp = TopicPartition(topic, p)
    consumer.assign([tp])
    consumer.seek(tp, off)
    first = None
    deadline = time.time() + 30
    while first is None and time.time() < deadline:
        for _, records in consumer.poll(timeout_ms=500).items():
            if records:
                first = records[0]
                break
    if first is None or first.offset != off or first.value != ("value-%d" % (count // 2)).encode():
        fail("seek to %d@%d returned %r" % (p, off, first))
    end = consumer.end_offsets(tps)
    if sum(end.values()) != count:
        fail("end offsets %r do not add up to %d" % (end, count))
    consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    dirs = [d for b in admin.describe_log_dirs() for d in b["log_dirs"]]
    admin.close()
    if len(dirs) != 1 or dirs[0]["error_code"] != 0:
        fail("describe_log_dirs: %r" % dirs)
    sizes = {p["partition_index"]: p["partition_size"]
             for t in dirs[0]["topics"] if t["name"] == topic for p in t["partitions"]}
    written = {p for p, _ in acked.values()}
    if sorted(sizes) != list(range(PARTITIONS)):
        fail("describe_log_dirs lists partitions %r of %s" % (sorted(sizes), topic))
    if any(sizes[p] <= 0 for p in written):
        fail("describe_log_dirs: a written partition has no bytes: %r" % sizes)

    check_delete_records(bootstrap, topic + "-dr")
    print("ok: %d records round-tripped through kafka-python" % count)


def check_delete_records(bootstrap, topic):
    """delete_records on a topic of its own (the suite reads the main one whole later)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=15000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(20):
        producer.send(topic, partition=0, value=b"r-%d" % i).get(timeout=30)
    producer.close()
    tp = TopicPartition(topic, 0)
    res = admin.delete_records({tp: 12}, timeout_ms=15000)
    admin.close()
    got = res.get(tp)
    if not got or got.get("error_code", 0) != 0 or got.get("low_watermark") != 12:
        fail("delete_records to 12: %r" % res)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000)
    if consumer.beginning_offsets([tp])[tp] != 12:
        fail("beginning offset after delete_records: %r" % consumer.beginning_offsets([tp]))
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 30
    while len(got) < 8 and time.time() < deadline:
        for _, records in consumer.poll(timeout_ms=500).items():
            got.extend((r.offset, r.value) for r in records)
    consumer.close()
    if got != [(o, b"r-%d" % o) for o in range(12, 20)]:
        fail("records after delete_records to 12: %r" % got)


if __name__ == "__main__":
    main()
