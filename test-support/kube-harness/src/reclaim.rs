//! An emulation of the reclaim the CSI external-provisioner performs for the PVs it provisioned.
//!
//! No external-provisioner runs beside the test cluster, and the PV binder of kube-controller-manager
//! leaves a `Released` PV of a CSI driver with reclaim policy `Delete` alone: it waits for the
//! provisioner. A [`ReclaimEmulator`] plays that part for one test's PVs, so a test can prove that
//! nothing it did (or a controller it runs did) would have let the real provisioner delete a volume.
//!
//! It acts on the PVs carrying the test's [`TEST_LABEL`] whose CSI driver is [`CSI_DRIVER`] and
//! whose [`PROVISIONED_BY_ANNOTATION`] names that driver, as the provisioner does:
//!
//! - A PV with reclaim policy `Delete` and without [`SKIP_RECLAIM_ANNOTATION`]` = "true"` is
//!   reclaimed when its phase is `Released` or `Failed`, or when it is being deleted while it
//!   carries [`PROVISIONER_FINALIZER`]: the volume is deleted first (the LINSTOR resource definition
//!   named by the volume handle, `RD` or `RD/N`, through a [`DeleteVolume`] callback), then a
//!   `Released` or `Failed` PV is deleted, and the finalizer is removed.
//! - A PV being deleted that is not reclaimed (`Retain`, or the skip-reclaim annotation) only loses
//!   [`PROVISIONER_FINALIZER`].
//!
//! Every reclaim is recorded as a [`Reclaim`]; [`ReclaimEmulator::assert_nothing_reclaimed`]
//! fails the test when there is one.
//!
//! ```no_run
//! # async fn example(env: kube_harness::TestEnv, linstor_url: &str) {
//! use kube_harness::{ReclaimEmulator, linstor_volume_deleter};
//!
//! let reclaims = ReclaimEmulator::start(&env, linstor_volume_deleter(linstor_url)).await;
//! // ... the test ...
//! reclaims.finish().await; // asserts that nothing was reclaimed, then stops
//! env.cleanup().await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::env::{TestEnv, pv_phase};
use crate::objects::{CSI_DRIVER, TEST_LABEL};

/// Annotation naming the provisioner of a dynamically provisioned PV; the external-provisioner only
/// reclaims PVs on which it names its driver.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";

/// Finalizer the external-provisioner puts on the PVs it provisioned, so that it sees their
/// deletion and can delete the volume first.
pub const PROVISIONER_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// Annotation with which LINSTOR CSI keeps the volume of a PV when the PV goes away; it applies
/// when its value is `"true"`.
pub const SKIP_RECLAIM_ANNOTATION: &str = "linstor.csi.linbit.com/skip-reclaim";

/// Reclaim policy under which the provisioner deletes the volume.
const RECLAIM_DELETE: &str = "Delete";

/// How long one deletion of a volume may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often PVs whose handling failed are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// How long [`ReclaimEmulator::start`] waits for the first list of the PVs.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`ReclaimEmulator::settle`] waits for the emulator to go through the current PVs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Deletes the volume (the LINSTOR resource definition) of the given name, as LINSTOR CSI's
/// `DeleteVolume` does: `Ok` once it is gone, also when it did not exist.
pub type DeleteVolume =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Why a PV was reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimReason {
    /// Phase `Released`, reclaim policy `Delete`.
    Released,
    /// Phase `Failed`, reclaim policy `Delete`.
    Failed,
    /// Being deleted with reclaim policy `Delete` while carrying [`PROVISIONER_FINALIZER`].
    Deleted,
}

impl fmt::Display for ReclaimReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReclaimReason::Released => "Released with Delete",
            ReclaimReason::Failed => "Failed with Delete",
            ReclaimReason::Deleted => "deleted with Delete and the provisioner finalizer",
        })
    }
}

/// One reclaim the emulator made: the volume of a PV was deleted (or its deletion attempted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    /// The PV's name.
    pub pv: String,
    /// The PV's UID.
    pub pv_uid: String,
    /// The LINSTOR resource definition deleted, from the PV's volume handle.
    pub resource_definition: String,
    /// Why the PV was reclaimed.
    pub reason: ReclaimReason,
    /// Why deleting the resource definition failed the last time; `None` once it was deleted.
    pub error: Option<String>,
}

impl fmt::Display for Reclaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resource definition {} of PV {} (uid {}): {}",
            self.resource_definition, self.pv, self.pv_uid, self.reason
        )?;
        match &self.error {
            Some(error) => write!(f, " (deleting it failed: {error})"),
            None => Ok(()),
        }
    }
}

