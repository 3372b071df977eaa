//! Opens an S3-compatible bucket as a body store: `object_store`'s S3
//! client (path-style requests, so MinIO, SeaweedFS and Ceph work as AWS
//! does), the bucket's key prefix, and [`ObjectBodyStore`] on top.
//!
//! object_store's own defaults suit batch jobs, not a proxy answering
//! clients: up to 10 retries within three minutes and a 30 s bound on a
//! whole request. Here a request retries at most twice within the store's
//! timeout, and there is no whole-request bound (a 2 GiB read lasts as
//! long as its client takes); [`ObjectBodyStore`] bounds each answer and
//! each chunk instead.

use super::object::ObjectBodyStore;
use crate::config::backends::S3Settings;
use anyhow::Context;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

pub fn open(settings: &S3Settings) -> anyhow::Result<ObjectBodyStore> {
    let client = ClientOptions::new()
        .with_allow_http(settings.allow_http)
        .with_connect_timeout(settings.timeout)
        .with_timeout_disabled()
        .with_pool_idle_timeout(Duration::from_secs(60));
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: settings.timeout,
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_virtual_hosted_style_request(false)
        .with_client_options(client)
        .with_retry(retry);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose());
    }
    if let Some(token) = &settings.session_token {
        builder = builder.with_token(token.expose());
    }
    let bucket = builder
        .build()
        .with_context(|| format!("storage s3://{}", settings.bucket))?;
    let store: Arc<dyn ObjectStore> = if settings.prefix.is_empty() {
        Arc::new(bucket)
    } else {
        Arc::new(PrefixStore::new(bucket, settings.prefix.as_str()))
    };
    std::fs::create_dir_all(&settings.spool_dir)
        .with_context(|| format!("s3.spool_dir {}", settings.spool_dir.display()))?;
    Ok(ObjectBodyStore::new(
        store,
        settings.part_size,
        settings.spool_dir.clone(),
        settings.timeout,
    ))
}
