//! The replace protocol against a real Kubernetes control plane and the
//! LINSTOR simulator: a drifted PV is replaced in place, and a replace
//! interrupted after its Retain patch converges with the original metadata.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use affinity_core::k8s_openapi::api::core::v1::Event as CoreEvent;
use affinity_core::k8s_openapi::api::core::v1::{PersistentVolume, VolumeNodeAffinity};
use affinity_core::k8s_openapi::api::events::v1::Event;
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use affinity_core::{
    Accessibility, Action, DecisionSettings, LinstorSnapshot, Planner, Properties, RemoteAccessPolicy,
    ReplaceTrigger, Replacement, Replica, ResourceDefinitionState, VolumeDefinitionState, VolumeId,
    desired_node_affinity, encode_saved_pv, node_segments, replacement_pv, restore_policy_of,
};
use affinity_kube::replace::{ReplaceError, ReplaceStep, StepObserver};
use affinity_kube::{IntentLog, ReplaceProtocol};
use futures::future::BoxFuture;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_harness::{ReclaimEmulator, TestEnv, VolumeOptions, hostname_affinity, linstor_volume_deleter};
use linstor_api::Client;
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use serde_json::json;

const OVERRIDE: &str = "override.piraeus.io/remote-access-policy";

/// A bound PV (reclaim policy Delete, affinity on `node-a`, local-only
/// policy through the override annotation) whose data LINSTOR keeps on `node-b`.
async fn drifted_volume(env: &TestEnv) -> (PersistentVolume, VolumeId) {
    let options = VolumeOptions {
        reclaim_policy: "Delete".to_owned(),
        node_affinity: Some(hostname_affinity(&["node-a"])),
        ..VolumeOptions::default()
    };
    let bound = env.create_bound_volume("vol", &options).await;
    let name = bound.pv.metadata.name.clone().unwrap();
    let annotate = json!({ "metadata": { "annotations": { OVERRIDE: "false" } } });
    let live = env
        .pvs()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    (live, VolumeId::new(name, 0))
}

/// The simulator holding `volume` on `node-b`, a client of it, and the
/// reclaim emulator of `env`'s PVs deleting its resource definitions.
async fn simulator(env: &TestEnv, volume: &VolumeId) -> (Simulator, Client, ReclaimEmulator) {
    let state = SimState {
        nodes: vec![SimNode::new("node-a"), SimNode::new("node-b")],
        resource_definitions: vec![
            SimResourceDefinition::new(&volume.resource_definition, 1 << 20)
                .resource(SimResource::diskful("node-b")),
        ],
        ..SimState::default()
    };
    let sim = Simulator::start(state).await.unwrap();
    let client = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let reclaims = ReclaimEmulator::start(env, linstor_volume_deleter(&sim.http_url().unwrap())).await;
    (sim, client, reclaims)
}

/// The engine's view of the same LINSTOR state, with `saved` as the intent.
fn snapshot(volume: &VolumeId, saved: Option<String>) -> LinstorSnapshot {
    let mut linstor = LinstorSnapshot::new();
    linstor.insert_node("node-a", Properties::new());
    linstor.insert_node("node-b", Properties::new());
    linstor.insert_resource_definition(ResourceDefinitionState {
        name: volume.resource_definition.clone(),
        properties: Properties::new(),
        volume_definitions: vec![VolumeDefinitionState {
            volume_number: 0,
            properties: saved
                .map(|json| (SAVED_PV_PROPERTY.to_owned(), json))
                .into_iter()
                .collect(),
        }],
    });
    linstor.push_replica(Replica::new(
        &volume.resource_definition,
        "node-b",
        Vec::<String>::new(),
    ));
    linstor
}

fn decide(linstor: &LinstorSnapshot, pv: &PersistentVolume) -> Replacement {
    let classes: BTreeMap<String, Properties> = BTreeMap::new();
    let settings = DecisionSettings::at("Aux/topology", Duration::ZERO, SystemTime::now());
    let mut plan = Planner::new(linstor, &classes, &settings).plan([pv]);
    assert_eq!(plan.decisions.len(), 1, "{plan:?}");
    match plan.decisions.remove(0).outcome {
        Ok(Action::Replace(replacement)) => *replacement,
        other => panic!("expected a replacement, got {other:?}"),
    }
}

