//! The simulated cluster: its state, the operations on it, and how it renders as API objects.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::models::{
    ApiCallRc, ConnectionStatus, ControllerVersion, DrbdConnection, DrbdResource,
    DrbdResourceDefinitionLayer, DrbdVolume, DrbdVolumeDefinition, LayerType, NetInterface, Node,
    NodeEvacuate, NodeModify, NodeRestore, NodeType, Properties, ProviderKind, Resource, ResourceDefinition,
    ResourceDefinitionLayer, ResourceLayer, ResourceState, ResourceWithVolumes, StorageResource,
    StorageVolume, Volume, VolumeDefinition, VolumeDefinitionLayer, VolumeDefinitionModify, VolumeLayer,
    VolumeState, flags,
};

/// Name of the storage pool of diskless resources.
pub const DISKLESS_POOL: &str = "DfltDisklessStorPool";
/// Default storage pool of diskful resources.
pub const DEFAULT_POOL: &str = "lvm-thin";
/// Node property that excludes a node from automatic placement when `false`.
pub const AUTOPLACE_TARGET: &str = "AutoplaceTarget";
/// Resource flag marking a replica that is being moved off an evacuating node.
pub const RESOURCE_EVACUATE: &str = "EVACUATE";

/// Return codes used by the simulator (success codes are small positive numbers, errors carry
/// [`ApiCallRc::MASK_ERROR`]).
pub mod rc {
    use crate::models::ApiCallRc;
    /// Object created.
    pub const CREATED: i64 = 1;
    /// Object deleted.
    pub const DELETED: i64 = 2;
    /// Object modified.
    pub const MODIFIED: i64 = 3;
    /// Informational.
    pub const INFO: i64 = ApiCallRc::MASK_INFO | 4;
    /// Warning.
    pub const WARN: i64 = ApiCallRc::MASK_WARN | 5;
    /// Object not found.
    pub const NOT_FOUND: i64 = ApiCallRc::MASK_ERROR | 0x0101;
    /// Object exists already.
    pub const EXISTS: i64 = ApiCallRc::MASK_ERROR | 0x0102;
    /// Invalid request.
    pub const INVALID: i64 = ApiCallRc::MASK_ERROR | 0x0103;
    /// Object still in use.
    pub const IN_USE: i64 = ApiCallRc::MASK_ERROR | 0x0104;
    /// Injected failure.
    pub const FAILED: i64 = ApiCallRc::MASK_ERROR | 0x0105;
    /// Operation refused because it cannot be carried out as asked (evacuating a node that is not
    /// online, or one with a replica that no eligible node can replace).
    pub const REFUSED: i64 = ApiCallRc::MASK_ERROR | 0x0106;
}

/// A failed operation: HTTP status and the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct SimError {
    /// HTTP status of the answer.
    pub status: u16,
    /// The reply.
    pub reply: Box<ApiCallRc>,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.reply)
    }
}

impl std::error::Error for SimError {}

fn err(status: u16, ret_code: i64, message: String, correction: Option<&str>) -> SimError {
    SimError {
        status,
        reply: Box::new(ApiCallRc {
            ret_code,
            message,
            correction: correction.map(str::to_owned),
            ..Default::default()
        }),
    }
}

/// A 404 answer with LINSTOR's not-found return code.
pub(crate) fn not_found(message: String) -> SimError {
    err(404, rc::NOT_FOUND, message, None)
}

