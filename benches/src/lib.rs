//! Synthetic clusters for the benchmarks: LINSTOR state, StorageClasses and
//! PVs of any size, deterministic for a given size.

pub mod cpu_time;

use std::collections::BTreeMap;
use std::time::Duration;

use affinity_core::k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
    PersistentVolumeStatus,
};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::names::CSI_DRIVER;
use affinity_core::{
    Accessibility, DecisionSettings, LinstorSnapshot, Properties, RemoteAccessPolicy, Replica,
    ResourceDefinitionState, Segments, VolumeDefinitionState, desired_node_affinity, node_segments,
};

/// Nodes in every synthetic cluster.
pub const NODES: usize = 50;
/// Diskful replicas per volume.
pub const REPLICAS: usize = 3;
/// Property namespace of the synthetic nodes.
pub const NAMESPACE: &str = "Aux/topology";

/// A synthetic cluster ready to be decided on.
pub struct Fixture {
    /// LINSTOR state.
    pub linstor: LinstorSnapshot,
    /// StorageClass parameters by name.
    pub storage_classes: BTreeMap<String, Properties>,
    /// One PV per volume.
    pub pvs: Vec<PersistentVolume>,
    /// Decision settings (all PVs are past their grace period).
    pub settings: DecisionSettings,
}

/// Small deterministic generator, so fixtures need no dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn node_name(i: usize) -> String {
    format!("worker-{i:02}")
}

/// Five topology properties per node: hostname, zone, region, rack, row.
fn node_properties(i: usize) -> Properties {
    let mut props = Properties::new();
    let ns = NAMESPACE;
    props.insert(format!("{ns}/kubernetes.io/hostname"), node_name(i));
    props.insert(
        format!("{ns}/topology.kubernetes.io/zone"),
        format!("zone-{}", i % 5),
    );
    props.insert(
        format!("{ns}/topology.kubernetes.io/region"),
        format!("region-{}", i % 2),
    );
    props.insert(format!("{ns}/example.com/rack"), format!("rack-{}", i % 10));
    props.insert(format!("{ns}/example.com/row"), format!("row-{}", i % 3));
    props
}

const ZONE_POLICY: &str = "- fromSame: [topology.kubernetes.io/zone]";
const RACK_OR_REGION_POLICY: &str =
    "- fromSame: [example.com/rack]\n- fromSame: [topology.kubernetes.io/region, example.com/row]\n";

