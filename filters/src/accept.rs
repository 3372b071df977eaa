//! `Accept` headers: media ranges with their `q` values, for the content
//! negotiation of index documents (PEP 691, npm's abbreviated form).

/// The media ranges of an `Accept` value, lower-cased, each with its `q`
/// (1 when absent, clamped to 0..=1 as RFC 9110 defines it).
///
/// ```
/// let ranges = filters::accept::ranges("text/html;q=0.5, application/JSON");
/// assert_eq!(ranges, [("text/html".to_string(), 0.5), ("application/json".to_string(), 1.0)]);
/// ```
pub fn ranges(accept: &str) -> Vec<(String, f32)> {
    accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .map(|q| if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) })
                .unwrap_or(1.0);
            (media, q)
        })
        .filter(|(media, _)| !media.is_empty())
        .collect()
}

/// Which of `offers` (media types, the server's preference first) an
/// `Accept` value prefers: each takes the `q` of its most specific range
/// (exact, then `type/*`, then `*/*`); a tie or no `Accept` goes to the
/// earlier offer, as does a value that accepts none of them.
///
/// ```
/// let offers = ["application/json", "text/html"];
/// let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
/// assert_eq!(filters::accept::preferred(Some(browser), &offers), "text/html");
/// assert_eq!(filters::accept::preferred(Some("*/*"), &offers), "application/json");
/// assert_eq!(filters::accept::preferred(None, &offers), "application/json");
/// ```
pub fn preferred<'a>(accept: Option<&str>, offers: &[&'a str]) -> &'a str {
    let first = offers.first().copied().unwrap_or("");
    let Some(accept) = accept else {
        return first;
    };
    let ranges = ranges(accept);
    let q_of = |offer: &str| {
        let kind = offer.split('/').next().unwrap_or("");
        let specific = |range: &str| match range {
            _ if range == offer => Some(3),
            "*/*" => Some(1),
            _ => (range.strip_suffix("/*") == Some(kind)).then_some(2),
        };
        ranges
            .iter()
            .filter_map(|(range, q)| specific(range).map(|s| (s, *q)))
            .max_by_key(|(s, _)| *s)
            .map_or(0.0, |(_, q)| q)
    };
    let mut best = (first, 0.0f32);
    for offer in offers {
        let q = q_of(offer);
        if q > best.1 {
            best = (offer, q);
        }
    }
    best.0
}

/// The highest `q` an `Accept` value gives any of `media`.
pub fn best_q(ranges: &[(String, f32)], media: &[&str]) -> f32 {
    ranges
        .iter()
        .filter(|(m, _)| media.contains(&m.as_str()))
        .map(|(_, q)| *q)
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_range_decides_an_offers_q() {
        let offers = ["text/html", "application/json"];
        assert_eq!(
            preferred(Some("application/json"), &offers),
            "application/json"
        );
        assert_eq!(preferred(Some("*/*"), &offers), "text/html");
        assert_eq!(
            preferred(Some("text/*;q=0.2, */*;q=0.5"), &offers),
            "application/json"
        );
        assert_eq!(
            preferred(Some("text/html;q=0, */*"), &offers),
            "application/json",
            "an exact q=0 refuses the offer whatever */* says"
        );
        assert_eq!(preferred(Some("image/png"), &offers), "text/html");
        assert_eq!(preferred(Some(""), &offers), "text/html");
    }
}
