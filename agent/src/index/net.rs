//! Remote addresses: IPv4 and IPv6 addresses and CIDR networks.
//!
//! One sorted table per prefix length, keyed by the network address (host bits cleared). To
//! look an address up, mask it to each prefix length present and binary-search that table, so
//! the cost is one search per distinct prefix length (a set rarely has more than a handful), and
//! an address matches every network that contains it, nested or not. A single address is a
//! network with the full prefix length. Entries cost 8 bytes for IPv4, 20 for IPv6.

use std::fmt::Debug;
use std::mem::size_of;

/// An address as an unsigned integer: `u32` for IPv4, `u128` for IPv6.
pub(super) trait Bits: Copy + Ord + Debug {
    /// Bits in an address.
    const WIDTH: u8;
    /// The address with all but the leading `prefix` bits cleared.
    fn masked(self, prefix: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, prefix: u8) -> u32 {
        match prefix {
            0 => 0,
            p if p >= 32 => self,
            p => self & (u32::MAX << (32 - u32::from(p))),
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, prefix: u8) -> u128 {
        match prefix {
            0 => 0,
            p if p >= 128 => self,
            p => self & (u128::MAX << (128 - u32::from(p))),
        }
    }
}

/// The networks of one prefix length, sorted by address, with their values.
#[derive(Debug)]
struct Level<A> {
    prefix: u8,
    addrs: Vec<A>,
    vals: Vec<u32>,
}

/// Networks collected before sorting.
#[derive(Debug)]
pub(super) struct NetBuf<A> {
    rows: Vec<(u8, A, u32)>,
}

impl<A> Default for NetBuf<A> {
    fn default() -> Self {
        NetBuf { rows: Vec::new() }
    }
}

impl<A: Bits> NetBuf<A> {
    /// Adds the network `addr/prefix` with `val`; false unless the prefix fits the address
    /// width and no host bit is set.
    pub(super) fn push(&mut self, addr: A, prefix: u8, val: u32) -> bool {
        if prefix > A::WIDTH || addr.masked(prefix) != addr {
            return false;
        }
        self.rows.push((prefix, addr, val));
        true
    }

    pub(super) fn finish(mut self) -> Nets<A> {
        self.rows.sort_unstable();
        let mut levels: Vec<Level<A>> = Vec::new();
        for (prefix, addr, val) in self.rows {
            match levels.last_mut() {
                Some(l) if l.prefix == prefix => {
                    l.addrs.push(addr);
                    l.vals.push(val);
                }
                _ => levels.push(Level {
                    prefix,
                    addrs: vec![addr],
                    vals: vec![val],
                }),
            }
        }
        for l in &mut levels {
            l.addrs.shrink_to_fit();
            l.vals.shrink_to_fit();
        }
        levels.shrink_to_fit();
        Nets { levels }
    }
}

/// The compiled networks of one address family.
#[derive(Debug)]
pub(super) struct Nets<A> {
    levels: Vec<Level<A>>,
}

impl<A> Default for Nets<A> {
    fn default() -> Self {
        Nets { levels: Vec::new() }
    }
}

impl<A: Bits> Nets<A> {
    /// Calls `found` with the value of every network containing `addr`.
    pub(super) fn lookup(&self, addr: A, mut found: impl FnMut(u32)) {
        for l in &self.levels {
            let key = addr.masked(l.prefix);
            let start = l.addrs.partition_point(|a| *a < key);
            let len = l.addrs[start..].partition_point(|a| *a == key);
            l.vals[start..start + len].iter().for_each(|&v| found(v));
        }
    }

    /// Networks over all prefix lengths.
    pub(super) fn len(&self) -> usize {
        self.levels.iter().map(|l| l.addrs.len()).sum()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.levels.capacity() * size_of::<Level<A>>()
            + self
                .levels
                .iter()
                .map(|l| l.addrs.capacity() * size_of::<A>() + l.vals.capacity() * size_of::<u32>())
                .sum::<usize>()
    }

    /// Bytes for `n` networks (with every prefix length present, the most levels there can be).
    pub(super) fn estimate(n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let levels = n.min(usize::from(A::WIDTH) + 1);
        levels * size_of::<Level<A>>() + n * (size_of::<A>() + size_of::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_at_the_edges() {
        assert_eq!(0xdead_beef_u32.masked(0), 0);
        assert_eq!(0xdead_beef_u32.masked(32), 0xdead_beef);
        assert_eq!(0xdead_beef_u32.masked(8), 0xde00_0000);
        assert_eq!(u128::MAX.masked(1), 1 << 127);
        assert_eq!(u128::MAX.masked(128), u128::MAX);
    }

    #[test]
    fn refuses_host_bits_and_long_prefixes() {
        let mut b = NetBuf::<u32>::default();
        assert!(!b.push(0x0a00_0001, 8, 1));
        assert!(!b.push(0x0a00_0000, 33, 1));
        assert!(b.push(0x0a00_0000, 8, 1));
    }
}
