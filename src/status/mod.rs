//! The status page: what an operator asks of a cache first — how much it
//! saves (hit ratios by requests and by bytes, egress saved), whether
//! anything is wrong (breakers, upstream errors, refused bodies, storage
//! against its bound) and what it does now (fills in progress, with their
//! followers) — gathered into one [`Snapshot`] and answered as HTML
//! ([`page`]) at `/status`, and at `/` for a browser, or as JSON.
//!
//! The ratios come from the same counters `/metrics` encodes
//! ([`crate::metrics::RemoteTotals`]), so the page and a dashboard agree.
//! The top lists come from the catalog, asked at most once per
//! half minute however often the page refreshes ([`top_lists`]).

pub mod page;
pub mod top_lists;

use crate::app::App;
use crate::catalog::TopEntry;
use crate::metrics::recent::Problem;
use crate::metrics::RemoteTotals;
use crate::reply::Reply;
use crate::storage::index::RemoteUsage;
use http::StatusCode;
use pingora::http::RequestHeader;
use serde::Serialize;
use std::time::SystemTime;

/// Everything the page shows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub revision: &'static str,
    pub uptime_seconds: u64,
    /// Unix seconds.
    pub generated_at: u64,
    pub in_flight: i64,
    pub cluster: Option<ClusterView>,
    pub remotes: Vec<RemoteView>,
    /// Every remote's counters summed.
    pub all: RemoteView,
    pub storage: StorageView,
    pub fills: Vec<FillRow>,
    pub problems: Vec<Problem>,
    pub largest: Vec<TopEntry>,
    pub most_requested: Vec<TopEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The address other nodes reach this one at.
    pub this_node: String,
    /// Every node seen recently, this one included.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoteView {
    pub name: String,
    pub kind: &'static str,
    pub package: &'static str,
    /// `up`, `down` or `probing`; `-` for a remote without an upstream.
    pub breaker: &'static str,
    pub requests: u64,
    pub hit_ratio: Option<f64>,
    pub byte_hit_ratio: Option<f64>,
    pub served_bytes: u64,
    pub egress_saved_bytes: u64,
    pub upstream_bytes: u64,
    pub upstream_errors: u64,
    pub server_errors: u64,
    pub mismatches: u64,
    pub refused: u64,
    pub stored_bytes: u64,
    pub stored_objects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageView {
    pub bytes: u64,
    pub objects: u64,
    pub max_bytes: Option<u64>,
    pub max_objects: u64,
    pub free_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub evictions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FillRow {
    pub remote: String,
    pub path: String,
    pub written: u64,
    pub expected: Option<u64>,
    pub elapsed_seconds: f64,
    pub idle_seconds: f64,
    pub bytes_per_second: f64,
    pub followers: usize,
    /// A fill assembled from ranges: upstream fetches started (the first
    /// response included), and how many are in flight now.
    pub upstream_fetches: Option<u64>,
    pub fetches_in_flight: Option<u64>,
}

impl Snapshot {
    pub async fn take(app: &App) -> Snapshot {
        let [largest, most_requested] = app.top_lists.get(&app.catalog, &app.background).await;
        let advertise = (app.config().server.cluster.as_ref()).map(|c| c.advertise);
        let cluster = match (advertise, &app.redis) {
            (Some(advertise), Some(link)) => Some(ClusterView {
                this_node: advertise.to_string(),
                nodes: crate::cluster::members::list(link).await,
            }),
            _ => None,
        };
        let (remotes, all) = remotes(app);
        Snapshot {
            version: crate::metrics::VERSION,
            revision: crate::metrics::REVISION,
            uptime_seconds: app.started.elapsed().as_secs(),
            generated_at: unix_now(),
            in_flight: app.metrics.in_flight(),
            cluster,
            remotes,
            all,
            storage: storage(app),
            fills: fills(app),
            problems: app.metrics.recent.newest(),
            largest,
            most_requested,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Each remote's view, and every remote's summed.
fn remotes(app: &App) -> (Vec<RemoteView>, RemoteView) {
    let config = app.config();
    let breakers = app.breakers.states();
    let usage = app.storage.usage_by_remote();
    let mut sum = RemoteTotals {
        remote: "all".into(),
        ..RemoteTotals::default()
    };
    let mut stored_sum = RemoteUsage::default();
    let mut views = Vec::new();
    for totals in app.metrics.remote_totals() {
        let Some(remote) = config.remotes.get(&totals.remote) else {
            continue;
        };
        let stored = usage.iter().find(|(name, _)| *name == totals.remote);
        let stored = stored.map(|(_, u)| *u).unwrap_or_default();
        sum.add(&totals);
        stored_sum.objects += stored.objects;
        stored_sum.bytes += stored.bytes;
        let mut view = RemoteView::of(&totals, stored);
        view.kind = remote.kind.as_str();
        view.package = remote.ecosystem.as_str();
        view.breaker = breakers.get(&totals.remote).copied().unwrap_or("-");
        views.push(view);
    }
    (views, RemoteView::of(&sum, stored_sum))
}

impl RemoteView {
    /// What the counters say; kind, package and breaker are left `-`.
    fn of(totals: &RemoteTotals, stored: RemoteUsage) -> RemoteView {
        RemoteView {
            name: totals.remote.clone(),
            kind: "-",
            package: "-",
            breaker: "-",
            requests: totals.all_requests(),
            hit_ratio: totals.hit_ratio(),
            byte_hit_ratio: totals.byte_hit_ratio(),
            served_bytes: totals.served_bytes.iter().sum(),
            egress_saved_bytes: totals.egress_saved(),
            upstream_bytes: totals.upstream_bytes,
            upstream_errors: totals.upstream_errors,
            server_errors: totals.server_errors,
            mismatches: totals.mismatches,
            refused: totals.refused,
            stored_bytes: stored.bytes,
            stored_objects: stored.objects,
        }
    }
}

fn storage(app: &App) -> StorageView {
    let stats = app.storage.stats();
    let bounds = app.storage.bounds();
    StorageView {
        bytes: stats.bytes,
        objects: stats.objects,
        max_bytes: bounds.max_size,
        max_objects: bounds.max_entries,
        free_bytes: app.storage.bodies().free_bytes(),
        min_free_bytes: bounds.min_free,
        evictions: stats.evictions,
    }
}

fn fills(app: &App) -> Vec<FillRow> {
    (app.storage.fills_in_progress().into_iter())
        .map(|fill| {
            let elapsed = fill.elapsed.as_secs_f64();
            FillRow {
                remote: fill.about.remote,
                path: fill.about.path,
                written: fill.written,
                expected: fill.about.expected,
                elapsed_seconds: elapsed,
                idle_seconds: fill.idle.as_secs_f64(),
                bytes_per_second: fill.written as f64 / elapsed.max(0.001),
                followers: fill.followers,
                upstream_fetches: fill.fetches.map(|(started, _)| started),
                fetches_in_flight: fill.fetches.map(|(_, in_flight)| in_flight),
            }
        })
        .collect()
}

/// Whether `req` may see the page: open unless `tokens.metrics` or
/// `tokens.admin` is set; then either, as a bearer token or as the
/// password of basic authentication (what a browser can send).
fn allowed(app: &App, req: &RequestHeader) -> bool {
    let server = &app.config().server;
    let tokens = [&server.metrics_token, &server.admin_token];
    let set: Vec<_> = tokens.into_iter().flatten().collect();
    set.is_empty() || (set.iter()).any(|token| crate::auth::bearer_or_basic_allows(req, token))
}

/// The page, or its JSON when the client prefers that.
pub async fn answer(app: &App, req: &RequestHeader, html_first: bool) -> Reply {
    if !allowed(app, req) {
        return Reply::text(StatusCode::UNAUTHORIZED, "status page: token required")
            .header("www-authenticate", "Basic realm=\"artifactd status\"");
    }
    let snapshot = Snapshot::take(app).await;
    let accept = req.headers.get(http::header::ACCEPT);
    let accept = accept.and_then(|v| v.to_str().ok());
    let offers = match html_first {
        true => ["text/html", "application/json"],
        false => ["application/json", "text/html"],
    };
    let reply = match filters::accept::preferred(accept, &offers) {
        "text/html" => Reply::html(StatusCode::OK, page::render(&snapshot)),
        _ => Reply::json(
            StatusCode::OK,
            &serde_json::to_value(&snapshot).unwrap_or_default(),
        ),
    };
    reply
        .header("cache-control", "no-store")
        .header("vary", "accept")
}

/// Whether `/` should answer with the page: a browser asks for HTML
/// first; scripts and the reference's clients get the JSON they know.
pub fn root_wants_page(req: &RequestHeader) -> bool {
    let accept = req.headers.get(http::header::ACCEPT);
    let accept = accept.and_then(|v| v.to_str().ok());
    filters::accept::preferred(accept, &["application/json", "text/html"]) == "text/html"
}
