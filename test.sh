#!/usr/bin/env bash
# Runs every Picket test: unit, property and table tests, the end-to-end tests with the real
# binaries, and a short smoke run of every fuzz target. Installs what the tests need first.
# Long fuzzing runs and benchmarks have their own commands (see README.md).
set -euo pipefail
cd "$(dirname "$0")"

# The end-to-end tests run the real binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast

# A few seconds per fuzz target: proves each builds and survives its seed corpus.
bash fuzz/smoke.sh "${PICKET_FUZZ_SECONDS:-5}"
