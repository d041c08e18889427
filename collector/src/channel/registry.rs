//! The live sessions of each agent, at most `max_sessions_per_agent` of them.
//!
//! A session is admitted once its agent is known ([`Registry::admit`]) and holds a [`Ticket`]
//! until it stops being live. When admitting a session would give its agent more than the cap,
//! the agent's oldest sessions are told to end ([`Ticket::replaced`] resolves for them): the
//! newest always wins, so an agent that restarted while its old session lingers (a NAT that
//! dropped the connection without a reset, say) is never locked out, and one agent's key cannot
//! hold more than its share of the collector's sessions.
//!
//! Invariant: an agent never has more than the cap of live tickets; a ticket leaves the
//! registry when it is replaced or dropped, whichever comes first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One agent's live sessions, oldest first: each one's number and what tells it to end.
type Sessions = VecDeque<(u64, Arc<Notify>)>;

/// The live sessions of every agent.
#[derive(Debug)]
pub struct Registry {
    max_per_agent: usize,
    next: AtomicU64,
    /// Per agent, its live sessions.
    live: Mutex<HashMap<String, Sessions>>,
}

/// One live session of an agent. Dropping it takes the session out of the registry.
#[derive(Debug)]
pub struct Ticket {
    registry: Arc<Registry>,
    agent: String,
    id: u64,
    replaced: Arc<Notify>,
}

impl Registry {
    /// An empty registry allowing `max_per_agent` live sessions per agent (at least one).
    pub fn new(max_per_agent: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_per_agent: max_per_agent.max(1),
            next: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a new session of `agent`. If the agent then has more than the cap, its oldest
    /// sessions are told to end and leave the registry at once.
    pub fn admit(self: &Arc<Self>, agent: &str) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let replaced = Arc::new(Notify::new());
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = live.entry(agent.to_owned()).or_default();
        sessions.push_back((id, replaced.clone()));
        while sessions.len() > self.max_per_agent {
            if let Some((_, oldest)) = sessions.pop_front() {
                // Stored if the session is not waiting yet: it ends as soon as it looks.
                oldest.notify_one();
            }
        }
        Ticket {
            registry: self.clone(),
            agent: agent.to_owned(),
            id,
            replaced,
        }
    }

    /// How many live sessions `agent` has.
    #[cfg(test)]
    fn live(&self, agent: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(agent).map_or(0, VecDeque::len)
    }
}

impl Ticket {
    /// Resolves when a newer session of the same agent replaced this one.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut live = self.registry.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sessions) = live.get_mut(&self.agent) {
            sessions.retain(|(id, _)| *id != self.id);
            if sessions.is_empty() {
                live.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `t` was replaced (looked at without waiting).
    async fn was_replaced(t: &Ticket) -> bool {
        tokio::time::timeout(Duration::ZERO, t.replaced()).await.is_ok()
    }

    #[tokio::test]
    async fn the_newest_sessions_stay_and_the_oldest_are_told_to_end() {
        let reg = Registry::new(2);
        let a1 = reg.admit("a");
        let a2 = reg.admit("a");
        let b1 = reg.admit("b");
        assert_eq!((reg.live("a"), reg.live("b")), (2, 1));
        assert!(!was_replaced(&a1).await && !was_replaced(&a2).await);
        // A third session of "a": the oldest goes, the other agent is untouched.
        let a3 = reg.admit("a");
        assert!(was_replaced(&a1).await);
        assert!(!was_replaced(&a2).await && !was_replaced(&a3).await && !was_replaced(&b1).await);
        assert_eq!(reg.live("a"), 2);
        // The replaced session leaving changes nothing for the others.
        drop(a1);
        assert_eq!(reg.live("a"), 2);
        let a4 = reg.admit("a");
        let a5 = reg.admit("a");
        assert!(was_replaced(&a2).await && was_replaced(&a3).await);
        assert!(!was_replaced(&a4).await && !was_replaced(&a5).await);
        // Sessions that end on their own make room without replacing anyone.
        drop((a4, a5, a2, a3));
        assert_eq!(reg.live("a"), 0);
        let a6 = reg.admit("a");
        assert!(!was_replaced(&a6).await);
        drop((a6, b1));
        assert!(
            reg.live.lock().unwrap().is_empty(),
            "agents without sessions are forgotten"
        );
    }
}
