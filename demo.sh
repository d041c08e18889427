#!/usr/bin/env bash
# Picket's demo: the whole offline loop on this machine, in a temporary directory.
# A collector (SQLite) ingests a sample feed holding the EICAR test-file hashes, publishes a
# signed set and exports it; an agent verifies and installs the set, then scans a folder where
# the demo planted the EICAR file among ordinary files. Nothing outside the temporary directory
# is touched, and nothing needs the network once the crates are fetched.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building picket-collector and picket-agent (release)"
cargo build --release --bins -q
bin=$PWD/target/release

work=$(mktemp -d -t picket-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

step "Collector: init (the root key goes apart from the data directory)"
"$bin/picket-collector" init --data collector --org "Demo Org" --root-key offline/root.key

step "Collector: ingest a sample feed"
cat > feed.txt <<'FEED'
# Sample feed: the EICAR test file's hashes, and two addresses.
275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f
3395856ce81f2b7382dee72602f798b642f14140
44d88612fea8a8f36de82e1278abb02f
198.51.100.23
2001:db8:bad::/48
FEED
"$bin/picket-collector" ingest --data collector feed.txt

step "Collector: publish a signed set, export it as one file"
"$bin/picket-collector" publish --data collector
"$bin/picket-collector" export-set --data collector --out demo-set.pkt

step "Agent: verify and install the set (trusting only collector/root.pub)"
"$bin/picket-agent" import-set --state agent-state --trust collector/root.pub demo-set.pkt
"$bin/picket-agent" status --state agent-state

step "Agent: scan a folder where EICAR hides among ordinary files"
mkdir -p home/alice/Downloads home/alice/Documents
printf 'quarterly numbers\n' > home/alice/Documents/report.txt
printf 'X5O!P%%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' > home/alice/Downloads/invoice.pdf.exe
head -c 65536 /dev/urandom > home/alice/Downloads/photo.jpg
set +e
"$bin/picket-agent" scan --state agent-state home
rc=$?
set -e
echo "scan exit status: $rc (1 = something found)"
[ "$rc" -eq 1 ] || { echo "demo failed: EICAR was not detected" >&2; exit 1; }

step "Agent daemon: watching home/; a file dropped while it runs is found within seconds"
cat > agent.toml <<TOML
state_dir = "$work/agent-state"
[scan]
roots = ["$work/home"]
[limits]
cpu_budget = 0.25
TOML
"$bin/picket-agent" run --config agent.toml > sightings.jsonl 2> daemon.log &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; rm -rf "$work"' EXIT
wait_for() { for _ in $(seq 100); do grep -q "$1" "$2" && return 0; sleep 0.1; done; return 1; }
wait_for "scan done" daemon.log || { cat daemon.log >&2; echo "demo failed: the daemon did not scan" >&2; exit 1; }
mkdir -p home/bob/tmp
printf 'X5O!P%%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' > home/bob/tmp/payload.bin
wait_for "payload.bin" sightings.jsonl || { cat daemon.log >&2; echo "demo failed: the daemon missed the new file" >&2; exit 1; }
grep "payload.bin" sightings.jsonl | head -1
kill $daemon
"$bin/picket-agent" sightings --state agent-state

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
[ "$rc" -eq 2 ] || { echo "demo failed: a tampered set was accepted" >&2; exit 1; }
"$bin/picket-agent" status --state agent-state

step "Done: the demo's files were in $work and are removed on exit"
