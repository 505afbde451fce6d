//! Which volumes the controller replaces and which it leaves alone, on a real
//! control plane with the LINSTOR simulator: several PVs of one resource
//! definition, the skip annotation and property, Released PVs, the grace
//! period, and PVs of other CSI drivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_ANNOTATION, SKIP_PROPERTY};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube_harness::{BoundVolume, PROVISIONED_BY_ANNOTATION, VolumeOptions, persistent_volume};
use linstor_api::sim::{SimResource, SimResourceDefinition, SimVolumeDefinition};
use serde_json::json;
use support::{ControllerProcess, REPLACE_TIMEOUT, Scenario, affinity_nodes, linstor_affinity};

/// How long a test waits for a few reconcile passes (one a second when idle).
const PASSES_TIMEOUT: Duration = Duration::from_secs(60);
/// A CSI driver that is not LINSTOR's.
const OTHER_DRIVER: &str = "other.csi.example.com";

/// A bound volume of `class` with CSI volume handle `handle`, its affinity on node `pv_on`.
async fn volume_with_handle(
    scenario: &Scenario,
    suffix: &str,
    class: &str,
    handle: &str,
    pv_on: usize,
) -> BoundVolume {
    let options = VolumeOptions {
        volume_handle: Some(handle.to_owned()),
        storage_class: Some(class.to_owned()),
        node_affinity: Some(linstor_affinity(&[scenario.node(pv_on)])),
        reclaim_policy: "Delete".to_owned(),
        ..VolumeOptions::default()
    };
    scenario.env.create_bound_volume(suffix, &options).await
}

fn name(bound: &BoundVolume) -> String {
    bound.pv.metadata.name.clone().unwrap()
}

fn uid(bound: &BoundVolume) -> String {
    bound.pv.metadata.uid.clone().unwrap()
}

fn handle(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.csi.as_ref())
        .map(|csi| csi.volume_handle.clone())
}

