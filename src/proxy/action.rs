//! What the request phase decided a request is: the handler it goes to,
//! or the answer it gets at once (a leaf, so that the deciders of each
//! kind of request need nothing of each other).

use super::artifact::Artifact;
use crate::config::Remote;
use crate::reply::Reply;
use filters::{AdminRoute, CacheApiRoute};
use std::sync::Arc;

pub enum Action {
    /// Answer at once (errors, denials).
    Reply(Reply),
    /// An admin endpoint, answered by `admin::answer`.
    Admin(AdminRequest),
    /// A local repository operation; the path is validated and decoded.
    Local { remote: Arc<Remote>, path: String },
    /// A virtual repository: its members answer.
    Virtual {
        remote: Arc<Remote>,
        /// Decoded, validated.
        path: String,
        /// As the client sent it, for the members.
        raw_path: String,
    },
    /// Continue into the cache and, on a miss, the upstream.
    Proxy(Artifact),
}

/// The admin endpoints: the server's own, the cache API and its jobs, and
/// a remote's catalog listing.
pub enum AdminRequest {
    Route(AdminRoute),
    /// The catalog listing of one remote (already known to exist).
    ArtifactList(Arc<Remote>),
    /// One of the cache API's endpoints.
    CacheApi(CacheApiRoute),
    /// A background job's status.
    Job {
        id: String,
    },
}

/// What a request is, with the outcome counted for refusals.
pub struct Decision {
    pub action: Action,
    pub remote: Option<String>,
    pub denied: bool,
    /// The firewall rule that refused it, and why, for the log and metrics.
    pub firewall: Option<(String, String)>,
}
