//! Per-test view of the shared cluster: unique names, a namespace, object builders and waits.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, NodeSpec, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cluster::{Cluster, ClusterError};
use crate::objects::{TEST_LABEL, VolumeOptions, persistent_volume};

/// Default timeout of the waits; generous, as the machine may be busy.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// How long [`TestEnv::create_bound_volume`] waits before it updates a claim the binder left pending.
const NUDGE_AFTER: Duration = Duration::from_secs(1);

/// Annotation [`TestEnv::create_bound_volume`] sets on a claim to have the PV binder sync it again.
pub const RESYNC_ANNOTATION: &str = "kube-harness.test/resync";

/// A PV and the PVC it is bound to.
#[derive(Debug, Clone)]
pub struct BoundVolume {
    /// The PV, as last observed in phase `Bound`.
    pub pv: PersistentVolume,
    /// The PVC, as last observed in phase `Bound`.
    pub pvc: PersistentVolumeClaim,
}

/// One test's view of the cluster.
///
/// Every object created through it is named `<prefix>-<suffix>` (cluster-scoped objects) or lives in
/// the test's own namespace, and carries the label [`TEST_LABEL`]`=<prefix>`.
pub struct TestEnv {
    client: Client,
    cluster: &'static Cluster,
    prefix: String,
    namespace: String,
}

impl Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("cluster", &self.cluster)
            .finish()
    }
}

fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(count);
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut base: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(24);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "t" } else { base };
    // The counter keeps prefixes of one process apart, the random part those of different processes.
    format!("{base}-{count}{:06x}", hasher.finish() & 0xff_ffff)
}

/// Prints `SKIPPED: <test>: <reason>` and returns `None`; with `CI=true` fails the test instead.
fn skipped<T>(test: &str, reason: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {reason}");
    }
    // Written to the process's stderr directly, so the test harness does not capture it.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    None
}

impl TestEnv {
    /// The `kubectl` of the cluster's binaries (see [`Cluster::kubectl`]). Returns `None` after
    /// printing `SKIPPED: <reason>` to stderr when it was never built; with `CI=true` that fails
    /// the test instead.
    pub fn kubectl(&self, test: &str) -> Option<std::path::PathBuf> {
        match Cluster::kubectl() {
            Ok(path) => Some(path),
            Err(ClusterError::Missing(reason)) => skipped(test, &format!("no kubectl available: {reason}")),
            Err(failed) => panic!("{test}: {failed}"),
        }
    }

    /// Prepares a test: obtains the shared cluster, a client, a unique prefix and a namespace named
    /// after the prefix.
    ///
    /// Returns `None` after printing `SKIPPED: <reason>` to stderr when no cluster binaries exist.
    /// With `CI=true` a missing cluster fails the test instead, and a cluster that fails to start
    /// always fails it.
    pub async fn setup(test: &str) -> Option<TestEnv> {
        let cluster = match Cluster::shared() {
            Ok(cluster) => cluster,
            Err(ClusterError::Missing(reason)) => {
                return skipped(test, &format!("no Kubernetes cluster available: {reason}"));
            }
            Err(failed) => panic!("{test}: {failed}"),
        };
        let client = match cluster.client().await {
            Ok(client) => client,
            Err(e) => panic!("{test}: cannot create a client: {e}"),
        };
        let prefix = unique_prefix(test);
        let env = TestEnv {
            client,
            cluster,
            namespace: prefix.clone(),
            prefix,
        };
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(env.namespace.clone()),
                labels: Some(env.labels()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        if let Err(e) = Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            panic!(
                "{test}: creating namespace {}: {e:?}{}",
                env.namespace,
                env.cluster.diagnostics()
            );
        }
        Some(env)
    }

