//! The channel's database access, off the async workers.
//!
//! Writes go to one writer thread through a bounded queue ([`Job`]). The thread takes whatever
//! has queued up (up to [`MAX_GROUP`] jobs) and writes the batches, heartbeats and sightings
//! of many sessions in one transaction, each job under its own savepoint so that one failure
//! does not undo the others; it answers the sessions only after the commit. When the queue is
//! full, sessions wait to enqueue, and so stop reading from their agents: backpressure reaches
//! the agents rather than memory. Enrolment and certificate renewal, which run their own
//! transactions, go through the same thread one at a time; an enrolment reaches it only after
//! the session checked it read-only (`fleet::precheck`), so refused attempts never queue here.
//!
//! Reads (the agent behind a certificate, the revoked set, the current versions, set files) use
//! a small pool of read connections on tokio's blocking threads; SQLite's WAL lets them run
//! beside the writer.
//!
//! Invariant: a session hears `Ack` only for a batch whose transaction committed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use picket_proto::wire::{Batch, Enroll, Enrolled, ErrorCode, Heartbeat, Renewed, WireError};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::channel::alarms::Thresholds;
use crate::channel::unix_now;
use crate::fleet::EnrolFailure;
use crate::pki::Pki;
use crate::reports::{self, AlarmEvent, BatchOutcome, Intake};
use crate::store::Store;
use crate::CollectorError;

/// The most jobs written in one transaction.
pub const MAX_GROUP: usize = 512;
/// How long an agent is told to wait after the database failed.
pub const RETRY_AFTER_DB_FAILURE_MS: u64 = 5_000;

/// A write for the writer thread.
#[derive(Debug)]
pub enum Job {
    /// Store a sightings batch; the reply comes after the commit (`Err`: it failed).
    Report {
        /// The session's agent.
        agent: String,
        /// The batch.
        batch: Batch,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<BatchOutcome, ()>>,
    },
    /// Store a heartbeat.
    Heartbeat {
        /// The session's agent.
        agent: String,
        /// The heartbeat.
        heartbeat: Box<Heartbeat>,
    },
    /// A frame arrived from the agent.
    Seen {
        /// The session's agent.
        agent: String,
    },
    /// A session presented another machine hash.
    Clone {
        /// The session's agent.
        agent: String,
        /// The hash it presented.
        presented: [u8; 32],
    },
    /// Enrol with a token.
    Enroll {
        /// The request.
        request: Box<Enroll>,
        /// The session's nonce, which the proof signs.
        nonce: [u8; 32],
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Enrolled, WireError>>,
    },
    /// Issue a new certificate for the agent's key.
    Renew {
        /// The session's agent.
        agent: String,
        /// Its key (from its certificate).
        public_key: [u8; 32],
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Renewed, WireError>>,
    },
    /// Raise and clear the periodic alarms.
    CheckAlarms,
}

/// An `Internal` error frame after a database failure, without its details (they go to the
/// collector's log, not to agents).
pub fn internal(what: &str) -> WireError {
    WireError {
        code: ErrorCode::Internal,
        message: format!("the collector could not {what}; try again later"),
        retry_after_ms: Some(RETRY_AFTER_DB_FAILURE_MS),
    }
}

/// What the writer needs besides its store.
#[derive(Debug)]
pub struct WriterContext {
    /// The TLS material, to issue certificates.
    pub pki: Arc<Pki>,
    /// The lifetime of issued client certificates (seconds).
    pub cert_lifetime: u64,
    /// When agents count as quiet or lagging.
    pub thresholds: Thresholds,
    /// The channels this collector serves (an enrolment must name one).
    pub channels: Vec<String>,
    /// The limits sightings batches are stored under.
    pub intake: Intake,
}

/// Starts the writer thread over `store`. It ends when every sender of `jobs` is gone.
pub fn spawn_writer(
    store: Store,
    ctx: WriterContext,
    jobs: mpsc::Receiver<Job>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("picket-writer".into())
        .spawn(move || writer(store, ctx, jobs))
}

fn writer(mut store: Store, ctx: WriterContext, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let (grouped, solo): (Vec<Job>, Vec<Job>) = group.into_iter().partition(|j| {
            matches!(
                j,
                Job::Report { .. } | Job::Heartbeat { .. } | Job::Seen { .. } | Job::Clone { .. }
            )
        });
        if !grouped.is_empty() {
            write_group(&store, &ctx.intake, grouped);
        }
        for job in solo {
            run_solo(&mut store, &ctx, job);
        }
    }
}

/// One grouped job's result, held until the commit.
enum Done {
    Report(oneshot::Sender<Result<BatchOutcome, ()>>, BatchOutcome),
    Failed(oneshot::Sender<Result<BatchOutcome, ()>>),
    Nothing,
}

