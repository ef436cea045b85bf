#!/usr/bin/env bash
# Interop suite: real third-party clients (kcat, kafka-python, confluent-kafka, KafkaJS)
# against a fresh `sluice` on an ephemeral port with a temp data dir. Each check asserts counts and
# contents; the broker is killed on exit (trap). The last line is `N passed, N failed`;
# the exit status is non-zero if any check failed.
# Env: SLUICE_BIN (prebuilt binary; default: build the debug binary), SLUICE_CORES (2),
# SLUICE_NODE_MODULES (where kafkajs is installed; .ci/run installs it there),
# SLUICE_SARAMA_BIN (the sarama 1.22 check built by .ci/run).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/interop"
CORES="${SLUICE_CORES:-2}"
BIN="${SLUICE_BIN:-}"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build -q -p sluice-broker --bin sluice) || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
    BIN="$ROOT/target/debug/sluice"
fi

WORK="$(mktemp -d -t sluice-interop-XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
B="127.0.0.1:$PORT"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" --listen "$B" --advertised-listener "$B" --data-dir "$WORK/data" --cores "$CORES" \
    >"$WORK/broker.log" 2>&1 </dev/null &
PID=$!

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS $1"; }
ko() {
    failed=$((failed + 1)); echo "FAIL $1: $2"
    [ -f "$WORK/out" ] && sed -n '1,60p' "$WORK/out" | sed 's/^/    /'
}
# check NAME CMD...: runs CMD (bounded by 120 s) with output in $WORK/out.
check() {
    local name="$1"; shift
    if timeout 120 "$@" >"$WORK/out" 2>&1; then ok "$name"; else ko "$name" "exit $?"; fi
}

ready=0
for _ in $(seq 1 200); do
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    if timeout 5 kcat -b "$B" -L -m 2 >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    echo "broker did not become ready within 20 s"; tail -n 30 "$WORK/broker.log"
    echo "0 passed, 1 failed"; exit 1
fi

# 1. kcat -L: one broker, advertised at our address.
if timeout 30 kcat -b "$B" -L -m 5 >"$WORK/out" 2>&1 \
    && grep -q "1 brokers:" "$WORK/out" && grep -q "at 127.0.0.1:$PORT" "$WORK/out"; then
    ok "kcat metadata"
else
    ko "kcat metadata" "want 1 broker at 127.0.0.1:$PORT"
fi

# 2. kcat keyed produce to an auto-created topic, then consume from the beginning.
N=2000
for i in $(seq 0 $((N - 1))); do echo "key$((i % 37)):value$i"; done >"$WORK/keyed.in"
check "kcat produce (keyed)" kcat -b "$B" -P -t kcat-keyed -K: -X acks=all -l "$WORK/keyed.in"
if timeout 60 kcat -b "$B" -C -t kcat-keyed -e -o beginning -q -f '%p %o %k:%s\n' >"$WORK/out" 2>&1; then
    got="$(cut -d' ' -f3 "$WORK/out" | sort)"
    want="$(sort "$WORK/keyed.in")"
    split_keys="$(awk '{split($3, kv, ":"); print kv[1], $1}' "$WORK/out" | sort -u | cut -d' ' -f1 | uniq -d | wc -l)"
    dup_offsets="$(cut -d' ' -f1,2 "$WORK/out" | sort | uniq -d | wc -l)"
    if [ "$got" == "$want" ] && [ "$split_keys" == 0 ] && [ "$dup_offsets" == 0 ]; then
        ok "kcat consume (all $N keyed records, one partition per key)"
    else
        ko "kcat consume" "records differ ($(wc -l <"$WORK/out") lines, keys split: $split_keys, dup offsets: $dup_offsets)"
    fi
else
    ko "kcat consume" "kcat exited non-zero"
fi

# 3. kafka-python: admin create, keyed gzip produce, assign + seek consume without a group.
check "kafka-python producer/consumer" python3 "$HERE/kafka_python_check.py" "$B" py-topic 3000

# 4. confluent-kafka: metadata, create, lz4 produce with delivery reports, assign consume.
check "confluent-kafka producer/consumer" python3 "$HERE/confluent_check.py" "$B" ck-topic 3000

# 4b. Consumer groups (kafka-python group members, commits, admin group APIs, kcat -G).
if [ -f "$HERE/groups.py" ]; then
    check "consumer groups (kafka-python, kcat -G)" python3 "$HERE/groups.py" "$B" interop-groups
fi

# 4c. KafkaJS: admin, idempotent gzip producer with headers, consumer group, commits.
NODE_MODULES="${SLUICE_NODE_MODULES:-$HOME/.cache/sluice-interop/node_modules}"
if [ -f "$NODE_MODULES/kafkajs/package.json" ]; then
    check "kafkajs admin/producer/consumer group" env NODE_PATH="$NODE_MODULES" \
        node "$HERE/kafkajs_check.js" "$B" js-topic 2000
else
    rm -f "$WORK/out"
    ko "kafkajs admin/producer/consumer group" "kafkajs not found in $NODE_MODULES (.ci/run installs it)"
fi

# 4c'. KafkaJS transactions: commit/abort, sendOffsets, a read-committed consumer group.
if [ -f "$NODE_MODULES/kafkajs/package.json" ]; then
    check "kafkajs transactions (commit/abort, sendOffsets, read committed)" env NODE_PATH="$NODE_MODULES" \
        node "$HERE/kafkajs_txn.js" "$B" js-txn
