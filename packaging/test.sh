#!/usr/bin/env bash
# The packaging test, run by the repository's test.sh (it can also run alone):
#
#   packaging/test.sh [--no-build]
#
# 1. builds both .deb packages with build-debs.sh (reusing target/release when it is fresh);
# 2. checks `dpkg-deb --contents` against the exact file lists below, and `dpkg-deb --info`
#    (fields, conffiles, maintainer scripts);
# 3. installs both packages into a throwaway root with `dpkg --root --force-script-chrootless`,
#    so the maintainer scripts run there through DPKG_ROOT, and checks what they made (system
#    users, 0700 state directories) and that the real system was not touched;
# 4. runs the installed binaries, and the installed agent daemon against the shipped
#    /etc/picket/agent.toml (with a set made by the installed collector);
# 5. runs `systemd-analyze verify` and `systemd-analyze security --offline` on both units, in
#    that root, where every path the units name resolves;
# 6. reinstalls (the upgrade path keeps state) and purges (state and users go).
#
# Needs root (dpkg, chown to the packages' users) and installs what it misses with apt-get
# (dpkg-dev, binutils, systemd). About a minute once target/release is built.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build_args=()
if [ "${1:-}" = --no-build ]; then
    build_args+=(--no-build)
fi

failures=0
fail() {
    echo "packaging test: FAIL: $*" >&2
    failures=$((failures + 1))
}
ok() {
    echo "packaging test: ok: $*"
}
# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        fail "$1"
        diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") >&2 || true
    fi
}

# Tools: on a fresh Debian machine some may be missing.
missing=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "packaging test: needs root (dpkg into a throwaway root, chown to the packages' users)" >&2
    exit 2
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/picket-packaging.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

version="$(awk -F'=' '
    /^\[/ { section = $0 }
    section == "[workspace.package]" && $1 ~ /^ *version *$/ { gsub(/[" ]/, "", $2); print $2; exit }
' "$repo/Cargo.toml")"
arch="$(dpkg --print-architecture)"
agent_deb="$tmp/debs/picket-agent_${version}_${arch}.deb"
collector_deb="$tmp/debs/picket-collector_${version}_${arch}.deb"

# 1. Build.
"$here/build-debs.sh" --out "$tmp/debs" "${build_args[@]}" >"$tmp/built"
expect_eq "build-debs.sh names both packages" "$(printf '%s\n' "$agent_deb" "$collector_deb")" "$(cat "$tmp/built")"

# 2. Contents and control fields.
contents() {
    dpkg-deb --contents "$1" | awk '{ print $1, $2, $6 }' | sort -k3
}
expect_eq "picket-agent contents" "$(
    cat <<'EOF'
drwxr-xr-x root/root ./
drwxr-xr-x root/root ./etc/
drwxr-xr-x root/root ./etc/picket/
-rw-r--r-- root/root ./etc/picket/agent.toml
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/bin/
-rwxr-xr-x root/root ./usr/bin/picket-agent
drwxr-xr-x root/root ./usr/lib/
drwxr-xr-x root/root ./usr/lib/systemd/
drwxr-xr-x root/root ./usr/lib/systemd/system/
-rw-r--r-- root/root ./usr/lib/systemd/system/picket-agent.service
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/picket-agent/
-rw-r--r-- root/root ./usr/share/doc/picket-agent/changelog.gz
-rw-r--r-- root/root ./usr/share/doc/picket-agent/copyright
-rw-r--r-- root/root ./usr/share/doc/picket-agent/deploy.md
EOF
)" "$(contents "$agent_deb")"
expect_eq "picket-collector contents" "$(
    cat <<'EOF'
drwxr-xr-x root/root ./
drwxr-xr-x root/root ./etc/
drwxr-xr-x root/root ./etc/picket/
-rw-r--r-- root/root ./etc/picket/collector.env
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/bin/
-rwxr-xr-x root/root ./usr/bin/picket-collector
drwxr-xr-x root/root ./usr/lib/
drwxr-xr-x root/root ./usr/lib/systemd/
drwxr-xr-x root/root ./usr/lib/systemd/system/
-rw-r--r-- root/root ./usr/lib/systemd/system/picket-collector.service
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/picket-collector/
-rw-r--r-- root/root ./usr/share/doc/picket-collector/changelog.gz
-rw-r--r-- root/root ./usr/share/doc/picket-collector/copyright
-rw-r--r-- root/root ./usr/share/doc/picket-collector/deploy.md
EOF
)" "$(contents "$collector_deb")"

for pkg in picket-agent picket-collector; do
    deb="$tmp/debs/${pkg}_${version}_${arch}.deb"
    expect_eq "$pkg: Package, Version, Architecture, Maintainer, Priority" \
        "$(printf '%s\n' "$pkg" "$version" "$arch" "Picket developers <picket@example.org>" optional)" \
        "$(for f in Package Version Architecture Maintainer Priority; do dpkg-deb --field "$deb" "$f"; done)"
    depends="$(dpkg-deb --field "$deb" Depends)"
    case "$depends" in
        *"libc6 (>= "*", passwd") ok "$pkg: Depends has libc6 from dpkg-shlibdeps and passwd" ;;
        *) fail "$pkg: Depends is $depends" ;;
    esac
    size="$(dpkg-deb --field "$deb" Installed-Size)"
    case "$size" in
        '' | *[!0-9]*) fail "$pkg: Installed-Size is $size" ;;
        *) ok "$pkg: Installed-Size $size KiB" ;;
    esac
    [ -n "$(dpkg-deb --field "$deb" Description | sed -n 2p)" ] &&
        ok "$pkg: Description has a long part" || fail "$pkg: Description has no long part"
    info="$(dpkg-deb --info "$deb")"
    for script in postinst prerm postrm; do
        if grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$script +#!/bin/sh$" <<<"$info"; then
            ok "$pkg: $script is an executable sh script"
        else
            fail "$pkg: $script missing or not executable in dpkg-deb --info"
        fi
        dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$script" >"$tmp/$script"
        sh -n "$tmp/$script" || fail "$pkg: $script does not parse"
        if grep -q '@[A-Z]*@' "$tmp/$script"; then fail "$pkg: $script has an unfilled @PLACEHOLDER@"; fi
    done
