//! Invariants of the engine over generated inputs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, PersistentVolume, PersistentVolumeSpec,
};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::{
    Accessibility, Action, DecisionSettings, LinstorSnapshot, Planner, Properties, PvRecord, RecordInterner,
    RemoteAccessPolicy, RemoteAccessRule, ReplaceNeeded, Replica, ResourceDefinitionState, Segments,
    VolumeId, affinity_matches, desired_node_affinity, prune,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

const KEYS: [&str; 4] = ["linbit.com/hostname", "zone", "region", "rack"];

fn small_map() -> impl Strategy<Value = Segments> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        "[a-c]",
        0..4,
    )
}

fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        any::<String>(),
        "[ -~]{0,12}",
    ]
}

fn policy() -> impl Strategy<Value = RemoteAccessPolicy> {
    prop::collection::vec(prop::collection::vec(key_text(), 0..4), 0..4).prop_map(|rules| {
        RemoteAccessPolicy::new(
            rules
                .into_iter()
                .map(|keys| RemoteAccessRule { from_same: keys })
                .collect(),
        )
    })
}

fn topology_policy() -> impl Strategy<Value = RemoteAccessPolicy> {
    prop::collection::vec(subsequence(&KEYS[..], 0..=KEYS.len()), 0..3).prop_map(|rules| {
        RemoteAccessPolicy::new(rules.into_iter().map(RemoteAccessRule::from_same).collect())
    })
}

/// Node names n0..n5 with random zone/region/rack labels.
fn nodes() -> impl Strategy<Value = Vec<(String, Properties)>> {
    prop::collection::vec(
        prop::collection::btree_map(
            prop::sample::select(&["zone", "region", "rack"][..]).prop_map(|k| format!("Aux/topology/{k}")),
            "[a-b]",
            0..3,
        ),
        6,
    )
    .prop_map(|props| {
        props
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("n{i}"), p))
            .collect()
    })
}

fn sorted(mut maps: Vec<Segments>) -> Vec<Segments> {
    maps.sort();
    maps
}

