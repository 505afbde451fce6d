//! Which volumes the controller replaces and which it leaves alone, on a real
//! control plane with the LINSTOR simulator: several PVs of one resource
//! definition, the skip annotation and property, Released PVs, the grace
//! period, and PVs of other CSI drivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kube_harness::{BoundVolume, VolumeOptions};
use linstor_api::sim::{SimResource, SimResourceDefinition, SimVolumeDefinition};
use support::{Scenario, affinity_nodes, linstor_affinity};

/// How long a test waits for a replace it expects.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(60);

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

fn handle(pv: &affinity_core::k8s_openapi::api::core::v1::PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.csi.as_ref())
        .map(|csi| csi.volume_handle.clone())
}

fn claim_name(pv: &affinity_core::k8s_openapi::api::core::v1::PersistentVolume) -> Option<String> {
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
    let class = scenario
        .storage_class(
            "local",
            &[("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false")],
        )
        .await;
    let rd = scenario.env.name("rd");
    let mut definition = SimResourceDefinition::new(&rd, 1 << 20).resource(SimResource::diskful(scenario.node(0)));
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
    // Both intents cleared; each volume definition held only its own PV.
    let saved: Vec<Option<String>> = scenario.sim.with_state(|state| {
        let definition = state.resource_definitions.iter().find(|d| d.name == rd).unwrap();
        definition
            .volume_definitions
            .iter()
            .map(|vd| vd.props.get(affinity_core::names::SAVED_PV_PROPERTY).cloned())
            .collect()
    });
    assert_eq!(saved, [None, None]);
    assert_eq!(controller.count("PV replaced"), 2, "{}", controller.log());
    scenario.env.cleanup().await;
}
