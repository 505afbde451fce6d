//! Node drain on the real control plane (with the StatefulSet controller)
//! and the LINSTOR simulator: a cordoned or tainted storage node is
//! evacuated, the workload follows its data at once, and undo restores
//! exactly what the controller changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use affinity_core::drain::DrainRecord;
use affinity_core::k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use affinity_core::k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use affinity_core::names::{AUTOPLACE_TARGET_PROPERTY, DRAIN_RECORD_PROPERTY, EVACUATE_TAINT};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_harness::pod_spec_with_claim;
use linstor_api::sim::{SimNode, SimResource};
use serde_json::json;
use support::{Scenario, affinity_nodes};

const WAIT: Duration = Duration::from_secs(60);
const EVACUATE: [&str; 2] = ["--node-drain-policy", "Evacuate"];

/// Polls `check` until it gives a value, for at most `timeout`.
async fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nodes holding a replica of `definition`, sorted.
fn replica_nodes(scenario: &Scenario, definition: &str) -> Vec<String> {
    scenario.sim.with_state(|state| {
        let mut nodes: Vec<String> = state
            .resource_definitions
            .iter()
            .filter(|rd| rd.name == definition)
            .flat_map(|rd| rd.resources.iter().map(|r| r.node_name.clone()))
            .collect();
        nodes.sort();
        nodes
    })
}

fn linstor_node(scenario: &Scenario, name: &str) -> SimNode {
    scenario
        .sim
        .with_state(|state| state.nodes.iter().find(|n| n.name == name).cloned().unwrap())
}

fn record_of(scenario: &Scenario, name: &str) -> Option<DrainRecord> {
    linstor_node(scenario, name)
        .props
        .get(DRAIN_RECORD_PROPERTY)
        .map(|json| DrainRecord::decode(name, json).unwrap())
}

/// A bound volume (see [`Scenario::volume`]); its PV's name.
async fn volume(scenario: &Scenario, suffix: &str, class: &str, pv_on: usize, data_on: usize) -> String {
    let bound = scenario.volume(suffix, class, pv_on, data_on).await;
    bound.pv.metadata.name.unwrap()
}

fn sorted(mut nodes: Vec<String>) -> Vec<String> {
    nodes.sort();
    nodes
}

/// Merges `spec` into the spec of Kubernetes node `node`.
async fn patch_node_spec(scenario: &Scenario, node: &str, spec: serde_json::Value) {
    let patch = Patch::Merge(json!({ "spec": spec }));
    scenario
        .env
        .nodes()
        .patch(node, &PatchParams::default(), &patch)
        .await
        .unwrap();
}

async fn set_unschedulable(scenario: &Scenario, node: &str, unschedulable: bool) {
    patch_node_spec(scenario, node, json!({ "unschedulable": unschedulable })).await;
}

async fn set_evacuate_taint(scenario: &Scenario, node: &str, tainted: bool) {
    let taints = if tainted {
        json!([{"key": EVACUATE_TAINT, "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    patch_node_spec(scenario, node, json!({ "taints": taints })).await;
}

/// A one-replica StatefulSet `name` whose pod mounts `claim`; returns the pod's name.
async fn statefulset(scenario: &Scenario, name: &str, claim: &str) -> String {
    let mut labels = scenario.env.labels();
    labels.insert("app".to_owned(), scenario.env.name(name));
    let set = StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(scenario.env.labels()),
            ..ObjectMeta::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.to_owned()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec_with_claim(claim)),
            },
            ..StatefulSetSpec::default()
        },
        status: None,
    };
    Api::<StatefulSet>::namespaced(scenario.env.client(), scenario.env.namespace())
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    format!("{name}-0")
}