else
    rm -f "$WORK/out"
    ko "kafkajs transactions" "kafkajs not found in $NODE_MODULES (.ci/run installs it)"
fi

# 4d. Old protocol versions: kafka-python pinned to broker 1.0 / 0.10.2 / 0.9, sarama 1.22
#     (message formats v0/v1 produced and consumed through conversion).
check "kafka-python api_version (1,0,0), (0,10,2) and (0,9)" python3 "$HERE/kafka_python_old_versions.py" "$B" py-old
SARAMA_BIN="${SLUICE_SARAMA_BIN:-$HOME/.cache/sluice-interop/sarama_check}"
if [ -x "$SARAMA_BIN" ]; then
    check "sarama 1.22 (default config: formats v0/v1; Version 0.11 for groups)" "$SARAMA_BIN" "$B" sarama-old
else
    rm -f "$WORK/out"; ko "sarama 1.22" "$SARAMA_BIN not built (.ci/run builds it)"
fi

# 5. Cross-client: kcat reads what kafka-python wrote, in full.
if timeout 60 kcat -b "$B" -C -t py-topic -e -o beginning -q -f '%s\n' >"$WORK/out" 2>&1 \
    && [ "$(sort -u "$WORK/out" | wc -l)" == 3000 ] && [ "$(wc -l <"$WORK/out")" == 3000 ]; then
    ok "kcat reads kafka-python's records"
else
    ko "kcat reads kafka-python's records" "want 3000 distinct values, got $(wc -l <"$WORK/out") lines"
fi

if ! kill -0 "$PID" 2>/dev/null; then
    ko "broker alive at the end" "broker exited"; tail -n 30 "$WORK/broker.log"
else
    ok "broker alive at the end"
fi

# 6. Clean restart (SIGTERM) on the same data dir: kcat still reads everything.
if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null; then
        ko "SIGTERM shutdown" "broker still running 30 s after SIGTERM"
    else
        wait "$PID"; rc=$?
        if [ "$rc" == 0 ]; then ok "SIGTERM shutdown (exit 0)"; else ko "SIGTERM shutdown" "exit $rc"; fi
    fi
    kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
    "$BIN" --listen "$B" --advertised-listener "$B" --data-dir "$WORK/data" --cores "$CORES" \
        >>"$WORK/broker.log" 2>&1 </dev/null &
    PID=$!
    ready=0
    for _ in $(seq 1 200); do
        if timeout 5 kcat -b "$B" -L -m 2 >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.1
    done
    if [ "$ready" == 1 ] \
        && timeout 60 kcat -b "$B" -C -t kcat-keyed -e -o beginning -q -f '%k:%s\n' >"$WORK/out" 2>&1 \
        && [ "$(sort "$WORK/out")" == "$(sort "$WORK/keyed.in")" ] \
        && timeout 60 kcat -b "$B" -C -t ck-topic -e -o beginning -q -f '%s\n' >"$WORK/out" 2>&1 \
        && [ "$(sort -u "$WORK/out" | wc -l)" == 3000 ]; then
        ok "records intact after restart"
    else
        ko "records intact after restart" "ready=$ready, $(wc -l <"$WORK/out") lines read"
    fi
fi
# 7. Log compaction: 1,000,000 updates of 10,000 keys, read back by kafka-python as the
#    latest value per key at its offset; kill -9 while the cleaner rewrites segments. Runs
#    its own broker (it kills and restarts it).
if timeout 600 python3 "$HERE/compaction.py" "$BIN" "$WORK/compaction" >"$WORK/out" 2>&1; then
    ok "compaction: latest value per key at its offset, kill -9 while cleaning (kafka-python)"
else
    ko "compaction (kafka-python)" "exit $?"
fi
# 8. Transactions (confluent-kafka): commit/abort over 6 partitions read by read_committed
#    and read_uncommitted consumers; consume-transform-produce with offsets in the
#    transaction, exactly once through kill -9s at random moments. Runs its own broker.
if timeout -k 30 600 python3 -u "$HERE/transactions.py" "$BIN" "$WORK/transactions" >"$WORK/out" 2>&1; then
    ok "transactions: read_committed, consume-transform-produce through kill -9 (confluent-kafka)"
else
    ko "transactions (confluent-kafka)" "exit $?"
    grep -v '^%[0-9]|' "$WORK/out" | tail -n 60
fi
# a killed script cannot end the brokers it started (its kill thread restarts them)
pkill -KILL -f "$WORK/transactions/data" 2>/dev/null || true
# 9. Security: TLS (mTLS), SASL SCRAM/PLAIN and ACLs with confluent-kafka, kafka-python,
#    kcat and KafkaJS; certificates made by the script. Runs its own broker.
if timeout -k 30 420 env NODE_PATH="$NODE_MODULES" python3 -u "$HERE/security.py" "$BIN" "$WORK/security" >"$WORK/out" 2>&1; then
    ok "security: SASL_SSL SCRAM and mTLS clients, refusals, ACLs through kill -9 (confluent-kafka, kafka-python, kcat, kafkajs)"
else
    ko "security" "exit $?"
    grep -v '^%[0-9]|' "$WORK/out" | tail -n 40
fi
pkill -KILL -f "$WORK/security/data" 2>/dev/null || true
if [ "$failed" != 0 ]; then
    echo "--- broker log tail ---"; tail -n 30 "$WORK/broker.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" == 0 ]