done
expect_eq "picket-agent conffiles" "/etc/picket/agent.toml" \
    "$(dpkg-deb --ctrl-tarfile "$agent_deb" | tar -xO ./conffiles)"
expect_eq "picket-collector conffiles" "/etc/picket/collector.env" \
    "$(dpkg-deb --ctrl-tarfile "$collector_deb" | tar -xO ./conffiles)"
for d in "$agent_deb" "$collector_deb"; do
    dpkg-deb --fsys-tarfile "$d" | tar -x -C "$tmp" --wildcards './usr/bin/*'
done
expect_eq "binaries are stripped (no .symtab, no .debug_*)" "" \
    "$(for b in "$tmp"/usr/bin/*; do readelf -SW "$b" | grep -oE '\.symtab|\.debug_[a-z_]+' | grep -vx '\.debug_gdb_scripts' | sed "s|^|$b |"; done)"

# 3. Install into a throwaway root. The real system's users, groups and state directories
#    are recorded first: the maintainer scripts must only touch the root.
snapshot_host() {
    cat /etc/passwd /etc/group | sha256sum
    ls -ld /var/lib/picket /var/lib/picket-agent /etc/picket 2>&1 || true
}
host_before="$(snapshot_host)"
root="$tmp/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status"
grep -E '^(root|nobody):' /etc/passwd >"$root/etc/passwd"
grep -E '^(root|nogroup):' /etc/group >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
printf 'root:*::\n' >"$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
dpkg_root() {
    # --force-depends: the throwaway root has no libc6 package, only the files it needs.
    DPKG_COLORS=never dpkg --root="$root" --force-not-root --force-script-chrootless \
        --force-depends --log=/dev/null "$@"
}
dpkg_root -i "$agent_deb" "$collector_deb" >"$tmp/dpkg.log" 2>&1 ||
    { cat "$tmp/dpkg.log" >&2; fail "dpkg -i into the throwaway root"; }
expect_eq "both packages are installed in the root" "install ok installed
install ok installed" "$(dpkg_root --status picket-agent picket-collector | sed -n 's/^Status: //p')"
expect_eq "the real system's users, groups and directories are untouched" "$host_before" "$(snapshot_host)"

