//! Versions and version ranges in each format's own order: semver for npm
//! and Helm, PEP 440 for PyPI, plain text (exact or `*` globs) for the
//! rest (image tags and digests).
//!
//! Ranges are written in the format's native syntax, so an operator copies
//! them from the advisory or the client: npm's `>=1.0.0 <1.2.0` and `||`,
//! PEP 440's `>=1.0,<1.2` and `~=1.4`. OSV ranges (`introduced`/`fixed`
//! events) compile to [`VersionTest::Interval`] in the same order.

use crate::ecosystem::Ecosystem;
use std::cmp::Ordering;
use std::str::FromStr;

/// A version, parsed in its format's order when it parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Semver(semver::Version),
    Pep440(pep440_rs::Version),
    /// Not a version of the format's scheme (or a format without one):
    /// only exact and glob tests match it.
    Text(String),
}

/// Whether a format orders its versions by semver.
fn uses_semver(ecosystem: Ecosystem) -> bool {
    matches!(ecosystem, Ecosystem::Npm | Ecosystem::Helm)
}

impl Version {
    /// Parses `text` in the order of `ecosystem`, falling back to text.
    pub fn parse(ecosystem: Ecosystem, text: &str) -> Version {
        let text = text.trim();
        if uses_semver(ecosystem) {
            let bare = text.strip_prefix('v').unwrap_or(text);
            if let Ok(version) = semver::Version::parse(bare) {
                return Version::Semver(version);
            }
        } else if ecosystem == Ecosystem::Pypi {
            if let Ok(version) = pep440_rs::Version::from_str(text) {
                return Version::Pep440(version);
            }
        }
        Version::Text(text.to_string())
    }

    /// Compares two versions of the same scheme; `None` across schemes.
    fn compare(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Semver(a), Version::Semver(b)) => Some(a.cmp(b)),
            (Version::Pep440(a), Version::Pep440(b)) => Some(a.cmp(b)),
            (Version::Text(a), Version::Text(b)) if a == b => Some(Ordering::Equal),
            _ => None,
        }
    }
}

/// One test a version passes or fails.
#[derive(Debug, Clone)]
pub enum VersionTest {
    /// Every version.
    Any,
    Exact(Version),
    /// An npm/Helm range (`||` alternatives are separate tests).
    Semver(semver::VersionReq),
    /// PEP 440 specifiers (`>=1.0,<2`).
    Pep440(pep440_rs::VersionSpecifiers),
    /// A text pattern with `*` (image tags).
    Glob(regex::Regex),
    /// An OSV range: from `introduced` (none: from the first version) up
    /// to `end`.
    Interval {
        introduced: Option<Version>,
        end: IntervalEnd,
    },
}

/// Where an OSV interval ends.
#[derive(Debug, Clone)]
pub enum IntervalEnd {
    Open,
    /// `fixed`: this version is not affected.
    Fixed(Version),
    /// `last_affected`: this version is the last affected.
    LastAffected(Version),
}

impl VersionTest {
    /// Parses one entry of a rule's `versions` list in the native syntax of
    /// `ecosystem`; an npm `a || b` gives two tests.
    pub fn parse(ecosystem: Ecosystem, spec: &str) -> Result<Vec<VersionTest>, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("an empty version".into());
        }
        if spec == "*" {
            return Ok(vec![VersionTest::Any]);
        }
        if uses_semver(ecosystem) {
            return spec
                .split("||")
                .map(|one| semver_test(one.trim()))
                .collect();
        }
        if ecosystem == Ecosystem::Pypi {
            if let Ok(version) = pep440_rs::Version::from_str(spec) {
                return Ok(vec![VersionTest::Exact(Version::Pep440(version))]);
            }
            return pep440_rs::VersionSpecifiers::from_str(spec)
                .map(|s| vec![VersionTest::Pep440(s)])
                .map_err(|e| format!("{spec:?} is not a PEP 440 version or specifier: {e}"));
        }
        if spec.contains('*') {
            return Ok(vec![VersionTest::Glob(glob(spec))]);
        }
        Ok(vec![VersionTest::Exact(Version::Text(spec.to_string()))])
    }

    /// Whether `version` passes.
    pub fn matches(&self, version: &Version) -> bool {
        match (self, version) {
            (VersionTest::Any, _) => true,
            (VersionTest::Exact(want), have) => have.compare(want) == Some(Ordering::Equal),
            (VersionTest::Semver(req), Version::Semver(have)) => req.matches(have),
            (VersionTest::Pep440(specifiers), Version::Pep440(have)) => specifiers.contains(have),
            (VersionTest::Glob(pattern), Version::Text(have)) => pattern.is_match(have),
            (VersionTest::Interval { introduced, end }, have) => {
                let after_start = introduced
                    .as_ref()
                    .is_none_or(|start| have.compare(start).is_some_and(Ordering::is_ge));
                let before_end = match end {
                    IntervalEnd::Open => true,
                    IntervalEnd::Fixed(fixed) => have.compare(fixed).is_some_and(Ordering::is_lt),
                    IntervalEnd::LastAffected(last) => {
                        have.compare(last).is_some_and(Ordering::is_le)
                    }
                };
                after_start && before_end
            }
            _ => false,
        }
    }
}

