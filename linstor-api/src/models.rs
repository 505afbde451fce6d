//! Data types of the LINSTOR REST API v1, named and shaped as the official OpenAPI description.
//!
//! Every type ignores unknown fields and defaults every field the description does not mark as
//! required, so that answers of newer controllers still decode. Enumerations keep values they do not
//! know in an `Other` variant instead of failing, and accept their known values in any letter case
//! (controllers send, for example, both `Satellite` and `SATELLITE` as node type).
//!
//! Answers can be large (`/v1/view/resources` of a big cluster runs to tens of megabytes), so the
//! decoded form is kept compact: lists are allocated at their exact length, small string-keyed
//! maps of the layer and volume data are [`VecMap`]s instead of B-trees, and bulky or rarely
//! present parts (the DRBD data of a layer, the raw JSON of other layer kinds, the data of a
//! volume layer) are boxed, so that a value without them costs one pointer.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::compact::VecMap;
use crate::compact::exact_vec;

/// A string-to-string property map (`Properties` in the API description).
pub type Properties = BTreeMap<String, String>;

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of the client does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire form of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(s) => s.as_str(),
                }
            }

            /// Parses a wire value; known values match in any letter case.
            pub fn parse(s: &str) -> Self {
                $( if s.eq_ignore_ascii_case($text) { return Self::$variant; } )+
                Self::Other(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a string (", stringify!($name), ")"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::parse(v))
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}

string_enum! {
    /// Kind of a LINSTOR node (`Node.type`).
    NodeType {
        /// A controller-only node.
        Controller => "Controller",
        /// A satellite (storage) node.
        Satellite => "Satellite",
        /// Controller and satellite in one.
        Combined => "Combined",
        /// An auxiliary node.
        Auxiliary => "Auxiliary",
    }
}

string_enum! {
    /// Connection state of a node as seen by the controller (`Node.connection_status`).
    ConnectionStatus {
        /// The satellite is not connected.
        Offline => "OFFLINE",
        /// Connected, not yet authenticated.
        Connected => "CONNECTED",
        /// Connected and in sync.
        Online => "ONLINE",
        /// Satellite runs an incompatible version.
        VersionMismatch => "VERSION_MISMATCH",
        /// The initial full synchronisation failed.
        FullSyncFailed => "FULL_SYNC_FAILED",
        /// Authentication failed.
        AuthenticationError => "AUTHENTICATION_ERROR",
        /// State unknown.
        Unknown => "UNKNOWN",
        /// The satellite reports a different host name.
        HostnameMismatch => "HOSTNAME_MISMATCH",
        /// The satellite is managed by another controller.
        OtherController => "OTHER_CONTROLLER",
        /// Authenticated.
        Authenticated => "AUTHENTICATED",
        /// No satellite connection.
        NoStltConn => "NO_STLT_CONN",
    }
}

string_enum! {
    /// A layer of a resource's layer stack (`LayerType`).
    LayerType {
        /// DRBD replication.
        Drbd => "DRBD",
        /// LUKS encryption.
        Luks => "LUKS",
        /// Backing storage.
        Storage => "STORAGE",
        /// NVMe-oF.
        Nvme => "NVME",
        /// dm-writecache.
        Writecache => "WRITECACHE",
        /// dm-cache.
        Cache => "CACHE",
        /// bcache.
        Bcache => "BCACHE",
    }
}

string_enum! {
    /// Storage provider of a storage pool or volume (`ProviderKind`).
    ProviderKind {
        /// No local storage.
        Diskless => "DISKLESS",
        /// Thick LVM.
        Lvm => "LVM",
        /// LVM thin pool.
        LvmThin => "LVM_THIN",
        /// ZFS zvol.
        Zfs => "ZFS",
        /// Thin ZFS zvol.
        ZfsThin => "ZFS_THIN",
        /// File-backed.
        File => "FILE",
        /// Thin file-backed.
        FileThin => "FILE_THIN",
        /// SPDK.
        Spdk => "SPDK",
        /// EBS target.
        EbsTarget => "EBS_TARGET",
        /// EBS initiator.
        EbsInit => "EBS_INIT",
    }
}

/// Well-known flag values of nodes, resources and volume definitions.
pub mod flags {
    /// Node flag: the node is being evacuated; no new resources are placed on it.
    pub const EVACUATE: &str = "EVACUATE";
    /// Node flag: the node was evicted.
    pub const EVICTED: &str = "EVICTED";
    /// Flag: the object is being deleted.
    pub const DELETE: &str = "DELETE";
    /// Resource flag: no local disk.
    pub const DISKLESS: &str = "DISKLESS";
    /// Resource flag: DRBD client without local disk.
    pub const DRBD_DISKLESS: &str = "DRBD_DISKLESS";
    /// Resource flag: automatically created quorum tie-breaker.
    pub const TIE_BREAKER: &str = "TIE_BREAKER";
    /// Resource flag: the resource is inactive.
    pub const INACTIVE: &str = "INACTIVE";
}

/// Common reply structure of the controller (`ApiCallRc`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiCallRc {
    /// Masked return code; see [`ApiCallRc::is_error`].
    pub ret_code: i64,
    /// Main message.
    pub message: String,
    /// Cause of the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Details of the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// How the error could be corrected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// Ids of error reports related to this return code.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub error_report_ids: Vec<String>,
    /// Objects involved in the operation.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub obj_refs: BTreeMap<String, String>,
    /// Time of the reply (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl ApiCallRc {
    /// Bits of `ret_code` that mark an error.
    pub const MASK_ERROR: i64 = 0xC000_0000_0000_0000_u64 as i64;
    /// Bits of `ret_code` that mark a warning.
    pub const MASK_WARN: i64 = 0x8000_0000_0000_0000_u64 as i64;
    /// Bits of `ret_code` that mark an informational message.
    pub const MASK_INFO: i64 = 0x4000_0000_0000_0000;

    /// Whether this return code reports an error.
    pub fn is_error(&self) -> bool {
        self.ret_code & Self::MASK_ERROR == Self::MASK_ERROR
    }
}

