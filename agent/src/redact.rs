//! What leaves the host: a local [`Sighting`] turned into the [`SightingReport`] the collector
//! receives.
//!
//! Architecture invariant: **nothing leaves the agent that this module did not produce.** The
//! spool holds only its output, and `picket-agent sightings --outbound` prints exactly that
//! (the same function, over the same table, with the host's accounts and names read again).
//!
//! The rules, in order:
//! - A connection never sends the remote address: the indicator says which one it was.
//! - A match whose local value could be anything the indicator's pattern allows (a file-name
//!   glob, a path glob, a command-line substring, a network, or a compound that may hold one of
//!   them) sends no location at all: the local path, command line or address that matched never
//!   leaves. Exact and glob file-name indicators share one kind (`file-name`) on the wire, so both
//!   send none: an unknown kind fails closed the same way.
//! - A file found by its digest sends its location as `[sightings] location` says: `redacted`
//!   (the default) applies the path rules below; `name` keeps the file name alone (a name that
//!   is a user name becomes `<user>`, the host's names in it become `<host>`); `none` sends
//!   nothing.
//! - A process found by an exact executable digest, name or path sends its executable path, by
//!   the same rule.
//! - Times are rounded down to the minute, so a report cannot be lined up with one exact event
//!   in another log.
//! - A location longer than the wire allows ([`wire::MAX_FIELD`]) falls back to the file name,
//!   then to none.
//!
//! The path rules of `redacted`:
//! - **Homes become `~`.** A home directory of an account in `/etc/passwd` (uid 1000 and up),
//!   `/root`, and under `/home/`, `/Users/` and `/var/home/` the first segment (whatever its
//!   name: an account this host does not list is still a person). The first *two* segments are
//!   the home when the first is not a known user and either looks like a domain directory
//!   (sssd's `/home/<domain>/<user>` layout: it holds an upper-case letter or a dot) or a later
//!   segment is a known user: `/home/CORP/jsmith/Downloads/x` becomes `~/Downloads/x`.
//! - **Per-user mount and runtime directories keep their place, not their owner:**
//!   `/media/<user>/…` and `/run/media/<user>/…` (removable media) become `/media/<user>/…`,
//!   `/run/media/<user>/…`, and `/run/user/<uid>/…` becomes `/run/user/<uid>/…`, literally, for
//!   any name or number there.
//! - **User names become `<user>`** wherever they are in a path, in any case, not only after a
//!   home parent: as a whole segment (`/tmp/alice/stage2` becomes `/tmp/<user>/stage2`) or inside
//!   one (`~/Downloads/alice-invoice.exe` becomes `~/Downloads/<user>-invoice.exe`; a name shorter
//!   than three characters only as a whole segment, like host names). A name inside another word
//!   goes too (`ann` in `annual.pdf`): over-redaction costs a guess, a kept name can identify a
//!   person. The user names known are: the
//!   accounts of `/etc/passwd` with uid 1000 and up (except `nobody`); the names of the home
//!   directories on this host (every directory under `/home` and `/var/home` that root does not
//!   own, and in a root-owned directory there that looks like a domain, its subdirectories that
//!   root does not own); and, for one report, the owner of the matched file or executable when
//!   `/etc/passwd` names its uid (any account but root and `nobody`).
//! - **The host's own names become `<host>`**, as a whole segment or inside one, in any case:
//!   the kernel's host name, `/etc/hostname`, their short forms (up to the first dot), and every
//!   name `/etc/hosts` gives the host on the same line as one of those (the FQDN and aliases);
//!   `localhost` and its kin are not the host's names. A name shorter than three characters is
//!   replaced only as a whole segment (inside words it would garble every path and say nothing).
//!
//! What the rules do **not** catch: a user name when the account is neither in `/etc/passwd`
//! nor the owner of a home directory here nor of the matched file (a directory user who never
//! logged in here, a colleague's name in a share path); a home directory outside the parents
//! above whose account is not in `/etc/passwd`; another host's name (a backup of `db02` on
//! this host); the organisation's domain when it is not part of this host's name; and anything
//! else personal in a file or directory name (a customer's name, a project). On hosts whose
//! users come from LDAP or Active Directory, local rules cannot know every user: `location =
//! "name"` (the file name alone, with the same user and host replacements) or `location =
//! "none"` is the choice there. The owner is looked up when a report is made, so `--outbound`,
//! run later, can differ from what was sent for a file deleted (or given to another owner)
//! since: its owner's name is then replaced only if another rule knows it.
//!
//! Reports are aggregated per (indicator, kind, observed, location): several files that match
//! one glob on one host are one report (their counts summed, first and last seen widened), so
//! the collector can keep the latest report for that key instead of adding counts up. Every
//! report carries the host's running totals for its key, never an increment.
//!
//! Everything here is pure: the accounts, host names and home directories come in as
//! arguments ([`Redactor::from_passwd`], [`Redactor::with_users`],
//! [`Redactor::with_host_names`] and [`host_names`], [`Redactor::with_owner_lookup`]). The
//! shell that reads them from this host (`/etc/passwd`, `/etc/hostname`, `/etc/hosts`,
//! `/proc/sys/kernel/hostname`, the home directories, owners by `lstat`) is
//! `crate::host::accounts::redactor`.

