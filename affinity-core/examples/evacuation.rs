//! What the engine decides for a small cluster right after LINSTOR evacuated
//! node `worker-2`: some PVs still point at it, one replace was interrupted
//! by a crash, and a few PVs are left alone for good reasons.
//!
//! Run: `cargo run --release -p affinity-core --example evacuation`

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use affinity_core::k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelectorTerm, PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_ANNOTATION, SKIP_RECLAIM_ANNOTATION};
use affinity_core::{
    Accessibility, Action, AffinityBasis, DecisionSettings, LinstorSnapshot, Planner, Properties,
    RemoteAccessPolicy, Replica, ResourceDefinitionState, VolumeDefinitionState, desired_node_affinity,
    encode_saved_pv, guess_property_namespace, node_segments, replacement_pv,
};

/// A replica's node and its LINSTOR flags.
type Placement<'a> = (&'a str, &'a [&'a str]);

const ZONE_POLICY: &str = "- fromSame: [topology.kubernetes.io/zone]";

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn main() {
    let settings_time = SystemTime::now();
    let mut linstor = LinstorSnapshot::new();
    for (node, zone) in [
        ("worker-1", "zone-a"),
        ("worker-2", "zone-a"),
        ("worker-3", "zone-b"),
        ("worker-4", "zone-b"),
        ("worker-5", "zone-a"),
    ] {
        linstor.insert_node(
            node,
            props(&[
                ("Aux/topology/kubernetes.io/hostname", node),
                ("Aux/topology/topology.kubernetes.io/zone", zone),
            ]),
        );
    }
    let namespace = guess_property_namespace(linstor.nodes().map(|(_, props)| props));
    let storage_classes = BTreeMap::from([
        (
            "local".to_owned(),
            props(&[("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false")]),
        ),
        (
            "zonal".to_owned(),
            props(&[("allowRemoteVolumeAccess", ZONE_POLICY)]),
        ),
        ("anywhere".to_owned(), props(&[("layerList", "drbd storage")])),
    ]);

    // Where the data is now: worker-2's replicas moved to worker-4 and
    // worker-5; "pvc-db-1" is still being copied, so worker-2 keeps a replica.
    let placements: &[(&str, &[Placement])] = &[
        ("pvc-web-0", &[("worker-1", &[])]),
        ("pvc-web-1", &[("worker-4", &[]), ("worker-2", &["DELETE"])]),
        ("pvc-db-0", &[("worker-1", &[]), ("worker-3", &[])]),
        (
            "pvc-db-1",
            &[("worker-2", &[]), ("worker-5", &[]), ("worker-3", &[])],
        ),
        ("pvc-cache", &[("worker-5", &[])]),
        ("pvc-logs", &[("worker-5", &[])]),
        (
            "pvc-scratch",
            &[("worker-2", &["DISKLESS"]), ("worker-4", &["DISKLESS"])],
        ),
        ("pvc-queue", &[("worker-4", &[])]),
    ];
    for (rd, replicas) in placements {
        linstor.insert_resource_definition(ResourceDefinitionState {
            name: (*rd).to_owned(),
            properties: Properties::new(),
            volume_definitions: vec![VolumeDefinitionState::default()],
        });
        for (node, flags) in *replicas {
            linstor.push_replica(Replica::new(*rd, *node, flags.iter().copied()));
        }
    }

    // The PVs as Kubernetes has them, with the affinity of before.
    let hosts = |nodes: &[&str]| affinity_for(&RemoteAccessPolicy::local_only(), &linstor, namespace, nodes);
    let zones = |nodes: &[&str]| {
        let policy: RemoteAccessPolicy = ZONE_POLICY.parse().unwrap_or_default();
        affinity_for(&policy, &linstor, namespace, nodes)
    };
    let mut pvs = vec![
        pv("pvc-web-0", "local", hosts(&["worker-1"])),
        pv("pvc-web-1", "local", hosts(&["worker-2"])),
        pv("pvc-db-0", "zonal", zones(&["worker-1", "worker-3"])),
        pv("pvc-db-1", "local", hosts(&["worker-2", "worker-3"])),
        pv("pvc-cache", "anywhere", hosts(&["worker-2"])),
        annotate(
            pv("pvc-logs", "local", hosts(&["worker-2"])),
            SKIP_ANNOTATION,
            "true",
        ),
        pv("pvc-scratch", "local", hosts(&["worker-2"])),
    ];

    // "pvc-queue" was being replaced when the controller was killed: its
    // intent is saved, the live PV already carries Retain and skip-reclaim.
    let original = pv("pvc-queue", "local", hosts(&["worker-2"]));
    let intent = replacement_pv(&original, hosts(&["worker-4"]));
    if let Ok(json) = encode_saved_pv(&intent) {
        linstor.insert_resource_definition(ResourceDefinitionState {
            name: "pvc-queue".to_owned(),
            properties: Properties::new(),
            volume_definitions: vec![VolumeDefinitionState {
                volume_number: 0,
                properties: props(&[(SAVED_PV_PROPERTY, &json)]),
            }],
        });
    }
    let mut interrupted = annotate(original, SKIP_RECLAIM_ANNOTATION, "true");
    if let Some(spec) = interrupted.spec.as_mut() {
        spec.persistent_volume_reclaim_policy = Some("Retain".to_owned());
    }
    pvs.push(interrupted);

    let settings = DecisionSettings::at(namespace, Duration::from_secs(60), settings_time);
    let plan = Planner::new(&linstor, &storage_classes, &settings).plan(&pvs);

    println!("property namespace: {namespace}\n");
    println!(
        "{:<12} {:<13} {:<46} DECISION",
        "PV", "VOLUME", "AFFINITY NOW -> WANTED"
    );
    for decision in &plan.decisions {
        let live = pvs
            .iter()
            .find(|pv| pv.metadata.name.as_deref() == Some(decision.pv_name.as_str()));
        let now = describe(live.and_then(|pv| pv.spec.as_ref()?.node_affinity.as_ref()));
        let (wanted, verdict) = match &decision.outcome {
            Ok(Action::InSync) => (now.clone(), "in sync".to_owned()),
            Ok(Action::Skip(reason)) => ("-".to_owned(), format!("skip: {reason}")),
            Ok(Action::ClearSavedState) => ("-".to_owned(), "clear saved state".to_owned()),
            Ok(Action::RestoreReclaimPolicy { policy }) => (
                now.clone(),
                format!("restore reclaim policy {policy} once the claim owns it"),
            ),
            Ok(Action::Replace(replacement)) => {
                let wanted = describe(
                    replacement
                        .pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_affinity.as_ref()),
                );
                let basis = match &replacement.affinity {
                    AffinityBasis::Recomputed(_) => String::new(),
                    AffinityBasis::KeptFromSavedState { reason } => format!(" (saved affinity: {reason})"),
                };
                (wanted, format!("replace: {:?}{basis}", replacement.trigger))
            }
            Err(error) => ("-".to_owned(), format!("error: {error}")),
        };
        println!(
            "{:<12} {:<13} {:<46} {verdict}",
            decision.pv_name,
            decision.volume.to_string(),
            format!("{now} -> {wanted}")
        );
    }
    let summary = plan.summary();
    println!(
        "\n{} in sync, {} to replace, {} skipped, {} saved states to clear, {} errors",
        summary.in_sync, summary.replace, summary.skip, summary.clear_saved_state, summary.errors
    );
}

