#!/usr/bin/env bash
# Picket's demo: the live loop on this machine, in a temporary directory.
# A collector (SQLite) ingests a sample feed, publishes a signed set and serves the agent channel
# (mutual TLS on loopback). An agent enrols with a one-use token, installs the set and watches a
# folder. A new indicator published on the collector reaches the agent within seconds; the agent
# meets a matching file and the collector shows the (redacted) sighting. A peer of the demo
# community reports the same indicator over TAXII 2.1, so k = 2 organisations have seen it and
# the community's TAXII collection serves the anonymised sighting. Last, an attacker's tampered
# set file is refused. Run from a terminal, the collector and the agent then keep running for the
# dashboard and the TAXII API it prints, until Ctrl-C. Nothing outside the temporary directory is
# touched, and nothing needs the network once the crates are fetched.
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

step "Collector: a community (k = 2 organisations), a peer member, and a dashboard operator"
cat >> collector/picket.toml <<'TOML'

[[community]]
name = "demo-isac"
k = 2
time_bucket = "1m"
TOML
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > peer.pw
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' > operator.pw
"$bin/picket-collector" member add --data collector --name peer --password-file peer.pw \
    --community demo-isac --contribute demo-isac
"$bin/picket-collector" operator add --data collector --name admin --password-file operator.pw

step "Collector: serve the agent channel, and HTTPS (TAXII 2.1 and the dashboard), on loopback"
"$bin/picket-collector" serve --data collector --listen 127.0.0.1:0 --http 127.0.0.1:0 > serve.log 2> serve.err &
pids+=($!)
wait_for "dashboard on" serve.log || { cat serve.err >&2; fail "serve did not start"; }
addr=$(grep -o 'agent channel listening on .*' serve.log | head -1 | cut -d' ' -f5)
https=$(grep -o 'TAXII 2.1 server listening on https://[^/]*' serve.log | head -1 | cut -d/ -f3)
echo "agent channel on $addr; TAXII 2.1 and the dashboard on https://$https"

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

step "Collector: a new indicator (the EICAR test file, STIX, TLP:GREEN) is published; the agent has it in seconds"
cat > eicar.json <<'STIX'
{"type": "bundle", "id": "bundle--0b0a6f3e-55a3-4f5c-9d67-2f0e4d1c8a10", "objects": [
 {"type": "indicator", "spec_version": "2.1", "id": "indicator--e1ca6a11-5e5d-4b6f-8c1a-7e57f11e0001",
  "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
  "name": "EICAR test file", "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z",
  "pattern": "[file:hashes.'SHA-256' = '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f']",
  "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]}]}
STIX
"$bin/picket-collector" ingest --data collector eicar.json
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
echo "what the agent sends, exactly (no host name, user name or address; a path under /home/<user>"
echo "goes as ~/..., but this demo's folder is in /tmp, so its path goes as it is: [sightings]"
echo "location = \"name\" or \"none\" in agent.toml sends less):"
"$bin/picket-agent" sightings --state agent-state --outbound --json

step "Community: a peer reports the same indicator over TAXII; with k = 2 reached, the community sees it"
python3 - "$https" collector/tls/ca.pem peer.pw <<'PY' > community.txt || { cat serve.err >&2; fail "the TAXII exchange failed"; }
import base64, json, ssl, sys, urllib.request
host, ca, pw = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().strip()
ctx = ssl.create_default_context(cafile=ca)
auth = "Basic " + base64.b64encode(f"peer:{pw}".encode()).decode()
media = "application/taxii+json;version=2.1"
def call(path, body=None):
    req = urllib.request.Request(f"https://{host}{path}", data=body, method="POST" if body else "GET",
                                 headers={"Authorization": auth, "Accept": media, "Content-Type": media})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.load(r)
cols = call("/demo-isac/collections/")["collections"]
inbox = next(c["id"] for c in cols if c["can_write"])
feed = next(c["id"] for c in cols if c["can_read"])
peer = {"objects": [{"type": "sighting", "spec_version": "2.1",
                     "id": "sighting--6f1c1b1e-2b7a-4d1e-9a55-0c3d2e1f0a99",
                     "created": "2026-01-02T00:00:00.000Z", "modified": "2026-01-02T00:00:00.000Z",
                     "sighting_of_ref": "indicator--e1ca6a11-5e5d-4b6f-8c1a-7e57f11e0001", "count": 3}]}
status = call(f"/demo-isac/collections/{inbox}/objects/", json.dumps(peer).encode())
print(f"peer posted its sighting: status {status['status']}, {status['success_count']} of {status['total_count']} taken")
objects = call(f"/demo-isac/collections/{feed}/objects/").get("objects", [])
for o in objects:
    if o["type"] == "sighting":
        print(f"the community now reads: sighting of {o['sighting_of_ref']}, count {o['count']}, "
              f"{o['first_seen']} .. {o['last_seen']}, {o['object_marking_refs'][0]}")
PY
cat community.txt
grep -q "the community now reads: sighting of indicator--e1ca6a11" community.txt || fail "the community did not get the sighting"
echo "(no host, user, path or address in it: the agent never sent them, and the policy shares counts in bands and times in buckets)"

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

if [ -t 0 ] && [ -t 1 ] && [ -z "${PICKET_DEMO_EXIT:-}" ]; then
    step "Still running, for you to look around (Ctrl-C stops everything and removes $work)"
    "$bin/picket-agent" run --config agent-state/agent.toml > /dev/null 2> daemon2.log &
    pids+=($!)
    echo "dashboard:  https://$https/ui/   user admin, password $(cat operator.pw)"
    echo "            (your browser gets $work/collector/tls/https.pem: accept or pin it)"
    echo "TAXII 2.1:  https://$https/taxii2/   user peer, password $(cat peer.pw), CA $work/collector/tls/ca.pem"
    echo "drop another EICAR copy into $work/home/alice/ and watch the count move"
    trap 'echo; exit 0' INT
    wait "${pids[0]}"
fi

step "Done: the demo's files were in $work and are removed on exit"