/// An npm-style comparator set (`>=1.0.0 <2.0.0`, `^1.2`, `1.2.3`) as a
/// semver test: comparators separated by spaces are joined as the
/// `semver` crate spells them (with commas).
fn semver_test(spec: &str) -> Result<VersionTest, String> {
    let bare = spec.strip_prefix('v').unwrap_or(spec);
    if let Ok(version) = semver::Version::parse(bare.strip_prefix('=').unwrap_or(bare)) {
        return Ok(VersionTest::Exact(Version::Semver(version)));
    }
    let comparators: Vec<String> = if spec.contains(',') {
        vec![spec.to_string()]
    } else {
        join_operators(spec)
    };
    semver::VersionReq::parse(&comparators.join(", "))
        .map(VersionTest::Semver)
        .map_err(|e| format!("{spec:?} is not a semver version or range: {e}"))
}

/// Splits `>= 1.0.0 <2` into `[">=1.0.0", "<2"]`: an operator written
/// apart from its version is joined to it.
fn join_operators(spec: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending = String::new();
    for word in spec.split_whitespace() {
        if word.chars().all(|c| "<>=~^".contains(c)) {
            pending.push_str(word);
        } else {
            out.push(format!("{pending}{word}"));
            pending.clear();
        }
    }
    out
}

/// A glob with `*` as a regex matching the whole text.
pub fn glob(pattern: &str) -> regex::Regex {
    let body = pattern
        .split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    regex::Regex::new(&format!("^{body}$")).expect("escaped glob is a valid regex")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(ecosystem: Ecosystem, spec: &str, version: &str) -> bool {
        let version = Version::parse(ecosystem, version);
        VersionTest::parse(ecosystem, spec)
            .unwrap()
            .iter()
            .any(|t| t.matches(&version))
    }

    #[test]
    fn npm_ranges_in_npm_syntax() {
        assert!(passes(Ecosystem::Npm, "1.1.0", "1.1.0"));
        assert!(!passes(Ecosystem::Npm, "1.1.0", "1.1.1"));
        assert!(passes(Ecosystem::Npm, ">=1.0.0 <1.2.0", "1.1.5"));
        assert!(!passes(Ecosystem::Npm, ">=1.0.0 <1.2.0", "1.2.0"));
        assert!(passes(Ecosystem::Npm, ">= 2.0.0", "2.3.0"));
        assert!(passes(Ecosystem::Npm, "1.0.0 || ^3", "3.4.0"));
        assert!(!passes(Ecosystem::Npm, "1.0.0 || ^3", "2.0.0"));
        assert!(passes(Ecosystem::Npm, "*", "0.0.1-alpha"));
        assert!(VersionTest::parse(Ecosystem::Npm, "soon").is_err());
    }

    #[test]
    fn pypi_versions_compare_as_pep_440() {
        assert!(passes(Ecosystem::Pypi, "1.1", "1.1.0"));
        assert!(passes(Ecosystem::Pypi, ">=1.0,<1.2", "1.1.0"));
        assert!(!passes(Ecosystem::Pypi, ">=1.0,<1.2", "1.2.0rc1"));
        assert!(passes(Ecosystem::Pypi, "~=1.4", "1.9"));
        assert!(VersionTest::parse(Ecosystem::Pypi, "one").is_err());
    }

    #[test]
    fn tags_match_exactly_or_by_glob() {
        assert!(passes(Ecosystem::Docker, "1.27", "1.27"));
        assert!(!passes(Ecosystem::Docker, "1.27", "1.27.1"));
        assert!(passes(Ecosystem::Docker, "1.27*", "1.27.1"));
        assert!(!passes(Ecosystem::Docker, "*-debug", "1.27"));
    }

    #[test]
    fn osv_intervals() {
        let v = |s| Version::parse(Ecosystem::Npm, s);
        let fixed = VersionTest::Interval {
            introduced: Some(v("1.0.0")),
            end: IntervalEnd::Fixed(v("1.2.0")),
        };
        assert!(fixed.matches(&v("1.0.0")) && fixed.matches(&v("1.1.9")));
        assert!(!fixed.matches(&v("1.2.0")) && !fixed.matches(&v("0.9.0")));
        let last = VersionTest::Interval {
            introduced: None,
            end: IntervalEnd::LastAffected(v("2.0.0")),
        };
        assert!(last.matches(&v("2.0.0")) && !last.matches(&v("2.0.1")));
        let open = VersionTest::Interval {
            introduced: None,
            end: IntervalEnd::Open,
        };
        assert!(open.matches(&v("9.9.9")) && open.matches(&v("not-semver")));
    }
}
