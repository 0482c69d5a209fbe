#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each in turn, printing its
# execution count; exits non-zero if any target crashed (or hung).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      each target SECONDS (default $FUZZ_SECONDS or 120)
#   scripts/fuzz.sh --smoke [TARGET...]        each target 10 seconds
#   scripts/fuzz.sh --runs N [TARGET...]       each target until N executions
#
# Environment: FUZZ_SECONDS (default run time), FUZZ_SANITIZER (default
# none; "address" is cargo-fuzz's default, see fuzz/README.md for why not
# here), FUZZ_ARGS (more libFuzzer flags, e.g. "-max_len=512").
# Corpora grow in fuzz/corpus/<target>; fuzz/seeds/<target> and
# fuzz/dict/<target>.dict are read when present. Crashing inputs land in
# fuzz/artifacts/<target>/, logs in fuzz/target/fuzz-logs/.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

seconds=""
runs=""
targets=()
while (($#)); do
    case "$1" in
    --smoke) seconds=10 ;;
    --runs) runs="${2:?--runs needs a number}"; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *[!0-9]*) targets+=("$1") ;;
    *) seconds="$1" ;;
    esac
    shift
done
# With --runs and no time given, run until N executions however long it takes.
if [[ -z "$seconds" ]]; then
    if [[ -n "$runs" ]]; then seconds=0; else seconds="${FUZZ_SECONDS:-120}"; fi
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal

sanitizer="${FUZZ_SANITIZER:-none}"
if [[ "$sanitizer" == address ]]; then
    # Cheaper ASan: no allocation stacks, no fake stacks, small quarantine.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0:detect_stack_use_after_return=0:quarantine_size_mb=16}"
fi

# Release with debug assertions and overflow checks: the cargo-fuzz default.
start=$(date +%s)
cargo +nightly fuzz build -s "$sanitizer"
echo "build: $(($(date +%s) - start)) s"

if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir="target/$triple/release"
mkdir -p target/fuzz-logs

failed=()
printf '%-22s %14s %9s %10s  %s\n' target executions seconds exec/s result
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    args=("corpus/$t")
    [[ -d "seeds/$t" ]] && args+=("seeds/$t")
    [[ -f "dict/$t.dict" ]] && args+=("-dict=dict/$t.dict")
    [[ -n "$runs" ]] && args+=("-runs=$runs")
    # shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags
    args+=(${FUZZ_ARGS:-})
    log="target/fuzz-logs/$t.log"
    t0=$(date +%s%N)
    status=0
    # -timeout: an input taking 30 s is a hang, reported like a crash.
    "$bin_dir/$t" "${args[@]}" -max_total_time="$seconds" -timeout=30 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || status=$?
    elapsed=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    result="no crash"
    if ((status != 0)); then
        result="CRASH (exit $status, log $log)"
        failed+=("$t")
    fi
    rate=$(awk -v n="${execs:-0}" -v s="$elapsed" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    printf '%-22s %14s %9s %10s  %s\n' "$t" "${execs:-?}" "$elapsed" "$rate" "$result"
    if ((status != 0)); then
        grep -m1 -A2 'panicked at\|ERROR: libFuzzer' "$log" | sed 's/^/    /' || true
        for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "    input $a (hex): $(od -An -v -tx1 "$a" | tr -d ' \n')"
        done
    fi
done

if ((${#failed[@]})); then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
