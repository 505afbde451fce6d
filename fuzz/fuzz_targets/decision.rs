//! The whole decision on arbitrary clusters never panics, and every
//! replacement computed from LINSTOR state is in sync when decided again.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::names::{CSI_DRIVER, SAVED_PV_PROPERTY};
use affinity_core::{
    Action, AffinityBasis, DecisionSettings, LinstorSnapshot, Planner, Replica, ResourceDefinitionState,
    VolumeDefinitionState, encode_saved_pv,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// Names come from small sets so that PVs, definitions and nodes meet.
fn node(i: u8) -> String {
    format!("n{}", i % 5)
}

fn definition(i: u8) -> String {
    format!("pvc-{}", i % 4)
}

const KEYS: [&str; 4] = [
    "linbit.com/hostname",
    "topology.kubernetes.io/zone",
    "region",
    "Aux/topology/x",
];
const FLAGS: [&str; 6] = [
    "DISKLESS",
    "DELETE",
    "FAILED_DEPLOYMENT",
    "FAILED_DISCONNECT",
    "INACTIVE",
    "TIE_BREAKER",
];

#[derive(Arbitrary, Debug)]
struct Input {
    nodes: Vec<(u8, Vec<(u8, String)>)>,
    definitions: Vec<DefinitionIn>,
    classes: Vec<(u8, Vec<(String, String)>)>,
    pvs: Vec<PvIn>,
    legacy_namespace: bool,
    grace_seconds: u16,
}

#[derive(Arbitrary, Debug)]
struct DefinitionIn {
    name: u8,
    skip: Option<String>,
    volumes: Vec<(u8, Option<SavedIn>)>,
    replicas: Vec<(u8, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
enum SavedIn {
    Raw(String),
    Pv(PvIn),
}

#[derive(Arbitrary, Debug)]
struct PvIn {
    name: u8,
    handle: HandleIn,
    class: Option<u8>,
    annotations: Vec<(String, String)>,
    policy_override: Option<String>,
    volume_context: Option<Option<String>>,
    affinity: Option<Vec<Vec<(u8, String, String, u8)>>>,
    phase: Option<String>,
    age_seconds: Option<u16>,
    deleting: bool,
    reclaim: Option<String>,
    other_driver: bool,
}

#[derive(Arbitrary, Debug)]
enum HandleIn {
    Volume(u8, Option<u8>),
    Raw(String),
}

const NOW: i64 = 1_800_000_000;

impl PvIn {
    fn build(&self) -> PersistentVolume {
        let handle = match &self.handle {
            HandleIn::Volume(rd, None) => definition(*rd),
            HandleIn::Volume(rd, Some(n)) => format!("{}/{}", definition(*rd), n % 3),
            HandleIn::Raw(raw) => raw.clone(),
        };
        let mut annotations: BTreeMap<String, String> = self.annotations.iter().cloned().collect();
        if let Some(policy) = &self.policy_override {
            annotations.insert("override.piraeus.io/policy".to_owned(), policy.clone());
        }
        let volume_attributes = self.volume_context.as_ref().map(|policy| {
            let mut attributes = BTreeMap::from([(
                "linstor.csi.linbit.com/uses-volume-context".to_owned(),
                "true".to_owned(),
            )]);
            if let Some(policy) = policy {
                attributes.insert(
                    "linstor.csi.linbit.com/remote-access-policy".to_owned(),
                    policy.clone(),
                );
            }
            attributes
        });
        let node_affinity = self.affinity.as_ref().map(|terms| VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: terms
                    .iter()
                    .map(|expressions| NodeSelectorTerm {
                        match_expressions: Some(
                            expressions
                                .iter()
                                .map(|(key, operator, value, count)| NodeSelectorRequirement {
                                    key: KEYS[usize::from(*key) % KEYS.len()].to_owned(),
                                    operator: if operator.is_empty() {
                                        "In".to_owned()
                                    } else {
                                        operator.clone()
                                    },
                                    values: Some(vec![value.clone(); usize::from(*count % 3)]),
                                })
                                .collect(),
                        ),
                        match_fields: None,
                    })
                    .collect(),
            }),
        });
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(format!("pv-{}", self.name % 6)),
                uid: Some(format!("uid-{}", self.name)),
                annotations: Some(annotations),
                creation_timestamp: self
                    .age_seconds
                    .and_then(|age| Timestamp::from_second(NOW - i64::from(age)).ok())
                    .map(Time),
                deletion_timestamp: if self.deleting {
                    Timestamp::from_second(NOW).ok().map(Time)
                } else {
                    None
                },
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: self.class.map(|c| format!("sc-{}", c % 3)),
                persistent_volume_reclaim_policy: self.reclaim.clone(),
                node_affinity,
                csi: Some(CSIPersistentVolumeSource {
                    driver: if self.other_driver {
                        "other.csi".to_owned()
                    } else {
                        CSI_DRIVER.to_owned()
                    },
                    volume_handle: handle,
                    volume_attributes,
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: self.phase.clone().map(|phase| PersistentVolumeStatus {
                phase: Some(phase),
                ..PersistentVolumeStatus::default()
            }),
        }
    }
}

fuzz_target!(|input: Input| {
    let mut linstor = LinstorSnapshot::new();
    for (name, props) in &input.nodes {
        let props = props
            .iter()
            .map(|(key, value)| {
                (
                    format!("Aux/topology/{}", KEYS[usize::from(*key) % KEYS.len()]),
                    value.clone(),
                )
            })
            .collect();
        linstor.insert_node(node(*name), props);
    }
    for rd in &input.definitions {
        let name = definition(rd.name);
        let volume_definitions = rd
            .volumes
            .iter()
            .map(|(number, saved)| VolumeDefinitionState {
                volume_number: u16::from(*number % 3),
                properties: saved
                    .iter()
                    .filter_map(|saved| match saved {
                        SavedIn::Raw(raw) => Some(raw.clone()),
                        SavedIn::Pv(pv) => encode_saved_pv(&pv.build()).ok(),
                    })
                    .map(|json| (SAVED_PV_PROPERTY.to_owned(), json))
                    .collect(),
            })
            .collect();
        let properties = rd
            .skip
            .iter()
            .map(|value| ("Aux/affinity-updater-skip".to_owned(), value.clone()))
            .collect();
        linstor.insert_resource_definition(ResourceDefinitionState {
            name: name.clone(),
            properties,
            volume_definitions,
        });
        for (on, flags) in &rd.replicas {
            let flags = flags.iter().map(|f| FLAGS[usize::from(*f) % FLAGS.len()]);
            linstor.push_replica(Replica::new(name.clone(), node(*on), flags));
        }
    }
    let classes: BTreeMap<String, BTreeMap<String, String>> = input
        .classes
        .iter()
        .map(|(name, params)| (format!("sc-{}", name % 3), params.iter().cloned().collect()))
        .collect();
    let settings = DecisionSettings {
        property_namespace: if input.legacy_namespace {
            "Aux".to_owned()
        } else {
            "Aux/topology".to_owned()
        },
        grace_period: Duration::from_secs(u64::from(input.grace_seconds)),
        now: Timestamp::from_second(NOW).unwrap_or(Timestamp::UNIX_EPOCH),
    };
    let pvs: Vec<PersistentVolume> = input.pvs.iter().map(PvIn::build).collect();
    let plan = Planner::new(&linstor, &classes, &settings).plan(&pvs);
    let _ = plan.summary();
    for (_, replacement) in plan.replacements() {
        if !matches!(replacement.affinity, AffinityBasis::Recomputed(_)) {
            continue;
        }
        // Decided again without the saved state, the replacement is in sync
        // or left alone for a reason that does not depend on its affinity.
        let mut again = replacement.pv.clone();
        again.metadata.creation_timestamp = None;
        let mut without_saved = linstor.clone();
        if let Some(rd) = again
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .and_then(|csi| csi.volume_handle.split('/').next())
            .and_then(|name| affinity_core::ResourceDefinitionSource::resource_definition(&linstor, name))
        {
            let mut rd = rd.clone();
            for vd in &mut rd.volume_definitions {
                vd.properties.remove(SAVED_PV_PROPERTY);
            }
            without_saved.insert_resource_definition(rd);
        }
        let decided = Planner::new(&without_saved, &classes, &settings).plan([&again]);
        for decision in &decided.decisions {
            if let Ok(action) = &decision.outcome {
                assert!(
                    matches!(
                        action,
                        Action::InSync | Action::Skip(_) | Action::RestoreReclaimPolicy { .. }
                    ),
                    "replacement not in sync: {action:?}"
                );
            }
        }
    }
});
