//! Support of the controller tests: a LINSTOR simulator beside the test
//! cluster, nodes and StorageClasses known to both, drifted volumes, the
//! controller binary run as a real process (so it can be SIGKILLed), and a
//! reclaim emulator standing in for the CSI external-provisioner, so that
//! every test proves no LINSTOR volume would have been deleted.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::api::rbac::v1::PolicyRule;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use affinity_core::names::SAVED_PV_PROPERTY;
use kube::api::{Api, PostParams};
pub use kube_harness::affinity_nodes;
use kube_harness::{
    BoundVolume, LoggedProcess, ReclaimEmulator, TestEnv, VolumeOptions, linstor_volume_deleter,
};
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use serde::Deserialize;

/// Whether the controller binary has its test hooks (`--debug-halt-after`), which only builds with
/// the `test-hooks` feature (`cargo test --all-features`) have. Without them a test that needs them
/// prints `SKIPPED: <reason>` and passes, or with `CI=true` fails, as a missing cluster does.
pub fn controller_has_test_hooks(test: &str) -> bool {
    if cfg!(feature = "test-hooks") {
        return true;
    }
    let reason = "the controller was built without the test-hooks feature (run the tests with \
                  --all-features or --features linstor-affinity-bins/test-hooks)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {reason}");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    false
}

/// How long a test waits for a replace it expects, or for a few reconcile
/// passes (one a second when idle).
pub const REPLACE_TIMEOUT: Duration = Duration::from_secs(60);

/// The LINSTOR node-name topology key.
pub const HOSTNAME_KEY: &str = "linbit.com/hostname";

/// Node affinity on the LINSTOR node-name key, one term per node, as the
/// controller writes it for local-only volumes.
pub fn linstor_affinity(nodes: &[&str]) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: nodes
                .iter()
                .map(|node| NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: HOSTNAME_KEY.to_owned(),
                        operator: "In".to_owned(),
                        values: Some(vec![(*node).to_owned()]),
                    }]),
                    match_fields: None,
                })
                .collect(),
        }),
    }
}

/// A test cluster with a LINSTOR simulator whose nodes are the cluster's
/// nodes, and a reclaim emulator deleting the simulator's resource
/// definitions as the CSI external-provisioner would. A test ends with
/// [`Scenario::finish`].
pub struct Scenario {
    /// The test's view of the cluster.
    pub env: TestEnv,
    /// The simulator.
    pub sim: Simulator,
    /// Node names, in both Kubernetes and LINSTOR.
    pub nodes: Vec<String>,
    /// The reclaim emulator of the test's PVs; it reaches LINSTOR at the
    /// simulator's first address, which a restarted simulator takes again.
    pub reclaims: ReclaimEmulator,
}

impl Scenario {
    /// `nodes` nodes (suffixes `n0`, `n1`, ...) labelled with their LINSTOR
    /// name, and an empty simulator that knows them. `None` when no cluster
    /// is available (the test is skipped).
    pub async fn new(test: &str, nodes: usize) -> Option<Scenario> {
        let env = TestEnv::setup(test).await?;
        let mut names = Vec::new();
        for index in 0..nodes {
            let name = env.name(&format!("n{index}"));
            env.create_node_with_labels(
                &format!("n{index}"),
                BTreeMap::from([(HOSTNAME_KEY.to_owned(), name.clone())]),
            )
            .await;
            names.push(name);
        }
        let state = SimState {
            nodes: names.iter().map(SimNode::new).collect(),
            ..SimState::default()
        };
        let sim = Simulator::start(state).await.unwrap();
        let reclaims = ReclaimEmulator::start(&env, linstor_volume_deleter(&sim.http_url().unwrap())).await;
        Some(Scenario {
            env,
            sim,
            nodes: names,
            reclaims,
        })
    }

    /// Ends the test: asserts that no volume was reclaimed (no resource
    /// definition deleted), stops the emulator and deletes the test's
    /// objects.
    pub async fn finish(self) {
        self.reclaims.finish().await;
        self.env.cleanup().await;
    }

    /// Node `index`'s name.
    pub fn node(&self, index: usize) -> &str {
        &self.nodes[index]
    }