/// What the provisioner does with a PV in its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Nothing: not a PV of the driver, or nothing to reclaim.
    None,
    /// Delete the volume `resource_definition`, then the PV (unless it is being deleted), then
    /// remove the finalizer.
    Reclaim {
        reason: ReclaimReason,
        resource_definition: String,
    },
    /// Being deleted and not reclaimed: only remove the finalizer.
    RemoveFinalizer,
}

/// The resource definition a volume handle (`RD` or `RD/N`) names.
fn resource_definition_of(volume_handle: &str) -> &str {
    volume_handle.split('/').next().unwrap_or(volume_handle)
}

fn has_provisioner_finalizer(pv: &PersistentVolume) -> bool {
    pv.metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|f| f == PROVISIONER_FINALIZER))
}

/// What the external-provisioner of [`CSI_DRIVER`] does with `pv`.
fn action(pv: &PersistentVolume) -> Action {
    let Some(csi) = pv.spec.as_ref().and_then(|spec| spec.csi.as_ref()) else {
        return Action::None;
    };
    let annotations = pv.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    if csi.driver != CSI_DRIVER || annotation(PROVISIONED_BY_ANNOTATION) != Some(CSI_DRIVER) {
        return Action::None;
    }
    let deleting = pv.metadata.deletion_timestamp.is_some();
    let finalizer = has_provisioner_finalizer(pv);
    let policy = pv
        .spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref());
    let reclaimable = policy == Some(RECLAIM_DELETE) && annotation(SKIP_RECLAIM_ANNOTATION) != Some("true");
    let reason = if deleting {
        finalizer.then_some(ReclaimReason::Deleted)
    } else {
        match pv_phase(pv) {
            Some("Released") => Some(ReclaimReason::Released),
            Some("Failed") => Some(ReclaimReason::Failed),
            _ => None,
        }
    };
    match reason {
        Some(reason) if reclaimable => Action::Reclaim {
            reason,
            resource_definition: resource_definition_of(&csi.volume_handle).to_owned(),
        },
        _ if deleting && finalizer => Action::RemoveFinalizer,
        _ => Action::None,
    }
}

/// A [`DeleteVolume`] sending `DELETE /v1/resource-definitions/<name>` to the LINSTOR controller at
/// `base_url` (`http://HOST:PORT`, as the simulator's `http_url` gives it). A missing resource
/// definition (404) counts as deleted.
pub fn linstor_volume_deleter(base_url: &str) -> DeleteVolume {
    let authority = base_url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not a plain http:// URL: {base_url:?}"))
        .trim_end_matches('/')
        .to_owned();
    Arc::new(move |name: String| {
        let authority = authority.clone();
        Box::pin(async move {
            match tokio::time::timeout(DELETE_TIMEOUT, delete_resource_definition(&authority, &name)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer from {authority} within {DELETE_TIMEOUT:?}")),
            }
        })
    })
}

/// One HTTP/1.1 `DELETE` of resource definition `name` at `authority`; only the status line of
/// the answer is read.
async fn delete_resource_definition(authority: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!("{name:?} is no LINSTOR resource definition name"));
    }
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let request = format!(
        "DELETE /v1/resource-definitions/{name} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {authority}: {e}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|e| format!("reading from {authority}: {e}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    match status_line.split(' ').nth(1) {
        Some(code) if code.starts_with('2') || code == "404" => Ok(()),
        _ => Err(format!(
            "DELETE /v1/resource-definitions/{name} at {authority}: {status_line:?}"
        )),
    }
}

/// The reclaims made so far, shared by the emulator's task and its handle.
type Records = Arc<Mutex<Vec<Reclaim>>>;

fn lock(records: &Records) -> MutexGuard<'_, Vec<Reclaim>> {
    records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Acts as the CSI external-provisioner of [`CSI_DRIVER`] does for reclaim, on the PVs of one test:
