//! The rules that keep a replace from ever letting Kubernetes reclaim a
//! volume, as pure functions: whether a saved intent may resume on the PV
//! found now, whether a saved PV may be created again, and when the original
//! reclaim policy of a PV this project created may come back.
//!
//! What users and other controllers did since the intent was saved wins:
//! every rule answers "write nothing" when the cluster no longer looks as
//! the intent expects, and says what differs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec};

use crate::decision::{DecisionError, RetiredPv};
use crate::handle::VolumeId;
use crate::names::{
    DEFAULT_VOLUME_MODE, PHASE_BOUND, PHASE_FAILED, PHASE_RELEASED, RECLAIM_RETAIN,
    RESTORE_RECLAIM_POLICY_ANNOTATION, SKIP_RECLAIM_ANNOTATION,
};
use crate::policy_source::pv_name;
use crate::replacement::SavedIntent;

/// What a saved intent may do with the PV that stands for its volume now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentVerdict {
    /// The PV is the one the intent retires, changed by nothing but the
    /// protocol itself: the replace goes on.
    Resume,
    /// The PV is the intent's replacement: the replace is done, only the
    /// intent is left to remove.
    Finished,
    /// The cluster contradicts the intent (the message says how): nothing
    /// is written and the intent is kept.
    Contradicted(String),
}

/// Decides what the intent may do with `live`, the PV of the same name.
pub fn intent_verdict(intent: &SavedIntent, live: &PersistentVolume) -> IntentVerdict {
    let saved = &intent.pv;
    let name = pv_name(live);
    match &intent.retires {
        Some(retires) if live.metadata.uid != retires.uid => {
            if live.metadata.deletion_timestamp.is_some() {
                return contradicted(format!(
                    "PV {name} is the intent's replacement (UID {}) but is being deleted",
                    shown(&live.metadata.uid)
                ));
            }
            // Created at Retain and still held, or its policy already back
            // (another writer may have restored it before the intent went).
            let created_by_us = restore_policy_of(live).is_some()
                || reclaim_policy_of(live) == reclaim_policy_of(saved)
                || reclaim_policy_of(saved) == Some(RECLAIM_RETAIN);
            match difference_outside_protocol(live, saved) {
                None if created_by_us => IntentVerdict::Finished,
                None => contradicted(format!(
                    "PV {name} has UID {}, not the UID {} of the PV the intent retires, and was not created by this controller",
                    shown(&live.metadata.uid),
                    shown(&retires.uid)
                )),
                Some(field) => contradicted(format!(
                    "PV {name} has UID {}, not the UID {} of the PV the intent retires, and differs in {field}",
                    shown(&live.metadata.uid),
                    shown(&retires.uid)
                )),
            }
        }
        Some(retires)
            if retires.resource_version.is_some()
                && live.metadata.resource_version == retires.resource_version =>
        {
            IntentVerdict::Resume
        }
        retires => {
            if let Some(field) = difference_outside_protocol(live, saved) {
                return contradicted(format!(
                    "PV {name} was changed since the intent was saved: {field} differs"
                ));
            }
            if carries_protocol_marks(live, saved) {
                return IntentVerdict::Resume;
            }
            let reverted = annotation(live, SKIP_RECLAIM_ANNOTATION).is_some()
                && annotation(saved, SKIP_RECLAIM_ANNOTATION).is_none();
            if reverted {
                return contradicted(format!(
                    "PV {name} has reclaim policy {}, set by someone else after this controller set Retain",
                    shown_str(reclaim_policy_of(live))
                ));
            }
            if live.metadata.deletion_timestamp.is_some() {
                return contradicted(format!("PV {name} is being deleted by someone else"));
            }
            if reclaim_policy_of(live) != reclaim_policy_of(saved) {
                return contradicted(format!(
                    "PV {name} has reclaim policy {}, set by someone else (the intent saved {})",
                    shown_str(reclaim_policy_of(live)),
                    shown_str(reclaim_policy_of(saved))
                ));
            }
            match (retires, phase(live)) {
                (Some(_), Some(phase @ (PHASE_RELEASED | PHASE_FAILED))) => {
                    contradicted(format!("PV {name} is {phase}: its claim let go of it"))
                }
                (Some(_), _) => IntentVerdict::Resume,
                // The reference's intents record nothing of the retired PV:
                // a PV equal to the saved one is the replacement it applied.
                (None, _) => IntentVerdict::Finished,
            }
        }
    }
}

