#!/usr/bin/env bash
# Produce backpressure under a flood: a 1-shard release broker, four librdkafka producers
# flooding one topic at full speed with the given acks for 20 s, and an acks=all probe at
# 50 msg/s on another topic. Prints the probe's ack latency, the flood's throughput and the
# broker's RSS once a second (KiB), including ~15 s after the flood.
#   cargo build --release -p sluice-broker -p sluice-bench
#   bench/scripts/flood.sh 0 [--set storage.unflushed.max.bytes=8388608 ...]
set -euo pipefail
ACKS="${1:?usage: flood.sh ACKS [broker args...]}"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PORT="${FLOOD_PORT:-39811}"
DATA="$(mktemp -d -t sluice-flood-XXXXXX)"
"$ROOT/target/release/sluice" --listen "127.0.0.1:$PORT" --data-dir "$DATA" --cores 1 "$@" \
    >"$DATA.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT
sleep 2
for _ in $(seq 1 40); do grep VmRSS "/proc/$PID/status" | awk '{print $2}'; sleep 1; done >"$DATA.rss" &
SAMPLER=$!
B="$ROOT/target/release/sluice-bench"
"$B" --bootstrap "127.0.0.1:$PORT" produce --topic flood --acks "$ACKS" --producers 4 \
    --duration 20s --partitions 4 -q >"$DATA.flood" 2>&1 &
FLOOD=$!
sleep 3
"$B" --bootstrap "127.0.0.1:$PORT" produce --topic probe --acks all --rate 50 --duration 14s \
    --partitions 1 -q 2>&1 | grep -E "produce ack|p50"
wait "$FLOOD"
grep -E "produced|broker" "$DATA.flood"
wait "$SAMPLER"
echo "broker RSS (KiB, 1/s): $(tr '\n' ' ' <"$DATA.rss")"
rm -f "$DATA.rss" "$DATA.flood"