/// The affinity a PV had when its data was on `nodes`.
fn affinity_for(
    policy: &RemoteAccessPolicy,
    linstor: &LinstorSnapshot,
    namespace: &str,
    nodes: &[&str],
) -> Option<VolumeNodeAffinity> {
    let segments: Vec<_> = linstor
        .nodes()
        .filter(|(name, _)| nodes.contains(name))
        .map(|(name, props)| node_segments(name, props, namespace))
        .collect();
    desired_node_affinity(&Accessibility::from_nodes(policy, segments.iter()))
}

fn pv(name: &str, class: &str, node_affinity: Option<VolumeNodeAffinity>) -> PersistentVolume {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let created = DecisionSettings::at("", Duration::ZERO, an_hour_ago).now;
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(created)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            storage_class_name: Some(class.to_owned()),
            persistent_volume_reclaim_policy: Some("Delete".to_owned()),
            mount_options: Some(vec!["noatime".to_owned()]),
            csi: Some(CSIPersistentVolumeSource {
                driver: "linstor.csi.linbit.com".to_owned(),
                volume_handle: name.to_owned(),
                ..CSIPersistentVolumeSource::default()
            }),
            node_affinity,
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn annotate(mut pv: PersistentVolume, key: &str, value: &str) -> PersistentVolume {
    pv.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    pv
}

/// A short text form of an affinity: terms joined by `|`, values by `,`.
fn describe(affinity: Option<&VolumeNodeAffinity>) -> String {
    let terms = affinity
        .and_then(|a| a.required.as_ref())
        .map(|r| &r.node_selector_terms);
    match terms {
        None => "anywhere".to_owned(),
        Some(terms) => terms.iter().map(describe_term).collect::<Vec<_>>().join("|"),
    }
}

fn describe_term(term: &NodeSelectorTerm) -> String {
    term.match_expressions
        .iter()
        .flatten()
        .map(|e| e.values.iter().flatten().cloned().collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join("+")
}
