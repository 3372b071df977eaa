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

/// The tab's icon, inline: a browser asks for `/favicon.ico` otherwise.
const ICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect x='1' y='1' width='14' height='14' rx='3' fill='%233b6fd8'/%3E%3Cpath d='M4 6h8M4 10h5' stroke='white' stroke-width='2'/%3E%3C/svg%3E";

const STYLE: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--dim:#5d6678;--line:#e3e6ec;--ok:#1f8a4c;--bad:#c62828;--warn:#b26a00;--bar:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1b2029;--ink:#e6e9ef;--dim:#98a2b3;--line:#2b3240;--bar:#6d9bff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;align-items:baseline;padding:.9rem 1.25rem;border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:1.2rem;margin:0}
header span{color:var(--dim)}
main{padding:1rem 1.25rem;max-width:1400px;margin:0 auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(135px,1fr));gap:.75rem;margin-bottom:1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem .9rem}
.card b{display:block;font-size:1.45rem;font-variant-numeric:tabular-nums}
.card span{color:var(--dim);font-size:.75rem;text-transform:uppercase;letter-spacing:.04em}
.card small{color:var(--dim);font-size:.8rem}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:1rem}
section h2{font-size:1rem;margin:0;padding:.65rem .9rem;border-bottom:1px solid var(--line)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{padding:.4rem .6rem;text-align:left;white-space:nowrap;border-bottom:1px solid var(--line)}
th{font-size:.75rem;color:var(--dim);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.path{white-space:normal;word-break:break-all}
tr:last-child td{border-bottom:0}
.empty{padding:.7rem .9rem;color:var(--dim)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.75rem;font-weight:600;color:#fff}
.up{background:var(--ok)}.down{background:var(--bad)}.probing{background:var(--warn)}.none{background:var(--dim)}
.meter{height:.5rem;min-width:6rem;background:var(--line);border-radius:4px;overflow:hidden}
.meter i{display:block;height:100%;background:var(--bar)}
.meter.full i{background:var(--bad)}
.dim{color:var(--dim)}.kind{font-weight:600}.kind.bad{color:var(--bad)}.kind.warn{color:var(--warn)}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 1rem}
@media (max-width:600px){main{padding:.6rem}header{padding:.7rem .8rem}.cards{grid-template-columns:1fr 1fr}.card b{font-size:1.2rem}
table.stack thead{display:none}table.stack tr{display:block;padding:.35rem 0;border-bottom:1px solid var(--line)}table.stack tr:last-child{border-bottom:0}
table.stack td{display:flex;justify-content:space-between;align-items:center;gap:1rem;border:0;padding:.15rem .8rem;white-space:normal;text-align:right}
table.stack td::before{content:attr(data-label);color:var(--dim);font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;text-align:left;white-space:nowrap}
.meter{width:8rem}}
"#;

/// The whole page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <link rel=\"icon\" href=\"{ICON}\">\
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
    let bound = (s.storage.max_bytes).map_or(String::new(), |max| format!("of {}", bytes(max)));
    let cards = [
        ("Requests", all.requests.to_string(), String::new()),
        (
            "Hit ratio",
            percent(all.hit_ratio),
            "of requests".to_string(),
        ),
        (
            "Byte hit ratio",
            percent(all.byte_hit_ratio),
            "of bytes".to_string(),
        ),
        ("Egress saved", bytes(all.egress_saved_bytes), String::new()),
        ("Fetched upstream", bytes(all.upstream_bytes), String::new()),
        ("Stored", bytes(s.storage.bytes), bound),
        ("Objects", s.storage.objects.to_string(), String::new()),
        ("Fills now", s.fills.len().to_string(), String::new()),
    ];
    let _ = write!(
        out,
        "<div class=\"cards\" id=\"summary\" data-hit-ratio=\"{}\" data-byte-hit-ratio=\"{}\" data-egress-saved=\"{}\">",
        raw_ratio(all.hit_ratio),
        raw_ratio(all.byte_hit_ratio),
        all.egress_saved_bytes,
    );
    for (label, value, note) in cards {
        let _ = write!(
            out,
            "<div class=\"card\"><span>{label}</span><b>{}</b><small>{}</small></div>",
            escape(&value),
            escape(&note),
        );
    }
    out.push_str("</div>");
}

/// A column: its heading, and whether it holds a number (right-aligned).
type Column = (&'static str, bool);

/// A section holding a table whose rows stack into label–value lines on
/// a narrow screen; `None` for no rows writes `empty` instead.
struct Table<'a> {
    id: &'a str,
    title: &'a str,
    columns: &'a [Column],
    empty: &'a str,
}

impl Table<'_> {
    /// `rows`: each row's `<tr>` attributes and its cells' HTML.
    fn write(&self, out: &mut String, rows: Vec<(String, Vec<String>)>) {
        let _ = write!(out, "<section id=\"{}\"><h2>{}</h2>", self.id, self.title);
        if rows.is_empty() {
            let _ = write!(out, "<p class=\"empty\">{}</p></section>", self.empty);
            return;
        }
        out.push_str("<div class=\"scroll\"><table class=\"stack\"><thead><tr>");
        for (label, numeric) in self.columns {
            let class = if *numeric { " class=\"n\"" } else { "" };
            let _ = write!(out, "<th{class}>{label}</th>");
        }
        out.push_str("</tr></thead><tbody>");
        for (attributes, cells) in rows {
            let _ = write!(out, "<tr{attributes}>");
            for ((label, numeric), cell) in self.columns.iter().zip(cells) {
                let class = if *numeric { " class=\"n\"" } else { "" };
                // One child beside the label a phone's layout adds.
                let _ = write!(
                    out,
                    "<td{class} data-label=\"{label}\"><div>{cell}</div></td>"
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table></div></section>");
    }
}

fn remotes(out: &mut String, s: &Snapshot) {
    let table = Table {
        id: "remotes",
        title: "Remotes",
        columns: &[
            ("Remote", false),
            ("Upstream", false),
            ("Requests", true),
            ("Hit ratio", true),
            ("By bytes", true),
            ("Egress saved", true),
            ("Fetched", true),
            ("Stored", true),
            ("Of bound", false),
            ("Errors", true),
            ("5xx", true),
            ("Mismatches", true),
        ],
        empty: "No remote configured.",
    };
    let rows = (s.remotes.iter())
        .map(|r| remote_row(r, s.storage.max_bytes))
        .collect();
    table.write(out, rows);
}

fn remote_row(r: &RemoteView, bound: Option<u64>) -> (String, Vec<String>) {
    let breaker = match r.breaker {
        "up" | "down" | "probing" => r.breaker,
        _ => "none",
    };
    let label = match breaker {
        "none" => r.kind,
        other => other,
    };
    let share = bound.map(|max| r.stored_bytes as f64 / max.max(1) as f64);
    let name = escape(&r.name);
    let attributes = format!(
        " class=\"remote\" data-remote=\"{name}\" data-breaker=\"{breaker}\" data-requests=\"{}\" \
         data-hit-ratio=\"{}\" data-byte-hit-ratio=\"{}\" data-egress-saved=\"{}\" data-stored-bytes=\"{}\"",
        r.requests,
        raw_ratio(r.hit_ratio),
        raw_ratio(r.byte_hit_ratio),
        r.egress_saved_bytes,
        r.stored_bytes,
    );
    let cells = vec![
        format!(
            "<b>{name}</b> <span class=\"dim\">{}</span>",
            escape(r.package)
        ),
        format!("<span class=\"badge {breaker}\">{label}</span>"),
        r.requests.to_string(),
        percent(r.hit_ratio),
        percent(r.byte_hit_ratio),
        bytes(r.egress_saved_bytes),
        bytes(r.upstream_bytes),
        format!(
            "{} <span class=\"dim\">({} obj)</span>",
            bytes(r.stored_bytes),
            r.stored_objects
        ),
        share.map_or("-".to_string(), meter),
        r.upstream_errors.to_string(),
        r.server_errors.to_string(),
        r.mismatches.to_string(),
    ];
    (attributes, cells)
}

fn fills(out: &mut String, fills: &[FillRow]) {
    let table = Table {
        id: "fills",
        title: "Fills in progress",
        columns: &[
            ("Remote", false),
            ("Path", false),
            ("Progress", false),
            ("Bytes", true),
            ("Rate", true),
            ("Followers", true),
            ("Upstream fetches", true),
            ("Running", true),
            ("Idle", true),
        ],
        empty: "No fill in progress.",
    };
    let rows = fills.iter().map(fill_row).collect();
    table.write(out, rows);
}

fn fill_row(fill: &FillRow) -> (String, Vec<String>) {
    let done = fill.expected.map(|e| fill.written as f64 / e.max(1) as f64);
    let of = (fill.expected).map_or(String::new(), |e| format!(" / {}", bytes(e)));
    let path = escape(&fill.path);
    let attributes = format!(
        " class=\"fill\" data-remote=\"{}\" data-path=\"{path}\" data-written=\"{}\" data-expected=\"{}\" data-followers=\"{}\"",
        escape(&fill.remote),
        fill.written,
        fill.expected.map_or(String::new(), |e| e.to_string()),
        fill.followers,
    );
    let cells = vec![
        escape(&fill.remote),
        path,
        done.map_or("-".to_string(), meter),
        format!("{}{of}", bytes(fill.written)),
        format!("{}/s", bytes(fill.bytes_per_second as u64)),
        fill.followers.to_string(),
        match (fill.upstream_fetches, fill.fetches_in_flight) {
            (Some(started), Some(in_flight)) => format!("{in_flight} of {started}"),
            _ => "1 of 1".to_string(),
        },
        duration(fill.elapsed_seconds),
        duration(fill.idle_seconds),
    ];
    (attributes, cells)
}

fn problems(out: &mut String, s: &Snapshot) {
    let table = Table {
        id: "problems",
        title: "Recent errors and mismatches",
        columns: &[
            ("When", false),
            ("What", false),
            ("Remote", false),
            ("Path", false),
            ("Detail", false),
        ],
        empty: "None since start.",
    };
    let rows = (s.problems.iter())
        .map(|p| problem_row(p, s.generated_at))
        .collect();
    table.write(out, rows);
}

fn problem_row(p: &Problem, now: u64) -> (String, Vec<String>) {
    let (kind, word, class) = match p.kind {
        ProblemKind::UpstreamError => ("upstream_error", "upstream error", "bad"),
        ProblemKind::ServedStale => ("served_stale", "served stale", "warn"),
        ProblemKind::ChecksumMismatch => ("checksum_mismatch", "checksum mismatch", "bad"),
        ProblemKind::DigestMismatch => ("digest_mismatch", "digest mismatch", "bad"),
        ProblemKind::InvalidDocument => ("invalid_document", "invalid document", "bad"),
    };
    let attributes = format!(
        " class=\"problem\" data-kind=\"{kind}\" data-remote=\"{}\"",
        escape(&p.remote)
    );
    let cells = vec![
        format!("{} ago", duration(now.saturating_sub(p.at) as f64)),
        format!("<span class=\"kind {class}\">{word}</span>"),
        escape(&p.remote),
        format!("<span class=\"path\">{}</span>", escape(&p.path)),
        format!("<span class=\"path\">{}</span>", escape(&p.detail)),
    ];
    (attributes, cells)
}

fn top_list(out: &mut String, id: &str, title: &str, entries: &[TopEntry]) {
    let table = Table {
        id,
        title,
        columns: &[
            ("Remote", false),
            ("Path", false),
            ("Size", true),
            ("Hits", true),
        ],
        empty: "Nothing cached yet.",
    };
    let rows = (entries.iter())
        .map(|entry| {
            let cells = vec![
                escape(&entry.remote),
                format!("<span class=\"path\">{}</span>", escape(&entry.path)),
                bytes(entry.size.max(0) as u64),
                entry.hits.to_string(),
            ];
            (String::new(), cells)
        })
        .collect();
    table.write(out, rows);
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
                upstream_fetches: Some(6),
                fetches_in_flight: Some(4),
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
        assert!(
            html.contains("<div>4 of 6</div>"),
            "fetches in flight of those started"
        );
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
        for outside in ["src=", "url(", "@import", "<script"] {
            assert!(!html.contains(outside), "{outside} in the page");
        }
        let links = html.matches("href=").count();
        let inline = html.matches("href=\"data:").count();
        assert_eq!((links, inline), (1, 1), "only the inline icon links");
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
