//! The controller under the permissions the Piraeus Operator gives it
//! (StorageClasses by `get` only, events through events.k8s.io only, no
//! claims, no PV status), acting as that ServiceAccount on a real control
//! plane: it says which faster paths are off, and still replaces a drifted
//! PV, whose claim the PV binder then binds and whose reclaim policy comes
//! back once the binder marked it `Bound`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use affinity_core::k8s_openapi::api::events::v1::Event;
use affinity_core::k8s_openapi::api::rbac::v1::PolicyRule;
use affinity_core::names::{EVENT_REASON, EVENT_REPORTING_CONTROLLER};
use affinity_core::restore_policy_of;
use affinity_kube::replace::REBIND_ANNOTATION;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use support::{Scenario, affinity_nodes};

/// The rules of the ClusterRole and of the Role in a file of RBAC objects.
fn rules_of(file: &str) -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let text = std::fs::read_to_string(file).unwrap();
    let (mut cluster, mut namespaced) = (Vec::new(), Vec::new());
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = serde_json::Value::deserialize(document).unwrap();
        let rules = || serde_json::from_value::<Vec<PolicyRule>>(object["rules"].clone()).unwrap();
        match object["kind"].as_str() {
            Some("ClusterRole") => cluster.extend(rules()),
            Some("Role") => namespaced.extend(rules()),
            _ => {}
        }
    }
    (cluster, namespaced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_operators_role_a_drifted_pv_is_replaced_on_the_slower_paths() {
    let Some(scenario) = Scenario::new("controller-rbac", 2).await else {
        return;
    };
    let (cluster_rules, lease_rules) = rules_of(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/piraeus-operator-rbac.yaml"
    ));
    let dir = tempfile::tempdir().unwrap();
    let account = scenario
        .env
        .service_account("affinity", cluster_rules, lease_rules, dir.path())
        .await;
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 0).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let original_uid = bound.pv.metadata.uid.clone().unwrap();
    let namespace = scenario.env.namespace().to_owned();
    let controller = scenario.controller_as(
        &account.kubeconfig,
        &["--leader-election", "--lease-lock-namespace", &namespace],
    );
    controller
        .wait_for_line("PV cache synced", Duration::from_secs(30))
        .await;
    for off in [
        "each class a PV names is read once per pass",
        "claims cannot be read and patched",
        "core/v1 events cannot be created",
    ] {
        assert!(
            controller.log().contains(off),
            "{off:?} not logged:\n{}",
            controller.log()
        );
    }

    scenario.move_replica(&pv_name, 0, 1);
    // The policy comes back only after the PV binder's own Bound mark,
    // which may wait for its periodic sync of the claim.
    let replaced = scenario
        .wait_for_pv(
            &pv_name,
            "replaced with affinity on node 1, Bound, its reclaim policy back",
            Duration::from_secs(90),
            |pv| {
                pv.metadata.uid.as_deref() != Some(original_uid.as_str())
                    && affinity_nodes(pv) == [scenario.node(1)]
                    && restore_policy_of(pv).is_none()
            },
        )
        .await;
    assert_eq!(
        replaced.status.and_then(|status| status.phase).as_deref(),
        Some("Bound")
    );
    assert_eq!(
        replaced
            .spec
            .and_then(|spec| spec.persistent_volume_reclaim_policy)
            .as_deref(),
        Some("Delete")
    );
    let claim = bound.pvc.metadata.name.clone().unwrap();
    let pvc = scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
    let annotations = pvc.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(REBIND_ANNOTATION),
        "claims cannot be patched: {annotations:?}"
    );

    // The claim's event went through events.k8s.io, the one API granted
    // (posted by the replace, before the later restore of the policy).
    let events: Api<Event> = Api::namespaced(scenario.env.client(), &namespace);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|event| event.reason.as_deref() == Some(EVENT_REASON)
                && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim.as_str())
                && event.reporting_controller.as_deref() == Some(EVENT_REPORTING_CONTROLLER)),
        "{events:?}"
    );
    scenario.finish().await;
}
