//! What the engine reads of a PV, behind a trait ([`PvView`]) so that a
//! cache can keep a compact record per PV ([`PvRecord`]) instead of whole
//! `PersistentVolume` objects, and decide on it without rebuilding PVs.
//!
//! A record holds what the planner decides on and nothing else. It cannot
//! be the source of a replacement (that needs the whole PV, as read right
//! before the write), so a decision on a record that says "replace" carries
//! a [`ReplaceNeeded`] instead of the replacement PV.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, VolumeNodeAffinity};
use k8s_openapi::jiff::Timestamp;

use crate::decision::{AffinityBasis, ReplaceTrigger, Replacement, RetiredPv};
use crate::fast_hash::FastMap;
use crate::handle::linstor_volume_handle;
use crate::names::{RESTORE_RECLAIM_POLICY_ANNOTATION, SKIP_ANNOTATION};
use crate::policy_source::PolicyOrigin;
use crate::replacement::replacement_pv;

/// What the planner reads of a PV.
pub trait PvView {
    /// What a decision to replace this PV carries: the replacement itself
    /// for a whole PV, a [`ReplaceNeeded`] for a record.
    type Replace: From<Box<Replacement>>;

    /// The PV's name, empty when it has none.
    fn name(&self) -> &str;
    /// Its UID, when known.
    fn uid(&self) -> Option<&str>;
    /// Its CSI volume handle when LINSTOR CSI provisioned it.
    fn linstor_volume_handle(&self) -> Option<&str>;
    /// When it was created.
    fn created(&self) -> Option<Timestamp>;
    /// Whether its deletion started.
    fn being_deleted(&self) -> bool;
    /// Whether its owner asked with the skip annotation to leave it alone.
    fn skip_annotated(&self) -> bool;
    /// Its phase, such as `Bound`.
    fn phase(&self) -> Option<&str>;
    /// The reclaim policy to restore, when this project created it at
    /// `Retain` in place of another.
    fn restore_policy(&self) -> Option<&str>;
    /// Where its remote access policy comes from.
    fn policy_origin(&self) -> PolicyOrigin<'_>;
    /// Its node affinity.
    fn node_affinity(&self) -> Option<&VolumeNodeAffinity>;
    /// The whole PV, when this view has it: saved replace state is checked
    /// against the whole live PV.
    fn whole(&self) -> Option<&PersistentVolume>;
    /// The decision to replace this PV because its affinity drifted: the
    /// live PV is retired and `node_affinity` is what the new one gets.
    fn replace_drifted(
        &self,
        node_affinity: Option<VolumeNodeAffinity>,
        basis: AffinityBasis,
    ) -> Self::Replace;
}

/// A replace decided on a [`PvRecord`]: the replacement is built from the
/// PV as read right before the write.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaceNeeded {
    /// Why the PV is replaced.
    pub trigger: ReplaceTrigger,
    /// How the new node affinity was obtained.
    pub affinity: AffinityBasis,
}

impl From<Box<Replacement>> for ReplaceNeeded {
    fn from(replacement: Box<Replacement>) -> Self {
        Self {
            trigger: replacement.trigger,
            affinity: replacement.affinity,
        }
    }
}

impl PvView for PersistentVolume {
    type Replace = Box<Replacement>;

    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }

    fn linstor_volume_handle(&self) -> Option<&str> {
        linstor_volume_handle(self)
    }

    fn created(&self) -> Option<Timestamp> {
        self.metadata.creation_timestamp.as_ref().map(|time| time.0)
    }

    fn being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    fn skip_annotated(&self) -> bool {
        annotation(self, SKIP_ANNOTATION).is_some_and(|value| !value.is_empty())
    }

    fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    fn restore_policy(&self) -> Option<&str> {
        annotation(self, RESTORE_RECLAIM_POLICY_ANNOTATION)
    }

    fn policy_origin(&self) -> PolicyOrigin<'_> {
        PolicyOrigin::of(self)
    }

    fn node_affinity(&self) -> Option<&VolumeNodeAffinity> {
        self.spec.as_ref()?.node_affinity.as_ref()
    }

    fn whole(&self) -> Option<&PersistentVolume> {
        Some(self)
    }

    fn replace_drifted(
        &self,
        node_affinity: Option<VolumeNodeAffinity>,
        basis: AffinityBasis,
    ) -> Self::Replace {
        Box::new(Replacement {
            pv: replacement_pv(self, node_affinity),
            retire: Some(RetiredPv {
                name: self.name().to_owned(),
                uid: self.metadata.uid.clone(),
                resource_version: self.metadata.resource_version.clone(),
            }),
            trigger: ReplaceTrigger::AffinityDrift,
            affinity: basis,
        })
    }
}

