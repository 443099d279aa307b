#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and prints executions and crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
#   FUZZ_TARGETS="chunked wtd_route" scripts/fuzz.sh 30      (a subset)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the sanitizer flags that
# cargo-fuzz passes need RUSTC_BOOTSTRAP=1, which this script sets unless rustc is a nightly.
# Each target starts from its checked-in seeds (fuzz/corpus/<target>/, read only) plus what earlier
# runs found (fuzz/target/corpus/<target>/, not checked in). A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce with `cargo fuzz run <target> <that file>`, then turn it
# into a unit test next to the code it broke. Exits 1 if any target crashed.
set -uo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz" || exit 2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run 'cargo install cargo-fuzz'" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "building fuzz targets ..."
if ! cargo fuzz build >"target-build.log" 2>&1; then
    tail -30 target-build.log >&2
    echo "cargo fuzz build failed (log: fuzz/target-build.log)" >&2
    exit 2
fi
rm -f target-build.log

mkdir -p target/logs
summary=()
crashed=0
for t in $targets; do
    work="target/corpus/$t"
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="target/logs/$t.log"
    echo "fuzzing $t for ${secs}s ..."
    # -max_len: heads past 4 KiB only add time; the 16 KiB limit is exercised through the small
    # limits the targets also parse with.
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ -z "$execs" ]; then
        # A crash ends the run before the final stats: take the last progress line.
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    after=$(find "artifacts/$t" -type f | wc -l)
    new=$((after - before))
    status=ok
    if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
        status="CRASH (exit $rc; see fuzz/$log and fuzz/artifacts/$t/)"
        crashed=1
        grep -m3 -E 'panicked at|ERROR: AddressSanitizer|deadly signal|ERROR: libFuzzer' "$log" | sed 's/^/    /'
    fi
    summary+=("$(printf '%-14s %12s execs  cov %-6s new crash files %-3s %s' "$t" "${execs:-?}" "${cov:-?}" "$new" "$status")")
done

echo
echo "fuzz summary (${secs}s per target):"
printf '%s\n' "${summary[@]}"
exit "$crashed"
