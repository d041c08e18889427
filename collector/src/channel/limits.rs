//! Rate and count limits: per-agent token buckets on messages and on bytes, and per-source
//! caps on connections that have not authenticated.
//!
//! One budget per agent, shared by all of that agent's sessions, so that opening more sessions
//! buys no more throughput. A frame that finds the budget short is refused (the session answers
//! `RateLimited` with the wait, [`Budget::charge`]) and costs nothing; the session stops
//! reading for that wait, so a flood fills only the flooder's own TCP buffers, and a client that
//! waits as told finds its next frame accepted. Telling a flooder from a client that waits is
//! the session's job (a frame already queued when the wait ends was sent without waiting). The
//! same buckets, keyed by source address ([`source_key`]), pace enrolment attempts.
//!
//! Before a connection authenticates, nothing names an agent, so its source address is all
//! there is to count by: [`SourceSlots`] caps how many such connections one address holds at
//! once, and each [`SourceSlot`] gives its place back when dropped.
//!
//! Invariant: the buckets never read the clock; the time is an argument (a monotonic offset),
//! so the arithmetic is tested exactly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits every agent gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub messages_per_second: f64,
    /// Messages in a burst (the bucket's size).
    pub message_burst: f64,
    /// Bytes per second, sustained (frame headers included).
    pub bytes_per_second: f64,
    /// Bytes in a burst. A frame larger than this is charged as this much, so every frame
    /// under the protocol's cap can pass.
    pub byte_burst: f64,
}

impl RateLimit {
    /// A limit on messages alone (`per_second` sustained, `burst` at once), for attempts that
    /// are counted, not sized: charge them with a length of 0.
    pub fn messages_only(per_second: f64, burst: f64) -> RateLimit {
        RateLimit {
            messages_per_second: per_second,
            message_burst: burst,
            bytes_per_second: 1.0,
            byte_burst: 1.0,
        }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Duration) -> Bucket {
        Bucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            at: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// How long until `cost` tokens are there.
    fn wait(&self, cost: f64) -> Duration {
        let short = cost - self.tokens;
        if short <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(short / self.rate)
        }
    }
}

/// An agent's budget: a message bucket and a byte bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    messages: Bucket,
    bytes: Bucket,
}

impl Budget {
    /// A full budget at `now`.
    pub fn new(limit: &RateLimit, now: Duration) -> Budget {
        Budget {
            messages: Bucket::new(limit.messages_per_second, limit.message_burst, now),
            bytes: Bucket::new(limit.bytes_per_second, limit.byte_burst, now),
        }
    }

    /// Charges one frame of `len` bytes at `now` if the budget has room for it; otherwise
    /// nothing is taken and the error is how long until a frame of this size fits.
    pub fn charge(&mut self, len: u64, now: Duration) -> Result<(), Duration> {
        let wait = self.wait(len, now);
        if wait > Duration::ZERO {
            return Err(wait);
        }
        self.messages.tokens -= 1.0;
        self.bytes.tokens -= self.cost(len);
        Ok(())
    }

    /// How long until a frame of `len` bytes fits (zero: it fits now), taking nothing.
    pub fn wait(&mut self, len: u64, now: Duration) -> Duration {
        self.messages.refill(now);
        self.bytes.refill(now);
        self.messages.wait(1.0).max(self.bytes.wait(self.cost(len)))
    }

    fn cost(&self, len: u64) -> f64 {
        (len as f64).min(self.bytes.burst)
    }

    /// Whether both buckets are full at `now`: such a budget is the same as a new one, so it
    /// can be forgotten.
    pub fn is_full(&mut self, now: Duration) -> bool {
        self.messages.refill(now);
        self.bytes.refill(now);
        self.messages.tokens >= self.messages.burst && self.bytes.tokens >= self.bytes.burst
    }
}

/// The budgets of every agent with a live session or a budget still refilling.
#[derive(Debug)]
pub struct Budgets {
    limit: RateLimit,
    by_agent: Mutex<HashMap<String, Arc<Mutex<Budget>>>>,
}

impl Budgets {
    /// No budgets yet; each agent starts with a full one.
    pub fn new(limit: RateLimit) -> Budgets {
        Budgets {
            limit,
            by_agent: Mutex::new(HashMap::new()),
        }
    }

    /// The budget of `agent`, shared with its other sessions.
    pub fn of(&self, agent: &str, now: Duration) -> Arc<Mutex<Budget>> {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(agent.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Budget::new(&self.limit, now))))
            .clone()
    }

    /// Forgets the budgets no session holds that have refilled completely (nothing is lost:
    /// a full budget is what a new one would be). Returns how many remain.
    pub fn prune(&self, now: Duration) -> usize {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, b| {
            Arc::strong_count(b) > 1 || !b.lock().unwrap_or_else(|p| p.into_inner()).is_full(now)
        });
        map.len()
    }
}

