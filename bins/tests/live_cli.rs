//! `plan` and `replace` against a real Kubernetes control plane and the LINSTOR simulator: a PV
//! whose affinity names node A while LINSTOR keeps its only diskful replica on node B is reported,
//! replaced with every field kept, and then reported in sync. `replace` and `discard-intent`
//! refuse while another holder's Lease is valid, and go on with `--ignore-lease` or once it
//! expired.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use affinity_core::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use affinity_core::k8s_openapi::jiff::{SignedDuration, Timestamp};
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use assert_cmd::Command;
use kube::api::{Api, Patch, PatchParams, PostParams};
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

/// The endpoint key of volume definition writes (the intent log) in the simulator's counters.
const VOLUME_DEFINITION_PUT: &str =
    "PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}";

/// The Lease `name` in the test's namespace, held by `holder` since a renewal `renewed_ago` ago,
/// for `seconds` (created or overwritten).
async fn hold_lease(env: &TestEnv, name: &str, holder: &str, renewed_ago: Duration, seconds: i32) {
    let renewed = Timestamp::now()
        .checked_sub(SignedDuration::try_from(renewed_ago).unwrap())
        .unwrap();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(env.namespace().to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }),
    };
    let mut value = serde_json::to_value(&lease).unwrap();
    value["apiVersion"] = json!("coordination.k8s.io/v1");
    value["kind"] = json!("Lease");
    Api::<Lease>::namespaced(env.client(), env.namespace())
        .patch(
            name,
            &PatchParams::apply("live-cli-test").force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap();
}

