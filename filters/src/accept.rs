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

/// The highest `q` an `Accept` value gives any of `media`.
pub fn best_q(ranges: &[(String, f32)], media: &[&str]) -> f32 {
    ranges
        .iter()
        .filter(|(m, _)| media.contains(&m.as_str()))
        .map(|(_, q)| *q)
        .fold(0.0, f32::max)
}
