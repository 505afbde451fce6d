//! The PV cache: only LINSTOR CSI PVs, stripped of what decisions never read
//! (managed fields, the last-applied annotation, status messages), indexed
//! by resource definition and volume number. It also records whose
//! resource definitions' PVs changed since the controller last looked, so a
//! PV event is decided without waiting for the next cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::linstor_volume_of;
use tokio::sync::{Notify, watch};

use crate::watch::WatchSink;

/// Annotation `kubectl apply` keeps: a copy of the object, never read by decisions.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Cached LINSTOR CSI PVs.
#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<String, Arc<PersistentVolume>>,
    /// PV names per volume; several when PVs wrongly share a volume.
    by_volume: BTreeMap<(String, u16), BTreeSet<String>>,
}

impl Index {
    fn insert(&mut self, pv: PersistentVolume) {
        let Some(name) = pv.metadata.name.clone() else {
            return;
        };
        self.remove(&name);
        if let Some(Ok(volume)) = linstor_volume_of(&pv) {
            self.by_volume
                .entry((volume.resource_definition, volume.volume_number))
                .or_default()
                .insert(name.clone());
        }
        self.by_name.insert(name, Arc::new(pv));
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        if let Some(Ok(volume)) = linstor_volume_of(&old) {
            let key = (volume.resource_definition, volume.volume_number);
            if let Some(names) = self.by_volume.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.by_volume.remove(&key);
                }
            }
        }
    }
}

/// Drops what decisions never read. The replace protocol reads the PV fresh
/// from the API server, so nothing dropped here can be lost.
fn compact(mut pv: PersistentVolume) -> PersistentVolume {
    pv.metadata.managed_fields = None;
    if let Some(annotations) = pv.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    if let Some(status) = pv.status.as_mut() {
        status.message = None;
        status.reason = None;
        status.last_phase_transition_time = None;
    }
    pv
}

/// The LINSTOR CSI PVs of the cluster, as the watch last saw them.
#[derive(Debug)]
pub struct PvCache {
    index: Mutex<Index>,
    /// The list being received, until it is complete.
    pending: Mutex<Option<Index>>,
    changed: Mutex<BTreeSet<String>>,
    change_signal: Notify,
    synced: watch::Sender<bool>,
}

impl Default for PvCache {
    fn default() -> Self {
        Self {
            index: Mutex::default(),
            pending: Mutex::default(),
            changed: Mutex::default(),
            change_signal: Notify::new(),
            synced: watch::Sender::new(false),
        }
    }
}

impl PvCache {
    /// An empty cache, not synced yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every cached PV, in no particular order.
    pub fn pvs(&self) -> Vec<Arc<PersistentVolume>> {
        lock(&self.index).by_name.values().cloned().collect()
    }

    /// The cached PV called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        lock(&self.index).by_name.get(name).cloned()
    }

    /// The cached PVs of resource definition `resource_definition`, by
    /// volume number.
    pub fn of_resource_definition(&self, resource_definition: &str) -> Vec<Arc<PersistentVolume>> {
        let index = lock(&self.index);
        let start = (resource_definition.to_owned(), 0);
        let end = (resource_definition.to_owned(), u16::MAX);
        index
            .by_volume
            .range(start..=end)
            .flat_map(|(_, names)| names.iter())
            .filter_map(|name| index.by_name.get(name).cloned())
            .collect()
    }

    /// How many PVs are cached.
    pub fn len(&self) -> usize {
        lock(&self.index).by_name.len()
    }

    /// Whether no PV is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a complete list has been received.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once a complete list has been received.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // Only fails when the sender is gone, and the sender is `self`.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Resource definitions whose PVs were added, modified or deleted since
    /// the last call.
    pub fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *lock(&self.changed))
    }

    /// Resolves when a PV changed since the last [`Self::take_changed`].
    pub async fn changed(&self) {
        let notified = self.change_signal.notified();
        if !lock(&self.changed).is_empty() {
            return;
        }
        notified.await;
    }

    fn mark_changed(&self, pv: &PersistentVolume) {
        if let Some(Ok(volume)) = linstor_volume_of(pv) {
            lock(&self.changed).insert(volume.resource_definition);
            self.change_signal.notify_one();
        }
    }
}

impl WatchSink<PersistentVolume> for PvCache {
    fn list_started(&self) {
        *lock(&self.pending) = Some(Index::default());
    }

    fn listed(&self, pv: PersistentVolume) {
        if linstor_volume_of(&pv).is_some()
            && let Some(pending) = lock(&self.pending).as_mut()
        {
            pending.insert(compact(pv));
        }
    }

