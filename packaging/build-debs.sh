#!/usr/bin/env bash
# Builds picket-agent_<version>_<arch>.deb and picket-collector_<version>_<arch>.deb with what
# Debian itself has (dpkg-deb, dpkg-shlibdeps, strip): no cargo-deb, no debhelper.
#
#   packaging/build-debs.sh [--out DIR] [--no-build]
#
#   --out DIR     where the .deb files go (default: target/debian)
#   --no-build    do not run cargo; package the binaries already in target/release (it fails if
#                 they are missing). Without it, `cargo build --release` runs first, which costs
#                 nothing when target/release is already fresh.
#
# The version is the workspace's (Cargo.toml, [workspace.package]); the architecture is
# `dpkg --print-architecture`. Prints the paths of the two packages on stdout, one a line.
# Exit status: 0 built, 2 error (named on stderr).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="$repo/target/debian"
build=yes

die() {
    echo "build-debs.sh: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --out)
            [ $# -ge 2 ] || die "--out needs a directory"
            out="$2"
            shift 2
            ;;
        --out=*)
            out="${1#--out=}"
            shift
            ;;
        --no-build)
            build=no
            shift
            ;;
        -h | --help)
            sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

for tool in dpkg dpkg-deb dpkg-shlibdeps strip gzip cargo; do
    if [ "$tool" = cargo ] && [ "$build" = no ]; then continue; fi
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install dpkg-dev binutils)"
done

