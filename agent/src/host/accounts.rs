//! The host's accounts and names, read for the redactor: the shell around the pure
//! [`crate::redact`] rules.
//!
//! Reads `/etc/passwd`, `/etc/hostname`, `/etc/hosts`, `/proc/sys/kernel/hostname` and the
//! home directories, and looks up a matched file's owner with `lstat`. What cannot be read is
//! left out: the built-in rules always apply.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::redact::{host_names, looks_like_domain, Location, Redactor};

/// The directories listed for home directories.
const HOME_DIRS: [&str; 2] = ["/home", "/var/home"];
/// Most user names taken from the home directories (a bound on the work and the memory).
const MAX_LISTED_USERS: usize = 100_000;

/// A redactor for this host: the built-in rules plus the accounts in `/etc/passwd`, the names
/// of the home directories, the host's names, and owners looked up with `lstat`.
pub fn redactor(mode: Location) -> Redactor {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut listed = BTreeSet::new();
    for dir in HOME_DIRS {
        home_dir_users(Path::new(dir), true, &mut listed);
    }
    Redactor::from_passwd(mode, &read("/etc/passwd"))
        .with_users(listed)
        .with_host_names(host_names(
            &read("/proc/sys/kernel/hostname"),
            &read("/etc/hostname"),
            &read("/etc/hosts"),
        ))
        .with_owner_lookup(lstat_owner)
}

fn lstat_owner(path: &str) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

/// User names from the home directories under `parent`: every directory that root does not
/// own is a user's home, named after the user; in a root-owned directory whose name looks like
/// a domain, the same one level down. Symbolic links are not followed.
fn home_dir_users(parent: &Path, descend: bool, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= MAX_LISTED_USERS {
            return;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || name == "lost+found" {
            continue;
        }
        // `DirEntry::metadata` does not follow a symbolic link.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() {
            continue;
        }
        if meta.uid() != 0 {
            out.insert(name);
        } else if descend && looks_like_domain(&name) {
            home_dir_users(&entry.path(), false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::GENERIC_HOSTS;

    #[test]
    fn the_host_redactor_reads_this_hosts_names_and_homes() {
        let r = redactor(Location::Redacted);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let name = kernel.trim().to_ascii_lowercase();
        if !GENERIC_HOSTS.contains(&name.as_str()) && !name.is_empty() {
            assert_eq!(r.redact_path(&format!("/srv/{name}/x")), "/srv/<host>/x");
        }
        // Every directory under /home that root does not own is a user's.
        for e in std::fs::read_dir("/home").into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            let n = e.file_name().into_string().unwrap();
            if m.is_dir() && m.uid() != 0 && !n.starts_with('.') && n != "lost+found" {
                assert_eq!(
                    r.redact_path(&format!("/srv/{n}/x")),
                    "/srv/<user>/x",
                    "{n} is not a known user"
                );
            }
        }
    }
}
