//! The PV cache: a compact record per LINSTOR CSI PV (what decisions read,
//! nothing else: [`PvRecord`]), indexed by name and by resource
//! definition. Whole PVs are never kept: the replace protocol reads the PV
//! fresh before it writes, and the few decisions that need the whole PV
//! (saved replace state) read it then too. It also records whose resource
//! definitions' PVs changed since the controller last looked, so a PV event
//! is decided without waiting for the next cycle.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::{PvRecord, PvView, RecordInterner, VolumeId, linstor_volume_of};
use tokio::sync::{Notify, watch};

use crate::lock;
use crate::watch::WatchSink;

/// Cached LINSTOR CSI PVs.
#[derive(Debug, Default)]
struct Index {
    interner: RecordInterner,
    /// Keys share the records' names.
    by_name: HashMap<Arc<str>, Arc<PvRecord>>,
    /// Records per resource definition; several PVs share one when the
    /// definition has several volumes, or when PVs wrongly share a volume.
    by_definition: HashMap<Box<str>, Vec<Arc<PvRecord>>>,
}

/// The resource definition a record's handle names; `None` when the handle
/// is invalid (such PVs are still cached, so that decisions report them).
fn definition_of(record: &PvRecord) -> Option<String> {
    let handle = record.linstor_volume_handle()?;
    handle
        .parse::<VolumeId>()
        .ok()
        .map(|volume| volume.resource_definition)
}

impl Index {
    fn insert(&mut self, pv: &PersistentVolume) {
        let Some(record) = PvRecord::of(pv, &mut self.interner) else {
            return;
        };
        let record = Arc::new(record);
        self.remove(record.name());
        if let Some(definition) = definition_of(&record) {
            self.by_definition
                .entry(definition.into_boxed_str())
                .or_default()
                .push(Arc::clone(&record));
        }
        self.by_name.insert(Arc::clone(record.shared_name()), record);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        let Some(definition) = definition_of(&old) else {
            return;
        };
        if let Some(records) = self.by_definition.get_mut(definition.as_str()) {
            records.retain(|record| !Arc::ptr_eq(record, &old));
            if records.is_empty() {
                self.by_definition.remove(definition.as_str());
            }
        }
    }
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

impl PvCache {
    /// An empty cache, not synced yet; the controller's watch fills it.
    pub(crate) fn new() -> Self {
        Self {
            index: Mutex::default(),
            pending: Mutex::default(),
            changed: Mutex::default(),
            change_signal: Notify::new(),
            synced: watch::Sender::new(false),
        }
    }

    /// Every cached PV, in no particular order.
    pub fn pvs(&self) -> Vec<Arc<PvRecord>> {
        lock(&self.index).by_name.values().cloned().collect()
    }

    /// The cached PV called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PvRecord>> {
        lock(&self.index).by_name.get(name).cloned()
    }

    /// The cached PVs of resource definition `resource_definition`, in no
    /// particular order.
    pub fn of_resource_definition(&self, resource_definition: &str) -> Vec<Arc<PvRecord>> {
        lock(&self.index)
            .by_definition
            .get(resource_definition)
            .cloned()
            .unwrap_or_default()
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
    pub(crate) fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *lock(&self.changed))
    }

    /// Resolves when a PV changed since the last [`Self::take_changed`].
    pub(crate) async fn changed(&self) {
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
        if let Some(pending) = lock(&self.pending).as_mut() {
            pending.insert(&pv);
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
            lock(&self.index).insert(&pv);
        }
    }

    fn deleted(&self, pv: PersistentVolume) {
        if let Some(name) = &pv.metadata.name {
            lock(&self.index).remove(name);
        }
        self.mark_changed(&pv);
    }
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

    fn names(pvs: &[Arc<PvRecord>]) -> Vec<&str> {
        let mut names: Vec<&str> = pvs.iter().map(|pv| pv.name()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn keeps_records_of_linstor_pvs_indexed_by_resource_definition() {
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
        assert_eq!(a.phase(), Some("Bound"));
        assert_eq!(a.linstor_volume_handle(), Some("pvc-1"));
        assert_eq!(cache.get("bad").unwrap().linstor_volume_handle(), Some("/1"));
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
