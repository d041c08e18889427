//! Running the agent's background work at the lowest CPU and I/O priority, without `unsafe`.
//!
//! [`lower_current_thread`] does three things to the calling thread, and reads each back:
//!
//! 1. **CPU scheduling policy `SCHED_IDLE`**, through the `thread-priority` crate. An idle-policy
//!    thread runs with a scheduling weight below even nice 19's, so the scanner yields to every
//!    normal thread on a busy host; it still progresses (the weight is small, not zero).
//!    It is also how this module reaches the **idle I/O class**: a thread that never set an I/O
//!    priority of its own has one derived from its CPU scheduling, and the kernel derives
//!    `IOPRIO_CLASS_IDLE` for a `SCHED_IDLE` thread (`task_nice_ioclass` in
//!    `include/linux/ioprio.h`). The BFQ I/O scheduler (and CFQ before it) applies that class.
//! 2. **Nice 19**, through `rustix`'s `setpriority`: the lowest nice value. Under `SCHED_IDLE` it
//!    changes nothing for the CPU, but it is what applies if the policy could not be set, it is
//!    what `top` and `ps` show an operator, and it makes the best-effort I/O level (used when the
//!    class is best-effort) the lowest, 7.
//!
//! 3. **The idle I/O class, explicitly**, by running util-linux's `ionice -c 3 -p TID` once for
//!    the thread (and `ionice -p TID` to read it back). No safe Rust API calls `ioprio_set(2)`:
//!    neither `rustix` nor `nix` wraps it, the one dedicated crate (`ioprio` 0.2, 2021) pins
//!    `nix` 0.21, and `libc::syscall` is `unsafe`, which the workspace forbids; `ionice` is the
//!    same system call made by a program every Linux distribution ships. The explicit class
//!    matters for the `mq-deadline` I/O scheduler, which treats a derived class as best-effort.
//!    If `ionice` is missing or refuses, the derived class of step 1 still applies; this step is
//!    reported in [`Lowered::io_idle`] and never fails the call.
//!
//! With the `none` I/O scheduler (the default for NVMe and virtio disks) no I/O priority of any
//! kind has an effect; with `kyber` neither.
//!
//! **Threads.** On Linux the nice value, the scheduling policy and the I/O priority belong to each
//! thread, not to the process, and a new thread inherits its creator's. Call this at the start of
//! each background thread (the scanner, the hasher), or in `main` before any other thread
//! exists to lower the whole process. Don't call it on the thread that talks to the collector if
//! heartbeats must keep time on a saturated host.
//!
//! Failure is never fatal: an unprivileged agent can always lower its own priority, but a seccomp
//! filter or a container runtime may refuse. The caller logs the [`PriorityError`] and goes on.

use std::fmt;
use std::io;

/// What is in force for the calling thread after [`lower_current_thread`], as read back from the
/// kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lowered {
    /// The thread's nice value (19 once lowered), or `None` if it could not be read.
    pub nice: Option<i32>,
    /// Whether the thread runs under `SCHED_IDLE`, and so in the idle I/O class where the I/O
    /// scheduler derives classes (BFQ).
    pub idle_policy: bool,
    /// Whether the thread's I/O class is set explicitly to idle (through util-linux `ionice`,
    /// see the module documentation), which `mq-deadline` honours as well.
    pub io_idle: bool,
}

/// A step of [`lower_current_thread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Switching to the `SCHED_IDLE` scheduling policy.
    IdlePolicy,
    /// Setting nice 19.
    Nice,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::IdlePolicy => "switching to the SCHED_IDLE policy",
            Step::Nice => "setting nice 19",
        })
    }
}

/// A step of lowering the thread's priority failed. The other step was still tried; `applied`
/// says what is in force.
#[derive(Debug, thiserror::Error)]
#[error("lowering this thread's priority: {step}: {error}")]
pub struct PriorityError {
    /// The first step that failed.
    pub step: Step,
    /// Why.
    pub error: io::Error,
    /// What is in force now.
    pub applied: Lowered,
}

/// The nice value this module sets: the lowest.
const LOWEST_NICE: i32 = 19;

/// Puts the calling thread at the lowest CPU priority (`SCHED_IDLE`, nice 19) and, through the
/// policy, the idle I/O class. Both steps are tried; the result says what was applied, read back
/// from the kernel. See the module documentation for what this covers and what it does not.
pub fn lower_current_thread() -> Result<Lowered, PriorityError> {
    // The policy first: `thread-priority` resets the nice value to 0 when it switches policy
    // (harmlessly failing with EACCES if the nice value is already above 0), so nice comes after.
    let policy = set_idle_policy();
    let idle_policy = matches!(idle_policy_in_force(), Ok(true));
    // `None` is the calling thread on Linux, where `setpriority(PRIO_PROCESS, 0)` is per thread.
    let nice = rustix::process::setpriority_process(None, LOWEST_NICE).map_err(io::Error::from);
    let applied = Lowered {
        nice: rustix::process::getpriority_process(None).ok(),
        idle_policy,
        io_idle: set_idle_io_class(),
    };
    let failure = match (policy, nice) {
        _ if applied.idle_policy && applied.nice == Some(LOWEST_NICE) => None,
        (Err(error), _) if !applied.idle_policy => Some((Step::IdlePolicy, error)),
        (Ok(()), _) if !applied.idle_policy => Some((Step::IdlePolicy, unexpected("policy"))),
        (_, Err(error)) => Some((Step::Nice, error)),
        (_, Ok(())) => Some((Step::Nice, unexpected("nice value"))),
    };
    match failure {
        None => Ok(applied),
        Some((step, error)) => Err(PriorityError { step, error, applied }),
    }
}

/// Sets the calling thread's I/O class to idle with `ionice`, and reads it back.
fn set_idle_io_class() -> bool {
    let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
    else {
        return false;
    };
    let run = |args: &[&str]| std::process::Command::new("ionice").args(args).output().ok();
    if !run(&["-c", "3", "-p", &tid]).is_some_and(|o| o.status.success()) {
        return false;
    }
    run(&["-p", &tid]).is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
}

/// The error for a step the kernel accepted but that did not read back as set.
fn unexpected(what: &str) -> io::Error {
    io::Error::other(format!("the {what} read back is not the one set"))
}

#[cfg(target_os = "linux")]
fn set_idle_policy() -> io::Result<()> {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).map_err(to_io)
}

#[cfg(target_os = "linux")]
fn idle_policy_in_force() -> io::Result<bool> {
    use thread_priority::{thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    Ok(thread_schedule_policy().map_err(to_io)? == idle)
}

#[cfg(target_os = "linux")]
fn to_io(error: thread_priority::Error) -> io::Error {
    match error {
        thread_priority::Error::OS(errno) => io::Error::from_raw_os_error(errno),
        other => io::Error::other(other.to_string()),
    }
}

// Other systems have no SCHED_IDLE; nice 19 still applies. (Windows' equivalent, which lowers CPU,
// I/O and memory priority at once, is `THREAD_MODE_BACKGROUND_BEGIN`, also in `thread-priority`.)
#[cfg(not(target_os = "linux"))]
fn set_idle_policy() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no SCHED_IDLE on this system",
    ))
}

#[cfg(not(target_os = "linux"))]
fn idle_policy_in_force() -> io::Result<bool> {
    Ok(false)
}
