//! The `replace` command: replace one PV whose node affinity no longer matches LINSTOR, decided by
//! the same engine and carried out by the same protocol as the controller's.

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::linstor_volume_of;
use affinity_core::{Action, DecisionError, HandleError, Plan, Planner, Replacement, SkipReason, VolumeId};
use affinity_kube::{ReplaceError, ReplaceProtocol};

use crate::convert::ClusterState;
use crate::lease::host_name;
use crate::live::{LiveCluster, LiveError};
use crate::plan::DecisionOptions;
use crate::report::{PlanReport, build};

/// Why `replace` did not replace the PV.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceCommandError {
    /// No PV of that name exists.
    #[error("PV {pv} not found")]
    NotFound {
        /// Name of the PV.
        pv: String,
    },
    /// The PV is not a LINSTOR CSI volume.
    #[error("PV {pv} is not a LINSTOR CSI volume ({what}): nothing to replace")]
    NotLinstor {
        /// Name of the PV.
        pv: String,
        /// What it is instead.
        what: String,
    },
    /// The PV's volume handle cannot be parsed.
    #[error("PV {pv}: {source}")]
    InvalidHandle {
        /// Name of the PV.
        pv: String,
        /// Why the handle is invalid.
        source: HandleError,
    },
    /// The PV's affinity already matches LINSTOR.
    #[error("PV {pv} is already in sync with LINSTOR: nothing to replace")]
    InSync {
        /// Name of the PV.
        pv: String,
    },
    /// The engine leaves the PV alone.
    #[error("PV {pv} is skipped: {reason}")]
    Skipped {
        /// Name of the PV.
        pv: String,
        /// Why.
        reason: SkipReason,
    },
    /// The PV was created at `Retain` by a replace; its policy comes back
    /// once its claim owns it.
    #[error(
        "PV {pv} was created at reclaim policy Retain by a replace; the controller restores {policy} once \
         its claim owns it: nothing to replace"
    )]
    HeldAtRetain {
        /// Name of the PV.
        pv: String,
        /// The policy to restore.
        policy: String,
    },
    /// A finished replace left its saved state behind.
    #[error(
        "PV {pv}: an earlier replace finished and left its saved state on LINSTOR volume {volume}; the \
         controller clears it: nothing to replace"
    )]
    SavedStateLeft {
        /// Name of the PV.
        pv: String,
        /// The volume holding the saved state.
        volume: VolumeId,
    },
    /// The engine cannot decide for the PV.
    #[error("PV {pv} cannot be decided: {source}")]
    Undecided {
        /// Name of the PV.
        pv: String,
        /// Why.
        source: Box<DecisionError>,
    },
    /// The engine made no decision about the PV's volume.
    #[error("PV {pv}: no decision for volume {volume}")]
    NoDecision {
        /// Name of the PV.
        pv: String,
        /// Its volume.
        volume: VolumeId,
    },
    /// The decision changed between showing it and the confirmation.
    #[error("PV {pv}: the cluster changed while waiting for the confirmation; run the command again")]
    Changed {
        /// Name of the PV.
        pv: String,
    },
    /// The live cluster could not be read.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The replace protocol stopped; deciding again (this command or the controller) resumes it.
    #[error(
        "{0} (deciding again resumes or starts over safely: run the command again, or let the controller do it)"
    )]
    Protocol(#[source] Box<ReplaceError>),
}

impl From<ReplaceError> for ReplaceCommandError {
    fn from(error: ReplaceError) -> Self {
        Self::Protocol(Box::new(error))
    }
}

/// A replacement decided for one PV, with the report that shows it.
#[derive(Debug)]
pub struct Proposal {
    /// Name of the PV.
    pub pv: String,
    /// Its LINSTOR volume.
    pub volume: VolumeId,
    /// What the protocol will apply.
    pub replacement: Replacement,
    /// The plan report of this one volume (current and desired affinity).
    pub report: PlanReport,
}

impl Proposal {
    /// Whether `other` would do the same thing: same report entry, same PV to retire.
    pub fn same_as(&self, other: &Proposal) -> bool {
        self.report.volumes == other.report.volumes && self.replacement.retire == other.replacement.retire
    }
}

/// Decides for PV `name` of `state`, with every PV of its resource definition in view; anything
/// other than a replace is an error saying why nothing is to be done.
pub fn propose(
    state: &ClusterState,
    name: &str,
    options: &DecisionOptions,
) -> Result<Proposal, ReplaceCommandError> {
    let pv_name = || name.to_owned();
    let pv = state
        .pvs
        .iter()
        .find(|pv| pv.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| ReplaceCommandError::NotFound { pv: pv_name() })?;
    let volume = linstor_volume(pv, name)?;
    let settings = options.settings(state);
    let core = &state.core;
    // All PVs: another PV standing for the same volume changes the decision (duplicate).
    let pvs: Vec<&PersistentVolume> = state.pvs.iter().collect();
    let decisions =
        Planner::new(&core.linstor, &core.storage_classes, &settings).decide_volume_of(&volume, &pvs);
    let plan = Plan {
        decisions: decisions
            .into_iter()
            .filter(|decision| decision.pv_name == name)
            .collect(),
        ..Plan::default()
    };
    let report = build(&plan, &state.pvs, &core.linstor, &core.storage_classes, &settings);
    let Some(decision) = plan.decisions.into_iter().next() else {
        return Err(ReplaceCommandError::NoDecision {
            pv: pv_name(),
            volume,
        });
    };
    let replacement = match decision.outcome {
        Ok(Action::Replace(replacement)) => *replacement,
        Ok(Action::InSync) => return Err(ReplaceCommandError::InSync { pv: pv_name() }),
        Ok(Action::Skip(reason)) => {
            return Err(ReplaceCommandError::Skipped {
                pv: pv_name(),
                reason,
            });
        }
        Ok(Action::ClearSavedState) => {
            return Err(ReplaceCommandError::SavedStateLeft {
                pv: pv_name(),
                volume,
            });
        }
        Ok(Action::RestoreReclaimPolicy { policy }) => {
            return Err(ReplaceCommandError::HeldAtRetain {
                pv: pv_name(),
                policy,
            });
        }
        Err(source) => {
            return Err(ReplaceCommandError::Undecided {
                pv: pv_name(),
                source: Box::new(source),
            });
        }
    };
    Ok(Proposal {
        pv: pv_name(),
        volume,
        replacement,
        report,
    })
}

