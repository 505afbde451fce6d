//! The controller loop: every reconcile interval (and soon after a PV
//! changes) gather state, decide with pure functions, then act.
//!
//! - gather: the PV and StorageClass caches (kept by watch) and LINSTOR,
//!   read with three requests per pass whatever the number of volumes;
//! - decide: [`affinity_core::Planner`], whose decisions become the
//!   pass's operations and warnings;
//! - act, only while leading: warning events, then the operations with at
//!   most `workers` in parallel, the pass bounded by `timeout`. Each
//!   operation reads its PV fresh and decides again before writing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use affinity_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::{
    Action, DecisionError, DecisionSettings, LinstorSnapshot, Plan, Planner, PolicyOrigin, PvRecord, PvView,
    ReplaceNeeded, ReplaceTrigger, ResourceDefinitionSource, VolumeDecision, VolumeId, claim_of,
    class_parameters, decode_saved_pv, may_recreate, may_recreate_unread, saved_pv_json,
};
use futures::StreamExt;
use kube::api::Api;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::class_cache::{ClassParameters, StorageClassCache};
use crate::events::{CLAIM_GONE_REASON, EventReporter};
use crate::http::Readiness;
use crate::leader::Leadership;
use crate::linstor_state::{self, FetchError};
use crate::lock;
use crate::metrics::{Metrics, OperationKind};
use crate::permissions::Paths;
use crate::pv_cache::PvCache;
use crate::reconcile::{Operation, PassWork, PvWarning, decide_again, pass_work};
use crate::replace::{ReplaceError, ReplaceProtocol, StepObserver};
use crate::watch::run_watch;

/// How long PV events are collected before a pass decides for them.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(100);
/// PV events within this time after the controller's own write to the same
/// resource definition are its own echo, not news.
const OWN_WRITE_ECHO: Duration = Duration::from_secs(10);

/// Settings of the loop (the reference's flags).
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Time between full passes (`--reconcile-rate`).
    pub reconcile_rate: Duration,
    /// Bound of one pass's operations (`--timeout`).
    pub timeout: Duration,
    /// PVs younger than this are left alone (the reference uses `--timeout`).
    pub grace_period: Duration,
    /// Operations run in parallel (`--workers`).
    pub workers: usize,
    /// LINSTOR property namespace of the topology labels; guessed from the
    /// LINSTOR nodes at the first successful read when `None`.
    pub property_namespace: Option<String>,
    /// Name of this instance in events.
    pub instance: String,
    /// Name of the controller reporting the events; usually
    /// [`affinity_core::names::EVENT_REPORTING_CONTROLLER`].
    pub reporting_controller: String,
    /// Annotation whose changing value nudges the claim of a re-created PV;
    /// usually [`crate::replace::DEFAULT_REBIND_ANNOTATION`].
    pub rebind_annotation: String,
    /// The optional paths RBAC leaves on ([`crate::permissions::probe`]).
    pub paths: Paths,
}

/// Everything the controller talks to and reports through.
pub struct ControllerParts {
    /// Kubernetes client.
    pub kube: kube::Client,
    /// LINSTOR client.
    pub linstor: linstor_api::Client,
    /// When this instance may write.
    pub leadership: Leadership,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Readiness to set once the PV cache synced.
    pub readiness: Readiness,
    /// Told about every replace step (tracing, crash tests).
    pub observer: Option<Arc<dyn StepObserver>>,
    /// Called after every pass, for example to return the memory the pass
    /// freed to the system.
    pub after_pass: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Resource definitions to follow closely while a node drains
    /// ([`crate::drain::DrainReconciler::focus`]): each update runs a pass
    /// over just their volumes, reading just them from LINSTOR.
    pub drain_focus: Option<watch::Receiver<BTreeSet<String>>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// PVs decided for.
    pub decided: usize,
    /// Operations started.
    pub operations: usize,
    /// Operations that failed or were abandoned.
    pub failed: usize,
}

