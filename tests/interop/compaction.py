#!/usr/bin/env python3
"""Log compaction end to end, against a real `sluice` process it starts and kill -9s.

1,000,000 updates over 10,000 keys (5 % tombstones, gzip batches from librdkafka) go into
a compacted topic with 1 MiB segments and segment.ms of 2 s. The active segment is never
cleaned (as in Kafka), so one more record after segment.ms rolls it. Once the cleaner has
run, a kafka-python consumer from the beginning must read exactly the latest non-deleted
value of every key, at the offset it was produced at (tombstones gone after
delete.retention.ms), and the partition must take a small fraction of what was written.
Then another 300,000 updates, and the broker is killed with SIGKILL while the cleaner is
rewriting segments (watched through the `.cleaned` / `.swap` files it leaves while it
works), restarted, and the same check must hold.

Usage: compaction.py SLUICE_BIN [WORKDIR]. Every wait is bounded; any failure exits 1.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

KEYS = 10_000
UPDATES = 1_000_000
MORE = 300_000
TOMBSTONE_RATE = 0.05
TOPIC = "compacted"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, binary, work):
        self.binary = binary
        self.data = os.path.join(work, "data")
        self.log = open(os.path.join(work, "broker.log"), "ab")
        self.addr = f"127.0.0.1:{free_port()}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--listen", self.addr,
                "--data-dir", self.data,
                "--cores", "1",
                "--set", "cpuset=none",
                "--set", "log.cleaner.backoff.ms=200",
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"broker exited with {self.proc.returncode}")
            try:
                socket.create_connection(tuple_addr(self.addr), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("broker did not listen within 30 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def partition_dir(self):
        return os.path.join(self.data, f"{TOPIC}-0")


def tuple_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def dir_bytes(path):
    total = 0
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            total += os.path.getsize(p)
    return total


def cleaning_files(path):
    try:
        return [n for n in os.listdir(path) if n.endswith(".cleaned") or n.endswith(".swap")]
    except FileNotFoundError:
        return []


def produce(addr, count, model, rng, seq_start):
    """Sends `count` updates; `model` maps key -> (offset, value or None) as acknowledged."""
    errors = []
    p = Producer({
        "bootstrap.servers": addr,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "gzip",
        "linger.ms": 5,
        "batch.num.messages": 2000,
    })
    sent = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            sent.append((msg.offset(), msg.key(), msg.value()))

    for i in range(count):
        key = f"k{rng.randrange(KEYS):05d}".encode()
        value = None if rng.random() < TOMBSTONE_RATE else f"v{seq_start + i}".encode() * 3
        while True:
            try:
                p.produce(TOPIC, key=key, value=value, partition=0, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left or errors:
        sys.exit(f"produce: {left} undelivered, errors {errors[:3]}")
    for offset, key, value in sorted(sent):
        model[key] = (offset, value)
    return sent


def read_all(addr, end):
    """Every record from offset 0 to `end` as (offset, key, value), with a kafka-python consumer."""
    c = KafkaConsumer(
        bootstrap_servers=addr,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    tp = TopicPartition(TOPIC, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = []
    deadline = time.time() + 180
    while time.time() < deadline:
        batch = c.poll(timeout_ms=1000, max_records=50_000)
        for records in batch.values():
            out.extend((r.offset, r.key, r.value) for r in records)
        if c.position(tp) >= end:
            break
    c.close()
    return out


def configs(min_lag_ms):
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(1 << 20),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "1000",
        "segment.ms": "2000",
        "min.compaction.lag.ms": str(min_lag_ms),
    }


def alter(addr, min_lag_ms):
    """AlterConfigs (the whole set): min.compaction.lag.ms holds the cleaner off or lets it go."""
    admin = KafkaAdminClient(bootstrap_servers=addr, request_timeout_ms=30_000)
    resp = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC, configs=configs(min_lag_ms))])
    admin.close()
    for r in getattr(resp, "resources", []):
        if r[0] != 0:
            sys.exit(f"AlterConfigs: {r}")


def roll(addr, model, rng):
    """One record after segment.ms, so the segment holding the updates is no longer active."""
    time.sleep(2.5)
    # a key of its own each time: the record it supersedes would be the latest of its key
    # below the active segment, which the cleaner keeps (as Kafka's does)
    key = f"~roll-{len([k for k in model if k.startswith(b'~roll-')])}".encode()
    produce_one(addr, model, key, f"roll-{rng.random()}".encode())


def produce_one(addr, model, key, value):
    p = Producer({"bootstrap.servers": addr, "acks": "all"})
    out = []
    p.produce(TOPIC, key=key, value=value, partition=0,
              on_delivery=lambda err, msg: out.append((err, msg.offset())))
    p.flush(30)
    if not out or out[0][0] is not None:
        sys.exit(f"sentinel produce failed: {out}")
    model[key] = (out[0][1], value)


def raw_bytes(sent):
    return sum(len(k) + len(v or b"") for _, k, v in sent)


def expected(model):
    return sorted((off, key, val) for key, (off, val) in model.items() if val is not None)


def check_latest(records, model, what):
    """The latest record read per key must be the model's, at the model's offset."""
    latest = {}
    for off, key, val in records:
        latest[key] = (off, val)
    want = {k: v for k, v in model.items() if v[1] is not None}
    got = {k: v for k, v in latest.items() if v[1] is not None}
    if got != want:
        missing = [k for k in want if got.get(k) != want[k]][:5]
        sys.exit(f"{what}: latest values differ, e.g. {[(k, want[k], got.get(k)) for k in missing]}")


def wait_compacted(broker, model, what, timeout=60):
    """Waits until a read from the beginning gives exactly the model's live records."""
    want = expected(model)
    end = max(off for off, _ in model.values()) + 1
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        records = read_all(broker.addr, end)
        check_latest(records, model, what)
        if records == want:
            return
        last = records
        time.sleep(2)
    extra = sorted(set(last or []) - set(want))[:5]
    missing = sorted(set(want) - set(last or []))[:5]
    sys.exit(f"{what}: after {timeout} s a read still gives {len(last or [])} records, "
             f"want {len(want)}; extra {extra}, missing {missing}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="sluice-compaction-")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(14)
    broker = Broker(binary, work)
    broker.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.addr, request_timeout_ms=30_000)
        admin.create_topics([NewTopic(TOPIC, 1, 1, topic_configs=configs(0))])
        admin.close()

        model = {}
        t0 = time.time()
        written = raw_bytes(produce(broker.addr, UPDATES, model, rng, 0))
        print(f"produced {UPDATES} updates ({written} bytes of keys and values) "
              f"in {time.time() - t0:.1f} s; partition {dir_bytes(broker.partition_dir())} bytes")
        roll(broker.addr, model, rng)

        t0 = time.time()
        wait_compacted(broker, model, "after the first cleaning")
        after = dir_bytes(broker.partition_dir())
        live = raw_bytes(expected(model))
        print(f"compacted to {len(expected(model))} records ({live} bytes of keys and values) "
              f"in {time.time() - t0:.1f} s; partition {after} bytes")
        # 1,000,000 updates of 10,000 keys: what stays is the live records and indexes
        if after > max(4 * live, 256 << 10) or after * 20 > written:
            sys.exit(f"disk use did not shrink enough: {after} bytes for {live} live bytes "
                     f"of {written} written")

        # hold the cleaner off while the next updates go in, then let it go and kill the
        # broker once it is seen rewriting segments
        alter(broker.addr, 3_600_000)
        produce(broker.addr, MORE, model, rng, UPDATES)
        roll(broker.addr, model, rng)
        alter(broker.addr, 0)
        seen = False
        deadline = time.time() + 60
        while time.time() < deadline:
            if cleaning_files(broker.partition_dir()):
                seen = True
                break
            time.sleep(0.002)
        time.sleep(rng.random() * 0.05)
        broker.kill()
        if not seen:
            sys.exit("the cleaner was not seen rewriting segments within 60 s")
        print("killed the broker while it cleaned")
        broker.start()
        wait_compacted(broker, model, "after kill -9 during cleaning and a restart")
        print(f"after restart: exactly the {len(expected(model))} live records")
    finally:
        broker.kill()
    print("compaction: OK")


if __name__ == "__main__":
    main()