fn contradicted(message: String) -> IntentVerdict {
    IntentVerdict::Contradicted(message)
}

/// Whether `existing`, found where `held` was to be created, is `held`
/// created by an earlier attempt of the same replace: not the retired PV,
/// not being deleted, and holding the same policy to restore.
pub fn is_earlier_creation(
    existing: &PersistentVolume,
    held: &PersistentVolume,
    retired: Option<&RetiredPv>,
) -> bool {
    retired.is_none_or(|retired| existing.metadata.uid != retired.uid)
        && restore_policy_of(existing) == restore_policy_of(held)
        && existing.metadata.deletion_timestamp.is_none()
}

/// Why a claim does not own a PV.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimProblem {
    /// The PV names no claim (with a UID).
    #[error("PV {pv} names no claim with a UID")]
    NoClaimRef {
        /// The PV's name.
        pv: String,
    },
    /// The claim the PV names does not exist.
    #[error("claim {claim} of PV {pv} is gone")]
    Gone {
        /// The PV's name.
        pv: String,
        /// The claim, as `namespace/name`.
        claim: String,
    },
    /// A claim of that name exists, but it is another one.
    #[error("claim {claim} of PV {pv} was re-created (UID {found}, the PV names UID {expected})")]
    Recreated {
        /// The PV's name.
        pv: String,
        /// The claim, as `namespace/name`.
        claim: String,
        /// The UID the PV names.
        expected: String,
        /// The UID of the claim found.
        found: String,
    },
    /// The claim is being deleted: its owner lets go of the volume.
    #[error("claim {claim} of PV {pv} is being deleted")]
    BeingDeleted {
        /// The PV's name.
        pv: String,
        /// The claim, as `namespace/name`.
        claim: String,
    },
    /// The PV binder found that the claim no longer owns the PV (phase
    /// `Released` or `Failed`); seen when claims cannot be read directly.
    #[error("PV binder marked PV {pv} {phase}: claim {claim} does not own it")]
    ReleasedByBinder {
        /// The PV's name.
        pv: String,
        /// The claim, as `namespace/name`.
        claim: String,
        /// The phase the binder set.
        phase: String,
    },
    /// The claim exists but names another volume (or none).
    #[error("claim {claim} of PV {pv} names volume {volume:?}, not the PV")]
    NamesOther {
        /// The PV's name.
        pv: String,
        /// The claim, as `namespace/name`.
        claim: String,
        /// The volume the claim names.
        volume: Option<String>,
    },
}

/// The claim a PV names, as (namespace, name), when it names one.
pub fn claim_of(pv: &PersistentVolume) -> Option<(&str, &str)> {
    let claim_ref = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((claim_ref.namespace.as_deref()?, claim_ref.name.as_deref()?))
}

