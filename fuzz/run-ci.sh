#!/usr/bin/env bash
# Build and run every fuzz target for $FUZZ_SECONDS seconds each (default 30), starting
# from the committed corpus (copied to a temporary directory, so the checkout stays
# clean), after replaying fuzz/regressions/<target>/. Exits non-zero if any build fails
# or any target crashes. Prints one summary line per target.
#
#   FUZZ_SECONDS=60 fuzz/run-ci.sh                 # all targets, 60 s each
#   FUZZ_TARGETS="frame requests" fuzz/run-ci.sh   # a subset
#
# Environment: FUZZ_SECONDS (30), FUZZ_TARGETS (all), FUZZ_TOOLCHAIN (+nightly),
# FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (per-input seconds, 10), FUZZ_KEEP_TMP (unset: delete).
# Crash reproducers are written to fuzz/artifacts/<target>/ (git-ignored).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${FUZZ_SECONDS:-30}"
toolchain="${FUZZ_TOOLCHAIN:-+nightly}"
rss="${FUZZ_RSS_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-10}"
targets="${FUZZ_TARGETS:-frame requests record_batch message_set metadata_records recovery_scan}"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "FUZZ_SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi

if ! cargo "$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")"
cleanup() { if [ -z "${FUZZ_KEEP_TMP:-}" ]; then rm -rf "$tmp"; else echo "kept $tmp" >&2; fi; }
trap cleanup EXIT

echo "building fuzz targets ($toolchain)" >&2
cargo "$toolchain" fuzz build --fuzz-dir "$here" >&2

failed=0
summary=()
for t in $targets; do
    if [ ! -f "fuzz_targets/$t.rs" ]; then
        echo "unknown target $t" >&2
        failed=1
        summary+=("$t: UNKNOWN TARGET")
        continue
    fi
    status=ok

    # 1. Replay the kept reproducers of past crashes (must all pass now).
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t" 2>/dev/null)" ]; then
        mkdir -p "$tmp/regressions/$t"
        cp -R "regressions/$t/." "$tmp/regressions/$t/"
        if ! cargo "$toolchain" fuzz run --fuzz-dir "$here" "$t" "$tmp/regressions/$t" -- \
            -runs=0 -rss_limit_mb="$rss" -timeout="$timeout" >"$tmp/$t.regressions.log" 2>&1; then
            status="REGRESSION"
            echo "===== $t: a kept reproducer in regressions/$t fails: =====" >&2
            grep -E -A1 "panicked at|ERROR: libFuzzer|SUMMARY|^Running: " "$tmp/$t.regressions.log" >&2 || true
            tail -n 30 "$tmp/$t.regressions.log" >&2
        fi
    fi

    # 2. Fuzz from a copy of the committed corpus.
    mkdir -p "$tmp/corpus/$t"
    if [ -d "corpus/$t" ]; then
        cp -R "corpus/$t/." "$tmp/corpus/$t/"
    fi
    log="$tmp/$t.log"
    if ! cargo "$toolchain" fuzz run --fuzz-dir "$here" "$t" "$tmp/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss" -timeout="$timeout" \
        -print_final_stats=1 >"$log" 2>&1; then
        status="CRASH"
        echo "===== $t crashed; last lines of its log: =====" >&2
        grep -E -A1 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written|Reproduce with" "$log" >&2 || true
        tail -n 30 "$log" >&2
    fi
    [ "$status" = ok ] || failed=1

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        execs="$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')"
    fi
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | awk '{print $2}')"
    corpus="$(find "$tmp/corpus/$t" -type f | wc -l | tr -d ' ')"
    summary+=("$t: executions=${execs:-?} seconds=$seconds cov=${cov:-?} corpus_files=$corpus status=$status")
done

echo
for line in "${summary[@]}"; do
    echo "$line"
done
if [ "$failed" -ne 0 ]; then
    echo "FAILED: at least one fuzz target crashed or failed to run" >&2
    exit 1
fi
echo "all fuzz targets ran for ${seconds}s without a crash"
