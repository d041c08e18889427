#!/usr/bin/env bash
# Picket's fault-injection soak (issue 8, item 2), with the real release binaries:
#   agent-set-kill         import-set SIGKILLed while it installs sets: old or new set, never torn
#   agent-daemon-kill      the enrolled daemon SIGKILLed while it spools sightings and installs
#                          pushed sets: the set verifies after each kill; every file reaches the
#                          collector exactly once at the end
#   collector-ingest-kill  ingest SIGKILLed: the store opens and holds all of the file or none
#   collector-serve-kill   serve SIGKILLed while agents report: every batch stored exactly once
#   full-disk              the agent's state dir and the collector's data dir on a full tmpfs:
#                          last good set kept, spool bounded, both recover when space returns
#   clock-jump             clocks a year ahead and behind (libfaketime): freeze detection right,
#                          no crash, a running daemon survives jumps both ways
#   collector-outage       several collector outages while agents keep matching: every sighting
#                          arrives exactly once
#
# Usage: soak/run.sh [--smoke] [--iterations N]
#   default       the full soak: 1000 kills per kill loop (about 15 minutes on 2 cores)
#   --smoke       20 kills per kill loop (about a minute and a half; CI runs this)
#   --iterations  N kills per kill loop
# Each check prints one summary line with its figures; the script exits non-zero if any check
# fails. It needs root (tmpfs mounts) and installs Debian's faketime package when missing.
# PICKET_SOAK_SEED=<n> replays the kill delays of a run (each summary line names its seed).
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=1000
mode=full
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke; iterations=20 ;;
        --iterations) iterations="${2:?--iterations needs a number}"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "soak/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$iterations" in ''|*[!0-9]*) echo "soak/run.sh: --iterations takes a number" >&2; exit 2 ;; esac

# The full-disk check mounts tmpfs file systems: without root it cannot run, and says so.
if [ "$(id -u)" != 0 ]; then
    echo "soak/run.sh: *** must run as root: the full-disk check mounts tmpfs file systems (CI runs as root)" >&2
    exit 1
fi
# The clock-jump check runs the agent under libfaketime.
if ! ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi

# Built once: every check runs this test binary and these binaries, even if sources change
# while the soak runs.
cargo build --release --bins -q
# (Through a file, not `tee /dev/stderr`: reopening stderr truncates a log file it goes to.)
build_log=$(mktemp)
cargo test --release -p picket-e2e --test soak --no-run >"$build_log" 2>&1 || { cat "$build_log" >&2; rm -f "$build_log"; exit 1; }
cat "$build_log" >&2
exe=$(sed -n 's/.*Executable tests\/soak.rs (\(.*\))$/\1/p' "$build_log" | tail -n 1)
rm -f "$build_log"
[ -x "$exe" ] || { echo "soak/run.sh: the soak test binary was not built" >&2; exit 1; }

logs=target/soak
mkdir -p "$logs"
checks=(
    "agent-set-kill agent_killed_while_installing_sets_keeps_the_old_or_the_new_set"
    "agent-daemon-kill agent_daemon_killed_while_spooling_and_updating_loses_and_doubles_nothing"
    "collector-ingest-kill collector_killed_while_ingesting_keeps_all_of_a_file_or_none"
    "collector-serve-kill collector_killed_while_committing_sightings_stores_each_exactly_once"
    "full-disk a_full_disk_under_the_agent_keeps_the_last_good_set_and_both_recover"
    "clock-jump clock_jumps_of_a_year_keep_freeze_detection_right_and_crash_nothing"
    "collector-outage sightings_made_across_several_collector_outages_arrive_exactly_once"
)
echo "soak: $mode run, $iterations kills per kill loop, logs in $logs/"
started=$SECONDS
failures=0
for entry in "${checks[@]}"; do
    read -r check test <<<"$entry"
    # Every check is bounded: a kill loop gets 3 minutes plus 0.6 s a kill, the others 10 minutes.
    case "$check" in
        *-kill) limit=$((180 + iterations * 6 / 10)) ;;
        *) limit=600 ;;
    esac
    log="$logs/$check.log"
    t0=$SECONDS
    set +e
    PICKET_SOAK_ITERATIONS="$iterations" timeout --kill-after=10 "$limit" \
        "$exe" --exact "$test" --include-ignored --nocapture --test-threads=1 >"$log" 2>&1
    code=$?
    set -e
    # libtest may print the line after "test NAME ... " on the same line.
    line=$(sed -n 's/.*\(soak: [a-z-]*: .*, failures 0\)$/\1/p' "$log" | tail -n 1)
    if [ "$code" = 0 ] && [ -n "$line" ]; then
        echo "$line"
    else
        failures=$((failures + 1))
        why="exit $code"
        [ "$code" = 124 ] && why="timed out after ${limit}s"
        echo "soak: $check: FAILED ($why) after $((SECONDS - t0))s, failures 1; log $log:" >&2
        grep -E "panicked|\*\*\*|assert" -A4 "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
    fi
done
echo "soak: $mode run done: ${#checks[@]} checks, $failures failed, $((SECONDS - started))s"
[ "$failures" = 0 ]
