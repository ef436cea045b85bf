#!/usr/bin/env python3
"""Broker CPU per Fetch round over many partitions (issue 18).

A librdkafka consumer has no fetch sessions: every Fetch names every partition it is
assigned, and the broker answers every one. This measures what one such round costs the
broker, apart from any client: it creates topic `fr` with N partitions (empty), then sends
one raw Fetch v4 naming all of them (max_wait_ms 0, so the answer comes at once) ROUNDS
times on one connection, and prints the broker's CPU time (utime + stime of PID, from
/proc) per round.

    target/release/sluice --listen 127.0.0.1:19161 --data-dir /tmp/fr --cores 1 \
        --set metrics.listen= &
    python3 bench/scripts/fetch_round.py 127.0.0.1:19161 $! 300 [10000]

Needs confluent-kafka (pip) for the topic's creation.
"""
import os
import socket
import struct
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    addr, pid, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    nparts = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    host, port = addr.rsplit(":", 1)
    admin = AdminClient({"bootstrap.servers": addr})
    for f in admin.create_topics([NewTopic("fr", nparts, 1)]).values():
        f.result()
    for _ in range(600):
        t = admin.list_topics(timeout=10).topics.get("fr")
        if t and len(t.partitions) == nparts and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            break
        time.sleep(0.5)
    else:
        sys.exit("the topic's partitions never all had a leader")

    def s16(s):
        b = s.encode()
        return struct.pack(">h", len(b)) + b

    # Fetch v4: replica -1, max_wait 0, min_bytes 0, max_bytes 50 MiB, read_uncommitted
    body = struct.pack(">iiiib", -1, 0, 0, 50 << 20, 0)
    body += struct.pack(">i", 1) + s16("fr") + struct.pack(">i", nparts)
    body += b"".join(struct.pack(">iqi", p, 0, 1 << 20) for p in range(nparts))
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def recv_exact(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                sys.exit("the broker closed the connection")
            buf += chunk
        return bytes(buf)

    def round_trip(corr):
        msg = struct.pack(">hhi", 1, 4, corr) + s16("fetch-round") + body
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", recv_exact(4))
        return recv_exact(size)

    def cpu_seconds():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    answer = round_trip(0)
    for i in range(20):  # warm-up
        round_trip(1 + i)
    c0, t0 = cpu_seconds(), time.time()
    for i in range(rounds):
        round_trip(100 + i)
    c1, t1 = cpu_seconds(), time.time()
    print(
        f"answer {len(answer)} B; {rounds} rounds in {t1 - t0:.2f} s; "
        f"broker CPU {(c1 - c0) * 1000 / rounds:.2f} ms per round"
    )


if __name__ == "__main__":
    main()