/// The affinity the engine writes for a local-only volume on `node-b`.
fn on_node_b() -> Option<VolumeNodeAffinity> {
    let segments = node_segments("node-b", &Properties::new(), "Aux/topology");
    desired_node_affinity(&Accessibility::from_nodes(
        &RemoteAccessPolicy::local_only(),
        [&segments],
    ))
}

fn saved_property(sim: &Simulator, volume: &VolumeId) -> Option<String> {
    let state = sim.state();
    let rd = state
        .resource_definitions
        .iter()
        .find(|rd| rd.name == volume.resource_definition)
        .unwrap();
    rd.volume_definitions
        .iter()
        .find(|vd| vd.volume_number == 0)
        .and_then(|vd| vd.props.get(SAVED_PV_PROPERTY).cloned())
}

async fn assert_replaced(env: &TestEnv, original: &PersistentVolume, sim: &Simulator, volume: &VolumeId) {
    let name = original.metadata.name.as_deref().unwrap();
    let now = env.pvs().get(name).await.unwrap();
    assert_ne!(now.metadata.uid, original.metadata.uid, "the PV was re-created");
    let spec = now.spec.as_ref().unwrap();
    assert_eq!(spec.node_affinity, on_node_b());
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    let annotations = now.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key(SKIP_RECLAIM_ANNOTATION),
        "{annotations:?}"
    );
    assert_eq!(annotations.get(OVERRIDE).map(String::as_str), Some("false"));
    assert_eq!(spec.claim_ref, original.spec.as_ref().unwrap().claim_ref);
    assert_eq!(saved_property(sim, volume), None, "intent cleared");
    let started = Instant::now();
    let claim = spec.claim_ref.as_ref().unwrap().name.clone().unwrap();
    env.wait_for_pvc_phase(&claim, "Bound").await;
    eprintln!(
        "claim Bound again {:?} after the check started",
        started.elapsed()
    );
}

#[tokio::test]
async fn drifted_pv_is_replaced_in_place() {
    let Some(env) = TestEnv::setup("replace_drift").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (sim, linstor, reclaims) = simulator(&env, &volume).await;
    let replacement = decide(&snapshot(&volume, None), &live);
    assert_eq!(replacement.trigger, ReplaceTrigger::AffinityDrift);

    ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .run(&volume, &replacement)
        .await
        .unwrap();

    assert_replaced(&env, &live, &sim, &volume).await;
    let counters = sim.counters();
    let intent_writes: u64 = counters
        .iter()
        .filter(|(endpoint, _)| endpoint.contains("volume-definitions/{volume_number}"))
        .map(|(_, count)| *count)
        .sum();
    assert_eq!(intent_writes, 2, "save and clear: {counters:?}");

    // Announced on the claim (events.k8s.io/v1) and on the PV (core/v1).
    let claim = live
        .spec
        .as_ref()
        .unwrap()
        .claim_ref
        .as_ref()
        .unwrap()
        .name
        .clone()
        .unwrap();
    let claim_events: Api<Event> = Api::namespaced(env.client(), env.namespace());
    let on_claim = claim_events.list(&ListParams::default()).await.unwrap();
    assert!(
        on_claim
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("VolumeAffinityUpdated")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim.as_str())
                && e.reporting_controller.as_deref() == Some("LinstorAffinityController")),
        "{:?}",
        on_claim.items
    );
    let pv_events: Api<CoreEvent> = Api::namespaced(env.client(), "default");
    let on_pv = pv_events.list(&ListParams::default()).await.unwrap();
    assert!(
        on_pv
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("VolumeAffinityUpdated")
                && e.involved_object.name.as_deref() == live.metadata.name.as_deref()),
        "no PV event"
    );
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test]
async fn replace_interrupted_after_the_retain_patch_converges() {
    let Some(env) = TestEnv::setup("replace_resume").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (sim, linstor, reclaims) = simulator(&env, &volume).await;
    let name = live.metadata.name.clone().unwrap();

    // The first attempt saved its intent and set Retain, then died.
    let intent = encode_saved_pv(&replacement_pv(&live, on_node_b())).unwrap();
    linstor.save(&volume, &intent).await.unwrap();
    let keep = json!({
        "metadata": { "annotations": { SKIP_RECLAIM_ANNOTATION: "true" } },
        "spec": { "persistentVolumeReclaimPolicy": "Retain" },
    });
    let patched = env
        .pvs()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&keep))
        .await
        .unwrap();

    let replacement = decide(&snapshot(&volume, saved_property(&sim, &volume)), &patched);
    assert_eq!(replacement.trigger, ReplaceTrigger::ResumeInterrupted);
    ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .run(&volume, &replacement)
        .await
        .unwrap();

    assert_replaced(&env, &live, &sim, &volume).await;
    reclaims.finish().await;
    env.cleanup().await;
}

