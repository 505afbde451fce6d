//! The replace protocol for one PV.
//!
//! 1. Save the replacement PV as the intent (LINSTOR volume definition).
//! 2. If the live PV still exists: in one merge patch set reclaim policy
//!    `Retain` and the skip-reclaim annotation (the CSI volume can then never
//!    be deleted), delete it with a UID precondition, drop its finalizers,
//!    and wait until it is gone.
//! 3. Server-side apply the replacement.
//! 4. Nudge the claim, so the PV binder binds it again at once instead of
//!    on its next periodic sync.
//! 5. Clear the intent.
//! 6. Announce the replacement with events on the PV and its claim.
//!
//! Every step is safe to repeat, and a crash between any two leaves either
//! the intent or the finished PV: deciding again from the intent
//! ([`affinity_core::Planner`]) resumes where the protocol stopped.
//!
//! Every write first checks [`Leadership`], so an instance that lost its
//! lease stops between two steps; requests the API server throttles (429)
//! are repeated after a pause.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use affinity_core::names::{FIELD_MANAGER, RECLAIM_RETAIN, SKIP_RECLAIM_ANNOTATION};
use affinity_core::{Replacement, RetiredPv, VolumeId, encode_saved_pv};
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::events::announce_replacement;
use crate::intent::{IntentLog, IntentLogError};
use crate::leader::Leadership;

/// Annotation set on a claim after its PV was re-created; its changing value
/// makes the PV binder sync the claim at once.
pub const REBIND_ANNOTATION: &str = "linstor.csi.linbit.com/affinity-rebind";

/// How long to wait for a retired PV to disappear once its finalizers are gone.
const DELETION_TIMEOUT: Duration = Duration::from_secs(30);
const DELETION_POLL: Duration = Duration::from_millis(50);
/// Attempts of a request the API server answers with 429, and the first pause.
const THROTTLED_ATTEMPTS: u32 = 6;
const THROTTLED_PAUSE: Duration = Duration::from_millis(250);
/// When and how often to check that a nudged claim was bound again.
const REBIND_CHECK_AFTER: Duration = Duration::from_secs(2);
const REBIND_CHECKS: u32 = 3;

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
    /// The replacement was applied.
    Recreated,
    /// The intent was removed.
    IntentCleared,
}

