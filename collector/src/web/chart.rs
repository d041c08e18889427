//! The sightings timeline: an inline SVG bar chart drawn on the server, so the dashboard needs
//! no script and no network. Pure: the buckets and the time are arguments.
//!
//! Invariant: the SVG holds only numbers and literal text made here (no value from the store
//! is written into it except as a number), and it carries no `style` attribute (the
//! Content-Security-Policy allows styles only from /ui/style.css); colours come from classes.

use std::fmt::Write;

/// An hour.
pub const HOUR: i64 = 3600;

/// How many sightings were active in each hour of the `hours` hours ending at the hour that
/// holds `now`: a sighting counts in every hour from its first to its last seen. `spans` are
/// `(first_seen, last_seen)` pairs; the oldest hour comes first.
pub fn per_hour(spans: impl IntoIterator<Item = (i64, i64)>, now: i64, hours: usize) -> Vec<u64> {
    let mut buckets = vec![0u64; hours];
    if hours == 0 {
        return buckets;
    }
    let end = now.div_euclid(HOUR) + 1; // exclusive, in hours
    let start = end - hours as i64;
    for (first, last) in spans {
        let (a, b) = (first.min(last).div_euclid(HOUR), first.max(last).div_euclid(HOUR));
        let (a, b) = (a.max(start), b.min(end - 1));
        for h in a..=b {
            if let Some(slot) = usize::try_from(h - start).ok().and_then(|i| buckets.get_mut(i)) {
                *slot += 1;
            }
        }
    }
    buckets
}

/// The chart of `buckets` (one an hour, the last ending at the hour that holds `now`), with a
/// day grid, the largest count on the axis and a title for screen readers.
pub fn timeline(buckets: &[u64], now: i64) -> String {
    const W: f64 = 840.0;
    const H: f64 = 160.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 20.0;
    let n = buckets.len().max(1);
    let max = buckets.iter().copied().max().unwrap_or(0);
    let total: u64 = buckets.iter().sum();
    let plot_w = W - LEFT - 4.0;
    let plot_h = H - BOTTOM - 8.0;
    let bar = plot_w / n as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"timeline\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-labelledby=\"timeline-title\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"timeline-title\">Sightings per hour over the last {} hours: {total} in all, at most {max} in one hour</title>",
        buckets.len()
    );
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>\
         <text class=\"label\" x=\"{lx}\" y=\"14\" text-anchor=\"end\">{max}</text>\
         <text class=\"label\" x=\"{lx}\" y=\"{y}\" text-anchor=\"end\">0</text>",
        y = H - BOTTOM,
        x2 = W - 4.0,
        lx = LEFT - 6.0,
    );
    // Day boundaries: a grid line and the date, at each midnight UTC inside the window.
    let end_hour = now.div_euclid(HOUR) + 1;
    let start_hour = end_hour - n as i64;
    for h in start_hour..end_hour {
        if h.rem_euclid(24) == 0 {
            let x = LEFT + (h - start_hour) as f64 * bar;
            let day = picket_proto::rfc3339(h * HOUR);
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"8\" x2=\"{x:.1}\" y2=\"{y}\"/>\
                 <text class=\"label\" x=\"{tx:.1}\" y=\"{ty}\">{}</text>",
                day.get(5..10).unwrap_or(""),
                y = H - BOTTOM,
                tx = x + 2.0,
                ty = H - 6.0,
            );
        }
    }
    for (i, &c) in buckets.iter().enumerate() {
        if c == 0 || max == 0 {
            continue;
        }
        let h = (c as f64 / max as f64 * plot_h).max(1.0);
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{c}</title></rect>",
            LEFT + i as f64 * bar,
            H - BOTTOM - h,
            (bar - 0.5).max(0.5),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sighting_counts_in_each_hour_it_was_active_within_the_window() {
        let now = 100 * HOUR + 10;
        // Hours 97..=100 are the window of four.
        let check = |spans: &[(i64, i64)], expected: &[u64]| {
            assert_eq!(per_hour(spans.iter().copied(), now, 4), expected, "{spans:?}");
        };
        check(&[], &[0, 0, 0, 0]);
        check(&[(100 * HOUR, 100 * HOUR + 5)], &[0, 0, 0, 1]);
        check(&[(98 * HOUR + 1, 99 * HOUR + 1)], &[0, 1, 1, 0]);
        check(&[(10 * HOUR, 200 * HOUR)], &[1, 1, 1, 1]);
        check(&[(10 * HOUR, 20 * HOUR), (300 * HOUR, 301 * HOUR)], &[0, 0, 0, 0]);
        check(
            &[(97 * HOUR, 97 * HOUR), (97 * HOUR + 9, 97 * HOUR + 9)],
            &[2, 0, 0, 0],
        );
    }

    #[test]
    fn the_chart_has_a_bar_per_busy_hour_and_no_style_attribute() {
        let svg = timeline(&[0, 3, 0, 1], 100 * HOUR);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("4 in all, at most 3 in one hour"));
        assert!(!svg.contains("style="));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
