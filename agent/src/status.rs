//! What the daemon tells the operator about itself: the live link's state ([`LinkStatus`],
//! shared between the link thread and the daemon) and `DIR/status.json` ([`StatusReport`]),
//! which `picket-agent status` reads.
//!
//! The daemon rewrites `status.json` every few seconds and whenever something in it changes, by
//! renaming a complete temporary file over it, so a reader sees the old report or the new one,
//! never half of one. It is not fsynced: it is advice rewritten seconds later, and a report
//! older than [`STALE_AFTER`] seconds means the daemon is no longer running. It holds nothing a
//! local user could not learn from the state directory already, and no secret.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::{self, Durability};
use crate::AgentError;

/// The status file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";
/// A report older than this (seconds) was written by a daemon that has stopped.
pub const STALE_AFTER: i64 = 60;
/// The largest status file read back; a real one is far below it.
const STATUS_CAP: u64 = 64 << 10;

/// The link's state, updated by the link thread and read by the daemon for `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A session with the collector is up now.
    pub connected: bool,
    /// When the collector last answered (unix seconds).
    pub last_contact: Option<i64>,
    /// The last failure (connecting, a refused message, an error frame), for the operator.
    pub last_error: Option<String>,
    /// The collector's address (`HOST:PORT`).
    pub collector: Option<String>,
}

/// The installed set as the daemon holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatus {
    /// The channel.
    pub channel: String,
    /// The set version.
    pub version: u64,
    /// When the publisher made it (unix seconds).
    pub created: i64,
    /// Whether root, manifest and timestamp are all within their lifetimes.
    pub fresh: bool,
    /// The earliest expiry among them (unix seconds): when a fresh set goes stale, or when a
    /// stale one went stale.
    pub expires: i64,
    /// Which of them expires (or expired) first: `timestamp`, `manifest` or `root`.
    pub expiring: String,
}

/// The last complete full scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStatus {
    /// When it finished (unix seconds).
    pub finished: i64,
    /// Files looked at.
    pub files: u64,
    /// Files read and hashed.
    pub hashed: u64,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// The sightings spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// Batches waiting for the collector's acknowledgement.
    pub depth: u64,
    /// Sightings dropped because the spool was full.
    pub dropped: u64,
    /// The spool epoch (hex).
    pub epoch: String,
    /// The last sequence number used in that epoch.
    pub last_seq: u64,
}

/// The collector link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// The configuration has a `[collector]` section (the agent was enrolled).
    pub enrolled: bool,
    /// The collector's address.
    pub address: Option<String>,
    /// A session is up now.
    pub connected: bool,
    /// When the collector last answered (unix seconds).
    pub last_contact: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the daemon wrote this (unix seconds).
    pub written: i64,
    /// The daemon's process id.
    pub pid: u32,
    /// The agent's software version.
    pub agent_version: String,
    /// The daemon stopped cleanly after writing this (the last report it wrote).
    pub stopped: bool,
    /// The set in force (`None`: an enrolled agent waiting for its first set).
    pub set: Option<SetStatus>,
    /// The last complete full scan, if one finished since the daemon started.
    pub last_scan: Option<ScanStatus>,
    /// Sightings recorded on this host.
    pub sightings: u64,
    /// The spool.
    pub spool: SpoolStatus,
    /// Why the installed set is not in force (it could not be loaded: over the memory limit,
    /// damaged), or why a new one was not loaded; `None` when the installed set is in force.
    #[serde(default)]
    pub set_error: Option<String>,
    /// The collector link.
    pub collector: CollectorStatus,
}

impl StatusReport {
    /// Seconds between `written` and `now` (never negative).
    pub fn age(&self, now: i64) -> i64 {
        now.saturating_sub(self.written).max(0)
    }

    /// Whether the daemon that wrote this is still running, judged by the report's age.
    pub fn is_current(&self, now: i64) -> bool {
        self.age(now) <= STALE_AFTER
    }
}

/// Writes `report` to `DIR/status.json` (0600) by renaming a complete temporary file over it
/// (not fsynced: see the module documentation).
pub fn write(dir: &Path, report: &StatusReport) -> Result<(), AgentError> {
    // Invariant: a struct of strings, integers and options always serialises.
    let mut text = serde_json::to_vec_pretty(report).expect("a status report serialises");
    text.push(b'\n');
    store::write_file(dir, STATUS_FILE, &text, Durability::Renamed)
}

/// Reads `DIR/status.json`: `Ok(None)` when there is none (no daemon ever ran here), an error
/// naming the file when it cannot be read or parsed.
pub fn read(dir: &Path) -> Result<Option<StatusReport>, String> {
    let path = dir.join(STATUS_FILE);
    let bytes = match store::read_capped(&path, STATUS_CAP) {
        Ok(b) => b,
        Err(AgentError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::fs;

    use super::*;

    fn report(written: i64) -> StatusReport {
        StatusReport {
            written,
            pid: 42,
            agent_version: "0.1.0".into(),
            stopped: false,
            set: Some(SetStatus {
                channel: "default".into(),
                version: 3,
                created: written - 100,
                fresh: true,
                expires: written + 3600,
                expiring: "timestamp".into(),
            }),
            last_scan: Some(ScanStatus {
                finished: written - 5,
                files: 10,
                hashed: 2,
                millis: 30,
            }),
            sightings: 1,
            spool: SpoolStatus {
                depth: 1,
                dropped: 0,
                epoch: "00000000000000ff".into(),
                last_seq: 1,
            },
            set_error: None,
            collector: CollectorStatus {
                enrolled: false,
                address: None,
                connected: false,
                last_contact: None,
                last_error: None,
            },
        }
    }

    #[test]
    fn a_written_report_reads_back_and_ages() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let r = report(1_000_000);
        write(dir.path(), &r).unwrap();
        let back = read(dir.path()).unwrap().unwrap();
        assert_eq!(back, r);
        assert!(back.is_current(1_000_000 + STALE_AFTER));
        assert!(!back.is_current(1_000_000 + STALE_AFTER + 1));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATUS_FILE]);
    }

    #[test]
    fn a_damaged_report_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATUS_FILE), b"{\"written\": 1").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.contains("status.json"), "{err}");
    }
}
