//! Time as people read it. Picket keeps times as unix seconds (UTC) everywhere; this turns them
//! into RFC 3339 for messages and output, without a calendar dependency.

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let (date, rem) = civil_and_rest(secs);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Formats unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the precision TAXII asks for).
pub fn rfc3339_millis(ms: i64) -> String {
    let (date, rem) = civil_and_rest(ms.div_euclid(1000));
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The date part of `secs` as `YYYY-MM-DD`, and the seconds into that day.
fn civil_and_rest(secs: i64) -> (String, i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    (format!("{y:04}-{m:02}-{d:02}"), secs.rem_euclid(86_400))
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// the inverse of [`civil_from_days`]). The caller checks that the date exists.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses durations such as `90s`, `15m`, `12h`, `30d`, `2w` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&s| s > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn table() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_403_672, "2026-12-04T17:01:12Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ] {
            assert_eq!(super::rfc3339(secs), want);
        }
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("90s", Some(90)),
            ("15m", Some(900)),
            ("12h", Some(43_200)),
            ("30d", Some(2_592_000)),
            ("2w", Some(1_209_600)),
            ("0s", None),
            ("10", None),
            ("d", None),
            ("5y", None),
        ] {
            assert_eq!(super::parse_duration(text), want, "{text}");
        }
    }
}
