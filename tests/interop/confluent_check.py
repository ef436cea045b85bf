"""confluent-kafka (librdkafka) interop check against a running Sluice broker.

Lists metadata with the AdminClient, creates a topic, produces keyed records (acks=all,
lz4) with delivery reports, then consumes them with assign() from OFFSET_BEGINNING: every
acknowledged record comes back exactly once at its acknowledged (partition, offset); then,
on a topic of its own, delete_records (DeleteRecords) moves the low watermark; and on
another, created with compression.type=zstd, uncompressed records come back whole.
Usage: confluent_check.py BOOTSTRAP TOPIC COUNT. Exits non-zero with a reason on failure.
"""
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

PARTITIONS = 3


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=15)
    if len(md.brokers) != 1:
        fail("expected one broker, metadata lists %d" % len(md.brokers))
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)], operation_timeout=15).values():
        f.result(timeout=30)

    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[int(msg.value().decode().split("-")[1])] = (msg.partition(), msg.offset())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": "lz4",
                         "partitioner": "murmur2_random", "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=("k%d" % (i % 40)).encode(), value=("v-%d" % i).encode(),
                         on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(30) != 0:
        fail("records still unacknowledged after 30 s")
    if errors:
        fail("delivery errors: %s" % errors[:3])
    if len(acked) != count:
        fail("acked %d of %d" % (len(acked), count))

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop-assign-only",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = {}
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            fail("consume error: %s" % msg.error())
        i = int(msg.value().decode().split("-")[1])
        if i in seen:
            fail("v-%d consumed twice" % i)
        seen[i] = (msg.partition(), msg.offset())
    consumer.close()
    if seen != acked:
        missing = [i for i in acked if seen.get(i) != acked[i]][:5]
        fail("consumed %d of %d; mismatches e.g. %s" % (len(seen), count, missing))
    check_delete_records(admin, bootstrap, topic + "-dr")
    check_topic_compression(admin, bootstrap, topic + "-zstd")
    print("ok: %d records round-tripped through confluent-kafka" % count)


def check_delete_records(admin, bootstrap, topic):
    """delete_records on a topic of its own (the suite reads the main one whole later)."""
    for f in admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=15).values():
        f.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(20):
        producer.produce(topic, value=b"r-%d" % i, partition=0)
    if producer.flush(30) != 0:
        fail("records for delete_records still unacknowledged after 30 s")
    futs = admin.delete_records([TopicPartition(topic, 0, 12)], operation_timeout=15)
    for f in futs.values():
        deleted = f.result(timeout=30)
        if deleted.low_watermark != 12:
            fail("delete_records to 12: low watermark %r" % deleted.low_watermark)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop-assign-only"})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)
    c.close()
    if (low, high) != (12, 20):
        fail("watermarks after delete_records: %r" % ((low, high),))


def check_topic_compression(admin, bootstrap, topic):
    """A topic with compression.type=zstd: described so, and uncompressed records sent to
    it (the broker stores them recompressed) are read back whole and in order."""
    new = NewTopic(topic, 1, 1, config={"compression.type": "zstd"})
    for f in admin.create_topics([new], operation_timeout=15).values():
        f.result(timeout=30)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    for f in admin.describe_configs([res]).values():
        got = f.result(timeout=30)["compression.type"].value
        if got != "zstd":
            fail("compression.type described as %r" % got)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "compression.type": "none", "linger.ms": 5})
    values = [b"z-%d-" % i + b"abc" * (i % 30) for i in range(500)]
    for v in values:
        producer.produce(topic, value=v, partition=0)
    if producer.flush(30) != 0:
        fail("records for the zstd topic still unacknowledged after 30 s")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop-assign-only",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.time() + 30
    while len(got) < len(values) and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            fail("consume error on the zstd topic: %s" % msg.error())
        got.append(msg.value())
    c.close()
    if got != values:
        fail("zstd topic: read %d of %d records, or not as sent" % (len(got), len(values)))


if __name__ == "__main__":
    main()
