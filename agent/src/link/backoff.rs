//! Reconnect delays and poll jitter, as pure functions of an attempt count and a random number.
//!
//! Exponential backoff with **full jitter**: after the n-th failure in a row the agent sleeps a
//! uniformly random time in `[0, min(cap, base * 2^n)]`. When a collector restarts, its agents
//! lost their sessions at the same instant; full jitter spreads their returns over the whole
//! window instead of bunching them at its end, so the restart causes no stampede. Randomness is
//! an argument, so tests check the bounds and the spread without a clock or an OS generator.

use std::time::Duration;

/// The first reconnect window.
pub const BASE: Duration = Duration::from_secs(1);
/// The largest reconnect window.
pub const CAP: Duration = Duration::from_secs(300);
/// A session that lasted this long resets the backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(60);

/// The reconnect window after `attempt` failures in a row: `min(cap, base * 2^attempt)`.
pub fn window(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// A uniformly random delay in `[0, window]`, millisecond resolution, from `random`.
pub fn full_jitter(window: Duration, random: u64) -> Duration {
    let ms = window.as_millis().min(u128::from(u64::MAX - 1)) as u64;
    Duration::from_millis(random % (ms + 1))
}

/// `interval` moved by up to ±`percent` % at random (the poll timer: agents that started
/// together do not poll together).
pub fn spread(interval: Duration, percent: u64, random: u64) -> Duration {
    let ms = interval.as_millis().min(u128::from(u64::MAX / 256)) as u64;
    let width = ms * percent.min(100) / 100;
    let offset = random % (2 * width + 1);
    Duration::from_millis(ms - width + offset)
}

/// A wait the collector asked for (`retry_after_ms` of an error frame), or `default` when it
/// named none, never longer than [`CAP`]: a collector cannot park the link for longer than the
/// backoff's own longest wait, whatever number it sends.
pub fn server_wait(retry_after_ms: Option<u64>, default: Duration) -> Duration {
    retry_after_ms.map_or(default, Duration::from_millis).min(CAP)
}

/// The collector's clock minus the agent's, in seconds, without overflow whatever time the
/// collector claims.
pub fn clock_skew(collector_now: i64, local_now: i64) -> i64 {
    collector_now.saturating_sub(local_now)
}

/// A random u64 from the OS generator.
pub fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The OS generator failing leaves zeros: the delay is then the shortest, which is safe.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// Failures in a row and the delays they earn.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never waiting longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delay after one more failure, drawn with `random`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let d = full_jitter(window(self.base, self.cap, self.attempt), random);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Jumps to the largest window (after a revocation: nothing will change soon).
    pub fn to_cap(&mut self) {
        self.attempt = 31;
    }

    /// Forgets past failures (after a session that lasted).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures counted so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) standing in for the OS one.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn windows_double_up_to_the_cap() {
        for (attempt, want) in [
            (0, 1),
            (1, 2),
            (2, 4),
            (8, 256),
            (9, 300),
            (40, 300),
            (u32::MAX, 300),
        ] {
            assert_eq!(
                window(BASE, CAP, attempt),
                Duration::from_secs(want),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn delays_stay_within_zero_and_the_window() {
        let mut r = rng(0x9e37_79b9_7f4a_7c15);
        let mut b = Backoff::new(BASE, CAP);
        for attempt in 0..50u32 {
            let w = window(BASE, CAP, attempt);
            let d = b.next_delay(r());
            assert!(d <= w, "attempt {attempt}: {d:?} > {w:?}");
        }
        assert_eq!(full_jitter(Duration::from_secs(2), 0), Duration::ZERO);
        assert_eq!(full_jitter(Duration::from_secs(2), 2_000), Duration::from_secs(2));
        assert_eq!(full_jitter(Duration::from_secs(2), 2_001), Duration::ZERO);
        b.reset();
        assert_eq!(b.attempt(), 0);
        b.to_cap();
        assert!(window(BASE, CAP, b.attempt()) == CAP);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        // 10 000 agents reconnecting at the 5th failure (a 32 s window): every tenth of the
        // window gets close to a tenth of them, and no second holds a crowd.
        let mut r = rng(42);
        let w = window(BASE, CAP, 5);
        let mut deciles = [0u32; 10];
        let mut per_second = [0u32; 33];
        for _ in 0..10_000 {
            let d = full_jitter(w, r());
            deciles[((d.as_millis() * 10 / (w.as_millis() + 1)) as usize).min(9)] += 1;
            per_second[d.as_secs() as usize] += 1;
        }
        for (i, n) in deciles.iter().enumerate() {
            assert!(
                (850..=1150).contains(n),
                "decile {i} holds {n} of 10000: {deciles:?}"
            );
        }
        assert!(per_second.iter().all(|&n| n < 450), "{per_second:?}");
    }

    #[test]
    fn a_wait_the_collector_asks_for_is_capped_at_five_minutes() {
        let one = Duration::from_secs(1);
        for (asked, want) in [
            (None, one),
            (Some(0), Duration::ZERO),
            (Some(2_500), Duration::from_millis(2_500)),
            (Some(300_000), CAP),
            (Some(300_001), CAP),
            (Some(86_400_000), CAP),
            (Some(u64::MAX), CAP),
        ] {
            assert_eq!(server_wait(asked, one), want, "{asked:?}");
        }
        assert_eq!(server_wait(None, Duration::MAX), CAP);
    }

    #[test]
    fn clock_skew_never_overflows() {
        for (collector, local, want) in [
            (1_700_000_100, 1_700_000_000, 100),
            (1_700_000_000, 1_700_000_100, -100),
            (i64::MAX, -1, i64::MAX),
            (i64::MIN, 1, i64::MIN),
            (i64::MIN, i64::MAX, i64::MIN),
            (i64::MAX, i64::MIN, i64::MAX),
        ] {
            assert_eq!(clock_skew(collector, local), want, "{collector} - {local}");
        }
    }

    #[test]
    fn poll_spread_is_within_twenty_percent_both_ways() {
        let mut r = rng(7);
        let five_min = Duration::from_secs(300);
        let (mut lo, mut hi) = (five_min, five_min);
        for _ in 0..5_000 {
            let d = spread(five_min, 20, r());
            assert!(
                d >= Duration::from_secs(240) && d <= Duration::from_secs(360),
                "{d:?}"
            );
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(
            lo < Duration::from_secs(245) && hi > Duration::from_secs(355),
            "{lo:?}..{hi:?}"
        );
        assert_eq!(spread(Duration::ZERO, 20, 99), Duration::ZERO);
    }
}
