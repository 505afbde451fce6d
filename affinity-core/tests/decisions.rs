//! Table of the per-volume decision over whole resource definitions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use affinity_core::k8s_openapi::jiff::{SignedDuration, Timestamp};
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_ANNOTATION, SKIP_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use affinity_core::{
    Accessibility, Action, AffinityBasis, DecisionError, DecisionSettings, LinstorSnapshot, Plan, Planner,
    Properties, ReplaceTrigger, Replacement, Replica, ResourceDefinitionState, RetiredPv, SkipReason,
    VolumeDefinitionState, VolumeId, encode_intent, encode_saved_pv, replacement_pv,
};

const HOST: &str = "linbit.com/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// Four nodes in two zones, Piraeus Operator v2 labels, and StorageClasses
/// for each kind of policy.
struct Cluster {
    linstor: LinstorSnapshot,
    classes: BTreeMap<String, Properties>,
    settings: DecisionSettings,
}

impl Cluster {
    fn new() -> Self {
        let mut linstor = LinstorSnapshot::new();
        for (node, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")] {
            linstor.insert_node(
                node,
                map(&[
                    ("Aux/topology/topology.kubernetes.io/zone", zone),
                    ("Aux/topology/kubernetes.io/hostname", node),
                ]),
            );
        }
        let classes = BTreeMap::from([
            ("local".to_owned(), map(&[("allowRemoteVolumeAccess", "false")])),
            (
                "zonal".to_owned(),
                map(&[(
                    "linstor.csi.linbit.com/allowRemoteVolumeAccess",
                    "- fromSame: [topology.kubernetes.io/zone]",
                )]),
            ),
            ("anywhere".to_owned(), map(&[("layerList", "drbd storage")])),
            ("broken".to_owned(), map(&[("layerList", "drbd zfs")])),
        ]);
        let settings = DecisionSettings {
            property_namespace: "Aux/topology".to_owned(),
            grace_period: Duration::from_secs(60),
            now: now(),
        };
        Self {
            linstor,
            classes,
            settings,
        }
    }

    /// A resource definition with diskful replicas on `nodes` and volumes 0..volumes.
    fn rd(&mut self, name: &str, nodes: &[&str]) -> &mut Self {
        self.rd_with(name, &[], &[(0, None)]);
        for node in nodes {
            self.linstor
                .push_replica(Replica::new(name, *node, Vec::<String>::new()));
        }
        self
    }

    fn rd_with(&mut self, name: &str, props: &[(&str, &str)], volumes: &[(u16, Option<String>)]) {
        self.linstor.insert_resource_definition(ResourceDefinitionState {
            name: name.to_owned(),
            properties: map(props),
            volume_definitions: volumes
                .iter()
                .map(|(number, saved)| VolumeDefinitionState {
                    volume_number: *number,
                    properties: saved
                        .iter()
                        .map(|json| (SAVED_PV_PROPERTY.to_owned(), json.clone()))
                        .collect(),
                })
                .collect(),
        });
    }

    fn plan(&self, pvs: &[PersistentVolume]) -> Plan {
        Planner::new(&self.linstor, &self.classes, &self.settings).plan(pvs)
    }

    fn only(&self, pv: PersistentVolume) -> Result<Action, DecisionError> {
        let mut plan = self.plan(&[pv]);
        assert_eq!(plan.decisions.len(), 1, "{plan:?}");
        plan.decisions.remove(0).outcome
    }
}

