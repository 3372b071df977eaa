//! Commits that run after their client has the body.
//!
//! pingora hands a miss's last chunk to the client only once the miss
//! handler's `finish` returns, and a small body's commit (its sha256, the
//! record's segment write, the index) is most of what a cold miss costs
//! after the upstream answered. So a fill held in memory finishes at once
//! and commits in a task of its own ([`super::miss`]); its fill stays
//! registered, whole, until the commit ends, and lookups of the entry wait
//! for it rather than read the fill.
//!
//! Everything else that must see the entry the moment the client has its
//! last byte asks here first and waits, a few hundred microseconds at
//! most: the fast path for that entry, edits of its stored header, the
//! admin and cache API (removals, flushes, listings, metrics; not the
//! probes), and a stopping node before its snapshot. Other nodes cannot ask, so on a
//! store they share a miss commits before its client gets the last chunk.
//!
//! A node killed in that instant loses the entry (the next request fetches
//! it again); what was committed is never partial either way.

use super::id_counts::IdCounts;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a waiter waits for a commit before going on without it: far
/// past any commit's duration, short of hanging a request on a stuck one.
const PATIENCE: Duration = Duration::from_secs(10);

/// Entries whose commit is under way, by id.
#[derive(Default)]
pub struct PendingCommits {
    /// Commits under way, so the common case (none) costs one load.
    count: AtomicUsize,
    /// Per entry, how many of its commits are under way (two only when a
    /// lock timed out and a second writer filled it too).
    ids: IdCounts,
    /// Commits under way by the order they began in, so that a waiter for
    /// all of them waits only for those before it, not for every miss of a
    /// busy node in turn.
    order: Mutex<Begun>,
    /// Woken whenever a commit ends.
    ended: Notify,
}

#[derive(Default)]
struct Begun {
    next: u64,
    under_way: BTreeSet<u64>,
}

/// A commit under way; its end is announced when this drops, whether the
/// commit succeeded, failed or its task was dropped.
pub struct PendingCommit {
    commits: &'static PendingCommits,
    id: u128,
    number: u64,
}

impl PendingCommits {
    /// Registers a commit of entry `id`, before its client can see its end.
    pub fn begin(&'static self, id: u128) -> PendingCommit {
        let number = {
            let mut order = self.order.lock();
            let number = order.next;
            order.next += 1;
            order.under_way.insert(number);
            number
        };
        self.ids.add(id);
        self.count.fetch_add(1, Ordering::AcqRel);
        PendingCommit {
            commits: self,
            id,
            number,
        }
    }

    /// Whether any commit is under way.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Whether a commit of entry `id` is under way.
    pub fn contains(&self, id: u128) -> bool {
        self.any() && self.ids.contains(id)
    }

    /// Waits until no commit of entry `id` is under way; whether it waited.
    pub async fn settled(&self, id: u128) -> bool {
        self.wait_until(|| !self.contains(id)).await
    }

    /// Waits until every commit under way when called has ended.
    pub async fn all_settled(&self) {
        if !self.any() {
            return;
        }
        let next = self.order.lock().next;
        let ended_before = || {
            let order = self.order.lock();
            order.under_way.first().is_none_or(|first| *first >= next)
        };
        self.wait_until(ended_before).await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool) -> bool {
        if done() {
            return false;
        }
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if done() {
                    return;
                }
                ended.await;
            }
        })
        .await;
        if waited.is_err() {
            log::warn!("a cache commit took over {PATIENCE:?}; going on without it");
        }
        true
    }
}

impl Drop for PendingCommit {
    fn drop(&mut self) {
        self.commits.ids.remove_one(self.id);
        self.commits.order.lock().under_way.remove(&self.number);
        self.commits.count.fetch_sub(1, Ordering::AcqRel);
        self.commits.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits() -> &'static PendingCommits {
        Box::leak(Box::default())
    }

    #[tokio::test]
    async fn a_waiter_goes_on_when_its_entry_commits_not_before() {
        let commits = commits();
        assert!(!commits.settled(1).await, "nothing under way: no wait");
        let first = commits.begin(1);
        let other = commits.begin(2);
        let waiter = tokio::spawn(async move { commits.settled(1).await });
        tokio::task::yield_now().await;
        drop(other);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "another entry's end does not release it"
        );
        assert!(commits.contains(1) && !commits.contains(2));
        drop(first);
        assert!(waiter.await.unwrap(), "it waited");
        assert!(!commits.contains(1));
    }

    #[tokio::test]
    async fn all_settled_does_not_wait_for_commits_begun_after_it() {
        let commits = commits();
        let before = commits.begin(1);
        let waiter = tokio::spawn(async move { commits.all_settled().await });
        tokio::task::yield_now().await;
        let after = commits.begin(2);
        drop(before);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not held up by the commit begun after it")
            .unwrap();
        assert!(commits.any() && commits.contains(2));
        drop(after);
        assert!(!commits.any());
    }

    #[tokio::test]
    async fn all_settled_waits_for_every_commit_of_every_entry() {
        let commits = commits();
        let twice = [commits.begin(7), commits.begin(7)];
        let waiter = tokio::spawn(async move { commits.all_settled().await });
        let [first, second] = twice;
        drop(first);
        tokio::task::yield_now().await;
        assert!(
            commits.contains(7),
            "one of two commits of entry 7 is still under way"
        );
        assert!(!waiter.is_finished());
        drop(second);
        waiter.await.unwrap();
        assert!(!commits.contains(7));
    }
}