impl fmt::Display for ApiCallRc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.message.is_empty() {
            "(no message)"
        } else {
            &self.message
        })?;
        for (label, value) in [
            ("cause", &self.cause),
            ("details", &self.details),
            ("correction", &self.correction),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                write!(f, "; {label}: {v}")?;
            }
        }
        if !self.error_report_ids.is_empty() {
            write!(f, "; error reports: {}", self.error_report_ids.join(", "))?;
        }
        Ok(())
    }
}

/// A network interface of a node (`NetInterface`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetInterface {
    /// Interface name, e.g. `default`.
    pub name: String,
    /// IP address.
    pub address: String,
    /// Port of the satellite service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellite_port: Option<i32>,
    /// `PLAIN` or `SSL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellite_encryption_type: Option<String>,
    /// Whether this interface carries the satellite connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// A LINSTOR node (`Node`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Node type.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Flags such as `EVACUATE` (see [`flags`]).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Node properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Network interfaces.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub net_interfaces: Vec<NetInterface>,
    /// Connection state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_status: Option<ConnectionStatus>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Supported storage providers.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub storage_providers: Vec<ProviderKind>,
    /// Supported resource layers.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub resource_layers: Vec<LayerType>,
    /// Unsupported providers with the reasons.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unsupported_providers: BTreeMap<String, Vec<String>>,
    /// Unsupported layers with the reasons.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unsupported_layers: BTreeMap<String, Vec<String>>,
    /// Eviction time, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_timestamp: Option<i64>,
    /// `LINUX` or `WINDOWS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Operating system variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_variant: Option<String>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            name: String::new(),
            node_type: NodeType::Satellite,
            flags: Vec::new(),
            props: Properties::new(),
            net_interfaces: Vec::new(),
            connection_status: None,
            uuid: None,
            storage_providers: Vec::new(),
            resource_layers: Vec::new(),
            unsupported_providers: BTreeMap::new(),
            unsupported_layers: BTreeMap::new(),
            eviction_timestamp: None,
            platform: None,
            os_variant: None,
        }
    }
}

impl Node {
    /// Whether the node carries `flag` (exact match).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Property changes of a node (`NodeModify`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeModify {
    /// New node type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_type: Option<String>,
    /// Properties to set or replace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub override_props: Properties,
    /// Property keys to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_props: Vec<String>,
    /// Property namespaces to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_namespaces: Vec<String>,
}

/// Options of a node restore (`NodeRestore`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRestore {
    /// Delete the node's resources instead of restoring them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_resources: Option<bool>,
    /// Delete the node's snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_snapshots: Option<bool>,
}

/// Options of a node evacuation (`NodeEvacuate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeEvacuate {
    /// Nodes allowed as evacuation targets (empty: any).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub target: Vec<String>,
    /// Nodes not to use as evacuation targets.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub do_not_target: Vec<String>,
}