use std::collections::{BTreeMap, BTreeSet};

use picket_proto::wire::{self, ObservedKind, SightingReport};

use crate::sightings::{Observed, Sighting};

/// How much of a location leaves the host (`[sightings] location`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Location {
    /// The path with home directories, user names and host names replaced (the default).
    #[default]
    Redacted,
    /// The file name alone (user and host names replaced).
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

/// What a user name becomes.
pub const USER: &str = "<user>";
/// What the uid of `/run/user/<uid>` becomes.
pub const UID: &str = "<uid>";
/// What one of the host's names becomes.
pub const HOST: &str = "<host>";

/// Finds the uid owning a path (without following a last symbolic link), or `None`.
pub type OwnerLookup = fn(&str) -> Option<u32>;

fn no_owner(_: &str) -> Option<u32> {
    None
}

/// Turns local sightings into the reports that leave the host.
#[derive(Debug, Clone)]
pub struct Redactor {
    mode: Location,
    /// Home directories of human accounts, without a trailing slash, longest first.
    homes: Vec<String>,
    /// User names known (see the module documentation).
    users: BTreeSet<String>,
    /// Every account of `/etc/passwd` but root and `nobody`, by uid: the owner of a matched file
    /// is one of them.
    accounts: BTreeMap<u32, String>,
    /// The host's names, lower-case, longest first.
    hosts: Vec<String>,
    /// How the owner of a matched file is found.
    owner_of: OwnerLookup,
}

/// Home directory prefixes whose next segment is a user name (or a domain, then a user name).
const HOME_PARENTS: [&str; 3] = ["/home/", "/Users/", "/var/home/"];
/// Directories whose next segment is a user name: removable media mounted for a user.
const USER_PARENTS: [&str; 2] = ["/media/", "/run/media/"];
/// The directory whose next segment is a uid: a user's runtime directory.
const UID_PARENT: &str = "/run/user/";
/// Names that are nobody's host in particular.
pub(crate) const GENERIC_HOSTS: [&str; 10] = [
    "localhost",
    "localhost.localdomain",
    "localhost4",
    "localhost4.localdomain4",
    "localhost6",
    "localhost6.localdomain6",
    "ip6-localhost",
    "ip6-loopback",
    "localdomain",
    "(none)",
];
/// A host name shorter than this is replaced only where it is a whole segment.
const MIN_HOST_INSIDE: usize = 3;

/// Whether a directory name under a home parent looks like a domain (sssd's
/// `/home/<domain>/<user>`): an upper-case letter or a dot.
pub(crate) fn looks_like_domain(name: &str) -> bool {
    name.contains('.') || name.chars().any(|c| c.is_ascii_uppercase())
}

/// The first segment of `s` (up to a `/`) and the rest (from that `/`, or empty).
fn split_segment(s: &str) -> (&str, &str) {
    let end = s.find('/').unwrap_or(s.len());
    s.split_at(end)
}

