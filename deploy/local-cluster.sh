#!/usr/bin/env bash
# Starts and stops an N-node Sluice cluster on this machine: every node is a combined
# broker + controller listening on 127.0.0.1. It builds nothing.
#
#   deploy/local-cluster.sh start N DIR      start nodes 1..N; wait until every node answers
#                                            Metadata listing all N brokers; print the
#                                            bootstrap list 127.0.0.1:p1,...,127.0.0.1:pN as
#                                            the last line of stdout (progress goes to stderr)
#   deploy/local-cluster.sh start-node DIR ID  start one stopped node again (same settings and
#                                            data; refused while it runs); wait until it
#                                            lists itself in Metadata
#   deploy/local-cluster.sh stop DIR         SIGTERM every node, SIGKILL the ones still alive
#                                            after $SLUICE_STOP_TIMEOUT s (10); always exits 0
#
# Layout of DIR:
#   cluster.env       KEY=value lines (not shell-quoted): N, CLUSTER_ID, KAFKA_PORTS,
#                     CONTROLLER_PORTS and METRICS_PORTS (comma-separated, node 1 first; each
#                     node's metrics.listen), BOOTSTRAP, CORES, SETTINGS (space-separated
#                     name=value), BIN
#   node-<id>/args    the node's command-line arguments, one per line (binary not included)
#   node-<id>/data    its data directory
#   node-<id>/log     its stdout and stderr, appended across starts
#   node-<id>/pid     its process id while it runs
# `start` on a DIR that already holds a cluster of the same N reuses its ports and cluster id
# (so stop + start brings back the same cluster); a different N is refused.
#
# Environment:
#   SLUICE_BIN               broker binary (default: the one saved in cluster.env, else
#                            <repo>/target/release/sluice)
#   SLUICE_CORES             --cores of every node (default 1; saved)
#   SLUICE_CLUSTER_SETTINGS  space-separated name=value, each passed as --set to every node
#                            (saved; when unset, a restart reuses the saved ones)
#   SLUICE_CLUSTER_TIMEOUT   seconds to wait for Metadata (default 60); on timeout the node
#                            logs' tails go to stderr, the nodes started are stopped, exit 1
#   SLUICE_STOP_TIMEOUT      seconds between SIGTERM and SIGKILL in `stop` (default 10)
#   SLUICE_CLUSTER_INTERNAL  a security protocol (SSL, SASL_PLAINTEXT, SASL_SSL): every node
#                            also listens on INTERNAL://127.0.0.1:<port> with it, and the
#                            brokers talk to each other there (inter.broker.listener.name);
#                            the TLS/SASL settings come with SLUICE_CLUSTER_SETTINGS or
#                            SLUICE_CLUSTER_CONFIG (saved)
#   SLUICE_CLUSTER_CONTROLLER  SSL, SASL_PLAINTEXT or SASL_SSL: the controller listeners'
#                            protocol (CONTROLLER:...; SSL is mutual TLS with the
#                            settings' certificates, SASL is PLAIN with the users of
#                            listener.name.controller.plain.sasl.jaas.config; saved)
#   SLUICE_CLUSTER_CONFIG    a TOML settings file passed as --config to every node (saved;
#                            for values with spaces, e.g. sasl.jaas.config)
#
# Exit status: 0 success, 1 failure, 2 bad arguments. Needs bash, python3 (stdlib only).
set -euo pipefail