# uid of NAME in the root's passwd.
uid_in_root() { awk -F: -v u="$1" '$1 == u { print $3 }' "$root/etc/passwd"; }
for pair in picket-agent:/var/lib/picket-agent picket:/var/lib/picket; do
    user="${pair%%:*}" dir="${pair#*:}"
    uid="$(uid_in_root "$user")"
    if [ -n "$uid" ] && [ "$uid" -lt 1000 ]; then ok "system user $user ($uid)"; else fail "system user $user: uid '$uid'"; fi
    expect_eq "$user's shell and home" "/usr/sbin/nologin $dir" \
        "$(awk -F: -v u="$user" '$1 == u { print $7, $6 }' "$root/etc/passwd")"
    grep -q "^$user:" "$root/etc/group" && ok "group $user" || fail "group $user is missing"
    expect_eq "$dir: mode 0700, owned by $user" "700 $uid:$uid" "$(stat -c '%a %u:%g' "$root$dir")"
done
cmp -s "$here/agent/agent.toml" "$root/etc/picket/agent.toml" && ok "agent.toml in place" ||
    fail "/etc/picket/agent.toml differs from packaging/agent/agent.toml"

# 4. The installed binaries run.
expect_eq "picket-agent --version" "picket-agent $version" "$("$root/usr/bin/picket-agent" --version)"
expect_eq "picket-collector --version" "picket-collector $version" "$("$root/usr/bin/picket-collector" --version)"

# Every flag the units pass exists in the installed binaries' --help.
serve_args="$(sed -n 's/^PICKET_SERVE_ARGS="\(.*\)"$/\1/p' "$root/etc/picket/collector.env")"
agent_exec="$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/picket-agent.service")"
collector_exec="$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/picket-collector.service")"
expect_eq "agent ExecStart" "/usr/bin/picket-agent run --config /etc/picket/agent.toml" "$agent_exec"
expect_eq "collector ExecStart" "/usr/bin/picket-collector serve --data /var/lib/picket \$PICKET_SERVE_ARGS" "$collector_exec"
for flag in $(grep -o -- '--[a-z-]*' <<<"$collector_exec $serve_args"); do
    "$root/usr/bin/picket-collector" serve --help | grep -q -- "^ *$flag " &&
        ok "picket-collector serve takes $flag" || fail "picket-collector serve has no $flag"
done
for flag in $(grep -o -- '--[a-z-]*' <<<"$agent_exec"); do
    "$root/usr/bin/picket-agent" run --help | grep -q -- "^ *$flag " &&
        ok "picket-agent run takes $flag" || fail "picket-agent run has no $flag"
done

# The shipped agent.toml, pointed at a scratch state directory and scan root, runs the
# installed daemon: a set made by the installed collector, imported, then `run` until SIGTERM.
work="$tmp/run"
mkdir -p "$work/scan"
"$root/usr/bin/picket-collector" init --data "$work/collector" --root-key "$work/root.key" >/dev/null
printf '275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f\n' >"$work/feed.txt"
"$root/usr/bin/picket-collector" ingest --data "$work/collector" "$work/feed.txt" >/dev/null
"$root/usr/bin/picket-collector" publish --data "$work/collector" >/dev/null
"$root/usr/bin/picket-collector" export-set --data "$work/collector" --out "$work/set.pkt" >/dev/null
"$root/usr/bin/picket-agent" import-set --state "$work/state" --trust "$work/collector/root.pub" "$work/set.pkt" >/dev/null
sed -e "s|^state_dir = .*|state_dir = \"$work/state\"|" -e "s|^roots = .*|roots = [\"$work/scan\"]|" \
    "$root/etc/picket/agent.toml" >"$work/agent.toml"
grep -q "^state_dir = \"$work/state\"" "$work/agent.toml" && grep -q "^roots = \[\"$work/scan\"\]" "$work/agent.toml" ||
    fail "agent.toml: the test could not point state_dir and roots elsewhere"
set +e
timeout -s TERM 3 "$root/usr/bin/picket-agent" run --config "$work/agent.toml" >"$work/run.out" 2>"$work/run.err"
rc=$?
set -e
if [ "$rc" = 124 ] && grep -q 'scan done' "$work/run.err" && grep -q 'stopped' "$work/run.err" &&
    ! grep -qE 'error:|warning:' "$work/run.err"; then
    ok "the installed daemon runs with the shipped agent.toml and stops cleanly on SIGTERM"
else
    fail "picket-agent run with the shipped agent.toml (exit $rc):"
    cat "$work/run.err" >&2
fi