# The workspace version: the first `version = "..."` under [workspace.package].
version="$(awk -F'=' '
    /^\[/ { section = $0 }
    section == "[workspace.package]" && $1 ~ /^ *version *$/ { gsub(/[" ]/, "", $2); print $2; exit }
' "$repo/Cargo.toml")"
[ -n "$version" ] || die "no version under [workspace.package] in $repo/Cargo.toml"
case "$version" in
    [0-9]*) ;;
    *) die "the workspace version $version does not start with a digit, as Debian needs" ;;
esac
arch="$(dpkg --print-architecture)"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
if [ "$build" = yes ]; then
    (cd "$repo" && cargo build --release -p picket-agent -p picket-collector) >&2 ||
        die "cargo build --release failed"
fi
for bin in picket-agent picket-collector; do
    [ -x "$target_dir/release/$bin" ] || die "$target_dir/release/$bin is missing: build it or drop --no-build"
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/picket-debs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps reads debian/control and wants the binaries under debian/<package>/.
mkdir -p "$work/debian"
printf 'Source: picket\n\nPackage: picket-agent\nArchitecture: any\n\nPackage: picket-collector\nArchitecture: any\n' \
    >"$work/debian/control"

maintainer="Picket developers <picket@example.org>"
date_rfc2822="$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")"

# The crates linked into the binaries and their licenses, for the copyright file.
crate_licenses() {
    (cd "$repo" && cargo tree --offline -p "$1" -e normal --prefix none -f '{p}: {l}' 2>/dev/null) |
        sed -e 's/ (\*)//; s/ (proc-macro)//; s/ (\/[^)]*)//' | grep -v '^picket-' | sort -u |
        sed 's/^/ /' || true
}

# stage PACKAGE DIR USER STATE COMMENT WHAT: builds the tree of one package in $work/debian/PACKAGE.
stage() {
    local pkg="$1" root="$work/debian/$1"
    install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/picket" \
        "$root/usr/lib/systemd/system" "$root/usr/share/doc/$pkg"
    # Stripped as dh_strip would (debug line tables stay in target/release).
    install -m 0755 "$target_dir/release/$pkg" "$root/usr/bin/$pkg"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$pkg"
    install -m 0644 "$here/$2/$pkg.service" "$root/usr/lib/systemd/system/$pkg.service"
    install -m 0644 "$repo/docs/deploy.md" "$root/usr/share/doc/$pkg/deploy.md"

    # changelog.gz (a native package) and copyright, as Debian policy puts them.
    {
        printf '%s (%s) unstable; urgency=medium\n\n' "$pkg" "$version"
        printf '  * Picket %s, built from the workspace by packaging/build-debs.sh.\n\n' "$version"
        printf ' -- %s  %s\n' "$maintainer" "$date_rfc2822"
    } | gzip -9n >"$root/usr/share/doc/$pkg/changelog.gz"
    chmod 0644 "$root/usr/share/doc/$pkg/changelog.gz"
    {
        cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: picket
Upstream-Contact: $maintainer
Comment: $pkg is statically linked with the Rust crates listed under Files: vendored/*,
 each under its own license as its Cargo manifest declares it. rusqlite bundles
 SQLite, which is in the public domain.

Files: *
Copyright: The Picket developers
License: Apache-2.0

Files: vendored/*
Copyright: The authors of each crate
License: various
 The crates built into /usr/bin/$pkg, with the license each declares:
EOF
        crate_licenses "$pkg"
        cat <<'EOF'

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in the file `/usr/share/common-licenses/Apache-2.0'.
EOF
    } >"$root/usr/share/doc/$pkg/copyright"
    chmod 0644 "$root/usr/share/doc/$pkg/copyright"

    # The maintainer scripts, from one template for both packages.
    local s
    for s in postinst prerm postrm; do
        sed -e "s|@PACKAGE@|$pkg|g" -e "s|@USER@|$3|g" -e "s|@STATE@|$4|g" \
            -e "s|@UNIT@|$pkg.service|g" -e "s|@COMMENT@|$5|g" -e "s|@WHAT@|$6|g" \
            "$here/common/$s.in" >"$root/DEBIAN/$s"
        chmod 0755 "$root/DEBIAN/$s"
    done
}

# control PACKAGE SECTION SUMMARY DESCRIPTION: writes DEBIAN/control.
control() {
    local pkg="$1" root="$work/debian/$1" shlibs size
    shlibs="$(cd "$work" && dpkg-shlibdeps -O -e "debian/$pkg/usr/bin/$pkg" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')"
    [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies for $pkg"
    size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
    {
        printf 'Package: %s\n' "$pkg"
        printf 'Version: %s\n' "$version"
        printf 'Architecture: %s\n' "$arch"
        printf 'Maintainer: %s\n' "$maintainer"
        printf 'Installed-Size: %s\n' "$size"
        printf 'Depends: %s, passwd\n' "$shlibs"
        printf 'Section: %s\n' "$2"
        printf 'Priority: optional\n'
        printf 'Description: %s\n' "$3"
        printf '%s\n' "$4" | fold -s -w 72 | sed 's/ *$//; s/^/ /'
    } >"$root/DEBIAN/control"
    (cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
    (cd "$root" && find usr -type f -exec md5sum {} + | sort -k2) >"$root/DEBIAN/md5sums"
    chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
}

stage picket-agent agent picket-agent /var/lib/picket-agent "Picket agent" \
    "the installed set, the hash cache, the sightings spool and the agent key"
install -m 0644 "$here/agent/agent.toml" "$work/debian/picket-agent/etc/picket/agent.toml"
control picket-agent admin "Picket endpoint agent: matches signed indicator sets on the host" \
    "The Picket agent pulls signed indicator sets from a Picket collector over mutual TLS, verifies them (no forged, stale or rolled-back set is accepted), matches them against local files, running processes and live connections within a CPU and memory budget, and reports anonymised sightings. The picket-agent service runs it as the system user picket-agent with read-only access to the host; state lives in /var/lib/picket-agent."

stage picket-collector collector picket /var/lib/picket "Picket collector" \
    "the collector data directory: database, online keys, TLS CA"
install -m 0644 "$here/collector/collector.env" "$work/debian/picket-collector/etc/picket/collector.env"
control picket-collector net "Picket collector: signed indicator sets for Picket agents" \
    "The Picket collector ingests indicators of compromise (STIX 2.1, TAXII 2.1, MISP, CSV, plain lists), compiles them into signed, versioned indicator sets, serves them to Picket agents over mutual TLS, aggregates their anonymised sightings and shares them onward over TAXII 2.1. The picket-collector service runs it as the system user picket without capabilities; its data directory is /var/lib/picket, made by picket-collector init."

for pkg in picket-agent picket-collector; do
    deb="$out/${pkg}_${version}_${arch}.deb"
    # -Zxz at a low level: most of the time goes into compressing the binaries, and -3 is
    # within a few per cent of -9 for them.
    dpkg-deb --root-owner-group -Zxz -z3 --build "$work/debian/$pkg" "$deb" >/dev/null
    echo "$deb"
done
