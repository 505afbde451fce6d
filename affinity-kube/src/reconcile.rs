//! From the engine's decisions to the work of one pass: the operations to
//! run and the warnings to report. Pure: no I/O, so every rule here is
//! tested without a cluster.

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::{
    Action, DecisionError, DecisionSettings, LinstorSource, Planner, SkipReason, StorageClassSource,
    VolumeDecision, VolumeId,
};
use tracing::debug;

use crate::events::{CLAIM_GONE_REASON, REPLACE_HELD_REASON, WARNING_REASON};
use crate::metrics::OperationKind;

/// One write to carry out. It names the volume and the PV only: the PV is
/// read fresh and decided again right before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Operation {
    /// What the decision said to do.
    pub kind: OperationKind,
    /// The volume.
    pub volume: VolumeId,
    /// Name of the PV.
    pub pv: String,
}

/// A PV the controller leaves alone for a reason its owner should fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PvWarning {
    /// Name of the PV.
    pub pv: String,
    /// Reason of the warning event, such as [`CLAIM_GONE_REASON`].
    pub reason: &'static str,
    /// What is wrong, naming the value at fault.
    pub message: String,
}

impl PvWarning {
    /// The warning about PV `pv` for which nothing could be decided: its
    /// reason says whether a saved intent is held ([`REPLACE_HELD_REASON`]).
    pub(crate) fn for_error(pv: impl Into<String>, error: &DecisionError) -> Self {
        let reason = match error {
            DecisionError::IntentContradicted { .. } | DecisionError::Unowned { .. } => REPLACE_HELD_REASON,
            _ => WARNING_REASON,
        };
        Self {
            pv: pv.into(),
            reason,
            message: error.to_string(),
        }
    }
}

/// The work of one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PassWork {
    /// Writes to carry out, in volume order.
    pub operations: Vec<Operation>,
    /// Problems to report.
    pub warnings: Vec<PvWarning>,
    /// PVs whose affinity does not match LINSTOR (including interrupted
    /// replaces and PVs to re-create).
    pub out_of_sync: u64,
    /// PVs created at `Retain` whose original policy is not restored yet.
    pub held_at_retain: u64,
    /// Saved intents kept without a write because the cluster contradicts them.
    pub intents_held: u64,
}