/// The host's names from the kernel's host name, the text of `/etc/hostname` and the text of
/// `/etc/hosts`: each name given, its short form (up to the first dot), and every name on a
/// line of `/etc/hosts` that also names one of them (by short form), lower-case, longest first,
/// without `localhost` and its kin.
pub fn host_names(kernel_hostname: &str, etc_hostname: &str, etc_hosts: &str) -> Vec<String> {
    fn add(names: &mut BTreeSet<String>, name: &str) {
        let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let usable = |n: &str| {
            !n.is_empty()
                && !GENERIC_HOSTS.contains(&n)
                && !n.contains(['/', '#'])
                && !n.chars().any(char::is_whitespace)
                && n.parse::<std::net::IpAddr>().is_err()
        };
        if !usable(&n) {
            return;
        }
        if let Some((short, _)) = n.split_once('.') {
            if usable(short) {
                names.insert(short.to_owned());
            }
        }
        names.insert(n);
    }
    fn short(n: &str) -> String {
        n.split('.').next().unwrap_or(n).to_ascii_lowercase()
    }
    let mut names = BTreeSet::new();
    add(&mut names, kernel_hostname);
    if let Some(line) = etc_hostname
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
    {
        add(&mut names, line);
    }
    let shorts: BTreeSet<String> = names.iter().map(|n| short(n)).collect();
    for line in etc_hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let aliases: Vec<&str> = line.split_whitespace().skip(1).collect();
        if aliases.iter().any(|a| shorts.contains(&short(a))) {
            for a in aliases {
                add(&mut names, a);
            }
        }
    }
    let mut out: Vec<String> = names.into_iter().collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    out
}

impl Redactor {
    /// A redactor with the built-in rules and no accounts or host names of its own.
    pub fn new(mode: Location) -> Redactor {
        Redactor {
            mode,
            homes: Vec::new(),
            users: BTreeSet::new(),
            accounts: BTreeMap::new(),
            hosts: Vec::new(),
            owner_of: no_owner,
        }
    }

    /// A redactor that also knows the accounts in `passwd` (the text of `/etc/passwd`): the
    /// human ones (uid 1000 and above except `nobody`, 65534) have their home directories
    /// become `~` and their names `<user>` as path segments; every account but root and
    /// `nobody` can be the owner of a matched file (see [`Redactor::with_owner_lookup`]).
    pub fn from_passwd(mode: Location, passwd: &str) -> Redactor {
        let mut r = Redactor::new(mode);
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                continue;
            }
            let Ok(uid) = f[2].parse::<u32>() else { continue };
            if uid == 0 || uid == 65534 || f[0].is_empty() {
                continue;
            }
            r.accounts.entry(uid).or_insert_with(|| f[0].to_owned());
            if uid < 1000 {
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

    /// Adds user names known otherwise (the names of the home directories on this host).
    pub fn with_users<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Redactor {
        for n in names {
            let n = n.as_ref();
            if !n.is_empty() && !n.contains('/') {
                self.users.insert(n.to_owned());
            }
        }
        self
    }

    /// Sets the host's names (see [`host_names`]), replaced by `<host>`.
    pub fn with_host_names<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Redactor {
        let mut hosts: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().to_ascii_lowercase())
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .collect();
        hosts.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        hosts.dedup();
        self.hosts = hosts;
        self
    }

    /// Sets how the owner (uid) of a matched file or executable is found; when `/etc/passwd`
    /// names that uid, the owner's name is a user name for that report.
    pub fn with_owner_lookup(mut self, lookup: OwnerLookup) -> Redactor {
        self.owner_of = lookup;
        self
    }

    /// The mode in force.
    pub fn mode(&self) -> Location {
        self.mode
    }

    /// `path` with home directories, per-user directories, user names and host names replaced
    /// (the owner of the file is not looked up: see [`Redactor::location`]).
    pub fn redact_path(&self, path: &str) -> String {
        self.redact_with(path, None)
    }

    fn is_user(&self, segment: &str, owner: Option<&str>) -> bool {
        !segment.is_empty() && (owner == Some(segment) || self.users.contains(segment))
    }