fn pv(name: &str, handle: &str, class: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(now() - SignedDuration::from_hours(1))),
            annotations: Some(map(&[(
                "pv.kubernetes.io/provisioned-by",
                "linstor.csi.linbit.com",
            )])),
            finalizers: Some(vec!["kubernetes.io/pv-protection".to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            storage_class_name: Some(class.to_owned()),
            persistent_volume_reclaim_policy: Some("Delete".to_owned()),
            mount_options: Some(vec!["noatime".to_owned()]),
            claim_ref: Some(ObjectReference {
                name: Some(format!("claim-{name}")),
                namespace: Some("default".to_owned()),
                uid: Some(format!("uid-claim-{name}")),
                ..ObjectReference::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: "linstor.csi.linbit.com".to_owned(),
                volume_handle: handle.to_owned(),
                ..CSIPersistentVolumeSource::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Bound".to_owned()),
            ..PersistentVolumeStatus::default()
        }),
    }
}

fn affinity(terms: &[&[(&str, &str)]]) -> Option<VolumeNodeAffinity> {
    Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: terms
                .iter()
                .map(|pairs| NodeSelectorTerm {
                    match_expressions: Some(
                        pairs
                            .iter()
                            .map(|(k, v)| NodeSelectorRequirement {
                                key: (*k).to_owned(),
                                operator: "In".to_owned(),
                                values: Some(vec![(*v).to_owned()]),
                            })
                            .collect(),
                    ),
                    match_fields: None,
                })
                .collect(),
        }),
    })
}

fn with_affinity(mut pv: PersistentVolume, affinity: Option<VolumeNodeAffinity>) -> PersistentVolume {
    pv.spec.as_mut().unwrap().node_affinity = affinity;
    pv
}

fn on_hosts(hosts: &[&str]) -> Option<VolumeNodeAffinity> {
    let terms: Vec<Vec<(&str, &str)>> = hosts.iter().map(|h| vec![(HOST, *h)]).collect();
    let refs: Vec<&[(&str, &str)]> = terms.iter().map(Vec::as_slice).collect();
    affinity(&refs)
}

fn annotate(mut pv: PersistentVolume, key: &str, value: &str) -> PersistentVolume {
    pv.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    pv
}

fn replacement(outcome: Result<Action, DecisionError>) -> Replacement {
    match outcome {
        Ok(Action::Replace(replacement)) => *replacement,
        other => panic!("expected a replacement, got {other:?}"),
    }
}

fn skip(outcome: Result<Action, DecisionError>) -> SkipReason {
    match outcome {
        Ok(Action::Skip(reason)) => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn new_affinity(replacement: &Replacement) -> Option<&VolumeNodeAffinity> {
    replacement.pv.spec.as_ref().unwrap().node_affinity.as_ref()
}

#[test]
fn local_volume_in_sync() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1"]);
    let outcome = c.only(with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"])));
    assert!(matches!(outcome, Ok(Action::InSync)), "{outcome:?}");
}

#[test]
fn moved_replica_replaces_the_pv_keeping_every_other_field() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n2"]);
    let live = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    let r = replacement(c.only(live.clone()));
    assert_eq!(r.trigger, ReplaceTrigger::AffinityDrift);
    assert_eq!(
        r.retire.as_ref().map(|p| (p.name.as_str(), p.uid.as_deref())),
        Some(("pv-1", Some("uid-pv-1")))
    );
    assert_eq!(new_affinity(&r), on_hosts(&["n2"]).as_ref());
    assert_eq!(r.pv, replacement_pv(&live, on_hosts(&["n2"])));
    let spec = r.pv.spec.as_ref().unwrap();
    assert_eq!(spec.mount_options, Some(vec!["noatime".to_owned()]));
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(spec.claim_ref, live.spec.as_ref().unwrap().claim_ref);
    assert_eq!(r.pv.metadata.annotations, live.metadata.annotations);
    assert!(matches!(
        r.affinity,
        AffinityBasis::Recomputed(Accessibility::Restricted(_))
    ));
}

#[test]
fn replica_added_during_evacuation_widens_then_narrows_the_affinity() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1", "n3"]);
    let live = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    let r = replacement(c.only(live));
    assert_eq!(new_affinity(&r), on_hosts(&["n1", "n3"]).as_ref());

    let mut c = Cluster::new();
    c.rd("pvc-1", &["n3"]);
    c.linstor.push_replica(Replica::new("pvc-1", "n1", ["DELETE"]));
    let r = replacement(c.only(with_affinity(
        pv("pv-1", "pvc-1", "local"),
        on_hosts(&["n1", "n3"]),
    )));
    assert_eq!(new_affinity(&r), on_hosts(&["n3"]).as_ref());
}