impl ReplaceStep {
    /// Every step, in protocol order.
    pub const ALL: [ReplaceStep; 6] = [
        Self::IntentSaved,
        Self::RetainSet,
        Self::DeleteIssued,
        Self::FinalizersRemoved,
        Self::Recreated,
        Self::IntentCleared,
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
    "unknown replace step {0:?} (expected one of intent-saved, retain-set, delete-issued, finalizers-removed, recreated, intent-cleared)"
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
    /// The live PV is not the one the decision was about.
    #[error("PV {pv} changed since the decision (uid {found:?}, expected {expected:?}); deciding again")]
    Changed {
        /// Name of the PV.
        pv: String,
        /// The UID the decision saw.
        expected: Option<String>,
        /// The UID found now.
        found: Option<String>,
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
    /// This instance lost its lease: it must not write any more.
    #[error("PV {pv}: not leading any more; stopped before {step}")]
    NotLeading {
        /// Name of the PV.
        pv: String,
        /// The write that was not made.
        step: &'static str,
    },
}

/// Carries out replacements against the Kubernetes API and an intent log.
pub struct ReplaceProtocol<L> {
    client: Client,
    instance: String,
    pvs: Api<PersistentVolume>,
    intents: L,
    leadership: Leadership,
    observer: Option<Arc<dyn StepObserver>>,
}

impl<L: IntentLog> ReplaceProtocol<L> {
    /// A protocol writing through `client` and `intents`; `instance` names
    /// this controller instance in events. It writes unconditionally until
    /// [`Self::with_leadership`] says otherwise.
    pub fn new(client: Client, intents: L, instance: impl Into<String>) -> Self {
        Self {
            pvs: Api::all(client.clone()),
            client,
            instance: instance.into(),
            intents,
            leadership: Leadership::always(),
            observer: None,
        }
    }

    /// Writes only while `leadership` says this instance leads.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Reports every finished step to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn StepObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Removes the intent of a replace that finished (the "reset"
    /// operation), `live` being the PV it left. The claim is nudged and the
    /// PV marked Bound first: the replace may have stopped before it did so.
    pub async fn clear_intent(&self, volume: &VolumeId, live: &PersistentVolume) -> Result<(), ReplaceError> {
        let pv = live.metadata.name.as_deref().unwrap_or_default();
        self.ensure_leading(pv, "clearing the intent")?;
        if let Some(claim) = self.nudge_claim(live).await {
            self.restore_bound_phase(live, &claim).await;
        }
        self.intents.clear(volume).await.map_err(Box::new)?;
        info!(%pv, %volume, "saved state of a finished replace removed");
        Ok(())
    }

    fn ensure_leading(&self, pv: &str, step: &'static str) -> Result<(), ReplaceError> {
        if self.leadership.is_leading() {
            Ok(())
        } else {
            Err(ReplaceError::NotLeading {
                pv: pv.to_owned(),
                step,
            })
        }
    }

    async fn done(&self, pv: &str, step: ReplaceStep) {
        debug!(%pv, %step, "replace step done");
        if let Some(observer) = &self.observer {
            observer.step_done(pv, step).await;
        }
    }

    /// Replaces (or re-creates) the PV of `volume` as `replacement` says.
    /// Returns the PV as the API server stored it.
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
        let intent = encode_saved_pv(&replacement.pv).map_err(|source| ReplaceError::Encode {
            pv: name.clone(),
            source,
        })?;
        self.ensure_leading(&name, "saving the intent")?;
        self.intents.save(volume, &intent).await.map_err(Box::new)?;
        self.done(&name, ReplaceStep::IntentSaved).await;
        if let Some(retired) = &replacement.retire {
            self.retire(retired).await?;
        }
        self.ensure_leading(&name, "applying the replacement")?;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let replacement_patch = Patch::Apply(&replacement.pv);
        let applied = retry_throttled(|| self.pvs.patch(&name, &apply, &replacement_patch))
            .await
            .map_err(|source| kube_error(&name, "applying the replacement", source))?;
        self.done(&name, ReplaceStep::Recreated).await;
        if self.leadership.is_leading()
            && let Some(claim) = self.nudge_claim(&applied).await
        {
            self.restore_bound_phase(&applied, &claim).await;
        }
        self.ensure_leading(&name, "clearing the intent")?;
        self.intents.clear(volume).await.map_err(Box::new)?;
        self.done(&name, ReplaceStep::IntentCleared).await;
        announce_replacement(&self.client, &applied, &self.instance).await;
        info!(pv = %name, %volume, trigger = ?replacement.trigger, "PV replaced");
        Ok(applied)
    }

    /// Makes sure the live PV is gone without its volume being reclaimed.
    async fn retire(&self, retired: &RetiredPv) -> Result<(), ReplaceError> {
        let name = retired.name.as_str();
        let live = retry_throttled(|| self.pvs.get_opt(name))
            .await
            .map_err(|source| kube_error(name, "reading the live PV", source))?;
        let Some(live) = live else {
            return Ok(());
        };
        if retired.uid.is_some() && live.metadata.uid != retired.uid {
            return Err(ReplaceError::Changed {
                pv: name.to_owned(),
                expected: retired.uid.clone(),
                found: live.metadata.uid,
            });
        }
        let keep_volume = json!({
            "metadata": { "annotations": { SKIP_RECLAIM_ANNOTATION: "true" } },
            "spec": { "persistentVolumeReclaimPolicy": RECLAIM_RETAIN },
        });
        self.ensure_leading(name, "setting reclaim policy Retain")?;
        let patch = PatchParams::default();
        let keep_volume = Patch::Merge(&keep_volume);
        retry_throttled(|| self.pvs.patch(name, &patch, &keep_volume))
            .await
            .map_err(|source| kube_error(name, "setting reclaim policy Retain", source))?;
        self.done(name, ReplaceStep::RetainSet).await;
        let delete = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.ensure_leading(name, "deleting the live PV")?;
        match retry_throttled(|| self.pvs.delete(name, &delete)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(source) => return Err(kube_error(name, "deleting the live PV", source)),
        }
        self.done(name, ReplaceStep::DeleteIssued).await;
        let no_finalizers = json!({ "metadata": { "finalizers": null } });
        let no_finalizers = Patch::Merge(&no_finalizers);
        self.ensure_leading(name, "removing finalizers")?;
        match retry_throttled(|| self.pvs.patch(name, &patch, &no_finalizers)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(kube_error(name, "removing finalizers", source)),
        }
        self.done(name, ReplaceStep::FinalizersRemoved).await;
        self.wait_until_gone(name, live.metadata.uid.as_deref()).await
    }

    async fn wait_until_gone(&self, name: &str, uid: Option<&str>) -> Result<(), ReplaceError> {
        let deadline = tokio::time::Instant::now() + DELETION_TIMEOUT;
        loop {
            let current = retry_throttled(|| self.pvs.get_opt(name))
                .await
                .map_err(|source| kube_error(name, "waiting for the deletion", source))?;
            match current {
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

    /// Marks the re-created PV `Bound` when `claim` is the claim it is
    /// bound to and names it, exactly the PV binder's own condition: the PV
    /// binder (limited to 20 requests per second in kube-controller-manager
    /// by default) then has nothing left to write for it. Best effort: the
    /// binder marks it itself otherwise.
    async fn restore_bound_phase(&self, pv: &PersistentVolume, claim: &PersistentVolumeClaim) {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let claim_ref = pv.spec.as_ref().and_then(|spec| spec.claim_ref.as_ref());
        let bound_to_claim = claim_ref
            .is_some_and(|claim_ref| claim_ref.uid.is_some() && claim_ref.uid == claim.metadata.uid)
            && claim.spec.as_ref().and_then(|spec| spec.volume_name.as_deref()) == Some(name);
        let phase = pv.status.as_ref().and_then(|status| status.phase.as_deref());
        if !bound_to_claim || phase == Some("Bound") || !self.leadership.is_leading() {
            return;
        }
        let bound = json!({ "status": { "phase": "Bound" } });
        let bound = Patch::Merge(&bound);
        let params = PatchParams::default();
        if let Err(error) = retry_throttled(|| self.pvs.patch_status(name, &params, &bound)).await {
            warn!(pv = %name, %error, "could not mark the PV Bound; the PV binder will");
        }
    }

    /// Updates the claim so the PV binder binds it again at once, and
    /// returns it as updated. Best effort: without it the binder still does
    /// so on its periodic sync.
    async fn nudge_claim(&self, pv: &PersistentVolume) -> Option<PersistentVolumeClaim> {
        let claim = pv.spec.as_ref().and_then(|spec| spec.claim_ref.as_ref());
        let (Some(namespace), Some(claim_name)) = (
            claim.and_then(|c| c.namespace.clone()),
            claim.and_then(|c| c.name.clone()),
        ) else {
            return None;
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        // A new value every time: re-writing the same value triggers nothing.
        let stamp = pv
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| pv.metadata.resource_version.clone().unwrap_or_default());
        let nudged = nudge(&claims, &claim_name, &stamp).await;
        // The binder may see the nudge before the new PV and mark the claim
        // Lost; then only a later update (or its 15 s resync) binds it.
        // Check back without holding up the protocol.
        let leadership = self.leadership.clone();
        tokio::spawn(async move {
            for attempt in 1..=REBIND_CHECKS {
                tokio::time::sleep(REBIND_CHECK_AFTER).await;
                let phase = match claims.get_opt(&claim_name).await {
                    Ok(Some(claim)) => claim.status.and_then(|status| status.phase),
                    _ => return,
                };
                if phase.as_deref() == Some("Bound") || !leadership.is_leading() {
                    return;
                }
                debug!(%namespace, claim = %claim_name, attempt, ?phase, "claim not bound yet; nudging again");
                nudge(&claims, &claim_name, &format!("{stamp}-{attempt}")).await;
            }
        });
        nudged
    }
}

/// Sets the rebind annotation of claim `name` to `stamp`; returns the claim
/// as updated. Best effort.
async fn nudge(
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    stamp: &str,
) -> Option<PersistentVolumeClaim> {
    let nudge = json!({ "metadata": { "annotations": { REBIND_ANNOTATION: stamp } } });
    let patch = PatchParams::default();
    let nudge = Patch::Merge(&nudge);
    match retry_throttled(|| claims.patch(name, &patch, &nudge)).await {
        Ok(claim) => Some(claim),
        Err(error) => {
            warn!(claim = %name, %error, "could not nudge the claim");
            None
        }
    }
}

/// Runs `request`, repeating it with growing pauses while the API server
/// answers 429 (the client's throttle also holds back for its Retry-After).
async fn retry_throttled<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = THROTTLED_PAUSE;
    let mut attempt = 1;
    loop {
        match request().await {
            Err(kube::Error::Api(status)) if status.code == 429 && attempt < THROTTLED_ATTEMPTS => {
                debug!(attempt, "request throttled by the API server; repeating");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            answer => return answer,
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