/// DRBD data of a resource definition (`DrbdResourceDefinitionLayer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdResourceDefinitionLayer {
    /// Suffix of the DRBD resource name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name_suffix: Option<String>,
    /// Number of DRBD peer slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_slots: Option<i32>,
    /// Activity log stripes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_stripes: Option<i32>,
    /// Activity log stripe size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_stripe_size_kib: Option<i64>,
    /// TCP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Transport type, e.g. `IP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_type: Option<String>,
    /// Shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Whether the resource is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
}

/// A layer entry of a resource definition (`ResourceDefinitionLayer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionLayer {
    /// Layer kind.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub layer_type: Option<LayerType>,
    /// DRBD data (present for the DRBD layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DrbdResourceDefinitionLayer>,
}

/// DRBD data of a volume definition (`DrbdVolumeDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdVolumeDefinition {
    /// Suffix of the DRBD resource name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name_suffix: Option<String>,
    /// Volume number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i32>,
    /// DRBD minor number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_number: Option<i32>,
}

/// A layer entry of a volume definition (`VolumeDefinitionLayer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinitionLayer {
    /// Layer kind.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub layer_type: Option<LayerType>,
    /// DRBD data (present for the DRBD layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DrbdVolumeDefinition>,
}

/// A volume definition (`VolumeDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinition {
    /// Volume number within the resource definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i32>,
    /// Size in KiB.
    pub size_kib: i64,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Flags.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Layer data.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub layer_data: Vec<VolumeDefinitionLayer>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Property changes of a volume definition (`VolumeDefinitionModify`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinitionModify {
    /// New size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_kib: Option<i64>,
    /// Properties to set or replace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub override_props: Properties,
    /// Property keys to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_props: Vec<String>,
    /// Property namespaces to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_namespaces: Vec<String>,
    /// Flags to add (or remove, prefixed with `-`).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
}

/// A resource definition (`ResourceDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinition {
    /// Name.
    pub name: String,
    /// External (non-LINSTOR) name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Flags.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Layer data.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub layer_data: Vec<ResourceDefinitionLayer>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Linked resource group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group_name: Option<String>,
    /// Volume definitions (only when asked for).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub volume_definitions: Vec<VolumeDefinition>,
}

/// Property changes of a resource definition (`ResourceDefinitionModify`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionModify {
    /// Properties to set or replace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub override_props: Properties,
    /// Property keys to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_props: Vec<String>,
    /// Property namespaces to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_namespaces: Vec<String>,
    /// Preferred DRBD port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_port: Option<i32>,
    /// DRBD peer slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_peer_slots: Option<i32>,
    /// New layer stack.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub layer_stack: Vec<LayerType>,
    /// New resource group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
}

/// Request to create a resource definition (`ResourceDefinitionCreate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceDefinitionCreate {
    /// The definition to create (only `name` is required).
    pub resource_definition: ResourceDefinition,
    /// Preferred DRBD port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_port: Option<i32>,
    /// DRBD shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_secret: Option<String>,
    /// DRBD peer slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_peer_slots: Option<i32>,
    /// DRBD transport type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_transport_type: Option<String>,
}

/// Request to create a volume definition (`VolumeDefinitionCreate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeDefinitionCreate {
    /// The definition to create (only `size_kib` is required).
    pub volume_definition: VolumeDefinition,
    /// Preferred DRBD minor number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_minor_number: Option<i32>,
    /// Passphrase of encrypted volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
}

/// Request to create a resource (`ResourceCreate`); set the `DISKLESS` flag for a diskless one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceCreate {
    /// The resource (`node_name`, `flags`, `props`).
    pub resource: Resource,
    /// Layer stack.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub layer_list: Vec<LayerType>,
    /// DRBD node id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_node_id: Option<i32>,
}

/// Property changes of a resource (`ResourceModify`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceModify {
    /// Properties to set or replace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub override_props: Properties,
    /// Property keys to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_props: Vec<String>,
    /// Property namespaces to delete.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub delete_namespaces: Vec<String>,
}

/// DRBD connection state to one peer (`DrbdConnection`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdConnection {
    /// Whether connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Connection state, e.g. `Connected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// DRBD data of one volume of a resource (`DrbdVolume`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdVolume {
    /// The volume definition's DRBD data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_volume_definition: Option<DrbdVolumeDefinition>,
    /// DRBD device path, e.g. `/dev/drbd1000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Backing block device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_device: Option<String>,
    /// Meta-data disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_disk: Option<String>,
    /// Allocated size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    /// Usable size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    /// Disk state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    /// Storage pool of external meta-data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_meta_stor_pool: Option<String>,
}