fn write_group(store: &Store, intake: &Intake, jobs: Vec<Job>) {
    let now = unix_now();
    let fail_all = |jobs: Vec<Job>, why: &dyn std::fmt::Display| {
        tracing::error!("channel: writing {} reports: {why}", jobs.len());
        for job in jobs {
            if let Job::Report { reply, .. } = job {
                let _ = reply.send(Err(()));
            }
        }
    };
    let tx = match Transaction::new_unchecked(store.conn(), TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(jobs, &(store.err())(e)),
    };
    let mut done = Vec::with_capacity(jobs.len());
    let mut events: Vec<AlarmEvent> = Vec::new();
    for job in jobs {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            tracing::error!("channel: {}", (store.err())(e));
        }
        let result = run_grouped(&tx, intake, job, now);
        match result {
            Ok((d, ev)) => {
                let _ = tx.execute_batch("RELEASE job");
                done.push(d);
                events.extend(ev);
            }
            Err((d, e)) => {
                let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
                tracing::error!("channel: {}", (store.err())(e));
                done.push(d);
            }
        }
    }
    if let Err(e) = tx.commit() {
        tracing::error!("channel: committing {} reports: {}", done.len(), (store.err())(e));
        for d in done {
            if let Done::Report(reply, _) | Done::Failed(reply) = d {
                let _ = reply.send(Err(()));
            }
        }
        return;
    }
    for d in done {
        match d {
            Done::Report(reply, outcome) => {
                let _ = reply.send(Ok(outcome));
            }
            Done::Failed(reply) => {
                let _ = reply.send(Err(()));
            }
            Done::Nothing => {}
        }
    }
    for e in events {
        tracing::info!(target: "picket_collector::alarm", "{}", e.line().trim_start_matches("picket-collector: "));
    }
}

type Grouped = Result<(Done, Vec<AlarmEvent>), (Done, rusqlite::Error)>;

fn run_grouped(conn: &Connection, intake: &Intake, job: Job, now: i64) -> Grouped {
    match job {
        Job::Report { agent, batch, reply } => match reports::record_batch(conn, &agent, &batch, now, intake)
        {
            Ok((outcome, events)) => Ok((Done::Report(reply, outcome), events)),
            Err(e) => Err((Done::Failed(reply), e)),
        },
        Job::Heartbeat { agent, heartbeat } => reports::record_heartbeat(conn, &agent, &heartbeat, now)
            .map(|ev| (Done::Nothing, ev))
            .map_err(|e| (Done::Nothing, e)),
        Job::Seen { agent } => reports::record_seen(conn, &agent, now)
            .map(|()| (Done::Nothing, Vec::new()))
            .map_err(|e| (Done::Nothing, e)),
        Job::Clone { agent, presented } => reports::record_clone(conn, &agent, &presented, now)
            .map(|ev| (Done::Nothing, ev))
            .map_err(|e| (Done::Nothing, e)),
        // Never grouped (see `writer`).
        Job::Enroll { .. } | Job::Renew { .. } | Job::CheckAlarms => Ok((Done::Nothing, Vec::new())),
    }
}

fn run_solo(store: &mut Store, ctx: &WriterContext, job: Job) {
    let now = unix_now();
    match job {
        Job::Enroll {
            request,
            nonce,
            reply,
        } => {
            let answer = crate::fleet::enrol_checked(
                store,
                &ctx.pki,
                &request,
                &nonce,
                now,
                ctx.cert_lifetime,
                &ctx.channels,
            )
            .map_err(|f| {
                if let EnrolFailure::Internal(e) = &f {
                    tracing::error!("channel: enrolment: {e}");
                }
                f.to_wire()
            });
            let _ = reply.send(answer);
        }
        Job::Renew {
            agent,
            public_key,
            reply,
        } => {
            let answer = crate::fleet::renew(store, &ctx.pki, &agent, &public_key, now, ctx.cert_lifetime)
                .map_err(|f| match f {
                    EnrolFailure::Refused(w) => w,
                    EnrolFailure::Internal(e) => {
                        tracing::error!("channel: renewing the certificate of {agent}: {e}");
                        internal("issue a certificate")
                    }
                });
            let _ = reply.send(answer);
        }
        Job::CheckAlarms => match store.check_alarms(now, &ctx.thresholds) {
            Ok(events) => {
                for e in events {
                    tracing::info!(target: "picket_collector::alarm", "{}", e.line().trim_start_matches("picket-collector: "));
                }
            }
            Err(e) => tracing::error!("channel: checking alarms: {e}"),
        },
        other => write_group(store, &ctx.intake, vec![other]),
    }
}

/// Read connections, lent to blocking tasks.
#[derive(Debug)]
pub struct Readers {
    db: PathBuf,
    idle: Mutex<Vec<Store>>,
}

/// Read connections kept open between uses.
const IDLE_READERS: usize = 8;

impl Readers {
    /// A pool over the database at `db`.
    pub fn new(db: PathBuf) -> Readers {
        Readers {
            db,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, CollectorError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, CollectorError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| CollectorError::Refused(format!("a database read was cancelled: {e}")))?
    }

    /// Runs `f` with a read connection on this thread.
    pub fn with<T>(&self, f: impl FnOnce(&Store) -> Result<T, CollectorError>) -> Result<T, CollectorError> {
        let lent = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let store = match lent {
            Some(s) => s,
            None => Store::open(&self.db)?,
        };
        let out = f(&store);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(store);
        }
        out
    }
}
