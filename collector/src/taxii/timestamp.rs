//! TAXII timestamps, parsed only far enough to be compared.
//!
//! A bookmark is handed back to the server verbatim (`added_after=<what it sent us>`), so the text
//! is kept as the server wrote it; what needs parsing is the order. Comparing the strings would be
//! wrong: `2024-01-01T00:00:00Z` and `2024-01-01T00:00:00.5Z` sort the wrong way round byte by
//! byte, and servers differ in how many fraction digits they write.

use std::cmp::Ordering;

/// A point in time from a TAXII timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, always UTC, as
/// TAXII 2.1 and STIX 2.1 require of timestamps), ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.secs, self.nanos).cmp(&(other.secs, other.nanos))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Timestamp {
    /// Parses a TAXII timestamp; `None` if it is not one. Up to nine fraction digits; `T` and `Z`
    /// in either case (RFC 3339 allows both); no offsets other than `Z`, which TAXII forbids.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 30 {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(range)?;
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let sep = |i: usize, want: &[u8]| b.get(i).is_some_and(|c| want.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        // 60 is a leap second; it orders after :59 and equal to the next minute's :00.
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let rest = &b[19..];
        let (fraction, zone) = match rest.first() {
            Some(b'.') => {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 || digits > 9 {
                    return None;
                }
                (&rest[1..1 + digits], &rest[1 + digits..])
            }
            _ => (&rest[..0], rest),
        };
        if zone != b"Z" && zone != b"z" {
            return None;
        }
        let mut nanos = 0u32;
        for i in 0..9 {
            nanos = nanos * 10 + fraction.get(i).map_or(0, |d| u32::from(d - b'0'));
        }
        let days = picket_proto::days_from_civil(year, month as u32, day as u32);
        Some(Timestamp {
            secs: days * 86_400 + hour * 3600 + minute * 60 + second,
            nanos,
        })
    }

    /// Seconds since the unix epoch.
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// Milliseconds since the unix epoch (digits beyond milliseconds dropped).
    pub fn unix_millis(&self) -> i64 {
        self.secs * 1000 + i64::from(self.nanos / 1_000_000)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Timestamp;

    fn check(text: &str, want: Option<(i64, u32)>) {
        let got = Timestamp::parse(text).map(|t| (t.secs, t.nanos));
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn table() {
        check("1970-01-01T00:00:00Z", Some((0, 0)));
        check("2000-02-29T00:00:00Z", Some((951_782_400, 0)));
        check("2026-12-04T17:01:12Z", Some((1_796_403_672, 0)));
        check("2026-12-04T17:01:12.5Z", Some((1_796_403_672, 500_000_000)));
        check("2026-12-04T17:01:12.067877Z", Some((1_796_403_672, 67_877_000)));
        check(
            "2026-12-04t17:01:12.123456789z",
            Some((1_796_403_672, 123_456_789)),
        );
        check("1969-12-31T23:59:59Z", Some((-1, 0)));
        check("2016-12-31T23:59:60Z", Some((1_483_228_800, 0)));
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01 00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00ZZ",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00:00:0aZ",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn fractions_order_by_value_not_by_text() {
        let a = Timestamp::parse("2024-01-01T00:00:00Z").unwrap();
        let b = Timestamp::parse("2024-01-01T00:00:00.000001Z").unwrap();
        let c = Timestamp::parse("2024-01-01T00:00:00.1Z").unwrap();
        let d = Timestamp::parse("2024-01-01T00:00:00.100000Z").unwrap();
        assert!(a < b && b < c);
        assert_eq!(c, d);
        assert!(
            "2024-01-01T00:00:00Z" > "2024-01-01T00:00:00.1Z",
            "why strings do not do"
        );
    }

    #[test]
    fn agrees_with_the_formatter() {
        for secs in [
            0i64,
            1,
            59,
            86_399,
            951_782_400,
            1_796_403_672,
            4_102_444_799,
            -86_400,
        ] {
            let text = picket_proto::rfc3339(secs);
            assert_eq!(Timestamp::parse(&text).unwrap().unix_seconds(), secs, "{text}");
        }
    }
}
