//! `linstor-affinity` as the kubectl plugin `kubectl linstor-affinity`: a symlink named
//! `kubectl-linstor_affinity` on the PATH, run by the real kubectl against a real control plane
//! and the LINSTOR simulator, finds the cluster through `$KUBECONFIG` and reports a drifted PV.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube_harness::{CSI_DRIVER, TestEnv, VolumeOptions, hostname_affinity};
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use serde_json::{Value, json};

/// Runs `kubectl ARGS` with `plugins` first on the PATH, the cluster in `$KUBECONFIG` and LINSTOR
/// at `linstor`, off the runtime's threads (the simulator answers on them).
async fn kubectl(kubectl: &Path, plugins: &Path, env: &TestEnv, linstor: &str, args: &[&str]) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(plugins.to_owned()).chain(std::env::split_paths(&path)))
        .unwrap();
    let mut command = Command::new(kubectl);
    command
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", env.cluster().kubeconfig())
        .env("LS_CONTROLLERS", linstor)
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_plugin_which_reports_a_drifted_pv() {
    let test = "kubectl_plugin_plan";
    let Some(env) = TestEnv::setup(test).await else {
        return;
    };
    let Some(kubectl_binary) = env.kubectl(test) else {
        return;
    };
    let plugins = tempfile::tempdir().unwrap();
    let plugin = plugins.path().join("kubectl-linstor_affinity");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_linstor-affinity"), &plugin).unwrap();

    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(env.name("local")),
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
    let options = VolumeOptions {
        storage_class: class.metadata.name.clone(),
        node_affinity: Some(hostname_affinity(&["node-a"])),
        ..VolumeOptions::default()
    };
    let pv = env.create_bound_volume("vol", &options).await.pv;
    let name = pv.metadata.name.unwrap();
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
    let run = |args: &'static [&'static str]| kubectl(&kubectl_binary, plugins.path(), &env, &linstor, args);

    let listed = run(&["plugin", "list"]).await;
    assert!(
        text(&listed.stdout).contains(&plugin.display().to_string()),
        "{}{}",
        text(&listed.stdout),
        text(&listed.stderr)
    );

    let help = run(&["linstor-affinity", "plan", "--help"]).await;
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    assert!(
        text(&help.stdout).contains("Usage: kubectl linstor-affinity plan [OPTIONS]"),
        "{}",
        text(&help.stdout)
    );

    let plan = run(&[
        "linstor-affinity",
        "plan",
        "-o",
        "json",
        "-grace-period=0",
        "-only-drift",
    ])
    .await;
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stderr));
    let report: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let volume = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["pv"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in the plan: {report}"));
    assert_eq!(volume["decision"], "replace", "{volume}");
    assert_eq!(volume["trigger"], "drift", "{volume}");
    assert_eq!(
        volume["desiredAffinity"],
        json!([{"matchExpressions": [{"key": "linbit.com/hostname", "operator": "In", "values": ["node-b"]}]}])
    );
    env.cleanup().await;
}
