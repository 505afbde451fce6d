//! The controller on a real control plane with the LINSTOR simulator: when a
//! replica moves, the PV is replaced in place with every field kept, its
//! claim is bound again at once, and a pod using it is scheduled where the
//! data now is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::restore_policy_of;
use support::{Scenario, affinity_nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_replica_moves_the_pv_and_its_pod() {
    let Some(scenario) = Scenario::new("controller-drift", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 0).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let original_uid = bound.pv.metadata.uid.clone().unwrap();
    let controller = scenario.controller(&[]);
    controller
        .wait_for_line("PV cache synced", Duration::from_secs(30))
        .await;

    // In sync: several passes leave the PV alone.
    controller.wait_for_full_passes(3, Duration::from_secs(30)).await;
    let untouched = scenario.env.pvs().get(&pv_name).await.unwrap();
    assert_eq!(untouched.metadata.uid.as_deref(), Some(original_uid.as_str()));

    scenario.move_replica(&pv_name, 0, 1);
    let replaced = scenario
        .wait_for_pv(
            &pv_name,
            "replaced with affinity on node 1, its reclaim policy back",
            Duration::from_secs(30),
            |pv| {
                pv.metadata.uid.as_deref() != Some(original_uid.as_str())
                    && affinity_nodes(pv) == [scenario.node(1)]
                    && restore_policy_of(pv).is_none()
            },
        )
        .await;
    let recreated_at = Instant::now();
    let spec = replaced.spec.clone().unwrap();
    let before = bound.pv.spec.clone().unwrap();
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(spec.mount_options, before.mount_options);
    assert_eq!(spec.storage_class_name, before.storage_class_name);
    assert_eq!(spec.capacity, before.capacity);
    assert_eq!(spec.csi, before.csi);
    assert_eq!(
        spec.claim_ref.as_ref().and_then(|claim| claim.name.clone()),
        before.claim_ref.as_ref().and_then(|claim| claim.name.clone())
    );
    assert_eq!(replaced.metadata.labels, bound.pv.metadata.labels);
    assert_eq!(replaced.metadata.annotations, bound.pv.metadata.annotations);

    let claim = bound.pvc.metadata.name.clone().unwrap();
    let pvc = scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
    let bound_after = recreated_at.elapsed();
    assert_eq!(
        pvc.spec.and_then(|spec| spec.volume_name).as_deref(),
        Some(pv_name.as_str())
    );
    // Measured from when the test saw the new PV, so the bound holds with margin.
    assert!(
        bound_after < Duration::from_secs(2),
        "claim bound {bound_after:?} after the re-create"
    );
    let created = replaced
        .metadata
        .creation_timestamp
        .clone()
        .map(|time| time.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    assert!(created > Timestamp::UNIX_EPOCH);

    let pod = scenario.env.create_pod_with_claim("app", &claim).await;
    let scheduled = scenario
        .env
        .wait_for_pod_scheduled(pod.metadata.name.as_deref().unwrap())
        .await;
    assert_eq!(
        scheduled.spec.and_then(|spec| spec.node_name).as_deref(),
        Some(scenario.node(1))
    );

    // Logged once the replace is announced, after its intent was cleared.
    let replaced_logs = controller
        .wait_for_count("PV replaced", 1, Duration::from_secs(30))
        .await;
    assert_eq!(replaced_logs, 1, "{}", controller.log());
    assert!(scenario.saved_pv(&pv_name).is_none(), "intent cleared");
    assert!(scenario.has_resource_definition(&pv_name), "LINSTOR volume kept");
    scenario.finish().await;
}
