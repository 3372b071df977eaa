//! Committed body files kept open between hits.
//!
//! Opening, stat-ing and closing a file was a fifth of a small hit's CPU. A
//! body file never changes once committed (a refill writes a new key), so
//! an open handle stays valid for as long as its key is current; each
//! handle is used only for the body key it was opened for. Raised file
//! limits (`server::raise_nofile_limit`) leave room for the handles.

use super::layout::id_of_key;
use pingora_memory_cache::MemoryCache;
use std::sync::Arc;

#[derive(Clone)]
struct OpenBody {
    body_key: Arc<str>,
    file: Arc<std::fs::File>,
    size: u64,
}

pub struct OpenBodies {
    open: MemoryCache<u128, OpenBody>,
}

impl OpenBodies {
    pub fn new(handles: usize) -> Self {
        OpenBodies {
            open: MemoryCache::new(handles),
        }
    }

    /// The open file and size of `body_key` of entry `id`, if kept.
    pub fn get(&self, id: u128, body_key: &str) -> Option<(Arc<std::fs::File>, u64)> {
        match self.open.get(&id) {
            (Some(open), _) if &*open.body_key == body_key => Some((open.file, open.size)),
            _ => None,
        }
    }

    pub fn keep(&self, id: u128, body_key: &str, file: Arc<std::fs::File>, size: u64) {
        let open = OpenBody {
            body_key: body_key.into(),
            file,
            size,
        };
        self.open.put(&id, open, None);
    }

    /// Closes the kept handle of a body that is being deleted, so the disk
    /// space really comes back.
    pub fn close(&self, body_key: &str) {
        let Some(id) = id_of_key(body_key) else {
            return;
        };
        if let (Some(open), _) = self.open.get(&id) {
            if &*open.body_key == body_key {
                self.open.remove(&id);
            }
        }
    }
}