fn ok(ret_code: i64, message: String, objs: &[(&str, &str)]) -> ApiCallRc {
    ApiCallRc {
        ret_code,
        message,
        obj_refs: objs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// Result of an operation: the replies, or the failure.
pub type SimResult<T = Vec<ApiCallRc>> = Result<T, SimError>;

/// A node of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// Node type.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Properties.
    pub props: Properties,
    /// Flags (`EVACUATE`, `EVICTED`, ...).
    pub flags: Vec<String>,
    /// Address of the default interface (derived from the node's position when absent).
    pub address: Option<String>,
    /// Connection status.
    pub connection_status: ConnectionStatus,
}

impl Default for SimNode {
    fn default() -> Self {
        SimNode {
            name: String::new(),
            node_type: NodeType::Satellite,
            props: Properties::new(),
            flags: Vec::new(),
            address: None,
            connection_status: ConnectionStatus::Online,
        }
    }
}

impl SimNode {
    /// A satellite node with the given name.
    pub fn new(name: impl Into<String>) -> Self {
        SimNode {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a property.
    pub fn prop(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.props.insert(key.into(), value.into());
        self
    }

    pub(crate) fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// A volume definition of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimVolumeDefinition {
    /// Volume number.
    pub volume_number: i32,
    /// Size in KiB.
    pub size_kib: i64,
    /// Properties.
    pub props: Properties,
    /// Flags.
    pub flags: Vec<String>,
    /// DRBD minor number (assigned when absent).
    pub minor_number: Option<i32>,
}

impl Default for SimVolumeDefinition {
    fn default() -> Self {
        SimVolumeDefinition {
            volume_number: 0,
            size_kib: 1_048_576,
            props: Properties::new(),
            flags: Vec::new(),
            minor_number: None,
        }
    }
}

/// A resource (replica) of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimResource {
    /// Node of the replica.
    pub node_name: String,
    /// Flags (`DISKLESS`, `TIE_BREAKER`, `EVACUATE`, ...). `DISKLESS` makes it diskless.
    pub flags: Vec<String>,
    /// Properties.
    pub props: Properties,
    /// Whether the replica is in use (DRBD primary); `None`: unknown.
    pub in_use: Option<bool>,
    /// Storage pool (default `lvm-thin`, or `DfltDisklessStorPool` when diskless).
    pub storage_pool: Option<String>,
    /// DRBD node id (assigned when absent).
    pub node_id: Option<i32>,
    /// Creation time, milliseconds since the Unix epoch.
    pub create_timestamp: Option<i64>,
}

impl Default for SimResource {
    fn default() -> Self {
        SimResource {
            node_name: String::new(),
            flags: Vec::new(),
            props: Properties::new(),
            in_use: Some(false),
            storage_pool: None,
            node_id: None,
            create_timestamp: None,
        }
    }
}

impl SimResource {
    /// A diskful replica on `node`.
    pub fn diskful(node: impl Into<String>) -> Self {
        SimResource {
            node_name: node.into(),
            ..Default::default()
        }
    }

    /// A diskless replica on `node`.
    pub fn diskless(node: impl Into<String>) -> Self {
        SimResource {
            node_name: node.into(),
            flags: vec![flags::DRBD_DISKLESS.to_owned(), flags::DISKLESS.to_owned()],
            ..Default::default()
        }
    }

    /// Whether the replica has no disk.
    pub fn is_diskless(&self) -> bool {
        self.flags
            .iter()
            .any(|f| f == flags::DISKLESS || f == flags::DRBD_DISKLESS)
    }

    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// A resource definition of the simulated cluster, with its volume definitions and resources.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SimResourceDefinition {
    /// Name.
    pub name: String,
    /// Properties.
    pub props: Properties,
    /// Flags.
    pub flags: Vec<String>,
    /// Resource group.
    pub resource_group_name: Option<String>,
    /// DRBD port (assigned when absent).
    pub port: Option<i32>,
    /// Diskful replicas LINSTOR keeps for this definition, as the resource group's place count;
    /// when absent it is fixed at the first evacuation as the number of diskful replicas not
    /// marked for removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_count: Option<u32>,
    /// Volume definitions.
    pub volume_definitions: Vec<SimVolumeDefinition>,
    /// Resources.
    pub resources: Vec<SimResource>,
}

impl SimResourceDefinition {
    /// A definition with one volume (number 0) of `size_kib`.
    pub fn new(name: impl Into<String>, size_kib: i64) -> Self {
        SimResourceDefinition {
            name: name.into(),
            volume_definitions: vec![SimVolumeDefinition {
                size_kib,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Adds a resource.
    pub fn resource(mut self, r: SimResource) -> Self {
        self.resources.push(r);
        self
    }

    fn find_resource(&self, node: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.node_name.eq_ignore_ascii_case(node))
    }
}

fn default_version() -> ControllerVersion {
    ControllerVersion {
        version: Some("1.28.0".to_owned()),
        git_hash: Some("simulator".to_owned()),
        build_time: Some("2026-01-01T00:00:00+00:00".to_owned()),
        rest_api_version: Some("1.28.0".to_owned()),
    }
}

/// The whole simulated cluster. Its JSON form is the scenario and state file format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimState {
    /// What `/v1/controller/version` answers.
    pub controller_version: ControllerVersion,
    /// Nodes.
    pub nodes: Vec<SimNode>,
    /// Resource definitions with their volume definitions and resources.
    pub resource_definitions: Vec<SimResourceDefinition>,
}

impl Default for SimState {
    fn default() -> Self {
        SimState {
            controller_version: default_version(),
            nodes: Vec::new(),
            resource_definitions: Vec::new(),
        }
    }
}

/// A change of a node, reported to event subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeChange {
    /// Node created.
    Created(Node),
    /// Node deleted.
    Deleted(Node),
    /// Evacuation started.
    Evacuating(Node),
    /// Node restored.
    Restored(Node),
    /// Node modified.
    Modified {
        /// Before.
        old: Box<Node>,
        /// After.
        new: Box<Node>,
    },
}

/// Deterministic pseudo-UUID for an object key.
fn uuid_for(kind: &str, key: &str) -> String {
    let mut h1: u64 = 0xcbf2_9ce4_8422_2325;
    let mut h2: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in kind.bytes().chain([0u8]).chain(key.bytes()) {
        h1 = (h1 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        h2 = (h2 ^ u64::from(b))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h1 >> 32,
        (h1 >> 16) & 0xffff,
        h1 & 0xfff,
        h2 >> 52,
        h2 & 0xffff_ffff_ffff
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `props` match every filter (`KEY=VALUE`, or `KEY` for presence).
pub fn props_match(props: &Properties, filters: &[String]) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => props.get(k).is_some_and(|x| x == v),
        None => props.contains_key(f.as_str()),
    })
}

fn name_in(name: &str, list: &[String]) -> bool {
    list.is_empty() || list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn apply_props(props: &mut Properties, set: &Properties, delete: &[String], namespaces: &[String]) {
    for k in delete {
        props.remove(k);
    }
    for ns in namespaces {
        let prefix = format!("{}/", ns.trim_end_matches('/'));
        props.retain(|k, _| !k.starts_with(&prefix));
    }
    for (k, v) in set {
        props.insert(k.clone(), v.clone());
    }
}

/// What an evacuation does with one replica of the evacuated node, as planned before anything
/// changes.
struct EvacuationStep {
    /// Index of the resource definition.
    rd: usize,
    /// Index of the evacuated node's replica in the definition.
    replica: usize,
    /// Place count derived for a definition that had none, recorded when the plan is applied.
    derived_place_count: Option<u32>,
    /// Diskful replicas kept on other nodes.
    kept: u32,
    /// The replacement, when one is needed.
    replacement: Option<Replacement>,
}

/// How an evacuated diskful replica is replaced.
enum Replacement {
    /// The diskless replica at this index becomes diskful.
    Diskful(usize),
    /// A new diskful replica on this node.
    New(String),
}

impl SimState {
    fn node_idx(&self, name: &str) -> SimResult<usize> {
        self.nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                err(
                    404,
                    rc::NOT_FOUND,
                    format!("Node '{name}' not found."),
                    Some("Create the node first."),
                )
            })
    }

    fn rd_idx(&self, name: &str) -> SimResult<usize> {
        self.resource_definitions
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                err(
                    404,
                    rc::NOT_FOUND,
                    format!("Resource definition '{name}' not found."),
                    None,
                )
            })
    }

    /// Fills in DRBD minors, ports, node ids and timestamps that a scenario left out.
    pub fn normalize(&mut self) {
        let mut minors: BTreeSet<i32> = self
            .resource_definitions
            .iter()
            .flat_map(|r| r.volume_definitions.iter().filter_map(|v| v.minor_number))
            .collect();
        let mut ports: BTreeSet<i32> = self.resource_definitions.iter().filter_map(|r| r.port).collect();
        let mut next_minor = 1000;
        let mut next_port = 7000;
        let now = now_ms();
        for rd in &mut self.resource_definitions {
            if rd.port.is_none() {
                while ports.contains(&next_port) {
                    next_port += 1;
                }
                rd.port = Some(next_port);
                ports.insert(next_port);
            }
            for vd in &mut rd.volume_definitions {
                if vd.minor_number.is_none() {
                    while minors.contains(&next_minor) {
                        next_minor += 1;
                    }
                    vd.minor_number = Some(next_minor);
                    minors.insert(next_minor);
                }
            }
            let mut ids: BTreeSet<i32> = rd.resources.iter().filter_map(|r| r.node_id).collect();
            for r in &mut rd.resources {
                if r.node_id.is_none() {
                    let id = (0..).find(|i| !ids.contains(i)).unwrap_or(0);
                    r.node_id = Some(id);
                    ids.insert(id);
                }
                if r.create_timestamp.is_none() {
                    r.create_timestamp = Some(now);
                }
            }
        }
    }

    fn next_minor(&self) -> i32 {
        self.resource_definitions
            .iter()
            .flat_map(|r| r.volume_definitions.iter().filter_map(|v| v.minor_number))
            .max()
            .map_or(1000, |m| m + 1)
    }

    fn next_port(&self) -> i32 {
        self.resource_definitions
            .iter()
            .filter_map(|r| r.port)
            .max()
            .map_or(7000, |p| p + 1)
    }

    // ----- rendering -----

    /// Renders one node as the API shows it.
    pub fn render_node(&self, idx: usize) -> Option<Node> {
        let n = self.nodes.get(idx)?;
        let mut props = n.props.clone();
        props
            .entry("CurStltConnName".to_owned())
            .or_insert_with(|| "default".to_owned());
        props
            .entry("NodeUname".to_owned())
            .or_insert_with(|| n.name.clone());
        let address = n
            .address
            .clone()
            .unwrap_or_else(|| format!("10.0.{}.{}", (idx / 250) % 250, idx % 250 + 1));
        Some(Node {
            name: n.name.clone(),
            node_type: n.node_type.clone(),
            flags: n.flags.clone(),
            props,
            net_interfaces: vec![NetInterface {
                name: "default".to_owned(),
                address,
                satellite_port: Some(3366),
                satellite_encryption_type: Some("PLAIN".to_owned()),
                is_active: Some(true),
                uuid: Some(uuid_for("netif", &n.name)),
            }],
            connection_status: Some(n.connection_status.clone()),
            uuid: Some(uuid_for("node", &n.name)),
            storage_providers: vec![
                ProviderKind::Diskless,
                ProviderKind::Lvm,
                ProviderKind::LvmThin,
                ProviderKind::File,
                ProviderKind::FileThin,
            ],
            resource_layers: vec![LayerType::Drbd, LayerType::Luks, LayerType::Storage],
            platform: Some("LINUX".to_owned()),
            ..Default::default()
        })
    }

    /// Nodes matching the filters (names, properties).
    pub fn list_nodes(&self, names: &[String], props: &[String]) -> Vec<Node> {
        (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                name_in(&n.name, names) && props_match(&n.props, props)
            })
            .filter_map(|i| self.render_node(i))
            .collect()
    }

    fn render_layer(rd: &SimResourceDefinition, r: &SimResource) -> ResourceLayer {
        let diskless = r.is_diskless();
        let any_in_use = rd.resources.iter().any(|x| x.in_use == Some(true));
        let drbd_volumes = rd
            .volume_definitions
            .iter()
            .map(|vd| {
                let minor = vd.minor_number.unwrap_or(1000);
                DrbdVolume {
                    drbd_volume_definition: Some(DrbdVolumeDefinition {
                        resource_name_suffix: Some(String::new()),
                        volume_number: Some(vd.volume_number),
                        minor_number: Some(minor),
                    }),
                    device_path: Some(format!("/dev/drbd{minor}")),
                    backing_device: (!diskless)
                        .then(|| format!("/dev/vg/{}_{:05}", rd.name, vd.volume_number)),
                    meta_disk: Some("internal".to_owned()),
                    allocated_size_kib: Some(if diskless { 0 } else { vd.size_kib + 1024 }),
                    usable_size_kib: Some(vd.size_kib),
                    disk_state: Some(if diskless { "Diskless" } else { "UpToDate" }.to_owned()),
                    ext_meta_stor_pool: None,
                }
            })
            .collect();
        let connections = rd
            .resources
            .iter()
            .filter(|p| !p.node_name.eq_ignore_ascii_case(&r.node_name))
            .map(|p| {
                (
                    p.node_name.clone(),
                    DrbdConnection {
                        connected: Some(true),
                        message: Some("Connected".to_owned()),
                    },
                )
            })
            .collect();
        let storage_volumes = rd
            .volume_definitions
            .iter()
            .map(|vd| StorageVolume {
                volume_number: Some(vd.volume_number),
                device_path: (!diskless).then(|| format!("/dev/vg/{}_{:05}", rd.name, vd.volume_number)),
                allocated_size_kib: Some(if diskless { 0 } else { vd.size_kib + 1024 }),
                usable_size_kib: Some(if diskless { 0 } else { vd.size_kib + 1024 }),
                disk_state: Some("[]".to_owned()),
            })
            .collect();
        ResourceLayer {
            children: vec![ResourceLayer {
                resource_name_suffix: Some(String::new()),
                layer_type: Some(LayerType::Storage),
                storage: Some(StorageResource { storage_volumes }),
                ..Default::default()
            }],
            resource_name_suffix: Some(String::new()),
            layer_type: Some(LayerType::Drbd),
            drbd: Some(Box::new(DrbdResource {
                drbd_resource_definition: Some(Self::rd_drbd(rd)),
                node_id: r.node_id,
                tcp_ports: rd.port.into_iter().collect(),
                peer_slots: Some(7),
                al_stripes: Some(1),
                al_size: Some(32),
                flags: if diskless {
                    vec!["DISKLESS".to_owned(), "INITIALIZED".to_owned()]
                } else {
                    vec!["INITIALIZED".to_owned()]
                },
                drbd_volumes,
                connections,
                promotion_score: Some(if diskless { 1 } else { 10102 }),
                may_promote: Some(!any_in_use),
            })),
            ..Default::default()
        }
    }

    fn rd_drbd(rd: &SimResourceDefinition) -> DrbdResourceDefinitionLayer {
        DrbdResourceDefinitionLayer {
            resource_name_suffix: Some(String::new()),
            peer_slots: Some(7),
            al_stripes: Some(1),
            al_stripe_size_kib: Some(32),
            port: rd.port,
            transport_type: Some("IP".to_owned()),
            secret: Some(uuid_for("secret", &rd.name)[..20].to_owned()),
            down: Some(false),
        }
    }

    fn render_resource(rd: &SimResourceDefinition, r: &SimResource) -> Resource {
        let pool = r.storage_pool.clone().unwrap_or_else(|| {
            if r.is_diskless() {
                DISKLESS_POOL.to_owned()
            } else {
                DEFAULT_POOL.to_owned()
            }
        });
        let mut props = r.props.clone();
        props.entry("StorPoolName".to_owned()).or_insert(pool);
        Resource {
            name: rd.name.clone(),
            node_name: r.node_name.clone(),
            props,
            effective_props: Default::default(),
            flags: r.flags.clone(),
            layer_object: Some(Self::render_layer(rd, r)),
            state: Some(ResourceState { in_use: r.in_use }),
            uuid: Some(uuid_for("rsc", &format!("{}/{}", rd.name, r.node_name))),
            create_timestamp: r.create_timestamp,
        }
    }

    fn render_volumes(rd: &SimResourceDefinition, r: &SimResource) -> Vec<Volume> {
        let diskless = r.is_diskless();
        let pool = r.storage_pool.clone().unwrap_or_else(|| {
            if diskless {
                DISKLESS_POOL.to_owned()
            } else {
                DEFAULT_POOL.to_owned()
            }
        });
        rd.volume_definitions
            .iter()
            .map(|vd| {
                let minor = vd.minor_number.unwrap_or(1000);
                Volume {
                    volume_number: Some(vd.volume_number),
                    storage_pool_name: Some(pool.clone()),
                    provider_kind: Some(if diskless {
                        ProviderKind::Diskless
                    } else {
                        ProviderKind::LvmThin
                    }),
                    device_path: Some(format!("/dev/drbd{minor}")),
                    allocated_size_kib: Some(if diskless { 0 } else { vd.size_kib + 1024 }),
                    usable_size_kib: Some(vd.size_kib),
                    props: Properties::new(),
                    flags: Vec::new(),
                    state: Some(VolumeState {
                        disk_state: Some(if diskless { "Diskless" } else { "UpToDate" }.to_owned()),
                        replication_states: Default::default(),
                    }),
                    // The API description's `VolumeLayer.data` is a oneOf of alternatives
                    // without required fields, which no object can satisfy; the simulator
                    // therefore lists the layer types only (details are in `layer_object`).
                    layer_data_list: vec![
                        VolumeLayer {
                            layer_type: Some(LayerType::Drbd),
                            data: None,
                        },
                        VolumeLayer {
                            layer_type: Some(LayerType::Storage),
                            data: None,
                        },
                    ],
                    uuid: Some(uuid_for(
                        "vlm",
                        &format!("{}/{}/{}", rd.name, r.node_name, vd.volume_number),
                    )),
                    reports: Vec::new(),
                }
            })
            .collect()
    }

    /// Resources with volumes matching the filters (`/v1/view/resources`).
    pub fn view_resources(
        &self,
        nodes: &[String],
        resources: &[String],
        props: &[String],
    ) -> Vec<ResourceWithVolumes> {
        let mut out = Vec::new();
        for rd in &self.resource_definitions {
            if !name_in(&rd.name, resources) {
                continue;
            }
            for r in &rd.resources {
                if !name_in(&r.node_name, nodes) || !props_match(&r.props, props) {
                    continue;
                }
                let res = Self::render_resource(rd, r);
                let volumes = Self::render_volumes(rd, r);
                out.push(ResourceWithVolumes {
                    name: res.name,
                    node_name: res.node_name,
                    props: res.props,
                    effective_props: res.effective_props,
                    flags: res.flags,
                    layer_object: res.layer_object,
                    state: res.state,
                    uuid: res.uuid,
                    create_timestamp: res.create_timestamp,
                    volumes,
                    shared_name: None,
                });
            }
        }
        out
    }

    /// Resources of one resource definition.
    pub fn list_resources(&self, rd: &str) -> SimResult<Vec<Resource>> {
        let rd = &self.resource_definitions[self.rd_idx(rd)?];
        Ok(rd
            .resources
            .iter()
            .map(|r| Self::render_resource(rd, r))
            .collect())
    }

    fn render_vd(rd: &SimResourceDefinition, vd: &SimVolumeDefinition) -> VolumeDefinition {
        VolumeDefinition {
            volume_number: Some(vd.volume_number),
            size_kib: vd.size_kib,
            props: vd.props.clone(),
            flags: vd.flags.clone(),
            layer_data: vec![
                VolumeDefinitionLayer {
                    layer_type: Some(LayerType::Drbd),
                    data: Some(DrbdVolumeDefinition {
                        resource_name_suffix: Some(String::new()),
                        volume_number: Some(vd.volume_number),
                        minor_number: vd.minor_number,
                    }),
                },
                VolumeDefinitionLayer {
                    layer_type: Some(LayerType::Storage),
                    data: None,
                },
            ],
            uuid: Some(uuid_for("vd", &format!("{}/{}", rd.name, vd.volume_number))),
        }
    }

    /// Resource definitions matching the filters.
    pub fn list_resource_definitions(
        &self,
        names: &[String],
        props: &[String],
        with_volume_definitions: bool,
    ) -> Vec<ResourceDefinition> {
        self.resource_definitions
            .iter()
            .filter(|rd| name_in(&rd.name, names) && props_match(&rd.props, props))
            .map(|rd| ResourceDefinition {
                name: rd.name.clone(),
                external_name: None,
                props: rd.props.clone(),
                flags: rd.flags.clone(),
                layer_data: vec![
                    ResourceDefinitionLayer {
                        layer_type: Some(LayerType::Drbd),
                        data: Some(Self::rd_drbd(rd)),
                    },
                    ResourceDefinitionLayer {
                        layer_type: Some(LayerType::Storage),
                        data: None,
                    },
                ],
                uuid: Some(uuid_for("rd", &rd.name)),
                resource_group_name: Some(
                    rd.resource_group_name
                        .clone()
                        .unwrap_or_else(|| "DfltRscGrp".to_owned()),
                ),
                volume_definitions: if with_volume_definitions {
                    rd.volume_definitions
                        .iter()
                        .map(|vd| Self::render_vd(rd, vd))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// Volume definitions of one resource definition.
    pub fn list_volume_definitions(&self, rd: &str) -> SimResult<Vec<VolumeDefinition>> {
        let rd = &self.resource_definitions[self.rd_idx(rd)?];
        Ok(rd
            .volume_definitions
            .iter()
            .map(|vd| Self::render_vd(rd, vd))
            .collect())
    }

    // ----- operations -----

    /// Adds a node.
    pub fn create_node(&mut self, node: SimNode) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        if node.name.is_empty() {
            return Err(err(400, rc::INVALID, "Node name is empty.".to_owned(), None));
        }
        if self.node_idx(&node.name).is_ok() {
            return Err(err(
                409,
                rc::EXISTS,
                format!("Node '{}' already exists.", node.name),
                None,
            ));
        }
        let name = node.name.clone();
        self.nodes.push(node);
        let rendered = self.render_node(self.nodes.len() - 1).unwrap_or_default();
        Ok((
            vec![ok(
                rc::CREATED,
                format!("New node '{name}' registered."),
                &[("Node", &name)],
            )],
            NodeChange::Created(rendered),
        ))
    }

    /// Deletes a node (it must not hold resources).
    pub fn delete_node(&mut self, name: &str) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        let idx = self.node_idx(name)?;
        let holds = self
            .resource_definitions
            .iter()
            .any(|rd| rd.find_resource(name).is_some());
        if holds {
            return Err(err(
                409,
                rc::IN_USE,
                format!("Node '{name}' still has resources."),
                Some("Delete the resources first."),
            ));
        }
        let rendered = self.render_node(idx).unwrap_or_default();
        self.nodes.remove(idx);
        Ok((
            vec![ok(
                rc::DELETED,
                format!("Node '{name}' deleted."),
                &[("Node", name)],
            )],
            NodeChange::Deleted(rendered),
        ))
    }

    /// Sets and deletes node properties.
    pub fn modify_node(&mut self, name: &str, m: &NodeModify) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        let idx = self.node_idx(name)?;
        let old = self.render_node(idx).unwrap_or_default();
        let n = &mut self.nodes[idx];
        apply_props(
            &mut n.props,
            &m.override_props,
            &m.delete_props,
            &m.delete_namespaces,
        );
        if let Some(t) = &m.node_type {
            n.node_type = NodeType::parse(t);
        }
        let node_name = n.name.clone();
        let new = self.render_node(idx).unwrap_or_default();
        Ok((
            vec![ok(
                rc::MODIFIED,
                format!("Node '{node_name}' modified."),
                &[("Node", &node_name)],
            )],
            NodeChange::Modified {
                old: Box::new(old),
                new: Box::new(new),
            },
        ))
    }

    /// Sets node flags and connection status (simulator control).
    pub fn set_node_state(
        &mut self,
        name: &str,
        new_flags: Option<Vec<String>>,
        status: Option<ConnectionStatus>,
    ) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        let idx = self.node_idx(name)?;
        let old = self.render_node(idx).unwrap_or_default();
        let n = &mut self.nodes[idx];
        if let Some(f) = new_flags {
            n.flags = f;
        }
        if let Some(s) = status {
            n.connection_status = s;
        }
        let new = self.render_node(idx).unwrap_or_default();
        Ok((
            vec![ok(
                rc::MODIFIED,
                format!("Node '{name}' modified."),
                &[("Node", name)],
            )],
            NodeChange::Modified {
                old: Box::new(old),
                new: Box::new(new),
            },
        ))
    }

    /// Why `node` cannot take a replacement for a replica evacuated from `source`, or `None`
    /// when it can.
    fn ineligibility(node: &SimNode, opts: &NodeEvacuate, source: &str) -> Option<&'static str> {
        if node.name.eq_ignore_ascii_case(source) {
            Some("evacuated")
        } else if node.has_flag(flags::EVACUATE) {
            Some("evacuating")
        } else if node.has_flag(flags::EVICTED) {
            Some("evicted")
        } else if node.has_flag(flags::DELETE) {
            Some("being deleted")
        } else if matches!(node.node_type, NodeType::Controller) {
            Some("controller")
        } else if node
            .props
            .get(AUTOPLACE_TARGET)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
        {
            Some("AutoplaceTarget=false")
        } else if !opts.target.is_empty() && !name_in(&node.name, &opts.target) {
            Some("not a target")
        } else if opts
            .do_not_target
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&node.name))
        {
            Some("do_not_target")
        } else {
            None
        }
    }

    fn node_by_name(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name.eq_ignore_ascii_case(name))
    }

    /// Diskful replicas of `rd` kept on nodes other than `source`: not marked for removal, on
    /// nodes that are neither evacuating nor evicted.
    fn kept_diskful(&self, rd: &SimResourceDefinition, source: &str) -> u32 {
        let kept = rd
            .resources
            .iter()
            .filter(|r| {
                !r.node_name.eq_ignore_ascii_case(source)
                    && !r.is_diskless()
                    && !r.has_flag(RESOURCE_EVACUATE)
                    && self
                        .node_by_name(&r.node_name)
                        .is_none_or(|n| !n.has_flag(flags::EVACUATE) && !n.has_flag(flags::EVICTED))
            })
            .count();
        u32::try_from(kept).unwrap_or(u32::MAX)
    }

    /// The nodes that cannot take a replacement of `rd`'s replica on `source`, with the reason.
    fn excluded_nodes(&self, rd: &SimResourceDefinition, opts: &NodeEvacuate, source: &str) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let why = Self::ineligibility(n, opts, source)
                    .or_else(|| rd.find_resource(&n.name).map(|_| "holds a replica"));
                (n, why)
            })
            .filter_map(|(n, why)| why.map(|w| format!("{} ({w})", n.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Plans an evacuation of node `idx` without changing anything: what happens to each of its
    /// replicas. Fails when the node is not online or a replica that needs a replacement has no
    /// eligible node for it.
    fn plan_evacuation(&self, idx: usize, opts: &NodeEvacuate) -> SimResult<Vec<EvacuationStep>> {
        let Some(node) = self.nodes.get(idx) else {
            return Err(not_found("Node not found.".to_owned()));
        };
        let node_name = node.name.as_str();
        if node.connection_status != ConnectionStatus::Online {
            return Err(err(
                500,
                rc::REFUSED,
                format!(
                    "Node '{node_name}' is {}; it cannot be evacuated",
                    node.connection_status
                ),
                Some("Reconnect the satellite first, or evict the node."),
            ));
        }
        let targets: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| Self::ineligibility(n, opts, node_name).is_none())
            .map(|n| n.name.as_str())
            .collect();
        let is_target = |name: &str| targets.iter().any(|t| t.eq_ignore_ascii_case(name));
        let mut load: BTreeMap<&str, usize> = targets.iter().map(|t| (*t, 0)).collect();
        for rd in &self.resource_definitions {
            for r in &rd.resources {
                if let Some(c) = load.get_mut(r.node_name.as_str()) {
                    *c += 1;
                }
            }
        }
        let mut steps = Vec::new();
        let mut unplaceable: Vec<usize> = Vec::new();
        for (di, rd) in self.resource_definitions.iter().enumerate() {
            let Some(ri) = rd.find_resource(node_name) else {
                continue;
            };
            let Some(replica) = rd.resources.get(ri) else {
                continue;
            };
            if replica.has_flag(RESOURCE_EVACUATE) {
                continue;
            }
            let mut step = EvacuationStep {
                rd: di,
                replica: ri,
                derived_place_count: None,
                kept: 0,
                replacement: None,
            };
            if !replica.is_diskless() {
                let place_count = match rd.place_count {
                    Some(p) => p,
                    None => {
                        let p = rd
                            .resources
                            .iter()
                            .filter(|r| !r.is_diskless() && !r.has_flag(RESOURCE_EVACUATE))
                            .count();
                        let p = u32::try_from(p).unwrap_or(u32::MAX);
                        step.derived_place_count = Some(p);
                        p
                    }
                };
                step.kept = self.kept_diskful(rd, node_name);
                if step.kept < place_count {
                    // Prefer a node holding a diskless replica (it becomes diskful), then the
                    // least loaded node without any replica.
                    let toggled = rd
                        .resources
                        .iter()
                        .position(|r| {
                            r.is_diskless() && !r.has_flag(flags::TIE_BREAKER) && is_target(&r.node_name)
                        })
                        .or_else(|| {
                            rd.resources
                                .iter()
                                .position(|r| r.is_diskless() && is_target(&r.node_name))
                        });
                    if let Some(ti) = toggled {
                        step.replacement = Some(Replacement::Diskful(ti));
                    } else {
                        let target = load
                            .iter()
                            .filter(|(n, _)| rd.find_resource(n).is_none())
                            .min_by_key(|(n, c)| (**c, **n))
                            .map(|(n, _)| *n);
                        match target {
                            Some(t) => {
                                if let Some(c) = load.get_mut(t) {
                                    *c += 1;
                                }
                                step.replacement = Some(Replacement::New(t.to_owned()));
                            }
                            None => unplaceable.push(di),
                        }
                    }
                }
            }
            steps.push(step);
        }
        if let Some((&first, rest)) = unplaceable.split_first() {
            let Some(rd) = self.resource_definitions.get(first) else {
                return Err(not_found("Resource definition not found.".to_owned()));
            };
            let others: Vec<&str> = rest
                .iter()
                .filter_map(|i| self.resource_definitions.get(*i))
                .map(|r| r.name.as_str())
                .collect();
            return Err(SimError {
                status: 500,
                reply: Box::new(ApiCallRc {
                    ret_code: rc::REFUSED,
                    message: format!(
                        "Evacuation of node '{node_name}' refused: no eligible node for a replacement \
                         of resource '{}' (needs 1 more diskful replica; excluded: {})",
                        rd.name,
                        self.excluded_nodes(rd, opts, node_name)
                    ),
                    details: (!others.is_empty())
                        .then(|| format!("Also without an eligible node: {}.", others.join(", "))),
                    correction: Some(
                        "Add nodes, or allow more targets (AutoplaceTarget, the target and \
                         do_not_target lists of the evacuation)."
                            .to_owned(),
                    ),
                    obj_refs: [
                        ("Node".to_owned(), node_name.to_owned()),
                        ("RscDfn".to_owned(), rd.name.clone()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                }),
            });
        }
        Ok(steps)
    }

    /// Evacuates a node: marks it `EVACUATE`, places a replacement for each of its diskful
    /// replicas whose definition would otherwise keep fewer diskful replicas than its place count
    /// (see [`SimResourceDefinition::place_count`]), and marks its replicas for removal (done once
    /// not in use).
    ///
    /// The whole evacuation is planned first; it is refused with HTTP 500, changing nothing, when
    /// the node is not online or a needed replacement has no eligible node.
    pub fn evacuate_node(
        &mut self,
        name: &str,
        opts: &NodeEvacuate,
    ) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        let idx = self.node_idx(name)?;
        let steps = self.plan_evacuation(idx, opts)?;
        let Some(node) = self.nodes.get_mut(idx) else {
            return Err(not_found(format!("Node '{name}' not found.")));
        };
        let node_name = node.name.clone();
        if !node.has_flag(flags::EVACUATE) {
            node.flags.push(flags::EVACUATE.to_owned());
        }
        let mut replies = vec![ok(
            rc::MODIFIED,
            format!("Node '{node_name}' is being evacuated."),
            &[("Node", &node_name)],
        )];
        let now = now_ms();
        for step in steps {
            let Some(rd) = self.resource_definitions.get_mut(step.rd) else {
                continue;
            };
            if let Some(p) = step.derived_place_count {
                rd.place_count.get_or_insert(p);
            }
            match step.replacement {
                Some(Replacement::Diskful(ti)) => {
                    if let Some(t) = rd.resources.get_mut(ti) {
                        t.flags.retain(|f| {
                            f != flags::DISKLESS && f != flags::DRBD_DISKLESS && f != flags::TIE_BREAKER
                        });
                        t.storage_pool = None;
                        replies.push(ok(
                            rc::MODIFIED,
                            format!("Resource '{}' on node '{}' became diskful.", rd.name, t.node_name),
                            &[("RscDfn", &rd.name), ("Node", &t.node_name)],
                        ));
                    }
                }
                Some(Replacement::New(t)) => {
                    let used: BTreeSet<i32> = rd.resources.iter().filter_map(|r| r.node_id).collect();
                    let id = (0..).find(|i| !used.contains(i)).unwrap_or(0);
                    rd.resources.push(SimResource {
                        node_name: t.clone(),
                        node_id: Some(id),
                        create_timestamp: Some(now),
                        ..Default::default()
                    });
                    replies.push(ok(
                        rc::CREATED,
                        format!(
                            "Resource '{}' placed on node '{t}' to replace the evacuated replica.",
                            rd.name
                        ),
                        &[("RscDfn", &rd.name), ("Node", &t)],
                    ));
                }
                None => {
                    let diskful = rd.resources.get(step.replica).is_some_and(|r| !r.is_diskless());
                    if diskful {
                        replies.push(ok(
                            rc::INFO,
                            format!(
                                "Resource '{}' keeps {} diskful replica(s) elsewhere; no replacement needed.",
                                rd.name, step.kept
                            ),
                            &[("RscDfn", &rd.name), ("Node", &node_name)],
                        ));
                    }
                }
            }
            if let Some(r) = rd.resources.get_mut(step.replica) {
                r.flags.push(RESOURCE_EVACUATE.to_owned());
            }
        }
        replies.extend(self.settle());
        let rendered = self.render_node(idx).unwrap_or_default();
        Ok((replies, NodeChange::Evacuating(rendered)))
    }

    /// Removes evacuated replicas that are not in use. Returns the replies describing removals.
    pub fn settle(&mut self) -> Vec<ApiCallRc> {
        let mut out = Vec::new();
        for rd in &mut self.resource_definitions {
            let name = rd.name.clone();
            rd.resources.retain(|r| {
                let gone = r.has_flag(RESOURCE_EVACUATE) && r.in_use != Some(true);
                if gone {
                    out.push(ok(
                        rc::DELETED,
                        format!("Evacuated resource '{name}' on node '{}' removed.", r.node_name),
                        &[("RscDfn", &name), ("Node", &r.node_name)],
                    ));
                }
                !gone
            });
        }
        out
    }

    /// Restores a node: clears `EVACUATE`/`EVICTED` and cancels pending removals on it.
    pub fn restore_node(
        &mut self,
        name: &str,
        opts: &NodeRestore,
    ) -> SimResult<(Vec<ApiCallRc>, NodeChange)> {
        let idx = self.node_idx(name)?;
        let node_name = self.nodes[idx].name.clone();
        self.nodes[idx]
            .flags
            .retain(|f| f != flags::EVACUATE && f != flags::EVICTED);
        for rd in &mut self.resource_definitions {
            if opts.delete_resources == Some(true) {
                rd.resources
                    .retain(|r| !r.node_name.eq_ignore_ascii_case(&node_name));
            } else if let Some(ri) = rd.find_resource(&node_name) {
                rd.resources[ri].flags.retain(|f| f != RESOURCE_EVACUATE);
            }
        }
        let rendered = self.render_node(idx).unwrap_or_default();
        Ok((
            vec![ok(
                rc::MODIFIED,
                format!("Node '{node_name}' restored."),
                &[("Node", &node_name)],
            )],
            NodeChange::Restored(rendered),
        ))
    }

    /// Adds a resource definition (with its volume definitions and resources, if any).
    pub fn create_resource_definition(&mut self, mut rd: SimResourceDefinition) -> SimResult {
        if rd.name.is_empty() {
            return Err(err(
                400,
                rc::INVALID,
                "Resource definition name is empty.".to_owned(),
                None,
            ));
        }
        if self.rd_idx(&rd.name).is_ok() {
            return Err(err(
                409,
                rc::EXISTS,
                format!("Resource definition '{}' already exists.", rd.name),
                None,
            ));
        }
        for r in &rd.resources {
            self.node_idx(&r.node_name)?;
        }
        if rd.port.is_none() {
            rd.port = Some(self.next_port());
        }
        let name = rd.name.clone();
        self.resource_definitions.push(rd);
        self.normalize();
        Ok(vec![ok(
            rc::CREATED,
            format!("New resource definition '{name}' created."),
            &[("RscDfn", &name)],
        )])
    }

    /// Deletes a resource definition and its resources.
    pub fn delete_resource_definition(&mut self, name: &str) -> SimResult {
        let idx = self.rd_idx(name)?;
        self.resource_definitions.remove(idx);
        Ok(vec![ok(
            rc::DELETED,
            format!("Resource definition '{name}' deleted."),
            &[("RscDfn", name)],
        )])
    }

    /// Sets and deletes resource-definition properties.
    pub fn modify_resource_definition(
        &mut self,
        name: &str,
        m: &crate::models::ResourceDefinitionModify,
    ) -> SimResult {
        let idx = self.rd_idx(name)?;
        let rd = &mut self.resource_definitions[idx];
        apply_props(
            &mut rd.props,
            &m.override_props,
            &m.delete_props,
            &m.delete_namespaces,
        );
        if let Some(g) = &m.resource_group {
            rd.resource_group_name = Some(g.clone());
        }
        Ok(vec![ok(
            rc::MODIFIED,
            format!("Resource definition '{}' modified.", rd.name),
            &[("RscDfn", &rd.name)],
        )])
    }

    /// Adds a volume definition.
    pub fn create_volume_definition(
        &mut self,
        rd: &str,
        mut vd: SimVolumeDefinition,
        number: Option<i32>,
    ) -> SimResult {
        let idx = self.rd_idx(rd)?;
        let next_minor = self.next_minor();
        let def = &mut self.resource_definitions[idx];
        vd.volume_number = match number {
            Some(n) => n,
            None => def
                .volume_definitions
                .iter()
                .map(|v| v.volume_number + 1)
                .max()
                .unwrap_or(0),
        };
        if vd.volume_number < 0 {
            return Err(err(
                400,
                rc::INVALID,
                "Volume number must not be negative.".to_owned(),
                None,
            ));
        }
        if def
            .volume_definitions
            .iter()
            .any(|v| v.volume_number == vd.volume_number)
        {
            return Err(err(
                409,
                rc::EXISTS,
                format!(
                    "Volume definition {} of '{}' already exists.",
                    vd.volume_number, def.name
                ),
                None,
            ));
        }
        if vd.minor_number.is_none() {
            vd.minor_number = Some(next_minor);
        }
        let vnr = vd.volume_number.to_string();
        def.volume_definitions.push(vd);
        def.volume_definitions.sort_by_key(|v| v.volume_number);
        Ok(vec![ok(
            rc::CREATED,
            format!("New volume definition {vnr} of '{}' created.", def.name),
            &[("RscDfn", &def.name), ("VlmNr", &vnr)],
        )])
    }

    /// Sets and deletes volume-definition properties.
    pub fn modify_volume_definition(&mut self, rd: &str, vnr: i32, m: &VolumeDefinitionModify) -> SimResult {
        let idx = self.rd_idx(rd)?;
        let def = &mut self.resource_definitions[idx];
        let Some(vd) = def.volume_definitions.iter_mut().find(|v| v.volume_number == vnr) else {
            return Err(err(
                404,
                rc::NOT_FOUND,
                format!("Volume definition {vnr} of '{rd}' not found."),
                None,
            ));
        };
        apply_props(
            &mut vd.props,
            &m.override_props,
            &m.delete_props,
            &m.delete_namespaces,
        );
        if let Some(s) = m.size_kib {
            vd.size_kib = s;
        }
        for f in &m.flags {
            match f.strip_prefix('-') {
                Some(del) => vd.flags.retain(|x| x != del),
                None => {
                    if !vd.flags.contains(f) {
                        vd.flags.push(f.clone());
                    }
                }
            }
        }
        let vnr = vnr.to_string();
        Ok(vec![ok(
            rc::MODIFIED,
            format!("Volume definition {vnr} of '{}' modified.", def.name),
            &[("RscDfn", &def.name), ("VlmNr", &vnr)],
        )])
    }

    /// Adds a resource (replica) to a resource definition.
    pub fn create_resource(&mut self, rd: &str, mut r: SimResource) -> SimResult {
        let ni = self.node_idx(&r.node_name)?;
        r.node_name = self.nodes[ni].name.clone();
        let idx = self.rd_idx(rd)?;
        let def = &mut self.resource_definitions[idx];
        if def.find_resource(&r.node_name).is_some() {
            return Err(err(
                409,
                rc::EXISTS,
                format!(
                    "Resource '{}' on node '{}' already exists.",
                    def.name, r.node_name
                ),
                None,
            ));
        }
        if r.is_diskless() && !r.flags.iter().any(|f| f == flags::DRBD_DISKLESS) {
            r.flags.insert(0, flags::DRBD_DISKLESS.to_owned());
        }
        if r.node_id.is_none() {
            let used: BTreeSet<i32> = def.resources.iter().filter_map(|x| x.node_id).collect();
            r.node_id = Some((0..).find(|i| !used.contains(i)).unwrap_or(0));
        }
        if r.create_timestamp.is_none() {
            r.create_timestamp = Some(now_ms());
        }
        let node = r.node_name.clone();
        def.resources.push(r);
        Ok(vec![ok(
            rc::CREATED,
            format!("New resource '{}' on node '{node}' created.", def.name),
            &[("RscDfn", &def.name), ("Node", &node)],
        )])
    }

    /// Indices of resource definition `rd` and of its resource on `node`.
    fn resource_index(&self, rd: &str, node: &str) -> SimResult<(usize, usize)> {
        let idx = self.rd_idx(rd)?;
        let ri = self.resource_definitions[idx]
            .find_resource(node)
            .ok_or_else(|| not_found(format!("Resource '{rd}' on node '{node}' not found.")))?;
        Ok((idx, ri))
    }

    /// Deletes a resource.
    pub fn delete_resource(&mut self, rd: &str, node: &str) -> SimResult {
        let (idx, ri) = self.resource_index(rd, node)?;
        let def = &mut self.resource_definitions[idx];
        def.resources.remove(ri);
        Ok(vec![ok(
            rc::DELETED,
            format!("Resource '{}' on node '{node}' deleted.", def.name),
            &[("RscDfn", &def.name), ("Node", node)],
        )])
    }

    /// Sets and deletes resource properties.
    pub fn modify_resource(&mut self, rd: &str, node: &str, m: &crate::models::ResourceModify) -> SimResult {
        let (idx, ri) = self.resource_index(rd, node)?;
        let def = &mut self.resource_definitions[idx];
        let r = &mut def.resources[ri];
        apply_props(
            &mut r.props,
            &m.override_props,
            &m.delete_props,
            &m.delete_namespaces,
        );
        Ok(vec![ok(
            rc::MODIFIED,
            format!("Resource '{}' on node '{node}' modified.", def.name),
            &[("RscDfn", &def.name), ("Node", node)],
        )])
    }

    /// Sets `in_use` and/or the flags of a resource (simulator control), then removes
    /// evacuated replicas that are no longer in use.
    pub fn set_resource_state(
        &mut self,
        rd: &str,
        node: &str,
        in_use: Option<Option<bool>>,
        new_flags: Option<Vec<String>>,
    ) -> SimResult {
        let (idx, ri) = self.resource_index(rd, node)?;
        let def = &mut self.resource_definitions[idx];
        let r = &mut def.resources[ri];
        if let Some(u) = in_use {
            r.in_use = u;
        }
        if let Some(f) = new_flags {
            r.flags = f;
        }
        let mut out = vec![ok(
            rc::MODIFIED,
            format!("Resource '{}' on node '{node}' updated.", def.name),
            &[("RscDfn", &def.name), ("Node", node)],
        )];
        out.extend(self.settle());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> SimState {
        let mut s = SimState::default();
        for n in ["a", "b", "c", "d"] {
            s.create_node(SimNode::new(n)).unwrap();
        }
        s.create_resource_definition(
            SimResourceDefinition::new("pvc-1", 1024)
                .resource(SimResource::diskful("a"))
                .resource(SimResource::diskful("b"))
                .resource(SimResource::diskless("c")),
        )
        .unwrap();
        s
    }

    fn placement(s: &SimState, rd: &str) -> Vec<(String, bool)> {
        let mut v: Vec<_> = s.resource_definitions[s.rd_idx(rd).unwrap()]
            .resources
            .iter()
            .map(|r| (r.node_name.clone(), r.is_diskless()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn evacuation_converts_a_diskless_peer_and_keeps_in_use_replica() {
        let mut s = cluster();
        s.set_resource_state("pvc-1", "a", Some(Some(true)), None)
            .unwrap();
        s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        assert!(s.nodes[0].has_flag(flags::EVACUATE));
        // c was diskless and becomes diskful; a stays while in use.
        assert_eq!(
            placement(&s, "pvc-1"),
            vec![("a".into(), false), ("b".into(), false), ("c".into(), false)]
        );
        s.set_resource_state("pvc-1", "a", Some(Some(false)), None)
            .unwrap();
        assert_eq!(
            placement(&s, "pvc-1"),
            vec![("b".into(), false), ("c".into(), false)]
        );
        s.restore_node("a", &NodeRestore::default()).unwrap();
        assert!(!s.nodes[0].has_flag(flags::EVACUATE));
    }

    #[test]
    fn evacuation_skips_nodes_that_are_no_autoplace_targets() {
        let mut s = SimState::default();
        for n in ["a", "b", "c", "d"] {
            s.create_node(SimNode::new(n)).unwrap();
        }
        s.modify_node(
            "c",
            &NodeModify {
                override_props: [(AUTOPLACE_TARGET.to_owned(), "false".to_owned())].into(),
                ..Default::default()
            },
        )
        .unwrap();
        s.create_resource_definition(
            SimResourceDefinition::new("r", 1024)
                .resource(SimResource::diskful("a"))
                .resource(SimResource::diskful("b")),
        )
        .unwrap();
        s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        assert_eq!(placement(&s, "r"), vec![("b".into(), false), ("d".into(), false)]);
    }

    fn nodes(names: &[&str]) -> SimState {
        let mut s = SimState::default();
        for n in names {
            s.create_node(SimNode::new(*n)).unwrap();
        }
        s
    }

    #[test]
    fn refusal_without_an_eligible_target_changes_nothing() {
        let mut s = nodes(&["a", "b", "c"]);
        // r1 alone could be evacuated (a replacement fits on b or c); r2 needs a third node.
        s.create_resource_definition(
            SimResourceDefinition::new("r1", 1024).resource(SimResource::diskful("a")),
        )
        .unwrap();
        s.create_resource_definition(
            SimResourceDefinition::new("r2", 1024)
                .resource(SimResource::diskful("a"))
                .resource(SimResource::diskful("b"))
                .resource(SimResource::diskful("c")),
        )
        .unwrap();
        let before = s.clone();
        let e = s.evacuate_node("a", &NodeEvacuate::default()).unwrap_err();
        assert_eq!(e.status, 500);
        assert_eq!(e.reply.ret_code, rc::REFUSED);
        assert_ne!(e.reply.ret_code & ApiCallRc::MASK_ERROR, 0);
        assert!(e.reply.is_error());
        assert_eq!(
            e.reply.message,
            "Evacuation of node 'a' refused: no eligible node for a replacement of resource 'r2' \
             (needs 1 more diskful replica; excluded: a (evacuated), b (holds a replica), c (holds a replica))"
        );
        assert!(
            e.reply
                .correction
                .as_deref()
                .is_some_and(|c| c.contains("Add nodes")),
            "{e}"
        );
        assert_eq!(s, before, "a refused evacuation changed the state");
        assert!(
            s.rd_idx("r1")
                .is_ok_and(|i| s.resource_definitions[i].place_count.is_none())
        );

        // do_not_target and AutoplaceTarget narrow the targets the same way, and the reasons show.
        let mut s = nodes(&["a", "b", "c"]);
        s.modify_node(
            "c",
            &NodeModify {
                override_props: [(AUTOPLACE_TARGET.to_owned(), "false".to_owned())].into(),
                ..Default::default()
            },
        )
        .unwrap();
        s.create_resource_definition(
            SimResourceDefinition::new("r", 1024).resource(SimResource::diskful("a")),
        )
        .unwrap();
        let before = s.clone();
        let opts = NodeEvacuate {
            do_not_target: vec!["B".into()],
            target: vec![],
        };
        let e = s.evacuate_node("a", &opts).unwrap_err();
        assert!(
            e.reply
                .message
                .ends_with("excluded: a (evacuated), b (do_not_target), c (AutoplaceTarget=false))"),
            "{e}"
        );
        assert_eq!(s, before);
        // With a target allowed, the same evacuation goes through.
        let opts = NodeEvacuate {
            do_not_target: vec![],
            target: vec!["b".into()],
        };
        s.evacuate_node("a", &opts).unwrap();
        assert_eq!(placement(&s, "r"), vec![("b".into(), false)]);
    }

    #[test]
    fn refusal_of_an_offline_node_changes_nothing() {
        let mut s = cluster();
        s.set_node_state("a", None, Some(ConnectionStatus::Offline))
            .unwrap();
        let before = s.clone();
        let e = s.evacuate_node("a", &NodeEvacuate::default()).unwrap_err();
        assert_eq!(e.status, 500);
        assert!(e.reply.is_error(), "{e}");
        assert_eq!(e.reply.message, "Node 'a' is OFFLINE; it cannot be evacuated");
        assert!(e.reply.correction.is_some());
        assert_eq!(s, before);
        s.set_node_state("a", None, Some(ConnectionStatus::Online))
            .unwrap();
        s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        assert!(s.nodes[0].has_flag(flags::EVACUATE));
    }

    #[test]
    fn re_evacuation_after_a_restore_adds_no_replica() {
        let mut s = nodes(&["a", "b", "c"]);
        s.create_resource_definition(
            SimResourceDefinition::new("r", 1024).resource(SimResource::diskful("a")),
        )
        .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("place_count"), "{json}");
        s.set_resource_state("r", "a", Some(Some(true)), None).unwrap();
        s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        // The place count is fixed at 1; the replacement goes to the least loaded node.
        let rd = &s.resource_definitions[s.rd_idx("r").unwrap()];
        assert_eq!(rd.place_count, Some(1));
        assert_eq!(placement(&s, "r"), vec![("a".into(), false), ("b".into(), false)]);
        assert!(rd.resources[0].has_flag(RESOURCE_EVACUATE));
        assert!(serde_json::to_string(&s).unwrap().contains("\"place_count\":1"));

        // Restoring cancels the removal; evacuating again only flags a's replica again.
        s.restore_node("a", &NodeRestore::default()).unwrap();
        let rd = &s.resource_definitions[s.rd_idx("r").unwrap()];
        assert!(!rd.resources[0].has_flag(RESOURCE_EVACUATE));
        let (replies, _) = s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        assert!(
            replies
                .iter()
                .any(|r| r.message.contains("no replacement needed")),
            "{replies:?}"
        );
        assert_eq!(placement(&s, "r"), vec![("a".into(), false), ("b".into(), false)]);
        let rd = &s.resource_definitions[s.rd_idx("r").unwrap()];
        assert!(rd.resources[0].has_flag(RESOURCE_EVACUATE));
        assert_eq!(rd.place_count, Some(1));
        // Once not in use, a's replica goes; b keeps the volume.
        s.set_resource_state("r", "a", Some(Some(false)), None).unwrap();
        assert_eq!(placement(&s, "r"), vec![("b".into(), false)]);
    }

    #[test]
    fn a_given_place_count_decides_whether_a_replacement_is_needed() {
        let mut s = nodes(&["a", "b", "c", "d"]);
        let mut one = SimResourceDefinition::new("one", 1024)
            .resource(SimResource::diskful("a"))
            .resource(SimResource::diskful("b"));
        one.place_count = Some(1);
        let mut three = SimResourceDefinition::new("three", 1024)
            .resource(SimResource::diskful("a"))
            .resource(SimResource::diskful("b"));
        three.place_count = Some(3);
        s.create_resource_definition(one).unwrap();
        s.create_resource_definition(three).unwrap();
        // A replica on an evacuating node is not kept.
        s.set_node_state("b", Some(vec![flags::EVACUATE.to_owned()]), None)
            .unwrap();
        s.evacuate_node("a", &NodeEvacuate::default()).unwrap();
        assert_eq!(
            placement(&s, "one"),
            vec![("b".into(), false), ("c".into(), false)]
        );
        assert_eq!(
            placement(&s, "three"),
            vec![("b".into(), false), ("d".into(), false)]
        );
        // Evacuating b: "one" keeps c, "three" needs another replica (on a, restored and empty).
        s.set_node_state("b", Some(vec![]), None).unwrap();
        s.restore_node("a", &NodeRestore::default()).unwrap();
        s.evacuate_node("b", &NodeEvacuate::default()).unwrap();
        assert_eq!(placement(&s, "one"), vec![("c".into(), false)]);
        assert_eq!(
            placement(&s, "three"),
            vec![("a".into(), false), ("d".into(), false)]
        );
    }

    #[test]
    fn props_filter_semantics() {
        let p: Properties = [("A".to_owned(), "1".to_owned())].into();
        assert!(props_match(&p, &["A".to_owned()]));
        assert!(props_match(&p, &["A=1".to_owned()]));
        assert!(!props_match(&p, &["A=2".to_owned()]));
        assert!(!props_match(&p, &["B".to_owned()]));
    }
}
