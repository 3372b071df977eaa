//! Fetching one object in ranges: whether an upstream's answer to a range
//! request is the part asked for, how the next attempt after a broken
//! connection backs off. Which ranges a fill fetches is
//! [`crate::fill_plan`]'s.
//!
//! A cache fill that loses its upstream connection continues with
//! `Range: bytes=N-` and `If-Range: <validator>`. The rule that keeps a
//! body from being stitched from two versions lives in [`judge_part`]: only
//! a `206` whose `Content-Range` is exactly the span asked for, of an object
//! of exactly the length being filled, continues the fill. A `200` means
//! the upstream sent the whole object instead (it ignores ranges, or its
//! validator changed): the fill cannot continue from the bytes it has.

use std::ops::Range;
use std::time::Duration;

/// What an upstream's answer to a range request means for the fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAnswer {
    /// The part asked for: its bytes continue the fill.
    Part,
    /// The whole object instead: ranges are ignored or the object changed.
    Whole,
    /// Anything else (an error status, a different span or length): this
    /// attempt failed; another may succeed.
    Unusable(String),
}

/// `Range` header value for the half-open span `asked`.
pub fn range_header(asked: &Range<u64>) -> String {
    format!("bytes={}-{}", asked.start, asked.end.saturating_sub(1))
}

/// A `Content-Range: bytes first-last/total` value, as a half-open span
/// and the total (`None` for `*`).
pub fn parse_content_range(value: &str) -> Option<(Range<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (last >= first && total.is_none_or(|t| last < t)).then_some((first..last + 1, total))
}

/// Judges an upstream answer (`status`, its `Content-Range`) to a request
/// for `asked` of an object of `length` bytes.
pub fn judge_part(
    status: u16,
    content_range: Option<&str>,
    asked: &Range<u64>,
    length: u64,
) -> PartAnswer {
    match status {
        200 => PartAnswer::Whole,
        206 => match content_range.and_then(parse_content_range) {
            Some((span, Some(total))) if span == *asked && total == length => PartAnswer::Part,
            Some((span, total)) => PartAnswer::Unusable(format!(
                "asked for bytes {}-{} of {length}, got {}-{} of {}",
                asked.start,
                asked.end.saturating_sub(1),
                span.start,
                span.end - 1,
                total.map_or("*".to_string(), |t| t.to_string())
            )),
            None => PartAnswer::Unusable("206 without a usable Content-Range".to_string()),
        },
        other => PartAnswer::Unusable(format!("upstream answered {other}")),
    }
}

/// How long to wait before attempt `attempt` (1 for the first retry):
/// 250 ms doubling to at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(5);
    Duration::from_millis(250 << exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_span_of_the_same_length_continues_a_fill() {
        let asked = 100..1000;
        let part = |cr: &str| judge_part(206, Some(cr), &asked, 1000);
        assert_eq!(part("bytes 100-999/1000"), PartAnswer::Part);
        assert!(matches!(part("bytes 0-999/1000"), PartAnswer::Unusable(_)));
        assert!(matches!(
            part("bytes 100-999/2000"),
            PartAnswer::Unusable(_)
        ));
        assert!(matches!(part("bytes 100-999/*"), PartAnswer::Unusable(_)));
        assert!(matches!(
            part("items 100-999/1000"),
            PartAnswer::Unusable(_)
        ));
        assert!(matches!(
            judge_part(206, None, &asked, 1000),
            PartAnswer::Unusable(_)
        ));
        assert_eq!(judge_part(200, None, &asked, 1000), PartAnswer::Whole);
        assert!(matches!(
            judge_part(503, None, &asked, 1000),
            PartAnswer::Unusable(m) if m.contains("503")
        ));
    }

    #[test]
    fn content_ranges_parse_strictly() {
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0..1, Some(1))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5..10, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None, "past the end");
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes a-b/10"), None);
    }

    #[test]
    fn range_headers_are_inclusive() {
        assert_eq!(range_header(&(0..1)), "bytes=0-0");
        assert_eq!(range_header(&(100..1000)), "bytes=100-999");
    }

    #[test]
    fn backoff_doubles_and_stops_growing() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(0), Duration::from_millis(250));
    }
}