/// Whether `claim` (the claim `pv` names, as read now; `None` when it does
/// not exist) owns `pv`: it exists, has the UID the PV names, and names the
/// PV as its volume. Exactly when the PV binder keeps the pair bound.
pub fn claim_owns(pv: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> Result<(), ClaimProblem> {
    let name = pv_name(pv).to_owned();
    let claim_ref = pv.spec.as_ref().and_then(|spec| spec.claim_ref.as_ref());
    let (Some((namespace, claim_name)), Some(expected)) = (
        claim_of(pv),
        claim_ref.and_then(|claim_ref| claim_ref.uid.as_deref()),
    ) else {
        return Err(ClaimProblem::NoClaimRef { pv: name });
    };
    let shown_claim = format!("{namespace}/{claim_name}");
    let Some(claim) = claim else {
        return Err(ClaimProblem::Gone {
            pv: name,
            claim: shown_claim,
        });
    };
    if claim.metadata.uid.as_deref() != Some(expected) {
        return Err(ClaimProblem::Recreated {
            pv: name,
            claim: shown_claim,
            expected: expected.to_owned(),
            found: claim.metadata.uid.clone().unwrap_or_default(),
        });
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(ClaimProblem::BeingDeleted {
            pv: name,
            claim: shown_claim,
        });
    }
    let volume = claim.spec.as_ref().and_then(|spec| spec.volume_name.clone());
    if volume.as_deref() != Some(name.as_str()) {
        return Err(ClaimProblem::NamesOther {
            pv: name,
            claim: shown_claim,
            volume,
        });
    }
    Ok(())
}

/// Whether `saved`, the PV of an intent whose live PV is gone, may be
/// created again: only when the claim it names (as read now: `claim`)
/// still owns it. A saved PV is input from LINSTOR, where anyone with API
/// access can write; this keeps a crafted one from binding a claim it never
/// belonged to.
pub fn may_recreate(
    volume: &VolumeId,
    saved: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
) -> Result<(), DecisionError> {
    claim_owns(saved, claim).map_err(|source| DecisionError::Unowned {
        volume: volume.clone(),
        source: Box::new(source),
    })
}

/// Whether the saved PV of `volume` may be created again when claims
/// cannot be read: it must name a claim by UID. It is created at `Retain`,
/// and its policy comes back only once the PV binder marks it `Bound`
/// ([`restore_step_by_binder`]), so a claim that is gone costs nothing.
pub fn may_recreate_unread(volume: &VolumeId, saved: &PersistentVolume) -> Result<(), DecisionError> {
    let named = saved
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
        .is_some_and(|claim_ref| claim_ref.uid.is_some() && claim_of(saved).is_some());
    if named {
        return Ok(());
    }
    Err(DecisionError::Unowned {
        volume: volume.clone(),
        source: Box::new(ClaimProblem::NoClaimRef {
            pv: pv_name(saved).to_owned(),
        }),
    })
}

/// The reclaim policy to restore on a PV this project created at `Retain`.
pub fn restore_policy_of(pv: &PersistentVolume) -> Option<&str> {
    pv.metadata
        .annotations
        .as_ref()?
        .get(RESTORE_RECLAIM_POLICY_ANNOTATION)
        .map(String::as_str)
}

/// The next step for a PV held at `Retain` until its claim owns it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// The PV is not held: nothing to do.
    NotHeld,
    /// The claim owns the PV and it is `Bound`: restore `policy`.
    Restore {
        /// The policy to restore.
        policy: String,
    },
    /// The claim owns the PV, which the PV binder has not marked `Bound`
    /// yet: mark it (the binder's own condition holds), then restore.
    MarkBoundThenRestore {
        /// The policy to restore.
        policy: String,
    },
    /// The claim does not own the PV: it stays at `Retain`.
    Hold(ClaimProblem),
    /// Claims cannot be read, and the PV binder has not said yet whether
    /// the claim owns the PV: nothing to do until it does.
    AwaitBinder,
}

/// Decides the next step for `pv`, with `claim` the claim it names as
/// read now.
pub fn restore_step(pv: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> RestoreStep {
    let Some(policy) = restore_policy_of(pv) else {
        return RestoreStep::NotHeld;
    };
    if let Err(problem) = claim_owns(pv, claim) {
        return RestoreStep::Hold(problem);
    }
    let policy = policy.to_owned();
    if phase(pv) == Some(PHASE_BOUND) {
        RestoreStep::Restore { policy }
    } else {
        RestoreStep::MarkBoundThenRestore { policy }
    }
}

/// Decides the next step for `pv` when claims cannot be read: the PV
/// binder's phase is the evidence. It marks a PV `Bound` only while the
/// claim with the UID the PV names exists and names the PV, and `Released`
/// once it does not; the phase of a newly created PV always starts empty,
/// so `Bound` on a PV this project created at `Retain` is the binder's.
pub fn restore_step_by_binder(pv: &PersistentVolume) -> RestoreStep {
    let Some(policy) = restore_policy_of(pv) else {
        return RestoreStep::NotHeld;
    };
    let Some((namespace, claim)) = claim_of(pv) else {
        return RestoreStep::Hold(ClaimProblem::NoClaimRef {
            pv: pv_name(pv).to_owned(),
        });
    };
    match phase(pv) {
        Some(PHASE_BOUND) => RestoreStep::Restore {
            policy: policy.to_owned(),
        },
        Some(released @ (PHASE_RELEASED | PHASE_FAILED)) => {
            RestoreStep::Hold(ClaimProblem::ReleasedByBinder {
                pv: pv_name(pv).to_owned(),
                claim: format!("{namespace}/{claim}"),
                phase: released.to_owned(),
            })
        }
        _ => RestoreStep::AwaitBinder,
    }
}

/// Whether to mark a PV `Bound`, given the claim it names as just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundMark {
    /// The claim does not own the PV: its phase is the PV binder's to set.
    NotOwned,
    /// The PV is `Bound` already: nothing to write.
    AlreadyBound,
    /// The claim owns the PV, which is not `Bound` yet: mark it (exactly
    /// the PV binder's own condition holds).
    Mark,
}