PROG=${0##*/}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat >&2 <<EOF
usage: $PROG start N DIR         start an N-node cluster (node ids 1..N) under DIR
       $PROG start-node DIR ID   start node ID of the cluster in DIR again
       $PROG stop DIR            stop every node of the cluster in DIR
EOF
    exit 2
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "$*"; exit 1; }
bad() { log "$*"; usage; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------------------------------------
# Embedded python3 helpers (stdlib only).

# Ports handed out lately, one file each (see free_ports).
PORT_RESERVATIONS=${TMPDIR:-/tmp}/sluice-local-cluster-ports

# free_ports COUNT: prints COUNT distinct free 127.0.0.1 TCP ports, one per line. Ports are
# taken below the ephemeral range when there is room (outgoing connections cannot grab them
# before the nodes bind), and all are held open until all are found, so they are distinct.
# Each is also reserved for 30 minutes (a file in $PORT_RESERVATIONS, created exclusively;
# `spawn` renews it), so that clusters started at the same moment by other invocations (tests
# run in parallel) never pick a port another has picked but not yet bound, nor one whose node
# is down for a restart.
free_ports() {
    mkdir -p "$PORT_RESERVATIONS"
    python3 - "$1" "$PORT_RESERVATIONS" <<'PY'
import os, random, socket, sys, time
n = int(sys.argv[1])
resv = sys.argv[2]
STALE = 30 * 60

def reserve(port):
    path = os.path.join(resv, str(port))
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        pass
    except OSError:
        return True  # no reservations here: the bind check alone
    try:
        if time.time() - os.stat(path).st_mtime < STALE:
            return False
        os.utime(path)  # a stale reservation: taken over
        return True
    except OSError:
        return False
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    eph_lo = 32768
lo = 10000
rng = random.SystemRandom()
held, ports = [], []
for attempt in range(20000):
    if len(ports) == n:
        break
    want = rng.randrange(lo, eph_lo) if eph_lo - lo > 1000 and attempt < 10000 else 0
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", want))
    except OSError:
        s.close()
        continue
    port = s.getsockname()[1]
    if port in ports or not reserve(port):
        s.close()
        continue
    held.append(s)
    ports.append(port)
if len(ports) < n:
    sys.exit("found only %d free ports" % len(ports))
for s in held:
    s.close()
print("\n".join(map(str, ports)))
PY
}

# probe PORT...: asks each 127.0.0.1:PORT for Metadata v1 (no topics) and prints one line per
# port: "PORT ok ID,ID,..." (the node ids of the brokers listed) or "PORT err REASON".
probe() {
    python3 - "$@" <<'PY'
import socket, struct, sys

CORRELATION_ID = 0x51CE

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed by the broker")
        buf += chunk
    return buf

def metadata_brokers(port):
    client_id = b"local-cluster"
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string);
    # body v1: topics array, 0 = no topics (-1 would mean all topics).
    req = struct.pack(">hhih", 3, 1, CORRELATION_ID, len(client_id)) + client_id
    req += struct.pack(">i", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(2)
        sock.sendall(struct.pack(">i", len(req)) + req)
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        if size < 8 or size > 64 << 20:
            raise ValueError("bad response size %d" % size)
        data = recv_exact(sock, size)
    corr, count = struct.unpack_from(">ii", data, 0)
    if corr != CORRELATION_ID:
        raise ValueError("correlation id %d, sent %d" % (corr, CORRELATION_ID))
    if count < 0:
        raise ValueError("broker count %d" % count)
    off, ids = 8, []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, off)
        off += 6 + max(host_len, 0)
        (_port, rack_len) = struct.unpack_from(">ih", data, off)
        off += 6 + max(rack_len, 0)
        if off > len(data):
            raise ValueError("truncated broker list")
        ids.append(node_id)
    return ids

for arg in sys.argv[1:]:
    try:
        ids = metadata_brokers(int(arg))
        print("%s ok %s" % (arg, ",".join(map(str, ids))))
    except Exception as e:  # any failure is a "not ready yet" for the caller
        reason = str(e) or type(e).__name__
        print("%s err %s" % (arg, " ".join(reason.split())))
PY
}

# ---------------------------------------------------------------------------------------------
# Cluster state.

# Set by load_env, or by `start` for a new cluster.
N='' CLUSTER_ID='' CORES='' SETTINGS='' BIN='' INTERNAL='' CONFIG='' CONTROLLER=''
KAFKA=() CONTROL=() METRICS=() INTERNAL_PORTS=()

node_dir() { printf '%s/node-%s' "$DIR" "$1"; }

