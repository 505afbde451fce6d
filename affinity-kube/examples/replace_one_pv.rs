//! An operator of its own replacing one PV with the replace protocol.
//!
//! [`embedder`] is the operator's code: it builds a Kubernetes client and a
//! LINSTOR client (from the `LS_*` environment), decides with
//! `affinity_core` what the PV's node affinity should be, and when it
//! differs replaces the PV, the intent log kept on the LINSTOR volume
//! definition.
//!
//! `main` sets up a demo to run it against: a private Kubernetes control
//! plane (the kube-harness binaries, `K8S_BIN_DIR`) with a bound PV whose
//! affinity names `node-a`, and the LINSTOR simulator keeping its data on
//! `node-b`. It then checks that the PV was re-created with an affinity on
//! `node-b` and exits non-zero otherwise. Without the Kubernetes binaries it
//! says so and exits 0, unless `CI=true`, where that is a failure.
//!
//! ```text
//! K8S_BIN_DIR=... cargo run -p affinity-kube --example replace_one_pv
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use affinity_core::k8s_openapi::api::core::v1::VolumeNodeAffinity;
use affinity_core::{Accessibility, Properties, RemoteAccessPolicy, desired_node_affinity, node_segments};
use kube::api::{Patch, PatchParams};
use kube_harness::{TestEnv, VolumeOptions, hostname_affinity};
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use serde_json::json;

/// The operator's own code: nothing here knows about the demo.
mod embedder {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
    use affinity_core::{Action, DecisionSettings, Planner, Properties};
    use affinity_kube::{ReplaceProtocol, linstor_state};
    use kube::api::Api;
    use kube::config::{KubeConfigOptions, Kubeconfig};

    /// What the operator's errors are.
    pub type Error = Box<dyn std::error::Error + Send + Sync>;

    /// What became of the PV.
    #[derive(Debug)]
    pub enum Outcome {
        /// It was replaced; the PV as stored now.
        Replaced(Box<PersistentVolume>),
        /// Its affinity matches LINSTOR already, or it is not one to change.
        Unchanged(String),
    }

    /// A Kubernetes client from `kubeconfig`, or as kubectl finds one
    /// (`KUBECONFIG`, `~/.kube/config`, in-cluster) when `None`.
    pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
        let Some(path) = kubeconfig else {
            return Ok(kube::Client::try_default().await?);
        };
        let kubeconfig = Kubeconfig::read_from(path)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A LINSTOR client from the `LS_*` variables `environment` returns
    /// (`LS_CONTROLLERS`, `LS_USER_CERTIFICATE`, ...), such as
    /// `|name| std::env::var(name).ok()`.
    pub fn linstor_client(
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<linstor_api::Client, Error> {
        Ok(linstor_api::ClientBuilder::from_env_map(environment)?.build()?)
    }

    /// Replaces PV `pv_name` when its node affinity differs from where
    /// LINSTOR keeps its data. `instance` names this operator in events.
    pub async fn replace_one_pv(
        kube: kube::Client,
        linstor: linstor_api::Client,
        pv_name: &str,
        instance: &str,
    ) -> Result<Outcome, Error> {
        // Gather.
        let live: PersistentVolume = Api::all(kube.clone()).get(pv_name).await?;
        let state = linstor_state::fetch(&linstor).await?;
        // Decide.
        let property_namespace =
            linstor_state::property_namespace(None, state.snapshot.nodes().map(|(_, properties)| properties));
        let settings = DecisionSettings::at(property_namespace, Duration::ZERO, SystemTime::now());
        // The PV names its policy itself here; an operator using StorageClass
        // parameters passes them by class name.
        let storage_classes: BTreeMap<String, Properties> = BTreeMap::new();
        let mut plan = Planner::new(&state.snapshot, &storage_classes, &settings).plan([&live]);
        let Some(decision) = plan.decisions.pop() else {
            return Ok(Outcome::Unchanged("not a LINSTOR volume".to_owned()));
        };
        let replacement = match decision.outcome? {
            Action::Replace(replacement) => replacement,
            other => return Ok(Outcome::Unchanged(format!("{other:?}"))),
        };
        // Act.
        let protocol = ReplaceProtocol::new(kube, linstor, instance);
        let replaced = protocol.run(&decision.volume, &replacement).await;
        protocol.stop_rechecks().await;
        Ok(Outcome::Replaced(Box::new(replaced?)))
    }
}

/// The node affinity of a local-only volume whose data is on `node-b` alone
/// (LINSTOR's nodes carry no topology properties here).
fn on_node_b() -> Option<VolumeNodeAffinity> {
    let segments = node_segments("node-b", &Properties::new(), "Aux/topology");
    desired_node_affinity(&Accessibility::from_nodes(
        &RemoteAccessPolicy::local_only(),
        [&segments],
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    // Skips (exit 0) without the Kubernetes binaries, except with CI=true.
    let Some(env) = TestEnv::setup("replace-one-pv").await else {
        println!("no Kubernetes control plane binaries (K8S_BIN_DIR): nothing demonstrated");
        return ExitCode::SUCCESS;
    };
    // A bound PV on node-a whose volume may only be used where its data is.
    let options = VolumeOptions {
        reclaim_policy: "Delete".to_owned(),
        node_affinity: Some(hostname_affinity(&["node-a"])),
        ..VolumeOptions::default()
    };
    let bound = env.create_bound_volume("data", &options).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let local_only = json!({ "metadata": { "annotations": {
        "override.piraeus.io/remote-access-policy": "false"
    } } });
    let original = env
        .pvs()
        .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&local_only))
        .await
        .unwrap();
    // LINSTOR keeps the data on node-b.
    let sim = Simulator::start(SimState {
        nodes: vec![SimNode::new("node-a"), SimNode::new("node-b")],
        resource_definitions: vec![
            SimResourceDefinition::new(&pv_name, 1 << 20).resource(SimResource::diskful("node-b")),
        ],
        ..SimState::default()
    })
    .await
    .unwrap();
    let linstor_url = sim.http_url().unwrap();
    // The operator's environment: LS_CONTROLLERS names the simulator.
    let environment = |name: &str| match name {
        "LS_CONTROLLERS" => Some(linstor_url.clone()),
        _ => std::env::var(name).ok(),
    };

    let outcome = async {
        let kube = embedder::kube_client(Some(env.cluster().kubeconfig())).await?;
        let linstor = embedder::linstor_client(environment)?;
        embedder::replace_one_pv(kube, linstor, &pv_name, "replace-one-pv-example").await
    }
    .await;

    let code = match outcome {
        Ok(embedder::Outcome::Replaced(pv)) => {
            let affinity = pv.spec.as_ref().and_then(|spec| spec.node_affinity.clone());
            if pv.metadata.uid == original.metadata.uid {
                eprintln!("PV {pv_name} was not re-created (UID {:?})", pv.metadata.uid);
                ExitCode::FAILURE
            } else if affinity != on_node_b() {
                eprintln!(
                    "PV {pv_name} was re-created with affinity {affinity:?}, not {:?}",
                    on_node_b()
                );
                ExitCode::FAILURE
            } else {
                println!(
                    "PV {pv_name} replaced: UID {:?} -> {:?}, its affinity now names node-b",
                    original.metadata.uid, pv.metadata.uid
                );
                ExitCode::SUCCESS
            }
        }
        Ok(embedder::Outcome::Unchanged(why)) => {
            eprintln!("PV {pv_name} was expected to be replaced, but was left alone: {why}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("replacing PV {pv_name} failed: {error}");
            ExitCode::FAILURE
        }
    };
    env.cleanup().await;
    code
}