    /// A StorageClass of the LINSTOR driver with these parameters.
    pub async fn storage_class(&self, suffix: &str, parameters: &[(&str, &str)]) -> String {
        let name = self.env.name(suffix);
        let class = StorageClass {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(self.env.labels()),
                ..ObjectMeta::default()
            },
            provisioner: "linstor.csi.linbit.com".to_owned(),
            parameters: Some(
                parameters
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
            ),
            ..StorageClass::default()
        };
        Api::<StorageClass>::all(self.env.client())
            .create(&PostParams::default(), &class)
            .await
            .unwrap();
        name
    }

    /// The StorageClass `local`, with remote access off: volumes are only
    /// accessible on the nodes holding their data.
    pub async fn local_only_class(&self) -> String {
        self.storage_class(
            "local",
            &[("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false")],
        )
        .await
    }

    /// A bound volume of StorageClass `class` whose PV affinity names node
    /// `pv_on` and whose only LINSTOR replica is on node `data_on` (a
    /// resource definition named after the PV). Reclaim policy `Delete`,
    /// mount options set.
    pub async fn volume(&self, suffix: &str, class: &str, pv_on: usize, data_on: usize) -> BoundVolume {
        let options = VolumeOptions {
            storage_class: Some(class.to_owned()),
            node_affinity: Some(linstor_affinity(&[self.node(pv_on)])),
            reclaim_policy: "Delete".to_owned(),
            mount_options: vec!["noatime".to_owned(), "discard".to_owned()],
            ..VolumeOptions::default()
        };
        let bound = self.env.create_bound_volume(suffix, &options).await;
        let name = bound.pv.metadata.name.clone().unwrap();
        self.sim
            .add_resource_definition(
                SimResourceDefinition::new(&name, 1 << 20).resource(SimResource::diskful(self.node(data_on))),
            )
            .unwrap();
        bound
    }

    /// Moves the only replica of `resource_definition` from node `from` to node `to`.
    pub fn move_replica(&self, resource_definition: &str, from: usize, to: usize) {
        self.sim
            .add_resource(resource_definition, SimResource::diskful(self.node(to)))
            .unwrap();
        self.sim
            .delete_resource(resource_definition, self.node(from))
            .unwrap();
    }

    /// The saved-PV property of volume 0 of `resource_definition`.
    pub fn saved_pv(&self, resource_definition: &str) -> Option<String> {
        self.sim.with_state(|state| {
            state
                .resource_definitions
                .iter()
                .find(|rd| rd.name == resource_definition)
                .and_then(|rd| rd.volume_definitions.iter().find(|vd| vd.volume_number == 0))
                .and_then(|vd| vd.props.get(SAVED_PV_PROPERTY).cloned())
        })
    }

    /// Whether LINSTOR still has `resource_definition`.
    pub fn has_resource_definition(&self, resource_definition: &str) -> bool {
        self.sim.with_state(|state| {
            state
                .resource_definitions
                .iter()
                .any(|rd| rd.name == resource_definition)
        })
    }

    /// Starts the controller on this cluster and simulator: reconcile every
    /// second, no grace period, health on a free port, plus `extra` flags.
    pub fn controller(&self, extra: &[&str]) -> ControllerProcess {
        self.start_controller("0s", &self.sim.http_url().unwrap(), extra)
    }

    /// [`Self::controller`] with grace period `grace_period` (for example
    /// `1h`) instead of none.
    pub fn controller_with_grace_period(&self, grace_period: &str, extra: &[&str]) -> ControllerProcess {
        self.start_controller(grace_period, &self.sim.http_url().unwrap(), extra)
    }

    /// [`Self::controller`] with LINSTOR at `linstor_url` instead of this
    /// scenario's simulator (for example an address nothing listens on yet).
    pub fn controller_with_linstor(&self, linstor_url: &str, extra: &[&str]) -> ControllerProcess {
        self.start_controller("0s", linstor_url, extra)
    }

    /// [`Self::controller`] talking to Kubernetes through `kubeconfig` (for
    /// example one acting as a ServiceAccount) instead of as the admin.
    pub fn controller_as(&self, kubeconfig: &std::path::Path, extra: &[&str]) -> ControllerProcess {
        let url = self.sim.http_url().unwrap();
        self.start_controller_with(kubeconfig.to_str().unwrap(), "0s", &url, extra)
    }

    fn start_controller(&self, grace_period: &str, linstor_url: &str, extra: &[&str]) -> ControllerProcess {
        let kubeconfig = self.env.cluster().kubeconfig().to_str().unwrap().to_owned();
        self.start_controller_with(&kubeconfig, grace_period, linstor_url, extra)
    }

    fn start_controller_with(
        &self,
        kubeconfig: &str,
        grace_period: &str,
        linstor_url: &str,
        extra: &[&str],
    ) -> ControllerProcess {
        let mut args: Vec<String> = [
            "--kubeconfig",
            kubeconfig,
            "--reconcile-rate",
            "1s",
            "--grace-period",
            grace_period,
            "--timeout",
            "30s",
            "--bind-address",
            "127.0.0.1:0",
            "-v",
            "3",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        ControllerProcess::start(&args, linstor_url)
    }

    /// Waits until `bound`'s PV has been replaced (another UID) with affinity
    /// on node 1 by the running `controller`; fails with the PV as last
    /// observed and the controller's log when it is not within
    /// [`REPLACE_TIMEOUT`].
    pub async fn wait_until_replaced(&self, controller: &ControllerProcess, bound: &BoundVolume) {
        let pv_name = bound.pv.metadata.name.clone().unwrap();
        let old_uid = bound.pv.metadata.uid.clone().unwrap();
        let replaced = self
            .env
            .try_wait_for(&self.env.pvs(), &pv_name, REPLACE_TIMEOUT, |pv| {
                pv.metadata.uid.as_deref() != Some(old_uid.as_str()) && affinity_nodes(pv) == [self.node(1)]
            })
            .await;
        if let Err(observed) = replaced {
            panic!(
                "{pv_name} not replaced within {REPLACE_TIMEOUT:?}; last observed:\n{observed}\nlog:\n{}",
                controller.log()
            );
        }
    }

    /// Starts the controller with `extra` flags, waits until the drifted
    /// volume `control` is replaced (so the controller decided for every PV
    /// at least once) and for three more full passes; returns the running
    /// controller.
    pub async fn run_until_control_replaced(
        &self,
        control: &BoundVolume,
        extra: &[&str],
    ) -> ControllerProcess {
        let controller = self.controller(extra);
        self.wait_until_replaced(&controller, control).await;
        controller.wait_for_full_passes(3, REPLACE_TIMEOUT).await;
        controller
    }

    /// Asserts that PV `before` (as read earlier) is still the same object
    /// with the same affinity, annotations and reclaim policy.
    pub async fn assert_pv_unchanged(&self, before: &PersistentVolume) {
        let pv_name = before.metadata.name.clone().unwrap();
        let now = self.env.pvs().get(&pv_name).await.unwrap();
        assert_eq!(now.metadata.uid, before.metadata.uid, "{pv_name} was replaced");
        assert_eq!(
            now.spec.as_ref().and_then(|spec| spec.node_affinity.clone()),
            before.spec.as_ref().and_then(|spec| spec.node_affinity.clone()),
            "{pv_name}: affinity changed"
        );
        assert_eq!(now.metadata.annotations, before.metadata.annotations, "{pv_name}");
        assert_eq!(
            now.spec
                .as_ref()
                .and_then(|spec| spec.persistent_volume_reclaim_policy.clone()),
            before
                .spec
                .as_ref()
                .and_then(|spec| spec.persistent_volume_reclaim_policy.clone()),
            "{pv_name}: reclaim policy changed"
        );
    }

    /// Waits until the PV called `name` satisfies `done`.
    pub async fn wait_for_pv(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&PersistentVolume) -> bool,
    ) -> PersistentVolume {
        self.env
            .wait_for(&self.env.pvs(), name, what, timeout, done)
            .await
    }
}