/// Acts once, as another writer would, right after protocol step `at`; the
/// protocol goes on only when the action is done.
struct Adversary {
    at: ReplaceStep,
    action: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Adversary {
    fn at(at: ReplaceStep, action: impl Future<Output = ()> + Send + 'static) -> Arc<Self> {
        Arc::new(Self {
            at,
            action: Mutex::new(Some(Box::pin(action))),
        })
    }
}

impl StepObserver for Adversary {
    fn step_done(&self, _pv: &str, step: ReplaceStep) -> BoxFuture<'static, ()> {
        let action = if step == self.at {
            self.action.lock().unwrap().take()
        } else {
            None
        };
        Box::pin(async move {
            if let Some(action) = action {
                action.await;
            }
        })
    }
}

fn reclaim_policy(pv: &PersistentVolume) -> Option<&str> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
}

/// Decides again from the intent saved in the simulator and the PV as it
/// is now; returns the decision error.
async fn decided_again(env: &TestEnv, sim: &Simulator, volume: &VolumeId, name: &str) -> String {
    let live = env.pvs().get_opt(name).await.unwrap();
    let linstor = snapshot(volume, saved_property(sim, volume));
    let classes: BTreeMap<String, Properties> = BTreeMap::new();
    let settings = DecisionSettings::at("Aux/topology", Duration::ZERO, SystemTime::now());
    let pvs: Vec<&PersistentVolume> = live.iter().collect();
    let decision = Planner::new(&linstor, &classes, &settings)
        .decide_resource_definition(&volume.resource_definition, &pvs)
        .into_iter()
        .find(|decision| decision.volume == *volume)
        .expect("a decision");
    match decision.outcome {
        Err(error) => error.to_string(),
        other => panic!("expected nothing to be written, got {other:?}"),
    }
}

