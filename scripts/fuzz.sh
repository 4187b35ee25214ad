#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for SECONDS each (default 30), one after
# the other, starting from the committed seeds (fuzz/corpus/TARGET). Exits non-zero
# when any target finds a crash, a failed invariant, a leak or a timeout, and prints
# where the input that did it was written.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-dict=... -max_len=4096"
#
# Dictionaries: fuzz/dict/TARGET.dict. Inputs found along the way go to
# fuzz/target/corpus/TARGET (not committed);
# crashing inputs to fuzz/artifacts/TARGET/. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…
# (from fuzz/ or the repository root).
set -uo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS]   (seconds per target, default 30)" >&2
    exit 2
fi
cd "$(dirname "$0")/.." || exit 2
root="$PWD"

# cargo-fuzz needs nightly flags (-Zsanitizer, sancov passes); RUSTC_BOOTSTRAP lets a
# stable toolchain accept them. Set here only, for the fuzz build.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

cd fuzz || exit 2
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

start=$(date +%s)
echo "== building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --sanitizer "$sanitizer"; then
    echo "fuzz: build failed" >&2
    exit 2
fi
built=$(date +%s)
echo "== built in $((built - start)) s"

failed=()
mkdir -p target/logs
for t in $targets; do
    work="target/corpus/$t"
    log="target/logs/$t.log"
    mkdir -p "$work" "artifacts/$t"
    echo "== $t: ${secs} s"
    dict=()
    [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    t0=$(date +%s)
    # New inputs go to $work (first directory); the seeds are only read.
    # shellcheck disable=SC2086
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    t1=$(date +%s)
    stats=$(grep -aE '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" |
        sed 's/^stat:://' | tr '\n' ' ')
    cov=$(grep -aE '^#[0-9]+' "$log" | tail -1 | grep -aoE 'cov: [0-9]+ ft: [0-9]+ corp: [^ ]+' || true)
    if [ "$rc" -eq 0 ]; then
        echo "   ok in $((t1 - t0)) s: $stats$cov"
    else
        failed+=("$t")
        echo "   FAILED (exit $rc) after $((t1 - t0)) s; log: fuzz/$log"
        grep -aE 'panicked at|assertion|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|SUMMARY' "$log" | head -8 | sed 's/^/   | /'
        grep -a -A1 -E 'thread .* panicked at' "$log" | head -6 | sed 's/^/   | /'
        artifact=$(grep -aoE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
        if [ -n "$artifact" ]; then
            case "$artifact" in /*) ;; *) artifact="$root/fuzz/$artifact" ;; esac
            echo "   crashing input: $artifact"
            echo "   reproduce:      (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact)"
        fi
    fi
done

echo "== fuzzing took $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${secs} s without a failure"
