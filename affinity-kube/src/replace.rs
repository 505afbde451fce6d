//! The replace protocol for one PV.
//!
//! 1. Save the intent on the LINSTOR volume definition: the replacement PV
//!    and the UID and resource version of the PV it retires.
//! 2. If the live PV still exists: in one merge patch, conditional on the
//!    resource version the replacement was built from, set reclaim policy
//!    `Retain` and the skip-reclaim annotation, and check that the answer
//!    shows both; delete it conditional on the answer's resource version;
//!    drop its finalizers; wait until it is gone.
//! 3. Create the replacement at reclaim policy `Retain`, the original policy
//!    kept in an annotation ([`affinity_core::held_at_retain`]).
//! 4. Clear the intent.
//! 5. Nudge the claim, so the PV binder binds it again at once; once the
//!    claim that owned the old PV owns the new one (it exists, has the saved
//!    UID, names the PV), mark the PV `Bound` and restore its policy. A claim
//!    that is gone or was re-created leaves the PV at `Retain`.
//! 6. Announce the replacement with events on the PV and its claim.
//!
//! So no PV written here is ever `Released`, `Failed` or deleted with
//! reclaim policy `Delete` unless its claim owns it. Every step is safe to
//! repeat, and a crash between any two leaves the intent, the new PV held at
//! `Retain`, or the finished PV: deciding again resumes where the protocol
//! stopped, or writes nothing when someone else changed the PV meanwhile.
//!
//! Every write is fenced: it goes out only while this instance's lease stays
//! valid for the whole time the write may take, and is abandoned after that
//! time. A request the API server throttles (429) is repeated by the
//! client's [`crate::throttle`] layer inside that same time, so every
//! repetition is covered by the lease too.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use affinity_core::names::{
    FIELD_MANAGER, PHASE_BOUND, RECLAIM_RETAIN, RESTORE_RECLAIM_POLICY_ANNOTATION, SKIP_RECLAIM_ANNOTATION,
};
use affinity_core::{
    BoundMark, ClaimProblem, Replacement, RestoreStep, RetiredPv, VolumeId, bound_mark, claim_of,
    encode_intent, held_at_retain, is_earlier_creation, needs_another_nudge, reclaim_policy_of, restore_step,
    restore_step_by_binder,
};
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::events::EventReporter;
use crate::intent::{IntentLog, IntentLogError};
use crate::leader::Leadership;
use crate::permissions::Paths;

/// The annotation set on a claim after its PV was re-created, unless
/// [`ReplaceProtocol::with_rebind_annotation`] names another; its changing
/// value makes the PV binder sync the claim at once.
pub const DEFAULT_REBIND_ANNOTATION: &str = "linstor.csi.linbit.com/affinity-rebind";

/// How long to wait for a retired PV to disappear once its finalizers are gone.
const DELETION_TIMEOUT: Duration = Duration::from_secs(30);
const DELETION_POLL: Duration = Duration::from_millis(50);
/// The longest one Kubernetes request of the protocol may take; less when
/// the lease's renew deadline is short ([`Leadership::write_budget`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at removing the finalizers of a PV being deleted while other
/// controllers change it.
const FINALIZER_ATTEMPTS: u32 = 5;
/// Attempts at marking a re-created PV Bound and restoring its policy while
/// the PV binder changes it too.
const SETTLE_ATTEMPTS: u32 = 4;
/// The pauses before each check that a nudged claim was bound again: soon
/// first (the binder usually lost the race by milliseconds), then longer.
const REBIND_CHECK_PAUSES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// A step of the protocol, reported to a [`StepObserver`] once done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplaceStep {
    /// The replacement was saved as the intent.
    IntentSaved,
    /// The live PV has reclaim policy `Retain` and the skip-reclaim annotation.
    RetainSet,
    /// The live PV's deletion was requested.
    DeleteIssued,
    /// The live PV's finalizers were removed.
    FinalizersRemoved,
    /// The replacement was created (at reclaim policy `Retain`).
    Recreated,
    /// The intent was removed.
    IntentCleared,
    /// The replacement's claim owns it and its original reclaim policy is back.
    PolicyRestored,
}

impl ReplaceStep {
    /// Every step, in protocol order.
    pub const ALL: [ReplaceStep; 7] = [
        Self::IntentSaved,
        Self::RetainSet,
        Self::DeleteIssued,
        Self::FinalizersRemoved,
        Self::Recreated,
        Self::IntentCleared,
        Self::PolicyRestored,
    ];

