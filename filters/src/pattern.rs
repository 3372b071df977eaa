//! Pattern sets with Python `re.search` semantics.
//!
//! `remotes.yaml` patterns were written for Python's `re.search`: unanchored
//! unless the pattern anchors itself. The `regex` crate's `is_match` has the
//! same search semantics and its `RegexSet` matches all patterns in one pass,
//! so matching cost stays flat as a remote's pattern list grows. `regex` lacks
//! look-around and backreferences, which some real configs use (the npm
//! example `^(?!.*\.tgz$).*`); only those patterns fall back to `fancy-regex`,
//! one at a time.

use regex::RegexSet;

/// A pattern that neither `regex` nor `fancy-regex` accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex {pattern:?}: {message}")]
pub struct PatternError {
    /// Position of the pattern in the list it came from.
    pub index: usize,
    /// The pattern as written.
    pub pattern: String,
    /// The compiler's explanation.
    pub message: String,
}

/// A compiled list of patterns; matches when any pattern matches.
#[derive(Debug, Clone)]
pub struct PatternSet {
    fast: RegexSet,
    fallback: Vec<fancy_regex::Regex>,
    sources: Vec<String>,
}

impl PatternSet {
    /// Compiles `patterns`, reporting the first one that does not compile.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut fast = Vec::new();
        let mut fallback = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            if regex::Regex::new(pattern).is_ok() {
                fast.push(pattern);
                continue;
            }
            let compiled = fancy_regex::Regex::new(pattern).map_err(|e| PatternError {
                index,
                pattern: pattern.to_string(),
                message: e.to_string(),
            })?;
            fallback.push(compiled);
        }
        let fast = RegexSet::new(&fast).map_err(|e| PatternError {
            index: 0,
            pattern: fast.join(" | "),
            message: e.to_string(),
        })?;
        Ok(PatternSet {
            fast,
            fallback,
            sources: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// An empty set, which matches nothing.
    pub fn empty() -> Self {
        PatternSet {
            fast: RegexSet::empty(),
            fallback: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Whether any pattern matches anywhere in `haystack` (`re.search`).
    ///
    /// A `fancy-regex` pattern that exceeds its backtracking limit counts as
    /// no match: callers treat "no match" as the conservative answer.
    pub fn is_match(&self, haystack: &str) -> bool {
        self.fast.is_match(haystack)
            || self
                .fallback
                .iter()
                .any(|re| re.is_match(haystack).unwrap_or(false))
    }

    /// Whether the set holds no pattern at all.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The patterns as written, in order.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// How many patterns needed the slower look-around engine.
    pub fn fallback_count(&self) -> usize {
        self.fallback.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_semantics_are_unanchored() {
        let set = PatternSet::new(&["\\.tgz$", "index\\.yaml"]).unwrap();
        assert!(set.is_match("charts/foo-1.0.tgz"));
        assert!(set.is_match("a/index.yaml.bak"));
        assert!(!set.is_match("foo.tgz.sig"));
    }

    #[test]
    fn look_ahead_falls_back_to_fancy_regex() {
        let set = PatternSet::new(&["^(?!.*\\.tgz$).*"]).unwrap();
        assert_eq!(set.fallback_count(), 1);
        assert!(set.is_match("foo"));
        assert!(set.is_match("@scope/pkg"));
        assert!(!set.is_match("foo.tgz"));
        assert!(!set.is_match("pkg/-/pkg-1.0.0.tgz"));
    }

    #[test]
    fn bad_pattern_reports_index_and_text() {
        let err = PatternSet::new(&["ok", "broken(["]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(err.pattern, "broken([");
        assert!(err.to_string().contains("broken(["));
    }

    #[test]
    fn empty_set_matches_nothing() {
        assert!(!PatternSet::empty().is_match("anything"));
        assert!(PatternSet::new::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn many_patterns_stay_correct() {
        let patterns: Vec<String> = (0..1000).map(|i| format!("^pkg{i}/.*\\.whl$")).collect();
        let set = PatternSet::new(&patterns).unwrap();
        assert!(set.is_match("pkg999/a-1.0.whl"));
        assert!(!set.is_match("pkg1000/a-1.0.whl"));
        assert_eq!(set.fallback_count(), 0);
    }
}
