//! What leaves the host: a local [`Sighting`] turned into the [`SightingReport`] the collector
//! receives.
//!
//! Architecture invariant: **nothing leaves the agent that this module did not produce.** The
//! spool holds only its output, and `picket-agent sightings --outbound` prints exactly that.
//!
//! The rules, in order:
//! - A connection never sends the remote address: the indicator says which one it was.
//! - A match whose local value could be anything the indicator's pattern allows (a file-name
//!   glob, a path glob, a command-line substring, a network, or a compound that may hold one of
//!   them) sends no location at all: the local path, command line or address that matched never
//!   leaves. Exact and glob file-name indicators share one kind (`file-name`) on the wire, so both
//!   send none: an unknown kind fails closed the same way.
//! - A file found by its digest sends its location as `[sightings] location` says: `redacted`
//!   (the default) replaces home directories with `~` (`/home/<user>`, `/root`, `/Users/<user>`,
//!   `/var/home/<user>` and every home in `/etc/passwd` of a human account), runtime directories'
//!   uid (`/run/user/<uid>` becomes `/run/user/*`) and any path segment that is a human account's
//!   user name (`*`); `name` keeps the file name alone; `none` sends nothing.
//! - A process found by an exact executable digest, name or path sends its executable path, by
//!   the same rule.
//! - Times are rounded down to the minute, so a report cannot be lined up with one exact event
//!   in another log.
//! - A location longer than the wire allows ([`wire::MAX_FIELD`]) falls back to the file name,
//!   then to none.
//!
//! Reports are aggregated per (indicator, kind, observed, location): several files that match
//! one glob on one host are one report (their counts summed, first and last seen widened), so
//! the collector can keep the latest report for that key instead of adding counts up. Every
//! report carries the host's running totals for its key, never an increment.
//!
//! Everything here is pure: the user list comes in as text ([`Redactor::from_passwd`]); only
//! [`Redactor::for_host`] reads `/etc/passwd`.

use std::collections::{BTreeMap, BTreeSet};

use picket_proto::wire::{self, ObservedKind, SightingReport};

use crate::sightings::{Observed, Sighting};

/// How much of a location leaves the host (`[sightings] location`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Location {
    /// The path with home directories and user names replaced (the default).
    #[default]
    Redacted,
    /// The file name alone.
    Name,
    /// No location at all.
    None,
}

impl Location {
    /// Parses the configuration value (`redacted`, `name`, `none`).
    pub fn parse(text: &str) -> Option<Location> {
        match text {
            "redacted" => Some(Location::Redacted),
            "name" => Some(Location::Name),
            "none" => Some(Location::None),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            Location::Redacted => "redacted",
            Location::Name => "name",
            Location::None => "none",
        }
    }
}

/// Rounds a unix time down to the start of its minute.
pub fn to_minute(t: i64) -> i64 {
    t - t.rem_euclid(60)
}

/// Turns local sightings into the reports that leave the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    mode: Location,
    /// Home directories of human accounts, without a trailing slash, longest first.
    homes: Vec<String>,
    /// User names of human accounts.
    users: BTreeSet<String>,
}

/// Home directory prefixes whose next segment is a user name.
const HOME_PARENTS: [&str; 3] = ["/home/", "/Users/", "/var/home/"];

impl Redactor {
    /// A redactor with the built-in rules and no accounts of its own.
    pub fn new(mode: Location) -> Redactor {
        Redactor {
            mode,
            homes: Vec::new(),
            users: BTreeSet::new(),
        }
    }