/// The LINSTOR volume of a LINSTOR CSI PV.
fn linstor_volume(pv: &PersistentVolume, name: &str) -> Result<VolumeId, ReplaceCommandError> {
    match linstor_volume_of(pv) {
        Some(volume) => volume.map_err(|source| ReplaceCommandError::InvalidHandle {
            pv: name.to_owned(),
            source,
        }),
        None => Err(ReplaceCommandError::NotLinstor {
            pv: name.to_owned(),
            what: pv.spec.as_ref().and_then(|spec| spec.csi.as_ref()).map_or_else(
                || "not a CSI volume".to_owned(),
                |csi| format!("CSI driver {}", csi.driver),
            ),
        }),
    }
}

/// Runs the replace protocol for `proposal`; returns the PV as the API server stored it.
pub async fn execute(
    cluster: &LiveCluster,
    proposal: &Proposal,
    instance: &str,
) -> Result<PersistentVolume, ReplaceCommandError> {
    let protocol = ReplaceProtocol::new(cluster.kube(), cluster.linstor().clone(), instance);
    Ok(protocol.run(&proposal.volume, &proposal.replacement).await?)
}

/// The name this tool reports in events: `linstor-affinity-cli@<hostname>`.
pub fn instance_name() -> String {
    let host = host_name().unwrap_or_else(|| "unknown-host".to_owned());
    format!("linstor-affinity-cli@{host}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use affinity_core::ReplaceTrigger;

    use super::*;
    use crate::plan::load_dump;
    use crate::report::DecisionKind;

    fn example() -> ClusterState {
        load_dump(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evacuated-cluster")).unwrap()
    }

    fn options() -> DecisionOptions {
        DecisionOptions {
            property_namespace: None,
            grace_period: Duration::from_secs(60),
            now: "2025-06-01T12:00:00Z".parse().unwrap(),
        }
    }

    fn refusal(state: &ClusterState, pv: &str) -> String {
        propose(state, pv, &options()).unwrap_err().to_string()
    }

    #[test]
    fn a_drifted_pv_is_proposed_with_its_report() {
        let state = example();
        let pv = "pvc-2d8b3e4a-7c63-4f2a-9c9a-3b4f5e6d7c03";
        let proposal = propose(&state, pv, &options()).unwrap();
        assert_eq!(proposal.volume, VolumeId::new(pv, 0));
        assert_eq!(proposal.replacement.trigger, ReplaceTrigger::AffinityDrift);
        assert_eq!(proposal.report.volumes.len(), 1);
        assert_eq!(proposal.report.volumes[0].decision, DecisionKind::Replace);
        assert!(proposal.same_as(&propose(&state, pv, &options()).unwrap()));
        // A volume of a resource definition with two volumes picks the right one.
        let second = propose(&state, "shared-ledger-1", &options()).unwrap();
        assert_eq!(second.volume, VolumeId::new("shared-ledger", 1));
        assert_eq!(second.report.volumes[0].pv, "shared-ledger-1");
        assert!(!second.same_as(&proposal));
    }

    #[test]
    fn anything_but_a_replace_is_refused_with_the_reason() {
        let state = example();
        let in_sync = refusal(&state, "pvc-0b6f1c2e-5a41-4d0e-9a7e-1f2d3c4b5a01");
        assert!(
            in_sync.contains("already in sync with LINSTOR: nothing to replace"),
            "{in_sync}"
        );
        let skipped = refusal(&state, "pvc-6bcf7c8e-b0a7-4d6e-9ade-7f8d9cabb007");
        assert!(
            skipped.ends_with("is skipped: skip annotation set on the PV"),
            "{skipped}"
        );
        let saved = refusal(&state, "pvc-8de19eaa-d2c9-4f8a-9cfa-9badbecdd209");
        assert!(saved.contains("the controller clears it"), "{saved}");
        let undecided = refusal(&state, "pvc-7cd08d9f-c1b8-4e7f-8bef-8a9eadbcc108");
        assert!(undecided.contains("cannot be decided") && undecided.contains("override.piraeus.io"));
        assert_eq!(refusal(&state, "pvc-nope"), "PV pvc-nope not found");
    }

    #[test]
    fn pvs_of_other_drivers_and_bad_handles_are_refused() {
        let mut state = example();
        let mut other = state.pvs[0].clone();
        other.metadata.name = Some("other".to_owned());
        other.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = "ebs.csi.aws.com".to_owned();
        let mut bad = state.pvs[0].clone();
        bad.metadata.name = Some("bad".to_owned());
        bad.spec.as_mut().unwrap().csi.as_mut().unwrap().volume_handle = "/1".to_owned();
        let mut plain = state.pvs[0].clone();
        plain.metadata.name = Some("plain".to_owned());
        plain.spec.as_mut().unwrap().csi = None;
        state.pvs.extend([other, bad, plain]);
        assert!(refusal(&state, "other").contains("CSI driver ebs.csi.aws.com"));
        assert!(refusal(&state, "bad").contains("empty resource name"));
        assert!(refusal(&state, "plain").contains("not a CSI volume"));
    }
}
