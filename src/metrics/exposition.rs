//! The two text formats a scraper may ask for. prometheus-client writes
//! OpenMetrics, which Prometheus asks for first; tools that read the older
//! Prometheus text format (promtool, many agents, a person with curl) get
//! that instead. The two differ only in the header lines: a counter's
//! `HELP` and `TYPE` name carry `_total` in the older format, which has no
//! `UNIT` lines and no `# EOF`.

use std::collections::HashSet;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` prefers OpenMetrics (Prometheus's does);
/// without one, or for `*/*`, the older format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let offers = ["text/plain", "application/openmetrics-text"];
    filters::accept::preferred(accept, &offers) == "application/openmetrics-text"
}

/// An OpenMetrics exposition rewritten in the Prometheus text format.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kind| Some((kind, line.strip_prefix(kind)?)));
        match header {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{kind}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_headers_gain_total_and_openmetrics_only_lines_go() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                    a_requests_total{r=\"x\"} 3\n# HELP a_bytes Bytes.\n# TYPE a_bytes gauge\n\
                    # UNIT a_bytes bytes\na_bytes 7\n# EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total{r=\"x\"} 3\n# HELP a_bytes Bytes.\n# TYPE a_bytes gauge\na_bytes 7\n"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_curl_the_older_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("text/plain")));
    }
}
