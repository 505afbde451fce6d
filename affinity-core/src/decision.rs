//! What the engine decides for one volume, as plain values.

use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;

use crate::handle::{HandleError, VolumeId};
use crate::policy_source::PolicyError;
use crate::replacement::SavedStateError;
use crate::safety::ClaimProblem;
use crate::topology::Accessibility;

/// Settings every decision of one reconcile shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionSettings {
    /// LINSTOR property namespace of the nodes' topology labels, such as
    /// `Aux/topology` (see [`crate::guess_property_namespace`]).
    pub property_namespace: String,
    /// PVs younger than this are left alone: LINSTOR CSI may still be placing
    /// their replicas.
    pub grace_period: Duration,
    /// The current time, against which PV ages are measured.
    pub now: Timestamp,
}

impl DecisionSettings {
    /// Settings with the current time read from `time` (for example
    /// `SystemTime::now()`), as [`decision_time`] reads it.
    pub fn at(property_namespace: impl Into<String>, grace_period: Duration, time: SystemTime) -> Self {
        Self {
            property_namespace: property_namespace.into(),
            grace_period,
            now: decision_time(time),
        }
    }
}

/// `time` as the time decisions are made at: to the millisecond, with
/// times before 1970 clamped to 1970 and times beyond jiff's range to its
/// end.
pub fn decision_time(time: SystemTime) -> Timestamp {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis())
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .unwrap_or(Timestamp::MAX),
        Err(_) => Timestamp::UNIX_EPOCH,
    }
}

/// The decision for one volume (resource definition and volume number).
///
/// `R` is what a replace carries: the replacement itself when the decision
/// was made on a whole PV, a [`crate::ReplaceNeeded`] when on a
/// [`crate::PvRecord`].
#[derive(Debug)]
pub struct VolumeDecision<R = Box<Replacement>> {
    /// The volume.
    pub volume: VolumeId,
    /// Name of the PV the decision is about: the live PV, or the saved one
    /// when the live PV is gone.
    pub pv_name: String,
    /// What to do, or why nothing can be decided.
    pub outcome: Result<Action<R>, DecisionError>,
}

/// What must happen to a volume's PV; `R` is what a replace carries (see
/// [`VolumeDecision`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Action<R = Box<Replacement>> {
    /// The PV's affinity matches LINSTOR: nothing to do.
    InSync,
    /// The PV is deliberately left alone.
    Skip(SkipReason),
    /// The PV must be (re)created: as [`Replacement::pv`] when `R` is the
    /// replacement.
    Replace(R),
    /// Saved state of a replace that finished: remove the property.
    ClearSavedState,
    /// The PV was created at `Retain` in place of another: restore its
    /// original reclaim policy once its claim owns it (checked right before
    /// the write, against the claim as read then).
    RestoreReclaimPolicy {
        /// The policy to restore.
        policy: String,
    },
}

impl<R> Action<R> {
    /// The same action with what a replace carries turned by `f`.
    pub fn map_replace<T>(self, f: impl FnOnce(R) -> T) -> Action<T> {
        match self {
            Self::InSync => Action::InSync,
            Self::Skip(reason) => Action::Skip(reason),
            Self::Replace(replace) => Action::Replace(f(replace)),
            Self::ClearSavedState => Action::ClearSavedState,
            Self::RestoreReclaimPolicy { policy } => Action::RestoreReclaimPolicy { policy },
        }
    }
}