/// The controller binary, running; the log-reading and signalling methods
/// are those of [`LoggedProcess`].
pub struct ControllerProcess {
    process: LoggedProcess,
}

impl ControllerProcess {
    /// Starts the controller with `args`, LINSTOR at `linstor_url`; its
    /// stderr is collected line by line.
    pub fn start(args: &[String], linstor_url: &str) -> Self {
        let process = LoggedProcess::spawn(
            Command::new(env!("CARGO_BIN_EXE_linstor-affinity-controller"))
                .args(args)
                .env("LS_CONTROLLERS", linstor_url)
                .env_remove("RUST_LOG"),
        );
        ControllerProcess { process }
    }

    /// Sends SIGTERM and waits for the exit (at most 20 s).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.process.terminate(Duration::from_secs(20)).await
    }

    /// How many full passes (every PV decided for) have finished so far;
    /// needs `-v 3`, as [`Scenario::controller`] sets.
    pub fn full_passes(&self) -> usize {
        self.lines_with(&["pass done", "full=true"]).len()
            + self.lines_with(&["pass failed", "full=true"]).len()
    }

    /// Waits until `passes` more full passes than now have finished.
    pub async fn wait_for_full_passes(&self, passes: usize, timeout: Duration) {
        let target = self.full_passes() + passes;
        let deadline = Instant::now() + timeout;
        while self.full_passes() < target {
            if Instant::now() >= deadline {
                panic!(
                    "fewer than {passes} full passes within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Deref for ControllerProcess {
    type Target = LoggedProcess;

    fn deref(&self) -> &LoggedProcess {
        &self.process
    }
}

impl DerefMut for ControllerProcess {
    fn deref_mut(&mut self) -> &mut LoggedProcess {
        &mut self.process
    }
}

/// The rules of the ClusterRoles and of the Roles in a file of RBAC objects
/// (YAML, several documents).
pub fn rules_of(file: &str) -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let text = std::fs::read_to_string(file).unwrap();
    let (mut cluster, mut namespaced) = (Vec::new(), Vec::new());
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = serde_json::Value::deserialize(document).unwrap();
        let rules = || serde_json::from_value::<Vec<PolicyRule>>(object["rules"].clone()).unwrap();
        match object["kind"].as_str() {
            Some("ClusterRole") => cluster.extend(rules()),
            Some("Role") => namespaced.extend(rules()),
            _ => {}
        }
    }
    (cluster, namespaced)
}
