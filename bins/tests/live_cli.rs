//! `plan` and `replace` against a real Kubernetes control plane and the LINSTOR simulator: a PV
//! whose affinity names node A while LINSTOR keeps its only diskful replica on node B is reported,
//! replaced with every field kept, and then reported in sync.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use assert_cmd::Command;
use kube::api::{Api, PostParams};
use kube_harness::{
    CSI_DRIVER, ReclaimEmulator, TestEnv, VolumeOptions, hostname_affinity, linstor_volume_deleter,
};
use linstor_api::sim::{Fault, FaultKind, SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use serde_json::{Value, json};

/// Runs `linstor-affinity ARGS --kubeconfig <the cluster's>` with LINSTOR at `linstor`, off the
/// runtime's threads (the simulator answers on them).
async fn cli(env: &TestEnv, linstor: &str, args: &[&str]) -> Output {
    let kubeconfig: PathBuf = env.cluster().kubeconfig().to_owned();
    let linstor = linstor.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("linstor-affinity")
            .unwrap()
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("LS_CONTROLLERS", &linstor)
            .env_remove("KUBECONFIG")
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON plan's entry of `pv` (other tests' PVs may share the cluster).
fn entry(output: &Output, pv: &str) -> Value {
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&output.stdout), text(&output.stderr)));
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["pv"] == pv)
        .unwrap_or_else(|| panic!("{pv} not in the plan: {report}"))
        .clone()
}

fn on_node(node: &str) -> Value {
    json!([{"matchExpressions": [{"key": "linbit.com/hostname", "operator": "In", "values": [node]}]}])
}

async fn local_only_storage_class(env: &TestEnv) -> String {
    let name = env.name("local");
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(env.labels()),
            ..ObjectMeta::default()
        },
        provisioner: CSI_DRIVER.to_owned(),
        parameters: Some(BTreeMap::from([(
            "linstor.csi.linbit.com/allowRemoteVolumeAccess".to_owned(),
            "false".to_owned(),
        )])),
        ..StorageClass::default()
    };
    Api::<StorageClass>::all(env.client())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    name
}

fn saved_property(sim: &Simulator, definition: &str) -> Option<String> {
    let state = sim.state();
    let rd = state
        .resource_definitions
        .iter()
        .find(|rd| rd.name == definition)
        .unwrap();
    rd.volume_definitions
        .iter()
        .find(|vd| vd.volume_number == 0)
        .and_then(|vd| vd.props.get(SAVED_PV_PROPERTY).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reports_and_replace_fixes_a_drifted_pv() {
    let Some(env) = TestEnv::setup("live_cli_replace").await else {
        return;
    };
    let storage_class = local_only_storage_class(&env).await;
    let options = VolumeOptions {
        storage_class: Some(storage_class.clone()),
        node_affinity: Some(hostname_affinity(&["node-a"])),
        reclaim_policy: "Delete".to_owned(),
        ..VolumeOptions::default()
    };
    let bound = env.create_bound_volume("vol", &options).await;
    let original = bound.pv;
    let name = original.metadata.name.clone().unwrap();
    let claim = bound.pvc.metadata.name.clone().unwrap();
    let sim = Simulator::start(SimState {
        nodes: vec![SimNode::new("node-a"), SimNode::new("node-b")],
        resource_definitions: vec![
            SimResourceDefinition::new(&name, 1 << 20).resource(SimResource::diskful("node-b")),
        ],
        ..SimState::default()
    })
    .await
    .unwrap();
    let linstor = sim.http_url().unwrap();
    let reclaims = ReclaimEmulator::start(&env, linstor_volume_deleter(&linstor)).await;

    // The PV was just created: no grace period, or it would be skipped.
    let plan = ["plan", "-o", "json", "--grace-period", "0"];
    let before = cli(&env, &linstor, &plan).await;
    assert_eq!(before.status.code(), Some(2), "{}", text(&before.stderr));
    let volume = entry(&before, &name);
    assert_eq!(volume["decision"], "replace", "{volume}");
    assert_eq!(volume["trigger"], "drift");
    assert_eq!(volume["storageClass"], storage_class.as_str());
    assert_eq!(volume["desiredAffinity"], on_node("node-b"));
    assert_eq!(
        volume["currentAffinity"],
        json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}])
    );

    let replaced = cli(
        &env,
        &linstor,
        &["replace", &name, "--yes", "--grace-period", "0"],
    )
    .await;
    let stdout = text(&replaced.stdout);
    assert_eq!(
        replaced.status.code(),
        Some(0),
        "{stdout}{}",
        text(&replaced.stderr)
    );
    assert!(stdout.contains("replace (drift)"), "{stdout}");
    assert!(stdout.contains(&format!("PV {name} replaced")), "{stdout}");
    assert!(stdout.contains("linbit.com/hostname=node-b"), "{stdout}");

    let now: PersistentVolume = env.pvs().get(&name).await.unwrap();
    assert_ne!(now.metadata.uid, original.metadata.uid, "the PV was re-created");
    let mut expected = original.spec.clone().unwrap();
    expected.node_affinity =
        serde_json::from_value(json!({"required": {"nodeSelectorTerms": on_node("node-b")}})).unwrap();
    assert_eq!(
        now.spec.as_ref(),
        Some(&expected),
        "only the node affinity changed"
    );
    assert_eq!(now.metadata.labels, original.metadata.labels);
    let annotations = now.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key(SKIP_RECLAIM_ANNOTATION),
        "{annotations:?}"
    );
    assert_eq!(saved_property(&sim, &name), None, "intent cleared");
    env.wait_for_pvc_phase(&claim, "Bound").await;

    let after = cli(&env, &linstor, &plan).await;
    // Other PVs of the shared cluster may need attention: only this PV's entry counts.
    let volume = entry(&after, &name);
    assert_eq!(volume["decision"], "in-sync", "{volume}");
    assert_eq!(volume["currentAffinity"], on_node("node-b"));

    let again = cli(
        &env,
        &linstor,
        &["replace", &name, "--yes", "--grace-period", "0"],
    )
    .await;
    let stderr = text(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "PV {name} is already in sync with LINSTOR: nothing to replace"
        )),
        "{stderr}"
    );
    // Within its grace period a PV is skipped, and replace says so.
    let young = cli(
        &env,
        &linstor,
        &["replace", &name, "--yes", "--grace-period", "1h"],
    )
    .await;
    let stderr = text(&young.stderr);
    assert_eq!(young.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("PV {name} is skipped: PV is in its grace period")),
        "{stderr}"
    );
    assert!(env.pvs().get(&name).await.unwrap().metadata.uid == now.metadata.uid);
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_malformed_linstor_is_named_and_nothing_is_printed() {
    let Some(env) = TestEnv::setup("live_cli_no_linstor").await else {
        return;
    };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let output = cli(&env, &closed, &["plan"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("cannot connect to any LINSTOR controller"),
        "{stderr}"
    );
    assert!(stderr.contains(&closed), "{stderr}");
    assert!(
        !stderr.contains("Kubernetes API server"),
        "Kubernetes was reachable: {stderr}"
    );

    let sim = Simulator::start(SimState::default()).await.unwrap();
    sim.add_fault(Fault::new(FaultKind::MalformedJson).on_path("/v1/nodes"));
    let output = cli(&env, &sim.http_url().unwrap(), &["plan"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(stderr.contains("reading the LINSTOR nodes"), "{stderr}");
    assert!(stderr.contains("/v1/nodes: cannot decode the answer"), "{stderr}");
    env.cleanup().await;
}
