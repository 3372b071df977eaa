//! Pattern sets with Python `re.search` semantics.
//!
//! `remotes.yaml` patterns were written for Python's `re.search`: unanchored
//! unless the pattern anchors itself. The `regex` crate's `is_match` has the
//! same search semantics and its `RegexSet` matches all patterns in one pass,
//! so matching cost stays flat as a remote's pattern list grows. `regex` lacks
//! look-around and backreferences, which some real configs use (the npm
//! example `^(?!.*\.tgz$).*`); only those patterns fall back to `fancy-regex`,
//! one at a time.
//!
//! Both are bounded against a hostile or careless `remotes.yaml`: a list
//! holds at most [`MAX_PATTERNS`] (so a start never spends seconds
//! compiling), `regex` refuses a set past its compiled size limit, and a
//! look-around pattern gives up after [`BACKTRACK_LIMIT`] backtracking
//! steps (well under a millisecond) and counts as no match, so a path
//! crafted to backtrack costs a request no more than that.

use regex::RegexSet;

/// Patterns one list may hold.
pub const MAX_PATTERNS: usize = 1000;
/// Backtracking steps a `fancy-regex` match may take (its default is 1,000,000:
/// about 13 ms of CPU on a crafted path, per pattern and request).
pub const BACKTRACK_LIMIT: usize = 10_000;

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
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError {
                index: MAX_PATTERNS,
                pattern: patterns[MAX_PATTERNS].as_ref().to_string(),
                message: format!(
                    "the list has {} patterns, at most {MAX_PATTERNS} are allowed",
                    patterns.len()
                ),
            });
        }
        let mut fast = Vec::new();
        let mut fallback = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            if regex::Regex::new(pattern).is_ok() {
                fast.push(pattern);
                continue;
            }
            let compiled = fancy_regex::RegexBuilder::new(pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map_err(|e| PatternError {
                    index,
                    pattern: pattern.to_string(),
                    message: e.to_string(),
                })?;
            fallback.push(compiled);
        }
        // Each compiled alone; together they may still pass the size limit.
        let fast = RegexSet::new(&fast).map_err(|e| PatternError {
            index: 0,
            pattern: format!("all {} patterns together", fast.len()),
            message: e.to_string().chars().take(200).collect(),
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
    fn a_list_too_long_is_refused_before_anything_is_compiled() {
        let patterns: Vec<String> = (0..100_000).map(|i| format!("^p{i}/")).collect();
        let started = std::time::Instant::now();
        let error = PatternSet::new(&patterns).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(error.index, MAX_PATTERNS);
        assert!(error.message.contains("100000 patterns"), "{error}");
        assert!(PatternSet::new(&patterns[..MAX_PATTERNS]).is_ok());
    }

    #[test]
    fn a_crafted_path_backtracks_a_bounded_time_and_does_not_match() {
        let set = PatternSet::new(&["^(?!x)(a|aa)+$"]).unwrap();
        assert_eq!(set.fallback_count(), 1);
        let crafted = format!("{}!", "a".repeat(2000));
        let started = std::time::Instant::now();
        assert!(!set.is_match(&crafted));
        // Debug builds are ~20x slower than release: still bounded.
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(set.is_match("aaaa"));
    }

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