/// Why a pass stopped early. Nothing was written after the cause.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// LINSTOR could not be read: nothing is decided on partial state.
    #[error(transparent)]
    Linstor(#[from] FetchError),
    /// A StorageClass could not be read (when they cannot be watched).
    #[error("reading StorageClass {class}: {source}")]
    StorageClass {
        /// The class.
        class: String,
        /// The API server's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// LINSTOR did not answer within `--timeout`.
    #[error("LINSTOR did not answer within {0:?}")]
    LinstorTimeout(Duration),
    /// The operations did not finish within `--timeout`.
    #[error("operations did not finish within {0:?}; the unfinished ones resume next pass")]
    Timeout(Duration),
    /// Leadership was lost during the pass.
    #[error("leadership lost during the pass; unfinished operations stopped")]
    LostLeadership,
}

/// Which PVs a pass decides for.
#[derive(Debug)]
enum Scope {
    /// Every cached PV and every volume with saved state.
    All,
    /// The volumes of these resource definitions.
    ResourceDefinitions(BTreeSet<String>),
    /// The volumes of these resource definitions, read alone from LINSTOR
    /// (a node drain's focus).
    Focus(BTreeSet<String>),
}

/// The affinity controller.
pub struct Controller {
    settings: ControllerSettings,
    parts: ControllerParts,
    pvs: Arc<PvCache>,
    classes: Arc<StorageClassCache>,
    protocol: ReplaceProtocol<linstor_api::Client>,
    events: EventReporter,
    property_namespace: Mutex<Option<String>>,
    /// Warnings reported and still current, as (PV, message), so a warning
    /// is not repeated every pass. The message is part of the key because
    /// volumes whose PV is gone share the empty PV name.
    warned: Mutex<HashSet<(String, String)>>,
    /// When this instance last wrote to a resource definition's PVs.
    own_writes: Mutex<HashMap<String, Instant>>,
}

impl Controller {
    /// A controller; nothing runs before [`Self::run`].
    pub fn new(settings: ControllerSettings, parts: ControllerParts) -> Self {
        let mut protocol =
            ReplaceProtocol::new(parts.kube.clone(), parts.linstor.clone(), &settings.instance)
                .with_leadership(parts.leadership.clone())
                .with_paths(settings.paths)
                .with_reporting_controller(&settings.reporting_controller)
                .with_rebind_annotation(&settings.rebind_annotation);
        if let Some(observer) = &parts.observer {
            protocol = protocol.with_observer(Arc::clone(observer));
        }
        Self {
            events: EventReporter::new(parts.kube.clone(), &settings.instance)
                .with_apis(settings.paths.events)
                .with_reporting_controller(&settings.reporting_controller),
            property_namespace: Mutex::default(),
            settings,
            parts,
            pvs: Arc::new(PvCache::new()),
            classes: Arc::new(StorageClassCache::new()),
            protocol,
            warned: Mutex::default(),
            own_writes: Mutex::default(),
        }
    }

    /// The PV cache (for example to report its size).
    pub fn pv_cache(&self) -> &Arc<PvCache> {
        &self.pvs
    }

    /// The StorageClass cache; it stays empty when StorageClasses may not be
    /// watched ([`Paths::watch_storage_classes`]).
    pub fn class_cache(&self) -> &Arc<StorageClassCache> {
        &self.classes
    }

    /// Runs until `shutdown` is cancelled. Operations in flight at shutdown
    /// are abandoned between two requests; the intent log lets the next
    /// start finish them.
    pub async fn run(&self, shutdown: CancellationToken) {
        let watches = shutdown.child_token();
        let pv_watch = run_watch(
            Api::<PersistentVolume>::all(self.parts.kube.clone()),
            &*self.pvs,
            watches.clone(),
        );
        let class_watch = async {
            if self.settings.paths.watch_storage_classes {
                let classes = Api::<StorageClass>::all(self.parts.kube.clone());
                run_watch(classes, &*self.classes, watches.clone()).await;
            } else {
                watches.cancelled().await;
            }
        };
        tokio::select! {
            () = pv_watch => {}
            () = class_watch => {}
            () = self.reconcile_loop(&shutdown) => {}
        }
        watches.cancel();
        self.protocol.stop_rechecks().await;
    }

    async fn reconcile_loop(&self, shutdown: &CancellationToken) {
        let synced = async {
            self.pvs.wait_synced().await;
            if self.settings.paths.watch_storage_classes {
                self.classes.wait_synced().await;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = synced => {}
        }
        self.parts.readiness.set_ready(true);
        info!(pvs = self.pvs.len(), "PV cache synced");
        let mut ticks = tokio::time::interval(self.settings.reconcile_rate);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut focus = self.parts.drain_focus.clone();
        loop {
            let scope = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => Scope::All,
                Some(names) = focus_update(&mut focus) => {
                    if names.is_empty() {
                        continue;
                    }
                    Scope::Focus(names)
                }
                () = self.pvs.changed() => {
                    tokio::time::sleep(EVENT_DEBOUNCE).await;
                    match self.changed_resource_definitions() {
                        Some(names) => Scope::ResourceDefinitions(names),
                        None => continue,
                    }
                }
            };
            if !self.parts.leadership.is_leading() {
                debug!("not leading: no pass");
                self.parts.metrics.set_leading(false);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.parts.leadership.wait_until_leading() => {}
                }
                self.parts.metrics.set_leading(true);
                ticks.reset_immediately();
                continue;
            }
            self.parts.metrics.set_leading(true);
            let started = Instant::now();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => {
                    info!("shutting down: unfinished operations resume at the next start");
                    return;
                }
                outcome = self.pass(&scope) => outcome,
            };
            let full = matches!(scope, Scope::All);
            if full {
                self.parts
                    .metrics
                    .record_reconcile(started.elapsed(), outcome.is_ok());
            }
            match outcome {
                Ok(report) => debug!(?report, full, elapsed = ?started.elapsed(), "pass done"),
                Err(error) => error!(%error, full, "pass failed"),
            }
            if let Some(after_pass) = &self.parts.after_pass {
                after_pass();
            }
        }
    }

    /// Resource definitions of changed PVs, less the echoes of this
    /// instance's own writes; `None` when nothing is left.
    fn changed_resource_definitions(&self) -> Option<BTreeSet<String>> {
        let mut names = self.pvs.take_changed();
        let now = Instant::now();
        let mut own = lock(&self.own_writes);
        own.retain(|_, at| now.duration_since(*at) < OWN_WRITE_ECHO);
        names.retain(|name| !own.contains_key(name));
        (!names.is_empty()).then_some(names)
    }

    /// One pass: gather, decide, act.
    async fn pass(&self, scope: &Scope) -> Result<PassReport, PassError> {
        // Gather.
        let focus: Vec<String> = match scope {
            Scope::Focus(names) => names.iter().cloned().collect(),
            _ => Vec::new(),
        };
        let fetch = tokio::time::timeout(
            self.settings.timeout,
            linstor_state::fetch_resource_definitions(&self.parts.linstor, &focus),
        );
        let linstor = match fetch.await {
            Ok(Ok(state)) => state,
            Ok(Err(error)) => {
                self.parts.metrics.record_linstor_error();
                return Err(error.into());
            }
            Err(_) => {
                self.parts.metrics.record_linstor_error();
                return Err(PassError::LinstorTimeout(self.settings.timeout));
            }
        };
        for warning in &linstor.warnings {
            warn!(%warning, "LINSTOR state");
        }
        self.parts.metrics.record_linstor_bytes(linstor.received_bytes);
        let snapshot = linstor.snapshot;
        let settings = DecisionSettings::at(
            self.property_namespace(&snapshot),
            self.settings.grace_period,
            SystemTime::now(),
        );
        let records: Vec<(Option<&str>, Vec<Arc<PvRecord>>)> = match scope {
            Scope::All => vec![(None, self.pvs.pvs())],
            Scope::ResourceDefinitions(names) | Scope::Focus(names) => names
                .iter()
                .map(|name| (Some(name.as_str()), self.pvs.of_resource_definition(name)))
                .collect(),
        };
        let classes = self
            .storage_classes(records.iter().flat_map(|(_, records)| records), scope, &snapshot)
            .await?;
        self.parts.metrics.set_cached_pvs(self.pvs.len() as u64);

        // Decide, on the cached records; volumes with saved replace state
        // are decided on their whole PV, read now.
        let mut planner = Planner::new(&snapshot, &*classes, &settings);
        let mut plan: Plan<ReplaceNeeded> = Plan::default();
        for (name, records) in &records {
            match name {
                None => plan = planner.plan(records.iter().map(Arc::as_ref)),
                Some(name) => {
                    let records: Vec<&PvRecord> = records.iter().map(Arc::as_ref).collect();
                    plan.decisions
                        .extend(planner.decide_resource_definition(name, &records));
                }
            }
        }
        drop(planner);
        self.decide_on_whole_pvs(&mut plan.decisions, &snapshot, &classes, &settings)
            .await;
        let decided = records.iter().map(|(_, records)| records.len()).sum();
        let work = pass_work(
            &plan.decisions,
            plan.invalid_handles
                .iter()
                .map(|invalid| (invalid.pv.as_str(), invalid.to_string())),
        );
        if matches!(scope, Scope::All) {
            self.parts.metrics.set_out_of_sync(work.out_of_sync);
            self.parts
                .metrics
                .set_held(work.held_at_retain, work.intents_held);
        }

        // Act.
        self.report_warnings(&work, matches!(scope, Scope::All)).await;
        let operations = work.operations.len();
        let failed = self.run_operations(work, &snapshot, &classes, &settings).await?;
        Ok(PassReport {
            decided,
            operations,
            failed,
        })
    }

    /// Decides again, on the whole PV as read now, each volume a record
    /// could not decide (it has saved replace state, which is checked
    /// against the whole live PV). A PV that cannot be read is left to the
    /// next pass.
    async fn decide_on_whole_pvs(
        &self,
        decisions: &mut Vec<VolumeDecision<ReplaceNeeded>>,
        snapshot: &LinstorSnapshot,
        classes: &ClassParameters,
        settings: &DecisionSettings,
    ) {
        let api: Api<PersistentVolume> = Api::all(self.parts.kube.clone());
        let mut unread = BTreeSet::new();
        for decision in decisions.iter_mut() {
            let Err(DecisionError::LivePvNeeded { volume, pv }) = &decision.outcome else {
                continue;
            };
            let (volume, pv) = (volume.clone(), pv.clone());
            match api.get_opt(&pv).await {
                Ok(live) => {
                    let outcome = decide_again(snapshot, classes, settings, &volume, live.as_ref());
                    match outcome {
                        Some(outcome) => {
                            decision.outcome = outcome.map(|action| action.map_replace(ReplaceNeeded::from));
                        }
                        None => {
                            unread.insert(volume);
                        }
                    }
                }
                Err(error) => {
                    self.parts.metrics.record_kubernetes_error();
                    warn!(%pv, %error, "cannot read the PV to check its saved replace state; next pass retries");
                    unread.insert(volume);
                }
            }
        }
        decisions.retain(|decision| !unread.contains(&decision.volume));
    }

    /// The StorageClass parameters a pass decides with: the watched ones, or
    /// when StorageClasses cannot be watched, each class the policies of the
    /// pass's PVs (and of the saved PVs of volumes whose PV may be gone)
    /// come from, read once.
    async fn storage_classes<'r>(
        &self,
        records: impl Iterator<Item = &'r Arc<PvRecord>>,
        scope: &Scope,
        snapshot: &LinstorSnapshot,
    ) -> Result<Arc<ClassParameters>, PassError> {
        if self.settings.paths.watch_storage_classes {
            return Ok(self.classes.snapshot());
        }
        let saved: Vec<PersistentVolume> = match scope {
            Scope::All => saved_pvs(snapshot),
            Scope::ResourceDefinitions(_) | Scope::Focus(_) => Vec::new(),
        };
        let class_of = |origin: PolicyOrigin<'_>| match origin {
            PolicyOrigin::StorageClass { name } => name.map(str::to_owned),
            PolicyOrigin::OverrideAnnotation { .. } | PolicyOrigin::VolumeContext { .. } => None,
        };
        let names: BTreeSet<String> = records
            .filter_map(|record| class_of(record.policy_origin()))
            .chain(saved.iter().filter_map(|pv| class_of(pv.policy_origin())))
            .collect();
        let api: Api<StorageClass> = Api::all(self.parts.kube.clone());
        let mut classes = ClassParameters::new();
        for name in &names {
            let class = api.get_opt(name).await.map_err(|source| {
                self.parts.metrics.record_kubernetes_error();
                PassError::StorageClass {
                    class: name.to_owned(),
                    source: Box::new(source),
                }
            })?;
            if let Some((name, parameters)) = class.as_ref().and_then(class_parameters) {
                classes.insert(name, parameters);
            }
        }
        Ok(Arc::new(classes))
    }

    fn property_namespace(&self, snapshot: &LinstorSnapshot) -> String {
        let mut namespace = lock(&self.property_namespace);
        namespace
            .get_or_insert_with(|| {
                linstor_state::property_namespace(
                    self.settings.property_namespace.as_deref(),
                    snapshot.nodes().map(|(_, properties)| properties),
                )
            })
            .clone()
    }

    /// Warning events for new or changed warnings. A full pass also forgets
    /// PVs that are fine again, so a recurring problem is reported again.
    async fn report_warnings(&self, work: &PassWork, full: bool) {
        if full {
            let current: BTreeSet<(&str, &str)> = work
                .warnings
                .iter()
                .map(|w| (w.pv.as_str(), w.message.as_str()))
                .collect();
            lock(&self.warned).retain(|(pv, message)| current.contains(&(pv.as_str(), message.as_str())));
        }
        for warning in &work.warnings {
            self.warn_once(warning).await;
        }
    }

    /// Logs `warning` and posts it as an event on its PV, unless it was
    /// reported already and is still current.
    async fn warn_once(&self, warning: &PvWarning) {
        let fresh = lock(&self.warned).insert((warning.pv.clone(), warning.message.clone()));
        if !fresh {
            return;
        }
        warn!(pv = %warning.pv, reason = warning.reason, message = %warning.message, "PV left unchanged");
        // Unreadable saved state of a volume whose PV is gone names no
        // PV: there is nothing to post the event about.
        if self.parts.leadership.is_leading() && !warning.pv.is_empty() {
            let uid = self
                .pvs
                .get(&warning.pv)
                .and_then(|pv| pv.uid().map(str::to_owned));
            self.events
                .warn_about_pv(&warning.pv, uid.as_deref(), warning.reason, &warning.message)
                .await;
        }
    }

    /// Runs the operations, `workers` at a time, within `timeout`; stops at
    /// once when leadership is lost. Returns how many failed.
    async fn run_operations(
        &self,
        work: PassWork,
        snapshot: &LinstorSnapshot,
        classes: &ClassParameters,
        settings: &DecisionSettings,
    ) -> Result<usize, PassError> {
        if work.operations.is_empty() {
            return Ok(0);
        }
        let run = futures::stream::iter(work.operations)
            .map(|operation| self.run_operation(operation, snapshot, classes, settings))
            .buffer_unordered(self.settings.workers.max(1))
            .fold(
                0,
                |failed, succeeded| async move { failed + usize::from(!succeeded) },
            );
        tokio::select! {
            failed = tokio::time::timeout(self.settings.timeout, run) => {
                failed.map_err(|_| PassError::Timeout(self.settings.timeout))
            }
            () = self.parts.leadership.lost() => Err(PassError::LostLeadership),
        }
    }

    /// Reads the PV fresh, decides again and writes what that decision
    /// says. Returns whether it succeeded.
    async fn run_operation(
        &self,
        operation: Operation,
        snapshot: &LinstorSnapshot,
        classes: &ClassParameters,
        settings: &DecisionSettings,
    ) -> bool {
        let started = Instant::now();
        let pvs: Api<PersistentVolume> = Api::all(self.parts.kube.clone());
        let live = match pvs.get_opt(&operation.pv).await {
            Ok(live) => live,
            Err(error) => {
                self.parts.metrics.record_kubernetes_error();
                warn!(pv = %operation.pv, %error, "cannot read the PV; next pass retries");
                self.record(operation.kind, started, false);
                return false;
            }
        };
        let decision = decide_again(snapshot, classes, settings, &operation.volume, live.as_ref());
        lock(&self.own_writes).insert(operation.volume.resource_definition.clone(), Instant::now());
        let action = match decision {
            Some(Ok(action)) => action,
            Some(Err(error)) => {
                self.warn_once(&PvWarning::for_error(&operation.pv, &error)).await;
                self.record(operation.kind, started, false);
                return false;
            }
            None => {
                debug!(pv = %operation.pv, "nothing to do any more");
                return true;
            }
        };
        let (kind, result) = match (action, live.as_ref()) {
            (Action::Replace(replacement), _) => {
                if replacement.trigger == ReplaceTrigger::RecreateFromSavedState
                    && let Err(unowned) = self.check_recreate(&operation, &replacement.pv).await
                {
                    self.warn_once(&unowned).await;
                    self.record(OperationKind::ReplacePv, started, false);
                    return false;
                }
                (
                    OperationKind::ReplacePv,
                    self.protocol.run(&operation.volume, &replacement).await.map(drop),
                )
            }
            (Action::ClearSavedState, Some(live)) => (
                OperationKind::ResetOperation,
                self.protocol.clear_intent(&operation.volume, live).await,
            ),
            (Action::RestoreReclaimPolicy { .. }, Some(live)) => {
                let result = self.protocol.restore_reclaim_policy(live).await;
                if let Ok(Some(problem)) = &result {
                    self.warn_once(&PvWarning {
                        pv: operation.pv.clone(),
                        reason: CLAIM_GONE_REASON,
                        message: format!(
                            "volume {}: PV kept at reclaim policy Retain: {problem}",
                            operation.volume
                        ),
                    })
                    .await;
                }
                (OperationKind::RestoreReclaimPolicy, result.map(drop))
            }
            (other, _) => {
                debug!(pv = %operation.pv, decision = ?other, "nothing to do any more");
                return true;
            }
        };
        let succeeded = match result {
            Ok(()) => true,
            Err(error) => {
                match &error {
                    ReplaceError::Intent(_) => self.parts.metrics.record_linstor_error(),
                    ReplaceError::Kubernetes { .. } => self.parts.metrics.record_kubernetes_error(),
                    _ => {}
                }
                warn!(pv = %operation.pv, volume = %operation.volume, %error, "operation failed; next pass resumes it");
                false
            }
        };
        self.record(kind, started, succeeded);
        succeeded
    }

    /// Reads the claim `saved` names and checks that it still owns the PV,
    /// which may then be created again; otherwise the warning to report.
    async fn check_recreate(&self, operation: &Operation, saved: &PersistentVolume) -> Result<(), PvWarning> {
        if !self.settings.paths.claims {
            return may_recreate_unread(&operation.volume, saved)
                .map_err(|error| PvWarning::for_error(&operation.pv, &error));
        }
        let claim = match claim_of(saved) {
            None => None,
            Some((namespace, name)) => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.parts.kube.clone(), namespace);
                match claims.get_opt(name).await {
                    Ok(claim) => claim,
                    Err(error) => {
                        self.parts.metrics.record_kubernetes_error();
                        return Err(PvWarning {
                            pv: operation.pv.clone(),
                            reason: crate::events::WARNING_REASON,
                            message: format!(
                                "volume {}: cannot read claim {namespace}/{name} of the saved PV: {error}",
                                operation.volume
                            ),
                        });
                    }
                }
            }
        };
        may_recreate(&operation.volume, saved, claim.as_ref())
            .map_err(|error| PvWarning::for_error(&operation.pv, &error))
    }

    fn record(&self, kind: OperationKind, started: Instant, succeeded: bool) {
        self.parts
            .metrics
            .record_operation(kind, started.elapsed(), succeeded);
    }
}

