//! Where a response came from, decided once per request and read by the
//! `X-Artifact-Source` header, the request histogram's `source` label and
//! the access log, so that the three never disagree.

/// The response header that says it: `cache` or `remote` ([`ServedFrom::header`]).
pub const HEADER: &str = "x-artifact-source";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServedFrom {
    /// A fresh cached copy.
    Hit,
    /// Fetched from the upstream (or streamed from another node's fill).
    Miss,
    /// An expired copy (upstream failing, or revalidating behind it).
    Stale,
    /// An expired copy the upstream confirmed (304).
    Revalidated,
    /// A local repository's own file.
    Local,
    /// Not a cached artifact: admin, virtual repositories, refusals, errors.
    Passed,
}

impl ServedFrom {
    /// In declaration order, so `served as usize` is a position here.
    pub const ALL: [ServedFrom; 6] = [
        ServedFrom::Hit,
        ServedFrom::Miss,
        ServedFrom::Stale,
        ServedFrom::Revalidated,
        ServedFrom::Local,
        ServedFrom::Passed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServedFrom::Hit => "hit",
            ServedFrom::Miss => "miss",
            ServedFrom::Stale => "stale",
            ServedFrom::Revalidated => "revalidated",
            ServedFrom::Local => "local",
            ServedFrom::Passed => "passed",
        }
    }

    /// Whether the body came from the cache (fresh, stale or confirmed by
    /// the upstream): what the hit ratios count as hits.
    pub fn is_cached(self) -> bool {
        matches!(
            self,
            ServedFrom::Hit | ServedFrom::Stale | ServedFrom::Revalidated
        )
    }

    /// `X-Artifact-Source` of a cached artifact's response: `cache` when
    /// the body came from storage, `remote` when from the upstream. A
    /// follower of another node's fill says `cache`: that fill is the
    /// cluster's cache, as a fill on this node is for a follower here.
    pub fn header(self, follows_peer: bool) -> &'static str {
        match self {
            _ if self.is_cached() || follows_peer => "cache",
            _ => "remote",
        }
    }
}