proptest! {
    #[test]
    fn printed_policy_parses_back(policy in policy()) {
        let text = policy.to_string();
        prop_assert_eq!(text.parse::<RemoteAccessPolicy>(), Ok(policy), "text: {:?}", text);
    }

    #[test]
    fn prune_is_idempotent_and_order_independent(maps in prop::collection::vec(small_map(), 0..8), seed in any::<u64>()) {
        let once = prune(maps.clone());
        prop_assert_eq!(prune(once.clone()), once.clone());
        let mut shuffled = maps.clone();
        // Deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(sorted(prune(shuffled)), sorted(once.clone()));
        // Nothing left is a superset of something else left.
        for (i, a) in once.iter().enumerate() {
            for (j, b) in once.iter().enumerate() {
                if i != j {
                    prop_assert!(!b.iter().all(|(k, v)| a.get(k) == Some(v)), "{:?} contains {:?}", a, b);
                }
            }
        }
    }

    #[test]
    fn desired_affinity_matches_its_own_topologies(
        policy in topology_policy(),
        nodes in prop::collection::vec(small_map(), 0..5),
    ) {
        let accessibility = Accessibility::from_nodes(&policy, nodes.iter());
        let desired = desired_node_affinity(&accessibility);
        prop_assert!(affinity_matches(desired.as_ref(), accessibility.topologies()));
        let topologies = accessibility.topologies();
        prop_assert!(topologies.windows(2).all(|w| w[0] < w[1]), "not sorted and unique: {:?}", topologies);
        prop_assert!(topologies.iter().all(|t| !t.is_empty()));
    }

    #[test]
    fn volume_ids_round_trip(name in "[a-z0-9-]{1,20}", number in any::<u16>()) {
        let id = VolumeId::new(name, number);
        prop_assert_eq!(id.to_string().parse::<VolumeId>(), Ok(id));
    }

    /// Applying a replacement converges: deciding again on the replacement
    /// finds it in sync.
    #[test]
    fn replacements_converge(
        nodes in nodes(),
        replicas in subsequence((0..6).collect::<Vec<usize>>(), 1..4),
        held in subsequence((0..6).collect::<Vec<usize>>(), 0..3),
        policy in topology_policy(),
    ) {
        let mut linstor = LinstorSnapshot::new();
        for (name, props) in &nodes {
            linstor.insert_node(name.clone(), props.clone());
        }
        linstor.insert_resource_definition(ResourceDefinitionState { name: "rd".into(), ..Default::default() });
        for i in &replicas {
            linstor.push_replica(Replica::new("rd", format!("n{i}"), Vec::<String>::new()));
        }
        let classes: BTreeMap<String, Properties> = BTreeMap::new();
        let settings = DecisionSettings {
            property_namespace: "Aux/topology".into(),
            grace_period: Duration::from_secs(60),
            now: Timestamp::UNIX_EPOCH,
        };
        let held_hosts: Vec<Segments> = held
            .iter()
            .map(|i| Segments::from([("linbit.com/hostname".to_owned(), format!("n{i}"))]))
            .collect();
        let current = desired_node_affinity(&if held_hosts.is_empty() {
            Accessibility::Everywhere
        } else {
            Accessibility::Restricted(held_hosts)
        });
        let mut annotations = BTreeMap::new();
        annotations.insert("override.piraeus.io/policy".to_owned(), policy.to_string());
        let pv = PersistentVolume {
            metadata: ObjectMeta { name: Some("pv".into()), annotations: Some(annotations), ..Default::default() },
            spec: Some(PersistentVolumeSpec {
                node_affinity: current,
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".into(),
                    volume_handle: "rd".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        };
        let mut plan = Planner::new(&linstor, &classes, &settings).plan([&pv]);
        prop_assert_eq!(plan.decisions.len(), 1);
        match plan.decisions.remove(0).outcome {
            Ok(Action::Replace(replacement)) => {
                let again = Planner::new(&linstor, &classes, &settings).plan([&replacement.pv]);
                prop_assert!(
                    matches!(again.decisions[0].outcome, Ok(Action::InSync)),
                    "{:?}", again.decisions[0].outcome
                );
            }
            Ok(Action::InSync) => {}
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// The planner decides on a PV's record as on the whole PV, except that
    /// a record of a volume with saved replace state asks for the whole PV.
    #[test]
    fn a_record_decides_like_its_pv(
        nodes in nodes(),
        replicas in subsequence((0..6).collect::<Vec<usize>>(), 0..3),
        held in subsequence((0..6).collect::<Vec<usize>>(), 0..3),
        policy in prop::option::of(topology_policy()),
        skip in any::<bool>(),
        restore in prop::option::of(prop::sample::select(&["Delete", "Retain"][..])),
        phase in prop::option::of(prop::sample::select(&["Bound", "Released", "Failed", "Available"][..])),
        deleting in any::<bool>(),
        age_seconds in prop::sample::select(&[0i64, 30, 3600][..]),
        saved in any::<bool>(),
    ) {
        let mut linstor = LinstorSnapshot::new();
        for (name, props) in &nodes {
            linstor.insert_node(name.clone(), props.clone());
        }
        for i in &replicas {
            linstor.push_replica(Replica::new("rd", format!("n{i}"), Vec::<String>::new()));
        }
        let classes = BTreeMap::from([(
            "local".to_owned(),
            BTreeMap::from([("allowRemoteVolumeAccess".to_owned(), "false".to_owned())]),
        )]);
        let now = Timestamp::from_second(1_000_000).unwrap();
        let settings = DecisionSettings {
            property_namespace: "Aux/topology".into(),
            grace_period: Duration::from_secs(60),
            now,
        };
        let held_hosts: Vec<Segments> = held
            .iter()
            .map(|i| Segments::from([("linbit.com/hostname".to_owned(), format!("n{i}"))]))
            .collect();
        let mut annotations = BTreeMap::new();
        if let Some(policy) = &policy {
            annotations.insert("override.piraeus.io/policy".to_owned(), policy.to_string());
        }
        if skip {
            annotations.insert("piraeus.io/skip-affinity-controller".to_owned(), "yes".to_owned());
        }
        if let Some(restore) = restore {
            annotations.insert("linstor.csi.linbit.com/affinity-restore-reclaim-policy".to_owned(), restore.to_owned());
        }
        let created = now.checked_sub(affinity_core::k8s_openapi::jiff::SignedDuration::from_secs(age_seconds)).unwrap();
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv".into()),
                uid: Some("uid-pv".into()),
                annotations: Some(annotations),
                creation_timestamp: Some(affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created)),
                deletion_timestamp: deleting.then_some(affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some("local".into()),
                node_affinity: desired_node_affinity(&Accessibility::Restricted(held_hosts)),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".into(),
                    volume_handle: "rd".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(affinity_core::k8s_openapi::api::core::v1::PersistentVolumeStatus {
                phase: phase.map(str::to_owned),
                ..Default::default()
            }),
        };
        let mut definition = ResourceDefinitionState { name: "rd".into(), ..Default::default() };
        if saved {
            let json = affinity_core::encode_intent(&affinity_core::replacement_pv(&pv, None), None).unwrap();
            definition.volume_definitions.push(affinity_core::VolumeDefinitionState {
                volume_number: 0,
                properties: BTreeMap::from([(affinity_core::names::SAVED_PV_PROPERTY.to_owned(), json)]),
            });
        }
        linstor.insert_resource_definition(definition);
        let record = PvRecord::of(&pv, &mut RecordInterner::new()).unwrap();
        let on_whole = Planner::new(&linstor, &classes, &settings).plan([&pv]);
        let on_record = Planner::new(&linstor, &classes, &settings).plan([&record]);
        prop_assert_eq!(on_whole.decisions.len(), on_record.decisions.len());
        for (whole, record) in on_whole.decisions.into_iter().zip(on_record.decisions) {
            prop_assert_eq!(&whole.pv_name, &record.pv_name);
            if saved {
                prop_assert!(
                    matches!(record.outcome, Err(affinity_core::DecisionError::LivePvNeeded { .. })),
                    "{:?}", record.outcome
                );
                continue;
            }
            let whole = whole.outcome.map(|action| action.map_replace(ReplaceNeeded::from));
            prop_assert_eq!(format!("{whole:?}"), format!("{:?}", record.outcome));
        }
    }
}