fn claim_name(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
        .and_then(|claim| claim.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_volume_of_a_moved_resource_definition_is_replaced() {
    let Some(scenario) = Scenario::new("volumes-multi", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let rd = scenario.env.name("rd");
    let mut definition =
        SimResourceDefinition::new(&rd, 1 << 20).resource(SimResource::diskful(scenario.node(0)));
    definition.volume_definitions.push(SimVolumeDefinition {
        volume_number: 1,
        size_kib: 1 << 20,
        ..SimVolumeDefinition::default()
    });
    scenario.sim.add_resource_definition(definition).unwrap();
    let first = volume_with_handle(&scenario, "v0", &class, &format!("{rd}/0"), 0).await;
    let second = volume_with_handle(&scenario, "v1", &class, &format!("{rd}/1"), 0).await;

    let controller = scenario.controller(&[]);
    controller
        .wait_for_line("PV cache synced", Duration::from_secs(30))
        .await;
    scenario.move_replica(&rd, 0, 1);

    for (bound, number) in [(&first, 0), (&second, 1)] {
        let pv_name = name(bound);
        let old_uid = uid(bound);
        let replaced = scenario
            .wait_for_pv(
                &pv_name,
                "replaced with affinity on node 1",
                REPLACE_TIMEOUT,
                |pv| {
                    pv.metadata.uid.as_deref() != Some(old_uid.as_str())
                        && affinity_nodes(pv) == [scenario.node(1)]
                },
            )
            .await;
        assert_eq!(handle(&replaced), Some(format!("{rd}/{number}")), "{pv_name}");
        assert_eq!(claim_name(&replaced), claim_name(&bound.pv), "{pv_name}");
        let claim = bound.pvc.metadata.name.clone().unwrap();
        let pvc = scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
        assert_eq!(
            pvc.spec.and_then(|spec| spec.volume_name).as_deref(),
            Some(pv_name.as_str())
        );
    }
    // Logged once each replace is announced: after its intent was cleared
    // and its policy came back.
    let replaced = controller
        .wait_for_count("PV replaced", 2, Duration::from_secs(30))
        .await;
    assert_eq!(replaced, 2, "{}", controller.log());
    // Both intents cleared; each volume definition held only its own PV.
    let saved: Vec<Option<String>> = scenario.sim.with_state(|state| {
        let definition = state.resource_definitions.iter().find(|d| d.name == rd).unwrap();
        definition
            .volume_definitions
            .iter()
            .map(|vd| vd.props.get(SAVED_PV_PROPERTY).cloned())
            .collect()
    });
    assert_eq!(saved, [None, None]);
    scenario.finish().await;
}

/// Asserts that PV `before` (as read before the controller started) is
/// still the same object with the same affinity, and that the controller
/// neither replaced it nor saved an intent for it on resource definition `rd`.
async fn assert_left_alone(
    scenario: &Scenario,
    controller: &ControllerProcess,
    before: &PersistentVolume,
    rd: &str,
) {
    let pv_name = before.metadata.name.clone().unwrap();
    scenario.assert_pv_unchanged(before).await;
    let replaced = controller.lines_with(&["PV replaced", &format!("pv={pv_name} ")]);
    assert!(replaced.is_empty(), "{replaced:?}");
    assert!(scenario.saved_pv(rd).is_none(), "intent saved for {rd}");
}

/// Asserts that the controller logged skipping PV `pv_name` because of `reason`.
fn assert_skipped_for(controller: &ControllerProcess, pv_name: &str, reason: &str) {
    let skipped = controller.lines_with(&["skipped", &format!("pv={pv_name} "), reason]);
    assert!(
        !skipped.is_empty(),
        "no log line skipping {pv_name} for {reason:?}; log:\n{}",
        controller.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skip_annotation_keeps_a_drifted_pv() {
    let Some(scenario) = Scenario::new("volumes-skip-annotation", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let skipped = scenario.volume("skipped", &class, 0, 1).await;
    let control = scenario.volume("control", &class, 0, 1).await;
    let skipped_name = name(&skipped);
    let patch = json!({"metadata": {"annotations": {SKIP_ANNOTATION: "true"}}});
    let before = scenario
        .env
        .pvs()
        .patch(&skipped_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let controller = scenario.run_until_control_replaced(&control, &[]).await;
    assert_left_alone(&scenario, &controller, &before, &skipped_name).await;
    assert_skipped_for(&controller, &skipped_name, "skip annotation");
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skip_property_keeps_a_drifted_pv() {
    let Some(scenario) = Scenario::new("volumes-skip-property", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let skipped = scenario.volume("skipped", &class, 0, 1).await;
    let control = scenario.volume("control", &class, 0, 1).await;
    let skipped_name = name(&skipped);
    scenario.sim.with_state(|state| {
        let definition = state
            .resource_definitions
            .iter_mut()
            .find(|definition| definition.name == skipped_name)
            .unwrap();
        definition
            .props
            .insert(SKIP_PROPERTY.to_owned(), "true".to_owned());
    });

    let controller = scenario.run_until_control_replaced(&control, &[]).await;
    assert_left_alone(&scenario, &controller, &skipped.pv, &skipped_name).await;
    assert_skipped_for(&controller, &skipped_name, "skip property");
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_pv_is_kept() {
    let Some(scenario) = Scenario::new("volumes-released", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let control = scenario.volume("control", &class, 0, 1).await;
    let options = VolumeOptions {
        storage_class: Some(class.clone()),
        node_affinity: Some(linstor_affinity(&[scenario.node(0)])),
        reclaim_policy: "Retain".to_owned(),
        ..VolumeOptions::default()
    };
    let released = scenario.env.create_bound_volume("released", &options).await;
    let released_name = name(&released);
    scenario
        .sim
        .add_resource_definition(
            SimResourceDefinition::new(&released_name, 1 << 20)
                .resource(SimResource::diskful(scenario.node(1))),
        )
        .unwrap();
    let claim = released.pvc.metadata.name.clone().unwrap();
    scenario
        .env
        .pvcs()
        .delete(&claim, &DeleteParams::default())
        .await
        .unwrap();
    let before = scenario.env.wait_for_pv_phase(&released_name, "Released").await;

    let controller = scenario.run_until_control_replaced(&control, &[]).await;
    assert_left_alone(&scenario, &controller, &before, &released_name).await;
    assert_skipped_for(&controller, &released_name, "Released");
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pv_in_its_grace_period_is_kept() {
    let Some(scenario) = Scenario::new("volumes-grace", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let young = scenario.volume("young", &class, 0, 1).await;
    let young_name = name(&young);

    let mut patient = scenario.controller_with_grace_period("1h", &[]);
    patient
        .wait_for_line("PV cache synced", Duration::from_secs(30))
        .await;
    patient.wait_for_full_passes(4, PASSES_TIMEOUT).await;
    assert_left_alone(&scenario, &patient, &young.pv, &young_name).await;
    assert_skipped_for(&patient, &young_name, "grace period");
    assert!(patient.terminate().await.success(), "{}", patient.log());

    // The same PV, without a grace period: replaced.
    let eager = scenario.controller(&[]);
    scenario.wait_until_replaced(&eager, &young).await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvs_of_other_csi_drivers_are_untouched() {
    let Some(scenario) = Scenario::new("volumes-other-driver", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let control = scenario.volume("control", &class, 0, 1).await;
    let other_name = scenario.env.name("foreign");
    let options = VolumeOptions {
        storage_class: Some(class.clone()),
        node_affinity: Some(linstor_affinity(&[scenario.node(0)])),
        reclaim_policy: "Delete".to_owned(),
        ..VolumeOptions::default()
    };
    let mut pv = persistent_volume(&other_name, &scenario.env.labels(), &options, None);
    pv.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = OTHER_DRIVER.to_owned();
    pv.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(PROVISIONED_BY_ANNOTATION.to_owned(), OTHER_DRIVER.to_owned());
    scenario
        .env
        .pvs()
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    // LINSTOR has a resource definition of that name, its replica elsewhere.
    scenario
        .sim
        .add_resource_definition(
            SimResourceDefinition::new(&other_name, 1 << 20).resource(SimResource::diskful(scenario.node(1))),
        )
        .unwrap();
    let before = scenario.env.wait_for_pv_phase(&other_name, "Available").await;

    let controller = scenario.run_until_control_replaced(&control, &[]).await;
    assert_left_alone(&scenario, &controller, &before, &other_name).await;
    let now = scenario.env.pvs().get(&other_name).await.unwrap();
    assert_eq!(
        now.metadata.resource_version, before.metadata.resource_version,
        "PV written"
    );
    scenario.finish().await;
}