/// DRBD data of a resource (`DrbdResource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdResource {
    /// The resource definition's DRBD data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_resource_definition: Option<DrbdResourceDefinitionLayer>,
    /// DRBD node id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i32>,
    /// TCP ports.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub tcp_ports: Vec<i32>,
    /// Peer slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_slots: Option<i32>,
    /// Activity log stripes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_stripes: Option<i32>,
    /// Activity log size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_size: Option<i64>,
    /// DRBD flags.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Per-volume DRBD data.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub drbd_volumes: Vec<DrbdVolume>,
    /// Connections by peer node name.
    #[serde(skip_serializing_if = "VecMap::is_empty")]
    pub connections: VecMap<DrbdConnection>,
    /// Promotion score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_score: Option<i32>,
    /// Whether this replica may become primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_promote: Option<bool>,
}

/// Per-volume data of the storage layer (`StorageVolume`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolume {
    /// Volume number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i32>,
    /// Block device path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Allocated size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    /// Usable size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    /// Disk state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
}

/// Storage layer data of a resource (`StorageResource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageResource {
    /// Per-volume data.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub storage_volumes: Vec<StorageVolume>,
}

/// One layer of a resource's layer tree (`ResourceLayer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceLayer {
    /// Lower layers.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub children: Vec<ResourceLayer>,
    /// Resource name suffix of this layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name_suffix: Option<String>,
    /// Layer kind.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub layer_type: Option<LayerType>,
    /// DRBD data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd: Option<Box<DrbdResource>>,
    /// LUKS data (kept as raw JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks: Option<Box<serde_json::Value>>,
    /// Storage data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageResource>,
    /// NVMe data (kept as raw JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme: Option<Box<serde_json::Value>>,
    /// Writecache data (kept as raw JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writecache: Option<Box<serde_json::Value>>,
    /// Cache data (kept as raw JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Box<serde_json::Value>>,
    /// Bcache data (kept as raw JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bcache: Option<Box<serde_json::Value>>,
}

/// Runtime state of a resource (`ResourceState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceState {
    /// Whether the resource is in use (DRBD primary). Absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
}

/// One value of an effective property (`EffectivePropertiesMapValue`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EffectiveProperty {
    /// Where the value comes from.
    #[serde(rename = "type")]
    pub source_type: String,
    /// The value.
    pub value: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descr: Option<String>,
    /// Values from other levels that this one shadows.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub other: Vec<serde_json::Value>,
}

/// A resource: one replica of a resource definition on one node (`Resource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    /// Resource (definition) name.
    pub name: String,
    /// Node the replica lives on.
    pub node_name: String,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Effective properties with their origin.
    #[serde(skip_serializing_if = "VecMap::is_empty")]
    pub effective_props: VecMap<EffectiveProperty>,
    /// Flags such as `DISKLESS`, `TIE_BREAKER`, `DELETE` (see [`flags`]).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Layer tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_object: Option<ResourceLayer>,
    /// Runtime state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ResourceState>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
}

macro_rules! resource_helpers {
    ($t:ty) => {
        impl $t {
            /// Whether the resource carries `flag` (exact match).
            pub fn has_flag(&self, flag: &str) -> bool {
                self.flags.iter().any(|f| f == flag)
            }

            /// Whether the replica has no local disk (`DISKLESS` or `DRBD_DISKLESS` flag).
            pub fn is_diskless(&self) -> bool {
                self.has_flag(flags::DISKLESS) || self.has_flag(flags::DRBD_DISKLESS)
            }

            /// Whether the replica is in use; `None` when the state is unknown.
            pub fn in_use(&self) -> Option<bool> {
                self.state.as_ref().and_then(|s| s.in_use)
            }
        }
    };
}

resource_helpers!(Resource);
resource_helpers!(ResourceWithVolumes);