/// Turns decisions into operations and warnings. Problems that are no
/// PV's fault (for example a volume definition LINSTOR lists with a bad
/// number) are not warnings about a PV and are left to the caller's logs.
pub(crate) fn pass_work<'a, R: 'a>(
    decisions: impl IntoIterator<Item = &'a VolumeDecision<R>>,
    invalid_handles: impl IntoIterator<Item = (&'a str, String)>,
) -> PassWork {
    let mut work = PassWork::default();
    for decision in decisions {
        let kind = match &decision.outcome {
            Ok(Action::InSync) => continue,
            Ok(Action::Skip(reason)) => {
                let held = matches!(reason, SkipReason::ClaimGone { .. });
                work.held_at_retain += u64::from(held);
                if reason.is_warning() {
                    work.warnings.push(PvWarning {
                        pv: decision.pv_name.clone(),
                        reason: if held { CLAIM_GONE_REASON } else { WARNING_REASON },
                        message: format!("volume {}: left unchanged: {reason}", decision.volume),
                    });
                } else {
                    debug!(pv = %decision.pv_name, volume = %decision.volume, %reason, "skipped");
                }
                continue;
            }
            Ok(Action::Replace(_)) => {
                work.out_of_sync += 1;
                OperationKind::ReplacePv
            }
            Ok(Action::ClearSavedState) => OperationKind::ResetOperation,
            Ok(Action::RestoreReclaimPolicy { .. }) => {
                work.held_at_retain += 1;
                OperationKind::RestoreReclaimPolicy
            }
            Err(error) => {
                let warning = PvWarning::for_error(&decision.pv_name, error);
                work.intents_held += u64::from(warning.reason == REPLACE_HELD_REASON);
                work.warnings.push(warning);
                continue;
            }
        };
        work.operations.push(Operation {
            kind,
            volume: decision.volume.clone(),
            pv: decision.pv_name.clone(),
        });
    }
    for (pv, message) in invalid_handles {
        work.warnings.push(PvWarning {
            pv: pv.to_owned(),
            reason: WARNING_REASON,
            message,
        });
    }
    work
}

/// Decides again for one volume, from its PV as just read (`None` when the
/// PV does not exist), right before a write. `None` when there is nothing
/// to decide (no PV, no saved state).
pub(crate) fn decide_again<L, S>(
    linstor: &L,
    storage_classes: &S,
    settings: &DecisionSettings,
    volume: &VolumeId,
    live: Option<&PersistentVolume>,
) -> Option<Result<Action, DecisionError>>
where
    L: LinstorSource + ?Sized,
    S: StorageClassSource + ?Sized,
{
    let pvs: Vec<&PersistentVolume> = live.into_iter().collect();
    Planner::new(linstor, storage_classes, settings)
        .decide_volume_of(volume, &pvs)
        .into_iter()
        .next()
        .map(|decision| decision.outcome)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use affinity_core::k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus,
    };
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use affinity_core::names::SAVED_PV_PROPERTY;
    use affinity_core::{
        LinstorSnapshot, Properties, Replica, ResourceDefinitionState, VolumeDefinitionState, encode_saved_pv,
    };

    use super::*;

    const CLASS: &str = "local";

    fn pv(name: &str, handle: &str, on: Option<&str>) -> PersistentVolume {
        use affinity_core::k8s_openapi::api::core::v1::{
            NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, VolumeNodeAffinity,
        };
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(CLASS.to_owned()),
                persistent_volume_reclaim_policy: Some("Delete".to_owned()),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".to_owned(),
                    volume_handle: handle.to_owned(),
                    ..CSIPersistentVolumeSource::default()
                }),
                node_affinity: on.map(|node| VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "linbit.com/hostname".to_owned(),
                                operator: "In".to_owned(),
                                values: Some(vec![node.to_owned()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".to_owned()),
                ..PersistentVolumeStatus::default()
            }),
        }
    }

    fn linstor(placements: &[(&str, &str)], saved: Option<(&str, &PersistentVolume)>) -> LinstorSnapshot {
        let mut snapshot = LinstorSnapshot::new();
        for node in ["node-a", "node-b"] {
            snapshot.insert_node(node, Properties::new());
        }
        for (definition, node) in placements {
            let volume_definitions = match saved {
                Some((name, pv)) if name == *definition => vec![VolumeDefinitionState {
                    volume_number: 0,
                    properties: Properties::from([(
                        SAVED_PV_PROPERTY.to_owned(),
                        encode_saved_pv(pv).unwrap(),
                    )]),
                }],
                _ => Vec::new(),
            };
            snapshot.insert_resource_definition(ResourceDefinitionState {
                name: (*definition).to_owned(),
                volume_definitions,
                ..ResourceDefinitionState::default()
            });
            snapshot.push_replica(Replica::new(*definition, *node, Vec::<String>::new()));
        }
        snapshot
    }

    fn classes(remote: &str) -> BTreeMap<String, Properties> {
        BTreeMap::from([(
            CLASS.to_owned(),
            Properties::from([("allowRemoteVolumeAccess".to_owned(), remote.to_owned())]),
        )])
    }

    fn settings() -> DecisionSettings {
        // Far in the future of the PVs' (absent) creation time: no grace period.
        DecisionSettings::at("Aux/topology", Duration::from_secs(60), SystemTime::now())
    }

    fn work(
        linstor: &LinstorSnapshot,
        classes: &BTreeMap<String, Properties>,
        pvs: &[PersistentVolume],
    ) -> PassWork {
        let settings = settings();
        let plan = Planner::new(linstor, classes, &settings).plan(pvs);
        pass_work(
            &plan.decisions,
            plan.invalid_handles
                .iter()
                .map(|invalid| (invalid.pv.as_str(), invalid.to_string())),
        )
    }

    #[test]
    fn drift_becomes_a_replace_and_in_sync_nothing() {
        let linstor = linstor(&[("pvc-1", "node-b"), ("pvc-2", "node-b")], None);
        let pvs = [
            pv("pv-1", "pvc-1", Some("node-a")),
            pv("pv-2", "pvc-2", Some("node-b")),
        ];
        let work = work(&linstor, &classes("false"), &pvs);
        assert_eq!(
            work.operations,
            [Operation {
                kind: OperationKind::ReplacePv,
                volume: VolumeId::new("pvc-1", 0),
                pv: "pv-1".to_owned(),
            }]
        );
        assert_eq!(work.out_of_sync, 1);
        assert!(work.warnings.is_empty());
    }

    #[test]
    fn finished_replace_becomes_a_reset() {
        let live = pv("pv-1", "pvc-1", Some("node-b"));
        let linstor = linstor(&[("pvc-1", "node-b")], Some(("pvc-1", &live)));
        let work = work(&linstor, &classes("false"), &[live]);
        assert_eq!(work.operations.len(), 1);
        assert_eq!(work.operations[0].kind, OperationKind::ResetOperation);
        assert_eq!(work.out_of_sync, 0);
    }

    #[test]
    fn bad_input_becomes_warnings_naming_the_pv_and_the_value() {
        let linstor = linstor(&[("pvc-1", "node-b"), ("pvc-2", "node-b")], None);
        let mut bad_override = pv("pv-1", "pvc-1", Some("node-a"));
        bad_override.metadata.annotations = Some(BTreeMap::from([(
            "override.piraeus.io/remote-access".to_owned(),
            "- fromSame: [oops".to_owned(),
        )]));
        let bad_handle = pv("pv-3", "/7", None);
        let good = pv("pv-2", "pvc-2", Some("node-a"));
        let work = work(&linstor, &classes("false"), &[bad_override, bad_handle, good]);
        assert_eq!(
            work.operations.len(),
            1,
            "the rest of the cluster is still reconciled"
        );
        assert_eq!(work.operations[0].pv, "pv-2");
        let warned: Vec<&str> = work.warnings.iter().map(|w| w.pv.as_str()).collect();
        assert_eq!(warned, ["pv-1", "pv-3"]);
        assert!(
            work.warnings[0].message.contains("oops"),
            "{}",
            work.warnings[0].message
        );
        assert!(
            work.warnings[1].message.contains("/7"),
            "{}",
            work.warnings[1].message
        );
    }

    #[test]
    fn invalid_storage_class_value_is_a_warning() {
        let linstor = linstor(&[("pvc-1", "node-b")], None);
        let work = work(
            &linstor,
            &classes("maybe"),
            &[pv("pv-1", "pvc-1", Some("node-a"))],
        );
        assert!(work.operations.is_empty());
        assert_eq!(work.warnings.len(), 1);
        assert!(
            work.warnings[0].message.contains("maybe"),
            "{}",
            work.warnings[0].message
        );
    }

    #[test]
    fn deciding_again_sees_what_changed_since_the_pass() {
        let linstor = linstor(&[("pvc-1", "node-b")], None);
        let classes = classes("false");
        let settings = settings();
        let volume = VolumeId::new("pvc-1", 0);
        let drifted = pv("pv-1", "pvc-1", Some("node-a"));
        assert!(matches!(
            decide_again(&linstor, &classes, &settings, &volume, Some(&drifted)),
            Some(Ok(Action::Replace(_)))
        ));
        // Someone fixed the PV in the meantime.
        let fixed = pv("pv-1", "pvc-1", Some("node-b"));
        assert!(matches!(
            decide_again(&linstor, &classes, &settings, &volume, Some(&fixed)),
            Some(Ok(Action::InSync))
        ));
        // The PV is gone and nothing was saved: nothing to do.
        assert!(decide_again(&linstor, &classes, &settings, &volume, None).is_none());
    }
}
