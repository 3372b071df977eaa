//! Advisories in the OSV format, the format of the OpenSSF
//! malicious-packages data set (`MAL-*` records): one JSON object per
//! record, `affected[].package.{ecosystem,name}` with explicit `versions`
//! and/or `ranges` of `introduced`/`fixed`/`last_affected` events.
//!
//! Only the ecosystems artifactd serves are read (`npm`, `PyPI`); a
//! withdrawn record is skipped; an affected package listing neither
//! versions nor ranges is taken as every version (a malicious package's
//! records often name the package only).

use super::versions::{IntervalEnd, Version, VersionTest};
use crate::ecosystem::{pypi, Ecosystem};
use serde::Deserialize;

/// One affected package of an advisory, compiled.
#[derive(Debug, Clone)]
pub struct Advisory {
    /// The record's `id` (`MAL-2026-1234`).
    pub id: String,
    /// Its `summary` (or `details`' first line), for the refusal.
    pub summary: String,
    pub ecosystem: Ecosystem,
    /// The package name in its format's normal form.
    pub name: String,
    /// Any passing test makes a version affected.
    pub versions: Vec<VersionTest>,
}

#[derive(Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    affected: Vec<Affected>,
}

#[derive(Deserialize)]
struct Affected {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    ranges: Vec<Range>,
}

#[derive(Deserialize)]
struct Package {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize, Default)]
struct Event {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
}

/// The artifactd format of an OSV ecosystem name (`PyPI`, `npm`).
fn ecosystem_of(osv: &str) -> Option<Ecosystem> {
    match osv {
        "npm" => Some(Ecosystem::Npm),
        "PyPI" => Some(Ecosystem::Pypi),
        _ => None,
    }
}

/// A package name in the normal form of its format.
pub fn normal_name(ecosystem: Ecosystem, name: &str) -> String {
    match ecosystem {
        Ecosystem::Pypi => pypi::normalize(name),
        _ => name.to_string(),
    }
}

/// Reads one OSV record (a JSON object) or a list of them; the error
/// says what is wrong with the text.
pub fn parse(text: &[u8]) -> Result<Vec<Advisory>, String> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let records: Vec<Record> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|r| vec![r])
    }
    .map_err(|e| format!("not an OSV record: {e}"))?;
    Ok(records.into_iter().flat_map(compile).collect())
}

fn compile(record: Record) -> Vec<Advisory> {
    if record.withdrawn.is_some() {
        return Vec::new();
    }
    let summary = record
        .summary
        .or_else(|| {
            record
                .details
                .and_then(|d| d.lines().next().map(str::to_string))
        })
        .unwrap_or_default();
    record
        .affected
        .into_iter()
        .filter_map(|affected| {
            let package = affected.package.as_ref()?;
            let ecosystem = ecosystem_of(&package.ecosystem)?;
            let mut versions: Vec<VersionTest> = affected
                .versions
                .iter()
                .map(|v| VersionTest::Exact(Version::parse(ecosystem, v)))
                .collect();
            for range in affected.ranges.iter().filter(|r| r.kind != "GIT") {
                versions.extend(intervals(ecosystem, &range.events));
            }
            if affected.versions.is_empty() && affected.ranges.is_empty() {
                versions.push(VersionTest::Any);
            }
            Some(Advisory {
                id: record.id.clone(),
                summary: summary.clone(),
                ecosystem,
                name: normal_name(ecosystem, &package.name),
                versions,
            })
        })
        .collect()
}

/// The intervals of one range's events, in order: each `introduced`
/// opens one, the next `fixed` or `last_affected` closes it.
fn intervals(ecosystem: Ecosystem, events: &[Event]) -> Vec<VersionTest> {
    let version = |text: &str| Version::parse(ecosystem, text);
    let mut out = Vec::new();
    let mut open: Option<Option<Version>> = None;
    for event in events {
        if let Some(start) = &event.introduced {
            open = Some((start != "0").then(|| version(start)));
        }
        let end = match (&event.fixed, &event.last_affected) {
            (Some(fixed), _) => IntervalEnd::Fixed(version(fixed)),
            (None, Some(last)) => IntervalEnd::LastAffected(version(last)),
            (None, None) => continue,
        };
        if let Some(introduced) = open.take() {
            out.push(VersionTest::Interval { introduced, end });
        }
    }
    if let Some(introduced) = open {
        out.push(VersionTest::Interval {
            introduced,
            end: IntervalEnd::Open,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affected(advisory: &Advisory, version: &str) -> bool {
        let version = Version::parse(advisory.ecosystem, version);
        advisory.versions.iter().any(|t| t.matches(&version))
    }

    #[test]
    fn reads_a_malicious_packages_record() {
        let record = br#"{
          "id": "MAL-2026-1234", "summary": "Malicious code in acc-demo (PyPI)",
          "affected": [
            {"package": {"ecosystem": "PyPI", "name": "Acc_Demo"}, "versions": ["1.1.0"]},
            {"package": {"ecosystem": "npm", "name": "acc-npm-demo"},
             "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.1.0"}, {"fixed": "1.2.0"}]}]},
            {"package": {"ecosystem": "Maven", "name": "a:b"}, "versions": ["1"]}
          ]}"#;
        let advisories = parse(record).unwrap();
        assert_eq!(advisories.len(), 2);
        let pypi = &advisories[0];
        assert_eq!(
            (pypi.id.as_str(), pypi.name.as_str()),
            ("MAL-2026-1234", "acc-demo")
        );
        assert!(affected(pypi, "1.1") && !affected(pypi, "1.0.0"));
        let npm = &advisories[1];
        assert!(affected(npm, "1.1.5") && !affected(npm, "1.2.0") && !affected(npm, "1.0.0"));
    }

    #[test]
    fn a_package_without_versions_is_wholly_affected() {
        let record = br#"[{"id": "MAL-1", "details": "first line\nmore",
            "affected": [{"package": {"ecosystem": "npm", "name": "evil"}}]},
            {"id": "MAL-2", "withdrawn": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "npm", "name": "fine"}}]}]"#;
        let advisories = parse(record).unwrap();
        assert_eq!(advisories.len(), 1);
        assert_eq!(advisories[0].summary, "first line");
        assert!(affected(&advisories[0], "0.0.1"));
    }

    #[test]
    fn introduced_zero_opens_from_the_first_version() {
        let record = br#"{"id": "MAL-3", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "2.0"}]}]}]}"#;
        let advisory = &parse(record).unwrap()[0];
        assert!(
            affected(advisory, "0.1") && affected(advisory, "2.0") && !affected(advisory, "2.0.1")
        );
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"summary": "no id"}"#)
            .unwrap_err()
            .contains("id"));
    }
}