# 5. systemd-analyze in the root. It resolves every path a unit names (ExecStart and the
#    like) and the targets it refers to inside the root, so the host's own units are copied in
#    beside ours, and chown and kill, which ExecStartPre and ExecReload name.
cp -rn /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
mkdir -p "$root/bin"
cp /bin/chown /bin/kill "$root/bin/"
for unit in picket-agent picket-collector; do
    if out="$(systemd-analyze verify --root="$root" "$unit.service" 2>&1)" && [ -z "$out" ]; then
        ok "systemd-analyze verify $unit.service"
    else
        fail "systemd-analyze verify $unit.service:"
        echo "$out" >&2
    fi
done
# Exposure scores as systemd rates the hardening, 0 best and 10 worst: 2.5 for the agent
# (it must read everything) and 1.4 for the collector today. --threshold counts in tenths.
for pair in picket-agent:30 picket-collector:20; do
    unit="${pair%%:*}" max="${pair#*:}"
    if out="$(systemd-analyze security --offline=yes --threshold="$max" --root="$root" "$unit.service" 2>&1)"; then
        ok "$(grep -o 'exposure level for .*' <<<"$out") (at most $((max / 10)))"
    else
        fail "systemd-analyze security $unit.service is above $((max / 10)):"
        grep -E '✗|Overall' <<<"$out" >&2
    fi
done
unit_has() {
    local unit="$root/usr/lib/systemd/system/$1.service"
    shift
    local line
    for line in "$@"; do
        grep -qxF -- "$line" "$unit" || fail "$(basename "$unit") has no line '$line'"
    done
}
failures_before=$failures
common_hardening=(NoNewPrivileges=yes ProtectSystem=strict ProtectKernelTunables=yes
    ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes RestrictNamespaces=yes
    LockPersonality=yes MemoryDenyWriteExecute=yes SystemCallArchitectures=native
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" Restart=on-failure)
unit_has picket-agent "${common_hardening[@]}" ProtectHome=read-only PrivateTmp=no \
    ReadWritePaths=/var/lib/picket-agent User=picket-agent \
    "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE" \
    "AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE" CPUQuota=10% MemoryMax=512M
unit_has picket-collector "${common_hardening[@]}" ProtectHome=yes PrivateTmp=yes \
    ReadWritePaths=/var/lib/picket User=picket CapabilityBoundingSet= AmbientCapabilities=
[ "$failures" = "$failures_before" ] && ok "both units carry their hardening lines"

# The units' fences match the agent's own budgets in agent.toml (5 % of a core, 256 MiB).
grep -qx 'cpu_budget = 0.05' "$root/etc/picket/agent.toml" && grep -qx 'memory_limit = "256MiB"' "$root/etc/picket/agent.toml" &&
    ok "agent.toml budgets are the ones the unit's comments and fences assume" ||
    fail "agent.toml's cpu_budget or memory_limit changed: revisit CPUQuota and MemoryMax"

# 6. Reinstall (configure with the old version, as an upgrade does): state is kept.
echo kept >"$root/var/lib/picket-agent/marker"
dpkg_root -i "$agent_deb" "$collector_deb" >"$tmp/dpkg.log" 2>&1 ||
    { cat "$tmp/dpkg.log" >&2; fail "dpkg -i again (upgrade path)"; }
expect_eq "reinstall keeps the agent's state" kept "$(cat "$root/var/lib/picket-agent/marker")"
expect_eq "reinstall keeps one picket-agent user" 1 "$(grep -c '^picket-agent:' "$root/etc/passwd")"

# Purge: state directories, users, groups and /etc/picket go; the real system is untouched.
dpkg_root --purge picket-agent picket-collector >"$tmp/dpkg.log" 2>&1 ||
    { cat "$tmp/dpkg.log" >&2; fail "dpkg --purge in the throwaway root"; }
expect_eq "purge removes state, users, groups and /etc/picket" "" "$(
    ls -d "$root/var/lib/picket" "$root/var/lib/picket-agent" "$root/etc/picket" "$root/usr/bin/picket-agent" 2>/dev/null
    grep -E '^(picket|picket-agent):' "$root/etc/passwd" "$root/etc/group" || true
)"
expect_eq "the real system is still untouched after purge" "$host_before" "$(snapshot_host)"

if [ "$failures" -gt 0 ]; then
    echo "packaging test: $failures failure(s)" >&2
    exit 1
fi
echo "packaging test: all passed"
