//! Background jobs started through the admin API (`POST /cache-artifact`,
//! `POST /api/v1/cache/verify`) and their status (`GET /api/v1/jobs/{id}`).
//!
//! A job runs on the background runtime, so it outlives the request that
//! started it and never holds a worker thread. Its status is kept in
//! memory (the last [`KEPT`] jobs): a job is a convenience for operators,
//! not state that must survive a restart.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Finished jobs kept for their status.
const KEPT: usize = 64;
/// Items listed per outcome in a status (the counts are always exact).
const LISTED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Done,
    Failed,
}

/// What a job reports: counts, and the items behind them.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: u64,
    pub kind: &'static str,
    pub state: State,
    /// Why the job as a whole failed.
    pub error: Option<String>,
    /// Items found to work on.
    pub total: u64,
    /// Items finished without a problem.
    pub ok: u64,
    pub bytes: u64,
    /// Items that failed, each with its reason.
    pub failed: Vec<Item>,
    pub failed_count: u64,
    /// Items that succeeded (the first [`LISTED`]).
    pub done: Vec<String>,
    pub started: u64,
    pub finished: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub path: String,
    pub reason: String,
}

/// A running job's handle to its status.
#[derive(Clone)]
pub struct Job(Arc<Mutex<Status>>);

impl Job {
    pub fn set_total(&self, total: u64) {
        self.0.lock().total = total;
    }

    pub fn succeeded(&self, path: String, bytes: u64) {
        let mut status = self.0.lock();
        status.ok += 1;
        status.bytes += bytes;
        if status.done.len() < LISTED {
            status.done.push(path);
        }
    }

    pub fn failed(&self, path: String, reason: String) {
        let mut status = self.0.lock();
        status.failed_count += 1;
        if status.failed.len() < LISTED {
            status.failed.push(Item { path, reason });
        }
    }

    fn finish(&self, result: Result<(), String>) {
        let mut status = self.0.lock();
        status.finished = Some(crate::storage::unix_now());
        match result {
            Ok(()) => status.state = State::Done,
            Err(e) => {
                status.state = State::Failed;
                status.error = Some(e);
            }
        }
    }
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<VecDeque<Job>>,
}

impl Jobs {
    /// Starts `work` on `runtime` as job `kind`; returns its id.
    pub fn start<F, Fut>(
        &self,
        kind: &'static str,
        runtime: &tokio::runtime::Handle,
        work: F,
    ) -> u64
    where
        F: FnOnce(Job) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Job(Arc::new(Mutex::new(Status {
            id,
            kind,
            state: State::Running,
            error: None,
            total: 0,
            ok: 0,
            bytes: 0,
            failed: Vec::new(),
            failed_count: 0,
            done: Vec::new(),
            started: crate::storage::unix_now(),
            finished: None,
        })));
        {
            let mut jobs = self.jobs.lock();
            if jobs.len() >= KEPT {
                let finished = jobs.iter().position(|j| j.0.lock().state != State::Running);
                if let Some(oldest) = finished {
                    jobs.remove(oldest);
                }
            }
            jobs.push_back(job.clone());
        }
        let future = work(job.clone());
        runtime.spawn(async move {
            let result = future.await;
            job.finish(result);
        });
        id
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        let jobs = self.jobs.lock();
        jobs.iter()
            .find(|j| j.0.lock().id == id)
            .map(|j| j.0.lock().clone())
    }
}

/// The 202 for a started job, pointing at its status.
pub fn started_reply(id: u64) -> crate::reply::Reply {
    let status_url = format!("/api/v1/jobs/{id}");
    crate::reply::Reply::json(
        http::StatusCode::ACCEPTED,
        &serde_json::json!({"job": id, "status_url": status_url}),
    )
    .header("location", status_url)
}