/// The address a connection from `ip` is counted under: an IPv4 address as it is (an
/// IPv4-mapped IPv6 address counts as that IPv4 address), an IPv6 address by its /64, since one
/// host or site usually holds a whole /64 and could otherwise pick a new address per connection.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How many unauthenticated connections each source address holds, capped.
#[derive(Debug)]
pub struct SourceSlots {
    cap: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among its source address's: given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    slots: Arc<SourceSlots>,
    key: IpAddr,
}

impl SourceSlots {
    /// At most `cap` places per source address.
    pub fn new(cap: usize) -> Arc<SourceSlots> {
        Arc::new(SourceSlots {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `ip`, or `None` when its address holds `cap` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            key,
        })
    }

    /// How many places the address of `ip` holds.
    pub fn held(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Addresses that hold nothing are forgotten: the map stays as small as the
                // connections in flight.
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        messages_per_second: 10.0,
        message_burst: 5.0,
        bytes_per_second: 1_000.0,
        byte_burst: 2_000.0,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut b = Budget::new(&LIMIT, ms(0));
        for _ in 0..5 {
            assert_eq!(b.charge(10, ms(0)), Ok(()));
        }
        // The sixth frame is refused: 100 ms until one message fits again (10 a second).
        assert_eq!(b.charge(10, ms(0)), Err(ms(100)));
        // Refusals cost nothing: asking again later finds the shorter wait.
        assert_eq!(b.charge(10, ms(60)), Err(ms(40)));
        // A sender that waits as told gets through, once.
        assert_eq!(b.charge(10, ms(100)), Ok(()));
        assert!(b.charge(10, ms(100)).is_err());
    }

    #[test]
    fn a_flood_gets_the_sustained_rate_and_no_more() {
        let mut b = Budget::new(&LIMIT, ms(0));
        let mut passed = 0;
        // 1 000 frames a second for two seconds.
        for i in 0..2_000 {
            if b.charge(10, ms(i)).is_ok() {
                passed += 1;
            }
        }
        // The burst, then 10 a second.
        assert!((24..=26).contains(&passed), "{passed}");
    }

    #[test]
    fn bytes_are_limited_too_and_a_large_frame_can_pass() {
        let mut b = Budget::new(&LIMIT, ms(0));
        // A frame larger than the byte burst is charged as the burst.
        assert_eq!(b.charge(1 << 20, ms(0)), Ok(()));
        // 1 000 bytes at 1 000 bytes a second.
        assert_eq!(b.charge(1_000, ms(0)), Err(ms(1_000)));
        assert_eq!(b.wait(1_000, ms(1_000)), Duration::ZERO);
        assert_eq!(b.charge(1_000, ms(1_000)), Ok(()));
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_a_dropped_slot_is_given_back() {
        let slots = SourceSlots::new(2);
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        let one = slots.take(a).unwrap();
        let two = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "a third from the same address");
        // The same address written as IPv4-mapped IPv6 is the same source.
        assert!(slots.take("::ffff:192.0.2.7".parse().unwrap()).is_none());
        // Another address has its own places.
        let other = slots.take(b).unwrap();
        assert_eq!((slots.held(a), slots.held(b)), (2, 1));
        drop(one);
        assert_eq!(slots.held(a), 1);
        let _three = slots.take(a).unwrap();
        drop((two, other));
        assert_eq!(slots.held(b), 0);
        assert_eq!(
            slots.held.lock().unwrap().len(),
            1,
            "empty addresses are forgotten"
        );
    }

    #[test]
    fn an_ipv6_source_counts_by_its_64() {
        let slots = SourceSlots::new(1);
        let _held = slots.take("2001:db8:1:2:aaaa::1".parse().unwrap()).unwrap();
        // Another address in the same /64: the same source.
        assert!(slots.take("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        // The next /64 over is another.
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn attempts_are_paced_by_count_alone() {
        // Ten a second in bursts of twenty: enrolment attempts from one address.
        let mut b = Budget::new(&RateLimit::messages_only(10.0, 20.0), ms(0));
        for _ in 0..20 {
            assert_eq!(b.charge(0, ms(0)), Ok(()));
        }
        assert_eq!(b.charge(0, ms(0)), Err(ms(100)));
        assert_eq!(b.charge(0, ms(100)), Ok(()));
    }

    #[test]
    fn budgets_are_shared_per_agent_and_full_idle_ones_are_forgotten() {
        let budgets = Budgets::new(LIMIT);
        let a1 = budgets.of("a", ms(0));
        let a2 = budgets.of("a", ms(0));
        for _ in 0..5 {
            a1.lock().unwrap().charge(10, ms(0)).unwrap();
        }
        // The second session of the same agent shares the empty budget.
        assert!(a2.lock().unwrap().charge(10, ms(0)).is_err());
        // Another agent has its own.
        assert!(budgets.of("b", ms(0)).lock().unwrap().charge(10, ms(0)).is_ok());
        drop((a1, a2));
        // Neither has refilled yet.
        assert_eq!(budgets.prune(ms(50)), 2);
        // "b" is full again by 100 ms and forgotten; "a" is still refilling, so reconnecting
        // does not give it a new burst.
        assert_eq!(budgets.prune(ms(150)), 1);
        assert_eq!(budgets.prune(ms(1_000)), 0);
    }
}