/// Why a PV is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The PV carries the skip annotation.
    SkipAnnotation,
    /// The resource definition carries the skip property.
    SkipProperty,
    /// The PV is `Released`: its claim is gone.
    Released,
    /// The PV is `Failed`: its reclaim failed.
    Failed,
    /// The PV is being deleted: whoever deleted it wins.
    BeingDeleted,
    /// The PV was created at `Retain` in place of another and its claim let
    /// go of it (it is `Released` or `Failed`): it stays at `Retain`, so
    /// Kubernetes never reclaims a volume its claim no longer owns.
    ClaimGone {
        /// The reclaim policy that was not restored.
        policy: String,
    },
    /// The PV is younger than the grace period.
    GracePeriod {
        /// Time until the grace period ends.
        remaining: Duration,
    },
    /// The resource definition has no resources (yet).
    NoResources,
    /// Every resource is diskless, being deleted or failed. The PV keeps its
    /// affinity rather than following a transient LINSTOR state.
    NoHealthyDiskfulReplica,
    /// A diskful replica sits on a node LINSTOR did not list, so its
    /// topology is unknown.
    UnknownNode {
        /// The node's name.
        node: String,
    },
    /// Another PV already stands for the same volume.
    DuplicateVolume {
        /// Name of the PV that was kept.
        kept: String,
    },
}

impl SkipReason {
    /// Whether the skip points at a problem worth a warning, rather than at a
    /// deliberate or transient state.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Self::NoHealthyDiskfulReplica
                | Self::UnknownNode { .. }
                | Self::DuplicateVolume { .. }
                | Self::ClaimGone { .. }
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SkipAnnotation => f.write_str("skip annotation set on the PV"),
            Self::SkipProperty => f.write_str("skip property set on the resource definition"),
            Self::Released => f.write_str("PV is Released"),
            Self::Failed => f.write_str("PV is Failed"),
            Self::BeingDeleted => f.write_str("PV is being deleted"),
            Self::ClaimGone { policy } => write!(
                f,
                "PV kept at reclaim policy Retain (not restored to {policy}): its claim let go of it"
            ),
            Self::GracePeriod { remaining } => {
                write!(
                    f,
                    "PV is in its grace period for {} more seconds",
                    remaining.as_secs()
                )
            }
            Self::NoResources => f.write_str("resource definition has no resources"),
            Self::NoHealthyDiskfulReplica => f.write_str("no healthy diskful replica"),
            Self::UnknownNode { node } => write!(f, "replica on node {node} that LINSTOR does not list"),
            Self::DuplicateVolume { kept } => write!(f, "PV {kept} already stands for this volume"),
        }
    }
}

/// A PV to create, possibly in place of a live one.
#[derive(Clone, Debug, PartialEq)]
pub struct Replacement {
    /// The complete replacement PV: save it as the intent, then apply it.
    pub pv: PersistentVolume,
    /// The live PV to retire first; `None` when it is already gone.
    pub retire: Option<RetiredPv>,
    /// Why the PV is replaced.
    pub trigger: ReplaceTrigger,
    /// How its node affinity was obtained.
    pub affinity: AffinityBasis,
}

/// The live PV a replace removes, identified for the preconditions of the
/// writes that retire it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredPv {
    /// Its name.
    pub name: String,
    /// Its UID, when known.
    pub uid: Option<String>,
    /// Its resource version as read when the replacement was built, when
    /// known: the first write to it fails if anyone changed it since.
    pub resource_version: Option<String>,
}

/// Why a PV is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaceTrigger {
    /// The PV's affinity differs from where LINSTOR keeps the data.
    AffinityDrift,
    /// An earlier replace stopped half-way (the PV is being deleted, has its
    /// reclaim policy or annotations changed): finish it from the saved PV.
    ResumeInterrupted,
    /// The PV is gone but saved state remains: create it from the saved PV.
    RecreateFromSavedState,
}

/// How the replacement's node affinity was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AffinityBasis {
    /// Computed from current LINSTOR state.
    Recomputed(Accessibility),
    /// Taken from the saved PV because current state gives none; a replace
    /// under way is always finished, never abandoned.
    KeptFromSavedState {
        /// Why current state gave no affinity.
        reason: String,
    },
}