    fn redact_with(&self, path: &str, owner: Option<&str>) -> String {
        let (prefix, body) = match self.strip_home(path, owner) {
            Some(rest) => ("~", rest),
            None => ("", path),
        };
        // An absolute `body` splits into an empty first segment, then the names.
        let mut segments: Vec<String> = body.split('/').map(str::to_owned).collect();
        // `/media/<user>`, `/run/media/<user>`, `/run/user/<uid>`: the segment after the parent
        // (its index in `segments` is the parent's number of slashes).
        let (at, marker) = match USER_PARENTS
            .iter()
            .find(|p| prefix.is_empty() && body.starts_with(*p))
        {
            Some(p) => (p.matches('/').count(), USER),
            None if prefix.is_empty() && body.starts_with(UID_PARENT) => {
                (UID_PARENT.matches('/').count(), UID)
            }
            None => (usize::MAX, USER),
        };
        for (i, s) in segments.iter_mut().enumerate() {
            if i == at && !s.is_empty() {
                *s = marker.to_owned();
            } else {
                *s = self.hide_names(s, owner);
            }
        }
        format!("{prefix}{}", segments.join("/"))
    }

    /// `segment` with each user name and each of the host's names in it (any case) replaced by
    /// `<user>` and `<host>`: names of [`MIN_HOST_INSIDE`] characters or more wherever they
    /// occur (`jsmith-notes.txt` becomes `<user>-notes.txt`), shorter ones only as the whole
    /// segment. One left-to-right pass, longest name first at each position, so a replacement
    /// is never matched again. A user name inside a longer word is replaced too (`ann` in
    /// `annual.pdf`): a garbled file name costs an analyst a guess, a kept one can name a
    /// person.
    fn hide_names(&self, segment: &str, owner: Option<&str>) -> String {
        if self.is_user(segment, owner) || self.users_ci(segment, owner) {
            return USER.to_owned();
        }
        if self.hosts.iter().any(|h| segment.eq_ignore_ascii_case(h)) {
            return HOST.to_owned();
        }
        let mut names: Vec<(&str, &str)> = self
            .hosts
            .iter()
            .map(|h| (h.as_str(), HOST))
            .chain(self.users.iter().map(|u| (u.as_str(), USER)))
            .chain(owner.map(|o| (o, USER)))
            .filter(|(n, _)| n.len() >= MIN_HOST_INSIDE)
            .collect();
        names.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        let bytes = segment.as_bytes();
        let mut out = String::with_capacity(segment.len());
        let mut i = 0;
        'scan: while i < segment.len() {
            for (name, marker) in &names {
                let end = i + name.len();
                if end <= bytes.len()
                    && bytes[i..end].eq_ignore_ascii_case(name.as_bytes())
                    && segment.is_char_boundary(end)
                {
                    out.push_str(marker);
                    i = end;
                    continue 'scan;
                }
            }
            let Some(c) = segment[i..].chars().next() else {
                break;
            };
            out.push(c);
            i += c.len_utf8();
        }
        out
    }

    /// Whether `segment` is a user name in another case (`JSmith` for `jsmith`).
    fn users_ci(&self, segment: &str, owner: Option<&str>) -> bool {
        !segment.is_empty()
            && (owner.is_some_and(|o| o.eq_ignore_ascii_case(segment))
                || self.users.iter().any(|u| u.eq_ignore_ascii_case(segment)))
    }

    /// The part of `path` after a home directory (starting with `/`, or empty when `path` is the
    /// home itself), or `None` when `path` is not in one.
    fn strip_home<'p>(&self, path: &'p str, owner: Option<&str>) -> Option<&'p str> {
        let within = |home: &str| {
            path.strip_prefix(home)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if let Some(rest) = self.homes.iter().find_map(|h| within(h)) {
            return Some(rest);
        }
        if let Some(rest) = within("/root") {
            return Some(rest);
        }
        for parent in HOME_PARENTS {
            let Some(after) = path.strip_prefix(parent) else {
                continue;
            };
            let (first, rest) = split_segment(after);
            if first.is_empty() {
                continue;
            }
            if self.is_user(first, owner) {
                return Some(rest);
            }
            // `/home/<domain>/<user>`, or a group directory holding a known user's.
            let later_user = rest.split('/').any(|s| self.is_user(s, owner));
            if looks_like_domain(first) || later_user {
                let (second, rest2) = split_segment(rest.strip_prefix('/').unwrap_or(""));
                if !second.is_empty() {
                    return Some(rest2);
                }
            }
            return Some(rest);
        }
        None
    }

    /// The name of the account owning `path`, when it is absolute and `/etc/passwd` names the
    /// uid.
    fn owner(&self, path: &str) -> Option<&str> {
        if !path.starts_with('/') {
            return None;
        }
        let uid = (self.owner_of)(path)?;
        self.accounts.get(&uid).map(String::as_str)
    }

    /// The location a report carries for a value the indicator matched exactly, as the mode
    /// says, or `None` when it would not fit the wire.
    fn exact_location(&self, value: &str) -> Option<String> {
        let owner = match self.mode {
            Location::None => return None,
            _ => self.owner(value),
        };
        let name = || {
            let n = value.rsplit('/').next().unwrap_or(value);
            let n = self.hide_names(n, owner);
            (!n.is_empty() && n.len() <= wire::MAX_FIELD).then_some(n)
        };
        match self.mode {
            Location::None => None,
            Location::Name => name(),
            Location::Redacted => {
                let p = self.redact_with(value, owner);
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
            ("/run/user/1000/gvfs/dropper", "/run/user/<uid>/gvfs/dropper"),
            ("/run/user/1000", "/run/user/<uid>"),
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
            // Not bob's home; his name inside another word still goes (over-redaction is safe).
            ("/srv/users/bobby/x", "/srv/users/<user>by/x"),
            // A user name elsewhere in a path.
            (
                "/var/spool/cron/crontabs/alice",
                "/var/spool/cron/crontabs/<user>",
            ),
            ("/tmp/alice/stage2", "/tmp/<user>/stage2"),
            ("/data/shares/bob/q3.xlsx.exe", "/data/shares/<user>/q3.xlsx.exe"),
            // System accounts are not people: their names stay.
            ("/var/www/html/shell.php", "/var/www/html/shell.php"),
            ("/home/alice/.ssh/authorized_keys", "~/.ssh/authorized_keys"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
        assert!(!r.users.contains("nobody") && !r.users.contains("root"));
        // Service accounts are known only as owners of a matched file.
        assert!(!r.users.contains("www-data") && r.accounts.get(&33).map(String::as_str) == Some("www-data"));
        assert!(!r.accounts.contains_key(&0) && !r.accounts.contains_key(&65534));
    }

    /// The security review's examples (a directory user `jsmith` that `/etc/passwd` does not
    /// list, on host `web01.corp.example`), and the rules that catch them.
    #[test]
    fn review_examples_leak_no_user_or_host_name() {
        let hosts = host_names(
            "web01\n",
            "web01\n",
            "127.0.0.1 localhost\n127.0.1.1 web01.corp.example web01\n",
        );
        let r = Redactor::from_passwd(Location::Redacted, PASSWD).with_host_names(&hosts);
        for (path, want) in [
            // sssd's /home/<domain>/<user>: two segments are the home.
            ("/home/CORP/jsmith/Downloads/evil.exe", "~/Downloads/evil.exe"),
            ("/home/corp.example.com/jsmith/evil.exe", "~/evil.exe"),
            // Removable media mounted for a user: the user's segment goes, the place stays.
            ("/media/jsmith/USB/evil.exe", "/media/<user>/USB/evil.exe"),
            ("/run/media/jsmith/USB/evil.exe", "/run/media/<user>/USB/evil.exe"),
            // The host's own names, as a segment or inside one, in any case.
            (
                "/srv/backup/web01.corp.example/db.sql",
                "/srv/backup/<host>/db.sql",
            ),
            ("/srv/backup/WEB01/db.sql", "/srv/backup/<host>/db.sql"),
            ("/var/log/web01-access.log.1", "/var/log/<host>-access.log.1"),
            ("/srv/web01.corp.example-2024.tar/x", "/srv/<host>-2024.tar/x"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
        // A directory user whose home is on this host is known by its name everywhere.
        let r = r.with_users(["jsmith"]);
        assert_eq!(r.redact_path("/tmp/jsmith/stage2"), "/tmp/<user>/stage2");
        assert_eq!(
            r.redact_path("/home/CORP/jsmith/.cache/jsmith/x"),
            "~/.cache/<user>/x"
        );
        // A group directory holding a known user's: both segments are the home.
        assert_eq!(r.redact_path("/home/staff/jsmith/x.bin"), "~/x.bin");
    }

    #[test]
    fn home_parents_strip_one_segment_unless_it_looks_like_a_domain() {
        let r = Redactor::from_passwd(Location::Redacted, PASSWD).with_users(["dave"]);
        for (path, want) in [
            // A known user first: one segment, whatever follows.
            ("/home/alice/CORP/x", "~/CORP/x"),
            ("/home/dave/Projects/x", "~/Projects/x"),
            // An unknown first segment, not domain-like, and no known user after: one segment.
            ("/home/erin/Documents/x", "~/Documents/x"),
            // Domain-like (upper case or a dot): two segments, when there are two.
            ("/home/CORP", "~"),
            ("/home/CORP/", "~/"),
            ("/home/CORP/erin", "~"),
            ("/var/home/ad.example/erin/.bashrc", "~/.bashrc"),
            // A known user later on: two segments, and the user's name goes too.
            ("/home/team/dave/x", "~/x"),
            ("/home/team/proj/dave/x", "~/<user>/x"),
            ("/homes/alice/x", "/homes/<user>/x"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
    }

    #[test]
    fn user_names_go_wherever_they_are_in_a_path_in_any_case() {
        let r = Redactor::from_passwd(Location::Redacted, PASSWD);
        for (path, want) in [
            ("/srv/alice", "/srv/<user>"),
            ("/srv/alice/bob/x", "/srv/<user>/<user>/x"),
            ("/run/user/1001/bob/x", "/run/user/<uid>/<user>/x"),
            // Inside a segment, in any case.
            ("/srv/alice-notes.txt", "/srv/<user>-notes.txt"),
            ("/srv/Alice/x", "/srv/<user>/x"),
            ("/srv/backup_ALICE_bob.tar", "/srv/backup_<user>_<user>.tar"),
            (
                "/home/alice/Downloads/alice-invoice.exe",
                "~/Downloads/<user>-invoice.exe",
            ),
            ("/media/", "/media/"),
            ("relative/alice", "relative/<user>"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
    }

    proptest::proptest! {
        /// A user name or host name of three characters or more never survives redaction,
        /// wherever it sits in a path and in whatever case (the privacy canaries of the
        /// end-to-end test, in the small).
        #[test]
        fn known_names_never_survive_anywhere_in_a_path(
            user in "[a-z][a-z0-9]{2,11}",
            host in "[a-z][a-z0-9-]{2,11}",
            pre in "[A-Za-z0-9._-]{0,6}",
            post in "[A-Za-z0-9._-]{0,6}",
            upper in proptest::bool::ANY,
            depth in 0usize..3,
        ) {
            // A name inside a marker (`user`, `host`, `uid`) is not one a path could leak.
            proptest::prop_assume!(!["<user>", "<host>", "<uid>"].iter().any(|m| m.contains(user.as_str()) || m.contains(host.as_str())));
            let r = Redactor::new(Location::Redacted).with_users([&user]).with_host_names([&host]);
            let name = |n: &str| if upper { n.to_ascii_uppercase() } else { n.to_owned() };
            let mut path = String::from("/srv");
            for _ in 0..depth {
                path.push_str(&format!("/{pre}{}{post}", name(&user)));
            }
            path.push_str(&format!("/{pre}{}{post}/{}-{}.txt", name(&host), name(&user), name(&host)));
            let out = r.redact_path(&path).to_ascii_lowercase();
            proptest::prop_assert!(!out.contains(&user), "{path} -> {out}");
            proptest::prop_assert!(!out.contains(&host), "{path} -> {out}");
        }
    }

    #[test]
    fn host_names_come_from_the_kernel_hostname_and_hosts_files() {
        assert_eq!(
            host_names(
                "web01\n",
                "# set by cloud-init\nweb01.corp.example\n",
                "127.0.0.1\tlocalhost localhost.localdomain\n\
                 ::1 ip6-localhost ip6-loopback\n\
                 10.0.0.5 web01.corp.example web01 w01 # the host itself\n\
                 10.0.0.6 db02.corp.example db02\n",
            ),
            ["web01.corp.example", "web01", "w01"]
        );
        // Only the kernel's name, in a container.
        assert_eq!(host_names("3f2a9c1b7d4e\n", "", ""), ["3f2a9c1b7d4e"]);
        // Nothing that names no host in particular.
        assert!(host_names("localhost\n", "localhost.localdomain\n", "127.0.0.1 localhost\n").is_empty());
        assert!(host_names("(none)", "", "").is_empty());
        assert!(host_names("", "", "10.0.0.1 10.0.0.1\n").is_empty());
    }

    #[test]
    fn short_host_names_go_only_as_whole_segments() {
        let r = Redactor::new(Location::Redacted).with_host_names(["vm", "db1"]);
        for (path, want) in [
            ("/srv/vm/x", "/srv/<host>/x"),
            ("/srv/VM/x", "/srv/<host>/x"),
            ("/srv/vmlinuz", "/srv/vmlinuz"),
            ("/srv/db1-dump.sql", "/srv/<host>-dump.sql"),
            ("/srv/xdb1db1y", "/srv/x<host><host>y"),
        ] {
            assert_eq!(r.redact_path(path), want, "{path}");
        }
        // A host named like the marker's text is not matched inside a marker.
        let r = Redactor::new(Location::Redacted).with_host_names(["host", "myhost"]);
        assert_eq!(r.redact_path("/srv/myhost/host.log"), "/srv/<host>/<host>.log");
    }

    #[test]
    fn the_owner_of_the_matched_file_is_a_user_for_its_report() {
        // An account below uid 1000 (an old layout, a service account): known only as the
        // owner of the file matched.
        fn owned_by_www_data(path: &str) -> Option<u32> {
            path.starts_with("/srv/www-data/").then_some(33)
        }
        fn owned_by_root(_: &str) -> Option<u32> {
            Some(0)
        }
        let r = Redactor::from_passwd(Location::Redacted, PASSWD).with_owner_lookup(owned_by_www_data);
        let s = sighting("sha256", Observed::File("/srv/www-data/up/www-data".into()));
        assert_eq!(r.report(&s, 1).location.as_deref(), Some("/srv/<user>/up/<user>"));
        // Another file (another owner) keeps the name, and so does a path redacted without a
        // report.
        let s = sighting("sha256", Observed::File("/srv/other/www-data".into()));
        assert_eq!(r.report(&s, 1).location.as_deref(), Some("/srv/other/www-data"));
        assert_eq!(r.redact_path("/srv/www-data/up/x"), "/srv/www-data/up/x");
        // `name` mode: the file name that is its owner's name goes too.
        let r = Redactor::from_passwd(Location::Name, PASSWD).with_owner_lookup(owned_by_www_data);
        let s = sighting("sha1", Observed::File("/srv/www-data/www-data".into()));
        assert_eq!(r.report(&s, 1).location.as_deref(), Some("<user>"));
        // Root is nobody's name to hide.
        let r = Redactor::from_passwd(Location::Redacted, PASSWD).with_owner_lookup(owned_by_root);
        let s = sighting("sha256", Observed::File("/var/spool/cron/crontabs/root".into()));
        assert_eq!(
            r.report(&s, 1).location.as_deref(),
            Some("/var/spool/cron/crontabs/root")
        );
    }

    #[test]
    fn name_mode_replaces_user_and_host_names_in_the_file_name() {
        let r = Redactor::from_passwd(Location::Name, PASSWD).with_host_names(["web01"]);
        for (path, want) in [
            ("/srv/backup/web01-db.sql", Some("<host>-db.sql")),
            ("/home/CORP/jsmith/alice", Some("<user>")),
            ("/home/CORP/jsmith/evil.exe", Some("evil.exe")),
        ] {
            let s = sighting("sha256", Observed::File(path.into()));
            assert_eq!(r.report(&s, 1).location.as_deref(), want, "{path}");
        }
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
        assert_eq!(r.location.as_deref(), Some("<user>"));
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
            (
                "process-path",
                "/run/user/1000/.x/agent",
                "/run/user/<uid>/.x/agent",
            ),
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
