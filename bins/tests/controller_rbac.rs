//! The controller under the permissions the Piraeus Operator gives it
//! (StorageClasses by `get` only, events through events.k8s.io only, no
//! claims, no PV status), acting as that ServiceAccount on a real control
//! plane: it says which faster paths are off, and still replaces a drifted
//! PV, whose claim the PV binder then binds and whose reclaim policy comes
//! back once the binder marked it `Bound`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use affinity_core::k8s_openapi::api::events::v1::Event;
use affinity_core::k8s_openapi::api::rbac::v1::PolicyRule;
use affinity_core::names::{EVENT_REASON, EVENT_REPORTING_CONTROLLER};
use affinity_core::restore_policy_of;
use affinity_kube::permissions::{self, Capability};
use affinity_kube::replace::DEFAULT_REBIND_ANNOTATION;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use support::{Scenario, affinity_nodes, rules_of};

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
        &["--leader-election=true", "--lease-lock-namespace", &namespace],
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
        !annotations.contains_key(DEFAULT_REBIND_ANNOTATION),
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

/// The rules of the ClusterRole and Role our own manifests grant (the
/// chart's default rendering in `deploy/base`).
fn our_rules() -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base");
    let (mut cluster, mut namespaced) = (Vec::new(), Vec::new());
    let mut files: Vec<_> = std::fs::read_dir(base)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "yaml") && !path.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    for file in files {
        let (c, n) = rules_of(file.to_str().unwrap());
        cluster.extend(c);
        namespaced.extend(n);
    }
    (cluster, namespaced)
}

/// What `rules` let the controller do, asked of the API server as a
/// ServiceAccount holding exactly them.
async fn capabilities_under(
    scenario: &Scenario,
    account: &str,
    cluster_rules: Vec<PolicyRule>,
    lease_rules: Vec<PolicyRule>,
    dir: &std::path::Path,
) -> BTreeSet<Capability> {
    let access = scenario
        .env
        .service_account(account, cluster_rules, lease_rules, dir)
        .await;
    let kubeconfig = Kubeconfig::read_from(&access.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let grants = permissions::probe(&client, scenario.env.namespace())
        .await
        .unwrap();
    Capability::ALL
        .into_iter()
        .filter(|capability| grants.allows(*capability))
        .collect()
}

/// Every verb of every rule of our role enables a capability of the
/// controller: dropping any one of them turns a named path off (or stops
/// the controller), so the role grants nothing it does not use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_role_is_minimal_and_turns_every_path_on() {
    let Some(scenario) = Scenario::new("controller-rbac-minimal", 0).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster_rules, lease_rules) = our_rules();
    assert!(!cluster_rules.is_empty() && !lease_rules.is_empty());
    // The rule the chart adds with nodeDrain.enabled (deploy_chart checks it renders so).
    cluster_rules.push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["nodes".to_owned()]),
        verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
        ..PolicyRule::default()
    });
    let full = capabilities_under(
        &scenario,
        "full",
        cluster_rules.clone(),
        lease_rules.clone(),
        dir.path(),
    )
    .await;
    let all: BTreeSet<Capability> = Capability::ALL.into_iter().collect();
    // StorageClasses by get are not needed where they can be watched.
    let used: BTreeSet<Capability> = all
        .iter()
        .copied()
        .filter(|capability| *capability != Capability::GetStorageClasses)
        .collect();
    assert_eq!(full.intersection(&used).copied().collect::<BTreeSet<_>>(), used);

    let mut matrix = Vec::new();
    let mut variants = Vec::new();
    for (in_role, rules) in [(false, &cluster_rules), (true, &lease_rules)] {
        for (index, rule) in rules.iter().enumerate() {
            for verb in &rule.verbs {
                let mut reduced = rules.clone();
                reduced[index].verbs.retain(|v| v != verb);
                reduced.retain(|rule| !rule.verbs.is_empty());
                let groups = rule.api_groups.clone().unwrap_or_default();
                let groups: Vec<&str> = groups
                    .iter()
                    .map(|group| if group.is_empty() { "core" } else { group })
                    .collect();
                let resources = rule.resources.clone().unwrap_or_default().join(",");
                let shown = format!("{verb} {}/{resources}", groups.join(","));
                variants.push((shown, in_role, reduced));
            }
        }
    }
    for (number, (shown, in_role, reduced)) in variants.into_iter().enumerate() {
        let (cluster, lease) = if in_role {
            (cluster_rules.clone(), reduced)
        } else {
            (reduced, lease_rules.clone())
        };
        let left = capabilities_under(
            &scenario,
            &format!("without-{number}"),
            cluster,
            lease,
            dir.path(),
        )
        .await;
        let lost: Vec<Capability> = full.difference(&left).copied().collect();
        assert!(
            !lost.is_empty(),
            "without {shown} nothing is lost: the rule is not needed"
        );
        matrix.push(format!(
            "{shown:<50} -> {}",
            lost.iter()
                .map(|capability| capability.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    eprintln!(
        "RBAC matrix (rule dropped -> capability lost):\n{}",
        matrix.join("\n")
    );
    scenario.finish().await;
}

/// Without a rule it cannot work without, the controller does not start:
/// it exits 1 naming the rule, before it takes the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_pv_deletion_stops_the_start_naming_the_rule() {
    let Some(scenario) = Scenario::new("controller-rbac-short", 0).await else {
        return;
    };
    let (mut cluster_rules, lease_rules) = our_rules();
    for rule in &mut cluster_rules {
        if rule.resources.as_deref() == Some(&["persistentvolumes".to_owned()][..]) {
            rule.verbs.retain(|verb| verb != "delete");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let account = scenario
        .env
        .service_account("short", cluster_rules, lease_rules, dir.path())
        .await;
    let namespace = scenario.env.namespace().to_owned();
    let mut controller = scenario.controller_as(
        &account.kubeconfig,
        &["--leader-election=true", "--lease-lock-namespace", &namespace],
    );
    let status = controller.wait_for_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{}", controller.log());
    assert!(
        controller
            .log()
            .contains("missing permissions: delete core/persistentvolumes"),
        "{}",
        controller.log()
    );
    let leases: Api<Lease> = Api::namespaced(scenario.env.client(), &namespace);
    assert!(
        leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    scenario.finish().await;
}