    /// The step's name, such as `retain-set`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IntentSaved => "intent-saved",
            Self::RetainSet => "retain-set",
            Self::DeleteIssued => "delete-issued",
            Self::FinalizersRemoved => "finalizers-removed",
            Self::Recreated => "recreated",
            Self::IntentCleared => "intent-cleared",
            Self::PolicyRestored => "policy-restored",
        }
    }
}

impl fmt::Display for ReplaceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step name that is not one of [`ReplaceStep::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown replace step {0:?} (expected one of intent-saved, retain-set, delete-issued, finalizers-removed, recreated, intent-cleared, policy-restored)"
)]
pub struct UnknownStep(String);

impl FromStr for ReplaceStep {
    type Err = UnknownStep;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|step| step.as_str() == name)
            .ok_or_else(|| UnknownStep(name.to_owned()))
    }
}

/// Told about every finished step; the protocol goes on once the returned
/// future completes. Used to trace the protocol and, in crash tests, to
/// stop a controller at an exact step.
pub trait StepObserver: Send + Sync {
    /// Step `step` of the replace of PV `pv` is done.
    fn step_done(&self, pv: &str, step: ReplaceStep) -> BoxFuture<'static, ()>;
}

/// Why a replace stopped. Whatever step failed, the intent stays saved (or
/// was never written), so deciding again resumes or starts over safely.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The replacement could not be encoded as the intent.
    #[error("PV {pv}: cannot encode the replacement: {source}")]
    Encode {
        /// Name of the PV.
        pv: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The intent log could not be written.
    #[error(transparent)]
    Intent(#[from] Box<IntentLogError>),
    /// A Kubernetes request failed.
    #[error("PV {pv}: {step}: {source}")]
    Kubernetes {
        /// Name of the PV.
        pv: String,
        /// The step that failed.
        step: &'static str,
        /// The API error (boxed: it is large).
        source: Box<kube::Error>,
    },
    /// The live PV is not the one the decision was about, or changed since.
    #[error("PV {pv} changed since the decision ({what}); nothing written, deciding again")]
    Changed {
        /// Name of the PV.
        pv: String,
        /// What was found.
        what: String,
    },
    /// The answer to the Retain patch does not show reclaim policy `Retain`
    /// and the skip-reclaim annotation: another writer (a webhook, a GitOps
    /// tool) undid them. The PV is not deleted.
    #[error(
        "PV {pv}: reclaim policy Retain and {SKIP_RECLAIM_ANNOTATION} did not stick (the answer shows policy {policy:?}); not deleting it"
    )]
    RetainNotKept {
        /// Name of the PV.
        pv: String,
        /// The reclaim policy the answer shows.
        policy: Option<String>,
    },
    /// A PV of the replacement's name exists that this protocol did not create.
    #[error("PV {pv} exists already (UID {uid:?}) and is not this replacement; nothing written")]
    Occupied {
        /// Name of the PV.
        pv: String,
        /// Its UID.
        uid: Option<String>,
    },
    /// A Kubernetes request did not answer in time; it may still land.
    #[error("PV {pv}: {step}: no answer within {seconds:.1} s")]
    RequestTimeout {
        /// Name of the PV.
        pv: String,
        /// The step that timed out.
        step: &'static str,
        /// How long was waited.
        seconds: f64,
    },
    /// The retired PV did not go away in time.
    #[error("PV {pv} is still present {seconds} s after its deletion")]
    DeletionTimeout {
        /// Name of the PV.
        pv: String,
        /// How long was waited.
        seconds: u64,
    },
    /// The replacement has no name.
    #[error("replacement of volume {volume} has no name")]
    Unnamed {
        /// The volume.
        volume: VolumeId,
    },
    /// This instance lost its lease, or it may expire before the write
    /// lands: it must not write any more.
    #[error("PV {pv}: not leading (for long enough) any more; stopped before {step}")]
    NotLeading {
        /// Name of the PV.
        pv: String,
        /// The write that was not made.
        step: &'static str,
    },
}

/// Carries out replacements against the Kubernetes API and an intent log,
/// by default the one on the LINSTOR volume definitions.
pub struct ReplaceProtocol<L = linstor_api::Client> {
    client: Client,
    events: EventReporter,
    paths: Paths,
    pvs: Api<PersistentVolume>,
    intents: L,
    leadership: Leadership,
    observer: Option<Arc<dyn StepObserver>>,
    /// The annotation whose changing value nudges a claim.
    rebind_annotation: Arc<str>,
    /// The checks, running on after a replace, that nudged claims were bound again.
    rechecks: TaskTracker,
    /// Stops those checks at shutdown.
    stop_rechecks: CancellationToken,
}

impl<L: IntentLog> ReplaceProtocol<L> {
    /// A protocol writing through `client` and `intents`; `instance` names
    /// this controller instance in events. It writes unconditionally until
    /// [`Self::with_leadership`] says otherwise.
    pub fn new(client: Client, intents: L, instance: impl Into<String>) -> Self {
        Self {
            pvs: Api::all(client.clone()),
            events: EventReporter::new(client.clone(), instance),
            paths: Paths::ALL,
            client,
            intents,
            leadership: Leadership::always(),
            observer: None,
            rebind_annotation: Arc::from(DEFAULT_REBIND_ANNOTATION),
            rechecks: TaskTracker::new(),
            stop_rechecks: CancellationToken::new(),
        }
    }

    /// Writes only while `leadership` says this instance leads.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Uses only the optional paths `paths` leaves on (as RBAC grants them):
    /// without claims, a re-created PV's reclaim policy comes back once the
    /// PV binder marks it `Bound`.
    pub fn with_paths(mut self, paths: Paths) -> Self {
        self.events = self.events.with_apis(paths.events);
        self.paths = paths;
        self
    }

    /// Nudges claims with `annotation` rather than [`DEFAULT_REBIND_ANNOTATION`].
    pub fn with_rebind_annotation(mut self, annotation: impl Into<String>) -> Self {
        self.rebind_annotation = Arc::from(annotation.into());
        self
    }

    /// Names the controller reporting the events `reporting_controller`
    /// rather than [`affinity_core::names::EVENT_REPORTING_CONTROLLER`].
    pub fn with_reporting_controller(mut self, reporting_controller: impl Into<String>) -> Self {
        self.events = self.events.with_reporting_controller(reporting_controller);
        self
    }

    /// Reports every finished step to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn StepObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Removes the intent of a replace that finished (the "reset"
    /// operation), `live` being the PV it left; then restores its reclaim
    /// policy when its claim owns it (the replace may have stopped before).
    pub async fn clear_intent(&self, volume: &VolumeId, live: &PersistentVolume) -> Result<(), ReplaceError> {
        let pv = live.metadata.name.as_deref().unwrap_or_default();
        self.ensure_leading(pv, "clearing the intent")?;
        self.intents.clear(volume).await.map_err(Box::new)?;
        info!(%pv, %volume, "saved state of a finished replace removed");
        self.settle(live).await.map(drop)
    }

    /// Restores the original reclaim policy of `live`, a PV this protocol
    /// created at `Retain`, once its claim owns it. Returns why it stays at
    /// `Retain` when the claim does not.
    pub async fn restore_reclaim_policy(
        &self,
        live: &PersistentVolume,
    ) -> Result<Option<ClaimProblem>, ReplaceError> {
        self.settle(live).await
    }

    /// Stops the checks that claims nudged after a re-creation were bound
    /// again, which otherwise go on for a few seconds after the replace
    /// returned, and waits until they have stopped.
    pub async fn stop_rechecks(&self) {
        self.stop_rechecks.cancel();
        self.rechecks.close();
        self.rechecks.wait().await;
    }

    /// The write budget of one request, fenced by the lease.
    fn budget(&self) -> Duration {
        self.leadership.write_budget(REQUEST_TIMEOUT)
    }

    fn ensure_leading(&self, pv: &str, step: &'static str) -> Result<(), ReplaceError> {
        if self.leadership.is_leading_for(self.budget()) {
            Ok(())
        } else {
            Err(ReplaceError::NotLeading {
                pv: pv.to_owned(),
                step,
            })
        }
    }

    /// Sends one Kubernetes write (or read) of step `step` about PV `pv`:
    /// only while the lease stays ours for the request's whole budget, given
    /// up after that budget (throttled requests are repeated within it by the
    /// client's [`crate::throttle`] layer).
    async fn fenced<T, F, Fut>(&self, pv: &str, step: &'static str, request: F) -> Result<T, FencedError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        self.ensure_leading(pv, step).map_err(FencedError::Protocol)?;
        let budget = self.budget();
        match tokio::time::timeout(budget, request()).await {
            Err(_) => Err(FencedError::Protocol(ReplaceError::RequestTimeout {
                pv: pv.to_owned(),
                step,
                seconds: budget.as_secs_f64(),
            })),
            Ok(answer) => answer.map_err(FencedError::Kube),
        }
    }

    /// Reads PV `name` afresh (fenced like a write: a stale leader acts on
    /// nothing it reads), for step `step`; `None` when it does not exist.
    async fn read_pv(
        &self,
        name: &str,
        step: &'static str,
    ) -> Result<Option<PersistentVolume>, ReplaceError> {
        self.fenced(name, step, || self.pvs.get_opt(name))
            .await
            .map_err(|error| error.into_replace_error(name, step))
    }

    async fn done(&self, pv: &str, step: ReplaceStep) {
        debug!(%pv, %step, "replace step done");
        if let Some(observer) = &self.observer {
            observer.step_done(pv, step).await;
        }
    }

    /// Replaces (or re-creates) the PV of `volume` as `replacement` says.
    /// Returns the PV as the API server stored it last.
    pub async fn run(
        &self,
        volume: &VolumeId,
        replacement: &Replacement,
    ) -> Result<PersistentVolume, ReplaceError> {
        let name = replacement
            .pv
            .metadata
            .name
            .clone()
            .ok_or_else(|| ReplaceError::Unnamed {
                volume: volume.clone(),
            })?;
        let intent = encode_intent(&replacement.pv, replacement.retire.as_ref()).map_err(|source| {
            ReplaceError::Encode {
                pv: name.clone(),
                source,
            }
        })?;
        self.ensure_leading(&name, "saving the intent")?;
        self.intents.save(volume, &intent).await.map_err(Box::new)?;
        self.done(&name, ReplaceStep::IntentSaved).await;
        if let Some(retired) = &replacement.retire {
            self.retire(retired).await?;
        }
        let created = self
            .create(
                &name,
                &held_at_retain(&replacement.pv),
                replacement.retire.as_ref(),
            )
            .await?;
        self.done(&name, ReplaceStep::Recreated).await;
        self.ensure_leading(&name, "clearing the intent")?;
        self.intents.clear(volume).await.map_err(Box::new)?;
        self.done(&name, ReplaceStep::IntentCleared).await;
        // A PV left at Retain here is seen again by the next pass, which
        // restores its policy or reports why it cannot.
        if let Err(error) = self.settle(&created).await {
            warn!(pv = %name, %error, "reclaim policy not restored yet; the next pass does it");
        }
        self.events.announce_replacement(&created).await;
        info!(pv = %name, %volume, trigger = ?replacement.trigger, "PV replaced");
        Ok(created)
    }

    /// Creates `held`, the replacement at `Retain`. A PV of that name that
    /// exists already is accepted only when it is this replacement, created
    /// by an earlier attempt (it is not the retired PV and carries the
    /// policy to restore).
    async fn create(
        &self,
        name: &str,
        held: &PersistentVolume,
        retired: Option<&RetiredPv>,
    ) -> Result<PersistentVolume, ReplaceError> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let step = "creating the replacement";
        match self.fenced(name, step, || self.pvs.create(&params, held)).await {
            Ok(created) => return Ok(created),
            Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 409 => {}
            Err(error) => return Err(error.into_replace_error(name, step)),
        }
        match self.read_pv(name, "reading the existing replacement").await? {
            Some(pv) if is_earlier_creation(&pv, held, retired) => Ok(pv),
            other => Err(ReplaceError::Occupied {
                pv: name.to_owned(),
                uid: other.and_then(|pv| pv.metadata.uid),
            }),
        }
    }

    /// Makes sure the live PV is gone without its volume being reclaimed.
    /// Every write is conditional on the PV being exactly as last seen.
    async fn retire(&self, retired: &RetiredPv) -> Result<(), ReplaceError> {
        let name = retired.name.as_str();
        let Some(version) = self.version_to_retire(retired).await? else {
            return Ok(());
        };
        let keep_volume = json!({
            "metadata": {
                "resourceVersion": version,
                "annotations": { SKIP_RECLAIM_ANNOTATION: "true" },
            },
            "spec": { "persistentVolumeReclaimPolicy": RECLAIM_RETAIN },
        });
        let patch = PatchParams::default();
        let keep_volume = Patch::Merge(&keep_volume);
        let step = "setting reclaim policy Retain";
        let retained = match self
            .fenced(name, step, || self.pvs.patch(name, &patch, &keep_volume))
            .await
        {
            Ok(retained) => retained,
            Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 404 => return Ok(()),
            Err(error) => return Err(error.into_replace_error(name, step)),
        };
        let policy = reclaim_policy_of(&retained).map(str::to_owned);
        let skip_reclaim = retained
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(SKIP_RECLAIM_ANNOTATION));
        if policy.as_deref() != Some(RECLAIM_RETAIN)
            || skip_reclaim.map(String::as_str) != Some("true")
            || retained.metadata.uid != retired.uid
        {
            return Err(ReplaceError::RetainNotKept {
                pv: name.to_owned(),
                policy,
            });
        }
        self.done(name, ReplaceStep::RetainSet).await;
        let delete = DeleteParams {
            preconditions: Some(Preconditions {
                uid: retained.metadata.uid.clone(),
                resource_version: retained.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        let step = "deleting the live PV";
        let deleting = match self.fenced(name, step, || self.pvs.delete(name, &delete)).await {
            Ok(answer) => answer.left(),
            Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 404 => None,
            Err(error) => return Err(error.into_replace_error(name, step)),
        };
        self.done(name, ReplaceStep::DeleteIssued).await;
        if let Some(deleting) = deleting {
            self.remove_finalizers(deleting, retired).await?;
        }
        self.done(name, ReplaceStep::FinalizersRemoved).await;
        self.wait_until_gone(name, retired.uid.as_deref()).await
    }

    /// The resource version the Retain patch is conditional on: the one the
    /// replacement was built from, or (for callers that did not record one)
    /// the live PV's, read now. `None` when the PV is gone.
    async fn version_to_retire(&self, retired: &RetiredPv) -> Result<Option<String>, ReplaceError> {
        if let Some(version) = &retired.resource_version {
            return Ok(Some(version.clone()));
        }
        let name = retired.name.as_str();
        match self.read_pv(name, "reading the live PV").await? {
            None => Ok(None),
            Some(live) if retired.uid.is_some() && live.metadata.uid != retired.uid => {
                Err(ReplaceError::Changed {
                    pv: name.to_owned(),
                    what: format!(
                        "UID {:?}, the decision was about {:?}",
                        live.metadata.uid, retired.uid
                    ),
                })
            }
            Some(live) => Ok(live.metadata.resource_version),
        }
    }

    /// Removes the finalizers of `deleting`, the retired PV being deleted,
    /// conditional on its resource version; when other controllers changed
    /// it meanwhile, reads it again and repeats while it still is the
    /// retired PV at `Retain`.
    async fn remove_finalizers(
        &self,
        mut deleting: PersistentVolume,
        retired: &RetiredPv,
    ) -> Result<(), ReplaceError> {
        let name = retired.name.as_str();
        let patch = PatchParams::default();
        for _ in 0..FINALIZER_ATTEMPTS {
            if deleting.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
                return Ok(());
            }
            let no_finalizers = json!({
                "metadata": { "resourceVersion": deleting.metadata.resource_version, "finalizers": null }
            });
            let no_finalizers = Patch::Merge(&no_finalizers);
            let step = "removing finalizers";
            match self
                .fenced(name, step, || self.pvs.patch(name, &patch, &no_finalizers))
                .await
            {
                Ok(_) => return Ok(()),
                Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 404 => return Ok(()),
                Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 409 => {}
                Err(error) => return Err(error.into_replace_error(name, step)),
            }
            match self.read_pv(name, "reading the PV being deleted").await? {
                None => return Ok(()),
                Some(pv)
                    if pv.metadata.uid == retired.uid && reclaim_policy_of(&pv) == Some(RECLAIM_RETAIN) =>
                {
                    deleting = pv;
                }
                Some(pv) => {
                    return Err(ReplaceError::Changed {
                        pv: name.to_owned(),
                        what: format!(
                            "UID {:?}, reclaim policy {:?} while being deleted",
                            pv.metadata.uid,
                            reclaim_policy_of(&pv)
                        ),
                    });
                }
            }
        }
        Err(ReplaceError::Changed {
            pv: name.to_owned(),
            what: format!("its finalizers changed {FINALIZER_ATTEMPTS} times while they were removed"),
        })
    }

    async fn wait_until_gone(&self, name: &str, uid: Option<&str>) -> Result<(), ReplaceError> {
        let deadline = tokio::time::Instant::now() + DELETION_TIMEOUT;
        loop {
            match self.read_pv(name, "waiting for the deletion").await? {
                None => return Ok(()),
                Some(pv) if pv.metadata.uid.as_deref() != uid => return Ok(()),
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(ReplaceError::DeletionTimeout {
                        pv: name.to_owned(),
                        seconds: DELETION_TIMEOUT.as_secs(),
                    });
                }
                Some(_) => tokio::time::sleep(DELETION_POLL).await,
            }
        }
    }

    /// After a re-creation: nudges the claim so the PV binder binds it at
    /// once, and when the claim owns `pv`, marks it `Bound` (the binder's
    /// own condition) and restores the reclaim policy it was created
    /// without. Returns why the PV stays at `Retain`, if it does. Other
    /// writers (the PV binder) may change the PV meanwhile: every write is
    /// conditional on the version the decision saw, and a refused one is
    /// decided again on the PV read afresh.
    async fn settle(&self, pv: &PersistentVolume) -> Result<Option<ClaimProblem>, ReplaceError> {
        if !self.paths.claims {
            return self.settle_by_binder(pv).await;
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        let claim = match self.nudge_claim(pv).await {
            ClaimRead::Found(claim) => Some(*claim),
            ClaimRead::Gone => None,
            ClaimRead::Unknown => return Ok(None),
        };
        let mut pv = pv.clone();
        for _ in 0..SETTLE_ATTEMPTS {
            let written = match restore_step(&pv, claim.as_ref()) {
                RestoreStep::NotHeld => {
                    if let Some(claim) = claim.as_ref().filter(|_| self.paths.mark_bound) {
                        // Best effort: the binder marks it itself otherwise.
                        let _ = self.mark_bound(&pv, claim).await;
                    }
                    return Ok(None);
                }
                RestoreStep::Hold(problem) => {
                    warn!(pv = %name, %problem, "PV kept at reclaim policy Retain");
                    return Ok(Some(problem));
                }
                RestoreStep::MarkBoundThenRestore { .. } => match &claim {
                    Some(claim) if self.paths.mark_bound => self.mark_bound(&pv, claim).await,
                    // The binder's own mark brings it back to this step as `Restore`.
                    _ => return Ok(None),
                },
                RestoreStep::Restore { policy } => self.restore_policy(&pv, &policy).await.map(|()| None),
                RestoreStep::AwaitBinder => return Ok(None),
            };
            match written {
                Ok(Some(next)) => pv = next,
                Ok(None) => return Ok(None),
                Err(ReplaceError::Changed { .. }) => {
                    match self.read_pv(&name, "reading the re-created PV").await? {
                        Some(current) => pv = current,
                        None => return Ok(None),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        debug!(pv = %name, "PV kept changing while its reclaim policy was restored; the next pass goes on");
        Ok(None)
    }

    /// [`Self::settle`] when claims cannot be read: the PV binder's phase
    /// says whether the claim owns the PV ([`restore_step_by_binder`]).
    /// Until the binder decides, nothing is written; the PV's next change
    /// (or the next pass) decides again.
    async fn settle_by_binder(&self, pv: &PersistentVolume) -> Result<Option<ClaimProblem>, ReplaceError> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let mut pv = pv.clone();
        for _ in 0..SETTLE_ATTEMPTS {
            let policy = match restore_step_by_binder(&pv) {
                RestoreStep::Restore { policy } => policy,
                RestoreStep::Hold(problem) => {
                    warn!(pv = %name, %problem, "PV kept at reclaim policy Retain");
                    return Ok(Some(problem));
                }
                RestoreStep::AwaitBinder => {
                    debug!(pv = %name, "waiting for the PV binder to bind the re-created PV");
                    return Ok(None);
                }
                RestoreStep::NotHeld | RestoreStep::MarkBoundThenRestore { .. } => return Ok(None),
            };
            match self.restore_policy(&pv, &policy).await {
                Ok(()) => return Ok(None),
                Err(ReplaceError::Changed { .. }) => {
                    match self.read_pv(&name, "reading the re-created PV").await? {
                        Some(current) => pv = current,
                        None => return Ok(None),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        debug!(pv = %name, "PV kept changing while its reclaim policy was restored; the next pass goes on");
        Ok(None)
    }

    /// Sets `policy` on `pv` and removes the annotation that kept it,
    /// conditional on `pv`'s resource version: the claim was checked against
    /// exactly that version.
    async fn restore_policy(&self, pv: &PersistentVolume, policy: &str) -> Result<(), ReplaceError> {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let restore = json!({
            "metadata": {
                "resourceVersion": pv.metadata.resource_version,
                "annotations": { RESTORE_RECLAIM_POLICY_ANNOTATION: null },
            },
            "spec": { "persistentVolumeReclaimPolicy": policy },
        });
        let restore = Patch::Merge(&restore);
        let params = PatchParams::default();
        let step = "restoring the reclaim policy";
        self.fenced(name, step, || self.pvs.patch(name, &params, &restore))
            .await
            .map_err(|error| error.into_replace_error(name, step))?;
        info!(pv = %name, %policy, "claim owns the PV again: reclaim policy restored");
        self.done(name, ReplaceStep::PolicyRestored).await;
        Ok(())
    }

    /// Marks `pv` `Bound` when `claim`, as just read, owns it: exactly the
    /// PV binder's own condition. The binder (limited to 20 requests per
    /// second in kube-controller-manager by default) then has nothing left
    /// to write for it. Returns the PV as stored after the mark, or as it
    /// was when already `Bound`; `None` when the claim does not own it.
    async fn mark_bound(
        &self,
        pv: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<Option<PersistentVolume>, ReplaceError> {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        match bound_mark(pv, claim) {
            BoundMark::NotOwned => return Ok(None),
            BoundMark::AlreadyBound => return Ok(Some(pv.clone())),
            BoundMark::Mark => {}
        }
        let bound = json!({
            "metadata": { "resourceVersion": pv.metadata.resource_version },
            "status": { "phase": PHASE_BOUND },
        });
        let bound = Patch::Merge(&bound);
        let params = PatchParams::default();
        let step = "marking the PV Bound";
        self.fenced(name, step, || self.pvs.patch_status(name, &params, &bound))
            .await
            .map(Some)
            .map_err(|error| error.into_replace_error(name, step))
    }

    /// Updates the claim of `pv` so the PV binder binds it again at once,
    /// and returns it as updated. Best effort: without it the binder still
    /// does so on its periodic sync.
    async fn nudge_claim(&self, pv: &PersistentVolume) -> ClaimRead {
        let Some((namespace, claim_name)) = claim_of(pv) else {
            return ClaimRead::Gone;
        };
        let (namespace, claim_name) = (namespace.to_owned(), claim_name.to_owned());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        // A new value every time: re-writing the same value triggers nothing.
        let stamp = pv
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| pv.metadata.resource_version.clone().unwrap_or_default());
        let name = pv.metadata.name.clone().unwrap_or_default();
        let nudged = self.nudge(&claims, &name, &claim_name, &stamp).await;
        // The binder may see the nudge before the new PV and mark the claim
        // Lost; then only a later update (or its 15 s resync) binds it.
        // Check back without holding up the protocol.
        let leadership = self.leadership.clone();
        let budget = self.budget();
        let stop = self.stop_rechecks.clone();
        let annotation = Arc::clone(&self.rebind_annotation);
        self.rechecks.spawn(stop.run_until_cancelled_owned(async move {
            for (attempt, pause) in (1..).zip(REBIND_CHECK_PAUSES) {
                tokio::time::sleep(pause).await;
                let claim = match claims.get_opt(&claim_name).await {
                    Ok(Some(claim)) => claim,
                    _ => return,
                };
                if !needs_another_nudge(&claim) || !leadership.is_leading_for(budget) {
                    return;
                }
                let phase = claim.status.and_then(|status| status.phase);
                debug!(%namespace, claim = %claim_name, attempt, ?phase, "claim not bound yet; nudging again");
                let renudge = json!({ "metadata": { "annotations": { &*annotation: format!("{stamp}-{attempt}") } } });
                let _ = tokio::time::timeout(
                    budget,
                    claims.patch(&claim_name, &PatchParams::default(), &Patch::Merge(&renudge)),
                )
                .await;
            }
        }));
        nudged
    }

    /// Sets the rebind annotation of claim `claim_name` (of PV `pv`) to
    /// `stamp`; returns the claim as updated.
    async fn nudge(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        pv: &str,
        claim_name: &str,
        stamp: &str,
    ) -> ClaimRead {
        let nudge = json!({ "metadata": { "annotations": { &*self.rebind_annotation: stamp } } });
        let patch = PatchParams::default();
        let nudge = Patch::Merge(&nudge);
        match self
            .fenced(pv, "nudging the claim", || {
                claims.patch(claim_name, &patch, &nudge)
            })
            .await
        {
            Ok(claim) => ClaimRead::Found(Box::new(claim)),
            Err(FencedError::Kube(kube::Error::Api(status))) if status.code == 404 => ClaimRead::Gone,
            Err(error) => {
                warn!(claim = %claim_name, error = %error.into_replace_error(pv, "nudging the claim"), "could not nudge the claim");
                ClaimRead::Unknown
            }
        }
    }
}

/// The claim of a re-created PV, as the nudge found it.
enum ClaimRead {
    /// The claim, as updated by the nudge.
    Found(Box<PersistentVolumeClaim>),
    /// The PV names no claim, or it does not exist.
    Gone,
    /// It could not be read.
    Unknown,
}

/// Why a fenced request did not answer.
enum FencedError {
    /// Not sent or given up: the protocol's own error.
    Protocol(ReplaceError),
    /// The API server's answer.
    Kube(kube::Error),
}

impl FencedError {
    fn into_replace_error(self, pv: &str, step: &'static str) -> ReplaceError {
        match self {
            Self::Protocol(error) => error,
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => ReplaceError::Changed {
                pv: pv.to_owned(),
                what: format!("{step} refused: {}", status.message),
            },
            Self::Kube(source) => kube_error(pv, step, source),
        }
    }
}

fn kube_error(pv: &str, step: &'static str, source: kube::Error) -> ReplaceError {
    ReplaceError::Kubernetes {
        pv: pv.to_owned(),
        step,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use affinity_core::{AffinityBasis, ReplaceTrigger};

    use super::*;
    use crate::intent::IntentAction;

    /// An intent store of the embedder's own that refuses every save.
    struct RefusingStore;

    impl IntentLog for RefusingStore {
        async fn save(&self, volume: &VolumeId, _saved_pv_json: &str) -> Result<(), IntentLogError> {
            Err(IntentLogError::new(
                volume,
                IntentAction::Saving,
                "the store is read-only",
            ))
        }

        async fn clear(&self, _volume: &VolumeId) -> Result<(), IntentLogError> {
            Ok(())
        }
    }

    /// Records the steps it is told about.
    #[derive(Default)]
    struct Steps(Mutex<Vec<ReplaceStep>>);

    impl StepObserver for Steps {
        fn step_done(&self, _pv: &str, step: ReplaceStep) -> BoxFuture<'static, ()> {
            crate::lock(&self.0).push(step);
            Box::pin(std::future::ready(()))
        }
    }

    #[tokio::test]
    async fn a_refused_save_of_another_store_stops_the_replace_before_any_step() {
        // Nothing listens there: a request to Kubernetes would fail as a Kubernetes error.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let steps = Arc::new(Steps::default());
        let protocol = ReplaceProtocol::new(client, RefusingStore, "test-instance")
            .with_observer(Arc::clone(&steps) as Arc<dyn StepObserver>);
        let replacement = Replacement {
            pv: PersistentVolume {
                metadata: ObjectMeta {
                    name: Some("pvc-1".to_owned()),
                    ..ObjectMeta::default()
                },
                ..PersistentVolume::default()
            },
            retire: Some(RetiredPv {
                name: "pvc-1".to_owned(),
                uid: Some("uid-1".to_owned()),
                resource_version: Some("1".to_owned()),
            }),
            trigger: ReplaceTrigger::AffinityDrift,
            affinity: AffinityBasis::KeptFromSavedState {
                reason: "none needed for this test".to_owned(),
            },
        };
        let error = protocol
            .run(&VolumeId::new("pvc-1", 0), &replacement)
            .await
            .unwrap_err();
        let ReplaceError::Intent(error) = error else {
            panic!("expected the intent error, got {error:?}");
        };
        assert_eq!(error.action, IntentAction::Saving);
        assert!(error.to_string().contains("the store is read-only"), "{error}");
        assert!(crate::lock(&steps.0).is_empty(), "no step was done");
    }
}