    /// A redactor that also knows the human accounts in `passwd` (the text of `/etc/passwd`):
    /// uid 1000 and above except `nobody` (65534). Their home directories become `~`, and a
    /// path segment equal to one of their names becomes `*`.
    pub fn from_passwd(mode: Location, passwd: &str) -> Redactor {
        let mut r = Redactor::new(mode);
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                continue;
            }
            let Ok(uid) = f[2].parse::<u32>() else { continue };
            if uid < 1000 || uid == 65534 || f[0].is_empty() {
                continue;
            }
            r.users.insert(f[0].to_owned());
            let home = f[5].trim_end_matches('/');
            if home.len() > 1 && home.starts_with('/') && home != "/nonexistent" {
                r.homes.push(home.to_owned());
            }
        }
        r.homes.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        r.homes.dedup();
        r
    }

    /// A redactor for this host: the built-in rules plus the accounts in `/etc/passwd` (only
    /// the built-in rules when it cannot be read).
    pub fn for_host(mode: Location) -> Redactor {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => Redactor::from_passwd(mode, &text),
            Err(_) => Redactor::new(mode),
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> Location {
        self.mode
    }

    /// `path` with home directories, runtime directories and user names replaced.
    pub fn redact_path(&self, path: &str) -> String {
        let (prefix, body) = match self.strip_home(path) {
            Some(rest) => ("~", rest),
            None => ("", path),
        };
        // An absolute `body` splits into an empty first segment, then the names.
        let mut segments: Vec<&str> = body.split('/').collect();
        if prefix.is_empty()
            && segments.len() > 3
            && segments[..3] == ["", "run", "user"]
            && !segments[3].is_empty()
        {
            // `/run/user/<uid>`: the uid identifies the account.
            segments[3] = "*";
        }
        for s in segments.iter_mut() {
            if self.users.contains(*s) {
                *s = "*";
            }
        }
        format!("{prefix}{}", segments.join("/"))
    }

    /// The part of `path` after a home directory (starting with `/`, or empty when `path` is the
    /// home itself), or `None` when `path` is not in one.
    fn strip_home<'p>(&self, path: &'p str) -> Option<&'p str> {
        for home in &self.homes {
            if let Some(rest) = path.strip_prefix(home.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Some(rest);
                }
            }
        }
        if let Some(rest) = path.strip_prefix("/root") {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(rest);
            }
        }
        for parent in HOME_PARENTS {
            if let Some(after) = path.strip_prefix(parent) {
                let user_end = after.find('/').unwrap_or(after.len());
                if user_end > 0 {
                    return Some(&after[user_end..]);
                }
            }
        }
        None
    }

    /// The location a report carries for a value the indicator matched exactly, as the mode
    /// says, or `None` when it would not fit the wire.
    fn exact_location(&self, value: &str) -> Option<String> {
        let name = || {
            let n = value.rsplit('/').next().unwrap_or(value);
            let n = if self.users.contains(n) { "*" } else { n };
            (!n.is_empty() && n.len() <= wire::MAX_FIELD).then(|| n.to_owned())
        };
        match self.mode {
            Location::None => None,
            Location::Name => name(),
            Location::Redacted => {
                let p = self.redact_path(value);
                if p.len() <= wire::MAX_FIELD {
                    Some(p)
                } else {
                    name()
                }
            }
        }
    }

    /// The location a sighting may report (see the module documentation for the rules).
    pub fn location(&self, observed: &Observed, what: &str) -> Option<String> {
        let digest = matches!(what, "md5" | "sha1" | "sha256");
        match observed {
            Observed::File(path) if digest => self.exact_location(path),
            Observed::Process(exe) if digest || what == "process-name" || what == "process-path" => {
                self.exact_location(exe)
            }
            // Globs, substrings, networks, compounds, connections, kinds this build does not
            // know: the matched value stays here.
            _ => None,
        }
    }

    /// One sighting as a report, for `set_version`.
    pub fn report(&self, s: &Sighting, set_version: u64) -> SightingReport {
        let observed = match s.observed {
            Observed::File(_) => ObservedKind::File,
            Observed::Process(_) => ObservedKind::Process,
            Observed::Connection(_) => ObservedKind::Connection,
        };
        let first = to_minute(s.first_seen.min(s.last_seen));
        SightingReport {
            indicator: s.indicator.clone(),
            what: s.what.clone(),
            observed,
            location: self.location(&s.observed, &s.what),
            first_seen: first,
            last_seen: to_minute(s.last_seen).max(first),
            count: s.count,
            set_version,
        }
    }

    /// The reports for `sightings`, one per (indicator, kind, observed, location): counts
    /// summed, first and last seen widened. Sorted by that key.
    pub fn outbound<'a>(
        &self,
        sightings: impl IntoIterator<Item = &'a Sighting>,
        set_version: u64,
    ) -> Vec<SightingReport> {
        type Key = (String, String, ObservedKind, Option<String>);
        let mut merged: BTreeMap<Key, SightingReport> = BTreeMap::new();
        for s in sightings {
            let r = self.report(s, set_version);
            let key = (
                r.indicator.clone(),
                r.what.clone(),
                r.observed,
                r.location.clone(),
            );
            match merged.get_mut(&key) {
                Some(m) => {
                    m.first_seen = m.first_seen.min(r.first_seen);
                    m.last_seen = m.last_seen.max(r.last_seen);
                    m.count = m.count.saturating_add(r.count);
                }
                None => {
                    merged.insert(key, r);
                }
            }
        }
        merged.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
alice:x:1000:1000:Alice Example,,,:/home/alice:/bin/bash
bob:x:1001:1001::/srv/users/bob:/bin/zsh
svc:x:1002:1002::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

    fn sighting(what: &str, observed: Observed) -> Sighting {
        Sighting {
            indicator: "indicator--1".into(),
            what: what.into(),
            observed,
            first_seen: 1_700_000_059,
            last_seen: 1_700_000_121,
            count: 3,
        }
    }

    #[test]
    fn home_and_runtime_directories_are_replaced() {
        let r = Redactor::new(Location::Redacted);
        for (path, want) in [
            (
                "/home/alice/Downloads/invoice.pdf.exe",
                "~/Downloads/invoice.pdf.exe",
            ),
            ("/home/alice", "~"),
            ("/home/alice/", "~/"),
            ("/root/.cache/x.bin", "~/.cache/x.bin"),
            ("/root", "~"),
            ("/rootkit/x", "/rootkit/x"),
            (
                "/Users/jdoe/Library/LaunchAgents/evil.plist",
                "~/Library/LaunchAgents/evil.plist",
            ),
            ("/var/home/carol/.local/bin/miner", "~/.local/bin/miner"),
            ("/run/user/1000/gvfs/dropper", "/run/user/*/gvfs/dropper"),
            ("/run/user/1000", "/run/user/*"),
            ("/run/users/1000/x", "/run/users/1000/x"),
            ("/usr/local/bin/xmrig", "/usr/local/bin/xmrig"),
            ("/tmp/.X11-unix/payload", "/tmp/.X11-unix/payload"),
            ("/home/", "/home/"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
    }

    #[test]
    fn accounts_from_passwd_hide_their_homes_and_names() {
        let r = Redactor::from_passwd(Location::Redacted, PASSWD);
        for (path, want) in [
            // A home outside /home, from passwd.
            ("/srv/users/bob/projects/run.sh", "~/projects/run.sh"),
            ("/srv/users/bobby/x", "/srv/users/bobby/x"),
            // A user name elsewhere in a path.
            ("/var/spool/cron/crontabs/alice", "/var/spool/cron/crontabs/*"),
            ("/tmp/alice/stage2", "/tmp/*/stage2"),
            ("/data/shares/bob/q3.xlsx.exe", "/data/shares/*/q3.xlsx.exe"),
            // System accounts are not people: their names stay.
            ("/var/www/html/shell.php", "/var/www/html/shell.php"),
            ("/home/alice/.ssh/authorized_keys", "~/.ssh/authorized_keys"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
        assert!(!r.users.contains("nobody") && !r.users.contains("root"));
    }

    #[test]
    fn a_file_found_by_digest_reports_its_location_as_configured() {
        let s = sighting(
            "sha256",
            Observed::File("/home/alice/Downloads/invoice.pdf.exe".into()),
        );
        for (mode, want) in [
            (Location::Redacted, Some("~/Downloads/invoice.pdf.exe")),
            (Location::Name, Some("invoice.pdf.exe")),
            (Location::None, None),
        ] {
            let r = Redactor::from_passwd(mode, PASSWD).report(&s, 7);
            assert_eq!(r.location.as_deref(), want, "{mode:?}");
            assert_eq!(r.observed, ObservedKind::File);
            assert_eq!((r.what.as_str(), r.count, r.set_version), ("sha256", 3, 7));
        }
        // A file named after its owner keeps no name either.
        let s = sighting("md5", Observed::File("/srv/drop/alice".into()));
        let r = Redactor::from_passwd(Location::Name, PASSWD).report(&s, 1);
        assert_eq!(r.location.as_deref(), Some("*"));
    }

    #[test]
    fn pattern_matches_never_send_the_local_value() {
        let red = Redactor::from_passwd(Location::Redacted, PASSWD);
        for (what, observed) in [
            (
                "file-name",
                Observed::File("/home/alice/Documents/salaries-2024.xlsx".into()),
            ),
            ("path-glob", Observed::File("/opt/app/uploads/cmd.jsp".into())),
            ("file-all", Observed::File("/opt/app/uploads/cmd.jsp".into())),
            ("command-line", Observed::Process("/usr/bin/python3".into())),
            ("process-all", Observed::Process("/usr/bin/curl".into())),
            ("remote-addr", Observed::Connection("203.0.113.77".into())),
            ("sha256", Observed::Connection("203.0.113.77".into())),
            ("a-kind-from-the-future", Observed::File("/etc/shadow".into())),
            ("a-kind-from-the-future", Observed::Process("/usr/bin/x".into())),
        ] {
            let r = red.report(&sighting(what, observed.clone()), 1);
            assert_eq!(r.location, None, "{what} on {observed:?}");
            let json = serde_json::to_string(&r.location).unwrap();
            assert!(!json.contains("alice") && !json.contains("203.0"), "{json}");
        }
    }

    #[test]
    fn processes_found_exactly_report_their_redacted_executable() {
        let red = Redactor::from_passwd(Location::Redacted, PASSWD);
        for (what, exe, want) in [
            ("sha256", "/home/alice/.local/bin/xmrig", "~/.local/bin/xmrig"),
            ("sha1", "/usr/bin/nc.traditional", "/usr/bin/nc.traditional"),
            ("process-name", "/tmp/kworkerds", "/tmp/kworkerds"),
            ("process-name", "kworkerds", "kworkerds"),
            ("process-path", "/run/user/1000/.x/agent", "/run/user/*/.x/agent"),
        ] {
            let r = red.report(&sighting(what, Observed::Process(exe.into())), 1);
            assert_eq!(r.observed, ObservedKind::Process);
            assert_eq!(r.location.as_deref(), Some(want), "{what} {exe}");
        }
        let r = Redactor::new(Location::Name).report(
            &sighting("process-path", Observed::Process("/home/alice/bin/x".into())),
            1,
        );
        assert_eq!(r.location.as_deref(), Some("x"));
    }

    #[test]
    fn times_are_rounded_down_to_the_minute() {
        assert_eq!(to_minute(1_700_000_059), 1_700_000_040);
        assert_eq!(to_minute(1_700_000_040), 1_700_000_040);
        assert_eq!(to_minute(-1), -60);
        let r = Redactor::new(Location::None).report(&sighting("sha256", Observed::File("/x".into())), 1);
        assert_eq!((r.first_seen, r.last_seen), (1_700_000_040, 1_700_000_100));
        assert_eq!(r.first_seen % 60, 0);
    }

    #[test]
    fn an_overlong_location_falls_back_to_the_name_then_to_none() {
        let deep = format!("/srv/{}/dropper.bin", "d/".repeat(600));
        let r = Redactor::new(Location::Redacted).report(&sighting("sha256", Observed::File(deep)), 1);
        assert_eq!(r.location.as_deref(), Some("dropper.bin"));
        let long_name = format!("/srv/{}", "n".repeat(wire::MAX_FIELD + 1));
        let r = Redactor::new(Location::Redacted).report(&sighting("sha256", Observed::File(long_name)), 1);
        assert_eq!(r.location, None);
        // What leaves always passes the collector's checks.
        let batch = wire::Batch {
            epoch: 1,
            seq: 1,
            items: vec![r],
        };
        wire::ClientMsg::Report(batch).check().unwrap();
    }

    #[test]
    fn reports_for_one_key_are_merged() {
        let red = Redactor::from_passwd(Location::Redacted, PASSWD);
        let mut a = sighting("file-name", Observed::File("/home/alice/a.lnk".into()));
        a.first_seen = 1_000;
        a.last_seen = 2_000;
        a.count = 2;
        let mut b = sighting("file-name", Observed::File("/home/bob/b.lnk".into()));
        b.first_seen = 500;
        b.last_seen = 1_500;
        b.count = 5;
        // The same file found by digest is another key: it reports a location.
        let c = sighting("sha256", Observed::File("/home/alice/a.lnk".into()));
        let out = red.outbound([&a, &b, &c], 4);
        assert_eq!(out.len(), 2, "{out:?}");
        let glob = out.iter().find(|r| r.what == "file-name").unwrap();
        assert_eq!(glob.location, None);
        assert_eq!(glob.count, 7);
        assert_eq!((glob.first_seen, glob.last_seen), (480, 1_980));
        let digest = out.iter().find(|r| r.what == "sha256").unwrap();
        assert_eq!(digest.location.as_deref(), Some("~/a.lnk"));
    }

    #[test]
    fn location_modes_parse() {
        for m in [Location::Redacted, Location::Name, Location::None] {
            assert_eq!(Location::parse(m.name()), Some(m));
        }
        assert_eq!(Location::parse("full"), None);
        assert_eq!(Location::default(), Location::Redacted);
    }
}