#[test]
fn zone_policy_uses_zones_of_the_diskful_nodes() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1", "n2", "n3"]);
    let both = affinity(&[&[(ZONE, "a")], &[(ZONE, "b")]]);
    let outcome = c.only(with_affinity(pv("pv-1", "pvc-1", "zonal"), both.clone()));
    assert!(matches!(outcome, Ok(Action::InSync)), "{outcome:?}");
    let r = replacement(c.only(with_affinity(
        pv("pv-1", "pvc-1", "zonal"),
        affinity(&[&[(ZONE, "a")]]),
    )));
    assert_eq!(new_affinity(&r), both.as_ref());
}

#[test]
fn anywhere_policy_wants_no_affinity() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1"]);
    let outcome = c.only(pv("pv-1", "pvc-1", "anywhere"));
    assert_eq!(outcome.unwrap(), Action::InSync);
    let r = replacement(c.only(with_affinity(pv("pv-1", "pvc-1", "anywhere"), on_hosts(&["n1"]))));
    assert_eq!(new_affinity(&r), None);
    // An override without rules also means everywhere.
    let overridden = annotate(
        with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"])),
        "override.piraeus.io/remote-access-policy",
        "[]",
    );
    assert_eq!(new_affinity(&replacement(c.only(overridden))), None);
}

#[test]
fn policy_sources_in_order() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1"]);
    // Override says zone, StorageClass says local: zone wins.
    let overridden = annotate(
        with_affinity(pv("pv-1", "pvc-1", "local"), affinity(&[&[(ZONE, "a")]])),
        "override.piraeus.io/policy",
        "- fromSame: [topology.kubernetes.io/zone]",
    );
    assert!(matches!(c.only(overridden), Ok(Action::InSync)));
    // Volume context says zone.
    let mut ctx = with_affinity(pv("pv-1", "pvc-1", "local"), affinity(&[&[(ZONE, "a")]]));
    ctx.spec.as_mut().unwrap().csi.as_mut().unwrap().volume_attributes = Some(map(&[
        ("linstor.csi.linbit.com/uses-volume-context", "true"),
        (
            "linstor.csi.linbit.com/remote-access-policy",
            "- fromSame: [topology.kubernetes.io/zone]",
        ),
    ]));
    assert!(matches!(c.only(ctx), Ok(Action::InSync)));
}

#[test]
fn several_volumes_of_one_resource_definition() {
    let mut c = Cluster::new();
    c.rd_with("pvc-m", &[], &[(0, None), (1, None), (2, None)]);
    c.linstor
        .push_replica(Replica::new("pvc-m", "n2", Vec::<String>::new()));
    let plan = c.plan(&[
        with_affinity(pv("pv-m1", "pvc-m/1", "local"), on_hosts(&["n1"])),
        with_affinity(pv("pv-m0", "pvc-m", "local"), on_hosts(&["n2"])),
        with_affinity(pv("pv-m2", "pvc-m/2", "anywhere"), None),
    ]);
    let got: Vec<(String, &str, &str)> = plan
        .decisions
        .iter()
        .map(|d| {
            let kind = match &d.outcome {
                Ok(Action::InSync) => "in-sync",
                Ok(Action::Replace(_)) => "replace",
                other => panic!("{other:?}"),
            };
            (d.volume.to_string(), d.pv_name.as_str(), kind)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("pvc-m/0".to_owned(), "pv-m0", "in-sync"),
            ("pvc-m/1".to_owned(), "pv-m1", "replace"),
            ("pvc-m/2".to_owned(), "pv-m2", "in-sync"),
        ]
    );
}

