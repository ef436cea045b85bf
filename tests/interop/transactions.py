#!/usr/bin/env python3
"""Transactions with confluent-kafka against a real `sluice` process it starts and kill -9s.

1. A transactional producer writes 40 transactions over 6 partitions of 2 topics,
   committing and aborting alternately. A read_committed consumer reads every committed
   record exactly once and no aborted one; a read_uncommitted consumer reads both.
2. Consume-transform-produce: 3,000 input records are copied, upper-cased, to an output
   topic in transactions of up to 50 records that also commit the input offsets
   (`send_offsets_to_transaction`), while the broker is killed with SIGKILL and restarted
   at random moments (6 times, from another thread). Whatever the client saw fail is retried
   from the group's committed offsets, as Kafka's EOS loop does; each application instance
   runs in a child process that is replaced when it makes no progress for 75 s (librdkafka
   can wait forever in send_offsets_to_transaction after it re-bootstraps, see STALL). The
   output must hold each input's result exactly once (read_committed).

Usage: transactions.py SLUICE_BIN [WORKDIR]. Every wait is bounded; any failure exits 1.
"""

import faulthandler
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

T = 30  # seconds, for every client call


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
        host, port = self.addr.split(":")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--listen", self.addr,
                "--data-dir", self.data,
                "--cores", "2",
                "--set", "cpuset=none",
                "--set", "offsets.topic.num.partitions=5",
                "--set", "transaction.state.log.num.partitions=5",
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
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("broker did not listen within 30 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def conf(broker, **extra):
    c = {"bootstrap.servers": broker.addr, "broker.address.family": "v4", "log_level": 3}
    c.update(extra)
    return c


def create(broker, topics):
    admin = AdminClient(conf(broker))
    fs = admin.create_topics([NewTopic(t, n, 1) for t, n in topics], operation_timeout=T)
    for t, f in fs.items():
        f.result(timeout=T)


def read_all(broker, parts, isolation):
    """Every value of `parts` from the beginning to the end offset this isolation sees."""
    c = Consumer(conf(broker, **{
        "group.id": f"reader-{random.random()}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }))
    c.assign([TopicPartition(t, p, 0) for t, p in parts])
    values, eof = [], set()
    deadline = time.time() + 120
    while len(eof) < len(parts):
        if time.time() > deadline:
            sys.exit(f"{isolation}: reading timed out with {len(values)} values")
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add((m.topic(), m.partition()))
                continue
            sys.exit(f"{isolation}: consume error {m.error()}")
        eof.discard((m.topic(), m.partition()))
        values.append(m.value().decode())
    c.close()
    return values


def alternate(broker):
    create(broker, [("tx-a", 3), ("tx-b", 3)])
    parts = [("tx-a", p) for p in range(3)] + [("tx-b", p) for p in range(3)]
    p = Producer(conf(broker, **{"transactional.id": "alternate", "linger.ms": 5}))
    p.init_transactions(T)
    committed, aborted = set(), set()
    for txn in range(40):
        p.begin_transaction()
        values = [f"t{txn}-r{i}" for i in range(25)]
        for i, v in enumerate(values):
            t, part = parts[i % 6]
            p.produce(t, v.encode(), partition=part)
        # delivered before the decision (an abort would purge what is still queued)
        if p.flush(T) != 0:
            sys.exit("records of a transaction were not delivered")
        if txn % 2 == 0:
            p.commit_transaction(T)
            committed.update(values)
        else:
            p.abort_transaction(T)
            aborted.update(values)
    rc = read_all(broker, parts, "read_committed")
    if len(rc) != len(set(rc)):
        sys.exit("read_committed read a record twice")
    if set(rc) != committed:
        sys.exit(f"read_committed: {len(set(rc))} values, {len(committed)} committed, "
                 f"{len(set(rc) & aborted)} aborted among them")
    ru = set(read_all(broker, parts, "read_uncommitted"))
    if ru != committed | aborted:
        sys.exit(f"read_uncommitted: {len(ru)} values, want {len(committed | aborted)}")
    print(f"alternate: {len(committed)} committed read once, {len(aborted)} aborted hidden")


def transform(broker, inputs, kills):
    """Consume-transform-produce with exactly-once, the broker killed `kills` times at
    random moments (in the middle of transactions, commits and offset commits)."""
    create(broker, [("ctp-in", 1), ("ctp-out", 1)])
    p = Producer(conf(broker, **{"linger.ms": 5, "enable.idempotence": True}))
    for i in range(inputs):
        p.produce("ctp-in", f"in-{i}".encode(), partition=0)
    p.flush(T)
    state = {"restarts": 0, "stop": False}

    def killer():
        for _ in range(kills):
            time.sleep(random.uniform(1.0, 4.0))
            if state["stop"]:
                return
            broker.kill()
            if state["stop"]:
                return
            broker.start()
            state["restarts"] += 1

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        supervise(broker, thread)
    finally:
        state["stop"] = True
        thread.join(timeout=60)
        if broker.proc is None or broker.proc.poll() is not None:
            broker.start()
    out = read_all(broker, [("ctp-out", 0)], "read_committed")
    want = sorted(f"IN-{i}" for i in range(inputs))
    if sorted(out) != want:
        dup = len(out) - len(set(out))
        missing = len(set(want) - set(out))
        sys.exit(f"ctp-out: {len(out)} records, {dup} duplicates, {missing} missing")
    print(f"consume-transform-produce: {inputs} inputs exactly once through "
          f"{state['restarts']} kill -9s")


# A worker that makes no progress for this long is killed and replaced. librdkafka's
# send_offsets_to_transaction can wait forever, past its timeout, when the group
# coordinator went away: with every broker down it re-bootstraps and decommissions the
# broker handle, and the pending TxnOffsetCommit is never re-triggered (seen here after
# AddOffsetsToTxn succeeded; confluentinc/librdkafka#5456, #5511). An EOS application needs
# such a bound from outside, and a new producer with the same transactional.id fences the
# stuck one and aborts its transaction, as a restarted Kafka Streams task does.
STALL = 75


def supervise(broker, thread):
    """Runs EOS workers, one at a time in a child process, until one consumes the whole
    input after the killer thread is done."""
    ctx = multiprocessing.get_context("spawn")
    killer_done = ctx.Event()
    beat = ctx.Value("d", time.time())
    deadline = time.time() + 400
    attempt = 0
    while True:
        attempt += 1
        log = os.path.join(os.path.dirname(broker.data), f"worker-{attempt}.log")
        beat.value = time.time()
        worker = ctx.Process(target=eos_worker, args=(broker.addr, killer_done, beat, log))
        worker.start()
        try:
            while worker.is_alive():
                if not thread.is_alive():
                    killer_done.set()
                if time.time() > deadline:
                    tail(log)
                    sys.exit("consume-transform-produce did not finish in 400 s")
                if time.time() - beat.value > STALL:
                    print(f"  worker {attempt}: no progress for {STALL} s, killed "
                          "(last lines of its client log follow)")
                    tail(log, 25)
                    break
                worker.join(0.5)
        finally:
            if worker.is_alive():
                worker.kill()
                worker.join(10)
        if worker.exitcode == 0:
            return
        if worker.exitcode == 3:
            with open(log, errors="replace") as f:
                why = [line for line in f if line.startswith("RESTART")]
            print(f"  worker {attempt} restarted {why[-1].strip() if why else ''}")
        if worker.exitcode not in (None, 3, -signal.SIGKILL):
            tail(log)
            sys.exit(f"worker {attempt} failed with exit {worker.exitcode}")


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            lines = [line for line in f if "|HEARTBEAT|" not in line]
            for line in lines[-n:]:
                print("    " + line.rstrip())
    except OSError:
        pass


def eos_worker(addr, killer_done, beat, log):
    """The EOS loop of one application instance, in its own process. Exits 0 once the input
    is consumed and the killer is done, 3 after a client error (the supervisor starts a new
    instance, which resumes from the group's committed offsets)."""
    # librdkafka logs to standard error: keep this instance's eos/cgrp debug in its own file
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)

    def progress():
        beat.value = time.time()

    base = {"bootstrap.servers": addr, "broker.address.family": "v4", "log_level": 7,
            "debug": "eos,cgrp"}
    consumer = None
    try:
        consumer = Consumer(dict(base, **{
            "group.id": "ctp",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
        }))
        producer = Producer(dict(base, **{
            "transactional.id": "ctp-worker",
            "linger.ms": 5,
            "transaction.timeout.ms": 10000,
        }))
        producer.init_transactions(T)
        progress()
        consumer.subscribe(["ctp-in"])
        # librdkafka reports the end of a partition once per arrival there: remember it
        # until records come again, and finish once the killer is done too
        at_end = False
        while True:
            progress()
            msgs = consumer.consume(50, 2.0)
            records = [m for m in msgs if not m.error()]
            if any(m.error() and m.error().code() == KafkaError._PARTITION_EOF for m in msgs):
                at_end = True
            if records:
                at_end = False
            if at_end and not records and killer_done.is_set():
                return
            if not records:
                continue
            producer.begin_transaction()
            for m in records:
                producer.produce("ctp-out", m.value().decode().upper().encode(), partition=0)
            progress()
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()),
                consumer.consumer_group_metadata(), T)
            progress()
            producer.commit_transaction(T)
    except KafkaException as e:
        # fatal or abortable: start over from the committed offsets
        print(f"RESTART after: {e}", flush=True)
        code = 3
    else:
        code = 0
    finally:
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                pass
    sys.stdout.flush()
    os._exit(code)


def main():
    # past 550 s (the suite kills at 600 s): print every thread's stack, then exit, so a
    # hang says where it is; SIGTERM exits through the `finally` that kills the broker
    faulthandler.dump_traceback_later(550)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    binary = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="sluice-txn-")
    os.makedirs(work, exist_ok=True)
    random.seed(int(os.environ.get("SEED", "15")))
    broker = Broker(binary, work)
    broker.start()
    try:
        alternate(broker)
        transform(broker, inputs=3000, kills=6)
        broker.kill()
        broker.start()
        alternate_again = read_all(broker, [("ctp-out", 0)], "read_committed")
        if len(alternate_again) != 3000 or len(set(alternate_again)) != 3000:
            sys.exit(f"after a last kill -9: {len(alternate_again)} outputs")
    finally:
        broker.kill()
    print("ok")


if __name__ == "__main__":
    main()
