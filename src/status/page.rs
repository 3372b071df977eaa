//! The status page as HTML: one self-contained document (inline CSS, no
//! script, no request for anything else) that reloads itself every few
//! seconds, laid out to read on a laptop and on a phone. Numbers a test or
//! a script may want are also in `data-` attributes, unrounded.

use super::{FillRow, RemoteView, Snapshot};
use crate::catalog::TopEntry;
use crate::metrics::recent::{Problem, ProblemKind};
use std::fmt::Write;

/// Seconds between reloads of the page.
const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--dim:#5d6678;--line:#e3e6ec;--ok:#1f8a4c;--bad:#c62828;--warn:#b26a00;--bar:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1b2029;--ink:#e6e9ef;--dim:#98a2b3;--line:#2b3240;--bar:#6d9bff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;align-items:baseline;padding:.9rem 1.25rem;border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:1.2rem;margin:0}
header span{color:var(--dim)}
main{padding:1rem 1.25rem;max-width:1400px;margin:0 auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.75rem;margin-bottom:1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem .9rem}
.card b{display:block;font-size:1.45rem;font-variant-numeric:tabular-nums}
.card span{color:var(--dim);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:1rem}
section h2{font-size:1rem;margin:0;padding:.65rem .9rem;border-bottom:1px solid var(--line)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{padding:.4rem .9rem;text-align:left;white-space:nowrap;border-bottom:1px solid var(--line)}
th{font-size:.75rem;color:var(--dim);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.path{white-space:normal;word-break:break-all;min-width:14rem}
tr:last-child td{border-bottom:0}
.empty{padding:.7rem .9rem;color:var(--dim)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.75rem;font-weight:600;color:#fff}
.up{background:var(--ok)}.down{background:var(--bad)}.probing{background:var(--warn)}.none{background:var(--dim)}
.meter{height:.5rem;min-width:6rem;background:var(--line);border-radius:4px;overflow:hidden}
.meter i{display:block;height:100%;background:var(--bar)}
.meter.full i{background:var(--bad)}
.dim{color:var(--dim)}.kind{font-weight:600}.kind.bad{color:var(--bad)}.kind.warn{color:var(--warn)}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 1rem}
@media (max-width:600px){main{padding:.6rem}header{padding:.7rem .8rem}th,td{padding:.35rem .55rem}.card b{font-size:1.2rem}}
"#;

/// The whole page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>artifactd status</title><style>{STYLE}</style></head><body>"
    );
    header(&mut out, snapshot);
    out.push_str("<main>");
    summary(&mut out, snapshot);
    remotes(&mut out, snapshot);
    fills(&mut out, &snapshot.fills);
    problems(&mut out, snapshot);
    out.push_str("<div class=\"two\">");
    top_list(&mut out, "largest", "Largest artifacts", &snapshot.largest);
    top_list(
        &mut out,
        "most-requested",
        "Most requested artifacts",
        &snapshot.most_requested,
    );
    out.push_str("</div></main></body></html>\n");
    out
}

fn header(out: &mut String, s: &Snapshot) {
    let _ = write!(
        out,
        "<header><h1>artifactd</h1><span id=\"version\" data-version=\"{v}\" data-revision=\"{r}\">{v} ({r})</span>\
         <span id=\"uptime\" data-seconds=\"{u}\">up {}</span><span>{} in flight</span>",
        duration(s.uptime_seconds as f64),
        s.in_flight,
        v = escape(s.version),
        r = escape(s.revision),
        u = s.uptime_seconds,
    );
    if let Some(cluster) = &s.cluster {
        let nodes: Vec<String> = cluster.nodes.iter().map(|n| escape(n)).collect();
        let _ = write!(
            out,
            "<span id=\"cluster\" data-nodes=\"{}\">node {} of {}: {}</span>",
            cluster.nodes.len(),
            escape(&cluster.this_node),
            cluster.nodes.len(),
            nodes.join(", "),
        );
    }
    out.push_str("</header>");
}

