//! The plan as a stable report: what every output format shows.
//!
//! Field names (camelCase in JSON and YAML) are part of the tool's interface:
//!
//! - `formatVersion` (1), `propertyNamespace`, `now` (RFC 3339), `gracePeriodSeconds`;
//! - `summary`: `volumes`, `inSync`, `replace`, `skip`, `clearSavedState`, `errors` (counts over all
//!   volumes, also when `--only-drift` hides some);
//! - `volumes[]`: `pv`, `resourceDefinition` and `volumeNumber` (absent when the volume handle is
//!   invalid), `storageClass` (absent when none), `decision` (`in-sync`, `replace`, `skip`,
//!   `clear-saved-state` or `error`), `trigger` for `replace` (`drift`, `resume` or `recreate`),
//!   `skipReason` for `skip` (`skip-annotation`, `skip-property`, `released`, `grace-period`,
//!   `no-resources`, `no-healthy-diskful-replica`, `unknown-node`, `duplicate-volume`), `message` (a
//!   sentence for people, absent for `in-sync`), `currentAffinity` and `desiredAffinity`.
//!
//! An affinity is the list of Kubernetes `nodeSelectorTerms` (`matchExpressions` of `key`,
//! `operator`, `values`), or `null` for no node affinity (accessible from every node).
//! `currentAffinity` is absent only when there is no live PV; `desiredAffinity` is absent when it
//! was not computed (skips, errors, saved state to clear).

use std::collections::BTreeMap;

use affinity_core::k8s_openapi::api::core::v1::{NodeSelectorTerm, PersistentVolume, VolumeNodeAffinity};
use affinity_core::{
    Action, DecisionSettings, LinstorSnapshot, LinstorSource, Plan, Planner, Properties, ReplaceTrigger,
    SkipReason, StorageClassSource, desired_node_affinity,
};
use serde::Serialize;

/// Version of the report's format; changes only when fields change meaning or go away.
pub const FORMAT_VERSION: u32 = 1;

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// Version of this format.
    pub format_version: u32,
    /// LINSTOR property namespace of the nodes' topology labels.
    pub property_namespace: String,
    /// The time PV ages were measured against (RFC 3339).
    pub now: String,
    /// PVs younger than this many seconds are left alone.
    pub grace_period_seconds: u64,
    /// Counts of the decisions.
    pub summary: Summary,
    /// One entry per volume, sorted by volume.
    pub volumes: Vec<VolumeReport>,
}

/// Counts of the decisions over every volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Volumes decided.
    pub volumes: usize,
    /// Volumes in sync.
    pub in_sync: usize,
    /// Volumes to replace or recreate.
    pub replace: usize,
    /// Volumes skipped.
    pub skip: usize,
    /// Saved replace states to clear.
    pub clear_saved_state: usize,
    /// PVs held at reclaim policy `Retain` until their claim owns them again.
    pub restore_reclaim_policy: usize,
    /// Volumes that could not be decided.
    pub errors: usize,
}

impl Summary {
    /// Whether any volume needs a write: replace, recreate, or clear saved state.
    pub fn drift(&self) -> bool {
        self.replace > 0 || self.clear_saved_state > 0 || self.restore_reclaim_policy > 0
    }
}

/// The decision kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// The PV's affinity matches LINSTOR.
    InSync,
    /// The PV must be replaced or (re)created.
    Replace,
    /// The PV is left alone.
    Skip,
    /// Saved state of a finished replace must be removed.
    ClearSavedState,
    /// The PV was created at reclaim policy `Retain`; its original policy
    /// comes back once its claim owns it.
    RestoreReclaimPolicy,
    /// Nothing could be decided.
    Error,
}

impl DecisionKind {
    /// Whether the volume needs attention: a write, or a fix of its error.
    pub fn needs_attention(self) -> bool {
        matches!(
            self,
            Self::Replace | Self::ClearSavedState | Self::RestoreReclaimPolicy | Self::Error
        )
    }
}

/// Why a PV is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its affinity differs from where LINSTOR keeps the data.
    Drift,
    /// An interrupted replace is finished from saved state.
    Resume,
    /// The PV is gone and is created from saved state.
    Recreate,
}

/// One volume's line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeReport {
    /// Name of the PV.
    pub pv: String,
    /// The LINSTOR resource definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_definition: Option<String>,
    /// The volume number inside the resource definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<u16>,
    /// The PV's StorageClass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The decision.
    pub decision: DecisionKind,
    /// Why the PV is replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Why the PV is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<&'static str>,
    /// Explanation for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The live PV's node selector terms; `None` inside: no affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_affinity: Option<Option<Vec<NodeSelectorTerm>>>,
    /// The node selector terms the PV should have; `None` inside: no affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_affinity: Option<Option<Vec<NodeSelectorTerm>>>,
}

