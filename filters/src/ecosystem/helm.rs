//! Helm chart repositories: `index.yaml` rewritten so that every chart URL
//! (relative or absolute) comes back through the remote, with the `digest`
//! each chart version publishes and the versions quarantine hides
//! (by `created`).
//!
//! An index is YAML and is rewritten whole; the proxy bounds its size.

use crate::links::LinkMap;
use serde_yaml_ng::Value;
use std::time::SystemTime;

use super::{Document, Request, Routed};

/// Built-in mutable patterns: the repository index.
pub const MUTABLE_PATTERNS: &[&str] = &[r"index\.yaml$"];

/// `index.yaml` is the document rewritten for each client.
pub fn route(request: &Request<'_>) -> Routed {
    let mut routed = Routed::file(request);
    if is_index(request.path) {
        routed.document = Some(Document::HelmIndex);
    }
    routed
}

/// Whether a (decoded) path of a Helm remote is a repository index.
pub fn is_index(path: &str) -> bool {
    path == "index.yaml" || path.ends_with("/index.yaml")
}

/// The chart and version of a chart archive (`charts/name-1.2.3.tgz`) or
/// its provenance file (`.tgz.prov`).
///
/// ```
/// let found = filters::ecosystem::helm::package_of("charts/my-app-1.2.3-rc.1.tgz").unwrap();
/// assert_eq!((found.name.as_str(), found.version.as_str()), ("my-app", "1.2.3-rc.1"));
/// ```
pub fn package_of(path: &str) -> Option<super::PackageVersion> {
    let filename = path.rsplit('/').next()?;
    let stem = filename
        .strip_suffix(".tgz.prov")
        .or_else(|| filename.strip_suffix(".tgz"))?;
    // Chart names may hold `-` and digits; a semver version starts with
    // a digit and has two dots before any `-` of a pre-release.
    let at = stem.char_indices().find_map(|(i, c)| {
        let rest = &stem[i + 1..];
        let core = rest.split(['-', '+']).next()?;
        let semver_core = core.split('.').count() == 3
            && core
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        (c == '-' && semver_core).then_some(i)
    })?;
    Some(super::PackageVersion {
        name: stem[..at].to_string(),
        version: stem[at + 1..].to_string(),
    })
}

/// A chart version an index links, after rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub name: String,
    pub version: String,
    /// Decoded remote paths of its URLs that come back through the remote.
    pub remote_paths: Vec<String>,
    /// `sha256:hex` from `digest`.
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a Helm repository index: {0}")]
pub struct IndexError(String);

/// What rewriting an index found and did.
#[derive(Debug, Default)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub charts: Vec<Chart>,
    /// `name version` of the versions removed by quarantine.
    pub hidden: Vec<String>,
}

/// Rewrites every `entries.*[].urls[]` through the remote; with
/// `hide_after`, leaves out chart versions `created` after that instant.
pub fn rewrite(
    doc: &[u8],
    map: &LinkMap,
    hide_after: Option<SystemTime>,
) -> Result<Rewritten, IndexError> {
    let mut value: Value = crate::yaml::from_slice(doc).map_err(IndexError)?;
    let entries = value
        .get_mut("entries")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| IndexError("no entries".into()))?;
    let mut out = Rewritten::default();
    for (name, versions) in entries.iter_mut() {
        let name = name.as_str().unwrap_or_default().to_string();
        let Some(versions) = versions.as_sequence_mut() else {
            continue;
        };
        if let Some(cutoff) = hide_after {
            versions.retain(|v| {
                let created = v
                    .get("created")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                let keep = created.is_none_or(|t| t <= cutoff);
                if !keep {
                    let version = v.get("version").and_then(Value::as_str).unwrap_or("?");
                    out.hidden.push(format!("{name} {version}"));
                }
                keep
            });
        }
        for version in versions.iter_mut() {
            out.charts.push(rewrite_version(&name, version, map));
        }
    }
    out.body = serde_yaml_ng::to_string(&value)
        .map_err(|e| IndexError(e.to_string()))?
        .into_bytes();
    Ok(out)
}