/// a PV of the driver (its [`PROVISIONED_BY_ANNOTATION`] naming it) with reclaim policy `Delete`
/// and without [`SKIP_RECLAIM_ANNOTATION`]` = "true"` has its volume deleted when it is `Released`
/// or `Failed` (then the PV is deleted) or when it is deleted while carrying
/// [`PROVISIONER_FINALIZER`]; any other PV being deleted only loses that finalizer. Every volume
/// deleted is recorded as a [`Reclaim`].
///
/// It watches the PVs carrying the test's [`TEST_LABEL`] in a task of the runtime that started it;
/// the task ends with [`ReclaimEmulator::stop`] or when the emulator is dropped. Stop it before
/// [`TestEnv::cleanup`], which deletes the test's claims and would release the PVs.
pub struct ReclaimEmulator {
    prefix: String,
    records: Records,
    settle: mpsc::UnboundedSender<oneshot::Sender<Result<(), String>>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for ReclaimEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReclaimEmulator")
            .field("prefix", &self.prefix)
            .field("reclaimed", &*lock(&self.records))
            .finish_non_exhaustive()
    }
}

impl ReclaimEmulator {
    /// Starts emulating the provisioner for `env`'s PVs, deleting volumes through `delete_volume`,
    /// and returns once it has listed the PVs that exist (and handled them).
    pub async fn start(env: &TestEnv, delete_volume: DeleteVolume) -> ReclaimEmulator {
        let prefix = env.prefix().to_owned();
        let records = Records::default();
        let (settle, settle_requests) = mpsc::unbounded_channel();
        let (ready, is_ready) = oneshot::channel();
        let worker = Worker {
            pvs: env.pvs(),
            selector: format!("{TEST_LABEL}={prefix}"),
            delete_volume,
            records: Arc::clone(&records),
            volumes_deleted: BTreeSet::new(),
            retry: BTreeSet::new(),
        };
        let task = tokio::spawn(worker.run(ready, settle_requests));
        let emulator = ReclaimEmulator {
            prefix,
            records,
            settle,
            task: Some(task),
        };
        match tokio::time::timeout(READY_TIMEOUT, is_ready).await {
            Ok(Ok(())) => emulator,
            Ok(Err(_)) => panic!(
                "{}: the reclaim emulator stopped before it was ready",
                emulator.prefix
            ),
            Err(_) => panic!(
                "{}: the reclaim emulator could not list the PVs within {READY_TIMEOUT:?}{}",
                emulator.prefix,
                env.cluster().diagnostics()
            ),
        }
    }

    /// The reclaims made so far, in order.
    pub fn reclaimed(&self) -> Vec<Reclaim> {
        lock(&self.records).clone()
    }

    /// Returns once the emulator has handled every PV of the test as it is now, reclaiming what the
    /// provisioner would reclaim, so that a change a moment ago is not missed by
    /// [`ReclaimEmulator::reclaimed`].
    pub async fn settle(&self) {
        let (done, is_done) = oneshot::channel();
        if self.settle.send(done).is_err() {
            panic!("{}: the reclaim emulator is not running", self.prefix);
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, is_done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("{}: reclaim emulator: {error}", self.prefix),
            Ok(Err(_)) => panic!("{}: the reclaim emulator stopped", self.prefix),
            Err(_) => panic!(
                "{}: the reclaim emulator did not go through the PVs within {SETTLE_TIMEOUT:?}",
                self.prefix
            ),
        }
    }

    /// Settles ([`ReclaimEmulator::settle`]) and panics, listing them, if any volume was
    /// reclaimed.
    pub async fn assert_nothing_reclaimed(&self) {
        self.settle().await;
        let reclaimed = self.reclaimed();
        if !reclaimed.is_empty() {
            let list: Vec<String> = reclaimed.iter().map(|r| format!("  {r}")).collect();
            panic!(
                "{}: the CSI provisioner would have deleted {} volume(s):\n{}",
                self.prefix,
                reclaimed.len(),
                list.join("\n")
            );
        }
    }

    /// Ends a test's emulation: [`ReclaimEmulator::assert_nothing_reclaimed`], then
    /// [`ReclaimEmulator::stop`].
    pub async fn finish(self) {
        self.assert_nothing_reclaimed().await;
        self.stop().await;
    }

