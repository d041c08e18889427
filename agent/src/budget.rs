//! The CPU budget: background work keeps to a share of one core.
//!
//! [`Governor`] is a pure token bucket fed with the thread's CPU time and the wall time, both
//! passed in: CPU credit accrues at `share` seconds per wall second, up to a small burst, and
//! work that overdraws it is told how long to sleep. [`ThreadClock`] is the shell that reads the
//! calling thread's CPU time in nanoseconds from `/proc/thread-self/schedstat`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

/// Keeps work to `share` of one core.
#[derive(Debug, Clone)]
pub struct Governor {
    share: f64,
    burst_ns: f64,
    credit_ns: f64,
    last_cpu_ns: u64,
    last_wall_ns: u64,
}

impl Governor {
    /// A governor allowing `share` of one core (0 < share ≤ 1), with a burst of `burst` CPU
    /// time before pacing starts. `cpu_ns` and `wall_ns` are the current readings.
    pub fn new(share: f64, burst: Duration, cpu_ns: u64, wall_ns: u64) -> Governor {
        let share = share.clamp(0.001, 1.0);
        Governor {
            share,
            burst_ns: burst.as_nanos() as f64,
            credit_ns: burst.as_nanos() as f64,
            last_cpu_ns: cpu_ns,
            last_wall_ns: wall_ns,
        }
    }

    /// The share of one core this governor allows.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Accounts for the CPU used since the last call and returns how long to sleep to stay in
    /// budget (zero when within it).
    pub fn pace(&mut self, cpu_ns: u64, wall_ns: u64) -> Duration {
        let wall = wall_ns.saturating_sub(self.last_wall_ns) as f64;
        let cpu = cpu_ns.saturating_sub(self.last_cpu_ns) as f64;
        self.last_wall_ns = wall_ns;
        self.last_cpu_ns = cpu_ns;
        self.credit_ns = (self.credit_ns + wall * self.share - cpu).min(self.burst_ns);
        if self.credit_ns >= 0.0 {
            return Duration::ZERO;
        }
        // Sleeping `d` earns `d * share` of credit; sleep until the debt is paid. The sleep is
        // wall time that the next call accounts for.
        Duration::from_nanos((-self.credit_ns / self.share) as u64)
    }
}

/// Reads the calling thread's CPU time.
#[derive(Debug)]
pub struct ThreadClock {
    file: File,
    buf: Vec<u8>,
}

impl ThreadClock {
    /// Opens `/proc/thread-self/schedstat` for the calling thread. Use it from that thread only.
    pub fn open() -> io::Result<ThreadClock> {
        Ok(ThreadClock {
            file: File::open("/proc/thread-self/schedstat")?,
            buf: Vec::with_capacity(64),
        })
    }

    /// Nanoseconds of CPU this thread has used.
    pub fn cpu_ns(&mut self) -> io::Result<u64> {
        self.buf.clear();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut self.buf)?;
        parse_schedstat(&self.buf).ok_or_else(|| io::Error::other("unexpected /proc/thread-self/schedstat"))
    }
}

/// The first field of a schedstat line: time spent on the CPU, in nanoseconds.
pub fn parse_schedstat(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn within_budget_no_sleep() {
        let mut g = Governor::new(0.1, Duration::from_millis(50), 0, 0);
        // 10 ms of CPU over 100 ms of wall is exactly 10 %.
        assert_eq!(g.pace(10 * MS, 100 * MS), Duration::ZERO);
    }

    #[test]
    fn burst_then_pacing() {
        let mut g = Governor::new(0.1, Duration::from_millis(50), 0, 0);
        // 50 ms of CPU in 50 ms of wall: the burst (50) plus 5 ms of accrual covers 50; fine.
        assert_eq!(g.pace(50 * MS, 50 * MS), Duration::ZERO);
        // Another 50 ms of CPU straight away overdraws by 45 ms: sleep 450 ms.
        let sleep = g.pace(100 * MS, 50 * MS);
        assert_eq!(sleep, Duration::from_millis(450));
    }

    #[test]
    fn long_run_share_converges() {
        // Simulate a busy loop: 5 ms of CPU per step, sleeping what the governor says.
        let mut g = Governor::new(0.1, Duration::from_millis(20), 0, 0);
        let (mut cpu, mut wall) = (0u64, 0u64);
        for _ in 0..10_000 {
            cpu += 5 * MS;
            wall += 5 * MS;
            wall += g.pace(cpu, wall).as_nanos() as u64;
        }
        let share = cpu as f64 / wall as f64;
        assert!((0.099..=0.101).contains(&share), "share {share}");
    }

    #[test]
    fn schedstat_parses() {
        assert_eq!(parse_schedstat(b"123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(b""), None);
        let mut c = ThreadClock::open().unwrap();
        let a = c.cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(c.cpu_ns().unwrap() > a);
    }
}