/// Decides whether to mark `pv` `Bound`, with `claim` the claim it names as
/// just read.
pub fn bound_mark(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> BoundMark {
    if claim_owns(pv, Some(claim)).is_err() {
        BoundMark::NotOwned
    } else if phase(pv) == Some(PHASE_BOUND) {
        BoundMark::AlreadyBound
    } else {
        BoundMark::Mark
    }
}

/// Whether `claim`, as read some time after it was nudged so that the PV
/// binder binds it to its re-created PV, needs another nudge: it is not
/// `Bound` yet (the binder may have seen the nudge before the new PV).
pub fn needs_another_nudge(claim: &PersistentVolumeClaim) -> bool {
    claim.status.as_ref().and_then(|status| status.phase.as_deref()) != Some(PHASE_BOUND)
}

/// The PV's phase, such as `Bound`.
pub(crate) fn phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref()?.phase.as_deref()
}

/// The PV's reclaim policy, such as `Delete`.
pub fn reclaim_policy_of(pv: &PersistentVolume) -> Option<&str> {
    pv.spec.as_ref()?.persistent_volume_reclaim_policy.as_deref()
}

fn annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether `live` carries what the protocol writes before deleting a PV
/// (reclaim policy `Retain` and the skip-reclaim annotation) where the saved
/// original does not: the protocol got past that step.
fn carries_protocol_marks(live: &PersistentVolume, saved: &PersistentVolume) -> bool {
    let marked = |pv: &PersistentVolume| {
        reclaim_policy_of(pv) == Some(RECLAIM_RETAIN) && annotation(pv, SKIP_RECLAIM_ANNOTATION).is_some()
    };
    marked(live) && !marked(saved)
}

/// The first part of `live` that differs from `saved` other than what the
/// protocol itself changes (node affinity, reclaim policy, the skip-reclaim
/// and restore annotations, finalizers) or what the API server and the PV
/// binder own (status, server-set metadata); `None` when they agree.
pub fn difference_outside_protocol(live: &PersistentVolume, saved: &PersistentVolume) -> Option<String> {
    let (lm, sm) = (&live.metadata, &saved.metadata);
    if lm.labels.clone().unwrap_or_default() != sm.labels.clone().unwrap_or_default() {
        return Some("labels".to_owned());
    }
    let protocol_annotations = |pv: &PersistentVolume| -> BTreeMap<String, String> {
        let mut annotations = pv.metadata.annotations.clone().unwrap_or_default();
        annotations.remove(RESTORE_RECLAIM_POLICY_ANNOTATION);
        annotations.remove(SKIP_RECLAIM_ANNOTATION);
        annotations
    };
    let (live_annotations, saved_annotations) = (protocol_annotations(live), protocol_annotations(saved));
    if live_annotations != saved_annotations {
        let key = live_annotations
            .iter()
            .chain(&saved_annotations)
            .map(|(key, _)| key)
            .find(|key| live_annotations.get(*key) != saved_annotations.get(*key))
            .cloned()
            .unwrap_or_default();
        return Some(format!("annotation {key}"));
    }
    let skip_reclaim_dropped = annotation(saved, SKIP_RECLAIM_ANNOTATION).is_some()
        && annotation(live, SKIP_RECLAIM_ANNOTATION).is_none();
    if skip_reclaim_dropped {
        return Some(format!("annotation {SKIP_RECLAIM_ANNOTATION}"));
    }
    if lm.owner_references.clone().unwrap_or_default() != sm.owner_references.clone().unwrap_or_default() {
        return Some("ownerReferences".to_owned());
    }
    let (live_spec, saved_spec) = (comparable_spec(live), comparable_spec(saved));
    if live_spec == saved_spec {
        return None;
    }
    let (Ok(serde_json::Value::Object(live_spec)), Ok(serde_json::Value::Object(saved_spec))) = (
        serde_json::to_value(&live_spec),
        serde_json::to_value(&saved_spec),
    ) else {
        return Some("spec".to_owned());
    };
    let field = live_spec
        .keys()
        .chain(saved_spec.keys())
        .find(|key| live_spec.get(*key) != saved_spec.get(*key))
        .cloned()
        .unwrap_or_default();
    Some(format!("spec.{field}"))
}

