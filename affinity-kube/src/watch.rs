//! Keeping a local cache in step with the API server: a kube-runtime watch,
//! restarted from a fresh list every resync period so that a missed event
//! can never leave the cache wrong for longer than that.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a cache does with the events of a watch.
pub trait WatchSink<K>: Send + Sync {
    /// A full list starts; [`Self::listed`] follows for every object, then
    /// [`Self::list_done`]. Until then the cache keeps serving its old content.
    fn list_started(&self);
    /// An object of the running list.
    fn listed(&self, object: K);
    /// The list is complete: its objects replace the cache's content.
    fn list_done(&self);
    /// An object was added or modified.
    fn applied(&self, object: K);
    /// An object was deleted.
    fn deleted(&self, object: K);
}

/// Feeds `sink` from a watch of `api` until `shutdown`, listing again every
/// `resync`. Watch errors are logged and retried with backoff.
pub async fn run_watch<K, S>(api: Api<K>, sink: &S, resync: Duration, shutdown: CancellationToken)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    S: WatchSink<K> + ?Sized,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    loop {
        let mut events = watcher::watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let resync_due = tokio::time::sleep(resync);
        tokio::pin!(resync_due);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut resync_due => {
                    debug!(%kind, "resync: listing again");
                    break;
                }
                event = events.next() => match event {
                    Some(Ok(Event::Init)) => sink.list_started(),
                    Some(Ok(Event::InitApply(object))) => sink.listed(object),
                    Some(Ok(Event::InitDone)) => sink.list_done(),
                    Some(Ok(Event::Apply(object))) => sink.applied(object),
                    Some(Ok(Event::Delete(object))) => sink.deleted(object),
                    Some(Err(error)) => warn!(%kind, %error, "watch failed; retrying"),
                    None => break,
                },
            }
        }
    }
}