/// A resource with its volumes, as listed by `/v1/view/resources` (`ResourceWithVolumes`: all
/// fields of [`Resource`] plus `volumes` and `shared_name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceWithVolumes {
    /// Resource (definition) name.
    pub name: String,
    /// Node the replica lives on.
    pub node_name: String,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Effective properties with their origin.
    #[serde(skip_serializing_if = "VecMap::is_empty")]
    pub effective_props: VecMap<EffectiveProperty>,
    /// Flags such as `DISKLESS`, `TIE_BREAKER`, `DELETE` (see [`flags`]).
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Layer tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_object: Option<ResourceLayer>,
    /// Runtime state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ResourceState>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
    /// Its volumes.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub volumes: Vec<Volume>,
    /// Shared space name of the first volume's storage pool, if shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_name: Option<String>,
}

impl ResourceWithVolumes {
    /// The resource part, without volumes.
    pub fn to_resource(&self) -> Resource {
        Resource {
            name: self.name.clone(),
            node_name: self.node_name.clone(),
            props: self.props.clone(),
            effective_props: self.effective_props.clone(),
            flags: self.flags.clone(),
            layer_object: self.layer_object.clone(),
            state: self.state.clone(),
            uuid: self.uuid.clone(),
            create_timestamp: self.create_timestamp,
        }
    }
}

/// Replication state towards one peer (`ReplicationState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationState {
    /// Replication state, e.g. `Established`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// Resync progress in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_percentage: Option<f64>,
}

/// Runtime state of a volume (`VolumeState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeState {
    /// Disk state, e.g. `UpToDate` or `Diskless`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    /// Replication state by peer node.
    #[serde(skip_serializing_if = "VecMap::is_empty")]
    pub replication_states: VecMap<ReplicationState>,
}

/// Per-layer data of a volume (`VolumeLayer`).
///
/// `data` holds the union of the fields of the per-layer volume objects (`DrbdVolume`,
/// `StorageVolume`, `LUKSVolume`, ...); which of them are set depends on `type`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeLayer {
    /// Layer kind.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub layer_type: Option<LayerType>,
    /// Layer data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<VolumeLayerData>>,
}

/// Union of the fields of the per-layer volume objects (see [`VolumeLayer`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeLayerData {
    /// DRBD: the volume definition's DRBD data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_volume_definition: Option<DrbdVolumeDefinition>,
    /// Volume number (non-DRBD layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i32>,
    /// Device path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Backing device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_device: Option<String>,
    /// DRBD meta-data disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_disk: Option<String>,
    /// Allocated size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    /// Usable size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    /// Disk state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
}

/// A volume of a resource (`Volume`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    /// Volume number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i32>,
    /// Storage pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_pool_name: Option<String>,
    /// Storage provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_kind: Option<ProviderKind>,
    /// Device path of the top layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Allocated size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    /// Usable size in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Properties,
    /// Flags.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub flags: Vec<String>,
    /// Runtime state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<VolumeState>,
    /// Per-layer data.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub layer_data_list: Vec<VolumeLayer>,
    /// Unique object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Reports about this volume.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_vec")]
    pub reports: Vec<ApiCallRc>,
}

/// Version of the controller (`ControllerVersion`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerVersion {
    /// Version, e.g. `1.28.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Git commit of the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_hash: Option<String>,
    /// Build time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_time: Option<String>,
    /// REST API version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_api_version: Option<String>,
}

/// Payload of most node events (`EventNode`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventNode {
    /// The node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
}

/// Payload of the `node-modified` event (`EventNodeModified`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventNodeModified {
    /// The node before the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_node: Option<Node>,
    /// The node after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_node: Option<Node>,
}

/// An event of the node event stream (`/v1/events/nodes`).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// `node-create`.
    Created(EventNode),
    /// `node-delete`.
    Deleted(EventNode),
    /// `node-evacuate`.
    Evacuating(EventNode),
    /// `node-evicted`.
    Evicted(EventNode),
    /// `node-restored`.
    Restored(EventNode),
    /// `node-modified`.
    Modified(Box<EventNodeModified>),
    /// An event this client does not know, with its raw data.
    Other {
        /// The event name.
        event: String,
        /// The raw `data` text.
        data: String,
    },
}

impl NodeEvent {
    /// Wire name of the event (`node-create`, ...).
    pub fn name(&self) -> &str {
        match self {
            NodeEvent::Created(_) => "node-create",
            NodeEvent::Deleted(_) => "node-delete",
            NodeEvent::Evacuating(_) => "node-evacuate",
            NodeEvent::Evicted(_) => "node-evicted",
            NodeEvent::Restored(_) => "node-restored",
            NodeEvent::Modified(_) => "node-modified",
            NodeEvent::Other { event, .. } => event,
        }
    }