/// Builds the report of `plan`, made from `pvs` and `linstor`.
pub fn build(
    plan: &Plan,
    pvs: &[PersistentVolume],
    linstor: &LinstorSnapshot,
    storage_classes: &BTreeMap<String, Properties>,
    settings: &DecisionSettings,
) -> PlanReport {
    let mut planner = Planner::new(linstor, storage_classes, settings);
    let by_name: BTreeMap<&str, &PersistentVolume> = pvs
        .iter()
        .filter_map(|pv| pv.metadata.name.as_deref().map(|name| (name, pv)))
        .collect();
    let mut volumes = Vec::with_capacity(plan.decisions.len() + plan.invalid_handles.len());
    for decision in &plan.decisions {
        let live = by_name.get(decision.pv_name.as_str()).copied();
        let mut entry = VolumeReport {
            pv: decision.pv_name.clone(),
            resource_definition: Some(decision.volume.resource_definition.clone()),
            volume_number: Some(decision.volume.volume_number),
            storage_class: live.and_then(storage_class_of),
            decision: DecisionKind::Error,
            trigger: None,
            skip_reason: None,
            message: None,
            current_affinity: live.map(|pv| terms(pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()))),
            desired_affinity: None,
        };
        match &decision.outcome {
            Ok(Action::InSync) => {
                entry.decision = DecisionKind::InSync;
                entry.desired_affinity = live
                    .and_then(|pv| recompute(pv, &mut planner))
                    .or_else(|| entry.current_affinity.clone());
            }
            Ok(Action::Skip(reason)) => {
                entry.decision = DecisionKind::Skip;
                entry.skip_reason = Some(skip_code(reason));
                entry.message = Some(reason.to_string());
            }
            Ok(Action::ClearSavedState) => {
                entry.decision = DecisionKind::ClearSavedState;
                entry.message = Some("an earlier replace finished: remove the saved PV property".to_owned());
            }
            Ok(Action::RestoreReclaimPolicy { policy }) => {
                entry.decision = DecisionKind::RestoreReclaimPolicy;
                entry.message = Some(format!(
                    "held at reclaim policy Retain: {policy} comes back once its claim owns the PV"
                ));
            }
            Ok(Action::Replace(replacement)) => {
                entry.decision = DecisionKind::Replace;
                let trigger = match replacement.trigger {
                    ReplaceTrigger::AffinityDrift => Trigger::Drift,
                    ReplaceTrigger::ResumeInterrupted => Trigger::Resume,
                    ReplaceTrigger::RecreateFromSavedState => Trigger::Recreate,
                };
                entry.trigger = Some(trigger);
                entry.message = Some(
                    match trigger {
                        Trigger::Drift => "node affinity differs from where LINSTOR keeps the data",
                        Trigger::Resume => "finish an interrupted replace from the saved PV",
                        Trigger::Recreate => "the PV is gone: create it from the saved PV",
                    }
                    .to_owned(),
                );
                if entry.storage_class.is_none() {
                    entry.storage_class = storage_class_of(&replacement.pv);
                }
                entry.desired_affinity = Some(terms(
                    replacement
                        .pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_affinity.as_ref()),
                ));
            }
            Err(error) => entry.message = Some(error.to_string()),
        }
        volumes.push(entry);
    }
    for invalid in &plan.invalid_handles {
        let live = by_name.get(invalid.pv.as_str()).copied();
        volumes.push(VolumeReport {
            pv: invalid.pv.clone(),
            resource_definition: None,
            volume_number: None,
            storage_class: live.and_then(storage_class_of),
            decision: DecisionKind::Error,
            trigger: None,
            skip_reason: None,
            message: Some(invalid.to_string()),
            current_affinity: live.map(|pv| terms(pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()))),
            desired_affinity: None,
        });
    }
    let mut summary = Summary {
        volumes: volumes.len(),
        ..Summary::default()
    };
    for volume in &volumes {
        match volume.decision {
            DecisionKind::InSync => summary.in_sync += 1,
            DecisionKind::Replace => summary.replace += 1,
            DecisionKind::Skip => summary.skip += 1,
            DecisionKind::ClearSavedState => summary.clear_saved_state += 1,
            DecisionKind::RestoreReclaimPolicy => summary.restore_reclaim_policy += 1,
            DecisionKind::Error => summary.errors += 1,
        }
    }
    PlanReport {
        format_version: FORMAT_VERSION,
        property_namespace: settings.property_namespace.clone(),
        now: settings.now.to_string(),
        grace_period_seconds: settings.grace_period.as_secs(),
        summary,
        volumes,
    }
}

fn storage_class_of(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.clone())
        .filter(|name| !name.is_empty())
}

fn terms(affinity: Option<&VolumeNodeAffinity>) -> Option<Vec<NodeSelectorTerm>> {
    affinity
        .and_then(|affinity| affinity.required.as_ref())
        .map(|required| required.node_selector_terms.clone())
}

/// The canonical desired affinity of a PV found in sync, as the engine computes it.
fn recompute<L, S>(
    pv: &PersistentVolume,
    planner: &mut Planner<'_, L, S>,
) -> Option<Option<Vec<NodeSelectorTerm>>>
where
    L: LinstorSource + ?Sized,
    S: StorageClassSource + ?Sized,
{
    let accessibility = planner.accessibility(pv)?;
    Some(terms(desired_node_affinity(&accessibility).as_ref()))
}

/// The stable code of a skip reason.
pub fn skip_code(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::SkipAnnotation => "skip-annotation",
        SkipReason::SkipProperty => "skip-property",
        SkipReason::Released => "released",
        SkipReason::Failed => "failed",
        SkipReason::BeingDeleted => "being-deleted",
        SkipReason::ClaimGone { .. } => "claim-gone",
        SkipReason::GracePeriod { .. } => "grace-period",
        SkipReason::NoResources => "no-resources",
        SkipReason::NoHealthyDiskfulReplica => "no-healthy-diskful-replica",
        SkipReason::UnknownNode { .. } => "unknown-node",
        SkipReason::DuplicateVolume { .. } => "duplicate-volume",
    }
}