fn summary(out: &mut String, s: &Snapshot) {
    let all = &s.all;
    let stored = match s.storage.max_bytes {
        Some(max) => format!("{} of {}", bytes(s.storage.bytes), bytes(max)),
        None => bytes(s.storage.bytes),
    };
    let cards = [
        ("Requests", all.requests.to_string()),
        ("Hit ratio", percent(all.hit_ratio)),
        ("Byte hit ratio", percent(all.byte_hit_ratio)),
        ("Egress saved", bytes(all.egress_saved_bytes)),
        ("Fetched upstream", bytes(all.upstream_bytes)),
        ("Stored", stored),
        ("Objects", s.storage.objects.to_string()),
        ("Fills now", s.fills.len().to_string()),
    ];
    let _ = write!(
        out,
        "<div class=\"cards\" id=\"summary\" data-hit-ratio=\"{}\" data-byte-hit-ratio=\"{}\" data-egress-saved=\"{}\">",
        raw_ratio(all.hit_ratio),
        raw_ratio(all.byte_hit_ratio),
        all.egress_saved_bytes,
    );
    for (label, value) in cards {
        let _ = write!(
            out,
            "<div class=\"card\"><span>{label}</span><b>{}</b></div>",
            escape(&value)
        );
    }
    out.push_str("</div>");
}

fn remotes(out: &mut String, s: &Snapshot) {
    out.push_str(
        "<section id=\"remotes\"><h2>Remotes</h2><div class=\"scroll\"><table><thead><tr>\
         <th>Remote</th><th>Upstream</th><th class=\"n\">Requests</th><th class=\"n\">Hit ratio</th>\
         <th class=\"n\">By bytes</th><th class=\"n\">Egress saved</th><th class=\"n\">Fetched</th>\
         <th class=\"n\">Stored</th><th>Of bound</th><th class=\"n\">Upstream errors</th>\
         <th class=\"n\">5xx</th><th class=\"n\">Mismatches</th></tr></thead><tbody>",
    );
    let bound = s.storage.max_bytes;
    for remote in &s.remotes {
        remote_row(out, remote, bound);
    }
    out.push_str("</tbody></table></div></section>");
}

fn remote_row(out: &mut String, r: &RemoteView, bound: Option<u64>) {
    let breaker = match r.breaker {
        "up" | "down" | "probing" => r.breaker,
        _ => "none",
    };
    let label = match breaker {
        "none" => r.kind,
        other => other,
    };
    let share = bound.map(|max| r.stored_bytes as f64 / max.max(1) as f64);
    let _ = write!(
        out,
        "<tr class=\"remote\" data-remote=\"{name}\" data-breaker=\"{breaker}\" data-requests=\"{}\" \
         data-hit-ratio=\"{}\" data-byte-hit-ratio=\"{}\" data-egress-saved=\"{}\" data-stored-bytes=\"{}\">\
         <td><b>{name}</b> <span class=\"dim\">{}</span></td><td><span class=\"badge {breaker}\">{label}</span></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{} <span class=\"dim\">({} obj)</span></td><td>{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        r.requests,
        raw_ratio(r.hit_ratio),
        raw_ratio(r.byte_hit_ratio),
        r.egress_saved_bytes,
        r.stored_bytes,
        escape(r.package),
        r.requests,
        percent(r.hit_ratio),
        percent(r.byte_hit_ratio),
        bytes(r.egress_saved_bytes),
        bytes(r.upstream_bytes),
        bytes(r.stored_bytes),
        r.stored_objects,
        share.map_or("-".to_string(), meter),
        r.upstream_errors,
        r.server_errors,
        r.mismatches,
        name = escape(&r.name),
    );
}

