//! The status page's top lists — the largest and the most requested
//! entries — asked of the catalog at most once per [`TOP_LISTS_FOR`] once
//! they are full, however often the page reloads, and never waited on
//! for long.

use crate::catalog::{Catalog, CatalogError, TopEntry, TopOrder};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the catalog's top lists are reused.
const TOP_LISTS_FOR: Duration = Duration::from_secs(30);
/// How long the page waits for the catalog before showing no top lists.
const TOP_LISTS_WAIT: Duration = Duration::from_millis(800);
/// Entries in each top list.
const TOP_LISTS_LEN: u32 = 10;

/// The catalog's top lists, and when they were asked for.
#[derive(Default)]
pub struct TopLists {
    kept: tokio::sync::Mutex<Option<(Instant, [Vec<TopEntry>; 2])>>,
}

impl TopLists {
    /// The largest and the most requested entries, at most
    /// [`TOP_LISTS_FOR`] old; empty while the catalog does not answer.
    pub async fn get(
        &self,
        catalog: &Arc<dyn Catalog>,
        background: &tokio::runtime::Handle,
    ) -> [Vec<TopEntry>; 2] {
        let mut kept = self.kept.lock().await;
        if let Some((at, lists)) = kept.as_ref() {
            if at.elapsed() < TOP_LISTS_FOR {
                return lists.clone();
            }
        }
        let catalog = catalog.clone();
        // On the background runtime, as every catalog call: its pool lives there.
        let asked = background.spawn(async move {
            let largest = catalog
                .top_entries(TopOrder::Largest, TOP_LISTS_LEN)
                .await?;
            let most_hit = catalog
                .top_entries(TopOrder::MostHit, TOP_LISTS_LEN)
                .await?;
            Ok::<_, CatalogError>([largest, most_hit])
        });
        match tokio::time::timeout(TOP_LISTS_WAIT, asked).await {
            Ok(Ok(Ok(lists))) => {
                // A catalog with fewer entries than a list holds is cheap
                // to ask again, and it is the one that changes most: a new
                // cache's first entries show as soon as they are written.
                let full = lists.iter().all(|list| list.len() as u32 >= TOP_LISTS_LEN);
                *kept = full.then(|| (Instant::now(), lists.clone()));
                lists
            }
            _ => Default::default(),
        }
    }
}