fn created_hours_ago(mut pv: PersistentVolume, hours: i64) -> PersistentVolume {
    pv.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_hours(hours)));
    pv
}

/// The PV kept and the duplicate skipped, as (kept, skipped) names.
fn kept_and_skipped(plan: Plan) -> (String, String) {
    assert_eq!(plan.decisions.len(), 2, "{plan:?}");
    let mut decisions = plan.decisions.into_iter();
    let (kept, duplicate) = (decisions.next().unwrap(), decisions.next().unwrap());
    let reason = skip(duplicate.outcome);
    assert_eq!(
        reason,
        SkipReason::DuplicateVolume {
            kept: kept.pv_name.clone()
        }
    );
    assert!(reason.is_warning());
    (kept.pv_name, duplicate.pv_name)
}

#[test]
fn duplicate_pvs_keep_the_oldest_then_by_name_whatever_the_order() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1"]);
    let old = created_hours_ago(with_affinity(pv("pv-b", "pvc-1", "local"), on_hosts(&["n1"])), 5);
    let young = created_hours_ago(
        with_affinity(pv("pv-a", "pvc-1/0", "local"), on_hosts(&["n3"])),
        2,
    );
    for order in [[old.clone(), young.clone()], [young.clone(), old.clone()]] {
        let plan = c.plan(&order);
        assert!(
            matches!(plan.decisions[0].outcome, Ok(Action::InSync)),
            "{plan:?}"
        );
        assert_eq!(kept_and_skipped(plan), ("pv-b".to_owned(), "pv-a".to_owned()));
    }
    let twin = created_hours_ago(
        with_affinity(pv("pv-a", "pvc-1/0", "local"), on_hosts(&["n3"])),
        5,
    );
    for order in [[old.clone(), twin.clone()], [twin.clone(), old.clone()]] {
        assert_eq!(
            kept_and_skipped(c.plan(&order)),
            ("pv-a".to_owned(), "pv-b".to_owned())
        );
    }
}