/// A cluster of `volumes` volumes, one resource definition each, with three
/// diskful replicas on distinct nodes. Policies mix: local only, zone, anywhere
/// (StorageClasses), a two-rule policy in the volume context, and override
/// annotations. About one PV in ten has drifted (its affinity names a node
/// the data left).
pub fn cluster(volumes: usize) -> Fixture {
    let mut random = SplitMix(volumes as u64);
    let mut linstor = LinstorSnapshot::new();
    let segments: Vec<Segments> = (0..NODES)
        .map(|i| {
            let props = node_properties(i);
            let segments = node_segments(&node_name(i), &props, NAMESPACE);
            linstor.insert_node(node_name(i), props);
            segments
        })
        .collect();
    let storage_classes = BTreeMap::from([
        (
            "local".to_owned(),
            params(&[("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false")]),
        ),
        (
            "zonal".to_owned(),
            params(&[("allowRemoteVolumeAccess", ZONE_POLICY)]),
        ),
        (
            "anywhere".to_owned(),
            params(&[("layerList", "drbd storage"), ("placementCount", "3")]),
        ),
    ]);
    let created = Timestamp::UNIX_EPOCH;
    let mut pvs = Vec::with_capacity(volumes);
    for v in 0..volumes {
        let rd = format!("pvc-{v:08x}-0000-4000-8000-000000000000");
        let mut nodes = Vec::with_capacity(REPLICAS);
        while nodes.len() < REPLICAS {
            let n = random.below(NODES);
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        linstor.insert_resource_definition(ResourceDefinitionState {
            name: rd.clone(),
            properties: params(&[("DrbdOptions/Resource/quorum", "majority")]),
            volume_definitions: vec![VolumeDefinitionState::default()],
        });
        for n in &nodes {
            linstor.push_replica(Replica::new(rd.clone(), node_name(*n), Vec::<String>::new()));
        }
        // A diskless tie-breaker on another node, as LINSTOR adds for quorum.
        linstor.push_replica(Replica::new(
            rd.clone(),
            node_name((nodes[0] + 1) % NODES),
            ["DISKLESS", "TIE_BREAKER"],
        ));

        let (class, attributes, annotation) = match v % 10 {
            0..=3 => ("local", None, None),
            4..=5 => ("zonal", None, None),
            6 => ("anywhere", None, None),
            7..=8 => ("local", Some(RACK_OR_REGION_POLICY), None),
            _ => ("anywhere", None, Some(ZONE_POLICY)),
        };
        let text = annotation.or(attributes);
        let policy: RemoteAccessPolicy = match text {
            Some(text) => text.parse().unwrap_or_default(),
            None if class == "local" => RemoteAccessPolicy::local_only(),
            None if class == "zonal" => ZONE_POLICY.parse().unwrap_or_default(),
            None => RemoteAccessPolicy::anywhere(),
        };
        let drifted = random.below(10) == 0;
        let held: Vec<&Segments> = if drifted {
            let moved_to = (nodes[0] + 7) % NODES;
            vec![&segments[moved_to]]
        } else {
            nodes.iter().map(|n| &segments[*n]).collect()
        };
        let affinity = desired_node_affinity(&Accessibility::from_nodes(&policy, held));
        pvs.push(pv(&rd, class, attributes, annotation, affinity, created));
    }
    let settings = DecisionSettings {
        property_namespace: NAMESPACE.to_owned(),
        grace_period: Duration::from_secs(60),
        now: Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::MAX),
    };
    Fixture {
        linstor,
        storage_classes,
        pvs,
        settings,
    }
}

fn params(pairs: &[(&str, &str)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pv(
    rd: &str,
    class: &str,
    volume_context_policy: Option<&str>,
    override_policy: Option<&str>,
    node_affinity: Option<affinity_core::k8s_openapi::api::core::v1::VolumeNodeAffinity>,
    created: Timestamp,
) -> PersistentVolume {
    let mut annotations = params(&[("pv.kubernetes.io/provisioned-by", CSI_DRIVER)]);
    if let Some(policy) = override_policy {
        annotations.insert(
            "override.piraeus.io/remote-access-policy".to_owned(),
            policy.to_owned(),
        );
    }
    let mut attributes = params(&[(
        "storage.kubernetes.io/csiProvisionerIdentity",
        "1700000000000-8081-linstor",
    )]);
    if let Some(policy) = volume_context_policy {
        attributes.insert(
            "linstor.csi.linbit.com/uses-volume-context".to_owned(),
            "true".to_owned(),
        );
        attributes.insert(
            "linstor.csi.linbit.com/remote-access-policy".to_owned(),
            policy.to_owned(),
        );
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(rd.to_owned()),
            uid: Some(format!("uid-{rd}")),
            creation_timestamp: Some(Time(created)),
            annotations: Some(annotations),
            finalizers: Some(vec!["kubernetes.io/pv-protection".to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: Some(class.to_owned()),
            persistent_volume_reclaim_policy: Some("Delete".to_owned()),
            mount_options: Some(vec!["noatime".to_owned()]),
            volume_mode: Some("Filesystem".to_owned()),
            claim_ref: Some(ObjectReference {
                name: Some(format!("data-{rd}")),
                namespace: Some("default".to_owned()),
                ..ObjectReference::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER.to_owned(),
                volume_handle: rd.to_owned(),
                fs_type: Some("ext4".to_owned()),
                volume_attributes: Some(attributes),
                ..CSIPersistentVolumeSource::default()
            }),
            node_affinity,
            ..PersistentVolumeSpec::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Bound".to_owned()),
            ..PersistentVolumeStatus::default()
        }),
    }
}
