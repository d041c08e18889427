//! Failed logins per peer, so that a client without a password cannot make the server run
//! PBKDF2 (100 000 iterations a try) as often as it likes. Pure: the clock is an argument.
//!
//! Every attempt that will run PBKDF2 is counted as a failure from the moment it begins (so a
//! burst of concurrent attempts cannot slip past the count) and forgiven when it succeeds.
//! Once a peer has [`Failures::max`] failures within the window, its next attempts are refused
//! until the oldest leaves the window; the refusal says how long that is (`Retry-After`).
//!
//! Invariant: a peer is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64),
//! and the table holds at most `capacity` peers, so memory is bounded whatever the number of
//! addresses an attacker has.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Failed attempts per peer within a sliding window.
#[derive(Debug)]
pub struct Failures {
    max: usize,
    window: Duration,
    capacity: usize,
    peers: HashMap<IpAddr, VecDeque<Instant>>,
}

/// The peer an address counts as: the address itself for IPv4 (also when mapped into IPv6),
/// its /64 for IPv6.
pub fn peer_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Failures {
    /// At most `max` failures per peer within `window`, for at most `capacity` peers.
    pub fn new(max: usize, window: Duration, capacity: usize) -> Failures {
        Failures {
            max: max.max(1),
            window,
            capacity: capacity.max(1),
            peers: HashMap::new(),
        }
    }

    /// The most failures a peer may have within the window.
    pub fn max(&self) -> usize {
        self.max
    }

    /// An attempt from `ip` at `now` is about to run PBKDF2: `Ok` counts it as a failure until
    /// [`Failures::forgive`] takes it back; `Err` carries how long the peer must wait, and
    /// nothing is counted.
    pub fn begin(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let peer = peer_of(ip);
        let window = self.window;
        if let Some(times) = self.peers.get_mut(&peer) {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            if times.len() >= self.max {
                let oldest = times.front().copied().unwrap_or(now);
                let wait = window.saturating_sub(now.saturating_duration_since(oldest));
                return Err(wait.max(Duration::from_secs(1)));
            }
        } else if self.peers.len() >= self.capacity {
            self.make_room(now);
        }
        self.peers.entry(peer).or_default().push_back(now);
        Ok(())
    }

    /// The attempt `begin` counted for `ip` succeeded: it is not a failure.
    pub fn forgive(&mut self, ip: IpAddr) {
        let peer = peer_of(ip);
        if let Some(times) = self.peers.get_mut(&peer) {
            times.pop_back();
            if times.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// How many peers are tracked.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Drops peers whose failures all left the window; if none did, the peer whose last
    /// failure is oldest.
    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.peers.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        if self.peers.len() >= self.capacity {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.peers.remove(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_eleventh_failure_within_a_minute_waits_for_the_first_to_expire() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut f = Failures::new(10, MIN, 100);
        for i in 0..10 {
            assert_eq!(f.begin(ip, t0 + Duration::from_secs(i)), Ok(()), "attempt {i}");
        }
        let wait = f.begin(ip, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Another address is not affected.
        assert_eq!(f.begin("192.0.2.8".parse().unwrap(), t0), Ok(()));
        // A minute after the first failure, one more attempt is allowed.
        assert_eq!(f.begin(ip, t0 + MIN), Ok(()));
        assert!(f.begin(ip, t0 + MIN).is_err());
    }

    #[test]
    fn successes_do_not_count() {
        let t0 = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let mut f = Failures::new(3, MIN, 100);
        for _ in 0..50 {
            assert_eq!(f.begin(ip, t0), Ok(()));
            f.forgive(ip);
        }
        assert!(f.is_empty());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_peer_and_mapped_ipv4_is_ipv4() {
        let t0 = Instant::now();
        let mut f = Failures::new(2, MIN, 100);
        f.begin("2001:db8:1:2::1".parse().unwrap(), t0).unwrap();
        f.begin("2001:db8:1:2:ffff::9".parse().unwrap(), t0).unwrap();
        assert!(f.begin("2001:db8:1:2::77".parse().unwrap(), t0).is_err());
        assert_eq!(f.begin("2001:db8:1:3::1".parse().unwrap(), t0), Ok(()));
        f.begin("198.51.100.1".parse().unwrap(), t0).unwrap();
        f.begin("::ffff:198.51.100.1".parse().unwrap(), t0).unwrap();
        assert!(f.begin("198.51.100.1".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn the_table_stays_within_its_capacity() {
        let t0 = Instant::now();
        let mut f = Failures::new(1, MIN, 8);
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.begin(ip, t0 + Duration::from_millis(u64::from(i))).unwrap();
            assert!(f.len() <= 8);
        }
        // The newest peers are the ones kept.
        assert!(f
            .begin(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + 999)),
                t0 + MIN / 2
            )
            .is_err());
    }
}
