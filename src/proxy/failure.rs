//! Failures the proxy tells apart by name (a leaf, so that whoever raises
//! one and whoever reads it need nothing of each other).

/// The error that keeps the previous snapshot of a repository served.
pub const SNAPSHOT_PENDING: &str = "new repository snapshot not cached yet";