#[test]
fn an_intent_settles_which_duplicate_is_kept() {
    let mut c = Cluster::new();
    let old = created_hours_ago(with_affinity(pv("pv-a", "pvc-1", "local"), on_hosts(&["n3"])), 5);
    let mut retired = created_hours_ago(
        with_affinity(pv("pv-b", "pvc-1/0", "local"), on_hosts(&["n3"])),
        2,
    );
    retired.metadata.uid = Some("uid-b".to_owned());
    retired.metadata.resource_version = Some("7".to_owned());
    let intent = encode_intent(
        &replacement_pv(&retired, None),
        Some(&RetiredPv {
            name: "pv-b".to_owned(),
            uid: retired.metadata.uid.clone(),
            resource_version: retired.metadata.resource_version.clone(),
        }),
    )
    .unwrap();
    c.rd_with("pvc-1", &[], &[(0, Some(intent))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n1", Vec::<String>::new()));
    for order in [[old.clone(), retired.clone()], [retired.clone(), old.clone()]] {
        let plan = c.plan(&order);
        assert!(
            matches!(&plan.decisions[0].outcome, Ok(Action::Replace(r)) if r.trigger == ReplaceTrigger::ResumeInterrupted),
            "{plan:?}"
        );
        assert_eq!(kept_and_skipped(plan), ("pv-b".to_owned(), "pv-a".to_owned()));
    }
}

#[test]
fn skips_and_their_reasons() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n2"]);
    c.rd_with("pvc-skip", &[(SKIP_PROPERTY, "yes")], &[(0, None)]);
    c.linstor
        .push_replica(Replica::new("pvc-skip", "n2", Vec::<String>::new()));
    c.rd_with("pvc-empty-skip", &[(SKIP_PROPERTY, "")], &[(0, None)]);
    c.linstor
        .push_replica(Replica::new("pvc-empty-skip", "n2", Vec::<String>::new()));
    c.rd_with("pvc-none", &[], &[(0, None)]);
    c.rd("pvc-diskless", &[]);
    for flags in [
        &["DISKLESS"][..],
        &["DELETE"],
        &["FAILED_DEPLOYMENT"],
        &["FAILED_DISCONNECT"],
    ] {
        c.linstor
            .push_replica(Replica::new("pvc-diskless", "n1", flags.iter().copied()));
    }
    c.rd("pvc-unknown", &["n9"]);
    let drifted = |name: &str, handle: &str| with_affinity(pv(name, handle, "local"), on_hosts(&["n1"]));

    assert_eq!(
        skip(c.only(annotate(drifted("pv", "pvc-1"), SKIP_ANNOTATION, "true"))),
        SkipReason::SkipAnnotation
    );
    assert!(matches!(
        c.only(annotate(drifted("pv", "pvc-1"), SKIP_ANNOTATION, "")),
        Ok(Action::Replace(_))
    ));
    assert_eq!(skip(c.only(drifted("pv", "pvc-skip"))), SkipReason::SkipProperty);
    assert!(matches!(
        c.only(drifted("pv", "pvc-empty-skip")),
        Ok(Action::Replace(_))
    ));
    let mut released = drifted("pv", "pvc-1");
    released.status.as_mut().unwrap().phase = Some("Released".to_owned());
    assert_eq!(skip(c.only(released)), SkipReason::Released);
    let mut failed = drifted("pv", "pvc-1");
    failed.status.as_mut().unwrap().phase = Some("Failed".to_owned());
    assert_eq!(skip(c.only(failed)), SkipReason::Failed);
    let mut deleting = drifted("pv", "pvc-1");
    deleting.metadata.deletion_timestamp = Some(Time(now()));
    assert_eq!(skip(c.only(deleting)), SkipReason::BeingDeleted);
    // Created at Retain in place of another PV whose claim then let go.
    let mut held = drifted("pv", "pvc-1");
    held.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            "linstor.csi.linbit.com/affinity-restore-reclaim-policy".to_owned(),
            "Delete".to_owned(),
        );
    let mut held_released = held.clone();
    held_released.status.as_mut().unwrap().phase = Some("Released".to_owned());
    let reason = skip(c.only(held_released));
    assert_eq!(
        reason,
        SkipReason::ClaimGone {
            policy: "Delete".to_owned()
        }
    );
    assert!(reason.is_warning());
    assert!(matches!(
        c.only(held),
        Ok(Action::RestoreReclaimPolicy { policy }) if policy == "Delete"
    ));
    let mut young = drifted("pv", "pvc-1");
    young.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_secs(10)));
    assert_eq!(
        skip(c.only(young)),
        SkipReason::GracePeriod {
            remaining: Duration::from_secs(50)
        }
    );
    let mut just_old = drifted("pv", "pvc-1");
    just_old.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_secs(60)));
    assert!(matches!(c.only(just_old), Ok(Action::Replace(_))));
    assert_eq!(skip(c.only(drifted("pv", "pvc-none"))), SkipReason::NoResources);
    assert_eq!(
        skip(c.only(drifted("pv", "pvc-not-in-linstor"))),
        SkipReason::NoResources
    );
    let reason = skip(c.only(drifted("pv", "pvc-diskless")));
    assert_eq!(reason, SkipReason::NoHealthyDiskfulReplica);
    assert!(reason.is_warning());
    assert_eq!(
        skip(c.only(drifted("pv", "pvc-unknown"))),
        SkipReason::UnknownNode {
            node: "n9".to_owned()
        }
    );
}

