//! Rewritten index documents, kept: a document is rewritten once per
//! upstream version, client base URL and form, not once per response.
//!
//! Why: an index document is stored as the upstream sent it and rewritten
//! for the client that asks, so its links point back through artifactd at
//! the address that client used. For a 16 MB npm document a rewrite is a
//! full JSON parse and print; 64 clients asking at once were 64 of them.
//!
//! A copy is keyed by the entry (remote, path and form), the sha256 of the
//! stored upstream body and the client's base URL, so it is never stale: a
//! new upstream version has a new digest, and the old copy ages out of the
//! byte budget (least recently used first). A remote that hides
//! quarantined versions has none kept: what its documents show moves with
//! the clock. The first request to need a copy makes it; the others that
//! ask for the same copy meanwhile wait for it (a bounded while) instead of
//! rewriting the same bytes too.

use bytes::Bytes;
use parking_lot::Mutex;
use pingora::http::ResponseHeader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// How long a request waits for another one's rewrite before making its
/// own (a rewrite of the largest documents takes about a second).
const WAIT_FOR_MAKER: Duration = Duration::from_secs(10);

/// A rewritten document as a hit sends it.
pub struct Rewritten {
    key: Box<str>,
    /// The response header the phases sent with it, framed by its length.
    pub header: ResponseHeader,
    /// The epoch of the stored meta the header was made from: a
    /// revalidation changes the header (not the body), and a copy whose
    /// epoch is not the entry's has its header made again.
    pub epoch: SystemTime,
    pub body: Bytes,
    /// The fast path's serialised head, built on its first use.
    pub fast_head: OnceLock<Bytes>,
}

/// The kept copies, within a byte budget.
pub struct Rewrites {
    budget: u64,
    kept: Mutex<Kept>,
    /// Keys being rewritten now, and how their waiters learn it is done.
    making: Mutex<HashMap<Box<str>, Arc<Notify>>>,
    /// Copies made since start.
    made: AtomicU64,
}

struct Kept {
    copies: lru::LruCache<Box<str>, Arc<Rewritten>>,
    bytes: u64,
}

/// The key of a copy: entry, upstream body, client base URL, and the
/// configuration generation (a firewall rule changes what it shows).
pub fn key(entry: u128, body_sha256: &str, proxy_base: &str, generation: u64) -> String {
    format!("{entry:032x} {body_sha256} {proxy_base} {generation}")
}

/// What [`Rewrites::get_or_make`] found.
pub enum Found {
    Copy(Arc<Rewritten>),
    /// No copy: the caller rewrites, and gives the result to [`Making`].
    Make(Making),
}