/// The spec without what the protocol changes, with the defaults the API
/// server fills in, and with only the identity of the claim reference.
fn comparable_spec(pv: &PersistentVolume) -> PersistentVolumeSpec {
    let mut spec = pv.spec.clone().unwrap_or_default();
    spec.node_affinity = None;
    spec.persistent_volume_reclaim_policy = None;
    spec.volume_mode
        .get_or_insert_with(|| DEFAULT_VOLUME_MODE.to_owned());
    if let Some(claim_ref) = spec.claim_ref.as_mut() {
        claim_ref.api_version = None;
        claim_ref.kind = None;
        claim_ref.resource_version = None;
        claim_ref.field_path = None;
    }
    spec
}

fn shown(value: &Option<String>) -> &str {
    shown_str(value.as_deref())
}

fn shown_str(value: Option<&str>) -> &str {
    value.unwrap_or("(none)")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        PersistentVolumeStatus, SecretReference,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::replacement::{held_at_retain, replacement_pv};

    fn live() -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".to_owned()),
                uid: Some("uid-old".to_owned()),
                resource_version: Some("10".to_owned()),
                annotations: Some(BTreeMap::from([(
                    "pv.kubernetes.io/provisioned-by".to_owned(),
                    "linstor.csi.linbit.com".to_owned(),
                )])),
                finalizers: Some(vec!["kubernetes.io/pv-protection".to_owned()]),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some("Delete".to_owned()),
                claim_ref: Some(ObjectReference {
                    namespace: Some("ns".to_owned()),
                    name: Some("data".to_owned()),
                    uid: Some("uid-claim".to_owned()),
                    ..ObjectReference::default()
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".to_owned(),
                    volume_handle: "pvc-1".to_owned(),
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

    fn intent_for(pv: &PersistentVolume) -> SavedIntent {
        SavedIntent {
            pv: replacement_pv(pv, None),
            retires: Some(RetiredPv {
                name: pv_name(pv).to_owned(),
                uid: pv.metadata.uid.clone(),
                resource_version: pv.metadata.resource_version.clone(),
            }),
        }
    }

    fn changed(
        mut pv: PersistentVolume,
        version: &str,
        edit: impl FnOnce(&mut PersistentVolume),
    ) -> PersistentVolume {
        pv.metadata.resource_version = Some(version.to_owned());
        edit(&mut pv);
        pv
    }

    fn spec(pv: &mut PersistentVolume) -> &mut PersistentVolumeSpec {
        pv.spec.get_or_insert_with(Default::default)
    }

    fn marked(pv: &mut PersistentVolume) {
        spec(pv).persistent_volume_reclaim_policy = Some("Retain".to_owned());
        pv.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SKIP_RECLAIM_ANNOTATION.to_owned(), "true".to_owned());
    }

    fn claim(uid: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_owned()),
                namespace: Some("ns".to_owned()),
                uid: Some(uid.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: volume.map(str::to_owned),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    fn contradiction(verdict: IntentVerdict) -> String {
        match verdict {
            IntentVerdict::Contradicted(message) => message,
            other => panic!("expected a contradiction, got {other:?}"),
        }
    }

    #[test]
    fn an_untouched_pv_resumes() {
        let pv = live();
        assert_eq!(intent_verdict(&intent_for(&pv), &pv), IntentVerdict::Resume);
    }

    #[test]
    fn the_protocols_own_steps_resume() {
        let pv = live();
        let intent = intent_for(&pv);
        let retained = changed(pv.clone(), "11", marked);
        assert_eq!(intent_verdict(&intent, &retained), IntentVerdict::Resume);
        let deleting = changed(retained, "12", |pv| {
            pv.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        });
        assert_eq!(intent_verdict(&intent, &deleting), IntentVerdict::Resume);
        // The claim went away after the Retain patch: still safe to go on,
        // the replacement is created at Retain.
        let released = changed(deleting, "13", |pv| {
            pv.status.get_or_insert_with(Default::default).phase = Some("Released".to_owned());
        });
        assert_eq!(intent_verdict(&intent, &released), IntentVerdict::Resume);
        // Status-only changes (the binder re-syncing) do not stop a replace.
        let resynced = changed(pv, "14", |_| {});
        assert_eq!(intent_verdict(&intent, &resynced), IntentVerdict::Resume);
    }

    #[test]
    fn what_users_did_since_the_intent_wins() {
        let pv = live();
        let intent = intent_for(&pv);
        let kept = changed(pv.clone(), "11", |pv| {
            spec(pv).persistent_volume_reclaim_policy = Some("Retain".to_owned());
            pv.status.get_or_insert_with(Default::default).phase = Some("Released".to_owned());
        });
        let message = contradiction(intent_verdict(&intent, &kept));
        assert!(message.contains("reclaim policy Retain"), "{message}");
        let deleted = changed(pv.clone(), "11", |pv| {
            pv.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        });
        assert!(contradiction(intent_verdict(&intent, &deleted)).contains("being deleted"));
        let released = changed(pv.clone(), "11", |pv| {
            pv.status.get_or_insert_with(Default::default).phase = Some("Failed".to_owned());
        });
        assert!(contradiction(intent_verdict(&intent, &released)).contains("is Failed"));
        let relabelled = changed(pv.clone(), "11", |pv| {
            pv.metadata.labels = Some(BTreeMap::from([("tier".to_owned(), "gold".to_owned())]));
        });
        assert!(contradiction(intent_verdict(&intent, &relabelled)).contains("labels"));
        let secret = changed(pv.clone(), "11", |pv| {
            if let Some(csi) = spec(pv).csi.as_mut() {
                csi.node_publish_secret_ref = Some(SecretReference {
                    name: Some("s".to_owned()),
                    namespace: Some("other".to_owned()),
                });
            }
        });
        assert!(contradiction(intent_verdict(&intent, &secret)).contains("spec.csi"));
        // A writer that put Delete back after the Retain patch.
        let reverted = changed(pv, "12", |pv| {
            marked(pv);
            spec(pv).persistent_volume_reclaim_policy = Some("Delete".to_owned());
        });
        assert!(contradiction(intent_verdict(&intent, &reverted)).contains("reclaim policy Delete"));
    }

    #[test]
    fn another_pv_of_the_same_name_is_not_touched_unless_it_is_the_replacement() {
        let pv = live();
        let intent = intent_for(&pv);
        let mut by_hand = replacement_pv(&pv, None);
        by_hand.metadata.uid = Some("uid-admin".to_owned());
        spec(&mut by_hand).persistent_volume_reclaim_policy = Some("Retain".to_owned());
        let message = contradiction(intent_verdict(&intent, &by_hand));
        assert!(message.contains("not created by this controller"), "{message}");
        by_hand.metadata.labels = Some(BTreeMap::from([("by".to_owned(), "admin".to_owned())]));
        let message = contradiction(intent_verdict(&intent, &by_hand));
        assert!(
            message.contains("uid-admin") && message.contains("uid-old"),
            "{message}"
        );
        let mut ours = held_at_retain(&intent.pv);
        ours.metadata.uid = Some("uid-new".to_owned());
        assert_eq!(intent_verdict(&intent, &ours), IntentVerdict::Finished);
        let mut restored = intent.pv.clone();
        restored.metadata.uid = Some("uid-new".to_owned());
        assert_eq!(intent_verdict(&intent, &restored), IntentVerdict::Finished);
        ours.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(contradiction(intent_verdict(&intent, &ours)).contains("being deleted"));
    }

    #[test]
    fn intents_of_the_reference_controller_resume_and_finish() {
        let pv = live();
        let legacy = SavedIntent {
            pv: replacement_pv(&pv, None),
            retires: None,
        };
        let retained = changed(pv.clone(), "11", marked);
        assert_eq!(intent_verdict(&legacy, &retained), IntentVerdict::Resume);
        let mut applied = replacement_pv(&pv, None);
        applied.metadata.uid = Some("uid-new".to_owned());
        assert_eq!(intent_verdict(&legacy, &applied), IntentVerdict::Finished);
        let kept = changed(pv, "11", |pv| {
            spec(pv).persistent_volume_reclaim_policy = Some("Retain".to_owned());
        });
        assert!(matches!(
            intent_verdict(&legacy, &kept),
            IntentVerdict::Contradicted(_)
        ));
    }

    #[test]
    fn a_claim_owns_a_pv_only_while_it_is_the_same_claim_naming_it() {
        let pv = live();
        assert_eq!(claim_owns(&pv, Some(&claim("uid-claim", Some("pv-1")))), Ok(()));
        assert!(matches!(claim_owns(&pv, None), Err(ClaimProblem::Gone { .. })));
        let recreated = claim_owns(&pv, Some(&claim("uid-other", Some("pv-1")))).unwrap_err();
        assert!(recreated.to_string().contains("re-created"), "{recreated}");
        assert!(matches!(
            claim_owns(&pv, Some(&claim("uid-claim", Some("pv-2")))),
            Err(ClaimProblem::NamesOther { .. })
        ));
        let mut deleting = claim("uid-claim", Some("pv-1"));
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(matches!(
            claim_owns(&pv, Some(&deleting)),
            Err(ClaimProblem::BeingDeleted { .. })
        ));
        let mut unclaimed = pv;
        spec(&mut unclaimed).claim_ref = None;
        assert!(matches!(
            claim_owns(&unclaimed, None),
            Err(ClaimProblem::NoClaimRef { .. })
        ));
    }

    #[test]
    fn the_policy_comes_back_only_to_the_owning_claim() {
        let pv = live();
        let owner = claim("uid-claim", Some("pv-1"));
        assert_eq!(restore_step(&pv, Some(&owner)), RestoreStep::NotHeld);
        let mut held = held_at_retain(&replacement_pv(&pv, None));
        assert_eq!(
            held.spec
                .as_ref()
                .unwrap()
                .persistent_volume_reclaim_policy
                .as_deref(),
            Some("Retain")
        );
        assert_eq!(
            restore_step(&held, Some(&owner)),
            RestoreStep::MarkBoundThenRestore {
                policy: "Delete".to_owned()
            }
        );
        held.status = pv.status.clone();
        assert_eq!(
            restore_step(&held, Some(&owner)),
            RestoreStep::Restore {
                policy: "Delete".to_owned()
            }
        );
        assert!(matches!(
            restore_step(&held, None),
            RestoreStep::Hold(ClaimProblem::Gone { .. })
        ));
        let stranger = claim("uid-other", Some("pv-1"));
        assert!(matches!(
            restore_step(&held, Some(&stranger)),
            RestoreStep::Hold(ClaimProblem::Recreated { .. })
        ));
    }

    #[test]
    fn a_pv_is_marked_bound_only_for_its_owning_claim_and_once() {
        let owner = claim("uid-claim", Some("pv-1"));
        let mut unbound = live();
        unbound.status = None;
        assert_eq!(bound_mark(&unbound, &owner), BoundMark::Mark);
        unbound.status = Some(PersistentVolumeStatus {
            phase: Some("Available".to_owned()),
            ..PersistentVolumeStatus::default()
        });
        assert_eq!(bound_mark(&unbound, &owner), BoundMark::Mark);
        assert_eq!(bound_mark(&live(), &owner), BoundMark::AlreadyBound);
        assert_eq!(
            bound_mark(&unbound, &claim("uid-other", Some("pv-1"))),
            BoundMark::NotOwned
        );
        assert_eq!(
            bound_mark(&unbound, &claim("uid-claim", Some("pv-2"))),
            BoundMark::NotOwned
        );
    }

    #[test]
    fn a_nudged_claim_is_nudged_again_until_it_is_bound() {
        let mut nudged = claim("uid-claim", Some("pv-1"));
        assert!(needs_another_nudge(&nudged));
        for (phase, again) in [("Pending", true), ("Lost", true), ("Bound", false)] {
            nudged.status = Some(PersistentVolumeClaimStatus {
                phase: Some(phase.to_owned()),
                ..PersistentVolumeClaimStatus::default()
            });
            assert_eq!(needs_another_nudge(&nudged), again, "{phase}");
        }
    }

    #[test]
    fn without_claim_reads_the_binders_bound_mark_brings_the_policy_back() {
        let pv = live();
        assert_eq!(restore_step_by_binder(&pv), RestoreStep::NotHeld);
        let mut held = held_at_retain(&replacement_pv(&pv, None));
        held.status = None;
        assert_eq!(restore_step_by_binder(&held), RestoreStep::AwaitBinder);
        let with_phase = |phase: &str| {
            let mut pv = held.clone();
            pv.status = Some(PersistentVolumeStatus {
                phase: Some(phase.to_owned()),
                ..PersistentVolumeStatus::default()
            });
            restore_step_by_binder(&pv)
        };
        assert_eq!(with_phase("Pending"), RestoreStep::AwaitBinder);
        assert_eq!(with_phase("Available"), RestoreStep::AwaitBinder);
        assert_eq!(
            with_phase("Bound"),
            RestoreStep::Restore {
                policy: "Delete".to_owned()
            }
        );
        for released in ["Released", "Failed"] {
            let RestoreStep::Hold(problem) = with_phase(released) else {
                panic!("{released} must hold");
            };
            assert_eq!(
                problem.to_string(),
                format!("PV binder marked PV pv-1 {released}: claim ns/data does not own it")
            );
        }
        spec(&mut held).claim_ref = None;
        assert!(matches!(
            restore_step_by_binder(&held),
            RestoreStep::Hold(ClaimProblem::NoClaimRef { .. })
        ));
    }

    #[test]
    fn without_claim_reads_a_saved_pv_is_created_again_only_if_it_names_its_claim() {
        let volume = VolumeId {
            resource_definition: "pvc-1".to_owned(),
            volume_number: 0,
        };
        let saved = live();
        assert!(may_recreate_unread(&volume, &saved).is_ok());
        let mut anonymous = saved.clone();
        if let Some(claim_ref) = spec(&mut anonymous).claim_ref.as_mut() {
            claim_ref.uid = None;
        }
        assert!(may_recreate_unread(&volume, &anonymous).is_err());
        spec(&mut anonymous).claim_ref = None;
        assert!(may_recreate_unread(&volume, &anonymous).is_err());
    }

    #[test]
    fn only_an_earlier_creation_of_the_same_replacement_is_taken_over() {
        let pv = live();
        let intent = intent_for(&pv);
        let held = held_at_retain(&intent.pv);
        let mut created = held.clone();
        created.metadata.uid = Some("uid-new".to_owned());
        assert!(is_earlier_creation(&created, &held, intent.retires.as_ref()));
        assert!(
            !is_earlier_creation(&pv, &held, intent.retires.as_ref()),
            "the retired PV"
        );
        let by_hand = replacement_pv(&pv, None);
        assert!(
            !is_earlier_creation(&by_hand, &held, None),
            "no policy to restore"
        );
        created.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!is_earlier_creation(&created, &held, intent.retires.as_ref()));
    }

    #[test]
    fn a_retained_original_needs_no_hold() {
        let mut pv = live();
        spec(&mut pv).persistent_volume_reclaim_policy = Some("Retain".to_owned());
        let replacement = replacement_pv(&pv, None);
        assert_eq!(held_at_retain(&replacement), replacement);
    }
}
