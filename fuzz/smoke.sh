#!/usr/bin/env bash
# Fuzz smoke test: builds every fuzz target and runs each for N seconds (default 10).
#
#   fuzz/smoke.sh [SECONDS]
#
# Works from any directory. Installs cargo-fuzz if it is missing. Seeds each target's corpus
# with valid, signed encodings (fuzz/examples/seeds.rs) so that short runs reach past the
# signature checks. Exits 0 when no target crashed, hung or leaked, 1 when one did (the input
# that did it is in fuzz/artifacts/<target>/), 2 on bad usage. fuzz/corpus and fuzz/artifacts
# are gitignored.
set -euo pipefail

seconds="${1:-10}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a positive whole number of seconds per target, default 10)" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

# cargo-fuzz passes -Z flags (sanitizers, coverage) to rustc; on a stable toolchain that needs
# RUSTC_BOOTSTRAP. Only this script's builds see it.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

echo "smoke: writing seed corpora" >&2
cargo run --quiet --manifest-path "$fuzz_dir/Cargo.toml" --example seeds -- "$fuzz_dir/corpus"

echo "smoke: building fuzz targets" >&2
cargo fuzz build --fuzz-dir "$fuzz_dir"

mkdir -p "$fuzz_dir/artifacts"
failed=()
for target in $(cargo fuzz list --fuzz-dir "$fuzz_dir"); do
    log="$fuzz_dir/artifacts/$target.log"
    # -timeout: one input taking longer than 10 s counts as a hang, which fails the run. The
    # outer timeout (SIGINT, then SIGKILL 30 s later) stops a run libFuzzer itself cannot.
    if timeout --signal=INT --kill-after=30 $((seconds + 60)) \
        cargo fuzz run --fuzz-dir "$fuzz_dir" "$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        echo "smoke: $target: ok, ${execs:-?} execs in ${seconds} s"
    else
        echo "smoke: $target: FAILED (log: $log)"
        tail -n 40 "$log"
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "smoke: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "smoke: every target ran ${seconds} s without a crash"
