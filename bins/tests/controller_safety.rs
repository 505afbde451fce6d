//! What users and other controllers do while a replace is under way wins
//! over what the controller read earlier, and no sequence ends with
//! Kubernetes reclaiming a volume: the controller binary on a real control
//! plane, halted at protocol steps, with the cluster changed in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{Event, PersistentVolume, SecretReference};
use affinity_core::names::SAVED_PV_PROPERTY;
use affinity_core::{encode_saved_pv, replacement_pv};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube_harness::BoundVolume;
use linstor_api::sim::{SimResource, SimResourceDefinition};
use serde_json::json;
use support::{Scenario, controller_has_test_hooks};

const WAIT: Duration = Duration::from_secs(90);

fn reclaim_policy(pv: &PersistentVolume) -> Option<&str> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
}

/// Waits until a warning event with `reason` about PV `pv` exists; returns
/// its message.
async fn wait_for_pv_warning(scenario: &Scenario, pv: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(scenario.env.client(), "default");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let found = list.items.into_iter().find(|event| {
            event.reason.as_deref() == Some(reason) && event.involved_object.name.as_deref() == Some(pv)
        });
        if let Some(event) = found {
            return event.message.unwrap_or_default();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} event about PV {pv} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes and one bound, drifted volume (affinity on node 0, data on
/// node 1); `None` when no cluster is available.
async fn drifted(test: &str) -> Option<(Scenario, BoundVolume)> {
    let scenario = Scenario::new(test, 2).await?;
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 1).await;
    Some((scenario, bound))
}

/// Starts a controller that halts right after `step` of its first replace,
/// waits for the halt and kills it.
async fn halt_after(scenario: &Scenario, step: &str, pv: &str) {
    let mut first = scenario.controller(&["--debug-halt-after", step]);
    let line = first.wait_for_line("halting after replace step", WAIT).await;
    first.kill();
    assert!(
        line.contains(pv) && line.contains(step),
        "halted elsewhere: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_deleted_during_a_replace_gets_no_pv_from_the_saved_state() {
    if !controller_has_test_hooks("a_claim_deleted_during_a_replace") {
        return;
    }
    let Some((scenario, bound)) = drifted("safety-claim-gone").await else {
        return;
    };
    let pv = bound.pv.metadata.name.clone().unwrap();
    let claim = bound.pvc.metadata.name.clone().unwrap();
    halt_after(&scenario, "finalizers-removed", &pv).await;
    assert!(
        scenario.env.pvs().get_opt(&pv).await.unwrap().is_none(),
        "PV retired"
    );

    scenario
        .env
        .pvcs()
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
    scenario.env.wait_for_deletion(&scenario.env.pvcs(), &claim).await;

    let second = scenario.controller(&[]);
    let message = wait_for_pv_warning(&scenario, &pv, "ReplaceHeld").await;
    assert!(message.contains("is gone"), "{message}");
    assert!(
        scenario.env.pvs().get_opt(&pv).await.unwrap().is_none(),
        "no PV created for a claim that is gone"
    );
    assert!(scenario.saved_pv(&pv).is_some(), "intent kept");
    assert!(scenario.has_resource_definition(&pv), "volume kept");
    drop(second);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_keeps_the_data_during_a_replace_wins() {
    if !controller_has_test_hooks("a_user_who_keeps_the_data") {
        return;
    }
    let Some((scenario, bound)) = drifted("safety-keep-data").await else {
        return;
    };
    let pv = bound.pv.metadata.name.clone().unwrap();
    let claim = bound.pvc.metadata.name.clone().unwrap();
    halt_after(&scenario, "intent-saved", &pv).await;

    // As Kubernetes documents it: Retain, then delete the claim.
    let retain = json!({ "spec": { "persistentVolumeReclaimPolicy": "Retain" } });
    scenario
        .env
        .pvs()
        .patch(&pv, &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .unwrap();
    scenario
        .env
        .pvcs()
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
    let released = scenario.env.wait_for_pv_phase(&pv, "Released").await;

    let second = scenario.controller(&[]);
    let message = wait_for_pv_warning(&scenario, &pv, "ReplaceHeld").await;
    assert!(message.contains("reclaim policy Retain"), "{message}");
    second.wait_for_full_passes(2, WAIT).await;
    let now = scenario.env.pvs().get(&pv).await.unwrap();
    assert_eq!(
        now.metadata.uid, released.metadata.uid,
        "the user's PV was replaced"
    );
    assert_eq!(reclaim_policy(&now), Some("Retain"));
    assert!(now.metadata.deletion_timestamp.is_none());
    assert!(scenario.saved_pv(&pv).is_some(), "intent kept");
    assert!(scenario.has_resource_definition(&pv), "volume kept");
    drop(second);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_pv_the_user_deletes_is_not_replaced() {
    let Some((scenario, bound)) = drifted("safety-user-delete").await else {
        return;
    };
    let pv = bound.pv.metadata.name.clone().unwrap();
    // The user keeps the volume and deletes the PV object; bound, it is
    // kept by the pv-protection finalizer while it is being deleted.
    let retain = json!({ "spec": { "persistentVolumeReclaimPolicy": "Retain" } });
    scenario
        .env
        .pvs()
        .patch(&pv, &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .unwrap();
    scenario
        .env
        .pvs()
        .delete(&pv, &DeleteParams::default())
        .await
        .unwrap();
    let deleting = scenario
        .wait_for_pv(&pv, "being deleted", WAIT, |pv| {
            pv.metadata.deletion_timestamp.is_some()
        })
        .await;

    let controller = scenario.controller(&[]);
    controller.wait_for_full_passes(2, WAIT).await;
    let now = scenario.env.pvs().get(&pv).await.unwrap();
    assert_eq!(
        now.metadata.uid, deleting.metadata.uid,
        "the deleted PV was replaced"
    );
    assert!(now.metadata.deletion_timestamp.is_some());
    assert!(scenario.saved_pv(&pv).is_none(), "no replace started");
    drop(controller);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_saved_pv_in_linstor_is_not_written() {
    let Some((scenario, bound)) = drifted("safety-crafted").await else {
        return;
    };
    let pv = bound.pv.metadata.name.clone().unwrap();

    // Without a live PV: a saved PV that names the claim of another PV.
    let crafted_name = scenario.env.name("crafted");
    let mut crafted = replacement_pv(&bound.pv, None);
    crafted.metadata.name = Some(crafted_name.clone());
    if let Some(csi) = crafted.spec.as_mut().and_then(|spec| spec.csi.as_mut()) {
        csi.volume_handle = crafted_name.clone();
    }
    let definition =
        SimResourceDefinition::new(&crafted_name, 1 << 20).resource(SimResource::diskful(scenario.node(1)));
    scenario.sim.add_resource_definition(definition).unwrap();
    scenario.sim.with_state(|state| {
        let rd = state
            .resource_definitions
            .iter_mut()
            .find(|rd| rd.name == crafted_name)
            .unwrap();
        let vd = rd
            .volume_definitions
            .iter_mut()
            .find(|vd| vd.volume_number == 0)
            .unwrap();
        vd.props
            .insert(SAVED_PV_PROPERTY.to_owned(), encode_saved_pv(&crafted).unwrap());
    });

    // With a live PV: a saved PV that adds a secret reference.
    let mut secret = replacement_pv(&bound.pv, None);
    if let Some(csi) = secret.spec.as_mut().and_then(|spec| spec.csi.as_mut()) {
        csi.node_publish_secret_ref = Some(SecretReference {
            name: Some("stolen".to_owned()),
            namespace: Some("kube-system".to_owned()),
        });
    }
    scenario.sim.with_state(|state| {
        let rd = state
            .resource_definitions
            .iter_mut()
            .find(|rd| rd.name == pv)
            .unwrap();
        let vd = rd
            .volume_definitions
            .iter_mut()
            .find(|vd| vd.volume_number == 0)
            .unwrap();
        vd.props
            .insert(SAVED_PV_PROPERTY.to_owned(), encode_saved_pv(&secret).unwrap());
    });

    let controller = scenario.controller(&[]);
    let message = wait_for_pv_warning(&scenario, &crafted_name, "ReplaceHeld").await;
    assert!(message.contains("names volume"), "{message}");
    let message = wait_for_pv_warning(&scenario, &pv, "ReplaceHeld").await;
    assert!(message.contains("spec.csi differs"), "{message}");
    controller.wait_for_full_passes(2, WAIT).await;
    assert!(
        scenario.env.pvs().get_opt(&crafted_name).await.unwrap().is_none(),
        "a PV was created from the crafted saved PV"
    );
    scenario.assert_pv_unchanged(&bound.pv).await;
    let now = scenario.env.pvs().get(&pv).await.unwrap();
    let csi = now.spec.and_then(|spec| spec.csi).unwrap();
    assert_eq!(csi.node_publish_secret_ref, None);
    drop(controller);
    scenario.finish().await;
}
