#!/usr/bin/env bash
# Fuzz campaign: runs every fuzz target (or the ones named) for MINUTES minutes each and records
# what happened, for RELIABILITY.md.
#
#   fuzz/campaign.sh [-j N] MINUTES [TARGET...]
#
# Works from any directory. Writes the seed corpora (fuzz/examples/seeds.rs), builds the targets
# once, then runs them one at a time (or N at a time with -j N: each run takes one core), each
# with a 2 GiB memory limit (-rss_limit_mb=2048) and a 10 s limit per input (-timeout=10). The
# corpus in fuzz/corpus/<target>/ grows from run to run. Every run is also bounded from outside
# (MINUTES plus 2 minutes, then SIGKILL), so the campaign always stops by itself: at most about
# ceil(targets / N) * (MINUTES + 2) minutes plus the build.
#
# Records one line per target in fuzz/campaign-results.tsv (gitignored; columns: target, minutes,
# runs, exec_per_s, corpus_files, corpus_kib, peak_rss_mb, result, artifact) and prints the same
# as a Markdown table. result is ok, crash, timeout (one input over 10 s), oom (over 2 GiB),
# leak, or stuck (killed from outside); artifact is the input that did it, under
# fuzz/artifacts/<target>/, and the full log is fuzz/artifacts/<target>.campaign.log.
# Exits 0 when every target was ok, 1 when one was not, 2 on bad usage.
set -euo pipefail

usage() {
    echo "usage: $0 [-j N] MINUTES [TARGET...]   (MINUTES and N positive whole numbers)" >&2
    exit 2
}

jobs=1
if [[ "${1:-}" == "-j" ]]; then
    jobs="${2:-}"
    shift 2 || usage
fi
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || usage
minutes="${1:-}"
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || usage
shift

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

# cargo-fuzz passes -Z flags (sanitizers, coverage) to rustc; on a stable toolchain that needs
# RUSTC_BOOTSTRAP. Only this script's builds see it.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "campaign: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

all_targets="$(cargo fuzz list --fuzz-dir "$fuzz_dir")"
if (($# > 0)); then
    targets=("$@")
    for t in "${targets[@]}"; do
        if ! grep -qx -- "$t" <<<"$all_targets"; then
            echo "campaign: no fuzz target named $t (see cargo fuzz list --fuzz-dir $fuzz_dir)" >&2
            exit 2
        fi
    done
else
    mapfile -t targets <<<"$all_targets"
fi

echo "campaign: writing seed corpora" >&2
cargo run --quiet --manifest-path "$fuzz_dir/Cargo.toml" --example seeds -- "$fuzz_dir/corpus"

echo "campaign: building fuzz targets" >&2
if ((${#targets[@]} == 1)); then
    cargo fuzz build --fuzz-dir "$fuzz_dir" "${targets[0]}"
else
    cargo fuzz build --fuzz-dir "$fuzz_dir"
fi
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$fuzz_dir/target/$host/release"

seconds=$((minutes * 60))
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$fuzz_dir/artifacts"

# Runs one target and writes its result line to $work/<target>.tsv.
run_one() {
    local target="$1"
    local corpus="$fuzz_dir/corpus/$target"
    local artifacts="$fuzz_dir/artifacts/$target"
    local log="$fuzz_dir/artifacts/$target.campaign.log"
    mkdir -p "$corpus" "$artifacts"
    local status=0
    # SIGINT first (libFuzzer then prints its stats), SIGKILL 30 s later if that did not stop it.
    timeout --signal=INT --kill-after=30 $((seconds + 90)) \
        "$bin_dir/$target" "$corpus" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    local runs eps rss result artifact files kib
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)"
    if [[ -z "$runs" ]]; then
        # A run stopped by a finding prints no final stats; the last status line has them.
        local last
        last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
        runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")"
        eps="$(sed -n 's/.*exec\/s: \([0-9]*\).*/\1/p' <<<"$last")"
        rss="$(sed -n 's/.*rss: \([0-9]*\)Mb.*/\1/p' <<<"$last")"
    fi
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if ((status == 0)); then
        result=ok
    elif ((status == 124 || status == 137)); then
        result=stuck
    elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then
        result=timeout
    elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then
        result=oom
    elif grep -q 'ERROR: LeakSanitizer' "$log"; then
        result=leak
    else
        result=crash
    fi
    files="$(find "$corpus" -type f | wc -l)"
    kib="$(du -sk "$corpus" | cut -f1)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$minutes" "${runs:-?}" "${eps:-?}" \
        "$files" "$kib" "${rss:-?}" "$result" "${artifact:--}" >"$work/$target.tsv"
    echo "campaign: $target: $result, ${runs:-?} runs, ${eps:-?} exec/s, peak ${rss:-?} MB" >&2
}

echo "campaign: ${#targets[@]} targets, $minutes min each, $jobs at a time" >&2
running=0
for target in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$target" &
    running=$((running + 1))
done
wait || true

results="$fuzz_dir/campaign-results.tsv"
{
    printf 'target\tminutes\truns\texec_per_s\tcorpus_files\tcorpus_kib\tpeak_rss_mb\tresult\tartifact\n'
    for target in "${targets[@]}"; do
        if [[ -f "$work/$target.tsv" ]]; then
            cat "$work/$target.tsv"
        else
            printf '%s\t%s\t?\t?\t?\t?\t?\tnot-run\t-\n' "$target" "$minutes"
        fi
    done
} >"$results"

echo
echo "| Target | Minutes | Runs | Exec/s | Corpus (files / KiB) | Peak RSS (MB) | Result |"
echo "|---|---:|---:|---:|---:|---:|---|"
failed=0
while IFS=$'\t' read -r target mins runs eps files kib rss result artifact; do
    [[ "$target" == target ]] && continue
    shown="$result"
    if [[ "$result" != ok ]]; then
        failed=1
        [[ "$artifact" != - ]] && shown="$result (\`${artifact#"$PWD/"}\`)"
    fi
    echo "| \`$target\` | $mins | $runs | $eps | $files / $kib | $rss | $shown |"
done <"$results"
echo
echo "campaign: results in $results" >&2
exit "$failed"
