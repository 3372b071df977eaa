//! Generic remotes: any file layout, nothing changes in place unless the
//! remote's own `mutable_patterns` say so.

/// Built-in mutable patterns: none.
pub const MUTABLE_PATTERNS: &[&str] = &[];
