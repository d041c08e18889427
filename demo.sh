#!/usr/bin/env bash
# Picket's demo: the live loop on this machine, in a temporary directory.
# A collector (SQLite) ingests a sample feed, publishes a signed set and serves the agent channel
# (mutual TLS on loopback). An agent enrols with a one-use token, installs the set and watches a
# folder. A new indicator published on the collector reaches the agent within seconds; the agent
# meets a matching file and the collector shows the (redacted) sighting. Last, an attacker's
# tampered set file is refused. Nothing outside the temporary directory is touched, and nothing
# needs the network once the crates are fetched.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo failed: $*" >&2; exit 1; }
# wait_for PATTERN FILE [TENTHS]: waits (bounded) until FILE holds a line matching PATTERN.
wait_for() { for _ in $(seq "${3:-100}"); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

step "Building picket-collector and picket-agent (release)"
cargo build --release --bins -q
bin=$PWD/target/release

work=$(mktemp -d -t picket-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step "Collector: init (its CA and TLS certificate in collector/tls; the root key apart from it)"
"$bin/picket-collector" init --data collector --org "Demo Org" --root-key offline/root.key
# The root key belongs offline; serve refuses to start while it can read it where init wrote it.
mv offline usb-stick

step "Collector: ingest a sample feed and publish set version 1"
cat > feed.txt <<'FEED'
# Sample feed: addresses of a (documentation-range) command-and-control server.
198.51.100.23
2001:db8:bad::/48
FEED
"$bin/picket-collector" ingest --data collector feed.txt
"$bin/picket-collector" publish --data collector

step "Collector: serve the agent channel on loopback"
"$bin/picket-collector" serve --data collector --listen 127.0.0.1:0 > serve.log 2> serve.err &
pids+=($!)
wait_for "agent channel listening on" serve.log || { cat serve.err >&2; fail "serve did not start"; }
addr=$(grep -o 'listening on .*' serve.log | head -1 | cut -d' ' -f3)
echo "listening on $addr"

step "Collector: a one-use enrolment token (it pins the collector's CA)"
"$bin/picket-collector" token create --data collector --uses 1 --expires 10m > token
cut -c1-24 token | sed 's/$/... (secret not shown)/'

step "Agent: enrol (key made here, certificate from the collector), then run the daemon"
mkdir -p home/alice/Downloads home/alice/Documents
printf 'quarterly numbers\n' > home/alice/Documents/report.txt
head -c 65536 /dev/urandom > home/alice/Downloads/photo.jpg
"$bin/picket-agent" enroll --state agent-state --collector "$addr" --token-file token \
    --trust collector/root.pub --root "$work/home"
rm token
"$bin/picket-agent" run --config agent-state/agent.toml > sightings.jsonl 2> daemon.log &
pids+=($!)
daemon=$!
wait_for "scan done" daemon.log || { cat daemon.log >&2; fail "the daemon did not scan"; }
"$bin/picket-collector" agents list --data collector

step "Collector: a new indicator (the EICAR test file) is published; the agent has it in seconds"
printf '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n' > eicar.txt
"$bin/picket-collector" ingest --data collector eicar.txt
start=$(date +%s%N)
"$bin/picket-collector" publish --data collector
wait_for "set version=2" daemon.log 200 || { cat daemon.log >&2; fail "the agent did not get set version 2"; }
echo "set version 2 installed on the agent $(( ($(date +%s%N) - start) / 1000000 )) ms after publish started"

step "Agent: EICAR arrives in Downloads; the sighting reaches the collector"
printf 'X5O!P%%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' > home/alice/Downloads/invoice.pdf.exe
wait_for "invoice.pdf.exe" sightings.jsonl || { cat daemon.log >&2; fail "the daemon missed the new file"; }
echo "agent: $(head -1 sightings.jsonl)"
for _ in $(seq 100); do
    "$bin/picket-collector" sightings --data collector > collector-sightings.txt
    [ -s collector-sightings.txt ] && break
    sleep 0.1
done
[ -s collector-sightings.txt ] || { cat daemon.log serve.err >&2; fail "the sighting did not reach the collector"; }
echo "collector:"
cat collector-sightings.txt
echo "what the agent sends, exactly (no host name, user name or address; a path under a user's home goes as ~/...):"
"$bin/picket-agent" sightings --state agent-state --outbound --json

step "Agent: SIGTERM stops the daemon cleanly"
kill -TERM "$daemon"
wait "$daemon" && echo "daemon exited with status 0"
"$bin/picket-agent" status --state agent-state

step "Attacker: a set file with one byte changed is refused, and the installed set stays"
"$bin/picket-collector" publish --data collector --force >/dev/null
"$bin/picket-collector" export-set --data collector --out next.pkt >/dev/null
python3 - next.pkt <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-5] ^= 1; open(p, 'wb').write(b)
PY
set +e
"$bin/picket-agent" import-set --state agent-state --trust collector/root.pub next.pkt
rc=$?
set -e
echo "import-set exit status: $rc (2 = refused)"
[ "$rc" -eq 2 ] || fail "a tampered set was accepted"

step "Done: the demo's files were in $work and are removed on exit"