fn annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Where a record's policy comes from; the texts are shared between records.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RecordedOrigin {
    OverrideAnnotation { key: Arc<str>, value: Arc<str> },
    VolumeContext { value: Arc<str> },
    StorageClass { name: Option<Arc<str>> },
}

/// The part of a LINSTOR CSI PV the planner decides on, and nothing else:
/// a few hundred bytes, where the whole object takes kilobytes. Texts many
/// PVs share (phase, StorageClass, policy, node affinity) are stored once
/// per [`RecordInterner`].
#[derive(Clone, Debug, PartialEq)]
pub struct PvRecord {
    name: Arc<str>,
    uid: Option<Box<str>>,
    /// `None` when the handle equals the name, as LINSTOR CSI names them.
    handle: Option<Box<str>>,
    created: Option<Timestamp>,
    being_deleted: bool,
    skip_annotated: bool,
    phase: Option<Arc<str>>,
    restore_policy: Option<Arc<str>>,
    origin: RecordedOrigin,
    node_affinity: Option<Arc<VolumeNodeAffinity>>,
}

impl PvRecord {
    /// The record of `pv`, `None` when LINSTOR CSI did not provision it.
    pub fn of(pv: &PersistentVolume, interner: &mut RecordInterner) -> Option<Self> {
        let handle = linstor_volume_handle(pv)?;
        let name = pv.name();
        let origin = match PolicyOrigin::of(pv) {
            PolicyOrigin::OverrideAnnotation { key, value } => RecordedOrigin::OverrideAnnotation {
                key: interner.text(key),
                value: interner.text(value),
            },
            PolicyOrigin::VolumeContext { value } => RecordedOrigin::VolumeContext {
                value: interner.text(value),
            },
            PolicyOrigin::StorageClass { name } => RecordedOrigin::StorageClass {
                name: name.map(|name| interner.text(name)),
            },
        };
        Some(Self {
            name: Arc::from(name),
            uid: pv.uid().map(Box::from),
            handle: (handle != name).then(|| Box::from(handle)),
            created: pv.created(),
            being_deleted: pv.being_deleted(),
            skip_annotated: pv.skip_annotated(),
            phase: pv.phase().map(|phase| interner.text(phase)),
            restore_policy: pv.restore_policy().map(|policy| interner.text(policy)),
            origin,
            node_affinity: PvView::node_affinity(pv).map(|affinity| interner.affinity(affinity)),
        })
    }

    /// The name, shared with whoever else holds it (for example an index).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }
}

impl PvView for PvRecord {
    type Replace = ReplaceNeeded;

    fn name(&self) -> &str {
        &self.name
    }

    fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    fn linstor_volume_handle(&self) -> Option<&str> {
        Some(self.handle.as_deref().unwrap_or(&self.name))
    }

    fn created(&self) -> Option<Timestamp> {
        self.created
    }

    fn being_deleted(&self) -> bool {
        self.being_deleted
    }

    fn skip_annotated(&self) -> bool {
        self.skip_annotated
    }

    fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }

    fn restore_policy(&self) -> Option<&str> {
        self.restore_policy.as_deref()
    }

    fn policy_origin(&self) -> PolicyOrigin<'_> {
        match &self.origin {
            RecordedOrigin::OverrideAnnotation { key, value } => {
                PolicyOrigin::OverrideAnnotation { key, value }
            }
            RecordedOrigin::VolumeContext { value } => PolicyOrigin::VolumeContext { value },
            RecordedOrigin::StorageClass { name } => PolicyOrigin::StorageClass {
                name: name.as_deref(),
            },
        }
    }

    fn node_affinity(&self) -> Option<&VolumeNodeAffinity> {
        self.node_affinity.as_deref()
    }

    fn whole(&self) -> Option<&PersistentVolume> {
        None
    }

    fn replace_drifted(
        &self,
        _node_affinity: Option<VolumeNodeAffinity>,
        basis: AffinityBasis,
    ) -> Self::Replace {
        ReplaceNeeded {
            trigger: ReplaceTrigger::AffinityDrift,
            affinity: basis,
        }
    }
}

