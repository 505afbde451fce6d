//! A read cache for the node list and the resource view.
//!
//! Answers are kept for a time-to-live. Concurrent callers that find the cache empty or stale
//! share one request: the first one fetches while the others wait for its answer. Failures are
//! not cached; the next caller tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{Client, NodeFilter, ResourceViewFilter};
use crate::error::Result;
use crate::models::{Node, ResourceWithVolumes};

struct Slot<T> {
    entry: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot {
            entry: Mutex::new(None),
        }
    }

    async fn get<F, Fut>(&self, ttl: Duration, fetch: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut guard = self.entry.lock().await;
        if let Some((at, value)) = guard.as_ref()
            && at.elapsed() < ttl
        {
            return Ok(value.clone());
        }
        let value = Arc::new(fetch().await?);
        *guard = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    async fn clear(&self) {
        *self.entry.lock().await = None;
    }
}

/// A [`Client`] with a read cache for the full node list and the full resource view.
pub struct CachedClient {
    client: Client,
    ttl: Duration,
    nodes: Slot<Vec<Node>>,
    view: Slot<Vec<ResourceWithVolumes>>,
}

impl std::fmt::Debug for CachedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClient")
            .field("client", &self.client)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedClient {
    /// Caches answers of `client` for `ttl`.
    pub fn new(client: Client, ttl: Duration) -> Self {
        CachedClient {
            client,
            ttl,
            nodes: Slot::new(),
            view: Slot::new(),
        }
    }

    /// The underlying client (uncached calls and writes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The time-to-live of cached answers.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// All nodes, from the cache when fresh.
    pub async fn nodes(&self) -> Result<Arc<Vec<Node>>> {
        self.nodes
            .get(self.ttl, || async {
                self.client.list_nodes(&NodeFilter::default()).await
            })
            .await
    }

    /// All resources with volumes, from the cache when fresh.
    pub async fn resource_view(&self) -> Result<Arc<Vec<ResourceWithVolumes>>> {
        self.view
            .get(self.ttl, || async {
                self.client.view_resources(&ResourceViewFilter::default()).await
            })
            .await
    }

    /// Drops the cached answers (for example after a write).
    pub async fn invalidate(&self) {
        self.nodes.clear().await;
        self.view.clear().await;
    }
}