async fn delete_statefulset(scenario: &Scenario, name: &str) {
    Api::<StatefulSet>::namespaced(scenario.env.client(), scenario.env.namespace())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Evicts `pod` through the Eviction API (policy/v1beta1 on this API
/// server), as `kubectl drain` does; no kubelet runs, so no grace period.
async fn evict(scenario: &Scenario, pod: &str) {
    let namespace = scenario.env.namespace();
    let body = json!({
        "apiVersion": "policy/v1beta1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
        "deleteOptions": {"gracePeriodSeconds": 0},
    });
    let request = http::Request::post(format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    scenario
        .env
        .client()
        .request::<serde_json::Value>(request)
        .await
        .unwrap();
}

/// Waits until pod `name` (a new one, not `old_uid`) is scheduled, and returns its node.
async fn wait_for_pod_on(scenario: &Scenario, name: &str, old_uid: Option<&str>) -> String {
    let pod = scenario
        .env
        .wait_for(&scenario.env.pods(), name, "scheduling", WAIT, |pod: &Pod| {
            pod.metadata.uid.as_deref() != old_uid
                && pod.metadata.deletion_timestamp.is_none()
                && pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        })
        .await;
    pod.spec.unwrap().node_name.unwrap()
}

/// The reasons of the events on Kubernetes node `node`, oldest first.
async fn node_event_reasons(scenario: &Scenario, node: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(scenario.env.client(), "default");
    let mut events: Vec<Event> = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={node}")))
        .await
        .unwrap()
        .items;
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    events
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Node"))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn wait_for_node_event(scenario: &Scenario, node: &str, reason: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = node_event_reasons(scenario, node).await;
        if let Some((_, message)) = events.iter().find(|(r, _)| r == reason) {
            return message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event on node {node}; events: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until LINSTOR node `name` carries nothing of a drain: no
/// EVACUATE flag, no drain record, no AutoplaceTarget.
async fn wait_for_undone(scenario: &Scenario, name: &str) {
    wait_until(&format!("LINSTOR node {name} restored"), WAIT, || {
        let node = linstor_node(scenario, name);
        (!node.flags.iter().any(|f| f == "EVACUATE")
            && !node.props.contains_key(DRAIN_RECORD_PROPERTY)
            && !node.props.contains_key(AUTOPLACE_TARGET_PROPERTY))
        .then_some(())
    })
    .await;
}

/// The story of a drain: the pod on node A, its volume local to A. The
/// node is asked to drain (`request`), the pod is evicted; it must be
/// scheduled where LINSTOR placed the new replica, and the PV must drop A
/// once the old replica is gone. `release` undoes the request.
async fn workload_follows_its_data(test: &str, extra: &[&str], request: Request) {
    let Some(scenario) = Scenario::new(test, 3).await else {
        return;
    };
    let (a, b, c) = (
        scenario.node(0).to_owned(),
        scenario.node(1).to_owned(),
        scenario.node(2).to_owned(),
    );
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("data", &class, 0, 0).await;
    let pv = bound.pv.metadata.name.clone().unwrap();
    let claim = bound.pvc.metadata.name.clone().unwrap();
    let pod = statefulset(&scenario, "app", &claim).await;
    assert_eq!(wait_for_pod_on(&scenario, &pod, None).await, a);
    let old_uid = scenario.env.pods().get(&pod).await.unwrap().metadata.uid;
    // The pod runs on A: its replica there is in use (DRBD primary).
    scenario.sim.set_in_use(&pv, &a, true).unwrap();

    let controller = scenario.controller(extra);
    controller.wait_for_line("node drain on", WAIT).await;
    request.apply(&scenario, &a, true).await;

    // LINSTOR placed a replacement on B or C; the PV allows both nodes.
    let target = wait_until("a replacement replica", WAIT, || {
        replica_nodes(&scenario, &pv).into_iter().find(|n| *n != a)
    })
    .await;
    assert!(target == b || target == c, "{target}");
    let placed = Instant::now();
    scenario
        .wait_for_pv(&pv, "affinity of both nodes", WAIT, |pv| {
            sorted(affinity_nodes(pv)) == sorted(vec![a.clone(), target.clone()])
        })
        .await;
    let allowed = placed.elapsed();
    let record = record_of(&scenario, &a).unwrap();
    assert!(record.evacuated && record.set_autoplace_target, "{record:?}");
    assert!(linstor_node(&scenario, &a).flags.iter().any(|f| f == "EVACUATE"));
    wait_for_node_event(&scenario, &a, "NodeDrainStarted").await;

    // kubectl drain evicts the pod: its replacement goes where the data is.
    evict(&scenario, &pod).await;
    assert_eq!(wait_for_pod_on(&scenario, &pod, old_uid.as_deref()).await, target);
    eprintln!(
        "PV allowed the new node {:.2} s after the replica appeared",
        allowed.as_secs_f64()
    );

    // The old replica is no longer in use: LINSTOR removes it, the PV drops A.
    scenario.sim.set_in_use(&pv, &a, false).unwrap();
    scenario.sim.set_in_use(&pv, &target, true).unwrap();
    assert_eq!(replica_nodes(&scenario, &pv), vec![target.clone()]);
    scenario
        .wait_for_pv(&pv, "affinity of the new node only", WAIT, |pv| {
            affinity_nodes(pv) == vec![target.clone()]
        })
        .await;
    wait_for_node_event(&scenario, &a, "NodeDrainCompleted").await;

    // Undo: the LINSTOR node is restored and nothing of ours is left.
    request.apply(&scenario, &a, false).await;
    wait_for_undone(&scenario, &a).await;
    wait_for_node_event(&scenario, &a, "NodeDrainUndone").await;
    assert_eq!(replica_nodes(&scenario, &pv), vec![target]);
    delete_statefulset(&scenario, "app").await;
    scenario.finish().await;
}

/// How a test asks for a drain.
#[derive(Clone, Copy)]
enum Request {
    Cordon,
    Taint,
}

impl Request {
    async fn apply(self, scenario: &Scenario, node: &str, on: bool) {
        match self {
            Self::Cordon => set_unschedulable(scenario, node, on).await,
            Self::Taint => set_evacuate_taint(scenario, node, on).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_is_evacuated_the_pod_follows_and_uncordon_restores_it() {
    workload_follows_its_data("drain-cordon", &EVACUATE, Request::Cordon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evacuate_taint_drains_whatever_the_policy() {
    workload_follows_its_data("drain-taint", &[], Request::Taint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_schedule_sets_and_removes_only_its_own_autoplace_target() {
    let Some(scenario) = Scenario::new("drain-noschedule", 3).await else {
        return;
    };
    let (a, b) = (scenario.node(0).to_owned(), scenario.node(1).to_owned());
    // An administrator keeps B out of autoplacement already.
    scenario.sim.with_state(|state| {
        let node = state.nodes.iter_mut().find(|n| n.name == b).unwrap();
        node.props
            .insert(AUTOPLACE_TARGET_PROPERTY.to_owned(), "false".to_owned());
    });
    let class = scenario.local_only_class().await;
    let on_a = volume(&scenario, "on-a", &class, 0, 0).await;
    let on_b = volume(&scenario, "on-b", &class, 1, 1).await;
    let controller = scenario.controller(&["--node-drain-policy", "NoSchedule"]);
    controller.wait_for_line("node drain on", WAIT).await;

    set_unschedulable(&scenario, &a, true).await;
    set_unschedulable(&scenario, &b, true).await;
    for node in [&a, &b] {
        wait_until("a drain record", WAIT, || record_of(&scenario, node)).await;
    }
    assert_eq!(
        linstor_node(&scenario, &a).props[AUTOPLACE_TARGET_PROPERTY],
        "false"
    );
    assert!(record_of(&scenario, &a).unwrap().set_autoplace_target);
    assert!(!record_of(&scenario, &b).unwrap().set_autoplace_target);
    for node in [&a, &b] {
        assert!(
            !linstor_node(&scenario, node)
                .flags
                .iter()
                .any(|f| f == "EVACUATE")
        );
    }
    wait_for_node_event(&scenario, &a, "NodeDrainStarted").await;

    set_unschedulable(&scenario, &a, false).await;
    set_unschedulable(&scenario, &b, false).await;
    wait_for_undone(&scenario, &a).await;
    wait_until("B's record removed", WAIT, || {
        record_of(&scenario, &b).is_none().then_some(())
    })
    .await;
    assert_eq!(
        linstor_node(&scenario, &b)
            .props
            .get(AUTOPLACE_TARGET_PROPERTY)
            .map(String::as_str),
        Some("false"),
        "the administrator's AutoplaceTarget stays"
    );
    // Replicas never moved.
    assert_eq!(replica_nodes(&scenario, &on_a), vec![a]);
    assert_eq!(replica_nodes(&scenario, &on_b), vec![b]);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_drained_one_after_the_other_never_receive_each_others_replicas() {
    let Some(scenario) = Scenario::new("drain-two", 3).await else {
        return;
    };
    let (a, b, c) = (
        scenario.node(0).to_owned(),
        scenario.node(1).to_owned(),
        scenario.node(2).to_owned(),
    );
    let class = scenario.local_only_class().await;
    let on_a = volume(&scenario, "on-a", &class, 0, 0).await;
    let on_b = volume(&scenario, "on-b", &class, 1, 1).await;
    // As loaded as B, and after it by name: only do_not_target keeps A's replica off B.
    scenario.volume("on-c", &class, 2, 2).await;
    // A's volume is in use: its evacuation stays running.
    scenario.sim.set_in_use(&on_a, &a, true).unwrap();
    set_unschedulable(&scenario, &a, true).await;
    set_unschedulable(&scenario, &b, true).await;
    let controller = scenario.controller(&EVACUATE);
    controller.wait_for_line("node drain on", WAIT).await;

    // One evacuation at a time: A first, B waits, and A's replacement avoided B.
    let queued = wait_for_node_event(&scenario, &b, "NodeDrainQueued").await;
    assert!(queued.contains("at most 1"), "{queued}");
    wait_until("A's replacement", WAIT, || {
        (replica_nodes(&scenario, &on_a).len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        replica_nodes(&scenario, &on_a),
        sorted(vec![a.clone(), c.clone()])
    );
    assert!(linstor_node(&scenario, &a).flags.iter().any(|f| f == "EVACUATE"));
    assert!(!linstor_node(&scenario, &b).flags.iter().any(|f| f == "EVACUATE"));

    // A's old replica is released: A completes, B starts, and avoids A.
    scenario.sim.set_in_use(&on_a, &a, false).unwrap();
    wait_until("B evacuated", WAIT, || {
        (replica_nodes(&scenario, &on_b) == vec![c.clone()]).then_some(())
    })
    .await;
    assert_eq!(replica_nodes(&scenario, &on_a), vec![c.clone()]);

    // Undoing A leaves B's drain alone.
    set_unschedulable(&scenario, &a, false).await;
    wait_for_undone(&scenario, &a).await;
    let b_node = linstor_node(&scenario, &b);
    assert!(b_node.flags.iter().any(|f| f == "EVACUATE"), "{b_node:?}");
    assert!(record_of(&scenario, &b).unwrap().evacuated);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuation_linstor_refuses_changes_nothing_and_says_why() {
    let Some(scenario) = Scenario::new("drain-refused", 2).await else {
        return;
    };
    let (a, b) = (scenario.node(0).to_owned(), scenario.node(1).to_owned());
    let class = scenario.local_only_class().await;
    // Two replicas on the only two nodes: no node is left for a replacement.
    let pv = volume(&scenario, "both", &class, 0, 0).await;
    scenario.sim.add_resource(&pv, SimResource::diskful(&b)).unwrap();
    let controller = scenario.controller(&EVACUATE);
    controller.wait_for_line("node drain on", WAIT).await;
    scenario
        .wait_for_pv(&pv, "affinity of both nodes", WAIT, |pv| {
            affinity_nodes(pv).len() == 2
        })
        .await;

    set_unschedulable(&scenario, &a, true).await;
    let message = wait_for_node_event(&scenario, &a, "NodeDrainBlocked").await;
    assert!(message.contains("LINSTOR refused"), "{message}");
    let record = record_of(&scenario, &a).unwrap();
    assert!(!record.evacuated && record.blocked.is_some(), "{record:?}");
    assert!(!linstor_node(&scenario, &a).flags.iter().any(|f| f == "EVACUATE"));
    assert_eq!(replica_nodes(&scenario, &pv), sorted(vec![a.clone(), b.clone()]));

    // drain-status shows it, with exit code 2.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_linstor-affinity"))
        .args(["drain-status", "-o", "json", "--kubeconfig"])
        .arg(scenario.env.cluster().kubeconfig())
        .env("LS_CONTROLLERS", scenario.sim.http_url().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let row = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["node"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["state"], "Blocked", "{row}");
    assert!(
        row["blockedReason"].as_str().unwrap().contains("LINSTOR refused"),
        "{row}"
    );
    assert_eq!(row["replicasLeft"], 1);

    // A third node makes it possible: the refused evacuation is asked again.
    let c = format!("{b}-extra");
    scenario.sim.add_node(SimNode::new(&c)).unwrap();
    wait_until("the replacement on the new node", WAIT, || {
        replica_nodes(&scenario, &pv).contains(&c).then_some(())
    })
    .await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_by_another_actor_is_evacuated_again_a_bounded_number_of_times() {
    let Some(scenario) = Scenario::new("drain-restorer", 3).await else {
        return;
    };
    let a = scenario.node(0).to_owned();
    let class = scenario.local_only_class().await;
    let pv = volume(&scenario, "data", &class, 0, 0).await;
    scenario.sim.set_in_use(&pv, &a, true).unwrap();
    // Like the Piraeus Operator for a running satellite: restore evacuating nodes.
    scenario
        .sim
        .set_restore_evacuated_every(Some(Duration::from_millis(1500)));
    let controller = scenario.controller(&EVACUATE);
    controller.wait_for_line("node drain on", WAIT).await;

    set_unschedulable(&scenario, &a, true).await;
    let message = wait_for_node_event(&scenario, &a, "NodeDrainBlocked").await;
    assert!(message.contains("restored by another actor"), "{message}");
    let evacuations = scenario.sim.count("PUT /v1/nodes/{node}/evacuate");
    // The first evacuation and one per tolerated restore, no more.
    assert_eq!(
        evacuations,
        1 + u64::from(affinity_core::drain::DEFAULT_MAX_RESTORES)
    );
    let reasons: Vec<String> = node_event_reasons(&scenario, &a)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "NodeDrainRestoredByOther"),
        "{reasons:?}"
    );
    // The data is safe: the in-use replica is still there, with its replacement.
    let replicas = replica_nodes(&scenario, &pv);
    assert!(replicas.contains(&a) && replicas.len() == 2, "{replicas:?}");
    // Stopped for good: no more evacuations.
    controller.wait_for_full_passes(3, WAIT).await;
    assert_eq!(scenario.sim.count("PUT /v1/nodes/{node}/evacuate"), evacuations);
    scenario.sim.set_restore_evacuated_every(None);

    // Uncordon: the record goes, nothing of ours is left.
    set_unschedulable(&scenario, &a, false).await;
    wait_for_undone(&scenario, &a).await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_evacuated_under_the_evacuate_delete_policy() {
    let Some(scenario) = Scenario::new("drain-deleted", 2).await else {
        return;
    };
    let (a, b) = (scenario.node(0).to_owned(), scenario.node(1).to_owned());
    let class = scenario.local_only_class().await;
    let pv = volume(&scenario, "data", &class, 0, 0).await;
    let controller = scenario.controller(&["--node-delete-policy", "Evacuate"]);
    controller.wait_for_line("node drain on", WAIT).await;
    controller.wait_for_full_passes(1, WAIT).await;
    // A cordon alone does nothing under the default drain policy Ignore.
    set_unschedulable(&scenario, &a, true).await;
    controller.wait_for_full_passes(2, WAIT).await;
    assert!(record_of(&scenario, &a).is_none());

    scenario
        .env
        .nodes()
        .delete(&a, &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the data moved off the deleted node", WAIT, || {
        (replica_nodes(&scenario, &pv) == vec![b.clone()]).then_some(())
    })
    .await;
    scenario
        .wait_for_pv(&pv, "affinity of the remaining node", WAIT, |pv| {
            affinity_nodes(pv) == vec![b.clone()]
        })
        .await;
    let record = record_of(&scenario, &a).unwrap();
    assert_eq!(record.cause, affinity_core::drain::DrainCause::Deleted);
    assert!(linstor_node(&scenario, &a).flags.iter().any(|f| f == "EVACUATE"));
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_evacuation_annotations_give_the_affinity_it_expects() {
    let Some(scenario) = Scenario::new("drain-operator", 2).await else {
        return;
    };
    let a = scenario.node(0).to_owned();
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("data", &class, 0, 0).await;
    let pv = bound.pv.metadata.name.clone().unwrap();
    let controller = scenario.controller(&[]);
    controller.wait_for_full_passes(1, WAIT).await;
    scenario.assert_pv_unchanged(&bound.pv).await;

    // While it evacuates A, the operator makes the local-only PV reachable from anywhere.
    let annotations = BTreeMap::from([
        (format!("override.piraeus.io/{a}"), "true".to_owned()),
        (
            format!("wait-for-reattach.evacuation.piraeus.io/{a}"),
            String::new(),
        ),
        (
            "linstor.csi.linbit.com/evacuation-action".to_owned(),
            "AffinityOverride".to_owned(),
        ),
    ]);
    scenario
        .env
        .pvs()
        .patch(
            &pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .unwrap();
    let replaced = scenario
        .wait_for_pv(&pv, "no node affinity", WAIT, |pv| {
            pv.metadata.uid != bound.pv.metadata.uid
                && pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).is_none()
        })
        .await;
    let kept = replaced.metadata.annotations.unwrap_or_default();
    for key in annotations.keys() {
        assert!(kept.contains_key(key), "{key} lost: {kept:?}");
    }

    // The operator removes its override after the evacuation: local again.
    let removed: BTreeMap<String, Option<String>> = annotations.keys().map(|k| (k.clone(), None)).collect();
    scenario
        .env
        .pvs()
        .patch(
            &pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": removed}})),
        )
        .await
        .unwrap();
    scenario
        .wait_for_pv(&pv, "local affinity again", WAIT, |pv| {
            affinity_nodes(pv) == vec![a.clone()]
        })
        .await;
    scenario.finish().await;
}

/// `scripts/bench-drain`: time from the drain request to the replacement
/// pod scheduled on the new node and to the old replicas gone, for 1 and
/// for 100 volumes on the node. Prints its figures; asserts only that the
/// drain finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-drain runs it"]
async fn bench_drain() {
    for volumes in [1usize, 100] {
        bench_drain_of(volumes).await;
    }
}

async fn bench_drain_of(volumes: usize) {
    let Some(scenario) = Scenario::new(&format!("bench-drain-{volumes}"), 3).await else {
        return;
    };
    let a = scenario.node(0).to_owned();
    let class = scenario.local_only_class().await;
    let mut names = Vec::new();
    let mut claims = Vec::new();
    for index in 0..volumes {
        let bound = scenario.volume(&format!("v{index}"), &class, 0, 0).await;
        let pv = bound.pv.metadata.name.clone().unwrap();
        scenario.sim.set_in_use(&pv, &a, true).unwrap();
        names.push(pv);
        claims.push(bound.pvc.metadata.name.unwrap());
    }
    // The pod of the first volume is the one followed.
    let pod = statefulset(&scenario, "app", &claims[0]).await;
    assert_eq!(wait_for_pod_on(&scenario, &pod, None).await, a);
    let old_uid = scenario.env.pods().get(&pod).await.unwrap().metadata.uid;
    let controller = scenario.controller(&EVACUATE);
    controller.wait_for_full_passes(1, WAIT).await;

    let cordoned = Instant::now();
    set_unschedulable(&scenario, &a, true).await;
    evict(&scenario, &pod).await;
    let target = wait_until("the replacement replica", WAIT, || {
        replica_nodes(&scenario, &names[0]).into_iter().find(|n| *n != a)
    })
    .await;
    let replica_at = cordoned.elapsed();
    scenario
        .wait_for_pv(&names[0], "the new node allowed", WAIT, |pv| {
            affinity_nodes(pv).contains(&target)
        })
        .await;
    let pod_pv_at = cordoned.elapsed();
    assert_eq!(wait_for_pod_on(&scenario, &pod, old_uid.as_deref()).await, target);
    let scheduled_at = cordoned.elapsed();
    // Every PV allows a second node (each volume's replica goes where LINSTOR put it).
    let deadline = Instant::now() + Duration::from_secs(120);
    let selector = format!("{}={}", kube_harness::TEST_LABEL, scenario.env.prefix());
    loop {
        let pvs = scenario
            .env
            .pvs()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items;
        if pvs.len() == volumes && pvs.iter().all(|pv| affinity_nodes(pv).len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "not every PV allows its new node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_allowed_at = cordoned.elapsed();
    let released = Instant::now();
    for name in &names {
        scenario.sim.set_in_use(name, &a, false).unwrap();
    }
    for name in &names {
        scenario
            .wait_for_pv(name, "old node dropped", Duration::from_secs(120), |pv| {
                !affinity_nodes(pv).contains(&a)
            })
            .await;
    }
    let dropped_after_release = released.elapsed();
    let seconds = |d: Duration| d.as_secs_f64();
    println!(
        "bench-drain volumes={volumes}: after the cordon: replacement replica {:.2} s; the pod's PV allows \
         the new node {:.2} s ({:.2} s after the replica); pod scheduled there {:.2} s ({:.2} s after \
         the replica); every PV allows its new node {:.2} s; after the old replicas were released: \
         every PV without the old node {:.2} s",
        seconds(replica_at),
        seconds(pod_pv_at),
        seconds(pod_pv_at - replica_at),
        seconds(scheduled_at),
        seconds(scheduled_at - replica_at),
        seconds(all_allowed_at),
        seconds(dropped_after_release)
    );
    delete_statefulset(&scenario, "app").await;
    scenario.finish().await;
}
