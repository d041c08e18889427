#!/usr/bin/env bash
# Runs every Picket test: unit, property and table tests, the end-to-end tests with the real
# binaries, and a short smoke run of every fuzz target. Installs what the tests need first.
# Long fuzzing runs and benchmarks have their own commands (see README.md).
set -euo pipefail
cd "$(dirname "$0")"

# Third-party judges of interop, from PyPI, in a local virtual environment: the reference STIX
# pattern matcher, the STIX validator, a TAXII 2.1 server and client, Prometheus's text parser.
# Tests find them through PICKET_PYTHON.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check \
    stix2-matcher stix2-validator stix2 taxii2-client medallion prometheus-client selenium
export PICKET_PYTHON="$PWD/.venv/bin/python"

# The dashboard's browser test drives Debian's headless Chromium with its chromedriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The end-to-end tests run the real binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast

# The benchmarks' smoke run: small sizes, each checking its findings against its baseline
# (openssl, find, ClamAV) before it reports. ClamAV comes from Debian's packages.
if ! command -v clamscan >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav >/dev/null
fi
cargo build --release --bins
cargo run --release -p picket-bench -- --quick all
bash soak/run.sh --smoke   # fault injection, 20 kills a loop (the full soak: bash soak/run.sh)

# The README's other command: the demo must run end to end and detect what it plants.
# Bounded in time; it must show the detection at the collector and the community's sighting.
timeout 600 ./demo.sh > target/demo.log 2>&1 || { cat target/demo.log; echo "the demo failed" >&2; exit 1; }
grep -q "^indicator--e1ca6a11-5e5d-4b6f-8c1a-7e57f11e0001 hosts=1" target/demo.log || { cat target/demo.log; exit 1; }
grep -q "the community now reads: sighting of indicator--e1ca6a11" target/demo.log || { cat target/demo.log; exit 1; }
bash packaging/test.sh --no-build   # the .deb packages and systemd units, from the release build above

# The fuzz crate's own tests: every seed is accepted whole, so each target starts past the
# first error.
cargo test --quiet --manifest-path fuzz/Cargo.toml
# A few seconds per fuzz target: proves each builds and survives its seed corpus.
bash fuzz/smoke.sh "${PICKET_FUZZ_SECONDS:-5}"
