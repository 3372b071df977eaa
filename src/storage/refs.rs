//! What cached manifests name, so eviction keeps images whole.
//!
//! A registry client pulls a manifest and then every blob it names; an
//! image missing one blob is as useless offline as no image at all. So a
//! blob (or a child manifest of an index) named by a manifest that is still
//! cached is not evicted; the manifest goes first, in its own LRU turn, and
//! what it named can go after it. References are recorded when a manifest
//! is verified (before its own commit and before its blobs arrive), kept in
//! the catalog so they survive a restart, and forgotten when the manifest
//! is removed.

use super::index::Index;
use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Default)]
struct Maps {
    /// Manifest entry id → the entry ids it names.
    by_manifest: HashMap<u128, Vec<u128>>,
    /// Target entry id → the manifest entry ids naming it.
    by_target: HashMap<u128, Vec<u128>>,
}

#[derive(Default)]
pub struct References {
    maps: Mutex<Maps>,
}

impl References {
    pub fn add(&self, manifest: u128, targets: &[u128]) {
        let mut maps = self.maps.lock();
        for target in targets {
            let named = maps.by_manifest.entry(manifest).or_default();
            if named.contains(target) {
                continue;
            }
            named.push(*target);
            maps.by_target.entry(*target).or_default().push(manifest);
        }
    }

    /// Forgets what a removed manifest named.
    pub fn forget(&self, manifest: u128) {
        let mut maps = self.maps.lock();
        let Some(targets) = maps.by_manifest.remove(&manifest) else {
            return;
        };
        for target in targets {
            if let Some(manifests) = maps.by_target.get_mut(&target) {
                manifests.retain(|m| *m != manifest);
                if manifests.is_empty() {
                    maps.by_target.remove(&target);
                }
            }
        }
    }

    /// Whether a manifest naming `target` is cached.
    pub fn pinned(&self, target: u128, index: &Index) -> bool {
        let maps = self.maps.lock();
        maps.by_target
            .get(&target)
            .is_some_and(|manifests| manifests.iter().any(|m| index.get(*m).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::Slot;

    #[test]
    fn a_target_is_pinned_while_a_manifest_naming_it_is_cached() {
        let index = Index::default();
        let refs = References::default();
        refs.add(1, &[10, 11]);
        refs.add(2, &[11]);
        assert!(!refs.pinned(10, &index), "manifests not committed yet");
        index.insert(1, Slot::new(0, 1, 0, 0, 0));
        index.insert(2, Slot::new(0, 1, 0, 0, 0));
        assert!(refs.pinned(10, &index));
        index.remove(1, None);
        refs.forget(1);
        assert!(!refs.pinned(10, &index));
        assert!(refs.pinned(11, &index), "still named by manifest 2");
        index.remove(2, None);
        assert!(!refs.pinned(11, &index));
        assert!(!refs.pinned(12, &index));
    }
}