/// The next focus of a node drain; never ends when there is none.
async fn focus_update(focus: &mut Option<watch::Receiver<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    if let Some(receiver) = focus
        && receiver.changed().await.is_ok()
    {
        return Some(receiver.borrow_and_update().clone());
    }
    std::future::pending().await
}

/// The saved PVs (replace intents) LINSTOR holds, those that decode.
fn saved_pvs(snapshot: &LinstorSnapshot) -> Vec<PersistentVolume> {
    snapshot
        .with_saved_state()
        .flat_map(|definition| {
            definition.volume_definitions.iter().filter_map(|volume| {
                let json = saved_pv_json(&volume.properties)?;
                let id = VolumeId::new(&definition.name, volume.volume_number);
                decode_saved_pv(json, &id).ok()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use affinity_core::k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolumeSpec};
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use affinity_core::names::SAVED_PV_PROPERTY;
    use affinity_core::{Properties, ResourceDefinitionState, VolumeDefinitionState, encode_saved_pv};

    use super::*;

    #[test]
    fn saved_pvs_name_their_storage_class() {
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some("local".to_owned()),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".to_owned(),
                    volume_handle: "pvc-1".to_owned(),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        };
        let saved = encode_saved_pv(&pv).unwrap();
        let mut snapshot = LinstorSnapshot::new();
        snapshot.insert_resource_definition(ResourceDefinitionState {
            name: "pvc-1".to_owned(),
            properties: Properties::new(),
            volume_definitions: vec![
                VolumeDefinitionState {
                    volume_number: 0,
                    properties: Properties::from_iter([(SAVED_PV_PROPERTY.to_owned(), saved)]),
                },
                VolumeDefinitionState {
                    volume_number: 1,
                    properties: Properties::from_iter([(
                        SAVED_PV_PROPERTY.to_owned(),
                        "{not json".to_owned(),
                    )]),
                },
            ],
        });
        let saved = saved_pvs(&snapshot);
        assert_eq!(saved.len(), 1, "the unreadable one is left out");
        assert_eq!(
            saved[0]
                .spec
                .as_ref()
                .and_then(|spec| spec.storage_class_name.as_deref()),
            Some("local")
        );
    }
}
