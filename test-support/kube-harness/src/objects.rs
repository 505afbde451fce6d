//! Builders for the objects the tests create.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

use crate::reclaim::{PROVISIONED_BY_ANNOTATION, PROVISIONER_FINALIZER};

/// CSI driver name of LINSTOR volumes.
pub const CSI_DRIVER: &str = "linstor.csi.linbit.com";

/// Label put on every object a [`crate::TestEnv`] creates; its value is the test's prefix.
pub const TEST_LABEL: &str = "kube-harness.test/prefix";

/// How a test PV (and its claim) looks.
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// CSI volume handle; the PV name when `None`.
    pub volume_handle: Option<String>,
    /// Capacity of the PV and request of the PVC, e.g. `1Gi`.
    pub capacity: String,
    /// Storage class name of PV and PVC; empty (no class) when `None`.
    pub storage_class: Option<String>,
    /// Node affinity of the PV; none when `None`.
    pub node_affinity: Option<VolumeNodeAffinity>,
    /// `persistentVolumeReclaimPolicy` of the PV.
    pub reclaim_policy: String,
    /// `mountOptions` of the PV; none when empty.
    pub mount_options: Vec<String>,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            volume_handle: None,
            capacity: "1Gi".to_owned(),
            storage_class: None,
            node_affinity: None,
            reclaim_policy: "Retain".to_owned(),
            mount_options: Vec::new(),
        }
    }
}

/// Node affinity requiring `kubernetes.io/hostname` to be one of `nodes`.
pub fn hostname_affinity<S: AsRef<str>>(nodes: &[S]) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(nodes.iter().map(|n| n.as_ref().to_owned()).collect()),
                }]),
                match_fields: None,
            }],
        }),
    }
}

/// The nodes a PV's required affinity allows: the values of its terms' expressions, in order
/// (empty without an affinity).
pub fn affinity_nodes(pv: &PersistentVolume) -> Vec<String> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
        .and_then(|affinity| affinity.required.as_ref())
        .map(|required| {
            required
                .node_selector_terms
                .iter()
                .flat_map(|term| term.match_expressions.iter().flatten())
                .flat_map(|expression| expression.values.iter().flatten().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// A CSI PV of [`CSI_DRIVER`], optionally pre-bound to a claim, labelled with `labels`.
///
/// It looks provisioned by LINSTOR CSI: annotation [`PROVISIONED_BY_ANNOTATION`] names the driver
/// and it carries [`PROVISIONER_FINALIZER`]. Deleting it therefore waits until that finalizer is
/// removed, by a [`crate::ReclaimEmulator`] or by [`crate::TestEnv::cleanup`].
pub fn persistent_volume(
    name: &str,
    labels: &BTreeMap<String, String>,
    options: &VolumeOptions,
    claim_ref: Option<ObjectReference>,
) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY_ANNOTATION.to_owned(),
                CSI_DRIVER.to_owned(),
            )])),
            finalizers: Some(vec![PROVISIONER_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(options.capacity.clone()),
            )])),
            claim_ref,
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER.to_owned(),
                volume_handle: options.volume_handle.clone().unwrap_or_else(|| name.to_owned()),
                fs_type: Some("ext4".to_owned()),
                ..CSIPersistentVolumeSource::default()
            }),
            node_affinity: options.node_affinity.clone(),
            persistent_volume_reclaim_policy: Some(options.reclaim_policy.clone()),
            storage_class_name: Some(options.storage_class.clone().unwrap_or_default()),
            volume_mode: Some("Filesystem".to_owned()),
            mount_options: (!options.mount_options.is_empty()).then(|| options.mount_options.clone()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn timestamp_now() -> k8s_openapi::jiff::Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// The current time as a [`MicroTime`] (for `events.k8s.io/v1` events).
pub fn micro_time_now() -> MicroTime {
    MicroTime(timestamp_now())
}

/// The current time as a [`Time`] (second precision on the wire).
pub fn time_now() -> Time {
    Time(timestamp_now())
}
