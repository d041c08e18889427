//! Set distribution: what a fetch is answered with, and the cache of built answers.
//!
//! [`plan`] is the decision, pure: an agent on the current version and timestamp is up to date;
//! on the current version with an older timestamp it gets a freshness-only file; behind by a
//! version a delta is kept from, it gets that delta; otherwise the full snapshot. Only the
//! kinds of file [`plan`] can name are built, and the bases it can name are the ones
//! [`Current::delta_bases`] lists, so the cache holds at most a handful of files per channel
//! whatever versions agents claim to have.
//!
//! Invariant: a built answer is one encoded frame, shared (`Arc<[u8]>`) by every session that
//! sends it: a thousand agents fetching the same version cost one build and one copy in memory,
//! and a slow reader holds a reference to it, never a copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use picket_proto::wire::{self, ErrorCode, ServerMsg, WireError, MAX_SERVER_FRAME};
use tokio::sync::OnceCell;

use crate::export::{Carry, Current};

/// The answer to a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to send: `UpToDate` with this version and no file.
    UpToDate(u64),
    /// A set file carrying this, at the current version.
    Send(Carry),
}

/// Decides the answer to a fetch from an agent holding set version `have` and timestamp
/// version `have_timestamp`, given the channel's `current` state (`None`: nothing published,
/// answered as up to date at version 0).
pub fn plan(current: Option<&Current>, have: Option<u64>, have_timestamp: Option<u64>) -> Plan {
    let Some(cur) = current else {
        return Plan::UpToDate(0);
    };
    match have {
        Some(v) if v == cur.version => {
            if have_timestamp.is_some_and(|t| t >= cur.timestamp_version) {
                Plan::UpToDate(cur.version)
            } else {
                Plan::Send(Carry::Installed)
            }
        }
        // Ahead of what this collector holds (its database was restored from a backup): never
        // push an agent backwards; verification would refuse it anyway.
        Some(v) if v > cur.version => Plan::UpToDate(cur.version),
        Some(v) if cur.delta_bases.contains(&v) => Plan::Send(Carry::Delta(v)),
        _ => Plan::Send(Carry::Full),
    }
}

/// The frame answering a fetch with a set file.
pub fn set_frame(version: u64, file: Vec<u8>) -> Result<Arc<[u8]>, WireError> {
    let frame = wire::encode_frame(&ServerMsg::Set { version, file });
    if frame.len() - 4 > MAX_SERVER_FRAME {
        return Err(WireError {
            code: ErrorCode::Internal,
            message: format!(
                "set version {version} makes a frame of {} bytes, over the protocol's cap of {MAX_SERVER_FRAME}",
                frame.len() - 4
            ),
            retry_after_ms: None,
        });
    }
    Ok(frame.into())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    channel: String,
    version: u64,
    timestamp_version: u64,
    carry: Carry,
}

type Slot = Arc<OnceCell<Arc<[u8]>>>;

/// Built set frames by (channel, version, timestamp version, what they carry). Concurrent
/// requests for one key wait for a single build.
#[derive(Debug, Default)]
pub struct FrameCache {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl FrameCache {
    /// The frame for `carry` at `at` on `channel`, built by `build` (on a blocking thread) if
    /// no session asked for it before.
    pub async fn get<F>(
        &self,
        channel: &str,
        at: &Current,
        carry: Carry,
        build: F,
    ) -> Result<Arc<[u8]>, WireError>
    where
        F: FnOnce() -> Result<Arc<[u8]>, WireError> + Send + 'static,
    {
        let key = Key {
            channel: channel.to_owned(),
            version: at.version,
            timestamp_version: at.timestamp_version,
            carry,
        };
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key).or_default().clone()
        };
        slot.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(build).await.map_err(|e| WireError {
                code: ErrorCode::Internal,
                message: format!("building the set file failed: {e}"),
                retry_after_ms: Some(1_000),
            })?
        })
        .await
        .cloned()
    }

    /// Forgets every frame of `channel` that is not at `current` (a newer version or timestamp
    /// was published, or nothing is).
    pub fn keep_only(&self, channel: &str, current: Option<&Current>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|k, _| {
            k.channel != channel
                || current
                    .is_some_and(|c| c.version == k.version && c.timestamp_version == k.timestamp_version)
        });
    }

    /// How many frames are held.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cur(version: u64, ts: u64, bases: &[u64]) -> Current {
        Current {
            version,
            timestamp_version: ts,
            delta_bases: bases.to_vec(),
        }
    }

    #[test]
    fn the_answer_depends_on_what_the_agent_has() {
        let c = cur(5, 9, &[3, 4]);
        for (have, have_ts, expected) in [
            (Some(5), Some(9), Plan::UpToDate(5)),
            (Some(5), Some(10), Plan::UpToDate(5)),
            (Some(5), Some(8), Plan::Send(Carry::Installed)),
            (Some(5), None, Plan::Send(Carry::Installed)),
            (Some(4), Some(8), Plan::Send(Carry::Delta(4))),
            (Some(3), None, Plan::Send(Carry::Delta(3))),
            (Some(2), Some(2), Plan::Send(Carry::Full)),
            (Some(0), None, Plan::Send(Carry::Full)),
            (None, None, Plan::Send(Carry::Full)),
            (None, Some(9), Plan::Send(Carry::Full)),
            (Some(6), Some(1), Plan::UpToDate(5)),
        ] {
            assert_eq!(plan(Some(&c), have, have_ts), expected, "{have:?} {have_ts:?}");
        }
        assert_eq!(plan(None, Some(3), None), Plan::UpToDate(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_fetches_of_one_version_build_once_and_share_the_bytes() {
        let cache = Arc::new(FrameCache::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let at = cur(2, 2, &[1]);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, builds, at) = (cache.clone(), builds.clone(), at.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get("default", &at, Carry::Full, move || {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        set_frame(2, vec![7; 1_000])
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut frames = Vec::new();
        for t in tasks {
            frames.push(t.await.unwrap());
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(frames.iter().all(|f| Arc::ptr_eq(f, &frames[0])));
        let msg: ServerMsg = wire::decode_body(&frames[0][4..]).unwrap();
        assert!(matches!(msg, ServerMsg::Set { version: 2, ref file } if file.len() == 1_000));
        // A failed build is not cached: the next request tries again.
        let err = cache
            .get("default", &at, Carry::Delta(1), || {
                Err(WireError {
                    code: ErrorCode::Internal,
                    message: "disk".into(),
                    retry_after_ms: None,
                })
            })
            .await
            .unwrap_err();
        assert_eq!(err.message, "disk");
        assert!(cache
            .get("default", &at, Carry::Delta(1), || set_frame(2, vec![1]))
            .await
            .is_ok());
        assert_eq!(cache.len(), 2);
        // A new version: the old frames go.
        cache.keep_only("other", None);
        assert_eq!(cache.len(), 2);
        cache.keep_only("default", Some(&cur(3, 3, &[])));
        assert!(cache.is_empty());
    }
}
