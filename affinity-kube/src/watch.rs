//! Keeping a local cache in step with the API server: a kube-runtime watch.
//! Its first list is paged ([`LIST_PAGE_SIZE`] objects per request), and a
//! watch that breaks resumes from the last resourceVersion it saw, so no
//! event is missed and nothing is listed again; only when the API server no
//! longer has that version (`410 Gone`) is everything listed again, which
//! the sink sees as a new list.

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a cache does with the events of a watch.
pub(crate) trait WatchSink<K>: Send + Sync {
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

/// Objects per request of a list.
pub(crate) const LIST_PAGE_SIZE: u32 = 500;

/// Feeds `sink` from a watch of `api` until `shutdown`. Watch errors are
/// logged and retried with backoff.
pub(crate) async fn run_watch<K, S>(api: Api<K>, sink: &S, shutdown: CancellationToken)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    S: WatchSink<K> + ?Sized,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    // The watcher's stream does not end; should it, a new one lists again.
    loop {
        let mut events = watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => match event {
                    Some(Ok(Event::Init)) => {
                        debug!(%kind, "listing");
                        sink.list_started();
                    }
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