/// Stores each text and node affinity that records share once. Entries no
/// record uses any more are dropped as the interner grows.
#[derive(Debug, Default)]
pub struct RecordInterner {
    texts: FastMap<Arc<str>, ()>,
    /// By a hash of their content; several on a collision.
    affinities: HashMap<u64, Vec<Arc<VolumeNodeAffinity>>>,
    /// Entries after the last sweep; the next sweep comes at twice as many.
    swept_at: usize,
}

impl RecordInterner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    fn text(&mut self, text: &str) -> Arc<str> {
        if let Some((shared, ())) = self.texts.get_key_value(text) {
            return Arc::clone(shared);
        }
        self.sweep_if_grown();
        let shared: Arc<str> = Arc::from(text);
        self.texts.insert(Arc::clone(&shared), ());
        shared
    }

    fn affinity(&mut self, affinity: &VolumeNodeAffinity) -> Arc<VolumeNodeAffinity> {
        let key = affinity_hash(affinity);
        if let Some(shared) = self
            .affinities
            .get(&key)
            .and_then(|candidates| candidates.iter().find(|candidate| ***candidate == *affinity))
        {
            return Arc::clone(shared);
        }
        self.sweep_if_grown();
        let shared = Arc::new(affinity.clone());
        self.affinities.entry(key).or_default().push(Arc::clone(&shared));
        shared
    }

    /// How many texts and affinities are stored.
    pub fn len(&self) -> usize {
        self.texts.len() + self.affinities.values().map(Vec::len).sum::<usize>()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep_if_grown(&mut self) {
        let len = self.len();
        if len < 64 || len < self.swept_at.saturating_mul(2) {
            return;
        }
        self.texts.retain(|text, ()| Arc::strong_count(text) > 1);
        self.affinities.retain(|_, candidates| {
            candidates.retain(|candidate| Arc::strong_count(candidate) > 1);
            !candidates.is_empty()
        });
        self.swept_at = self.len();
    }
}