#[test]
fn other_drivers_and_bad_handles_are_left_out() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n1"]);
    let mut other = pv("pv-other", "pvc-1", "local");
    other.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = "rbd.csi.ceph.com".to_owned();
    let mut host_path = pv("pv-hostpath", "pvc-1", "local");
    host_path.spec.as_mut().unwrap().csi = None;
    let plan = c.plan(&[
        other,
        host_path,
        pv("pv-bad", "pvc-1/x", "local"),
        pv("pv-empty", "", "local"),
    ]);
    assert!(plan.decisions.is_empty(), "{plan:?}");
    let names: Vec<&str> = plan.invalid_handles.iter().map(|i| i.pv.as_str()).collect();
    assert_eq!(names, ["pv-bad", "pv-empty"]);
    assert!(plan.invalid_handles[0].to_string().contains("PV pv-bad"));
    assert_eq!(plan.summary().errors, 2);
}

#[test]
fn a_bad_pv_does_not_stop_the_others() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n2"]);
    c.rd("pvc-2", &["n2"]);
    c.rd("pvc-3", &["n2"]);
    let plan = c.plan(&[
        annotate(pv("pv-1", "pvc-1", "local"), "override.piraeus.io/x", "sometimes"),
        pv("pv-2", "pvc-2", "missing-class"),
        pv("pv-3", "pvc-3", "local"),
    ]);
    let errors: Vec<String> = plan
        .decisions
        .iter()
        .filter_map(|d| d.outcome.as_ref().err().map(ToString::to_string))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("PV pv-1") && errors[0].contains("\"sometimes\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("PV pv-2") && errors[1].contains("missing-class"),
        "{}",
        errors[1]
    );
    assert!(matches!(plan.decisions[2].outcome, Ok(Action::Replace(_))));
    let summary = plan.summary();
    assert_eq!((summary.errors, summary.replace), (2, 1));
    let broken = c.only(pv("pv-4", "pvc-1", "broken")).unwrap_err().to_string();
    assert!(
        broken.contains("StorageClass broken") && broken.contains("zfs"),
        "{broken}"
    );
}

/// The saved intent of a replace of `live` towards hosts `to`.
fn saved_intent(live: &PersistentVolume, to: &[&str]) -> String {
    encode_saved_pv(&replacement_pv(live, on_hosts(to))).unwrap()
}