# load_env: reads DIR/cluster.env; returns 1 when there is none.
load_env() {
    local file=$DIR/cluster.env line key value kafka='' control='' metrics='' internal=''
    [[ -f $file ]] || return 1
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line == *=* && $line != \#* ]] || continue
        key=${line%%=*} value=${line#*=}
        case $key in
            N) N=$value ;;
            CLUSTER_ID) CLUSTER_ID=$value ;;
            KAFKA_PORTS) kafka=$value ;;
            CONTROLLER_PORTS) control=$value ;;
            METRICS_PORTS) metrics=$value ;;
            INTERNAL_PORTS) internal=$value ;;
            INTERNAL) INTERNAL=$value ;;
            CONFIG) CONFIG=$value ;;
            CONTROLLER) CONTROLLER=$value ;;
            CORES) CORES=$value ;;
            SETTINGS) SETTINGS=$value ;;
            BIN) BIN=$value ;;
        esac
    done <"$file"
    IFS=, read -r -a KAFKA <<<"$kafka"
    IFS=, read -r -a CONTROL <<<"$control"
    # (clusters started before metrics existed have none: their nodes run without one)
    IFS=, read -r -a METRICS <<<"$metrics"
    IFS=, read -r -a INTERNAL_PORTS <<<"$internal"
    if ! is_uint "$N" || ((N < 1 || ${#KAFKA[@]} != N || ${#CONTROL[@]} != N)) ||
        [[ -z $CLUSTER_ID ]]; then
        die "$file is malformed (want N, CLUSTER_ID, KAFKA_PORTS and CONTROLLER_PORTS for N nodes)"
    fi
}

join() { local IFS=$1; shift; printf '%s' "$*"; }

bootstrap() {
    local p out=()
    for p in "${KAFKA[@]}"; do out+=("127.0.0.1:$p"); done
    join , "${out[@]}"
}

save_env() {
    local tmp=$DIR/cluster.env.tmp
    {
        echo "# written by deploy/local-cluster.sh; KEY=value lines, not shell-quoted"
        echo "N=$N"
        echo "CLUSTER_ID=$CLUSTER_ID"
        echo "KAFKA_PORTS=$(join , "${KAFKA[@]}")"
        echo "CONTROLLER_PORTS=$(join , "${CONTROL[@]}")"
        echo "METRICS_PORTS=$(join , "${METRICS[@]+"${METRICS[@]}"}")"
        echo "INTERNAL_PORTS=$(join , "${INTERNAL_PORTS[@]+"${INTERNAL_PORTS[@]}"}")"
        echo "INTERNAL=$INTERNAL"
        echo "CONFIG=$CONFIG"
        echo "CONTROLLER=$CONTROLLER"
        echo "BOOTSTRAP=$(bootstrap)"
        echo "CORES=$CORES"
        echo "SETTINGS=$SETTINGS"
        echo "BIN=$BIN"
    } >"$tmp"
    mv -f "$tmp" "$DIR/cluster.env"
}

# write_args ID: the node's arguments, one per line, from the cluster settings.
write_args() {
    local id=$1 dir voters=() i setting settings=()
    dir=$(node_dir "$id")
    read -r -a settings <<<"$SETTINGS"
    for ((i = 1; i <= N; i++)); do voters+=("$i@127.0.0.1:${CONTROL[i - 1]}"); done
    mkdir -p "$dir/data"
    {
        if [[ -n $CONFIG ]]; then printf '%s\n' --config "$CONFIG"; fi
        local map=PLAINTEXT:PLAINTEXT
        if [[ -n $INTERNAL ]]; then
            printf '%s\n' --listen "PLAINTEXT://127.0.0.1:${KAFKA[id - 1]},INTERNAL://127.0.0.1:${INTERNAL_PORTS[id - 1]}"
            printf '%s\n' --set "inter.broker.listener.name=INTERNAL"
            map+=",INTERNAL:$INTERNAL"
        else
            printf '%s\n' --listen "127.0.0.1:${KAFKA[id - 1]}"
        fi
        if [[ -n $CONTROLLER ]]; then map+=",CONTROLLER:$CONTROLLER"; fi
        if [[ $map != PLAINTEXT:PLAINTEXT ]]; then
            printf '%s\n' --set "listener.security.protocol.map=$map"
        fi
        printf '%s\n' --data-dir "$dir/data" --cores "$CORES"
        printf '%s\n' --set "node.id=$id"
        printf '%s\n' --set "controller.quorum.voters=$(join , "${voters[@]}")"
        printf '%s\n' --set "cluster.id=$CLUSTER_ID"
        # several brokers share this machine's cores: let the kernel place their shards
        # (pinned, every node's shard 0 would sit on CPU 0); SETTINGS may say otherwise
        printf '%s\n' --set "cpuset=none"
        # each node its own metrics port (the default one would go to the first node only)
        if ((${#METRICS[@]} == N)); then
            printf '%s\n' --set "metrics.listen=127.0.0.1:${METRICS[id - 1]}"
        else
            printf '%s\n' --set "metrics.listen="
        fi
        for setting in "${settings[@]+"${settings[@]}"}"; do printf '%s\n' --set "$setting"; done
    } >"$dir/args.tmp"
    mv -f "$dir/args.tmp" "$dir/args"
}

# resolve_bin: SLUICE_BIN, else the saved BIN, else the repo's release build; absolute path.
resolve_bin() {
    local bin=${SLUICE_BIN:-${BIN:-$REPO/target/release/sluice}}
    if [[ $bin != */* ]]; then
        bin=$(command -v -- "$bin") || die "broker binary '${SLUICE_BIN:-$BIN}' not found in PATH"
    fi
    [[ -f $bin && -x $bin ]] ||
        die "broker binary $bin not found (build it: cargo build --release --bin sluice; or set SLUICE_BIN)"
    BIN=$(cd "$(dirname "$bin")" && pwd)/${bin##*/}
}

read_settings_env() {
    CORES=${SLUICE_CORES:-${CORES:-1}}
    is_uint "$CORES" || bad "SLUICE_CORES must be a number of cores, got '$CORES'"
    if [[ -n ${SLUICE_CLUSTER_SETTINGS+set} ]]; then
        local words=() w
        read -r -a words <<<"$SLUICE_CLUSTER_SETTINGS"
        for w in "${words[@]+"${words[@]}"}"; do
            [[ $w =~ ^[^=]+= ]] || bad "SLUICE_CLUSTER_SETTINGS: '$w' is not name=value"
        done
        SETTINGS=${words[*]+"${words[*]}"}
    fi
}

# seconds NAME DEFAULT: the variable's value (DEFAULT if unset), a positive whole number.
seconds() {
    local v=${!1:-$2}
    { is_uint "$v" && ((10#$v > 0)); } || bad "$1 must be a positive whole number of seconds, got '$v'"
    printf '%s' "$((10#$v))"
}

# ---------------------------------------------------------------------------------------------
# Processes.

# alive PID: the process exists and is not a zombie (PID 1 of a container may never reap).
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r /proc/$1/stat ]]; then
        stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
        [[ ${stat##*) } != Z* ]] || return 1
    fi
}

# node_pid ID: prints the PID in the node's pid file if it names a live process running this
# node (its command line holds the node's data dir: a recycled PID is not mistaken for it).
node_pid() {
    local dir pid
    dir=$(node_dir "$1")
    [[ -f $dir/pid ]] && read -r pid <"$dir/pid" && is_uint "$pid" || return 1
    alive "$pid" || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -Fxq -- "$dir/data" || return 1
    fi
    printf '%s' "$pid"
}

declare -A SPAWNED=() # node id -> PID of the nodes this invocation started

spawn() {
    local id=$1 dir args=()
    dir=$(node_dir "$id")
    mapfile -t args <"$dir/args"
    mkdir -p "$dir/data"
    local p
    for p in "${KAFKA[id - 1]}" "${CONTROL[id - 1]}" "${METRICS[id - 1]:-}" "${INTERNAL_PORTS[id - 1]:-}"; do
        if [[ -n $p ]]; then touch "$PORT_RESERVATIONS/$p" 2>/dev/null || true; fi
    done
    printf '===== %s %s: starting node %s: %s %s\n' "$(date '+%F %T')" "$PROG" "$id" \
        "$BIN" "${args[*]}" >>"$dir/log"
    # A session of its own (no controlling terminal, no signals from the caller's process
    # group) and SIGHUP ignored: the node outlives this script.
    if command -v setsid >/dev/null; then
        setsid nohup "$BIN" "${args[@]}" </dev/null >>"$dir/log" 2>&1 &
    else
        nohup "$BIN" "${args[@]}" </dev/null >>"$dir/log" 2>&1 &
    fi
    local pid=$!
    echo "$pid" >"$dir/pid"
    SPAWNED[$id]=$pid
    log "node $id: pid $pid, kafka 127.0.0.1:${KAFKA[id - 1]}, controller 127.0.0.1:${CONTROL[id - 1]}"
}

signal() { # SIG PID: the node's process group (it leads its session), else the process
    kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2" 2>/dev/null || true
}

# stop_nodes ID...: SIGTERM, wait up to SLUICE_STOP_TIMEOUT s, SIGKILL; removes pid files.
stop_nodes() {
    local id pid i left=() pids=() secs=$STOP_SECS
    for id in "$@"; do
        if pid=$(node_pid "$id") || { [[ -n ${SPAWNED[$id]:-} ]] && pid=${SPAWNED[$id]} && alive "$pid"; }; then
            log "node $id: stopping pid $pid"
            signal TERM "$pid"
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < secs * 10 && ${#pids[@]} > 0; i++)); do
        left=()
        for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
        pids=("${left[@]+"${left[@]}"}")
        ((${#pids[@]} == 0)) || sleep 0.1
    done
    if ((${#pids[@]} > 0)); then
        log "still running after ${secs}s, sending SIGKILL: ${pids[*]}"
        for pid in "${pids[@]}"; do signal KILL "$pid"; done
        for ((i = 0; i < 100; i++)); do # the kernel may take a moment to tear them down
            left=()
            for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
            ((${#left[@]} == 0)) && break
            sleep 0.1
        done
    fi
    for id in "$@"; do
        rm -f "$(node_dir "$id")/pid"
        unset "SPAWNED[$id]"
    done
}

print_log_tails() {
    local id
    for id in "$@"; do
        printf '\n----- %s/log (last 60 lines) -----\n' "$(node_dir "$id")" >&2
        tail -n 60 "$(node_dir "$id")/log" >&2 2>/dev/null || true
    done
    echo >&2
}

# On any failure (or Ctrl-C) after nodes were spawned, stop the ones this invocation started.
SUCCESS=0
on_exit() {
    if ((SUCCESS == 0 && ${#SPAWNED[@]} > 0)); then
        log "failed; stopping the nodes started"
        stop_nodes "${!SPAWNED[@]}"
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { # milliseconds since the epoch
    if [[ ${EPOCHREALTIME:-} =~ ^([0-9]+)[.,]([0-9]{3}) ]]; then
        printf '%s' "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
    else
        date +%s%3N
    fi
}

# wait_ready WANT ID...: polls every 250 ms until each listed node answers Metadata with all
# of WANT (comma-separated node ids) among its brokers; fails on timeout or if a node exits.
wait_ready() {
    local want=$1 secs=$WAIT_SECS deadline id w port status ready reason
    shift
    local ids=("$@") ports=()
    deadline=$(($(now_ms) + secs * 1000))
    for id in "${ids[@]}"; do ports+=("${KAFKA[id - 1]}"); done
    declare -A last=()
    log "waiting up to ${secs}s for Metadata listing broker(s) $want from node(s) $(join , "${ids[@]}")"
    while :; do
        for id in "${ids[@]}"; do
            if ! alive "${SPAWNED[$id]}"; then
                status=0
                wait "${SPAWNED[$id]}" 2>/dev/null || status=$?
                log "node $id (pid ${SPAWNED[$id]}) exited with status $status during startup"
                print_log_tails "${ids[@]}"
                exit 1
            fi
        done
        ready=0 # how many of the nodes answer with every wanted broker
        while read -r port status reason; do
            for id in "${ids[@]}"; do [[ ${KAFKA[id - 1]} == "$port" ]] && break; done
            if [[ $status == ok ]]; then
                last[$id]="lists broker(s) [${reason}]"
                for w in ${want//,/ }; do
                    [[ ",$reason," == *",$w,"* ]] || continue 2
                done
                ready=$((ready + 1))
            else
                last[$id]=$reason
            fi
        done < <(probe "${ports[@]}")
        ((ready == ${#ids[@]})) && return 0
        if (($(now_ms) >= deadline)); then
            log "timed out after ${secs}s waiting for Metadata listing broker(s) $want"
            for id in "${ids[@]}"; do log "  node $id (127.0.0.1:${KAFKA[id - 1]}): ${last[$id]:-no answer}"; done
            print_log_tails "${ids[@]}"
            exit 1
        fi
        sleep 0.25
    done
}

# ---------------------------------------------------------------------------------------------
# Commands.

set_dir() { # DIR [create]: sets DIR to an absolute path
    if [[ ${2:-} == create ]]; then
        mkdir -p -- "$1" || die "cannot create $1"
    fi
    [[ -d $1 ]] || return 1
    DIR=$(cd -- "$1" && pwd -P)
}

cmd_start() {
    (($# == 2)) || usage
    local n=$1 id running=() ports=()
    { is_uint "$n" && ((10#$n >= 1 && 10#$n <= 100)); } || bad "N must be a node count (1..100), got '$n'"
    n=$((10#$n))
    command -v python3 >/dev/null || die "python3 is required"
    set_dir "$2" create
    if load_env; then
        ((N == n)) || die "$DIR holds a $N-node cluster (cluster.env), not $n nodes: start it with N=$N, or use another directory"
        for ((id = 1; id <= N; id++)); do
            node_pid "$id" >/dev/null && running+=("$id")
        done
        ((${#running[@]} == 0)) ||
            die "node(s) $(join , "${running[@]}") of $DIR already running: run '$PROG stop $DIR' first"
        read_settings_env
        resolve_bin
        log "restarting the $N-node cluster $CLUSTER_ID in $DIR"
    else
        compgen -G "$DIR/node-*" >/dev/null &&
            die "$DIR has node-* directories but no cluster.env: remove them or use another directory"
        N=$n
        read_settings_env
        resolve_bin
        INTERNAL=${SLUICE_CLUSTER_INTERNAL:-}
        CONFIG=${SLUICE_CLUSTER_CONFIG:-}
        CONTROLLER=${SLUICE_CLUSTER_CONTROLLER:-}
        case $CONTROLLER in '' | SSL | SASL_PLAINTEXT | SASL_SSL) ;; *) bad "SLUICE_CLUSTER_CONTROLLER must be SSL, SASL_PLAINTEXT or SASL_SSL" ;; esac
        case $INTERNAL in '' | SSL | SASL_PLAINTEXT | SASL_SSL) ;; *) bad "SLUICE_CLUSTER_INTERNAL must be SSL, SASL_PLAINTEXT or SASL_SSL" ;; esac
        mapfile -t ports < <(free_ports $((4 * N)))
        ((${#ports[@]} == 4 * N)) || die "could not find $((4 * N)) free ports"
        KAFKA=("${ports[@]:0:N}")
        CONTROL=("${ports[@]:N:N}")
        METRICS=("${ports[@]:2*N:N}")
        if [[ -n $INTERNAL ]]; then INTERNAL_PORTS=("${ports[@]:3*N:N}"); fi
        CLUSTER_ID=-
        while [[ $CLUSTER_ID == -* ]]; do # as Kafka: no leading '-', which CLIs take for a flag
            CLUSTER_ID=$(head -c 48 /dev/urandom | base64 | tr -d '\n' | tr '+/' '-_' | cut -c1-22)
        done
        log "starting a $N-node cluster $CLUSTER_ID in $DIR"
    fi
    save_env
    for ((id = 1; id <= N; id++)); do write_args "$id"; done
    for ((id = 1; id <= N; id++)); do spawn "$id"; done
    local all=()
    for ((id = 1; id <= N; id++)); do all+=("$id"); done
    wait_ready "$(join , "${all[@]}")" "${all[@]}"
    SUCCESS=1
    log "cluster ready"
    bootstrap
    echo
}

cmd_start_node() {
    (($# == 2)) || usage
    local id=$2 pid
    set_dir "$1" || die "no directory $1"
    load_env || die "$DIR has no cluster.env: start the cluster with '$PROG start N $DIR'"
    { is_uint "$id" && ((10#$id >= 1 && 10#$id <= N)); } || bad "ID must be a node id 1..$N, got '$id'"
    id=$((10#$id))
    command -v python3 >/dev/null || die "python3 is required"
    [[ -f $(node_dir "$id")/args ]] || die "$(node_dir "$id")/args is missing"
    if pid=$(node_pid "$id"); then
        die "node $id is already running (pid $pid)"
    fi
    resolve_bin
    spawn "$id"
    wait_ready "$id" "$id"
    SUCCESS=1
    log "node $id ready"
}

cmd_stop() {
    (($# == 1)) || usage
    local ids=() d
    if ! set_dir "$1"; then
        log "no directory $1: nothing to stop"
        SUCCESS=1
        return 0
    fi
    for d in "$DIR"/node-*/; do
        d=${d%/}
        d=${d##*/node-}
        is_uint "$d" && ids+=("$d")
    done
    if ((${#ids[@]} > 0)); then
        stop_nodes "${ids[@]}"
    fi
    SUCCESS=1
    log "stopped"
}

(($# >= 1)) || usage
STOP_SECS=$(seconds SLUICE_STOP_TIMEOUT 10)
cmd=$1
shift
case $cmd in
    start | start-node) WAIT_SECS=$(seconds SLUICE_CLUSTER_TIMEOUT 60) ;;
esac
case $cmd in
    start) cmd_start "$@" ;;
    start-node) cmd_start_node "$@" ;;
    stop) cmd_stop "$@" ;;
    -h | --help | help) usage ;;
    *) bad "unknown command '$cmd'" ;;
esac
