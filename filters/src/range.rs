//! Single byte-range requests (`Range: bytes=a-b`), for responses artifactd
//! writes itself (local repositories). Cached responses use pingora's own
//! range filter.

/// What to send for a `Range` header against a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReply {
    /// No usable range: send the whole body with 200.
    Full,
    /// Send bytes `start..end` (end exclusive) with 206.
    Partial { start: u64, end: u64 },
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// Interprets one `Range` header value. Multiple ranges and other units are
/// answered with the full body, which RFC 9110 allows.
pub fn single_range(header: Option<&str>, size: u64) -> RangeReply {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReply::Full;
    };
    if spec.contains(',') {
        return RangeReply::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeReply::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => RangeReply::Partial {
            start: size.saturating_sub(suffix),
            end: size,
        },
        (true, _, _) => RangeReply::Unsatisfiable,
        (false, Some(start), _) if start >= size => RangeReply::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => {
            RangeReply::Partial { start, end: size }
        }
        (false, Some(start), Some(last)) if last >= start => RangeReply::Partial {
            start,
            // RFC 9110 §14.1.2: a last position at or past the end is
            // clamped to the end; `u64::MAX` must not wrap to an empty range.
            end: last.saturating_add(1).min(size),
        },
        _ => RangeReply::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(single_range(None, 10), RangeReply::Full);
        assert_eq!(
            single_range(Some("bytes=2-4"), 10),
            RangeReply::Partial { start: 2, end: 5 }
        );
        assert_eq!(
            single_range(Some("bytes=2-"), 10),
            RangeReply::Partial { start: 2, end: 10 }
        );
        assert_eq!(
            single_range(Some("bytes=-3"), 10),
            RangeReply::Partial { start: 7, end: 10 }
        );
        assert_eq!(
            single_range(Some("bytes=5-100"), 10),
            RangeReply::Partial { start: 5, end: 10 }
        );
        assert_eq!(
            single_range(Some("bytes=10-"), 10),
            RangeReply::Unsatisfiable
        );
        assert_eq!(
            single_range(Some("bytes=-0"), 10),
            RangeReply::Unsatisfiable
        );
        assert_eq!(single_range(Some("bytes=4-2"), 10), RangeReply::Full);
        assert_eq!(
            single_range(Some("bytes=0-18446744073709551615"), 10),
            RangeReply::Partial { start: 0, end: 10 }
        );
        assert_eq!(single_range(Some("bytes=0-1,3-4"), 10), RangeReply::Full);
        assert_eq!(single_range(Some("items=0-1"), 10), RangeReply::Full);
    }
}