/// Why no action can be decided for a volume: nothing is written for it.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The PV's remote access policy is unknown.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Saved replace state is unusable.
    #[error(transparent)]
    SavedState(#[from] SavedStateError),
    /// The cluster contradicts saved replace state: someone changed or
    /// replaced the PV since the intent was saved.
    #[error("volume {volume}: saved replace state of PV {pv} kept, nothing written: {reason}")]
    IntentContradicted {
        /// The volume.
        volume: VolumeId,
        /// The PV's name.
        pv: String,
        /// What differs.
        reason: String,
    },
    /// A saved PV whose live PV is gone is not created again because no
    /// claim owns it.
    #[error("volume {volume}: saved PV not created again, nothing written: {source}")]
    Unowned {
        /// The volume.
        volume: VolumeId,
        /// Why no claim owns it (boxed: it is large).
        source: Box<ClaimProblem>,
    },
    /// The volume has saved replace state, which is checked against the
    /// whole live PV, but the planner was given a record of it.
    #[error("volume {volume}: saved replace state is checked against the whole PV {pv}, not a record of it")]
    LivePvNeeded {
        /// The volume.
        volume: VolumeId,
        /// The PV's name.
        pv: String,
    },
    /// Saved replace state names another PV than the live one.
    #[error("volume {volume}: saved state is for PV {saved_pv}, but PV {live_pv} stands for the volume")]
    SavedStateConflict {
        /// The volume.
        volume: VolumeId,
        /// The saved PV's name.
        saved_pv: String,
        /// The live PV's name.
        live_pv: String,
    },
}

/// A LINSTOR CSI PV whose volume handle cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("PV {pv}: {error}")]
pub struct InvalidHandle {
    /// Name of the PV.
    pub pv: String,
    /// Why its handle is invalid.
    pub error: HandleError,
}

/// The decisions for a set of PVs; `R` is what a replace carries (see
/// [`VolumeDecision`]).
#[derive(Debug)]
pub struct Plan<R = Box<Replacement>> {
    /// One decision per volume (and per duplicate PV), sorted by volume.
    pub decisions: Vec<VolumeDecision<R>>,
    /// LINSTOR CSI PVs left out because of their volume handle.
    pub invalid_handles: Vec<InvalidHandle>,
}

/// Counts of a plan's outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// Volumes in sync.
    pub in_sync: usize,
    /// Volumes to replace or recreate.
    pub replace: usize,
    /// Volumes skipped.
    pub skip: usize,
    /// Saved states to clear.
    pub clear_saved_state: usize,
    /// Reclaim policies to restore.
    pub restore_reclaim_policy: usize,
    /// Volumes with an error, and PVs with an invalid handle.
    pub errors: usize,
}

impl<R> Default for Plan<R> {
    fn default() -> Self {
        Self {
            decisions: Vec::new(),
            invalid_handles: Vec::new(),
        }
    }
}

impl Plan {
    /// The replacements to carry out.
    pub fn replacements(&self) -> impl Iterator<Item = (&VolumeDecision, &Replacement)> {
        self.decisions
            .iter()
            .filter_map(|decision| match &decision.outcome {
                Ok(Action::Replace(replacement)) => Some((decision, replacement.as_ref())),
                _ => None,
            })
    }
}

impl<R> Plan<R> {
    /// Counts of the outcomes.
    pub fn summary(&self) -> PlanSummary {
        let mut summary = PlanSummary {
            errors: self.invalid_handles.len(),
            ..PlanSummary::default()
        };
        for decision in &self.decisions {
            match &decision.outcome {
                Ok(Action::InSync) => summary.in_sync += 1,
                Ok(Action::Replace(_)) => summary.replace += 1,
                Ok(Action::Skip(_)) => summary.skip += 1,
                Ok(Action::ClearSavedState) => summary.clear_saved_state += 1,
                Ok(Action::RestoreReclaimPolicy { .. }) => summary.restore_reclaim_policy += 1,
                Err(_) => summary.errors += 1,
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_time_is_to_the_millisecond_and_clamps() {
        let time = SystemTime::UNIX_EPOCH + Duration::new(1_748_779_200, 123_456_789);
        assert_eq!(decision_time(time).to_string(), "2025-06-01T12:00:00.123Z");
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(decision_time(before_1970), Timestamp::UNIX_EPOCH);
        let settings = DecisionSettings::at("Aux", Duration::ZERO, time);
        assert_eq!(settings.now, decision_time(time));
    }
}
