//! The watcher on a real directory with real inotify: what it reports, and what it must not.
//!
//! Every wait is on the event channel, bounded by a deadline. A negative ("this is not
//! reported") is checked against a marker written after the thing that must stay silent: the
//! kernel queues events in order and the watcher delivers a path no later than any path that
//! came after it, so once the marker is in, anything that would have been reported is in too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use picket_agent::watch::{Options, WatchEvent, Watcher};

const DEADLINE: Duration = Duration::from_secs(5);

fn options(exclude: Vec<PathBuf>) -> Options {
    Options {
        exclude,
        settle: Duration::from_millis(50),
        ..Options::default()
    }
}

/// Waits for `want` to be reported, returning every event received up to and including the
/// batch it came in.
fn expect_changed(rx: &Receiver<WatchEvent>, want: &Path) -> Vec<WatchEvent> {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                let hit = event == WatchEvent::Changed(want.to_owned());
                seen.push(event);
                if hit {
                    seen.extend(rx.try_iter());
                    return seen;
                }
            }
            Err(e) => panic!(
                "{} not reported within {DEADLINE:?} ({e}); got {seen:?}",
                want.display()
            ),
        }
    }
}

fn changed(events: &[WatchEvent], path: &Path) -> bool {
    events.contains(&WatchEvent::Changed(path.to_owned()))
}

fn root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reported paths are the root as given joined with names; canonical here so the test's
    // paths and the watcher's agree whatever TMPDIR is.
    let root = dir.path().canonicalize().expect("canonical");
    (dir, root)
}

#[test]
fn a_file_created_while_watching_is_reported() {
    let (_dir, root) = root();
    let (_watcher, rx) = Watcher::start(std::slice::from_ref(&root), &options(vec![])).expect("start");
    let file = root.join("new.bin");
    fs::write(&file, b"content").expect("write");
    expect_changed(&rx, &file);
}

#[test]
fn a_file_in_a_new_subdirectory_is_reported() {
    let (_dir, root) = root();
    let (_watcher, rx) = Watcher::start(std::slice::from_ref(&root), &options(vec![])).expect("start");
    // Created right after the directories, before the watcher can have seen them: the listing
    // of a new directory has to find it.
    let deep = root.join("a/b/c");
    fs::create_dir_all(&deep).expect("mkdir");
    let file = deep.join("dropped.exe");
    fs::write(&file, b"payload").expect("write");
    expect_changed(&rx, &file);

    // And the new directories are watched from then on.
    let later = deep.join("later.exe");
    fs::write(&later, b"more").expect("write");
    expect_changed(&rx, &later);
}

#[test]
fn a_file_moved_in_is_reported() {
    let (_dir, root) = root();
    let (_outside_dir, outside) = self::root();
    let (_watcher, rx) = Watcher::start(std::slice::from_ref(&root), &options(vec![])).expect("start");
    let staged = outside.join("staged");
    fs::write(&staged, b"content").expect("write");
    let file = root.join("moved-in");
    fs::rename(&staged, &file).expect("rename");
    expect_changed(&rx, &file);

    // A whole directory moved in: its files are reported.
    let tree = outside.join("tree");
    fs::create_dir_all(tree.join("sub")).expect("mkdir");
    fs::write(tree.join("sub/inner"), b"x").expect("write");
    fs::rename(&tree, root.join("tree")).expect("rename");
    expect_changed(&rx, &root.join("tree/sub/inner"));
}

#[test]
fn an_excluded_subtree_is_not_reported() {
    let (_dir, root) = root();
    let existing = root.join("cache");
    fs::create_dir(&existing).expect("mkdir");
    let later = root.join("later-excluded");
    let (_watcher, rx) = Watcher::start(
        std::slice::from_ref(&root),
        &options(vec![existing.clone(), later.clone()]),
    )
    .expect("start");

    fs::write(existing.join("inside"), b"x").expect("write");
    fs::create_dir_all(later.join("deep")).expect("mkdir");
    fs::write(later.join("deep/inside"), b"x").expect("write");
    let marker = root.join("marker");
    fs::write(&marker, b"x").expect("write");

    let events = expect_changed(&rx, &marker);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, WatchEvent::Changed(p) if p == &marker)),
        "{events:?}"
    );
}

#[test]
fn links_are_reported_as_paths_and_never_followed() {
    let (_dir, root) = root();
    let (_outside_dir, outside) = self::root();
    let link = root.join("link-to-outside");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let (_watcher, rx) = Watcher::start(std::slice::from_ref(&root), &options(vec![])).expect("start");

    // Writing through the link changes a file outside the roots: not reported.
    fs::write(link.join("through-link"), b"x").expect("write");
    // A new link is reported as itself.
    let new_link = root.join("new-link");
    std::os::unix::fs::symlink("/etc/passwd", &new_link).expect("symlink");
    let marker = root.join("marker");
    fs::write(&marker, b"x").expect("write");

    let mut events = expect_changed(&rx, &new_link);
    if !changed(&events, &marker) {
        events.extend(expect_changed(&rx, &marker));
    }
    let allowed = [WatchEvent::Changed(new_link), WatchEvent::Changed(marker)];
    assert!(events.iter().all(|e| allowed.contains(e)), "{events:?}");
}

#[test]
fn a_missing_root_is_an_error_that_names_it() {
    let (_dir, root) = root();
    let missing = root.join("missing");
    let err = Watcher::start(std::slice::from_ref(&missing), &Options::default()).expect_err("no root");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn dropping_the_watcher_ends_the_channel() {
    let (_dir, root) = root();
    let (watcher, rx) = Watcher::start(std::slice::from_ref(&root), &options(vec![])).expect("start");
    drop(watcher);
    // The worker has been joined: the sender is gone, so this returns at once.
    assert!(rx.recv_timeout(DEADLINE).is_err());
}
