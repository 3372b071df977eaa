//! What `PUT /cache/flush` removes, as the reference system's
//! `cache_type` parameter names it.
//!
//! The reference kept files in a bucket and the freshness of index files
//! in Redis: `files` emptied the bucket, `index` dropped the freshness so
//! index files were fetched again, `all` did both. artifactd keeps both
//! with the entry, so `files` and `all` remove every cached entry and
//! `index` removes the entries of mutable paths (index files, tag
//! manifests, metadata), which is what a script asking for it wants: the
//! next request fetches them anew, while immutable artifacts stay.

/// Which cached entries a flush removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// Everything cached (`all`, the default).
    All,
    /// Everything cached (`files`: artifactd keeps no index apart from
    /// its files).
    Files,
    /// The entries of mutable paths only (`index`, or `mutable`).
    Index,
}

impl CacheType {
    /// Parses the `cache_type` query value; `None` is `all`.
    pub fn parse(value: Option<&str>) -> Result<CacheType, String> {
        match value {
            None | Some("all") => Ok(CacheType::All),
            Some("files") => Ok(CacheType::Files),
            Some("index") | Some("mutable") => Ok(CacheType::Index),
            Some(other) => Err(format!(
                "cache_type {other:?}: expected all, files or index"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::All => "all",
            CacheType::Files => "files",
            CacheType::Index => "index",
        }
    }

    /// Whether only mutable paths go.
    pub fn mutable_only(self) -> bool {
        self == CacheType::Index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_and_the_default() {
        assert_eq!(CacheType::parse(None), Ok(CacheType::All));
        assert_eq!(CacheType::parse(Some("all")), Ok(CacheType::All));
        assert_eq!(CacheType::parse(Some("files")), Ok(CacheType::Files));
        assert_eq!(CacheType::parse(Some("index")), Ok(CacheType::Index));
        assert_eq!(CacheType::parse(Some("mutable")), Ok(CacheType::Index));
        assert!(CacheType::Index.mutable_only());
        assert!(!CacheType::Files.mutable_only());
    }

    #[test]
    fn an_unknown_type_is_named_in_the_error() {
        let error = CacheType::parse(Some("Index")).unwrap_err();
        assert!(error.contains("\"Index\""), "{error}");
        assert!(error.contains("all, files or index"), "{error}");
    }
}