impl Rewrites {
    /// Keeps up to `budget` bytes of rewritten bodies (0: none).
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(Rewrites {
            budget,
            kept: Mutex::new(Kept {
                copies: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            making: Mutex::new(HashMap::new()),
            made: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    pub fn get(&self, key: &str) -> Option<Arc<Rewritten>> {
        self.kept.lock().copies.get(key).cloned()
    }

    /// The copy under `key`; while another request is making it, waits for
    /// that (up to [`WAIT_FOR_MAKER`]); else the right to make it.
    pub async fn get_or_make(self: &Arc<Self>, key: String) -> Found {
        let wait = {
            // Looked for under the lock a maker leaves by, after keeping its
            // copy: a copy kept between a look outside it and taking it
            // would be made a second time.
            let mut making = self.making.lock();
            if let Some(copy) = self.get(&key) {
                return Found::Copy(copy);
            }
            match making.get(key.as_str()) {
                // Made under the lock the maker's end takes: it cannot be
                // missed.
                Some(done) => done.clone().notified_owned(),
                None => {
                    making.insert(key.clone().into(), Arc::new(Notify::new()));
                    return Found::Make(Making {
                        rewrites: self.clone(),
                        key: key.into(),
                    });
                }
            }
        };
        let _ = tokio::time::timeout(WAIT_FOR_MAKER, wait).await;
        match self.get(&key) {
            Some(copy) => Found::Copy(copy),
            // The maker gave up (a document that cannot be rewritten or
            // kept) or is slow: rewrite, without waiting in turn.
            None => Found::Make(Making {
                rewrites: self.clone(),
                key: Box::from(""),
            }),
        }
    }

    /// Keeps `copy`'s body again with `header`, made from the meta of
    /// `epoch`.
    pub fn reframe(&self, copy: &Rewritten, header: ResponseHeader, epoch: SystemTime) {
        self.keep(
            copy.key.clone(),
            framed(header, copy.body.len()),
            epoch,
            copy.body.clone(),
        );
    }

    fn keep(&self, key: Box<str>, header: Option<ResponseHeader>, epoch: SystemTime, body: Bytes) {
        let Some(header) = header else {
            return;
        };
        let size = body.len() as u64 + key.len() as u64;
        if size > self.budget / 2 {
            return;
        }
        let copy = Arc::new(Rewritten {
            key: key.clone(),
            header,
            epoch,
            body,
            fast_head: OnceLock::new(),
        });
        let mut kept = self.kept.lock();
        if let Some(old) = kept.copies.put(key, copy) {
            kept.bytes -= old.body.len() as u64 + old.key.len() as u64;
        }
        kept.bytes += size;
        while kept.bytes > self.budget {
            let Some((_, old)) = kept.copies.pop_lru() else {
                break;
            };
            kept.bytes -= old.body.len() as u64 + old.key.len() as u64;
        }
    }

    /// Copies kept, their bytes, and copies made since start, for the
    /// metrics.
    pub fn usage(&self) -> (usize, u64, u64) {
        let kept = self.kept.lock();
        (
            kept.copies.len(),
            kept.bytes,
            self.made.load(Ordering::Relaxed),
        )
    }
}

/// The right to make one copy; dropping it unfinished (an unparsable
/// document, a client gone) lets the next request try.
pub struct Making {
    rewrites: Arc<Rewrites>,
    /// Empty when the copy is made but not kept.
    key: Box<str>,
}

impl Making {
    /// Keeps `body`, sent with `header` (made from the meta of `epoch`;
    /// its framing is set to the body's length here).
    pub fn finish(self, header: ResponseHeader, epoch: SystemTime, body: Bytes) {
        if self.key.is_empty() {
            return;
        }
        let header = framed(header, body.len());
        self.rewrites.made.fetch_add(1, Ordering::Relaxed);
        self.rewrites.keep(self.key.clone(), header, epoch, body);
    }
}

/// `header` framed by a length instead of chunks.
fn framed(mut header: ResponseHeader, length: usize) -> Option<ResponseHeader> {
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header
        .insert_header(http::header::CONTENT_LENGTH, length)
        .ok()?;
    Some(header)
}

impl Drop for Making {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        if let Some(done) = self.rewrites.making.lock().remove(&self.key) {
            done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ResponseHeader {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header
            .insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .unwrap();
        header
    }

    async fn make(rewrites: &Arc<Rewrites>, key: &str, body: &'static [u8]) {
        match rewrites.get_or_make(key.to_string()).await {
            Found::Make(making) => {
                making.finish(header(), SystemTime::UNIX_EPOCH, Bytes::from_static(body))
            }
            Found::Copy(_) => panic!("{key} already kept"),
        }
    }

    #[tokio::test]
    async fn a_copy_is_made_once_and_framed_by_its_length() {
        let rewrites = Rewrites::new(1 << 20);
        make(&rewrites, "a", b"rewritten").await;
        let Found::Copy(copy) = rewrites.get_or_make("a".into()).await else {
            panic!("not kept");
        };
        assert_eq!(&copy.body[..], b"rewritten");
        assert_eq!(copy.header.headers["content-length"], "9");
        assert!(!copy.header.headers.contains_key("transfer-encoding"));
    }

    /// The right to make `key`'s copy, and a request for it that waits.
    async fn maker_and_waiter(
        rewrites: &Arc<Rewrites>,
        key: &str,
    ) -> (Making, tokio::task::JoinHandle<Found>) {
        let Found::Make(maker) = rewrites.get_or_make(key.into()).await else {
            panic!("nothing kept yet");
        };
        let waiter = {
            let (rewrites, key) = (rewrites.clone(), key.to_string());
            tokio::spawn(async move { rewrites.get_or_make(key).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits for the maker");
        (maker, waiter)
    }

    #[tokio::test]
    async fn waiters_get_the_makers_copy_or_their_own_turn() {
        let rewrites = Rewrites::new(1 << 20);
        let (maker, waiter) = maker_and_waiter(&rewrites, "k").await;
        maker.finish(header(), SystemTime::UNIX_EPOCH, Bytes::from_static(b"x"));
        assert!(matches!(waiter.await.unwrap(), Found::Copy(_)));

        // A maker that gives up lets the waiters rewrite for themselves.
        let (quitter, waiter) = maker_and_waiter(&rewrites, "q").await;
        drop(quitter);
        assert!(matches!(waiter.await.unwrap(), Found::Make(_)));
    }

    #[tokio::test]
    async fn the_budget_evicts_the_least_recently_used() {
        let rewrites = Rewrites::new(100);
        make(&rewrites, "a", &[b'a'; 40]).await;
        make(&rewrites, "b", &[b'b'; 40]).await;
        assert!(rewrites.get("a").is_some());
        make(&rewrites, "c", &[b'c'; 40]).await;
        assert!(rewrites.get("b").is_none(), "least recently used");
        assert!(rewrites.get("a").is_some() && rewrites.get("c").is_some());
        assert_eq!(rewrites.usage(), (2, 82, 3));
        // Larger than half the budget: not kept.
        make(&rewrites, "d", &[b'd'; 60]).await;
        assert!(rewrites.get("d").is_none());
        assert!(!Rewrites::new(0).enabled());
    }
}