    /// Stops the emulator and waits until its task has ended.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ReclaimEmulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The emulator's task.
struct Worker {
    pvs: Api<PersistentVolume>,
    selector: String,
    delete_volume: DeleteVolume,
    records: Records,
    /// UIDs of the PVs whose volume was deleted.
    volumes_deleted: BTreeSet<String>,
    /// Names of the PVs whose handling failed, tried again every [`RETRY_EVERY`].
    retry: BTreeSet<String>,
}

impl Worker {
    async fn run(
        mut self,
        ready: oneshot::Sender<()>,
        mut settle_requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), String>>>,
    ) {
        let config = watcher::Config::default().labels(&self.selector);
        let mut events = watcher::watcher(self.pvs.clone(), config)
            .default_backoff()
            .boxed();
        let mut ready = Some(ready);
        let mut retry_timer = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(Event::Apply(pv) | Event::InitApply(pv))) => self.handle_object(&pv).await,
                    Some(Ok(Event::Delete(pv))) => {
                        if let Some(name) = &pv.metadata.name {
                            self.retry.remove(name);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Some(Ok(Event::Init)) => {}
                    Some(Err(error)) => eprintln!("reclaim emulator ({}): watching PVs: {error}", self.selector),
                    None => return,
                },
                Some(done) = settle_requests.recv() => {
                    let _ = done.send(self.handle_all().await);
                }
                _ = retry_timer.tick(), if !self.retry.is_empty() => self.handle_retries().await,
            }
        }
    }

    /// Handles every PV of the test as listed now.
    async fn handle_all(&mut self) -> Result<(), String> {
        let list = self
            .pvs
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|error| format!("listing PVs: {error}"))?;
        for pv in &list.items {
            self.handle_object(pv).await;
        }
        Ok(())
    }

    async fn handle_retries(&mut self) {
        for name in std::mem::take(&mut self.retry) {
            match self.pvs.get_opt(&name).await {
                Ok(Some(pv)) => self.handle_object(&pv).await,
                Ok(None) => {}
                Err(_) => {
                    self.retry.insert(name);
                }
            }
        }
    }

    /// Handles `pv`; a failure is reported and the PV tried again later.
    async fn handle_object(&mut self, pv: &PersistentVolume) {
        let Some(name) = pv.metadata.name.clone() else {
            return;
        };
        match self.handle(pv).await {
            Ok(()) => {
                self.retry.remove(&name);
            }
            Err(error) => {
                eprintln!("reclaim emulator ({}): PV {name}: {error}", self.selector);
                self.retry.insert(name);
            }
        }
    }

    /// Does what the provisioner does with `pv`. As the provisioner does, it decides again on the PV
    /// as it is now before it acts: the event may be old.
    async fn handle(&mut self, pv: &PersistentVolume) -> Result<(), String> {
        if action(pv) == Action::None {
            return Ok(());
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        let uid = pv.metadata.uid.clone().unwrap_or_default();
        let current = match self.pvs.get_opt(&name).await {
            Ok(Some(current)) if current.metadata.uid.as_deref() == Some(uid.as_str()) => current,
            Ok(_) => return Ok(()),
            Err(error) => return Err(format!("reading the PV: {error}")),
        };
        match action(&current) {
            Action::None => Ok(()),
            Action::RemoveFinalizer => self.remove_finalizer(&name, &uid).await,
            Action::Reclaim {
                reason,
                resource_definition,
            } => {
                if !self.volumes_deleted.contains(&uid) {
                    let result = (self.delete_volume)(resource_definition.clone()).await;
                    self.record(&name, &uid, reason, &resource_definition, result.as_ref().err());
                    result.map_err(|e| format!("deleting resource definition {resource_definition}: {e}"))?;
                    self.volumes_deleted.insert(uid.clone());
                }
                if reason != ReclaimReason::Deleted {
                    self.delete_pv(&name, &uid).await?;
                }
                self.remove_finalizer(&name, &uid).await
            }
        }
    }

    /// Records a reclaim of PV `uid`, or updates its error when it was recorded before.
    fn record(
        &self,
        name: &str,
        uid: &str,
        reason: ReclaimReason,
        resource_definition: &str,
        error: Option<&String>,
    ) {
        let mut records = lock(&self.records);
        let error = error.cloned();
        if let Some(known) = records.iter_mut().find(|r| r.pv_uid == uid) {
            known.error = error;
        } else {
            records.push(Reclaim {
                pv: name.to_owned(),
                pv_uid: uid.to_owned(),
                resource_definition: resource_definition.to_owned(),
                reason,
                error,
            });
        }
    }

    /// Deletes PV `name` if it is still the object `uid`.
    async fn delete_pv(&self, name: &str, uid: &str) -> Result<(), String> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pvs.delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or another object of that name (the precondition failed).
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(format!("deleting the PV: {error}")),
        }
    }

    /// Removes [`PROVISIONER_FINALIZER`] from PV `name` if it is still the object `uid`; the other
    /// finalizers stay. The patch carries the resource version read, so a concurrent change makes
    /// it fail (409) and it is computed again.
    async fn remove_finalizer(&self, name: &str, uid: &str) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..10 {
            let pv = match self.pvs.get_opt(name).await {
                Ok(Some(pv)) => pv,
                Ok(None) => return Ok(()),
                Err(error) => return Err(format!("reading the PV: {error}")),
            };
            if pv.metadata.uid.as_deref() != Some(uid) || !has_provisioner_finalizer(&pv) {
                return Ok(());
            }
            let kept: Vec<&String> = pv
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != PROVISIONER_FINALIZER)
                .collect();
            let patch = json!({
                "metadata": {
                    "resourceVersion": pv.metadata.resource_version,
                    "finalizers": kept,
                }
            });
            match self
                .pvs
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => last_error = status.message,
                Err(error) => return Err(format!("removing the finalizer: {error}")),
            }
        }
        Err(format!("removing the finalizer: {last_error}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PersistentVolumeStatus;

    use super::*;
    use crate::objects::{VolumeOptions, persistent_volume, time_now};

    fn pv(policy: &str, phase: &str) -> PersistentVolume {
        let options = VolumeOptions {
            volume_handle: Some("rd-1/0".to_owned()),
            reclaim_policy: policy.to_owned(),
            ..VolumeOptions::default()
        };
        let mut pv = persistent_volume("pv", &BTreeMap::new(), &options, None);
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.to_owned()),
            ..PersistentVolumeStatus::default()
        });
        pv
    }

    fn deleting(mut pv: PersistentVolume) -> PersistentVolume {
        pv.metadata.deletion_timestamp = Some(time_now());
        pv
    }

    fn skip_reclaim(mut pv: PersistentVolume, value: &str) -> PersistentVolume {
        pv.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SKIP_RECLAIM_ANNOTATION.to_owned(), value.to_owned());
        pv
    }

    fn without_finalizer(mut pv: PersistentVolume) -> PersistentVolume {
        pv.metadata.finalizers = None;
        pv
    }

    fn reclaim(reason: ReclaimReason) -> Action {
        Action::Reclaim {
            reason,
            resource_definition: "rd-1".to_owned(),
        }
    }

    #[test]
    fn released_and_failed_pvs_with_delete_are_reclaimed() {
        assert_eq!(
            action(&pv("Delete", "Released")),
            reclaim(ReclaimReason::Released)
        );
        assert_eq!(action(&pv("Delete", "Failed")), reclaim(ReclaimReason::Failed));
        assert_eq!(
            action(&without_finalizer(pv("Delete", "Released"))),
            reclaim(ReclaimReason::Released)
        );
        assert_eq!(
            action(&skip_reclaim(pv("Delete", "Released"), "false")),
            reclaim(ReclaimReason::Released)
        );
    }

    #[test]
    fn deleted_pvs_with_delete_and_the_finalizer_are_reclaimed() {
        for phase in ["Bound", "Available", "Released"] {
            assert_eq!(
                action(&deleting(pv("Delete", phase))),
                reclaim(ReclaimReason::Deleted)
            );
        }
        assert_eq!(
            action(&without_finalizer(deleting(pv("Delete", "Bound")))),
            Action::None
        );
    }

    #[test]
    fn retained_or_skipped_pvs_only_lose_the_finalizer_when_deleted() {
        assert_eq!(action(&pv("Retain", "Released")), Action::None);
        assert_eq!(
            action(&skip_reclaim(pv("Delete", "Released"), "true")),
            Action::None
        );
        assert_eq!(action(&deleting(pv("Retain", "Bound"))), Action::RemoveFinalizer);
        assert_eq!(
            action(&deleting(skip_reclaim(pv("Delete", "Released"), "true"))),
            Action::RemoveFinalizer
        );
        assert_eq!(action(&pv("Delete", "Bound")), Action::None);
        assert_eq!(action(&pv("Delete", "Available")), Action::None);
    }

    #[test]
    fn pvs_of_others_are_ignored() {
        let mut other_driver = deleting(pv("Delete", "Released"));
        other_driver.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = "other.csi.example.com".to_owned();
        assert_eq!(action(&other_driver), Action::None);
        let mut not_provisioned = pv("Delete", "Released");
        not_provisioned.metadata.annotations = None;
        assert_eq!(action(&not_provisioned), Action::None);
    }

    #[test]
    fn the_resource_definition_is_the_handle_before_the_slash() {
        assert_eq!(resource_definition_of("pvc-1"), "pvc-1");
        assert_eq!(resource_definition_of("pvc-1/3"), "pvc-1");
    }
}