    fn list_done(&self) {
        if let Some(complete) = lock(&self.pending).take() {
            *lock(&self.index) = complete;
            self.synced.send_replace(true);
        }
    }

    fn applied(&self, pv: PersistentVolume) {
        if linstor_volume_of(&pv).is_some() {
            self.mark_changed(&pv);
            lock(&self.index).insert(compact(pv));
        }
    }

    fn deleted(&self, pv: PersistentVolume) {
        if let Some(name) = &pv.metadata.name {
            lock(&self.index).remove(name);
        }
        self.mark_changed(&pv);
    }
}

/// Locks `mutex`; a panic elsewhere while holding it leaves the data usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use affinity_core::k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus,
    };
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use affinity_core::names::CSI_DRIVER;

    use super::*;

    fn pv(name: &str, driver: &str, handle: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some(BTreeMap::from([
                    (LAST_APPLIED_ANNOTATION.to_owned(), "{}".to_owned()),
                    ("keep".to_owned(), "me".to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: driver.to_owned(),
                    volume_handle: handle.to_owned(),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".to_owned()),
                message: Some("noise".to_owned()),
                ..PersistentVolumeStatus::default()
            }),
        }
    }

    fn names(pvs: &[Arc<PersistentVolume>]) -> Vec<&str> {
        pvs.iter().filter_map(|pv| pv.metadata.name.as_deref()).collect()
    }

    #[test]
    fn keeps_only_linstor_pvs_compacted_and_indexed_by_volume() {
        let cache = PvCache::new();
        assert!(!cache.is_synced());
        cache.list_started();
        cache.listed(pv("a", CSI_DRIVER, "pvc-1"));
        cache.listed(pv("b", CSI_DRIVER, "pvc-1/1"));
        cache.listed(pv("c", "other.csi.example.com", "pvc-1"));
        cache.listed(pv("d", CSI_DRIVER, "pvc-10"));
        cache.listed(pv("bad", CSI_DRIVER, "/1"));
        assert!(cache.is_empty(), "a list only counts once complete");
        cache.list_done();
        assert!(cache.is_synced());
        assert_eq!(cache.len(), 4);
        assert_eq!(names(&cache.of_resource_definition("pvc-1")), ["a", "b"]);
        assert_eq!(names(&cache.of_resource_definition("pvc-10")), ["d"]);
        let a = cache.get("a").unwrap();
        assert!(a.metadata.managed_fields.is_none());
        let annotations = a.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["keep"]);
        let status = a.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Bound"));
        assert!(status.message.is_none());
        assert!(cache.take_changed().is_empty(), "a list is not a change");
    }

    #[test]
    fn events_update_the_index_and_record_changes() {
        let cache = PvCache::new();
        cache.list_started();
        cache.listed(pv("a", CSI_DRIVER, "pvc-1"));
        cache.list_done();
        cache.applied(pv("a", CSI_DRIVER, "pvc-2"));
        assert!(cache.of_resource_definition("pvc-1").is_empty());
        assert_eq!(names(&cache.of_resource_definition("pvc-2")), ["a"]);
        cache.applied(pv("other", "other.csi.example.com", "x"));
        cache.applied(pv("bad", CSI_DRIVER, "/1"));
        cache.deleted(pv("bad", CSI_DRIVER, "/1"));
        cache.deleted(pv("a", CSI_DRIVER, "pvc-2"));
        assert!(cache.is_empty());
        assert_eq!(cache.take_changed().into_iter().collect::<Vec<_>>(), ["pvc-2"]);
        assert!(cache.take_changed().is_empty());
    }

    #[test]
    fn a_new_list_replaces_everything_at_once() {
        let cache = PvCache::new();
        cache.list_started();
        cache.listed(pv("gone", CSI_DRIVER, "pvc-1"));
        cache.list_done();
        cache.list_started();
        cache.listed(pv("new", CSI_DRIVER, "pvc-2"));
        assert!(
            cache.get("gone").is_some(),
            "old content served until the list completes"
        );
        cache.list_done();
        assert!(cache.get("gone").is_none());
        assert!(cache.of_resource_definition("pvc-1").is_empty());
        assert!(cache.get("new").is_some());
    }

    #[tokio::test]
    async fn changed_resolves_for_changes_made_before_the_wait() {
        let cache = PvCache::new();
        cache.applied(pv("a", CSI_DRIVER, "pvc-1"));
        tokio::time::timeout(std::time::Duration::from_secs(5), cache.changed())
            .await
            .unwrap();
    }
}