    /// Decodes an event from its name and `data` text.
    pub fn decode(event: &str, data: &str) -> Result<NodeEvent, serde_json::Error> {
        Ok(match event {
            "node-create" => NodeEvent::Created(serde_json::from_str(data)?),
            "node-delete" => NodeEvent::Deleted(serde_json::from_str(data)?),
            "node-evacuate" => NodeEvent::Evacuating(serde_json::from_str(data)?),
            "node-evicted" => NodeEvent::Evicted(serde_json::from_str(data)?),
            "node-restored" => NodeEvent::Restored(serde_json::from_str(data)?),
            "node-modified" => NodeEvent::Modified(Box::new(serde_json::from_str(data)?)),
            other => NodeEvent::Other {
                event: other.to_owned(),
                data: data.to_owned(),
            },
        })
    }

    /// The `data` payload as JSON value.
    pub fn data_json(&self) -> serde_json::Value {
        let v = match self {
            NodeEvent::Created(e)
            | NodeEvent::Deleted(e)
            | NodeEvent::Evacuating(e)
            | NodeEvent::Evicted(e)
            | NodeEvent::Restored(e) => serde_json::to_value(e),
            NodeEvent::Modified(e) => serde_json::to_value(e),
            NodeEvent::Other { data, .. } => serde_json::from_str(data),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_accept_any_case_and_keep_unknown_values() {
        assert_eq!(NodeType::parse("SATELLITE"), NodeType::Satellite);
        assert_eq!(NodeType::parse("Satellite"), NodeType::Satellite);
        assert_eq!(NodeType::parse("QUANTUM"), NodeType::Other("QUANTUM".to_owned()));
        let l: LayerType = serde_json::from_str("\"drbd\"").unwrap();
        assert_eq!(l, LayerType::Drbd);
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"DRBD\"");
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_default() {
        let n: Node = serde_json::from_str(r#"{"name":"a","brand_new":{"x":1}}"#).unwrap();
        assert_eq!(n.name, "a");
        assert_eq!(n.node_type, NodeType::Satellite);
        assert!(n.props.is_empty());
        let r: ResourceWithVolumes =
            serde_json::from_str(r#"{"name":"pvc","node_name":"n1","state":{"in_use":true},"volumes":[{"volume_number":0,"future":true}]}"#)
                .unwrap();
        assert_eq!(r.name, "pvc");
        assert_eq!(r.in_use(), Some(true));
        assert_eq!(r.volumes[0].volume_number, Some(0));
    }

    #[test]
    fn decoded_answers_encode_to_equal_values() {
        // Floats must be parsed exactly (serde_json's `float_roundtrip`): with a best-effort
        // parse these values change when the decoded answer is encoded and decoded again.
        let body = r#"[{"name":"r","volumes":[{"state":{"replication_states":
            {"n":{"done_percentage":82780213362657402e-223}}}}],
            "layer_object":{"luks":{"x":11849683599576358e-69}}}]"#;
        let first: Vec<ResourceWithVolumes> = serde_json::from_str(body).unwrap();
        let again: Vec<ResourceWithVolumes> =
            serde_json::from_slice(&serde_json::to_vec(&first).unwrap()).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn api_call_rc_display_lists_all_parts() {
        let rc = ApiCallRc {
            ret_code: ApiCallRc::MASK_ERROR | 0x0c,
            message: "Node 'x' not found".into(),
            cause: Some("it is gone".into()),
            details: Some("looked everywhere".into()),
            correction: Some("create it".into()),
            ..Default::default()
        };
        assert!(rc.is_error());
        assert_eq!(
            rc.to_string(),
            "Node 'x' not found; cause: it is gone; details: looked everywhere; correction: create it"
        );
        let info = ApiCallRc {
            ret_code: ApiCallRc::MASK_INFO,
            ..Default::default()
        };
        assert!(!info.is_error());
    }

    #[test]
    fn node_events_decode_by_name() {
        let e = NodeEvent::decode("node-evacuate", r#"{"node":{"name":"n1","type":"SATELLITE"}}"#).unwrap();
        match &e {
            NodeEvent::Evacuating(ev) => assert_eq!(ev.node.as_ref().unwrap().name, "n1"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.name(), "node-evacuate");
        let o = NodeEvent::decode("node-teleported", "{}").unwrap();
        assert_eq!(o.name(), "node-teleported");
        assert!(NodeEvent::decode("node-create", "{not json").is_err());
    }
}