/// A hash of what an affinity says (k8s-openapi types do not implement
/// `Hash`).
fn affinity_hash(affinity: &VolumeNodeAffinity) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for term in affinity
        .required
        .iter()
        .flat_map(|required| &required.node_selector_terms)
    {
        for (kind, requirements) in [(0u8, &term.match_expressions), (1, &term.match_fields)] {
            kind.hash(&mut hasher);
            for requirement in requirements.iter().flatten() {
                requirement.key.hash(&mut hasher);
                requirement.operator.hash(&mut hasher);
                requirement.values.hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {

    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
        PersistentVolumeSpec, PersistentVolumeStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::names::{
        CSI_DRIVER, OVERRIDE_ANNOTATION_PREFIX, VOLUME_CONTEXT_MARKER, VOLUME_CONTEXT_POLICY,
    };
    use crate::test_util::pairs;

    fn on(node: &str) -> VolumeNodeAffinity {
        VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/hostname".to_owned(),
                        operator: "In".to_owned(),
                        values: Some(vec![node.to_owned()]),
                    }]),
                    match_fields: None,
                }],
            }),
        }
    }

    fn pv(
        name: &str,
        handle: &str,
        annotations: &[(&str, &str)],
        attributes: &[(&str, &str)],
    ) -> PersistentVolume {
        let map = |literal: &[(&str, &str)]| (!literal.is_empty()).then(|| pairs(literal));
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("7".to_owned()),
                creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some("local".to_owned()),
                node_affinity: Some(on("a")),
                csi: Some(CSIPersistentVolumeSource {
                    driver: CSI_DRIVER.to_owned(),
                    volume_handle: handle.to_owned(),
                    volume_attributes: map(attributes),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".to_owned()),
                ..PersistentVolumeStatus::default()
            }),
        }
    }

    /// Every accessor of the record answers what the PV's does.
    fn assert_same_view(pv: &PersistentVolume, record: &PvRecord) {
        assert_eq!(record.name(), pv.name());
        assert_eq!(record.uid(), pv.uid());
        assert_eq!(record.linstor_volume_handle(), pv.linstor_volume_handle());
        assert_eq!(record.created(), pv.created());
        assert_eq!(record.being_deleted(), pv.being_deleted());
        assert_eq!(record.skip_annotated(), pv.skip_annotated());
        assert_eq!(record.phase(), pv.phase());
        assert_eq!(record.restore_policy(), pv.restore_policy());
        assert_eq!(record.policy_origin(), pv.policy_origin());
        assert_eq!(PvView::node_affinity(record), PvView::node_affinity(pv));
        assert!(record.whole().is_none());
    }

    #[test]
    fn a_record_answers_like_its_pv() {
        let mut interner = RecordInterner::new();
        let override_key = format!("{OVERRIDE_ANNOTATION_PREFIX}policy");
        let cases = [
            pv("pvc-1", "pvc-1", &[], &[]),
            pv(
                "pvc-2",
                "pvc-2/1",
                &[
                    (SKIP_ANNOTATION, "yes"),
                    (RESTORE_RECLAIM_POLICY_ANNOTATION, "Delete"),
                ],
                &[],
            ),
            pv("pvc-3", "pvc-3", &[(&override_key, "[]")], &[]),
            pv(
                "pvc-4",
                "pvc-4",
                &[(SKIP_ANNOTATION, "")],
                &[(VOLUME_CONTEXT_MARKER, "x"), (VOLUME_CONTEXT_POLICY, "[]")],
            ),
        ];
        for pv in &cases {
            let record = PvRecord::of(pv, &mut interner).unwrap();
            assert_same_view(pv, &record);
        }
        let mut deleted = pv("pvc-5", "pvc-5", &[], &[]);
        deleted.metadata.deletion_timestamp = deleted.metadata.creation_timestamp.clone();
        deleted.spec.as_mut().unwrap().node_affinity = None;
        deleted.status = None;
        assert_same_view(&deleted, &PvRecord::of(&deleted, &mut interner).unwrap());
    }

    #[test]
    fn only_linstor_pvs_have_records() {
        let mut other = pv("pvc-1", "pvc-1", &[], &[]);
        other.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = "other.csi.example.com".to_owned();
        assert!(PvRecord::of(&other, &mut RecordInterner::new()).is_none());
    }

    #[test]
    fn records_share_equal_texts_and_affinities() {
        let mut interner = RecordInterner::new();
        let first = PvRecord::of(&pv("pvc-1", "pvc-1", &[], &[]), &mut interner).unwrap();
        let second = PvRecord::of(&pv("pvc-2", "pvc-2", &[], &[]), &mut interner).unwrap();
        let (Some(a), Some(b)) = (&first.node_affinity, &second.node_affinity) else {
            panic!("both have an affinity");
        };
        assert!(Arc::ptr_eq(a, b));
        assert!(Arc::ptr_eq(
            first.phase.as_ref().unwrap(),
            second.phase.as_ref().unwrap()
        ));
        let mut elsewhere = pv("pvc-3", "pvc-3", &[], &[]);
        elsewhere.spec.as_mut().unwrap().node_affinity = Some(on("b"));
        let third = PvRecord::of(&elsewhere, &mut interner).unwrap();
        assert_eq!(PvView::node_affinity(&third), Some(&on("b")));
        assert!(!Arc::ptr_eq(a, third.node_affinity.as_ref().unwrap()));
    }

    #[test]
    fn texts_no_record_uses_are_swept() {
        let mut interner = RecordInterner::new();
        for i in 0..1000 {
            let mut pv = pv("pvc", "pvc", &[], &[]);
            pv.spec.as_mut().unwrap().node_affinity = Some(on(&format!("node-{i}")));
            drop(PvRecord::of(&pv, &mut interner));
        }
        assert!(interner.len() < 200, "{}", interner.len());
    }

    #[test]
    fn a_drift_on_a_record_needs_the_pv_read_again() {
        let pv = pv("pvc-1", "pvc-1", &[], &[]);
        let record = PvRecord::of(&pv, &mut RecordInterner::new()).unwrap();
        let basis = AffinityBasis::KeptFromSavedState {
            reason: "test".to_owned(),
        };
        let needed = record.replace_drifted(None, basis.clone());
        let whole = pv.replace_drifted(None, basis);
        assert_eq!(ReplaceNeeded::from(whole.clone()), needed);
        assert_eq!(whole.retire.unwrap().resource_version.as_deref(), Some("7"));
    }
}
