//! STIX timestamps (`2016-05-12T08:17:27.000Z`), without a calendar dependency.

/// A point in time: seconds since the Unix epoch (UTC) and the nanoseconds after them. Ordered,
/// so that two versions of a STIX object whose `modified` differ by a millisecond still order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as STIX writes timestamps. Also accepted, because
/// they are unambiguous and feeds write them: a lower-case `t` or `z`, and a numeric offset
/// (`+02:00`) in place of `Z`. Digits of the fraction beyond nanoseconds are ignored.
pub(crate) fn parse_timestamp(s: &str) -> Option<Instant> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = i64::from(h * 3600 + m * 60);
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = picket_proto::days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    Some(Instant { secs, nanos })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<(i64, u32)>)] = &[
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2016-05-12T08:17:27.000Z", Some((1_463_041_047, 0))),
            ("2015-05-15T09:12:16.432678Z", Some((1_431_681_136, 432_678_000))),
            ("2000-02-29T00:00:00Z", Some((951_782_400, 0))),
            ("2017-04-14T13:07:49.812Z", Some((1_492_175_269, 812_000_000))),
            ("2017-04-14t13:07:49.812z", Some((1_492_175_269, 812_000_000))),
            ("2017-04-14T15:07:49+02:00", Some((1_492_175_269, 0))),
            ("2017-04-14T11:07:49.5-02:00", Some((1_492_175_269, 500_000_000))),
            (
                "2015-05-15T09:12:16.1234567891234Z",
                Some((1_431_681_136, 123_456_789)),
            ),
            ("1969-12-31T23:59:59Z", Some((-1, 0))),
            ("2001-02-29T00:00:00Z", None),
            ("2016-13-01T00:00:00Z", None),
            ("2016-05-12 08:17:27Z", None),
            ("2016-05-12T08:17:27", None),
            ("2016-05-12T08:17:27.Z", None),
            ("2016-05-12T24:00:00Z", None),
            ("2016-05-12T08:17:27+0200", None),
            ("2016-05-12", None),
            ("", None),
            ("２０16-05-12T08:17:27Z", None),
        ];
        for (text, want) in cases {
            let got = parse_timestamp(text).map(|i| (i.secs, i.nanos));
            assert_eq!(got, *want, "{text}");
        }
        for secs in [0, 951_782_400, 1_796_403_672, -1, -86_401, 253_402_300_799] {
            let text = picket_proto::rfc3339(secs);
            assert_eq!(parse_timestamp(&text).map(|i| i.secs), Some(secs), "{text}");
        }
    }
}