fn rewrite_version(name: &str, version: &mut Value, map: &LinkMap) -> Chart {
    let mut remote_paths = Vec::new();
    if let Some(urls) = version.get_mut("urls").and_then(Value::as_sequence_mut) {
        for url in urls.iter_mut() {
            let Some(text) = url.as_str() else { continue };
            let mapped = map.map(text);
            if let Some(path) = &mapped.remote_path {
                remote_paths.push(
                    percent_encoding::percent_decode_str(path)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
            *url = Value::String(mapped.url);
        }
    }
    let digest = version
        .get("digest")
        .and_then(Value::as_str)
        .map(|d| d.trim().trim_start_matches("sha256:").to_ascii_lowercase())
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|d| format!("sha256:{d}"));
    Chart {
        name: name.to_string(),
        version: version
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        remote_paths,
        digest,
    }
}

/// Merges the indexes of a virtual repository's members, in order: a
/// chart version comes from the first member that has it.
pub fn merge(indexes: Vec<Value>) -> Option<Value> {
    let mut indexes = indexes.into_iter();
    let mut merged = indexes.next()?;
    for index in indexes {
        let Some(from) = index.get("entries").and_then(Value::as_mapping) else {
            continue;
        };
        let Some(into) = merged.get_mut("entries").and_then(Value::as_mapping_mut) else {
            continue;
        };
        for (name, versions) in from {
            let Some(versions) = versions.as_sequence() else {
                continue;
            };
            let entry = into
                .entry(name.clone())
                .or_insert_with(|| Value::Sequence(Vec::new()));
            let Some(existing) = entry.as_sequence_mut() else {
                continue;
            };
            for version in versions {
                let present = existing
                    .iter()
                    .any(|v| v.get("version") == version.get("version"));
                if !present {
                    existing.push(version.clone());
                }
            }
        }
    }
    Some(merged)
}

/// RFC 3339 with any offset and fraction, as Helm writes `created`.
fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // `2024-01-02T03:04:05.123456789+02:00`: the offset is applied here
    // (humantime reads UTC only).
    let (stamp, sign, offset) = match text.rfind(['+', '-']) {
        Some(at) if at > 10 => (&text[..at], &text[at..at + 1], &text[at + 1..]),
        _ => return humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok(),
    };
    let (hours, minutes) = offset.split_once(':')?;
    let shift = std::time::Duration::from_secs(
        hours.parse::<u64>().ok()? * 3600 + minutes.parse::<u64>().ok()? * 60,
    );
    let local = humantime::parse_rfc3339_weak(stamp).ok()?;
    match sign {
        "+" => local.checked_sub(shift),
        _ => local.checked_add(shift),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Upstream;

    const INDEX: &str = include_str!("../../../tests/fixtures/helm/index.yaml");

    fn map() -> LinkMap {
        let upstream = Upstream::new("http://127.0.0.1:8879/charts", &[]).unwrap();
        LinkMap::new(
            "http://127.0.0.1:8879/charts/index.yaml",
            vec![upstream],
            "http://cache/api/v1/remote/helm/",
        )
        .unwrap()
    }

    #[test]
    fn every_chart_url_comes_back_through_the_remote() {
        let out = rewrite(INDEX.as_bytes(), &map(), None).unwrap();
        let doc: Value = serde_yaml_ng::from_slice(&out.body).unwrap();
        let demo = &doc["entries"]["demo"];
        assert_eq!(
            demo[0]["urls"][0],
            "http://cache/api/v1/remote/helm/demo-0.2.0.tgz"
        );
        assert_eq!(
            demo[1]["urls"][0],
            "http://cache/api/v1/remote/helm/archive/demo-0.1.0.tgz"
        );
        let other = &doc["entries"]["other"][0]["urls"];
        assert_eq!(
            other[0], "https://charts.elsewhere.example/other-1.0.0.tgz",
            "foreign URL kept"
        );
        assert_eq!(out.charts.len(), 3);
        assert_eq!(out.charts[0].remote_paths, ["demo-0.2.0.tgz"]);
        assert_eq!(out.charts[1].remote_paths, ["archive/demo-0.1.0.tgz"]);
        assert!(out.charts[0]
            .digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:"));
        assert_eq!(doc["apiVersion"], "v1", "the rest of the index is kept");
        assert!(rewrite(b"apiVersion: v1\n", &map(), None).is_err());
    }

    #[test]
    fn quarantine_hides_recently_created_versions() {
        let cutoff = humantime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let out = rewrite(INDEX.as_bytes(), &map(), Some(cutoff)).unwrap();
        assert_eq!(out.hidden, ["demo 0.2.0"]);
        let doc: Value = serde_yaml_ng::from_slice(&out.body).unwrap();
        assert_eq!(doc["entries"]["demo"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn members_merge_first_version_wins() {
        let a: Value =
            serde_yaml_ng::from_str("entries:\n  x:\n  - {version: 1.0.0, urls: [a]}\n").unwrap();
        let b: Value = serde_yaml_ng::from_str("entries:\n  x:\n  - {version: 1.0.0, urls: [b]}\n  - {version: 0.9.0, urls: [b]}\n  y:\n  - {version: 2.0.0, urls: [b]}\n").unwrap();
        let merged = merge(vec![a, b]).unwrap();
        let x = merged["entries"]["x"].as_sequence().unwrap();
        assert_eq!(x.len(), 2);
        assert_eq!(x[0]["urls"][0], "a");
        assert_eq!(merged["entries"]["y"][0]["version"], "2.0.0");
    }

    #[test]
    fn created_times_with_offsets() {
        let utc = parse_time("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(
            parse_time("2026-01-02T05:04:05.5+02:00").unwrap(),
            utc + std::time::Duration::from_millis(500)
        );
        assert_eq!(parse_time("2026-01-02T01:04:05-02:00").unwrap(), utc);
        assert_eq!(parse_time("yesterday"), None);
    }
}
