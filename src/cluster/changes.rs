//! The change feed over Redis pub/sub: each node publishes what it changes
//! in the shared store on `{prefix}:changes` and applies what the others
//! publish (see `storage::coherence`), and likewise every circuit breaker
//! that opens or recovers (see `breakers`).
//!
//! A change is published before the request that made it is answered (a
//! client moving to another node never outruns it), bounded by the Redis
//! timeout and skipped while Redis is away. The subscription is a
//! connection of its own; when it drops, the node subscribes again and,
//! having possibly missed changes meanwhile, drops its hot records.

use super::link::RedisLink;
use crate::breakers::{Breakers, RemoteNews};
use crate::storage::coherence::{Change, ChangeFeed};
use crate::storage::CacheStorage;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct RedisChanges {
    link: Arc<RedisLink>,
    node: String,
    channel: String,
}

impl RedisChanges {
    async fn send(&self, text: String) {
        let message = format!("{} {text}", self.node);
        let channel = self.channel.clone();
        // A failure is logged by the link; the others find the record
        // changed when they next read it.
        let _ = self
            .link
            .run("publish", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }
}

#[async_trait::async_trait]
impl ChangeFeed for RedisChanges {
    async fn publish(&self, change: Change) {
        self.send(change.encode()).await;
    }
}

fn channel(link: &RedisLink) -> String {
    link.key("changes")
}

/// What a node tells the others and applies from them: breaker news
/// always, changes to the store when the store is shared (`storage`).
pub struct Listeners {
    pub storage: Option<&'static CacheStorage>,
    pub breakers: Arc<Breakers>,
}

/// Starts publishing this node's changes and applying the other nodes'.
pub fn start(link: Arc<RedisLink>, listeners: Listeners, runtime: &tokio::runtime::Handle) {
    let node = uuid::Uuid::new_v4().simple().to_string();
    let feed = Arc::new(RedisChanges {
        channel: channel(&link),
        link: link.clone(),
        node: node.clone(),
    });
    let mut news = listeners.breakers.tell_others();
    let teller = feed.clone();
    runtime.spawn(async move {
        while let Some(news) = news.recv().await {
            teller.send(news.encode()).await;
        }
    });
    if let Some(storage) = listeners.storage {
        storage.announce_changes(feed);
    }
    runtime.spawn(subscribe(link, listeners, node));
}

async fn subscribe(link: Arc<RedisLink>, listeners: Listeners, node: String) {
    let channel = channel(&link);
    let mut delay = Duration::from_millis(100);
    let mut subscribed_before = false;
    let mut last_log: Option<Instant> = None;
    loop {
        let connect = async {
            let mut pubsub = link.client().await?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(link.timeout(), connect).await {
            Ok(Ok(pubsub)) => {
                if let (true, Some(storage)) = (subscribed_before, listeners.storage) {
                    storage.forget_memory();
                    log::info!("change feed subscribed again; hot records dropped");
                }
                subscribed_before = true;
                delay = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    apply(&listeners, &node, &text);
                }
            }
            Ok(Err(e)) => note(&mut last_log, &e.to_string()),
            Err(_) => note(&mut last_log, "no answer"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESUBSCRIBE_MAX);
    }
}

fn note(last_log: &mut Option<Instant>, reason: &str) {
    if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
        log::warn!("change feed: {reason}; resubscribing");
        *last_log = Some(Instant::now());
    }
}

/// Applies one message unless this node sent it.
fn apply(listeners: &Listeners, node: &str, text: &str) {
    let Some((sender, said)) = text.split_once(' ') else {
        return;
    };
    if sender == node {
        return;
    }
    if let Some(news) = RemoteNews::decode(said) {
        listeners.breakers.learn(&news);
        return;
    }
    match (Change::decode(said), listeners.storage) {
        (Some(change), Some(storage)) => storage.apply_change(&change),
        (Some(_), None) => {}
        (None, _) => log::warn!("change feed: unreadable message {text:?}"),
    }
}
