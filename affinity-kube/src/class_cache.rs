//! StorageClass parameters, kept by watch instead of fetched per PV per cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::{Properties, class_parameters};

use crate::lock;
use crate::watch::WatchSink;

/// StorageClass parameters by StorageClass name.
pub type ClassParameters = HashMap<String, Properties>;

/// The cluster's StorageClasses, as the watch last saw them.
#[derive(Debug)]
pub struct StorageClassCache {
    classes: Mutex<Arc<ClassParameters>>,
    pending: Mutex<Option<ClassParameters>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl StorageClassCache {
    /// An empty cache, not synced yet; the controller's watch fills it.
    pub(crate) fn new() -> Self {
        Self {
            classes: Mutex::default(),
            pending: Mutex::default(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Resolves once a complete list has been received: before that, a
    /// StorageClass that exists could look missing.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // Only fails when the sender is gone, and the sender is `self`.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// The parameters of every StorageClass. Cheap: the map is shared and
    /// replaced, never modified in place, on change.
    pub fn snapshot(&self) -> Arc<ClassParameters> {
        Arc::clone(&lock(&self.classes))
    }

    fn update(&self, change: impl FnOnce(&mut ClassParameters)) {
        let mut classes = lock(&self.classes);
        change(Arc::make_mut(&mut classes));
    }
}

impl WatchSink<StorageClass> for StorageClassCache {
    fn list_started(&self) {
        *lock(&self.pending) = Some(ClassParameters::new());
    }

    fn listed(&self, class: StorageClass) {
        if let (Some(pending), Some((name, parameters))) =
            (lock(&self.pending).as_mut(), class_parameters(&class))
        {
            pending.insert(name, parameters);
        }
    }

    fn list_done(&self) {
        if let Some(complete) = lock(&self.pending).take() {
            *lock(&self.classes) = Arc::new(complete);
            self.synced.send_replace(true);
        }
    }

    fn applied(&self, class: StorageClass) {
        if let Some((name, parameters)) = class_parameters(&class) {
            self.update(|classes| {
                classes.insert(name, parameters);
            });
        }
    }

    fn deleted(&self, class: StorageClass) {
        if let Some(name) = class.metadata.name {
            self.update(|classes| {
                classes.remove(&name);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use affinity_core::StorageClassSource;
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn class(name: &str, remote: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            parameters: Some(BTreeMap::from([(
                "allowRemoteVolumeAccess".to_owned(),
                remote.to_owned(),
            )])),
            provisioner: "linstor.csi.linbit.com".to_owned(),
            ..StorageClass::default()
        }
    }

    #[tokio::test]
    async fn synced_only_once_a_list_is_complete() {
        let cache = StorageClassCache::new();
        let wait = cache.wait_synced();
        tokio::pin!(wait);
        cache.list_started();
        cache.listed(class("local", "false"));
        assert!(
            futures::poll!(wait.as_mut()).is_pending(),
            "a list only counts once complete"
        );
        cache.list_done();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .unwrap();
    }

    #[test]
    fn snapshots_do_not_change_under_their_reader() {
        let cache = StorageClassCache::new();
        cache.list_started();
        cache.listed(class("local", "false"));
        cache.list_done();
        let before = cache.snapshot();
        cache.applied(class("local", "true"));
        cache.applied(class("other", "true"));
        cache.deleted(class("other", "true"));
        let after = cache.snapshot();
        assert_eq!(
            before.storage_class_parameters("local").unwrap()["allowRemoteVolumeAccess"],
            "false"
        );
        assert_eq!(
            after.storage_class_parameters("local").unwrap()["allowRemoteVolumeAccess"],
            "true"
        );
        assert!(after.storage_class_parameters("other").is_none());
    }
}
