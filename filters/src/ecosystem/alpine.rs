//! Alpine package repositories: `APKINDEX.tar.gz` changes in place; the
//! `.apk` files it lists do not.

/// Built-in mutable patterns: the repository index.
pub const MUTABLE_PATTERNS: &[&str] = &[r"APKINDEX\.tar\.gz$"];