#[tokio::test]
async fn a_writer_that_puts_delete_back_after_the_retain_patch_stops_the_delete() {
    let Some(env) = TestEnv::setup("replace_revert").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (sim, linstor, reclaims) = simulator(&env, &volume).await;
    let name = live.metadata.name.clone().unwrap();
    let replacement = decide(&snapshot(&volume, None), &live);
    let pvs = env.pvs();
    let reverter = Adversary::at(ReplaceStep::RetainSet, {
        let (pvs, name) = (pvs.clone(), name.clone());
        async move {
            let back = json!({ "spec": { "persistentVolumeReclaimPolicy": "Delete" } });
            pvs.patch(&name, &PatchParams::default(), &Patch::Merge(&back))
                .await
                .unwrap();
        }
    });
    let error = ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .with_observer(reverter)
        .run(&volume, &replacement)
        .await
        .unwrap_err();
    assert!(matches!(error, ReplaceError::Changed { .. }), "{error}");

    let now = pvs.get(&name).await.unwrap();
    assert_eq!(now.metadata.uid, live.metadata.uid, "the PV is the original");
    assert!(
        now.metadata.deletion_timestamp.is_none(),
        "the PV was not deleted"
    );
    assert_eq!(reclaim_policy(&now), Some("Delete"));
    let message = decided_again(&env, &sim, &volume, &name).await;
    assert!(message.contains("set by someone else"), "{message}");
    assert!(saved_property(&sim, &volume).is_some(), "intent kept");
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_pv_changed_after_the_decision_is_not_reverted() {
    let Some(env) = TestEnv::setup("replace_changed").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (sim, linstor, reclaims) = simulator(&env, &volume).await;
    let name = live.metadata.name.clone().unwrap();
    let replacement = decide(&snapshot(&volume, None), &live);
    let pvs = env.pvs();
    let labeller = Adversary::at(ReplaceStep::IntentSaved, {
        let (pvs, name) = (pvs.clone(), name.clone());
        async move {
            let label = json!({ "metadata": { "labels": { "example.com/tier": "gold" } } });
            pvs.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
                .await
                .unwrap();
        }
    });
    let error = ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .with_observer(labeller)
        .run(&volume, &replacement)
        .await
        .unwrap_err();
    assert!(matches!(error, ReplaceError::Changed { .. }), "{error}");

    let now = pvs.get(&name).await.unwrap();
    assert_eq!(now.metadata.uid, live.metadata.uid);
    assert_eq!(
        reclaim_policy(&now),
        Some("Delete"),
        "not even the Retain patch landed"
    );
    let labels = now.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("example.com/tier").map(String::as_str), Some("gold"));
    let message = decided_again(&env, &sim, &volume, &name).await;
    assert!(message.contains("labels differs"), "{message}");
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_pv_re_created_by_hand_during_a_replace_is_left_alone() {
    let Some(env) = TestEnv::setup("replace_by_hand").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (sim, linstor, reclaims) = simulator(&env, &volume).await;
    let name = live.metadata.name.clone().unwrap();
    let replacement = decide(&snapshot(&volume, None), &live);
    let pvs = env.pvs();
    let mut by_hand = replacement_pv(&live, None);
    by_hand
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("example.com/by".to_owned(), "admin".to_owned());
    let admin = Adversary::at(ReplaceStep::FinalizersRemoved, {
        let (pvs, name, by_hand) = (pvs.clone(), name.clone(), by_hand.clone());
        async move {
            // The old PV goes away first, as it would for the admin.
            while pvs.get_opt(&name).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            pvs.create(&PostParams::default(), &by_hand).await.unwrap();
        }
    });
    let error = ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .with_observer(admin)
        .run(&volume, &replacement)
        .await
        .unwrap_err();
    assert!(matches!(error, ReplaceError::Occupied { .. }), "{error}");

    let now = pvs.get(&name).await.unwrap();
    let labels = now.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("example.com/by").map(String::as_str), Some("admin"));
    assert_eq!(
        now.spec.as_ref().unwrap().node_affinity,
        None,
        "the admin's PV as written"
    );
    let message = decided_again(&env, &sim, &volume, &name).await;
    assert!(message.contains("not the UID"), "{message}");
    assert!(saved_property(&sim, &volume).is_some(), "intent kept");
    reclaims.finish().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_claim_deleted_between_delete_and_create_keeps_the_new_pv_at_retain() {
    let Some(env) = TestEnv::setup("replace_claim_gone").await else {
        return;
    };
    let (live, volume) = drifted_volume(&env).await;
    let (_sim, linstor, reclaims) = simulator(&env, &volume).await;
    let name = live.metadata.name.clone().unwrap();
    let claim = live
        .spec
        .as_ref()
        .unwrap()
        .claim_ref
        .clone()
        .unwrap()
        .name
        .unwrap();
    let replacement = decide(&snapshot(&volume, None), &live);
    let claims = env.pvcs();
    let user = Adversary::at(ReplaceStep::FinalizersRemoved, {
        let (claims, claim) = (claims.clone(), claim.clone());
        async move {
            claims.delete(&claim, &DeleteParams::default()).await.unwrap();
            while claims.get_opt(&claim).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    ReplaceProtocol::new(env.client(), linstor, "test-instance")
        .with_observer(user)
        .run(&volume, &replacement)
        .await
        .unwrap();

    // The binder sees a PV whose claim is gone: Released, at Retain.
    let released = env.wait_for_pv_phase(&name, "Released").await;
    assert_ne!(released.metadata.uid, live.metadata.uid, "the PV was re-created");
    assert_eq!(reclaim_policy(&released), Some("Retain"));
    assert_eq!(restore_policy_of(&released), Some("Delete"));
    reclaims.finish().await;
    env.cleanup().await;
}
