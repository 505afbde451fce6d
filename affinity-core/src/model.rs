//! The small data model the engine reads LINSTOR state through.
//!
//! It holds only what decisions need, so that any source (a REST client, a
//! cache, a dump on disk) can fill it cheaply.

use std::collections::BTreeMap;

use crate::names::SAVED_PV_PROPERTY;

/// LINSTOR properties (key to value), or StorageClass parameters.
pub type Properties = BTreeMap<String, String>;

/// Flags that disqualify a replica as a diskful home of the data.
pub const NOT_DISKFUL_FLAGS: [&str; 4] = ["DISKLESS", "DELETE", "FAILED_DEPLOYMENT", "FAILED_DISCONNECT"];

/// One LINSTOR resource: a replica of a resource definition on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    /// Name of the resource (the resource definition's name).
    pub resource_name: String,
    /// Name of the LINSTOR node holding it.
    pub node_name: String,
    /// LINSTOR resource flags, such as `DISKLESS` or `DELETE`.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Replica {
    /// A replica from its parts.
    pub fn new<I, F>(resource_name: impl Into<String>, node_name: impl Into<String>, flags: I) -> Self
    where
        I: IntoIterator<Item = F>,
        F: Into<String>,
    {
        Self {
            resource_name: resource_name.into(),
            node_name: node_name.into(),
            flags: flags.into_iter().map(Into::into).collect(),
        }
    }

    /// True when the replica is named, placed, and carries none of
    /// [`NOT_DISKFUL_FLAGS`].
    pub fn is_healthy_diskful(&self) -> bool {
        !self.resource_name.is_empty()
            && !self.node_name.is_empty()
            && !self
                .flags
                .iter()
                .any(|flag| NOT_DISKFUL_FLAGS.contains(&flag.as_str()))
    }
}

/// What the engine needs of one LINSTOR volume definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeDefinitionState {
    /// Volume number inside the resource definition.
    pub volume_number: u16,
    /// Properties of the volume definition (the saved PV lives here).
    #[serde(default)]
    pub properties: Properties,
}

/// What the engine needs of one LINSTOR resource definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceDefinitionState {
    /// Name of the resource definition.
    pub name: String,
    /// Properties of the resource definition (the skip property lives here).
    #[serde(default)]
    pub properties: Properties,
    /// Its volume definitions.
    #[serde(default)]
    pub volume_definitions: Vec<VolumeDefinitionState>,
}

impl ResourceDefinitionState {
    /// Whether any volume definition holds saved replace state.
    pub fn has_saved_state(&self) -> bool {
        self.volume_definitions
            .iter()
            .any(|vd| saved_pv_json(&vd.properties).is_some())
    }

    /// The properties of volume definition `volume_number`, if it exists.
    pub fn volume_properties(&self, volume_number: u16) -> Option<&Properties> {
        self.volume_definitions
            .iter()
            .find(|vd| vd.volume_number == volume_number)
            .map(|vd| &vd.properties)
    }
}

/// The saved-PV property of a volume definition, when set to something (an
/// empty value counts as absent).
pub fn saved_pv_json(properties: &Properties) -> Option<&str> {
    properties
        .get(SAVED_PV_PROPERTY)
        .map(String::as_str)
        .filter(|json| !json.is_empty())
}
