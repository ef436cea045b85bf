#!/usr/bin/env python3
"""DeleteRecords latency: how long a kafka-python `delete_records` takes to answer.

Creates topic `lat` (1 partition, replication factor RF), produces 2,000 records of 100
bytes with acks=all, then moves the partition's low watermark 50 times (to offsets 10,
50, 90, ...) and prints p50 / p90 / max of the calls. With RF > 1 the answer waits for
every in-sync replica's log start (Kafka's low watermark).

Usage: delete_records_latency.py BOOTSTRAP RF
  e.g. B=$(deploy/local-cluster.sh start 3 /tmp/c | tail -1)
       python3 bench/scripts/delete_records_latency.py "$B" 3
"""
import sys
import time

from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def main():
    bootstrap, rf = sys.argv[1], int(sys.argv[2])
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    admin.create_topics([NewTopic("lat", 1, rf)], timeout_ms=30000)
    time.sleep(2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for _ in range(2000):
        producer.send("lat", partition=0, value=b"x" * 100)
    producer.flush()
    tp = TopicPartition("lat", 0)
    lat = []
    for offset in range(10, 2000, 40):
        started = time.perf_counter()
        res = admin.delete_records({tp: offset}, timeout_ms=30000)
        lat.append((time.perf_counter() - started) * 1000)
        if res[tp]["low_watermark"] != offset:
            sys.exit("delete_records to %d answered %r" % (offset, res))
    lat.sort()
    print("rf=%d n=%d p50=%.1f ms p90=%.1f ms max=%.1f ms"
          % (rf, len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.9)], lat[-1]))


if __name__ == "__main__":
    main()