#[test]
fn saved_state_without_pv_recreates_it_from_current_state() {
    let mut c = Cluster::new();
    let original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    c.rd_with("pvc-1", &[], &[(0, Some(saved_intent(&original, &["n2"])))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n3", Vec::<String>::new()));
    let plan = c.plan(&[]);
    assert_eq!(plan.decisions.len(), 1);
    assert_eq!(plan.decisions[0].volume, VolumeId::new("pvc-1", 0));
    assert_eq!(plan.decisions[0].pv_name, "pv-1");
    let r = replacement(plan.decisions.into_iter().next().unwrap().outcome);
    assert_eq!(r.trigger, ReplaceTrigger::RecreateFromSavedState);
    assert_eq!(r.retire, None);
    // Recomputed: the replica moved on to n3 meanwhile.
    assert_eq!(new_affinity(&r), on_hosts(&["n3"]).as_ref());
    assert_eq!(r.pv.metadata.annotations, original.metadata.annotations);
}

#[test]
fn recovery_keeps_the_saved_affinity_when_linstor_gives_none() {
    let mut c = Cluster::new();
    let original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    c.rd_with("pvc-1", &[], &[(0, Some(saved_intent(&original, &["n2"])))]);
    c.linstor.push_replica(Replica::new("pvc-1", "n2", ["DISKLESS"]));
    let r = replacement(c.plan(&[]).decisions.remove(0).outcome);
    assert_eq!(new_affinity(&r), on_hosts(&["n2"]).as_ref());
    assert!(
        matches!(&r.affinity, AffinityBasis::KeptFromSavedState { reason } if reason.contains("no healthy diskful")),
        "{:?}",
        r.affinity
    );
}

#[test]
fn interrupted_replace_resumes_with_the_original_annotations_and_reclaim_policy() {
    let mut c = Cluster::new();
    let original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    c.rd_with("pvc-1", &[], &[(0, Some(saved_intent(&original, &["n2"])))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n2", Vec::<String>::new()));

    // Killed after the Retain patch, before the delete.
    let mut patched = annotate(original.clone(), SKIP_RECLAIM_ANNOTATION, "true");
    patched.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".to_owned());
    // Killed after the delete, with finalizers still holding the PV.
    let mut deleting = patched.clone();
    deleting.metadata.deletion_timestamp = Some(Time(now()));
    for live in [patched, deleting] {
        let r = replacement(c.only(live));
        assert_eq!(r.trigger, ReplaceTrigger::ResumeInterrupted);
        assert_eq!(r.retire.as_ref().map(|p| p.name.as_str()), Some("pv-1"));
        assert_eq!(r.pv.metadata.annotations, original.metadata.annotations);
        assert_eq!(
            r.pv.spec
                .as_ref()
                .unwrap()
                .persistent_volume_reclaim_policy
                .as_deref(),
            Some("Delete")
        );
        assert_eq!(new_affinity(&r), on_hosts(&["n2"]).as_ref());
    }
}

#[test]
fn interrupted_replace_of_a_retained_pv_is_seen_by_its_annotation() {
    let mut c = Cluster::new();
    let mut original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    original.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".to_owned());
    c.rd_with("pvc-1", &[], &[(0, Some(saved_intent(&original, &["n2"])))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n2", Vec::<String>::new()));
    let patched = annotate(original.clone(), SKIP_RECLAIM_ANNOTATION, "true");
    let r = replacement(c.only(patched));
    assert_eq!(r.trigger, ReplaceTrigger::ResumeInterrupted);
    assert!(
        !r.pv
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(SKIP_RECLAIM_ANNOTATION)
    );
    // Not started yet: the live PV is still the original.
    assert_eq!(c.only(original).unwrap(), Action::ClearSavedState);
}

#[test]
fn finished_replace_clears_the_saved_state() {
    let mut c = Cluster::new();
    let original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    let intent = saved_intent(&original, &["n2"]);
    c.rd_with("pvc-1", &[], &[(0, Some(intent.clone()))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n2", Vec::<String>::new()));
    let mut recreated: PersistentVolume = serde_json::from_str(&intent).unwrap();
    recreated.metadata.uid = Some("uid-new".to_owned());
    assert_eq!(c.only(recreated).unwrap(), Action::ClearSavedState);
}

#[test]
fn unusable_saved_state_is_an_error_and_nothing_else() {
    let mut c = Cluster::new();
    let original = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    c.rd_with("pvc-1", &[], &[(0, Some("{not json".to_owned()))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n2", Vec::<String>::new()));
    let err = c.only(original.clone()).unwrap_err();
    assert!(matches!(err, DecisionError::SavedState(_)), "{err:?}");
    assert!(err.to_string().contains("pvc-1/0"), "{err}");

    let other = with_affinity(pv("pv-other", "pvc-1", "local"), None);
    c.rd_with("pvc-1", &[], &[(0, Some(saved_intent(&other, &["n2"])))]);
    let err = c.only(original).unwrap_err().to_string();
    assert!(err.contains("pv-other") && err.contains("pv-1"), "{err}");
}

#[test]
fn empty_saved_property_counts_as_absent() {
    let mut c = Cluster::new();
    c.rd_with("pvc-1", &[], &[(0, Some(String::new()))]);
    c.linstor
        .push_replica(Replica::new("pvc-1", "n2", Vec::<String>::new()));
    assert!(c.plan(&[]).decisions.is_empty());
}

#[test]
fn decisions_are_sorted_and_per_definition_decisions_filter_their_pvs() {
    let mut c = Cluster::new();
    c.rd("pvc-b", &["n1"]);
    c.rd("pvc-a", &["n1"]);
    let pvs = [
        with_affinity(pv("pv-b", "pvc-b", "local"), on_hosts(&["n1"])),
        with_affinity(pv("pv-a", "pvc-a", "local"), on_hosts(&["n2"])),
    ];
    let plan = c.plan(&pvs);
    let order: Vec<&str> = plan.decisions.iter().map(|d| d.pv_name.as_str()).collect();
    assert_eq!(order, ["pv-a", "pv-b"]);
    assert_eq!(plan.replacements().count(), 1);
    let refs: Vec<&PersistentVolume> = pvs.iter().collect();
    let one = Planner::new(&c.linstor, &c.classes, &c.settings).decide_resource_definition("pvc-b", &refs);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].pv_name, "pv-b");
}

#[test]
fn deciding_for_one_volume_sees_only_it_kept_pv_first() {
    let mut c = Cluster::new();
    c.rd_with("pvc-m", &[], &[(0, None), (1, None)]);
    c.linstor
        .push_replica(Replica::new("pvc-m", "n1", Vec::<String>::new()));
    let old = created_hours_ago(
        with_affinity(pv("pv-old", "pvc-m/1", "local"), on_hosts(&["n2"])),
        5,
    );
    let young = created_hours_ago(
        with_affinity(pv("pv-young", "pvc-m/1", "local"), on_hosts(&["n1"])),
        2,
    );
    let other = with_affinity(pv("pv-0", "pvc-m", "local"), on_hosts(&["n2"]));
    let elsewhere = with_affinity(pv("pv-x", "pvc-x", "local"), on_hosts(&["n2"]));
    let pvs = [&young, &other, &elsewhere, &old];
    let mut planner = Planner::new(&c.linstor, &c.classes, &c.settings);

    let decisions = planner.decide_volume_of(&VolumeId::new("pvc-m", 1), &pvs);
    let got: Vec<(&str, bool)> = decisions
        .iter()
        .map(|d| (d.pv_name.as_str(), matches!(d.outcome, Ok(Action::Replace(_)))))
        .collect();
    assert_eq!(got, [("pv-old", true), ("pv-young", false)]);
    assert!(decisions.iter().all(|d| d.volume == VolumeId::new("pvc-m", 1)));

    // The PV as just read, alone: it is decided again on its own.
    let fixed = with_affinity(pv("pv-old", "pvc-m/1", "local"), on_hosts(&["n1"]));
    let again = planner.decide_volume_of(&VolumeId::new("pvc-m", 1), &[&fixed]);
    assert_eq!(again.len(), 1);
    assert!(matches!(again[0].outcome, Ok(Action::InSync)), "{again:?}");
    // No PV and no saved state: nothing to decide.
    assert!(
        planner
            .decide_volume_of(&VolumeId::new("pvc-m", 0), &[])
            .is_empty()
    );
}

#[test]
fn accessibility_of_a_pv_is_what_its_decision_uses() {
    let mut c = Cluster::new();
    c.rd("pvc-1", &["n2", "n3"]);
    c.rd("pvc-empty", &[]);
    let live = with_affinity(pv("pv-1", "pvc-1", "local"), on_hosts(&["n1"]));
    let r = replacement(c.only(live.clone()));
    let mut planner = Planner::new(&c.linstor, &c.classes, &c.settings);
    let accessibility = planner.accessibility(&live).unwrap();
    assert_eq!(r.affinity, AffinityBasis::Recomputed(accessibility.clone()));
    assert_eq!(accessibility.topologies().len(), 2);
    // Nothing to compute from: no replica, a bad policy, another driver.
    assert_eq!(planner.accessibility(&pv("pv-2", "pvc-empty", "local")), None);
    assert_eq!(planner.accessibility(&pv("pv-3", "pvc-1", "broken")), None);
    let mut other = pv("pv-4", "pvc-1", "local");
    other.spec.as_mut().unwrap().csi.as_mut().unwrap().driver = "other".to_owned();
    assert_eq!(planner.accessibility(&other), None);
}