/// A bound PV whose affinity names node-a while its only replica is on node-b, on `sim`.
async fn drifted_volume(
    env: &TestEnv,
    sim: &Simulator,
    storage_class: &str,
    suffix: &str,
) -> PersistentVolume {
    let options = VolumeOptions {
        storage_class: Some(storage_class.to_owned()),
        node_affinity: Some(hostname_affinity(&["node-a"])),
        reclaim_policy: "Delete".to_owned(),
        ..VolumeOptions::default()
    };
    let pv = env.create_bound_volume(suffix, &options).await.pv;
    let name = pv.metadata.name.clone().unwrap();
    sim.add_resource_definition(
        SimResourceDefinition::new(&name, 1 << 20).resource(SimResource::diskful("node-b")),
    )
    .unwrap();
    pv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_is_refused_while_another_holder_has_the_lease() {
    let Some(env) = TestEnv::setup("live_cli_fenced_replace").await else {
        return;
    };
    let storage_class = local_only_storage_class(&env).await;
    let sim = Simulator::start(SimState {
        nodes: vec![SimNode::new("node-a"), SimNode::new("node-b")],
        ..SimState::default()
    })
    .await
    .unwrap();
    let linstor = sim.http_url().unwrap();
    let reclaims = ReclaimEmulator::start(&env, linstor_volume_deleter(&linstor)).await;
    let first = drifted_volume(&env, &sim, &storage_class, "first").await;
    let second = drifted_volume(&env, &sim, &storage_class, "second").await;
    let lease = env.name("lease");
    hold_lease(&env, &lease, "controller-0", Duration::ZERO, 3600).await;
    let replace = |pv: &str, extra: &[&str]| {
        let mut args = vec![
            "replace".to_owned(),
            pv.to_owned(),
            "--yes".to_owned(),
            "--grace-period".to_owned(),
            "0".to_owned(),
            "--lease-lock-name".to_owned(),
            lease.clone(),
            "--lease-lock-namespace".to_owned(),
            env.namespace().to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let run = |args: Vec<String>| {
        let (env, linstor) = (&env, &linstor);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(env, linstor, &args).await
        }
    };

    // Held: refused with the holder and the end of its lease, exit code 3, nothing written.
    let name = first.metadata.name.clone().unwrap();
    let refused = run(replace(&name, &[])).await;
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    let expected = format!(
        "refusing to write: Lease {}/{lease} is held by controller-0 until ",
        env.namespace()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("--ignore-lease"), "{stderr}");
    assert!(
        refused.stdout.is_empty(),
        "refused before showing a plan: {}",
        text(&refused.stdout)
    );
    assert_eq!(sim.count(VOLUME_DEFINITION_PUT), 0, "{:?}", sim.counters());
    let now = env.pvs().get(&name).await.unwrap();
    assert_eq!(now.metadata.uid, first.metadata.uid, "the PV was not touched");
    assert_eq!(now.metadata.resource_version, first.metadata.resource_version);

    // --ignore-lease: replaced in spite of the Lease.
    let ignored = run(replace(&name, &["--ignore-lease"])).await;
    let stdout = text(&ignored.stdout);
    assert_eq!(
        ignored.status.code(),
        Some(0),
        "{stdout}{}",
        text(&ignored.stderr)
    );
    assert!(stdout.contains(&format!("PV {name} replaced")), "{stdout}");
    assert!(text(&ignored.stderr).contains("--ignore-lease: not checking"));
    let now = env.pvs().get(&name).await.unwrap();
    assert_ne!(now.metadata.uid, first.metadata.uid, "the PV was re-created");

    // Expired (renewed an hour ago for 30 s): the other PV is replaced without the flag.
    hold_lease(&env, &lease, "controller-0", Duration::from_secs(3600), 30).await;
    let name = second.metadata.name.clone().unwrap();
    let expired = run(replace(&name, &[])).await;
    let stdout = text(&expired.stdout);
    assert_eq!(
        expired.status.code(),
        Some(0),
        "{stdout}{}",
        text(&expired.stderr)
    );
    assert!(stdout.contains(&format!("PV {name} replaced")), "{stdout}");
    let now = env.pvs().get(&name).await.unwrap();
    assert_ne!(now.metadata.uid, second.metadata.uid, "the PV was re-created");
    assert_eq!(saved_property(&sim, &name), None, "intent cleared");
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_intent_is_refused_while_another_holder_has_the_lease() {
    let Some(env) = TestEnv::setup("live_cli_fenced_discard").await else {
        return;
    };
    let definition = env.name("rd");
    let mut rd = SimResourceDefinition::new(&definition, 1 << 20);
    rd.volume_definitions[0].props.insert(
        SAVED_PV_PROPERTY.to_owned(),
        r#"{"metadata":{"name":"pvc-saved"}}"#.to_owned(),
    );
    let sim = Simulator::start(SimState {
        resource_definitions: vec![rd],
        ..SimState::default()
    })
    .await
    .unwrap();
    let linstor = sim.http_url().unwrap();
    let lease = env.name("lease");
    let namespace = env.namespace().to_owned();
    let discard = [
        "discard-intent",
        &definition,
        "--yes",
        "--lease-lock-name",
        &lease,
        "--lease-lock-namespace",
        &namespace,
    ];

    // Held: refused after showing what it would discard; the intent stays.
    hold_lease(&env, &lease, "controller-0", Duration::ZERO, 3600).await;
    let refused = cli(&env, &linstor, &discard).await;
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Lease {namespace}/{lease} is held by controller-0 until "
        )),
        "{stderr}"
    );
    assert!(
        text(&refused.stdout).contains("saved PV pvc-saved"),
        "what would be discarded is shown: {}",
        text(&refused.stdout)
    );
    assert!(saved_property(&sim, &definition).is_some(), "the intent stays");
    assert_eq!(sim.count(VOLUME_DEFINITION_PUT), 0, "{:?}", sim.counters());

    // Expired: discarded without the flag.
    hold_lease(&env, &lease, "controller-0", Duration::from_secs(3600), 30).await;
    let expired = cli(&env, &linstor, &discard).await;
    assert_eq!(expired.status.code(), Some(0), "{}", text(&expired.stderr));
    assert_eq!(saved_property(&sim, &definition), None);

    // Held again, and --ignore-lease: discarded in spite of it.
    hold_lease(&env, &lease, "controller-0", Duration::ZERO, 3600).await;
    sim.with_state(|state| {
        state.resource_definitions[0].volume_definitions[0]
            .props
            .insert(SAVED_PV_PROPERTY.to_owned(), "garbage".to_owned());
    });
    let mut ignoring = discard.to_vec();
    ignoring.push("--ignore-lease");
    let ignored = cli(&env, &linstor, &ignoring).await;
    let stdout = text(&ignored.stdout);
    assert_eq!(
        ignored.status.code(),
        Some(0),
        "{stdout}{}",
        text(&ignored.stderr)
    );
    assert!(stdout.contains("unparseable text \"garbage\""), "{stdout}");
    assert_eq!(saved_property(&sim, &definition), None);
    env.cleanup().await;
}