    /// A client for this test's runtime.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The cluster this test runs against.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// This test's unique prefix (a valid DNS label).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `<prefix>-<suffix>`: a name no other test uses.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// The labels put on every object of this test.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(TEST_LABEL.to_owned(), self.prefix.clone())])
    }

    /// `Api` for PVs.
    pub fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    /// `Api` for PVCs in this test's namespace.
    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// `Api` for pods in this test's namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// `Api` for nodes.
    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Panics with `what` and the cluster's diagnostics when `result` is an error.
    fn check<T, E: std::fmt::Display>(&self, result: Result<T, E>, what: &str) -> T {
        match result {
            Ok(value) => value,
            Err(e) => panic!("{}: {what}: {e}{}", self.prefix, self.cluster.diagnostics()),
        }
    }

    /// Creates a schedulable node `<prefix>-<suffix>`: label `kubernetes.io/hostname` set to its
    /// name, condition `Ready=True`, capacity and allocatable (4 CPUs, 8Gi, 110 pods) set through
    /// the status subresource, and the `node.kubernetes.io/not-ready` taint the API server adds on
    /// creation removed. No kubelet runs for it; pods are scheduled onto it and stay `Pending`.
    pub async fn create_node(&self, suffix: &str) -> Node {
        self.create_node_with_labels(suffix, BTreeMap::new()).await
    }

    /// [`TestEnv::create_node`] with additional labels.
    pub async fn create_node_with_labels(
        &self,
        suffix: &str,
        extra_labels: BTreeMap<String, String>,
    ) -> Node {
        let name = self.name(suffix);
        let mut labels = self.labels();
        labels.insert("kubernetes.io/hostname".to_owned(), name.clone());
        labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
        labels.extend(extra_labels);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: None,
        };
        let api = self.nodes();
        self.check(
            api.create(&PostParams::default(), &node).await,
            &format!("creating node {name}"),
        );

        let resources = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
        let status = json!({
            "status": {
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "node without kubelet, created by a test",
                    "lastHeartbeatTime": crate::objects::time_now(),
                    "lastTransitionTime": crate::objects::time_now(),
                }],
                "capacity": resources,
                "allocatable": resources,
            }
        });
        self.check(
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await,
            &format!("setting the status of node {name}"),
        );

        // Remove the not-ready taint; replace() carries the resourceVersion, so retry on conflict.
        let mut last_error = String::new();
        for _ in 0..10 {
            let mut node = self.check(api.get(&name).await, &format!("reading node {name}"));
            let spec = node.spec.get_or_insert_with(NodeSpec::default);
            let taints = spec.taints.take().unwrap_or_default();
            let kept: Vec<_> = taints
                .into_iter()
                .filter(|t| t.key != "node.kubernetes.io/not-ready")
                .collect();
            spec.taints = if kept.is_empty() { None } else { Some(kept) };
            match api.replace(&name, &PostParams::default(), &node).await {
                Ok(updated) => return updated,
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!(
            "{}: removing the not-ready taint of node {name}: {last_error}",
            self.prefix
        );
    }

    /// Creates StorageClass `<prefix>-<suffix>` of provisioner [`crate::CSI_DRIVER`] with the
    /// given `volumeBindingMode` (`Immediate` or `WaitForFirstConsumer`).
    pub async fn create_storage_class(&self, suffix: &str, binding_mode: &str) -> StorageClass {
        let name = self.name(suffix);
        let sc = StorageClass {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            provisioner: crate::objects::CSI_DRIVER.to_owned(),
            reclaim_policy: Some("Delete".to_owned()),
            volume_binding_mode: Some(binding_mode.to_owned()),
            allow_volume_expansion: Some(true),
            parameters: Some(BTreeMap::from([(
                "linstor.csi.linbit.com/placementCount".to_owned(),
                "1".to_owned(),
            )])),
            ..StorageClass::default()
        };
        self.check(
            Api::<StorageClass>::all(self.client.clone())
                .create(&PostParams::default(), &sc)
                .await,
            &format!("creating storage class {name}"),
        )
    }

    /// The PVC object `<suffix>` in this test's namespace, requesting PV `volume_name`.
    pub fn claim(&self, suffix: &str, volume_name: &str, options: &VolumeOptions) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(suffix.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(options.capacity.clone()),
                    )])),
                    limits: None,
                }),
                storage_class_name: Some(options.storage_class.clone().unwrap_or_default()),
                volume_name: Some(volume_name.to_owned()),
                volume_mode: Some("Filesystem".to_owned()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    /// The claim reference a PV bound to `pvc` carries (with the claim's UID when it has one).
    pub fn claim_ref(pvc: &PersistentVolumeClaim) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("PersistentVolumeClaim".to_owned()),
            namespace: pvc.namespace(),
            name: pvc.metadata.name.clone(),
            uid: pvc.metadata.uid.clone(),
            resource_version: None,
            field_path: None,
        }
    }

    /// Creates PV `<prefix>-<suffix>` (CSI, driver [`crate::CSI_DRIVER`]) pre-bound to PVC `<suffix>`
    /// of this test's namespace, then that PVC naming the PV, and waits until the PV binder reports
    /// both `Bound` (the binder fills in the claim's UID).
    ///
    /// The PV comes first, and the claim is created once the binder has marked the PV `Available`:
    /// a claim the binder processes before it knows the named volume is only bound on its next
    /// periodic sync of the claim (15 s). A claim still pending after 1 s gets the annotation
    /// [`RESYNC_ANNOTATION`], which makes the binder sync it at once.
    pub async fn create_bound_volume(&self, suffix: &str, options: &VolumeOptions) -> BoundVolume {
        let pv_name = self.name(suffix);
        let claim = self.claim(suffix, &pv_name, options);
        let mut claim_ref = Self::claim_ref(&claim);
        claim_ref.uid = None;
        let pv = persistent_volume(&pv_name, &self.labels(), options, Some(claim_ref));
        self.check(
            self.pvs().create(&PostParams::default(), &pv).await,
            &format!("creating PV {pv_name}"),
        );
        // `Available` means the binder has the PV in its cache. A claim it sees before that waits
        // for the next periodic sync (15 s) to be bound.
        self.wait_for_pv_phase(&pv_name, "Available").await;
        self.check(
            self.pvcs().create(&PostParams::default(), &claim).await,
            &format!("creating PVC {}/{suffix}", self.namespace),
        );
        // The v1.20 binder's volume and claim workers race on the PV status; the loser's claim is only
        // synced again by the periodic sync (15 s). Any update of the claim makes it sync at once.
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let mut resyncs = 0u32;
        let pvc = loop {
            let bound = self
                .try_wait_for(&self.pvcs(), suffix, NUDGE_AFTER, |pvc| {
                    pvc_phase(pvc) == Some("Bound")
                })
                .await;
            if let Ok(pvc) = bound {
                break pvc;
            }
            if Instant::now() >= deadline {
                break self.wait_for_pvc_phase(suffix, "Bound").await;
            }
            resyncs += 1;
            // A patch that changes nothing is no update; the value must differ each time.
            let value = format!("{resyncs}-{}", unique_prefix("r"));
            let patch = json!({"metadata": {"annotations": {RESYNC_ANNOTATION: value}}});
            self.check(
                self.pvcs()
                    .patch(suffix, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
                &format!("annotating PVC {}/{suffix}", self.namespace),
            );
        };
        let pv = self.wait_for_pv_phase(&pv_name, "Bound").await;
        BoundVolume { pv, pvc }
    }

    /// Creates pod `<suffix>` in this test's namespace mounting PVC `claim`. Its image is never
    /// pulled (no kubelet runs); the pod exists to be scheduled.
    pub async fn create_pod_with_claim(&self, suffix: &str, claim: &str) -> Pod {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(suffix.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: Some(pod_spec_with_claim(claim)),
            status: None,
        };
        self.check(
            self.pods().create(&PostParams::default(), &pod).await,
            &format!("creating pod {}/{suffix}", self.namespace),
        )
    }

    /// Polls `name` through `api` until `done` holds, for at most `timeout`. On timeout it panics
    /// with `what`, the last observed object (or error) and the controllers' log tails.
    pub async fn wait_for<K, F>(&self, api: &Api<K>, name: &str, what: &str, timeout: Duration, done: F) -> K
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
        K::DynamicType: Default,
        F: FnMut(&K) -> bool,
    {
        match self.try_wait_for(api, name, timeout, done).await {
            Ok(obj) => obj,
            Err(observed) => panic!(
                "{}: timed out after {:.1}s waiting for {what} ({} {name}); last observed:\n{observed}{}",
                self.prefix,
                timeout.as_secs_f64(),
                K::kind(&K::DynamicType::default()),
                self.cluster.diagnostics()
            ),
        }
    }

    /// Polls `name` through `api` until `done` holds, for at most `timeout`. On timeout it returns
    /// the last observed object as JSON (or "not found", or the last error).
    pub async fn try_wait_for<K, F>(
        &self,
        api: &Api<K>,
        name: &str,
        timeout: Duration,
        mut done: F,
    ) -> Result<K, String>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
        F: FnMut(&K) -> bool,
    {
        let start = Instant::now();
        loop {
            let observed = match api.get_opt(name).await {
                Ok(Some(obj)) if done(&obj) => return Ok(obj),
                Ok(Some(obj)) => describe(&obj),
                Ok(None) => "not found".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            if start.elapsed() >= timeout {
                return Err(observed);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (up to 60 s) until `name` no longer exists.
    pub async fn wait_for_deletion<K>(&self, api: &Api<K>, name: &str)
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
        K::DynamicType: Default,
    {
        let start = Instant::now();
        loop {
            let observed = match api.get_opt(name).await {
                Ok(None) => return,
                Ok(Some(obj)) => describe(&obj),
                Err(e) => format!("error: {e}"),
            };
            if start.elapsed() >= DEFAULT_TIMEOUT {
                panic!(
                    "{}: timed out waiting for the deletion of {} {name}; last observed:\n{observed}{}",
                    self.prefix,
                    K::kind(&K::DynamicType::default()),
                    self.cluster.diagnostics()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (up to 60 s) until PV `name` has `status.phase == phase`.
    pub async fn wait_for_pv_phase(&self, name: &str, phase: &str) -> PersistentVolume {
        self.wait_for(
            &self.pvs(),
            name,
            &format!("phase {phase}"),
            DEFAULT_TIMEOUT,
            |pv: &PersistentVolume| pv_phase(pv) == Some(phase),
        )
        .await
    }

    /// Waits (up to 60 s) until PVC `name` of this test's namespace has `status.phase == phase`.
    pub async fn wait_for_pvc_phase(&self, name: &str, phase: &str) -> PersistentVolumeClaim {
        self.wait_for(
            &self.pvcs(),
            name,
            &format!("phase {phase}"),
            DEFAULT_TIMEOUT,
            |pvc: &PersistentVolumeClaim| pvc_phase(pvc) == Some(phase),
        )
        .await
    }

    /// Waits (up to 60 s) until pod `name` of this test's namespace has a `spec.nodeName`.
    pub async fn wait_for_pod_scheduled(&self, name: &str) -> Pod {
        self.wait_for(
            &self.pods(),
            name,
            "scheduling onto a node",
            DEFAULT_TIMEOUT,
            |pod: &Pod| pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
        )
        .await
    }

    /// Deletes what this test created (best effort, without waiting): pods (grace period 0), PVCs,
    /// PVs, nodes and storage classes carrying this test's label. The PVs also lose their
    /// finalizers, so none is left waiting for a provisioner. The namespace itself stays (no
    /// namespace controller runs); it is empty and harmless.
    ///
    /// Deleting the claims releases their PVs: stop a [`crate::ReclaimEmulator`] before.
    pub async fn cleanup(self) {
        let lp = ListParams::default().labels(&format!("{TEST_LABEL}={}", self.prefix));
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let _ = self.pods().delete_collection(&now, &lp).await;
        let _ = self.pvcs().delete_collection(&DeleteParams::default(), &lp).await;
        let _ = self.pvs().delete_collection(&DeleteParams::default(), &lp).await;
        let no_finalizers = json!({"metadata": {"finalizers": null}});
        for pv in self
            .pvs()
            .list(&lp)
            .await
            .map(|list| list.items)
            .unwrap_or_default()
        {
            if pv.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                let _ = self
                    .pvs()
                    .patch(
                        &pv.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&no_finalizers),
                    )
                    .await;
            }
        }
        let _ = self
            .nodes()
            .delete_collection(&DeleteParams::default(), &lp)
            .await;
        let _ = Api::<StorageClass>::all(self.client.clone())
            .delete_collection(&DeleteParams::default(), &lp)
            .await;
        self.delete_cluster_roles().await;
    }
}

/// `status.phase` of a PV.
pub(crate) fn pv_phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// `status.phase` of a PVC.
pub(crate) fn pvc_phase(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The object as pretty JSON without `managedFields`, for failure messages.
fn describe<K: Serialize>(obj: &K) -> String {
    let mut value = match serde_json::to_value(obj) {
        Ok(value) => value,
        Err(e) => return format!("(cannot serialize: {e})"),
    };
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("(cannot format: {e})"))
}

/// The spec of a pod that mounts claim `claim` at once: a pause container whose image is never
/// pulled (no kubelet runs), no service account token, no grace period.
pub fn pod_spec_with_claim(claim: &str) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "main".to_owned(),
            image: Some("registry.k8s.io/pause:3.2".to_owned()),
            ..Container::default()
        }],
        volumes: Some(vec![Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_owned(),
                read_only: None,
            }),
            ..Volume::default()
        }]),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(0),
        ..PodSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::unique_prefix;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn prefixes_are_unique_dns_labels() {
        let names = [
            "pv_node_affinity_is_immutable",
            "A very long Test Name with spaces and UPPER case and more",
            "--",
            "",
            "x::y",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            for _ in 0..50 {
                let p = unique_prefix(name);
                assert!(is_dns_label(&p), "{p:?}");
                // Room for "-<suffix>" in names of at most 63 characters.
                assert!(p.len() <= 36, "{p:?}");
                assert!(seen.insert(p.clone()), "duplicate {p:?}");
            }
        }
    }
}