fn fills(out: &mut String, fills: &[FillRow]) {
    out.push_str("<section id=\"fills\"><h2>Fills in progress</h2>");
    if fills.is_empty() {
        out.push_str("<p class=\"empty\">No fill in progress.</p></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Remote</th><th>Path</th><th>Progress</th>\
         <th class=\"n\">Bytes</th><th class=\"n\">Rate</th><th class=\"n\">Followers</th>\
         <th class=\"n\">Running</th><th class=\"n\">Idle</th></tr></thead><tbody>",
    );
    for fill in fills {
        let done = fill.expected.map(|e| fill.written as f64 / e.max(1) as f64);
        let of = fill
            .expected
            .map_or(String::new(), |e| format!(" / {}", bytes(e)));
        let _ = write!(
            out,
            "<tr class=\"fill\" data-remote=\"{}\" data-path=\"{path}\" data-written=\"{}\" data-expected=\"{}\" \
             data-followers=\"{}\"><td>{}</td><td class=\"path\">{path}</td><td>{}</td><td class=\"n\">{}{of}</td>\
             <td class=\"n\">{}/s</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&fill.remote),
            fill.written,
            fill.expected.map_or(String::new(), |e| e.to_string()),
            fill.followers,
            escape(&fill.remote),
            done.map_or("-".to_string(), meter),
            bytes(fill.written),
            bytes(fill.bytes_per_second as u64),
            fill.followers,
            duration(fill.elapsed_seconds),
            duration(fill.idle_seconds),
            path = escape(&fill.path),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn problems(out: &mut String, s: &Snapshot) {
    out.push_str("<section id=\"problems\"><h2>Recent errors and mismatches</h2>");
    if s.problems.is_empty() {
        out.push_str("<p class=\"empty\">None since start.</p></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>When</th><th>What</th><th>Remote</th>\
         <th>Path</th><th>Detail</th></tr></thead><tbody>",
    );
    for problem in &s.problems {
        problem_row(out, problem, s.generated_at);
    }
    out.push_str("</tbody></table></div></section>");
}

fn problem_row(out: &mut String, p: &Problem, now: u64) {
    let (kind, word, class) = match p.kind {
        ProblemKind::UpstreamError => ("upstream_error", "upstream error", "bad"),
        ProblemKind::ServedStale => ("served_stale", "served stale", "warn"),
        ProblemKind::ChecksumMismatch => ("checksum_mismatch", "checksum mismatch", "bad"),
        ProblemKind::DigestMismatch => ("digest_mismatch", "digest mismatch", "bad"),
    };
    let _ = write!(
        out,
        "<tr class=\"problem\" data-kind=\"{kind}\" data-remote=\"{}\"><td>{} ago</td>\
         <td class=\"kind {class}\">{word}</td><td>{}</td><td class=\"path\">{}</td><td class=\"path\">{}</td></tr>",
        escape(&p.remote),
        duration(now.saturating_sub(p.at) as f64),
        escape(&p.remote),
        escape(&p.path),
        escape(&p.detail),
    );
}

fn top_list(out: &mut String, id: &str, title: &str, entries: &[TopEntry]) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{title}</h2>");
    if entries.is_empty() {
        out.push_str("<p class=\"empty\">Nothing cached yet.</p></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Remote</th><th>Path</th>\
         <th class=\"n\">Size</th><th class=\"n\">Hits</th></tr></thead><tbody>",
    );
    for entry in entries {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"path\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&entry.remote),
            escape(&entry.path),
            bytes(entry.size.max(0) as u64),
            entry.hits,
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// A bar for `share` (0..=1, shown clamped), red once full.
fn meter(share: f64) -> String {
    let shown = (share.clamp(0.0, 1.0) * 100.0).round();
    let full = if share >= 0.9 { " full" } else { "" };
    format!(
        "<div class=\"meter{full}\" title=\"{shown}%\" data-share=\"{share:.4}\"><i style=\"width:{shown}%\"></i></div>"
    )
}

fn raw_ratio(ratio: Option<f64>) -> String {
    ratio.map_or(String::new(), |r| format!("{r:.6}"))
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// Bytes in binary units, three significant figures.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if value >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ if value >= 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.2} {}", UNITS[unit]),
    }
}

/// A duration as its two largest units.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 10.0 {
        return format!("{s:.1} s");
    }
    let s = s as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{ClusterView, StorageView};
    use super::*;

    fn remote(name: &str, breaker: &'static str) -> RemoteView {
        RemoteView {
            name: name.into(),
            kind: "remote",
            package: "pypi",
            breaker,
            requests: 4,
            hit_ratio: Some(0.75),
            byte_hit_ratio: Some(0.5),
            served_bytes: 2048,
            egress_saved_bytes: 1024,
            upstream_bytes: 1024,
            upstream_errors: 1,
            server_errors: 1,
            mismatches: 0,
            refused: 0,
            stored_bytes: 950,
            stored_objects: 2,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "1.2.3",
            revision: "abc",
            uptime_seconds: 3700,
            generated_at: 1000,
            in_flight: 2,
            cluster: Some(ClusterView {
                this_node: "10.0.0.1:8080".into(),
                nodes: vec!["10.0.0.1:8080".into(), "10.0.0.2:8080".into()],
            }),
            remotes: vec![remote("pypi", "up"), remote("<hub>", "down")],
            all: remote("all", "-"),
            storage: StorageView {
                bytes: 1900,
                objects: 4,
                max_bytes: Some(2000),
                max_objects: 100,
                free_bytes: None,
                min_free_bytes: None,
                evictions: 0,
            },
            fills: vec![FillRow {
                remote: "pypi".into(),
                path: "big.whl".into(),
                written: 300,
                expected: Some(1200),
                elapsed_seconds: 3.0,
                idle_seconds: 0.1,
                bytes_per_second: 100.0,
                followers: 2,
            }],
            problems: vec![Problem {
                at: 990,
                kind: ProblemKind::ChecksumMismatch,
                remote: "pypi".into(),
                path: "a<b>.whl".into(),
                detail: "index published x".into(),
            }],
            largest: vec![],
            most_requested: vec![],
        }
    }

    #[test]
    fn the_page_marks_each_remote_fill_and_problem() {
        let html = render(&snapshot());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(
            html.contains(r#"data-remote="pypi" data-breaker="up""#),
            "{html}"
        );
        assert!(html.contains(r#"data-remote="&lt;hub&gt;" data-breaker="down""#));
        assert!(html.contains(r#"data-hit-ratio="0.750000""#));
        assert!(html.contains(r#"data-written="300" data-expected="1200" data-followers="2""#));
        assert!(html.contains(r#"<i style="width:25%">"#), "a quarter done");
        assert!(html.contains(r#"data-kind="checksum_mismatch""#));
        assert!(html.contains("a&lt;b&gt;.whl") && !html.contains("a<b>"));
        assert!(html.contains("node 10.0.0.1:8080 of 2"));
        assert!(html.contains("1 h 1 min"));
        assert!(html.contains("Nothing cached yet."));
    }

    #[test]
    fn the_page_asks_for_nothing_but_itself() {
        let html = render(&snapshot());
        for outside in ["src=", "href=", "url(", "@import", "<script", "<link"] {
            assert!(!html.contains(outside), "{outside} in the page");
        }
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(15 << 20), "15.0 MiB");
        assert_eq!(bytes(300 << 30), "300 GiB");
        assert_eq!(percent(Some(0.98765)), "98.8%");
        assert_eq!(percent(None), "-");
        assert_eq!(duration(2.5), "2.5 s");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(duration(90000.0), "1 d 1 h");
        assert_eq!(meter(0.95), "<div class=\"meter full\" title=\"95%\" data-share=\"0.9500\"><i style=\"width:95%\"></i></div>");
    }
}
