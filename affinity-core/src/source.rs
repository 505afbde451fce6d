//! The traits through which the engine reads LINSTOR and Kubernetes state,
//! and plain in-memory implementations of them.
//!
//! An embedder implements these over its own caches; the engine only ever
//! borrows from them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::fast_hash::FastMap;
use crate::model::{Properties, Replica, ResourceDefinitionState};

/// LINSTOR resource definitions with their volume definitions.
pub trait ResourceDefinitionSource {
    /// The resource definition called `name`, if LINSTOR has it.
    fn resource_definition(&self, name: &str) -> Option<&ResourceDefinitionState>;

    /// Every resource definition, in any order.
    fn resource_definitions(&self) -> impl Iterator<Item = &ResourceDefinitionState>;

    /// The resource definitions with saved replace state on any volume
    /// definition, in any order: how the engine finds volumes whose PV is
    /// gone. The default filters [`Self::resource_definitions`]; sources
    /// that index saved state answer without a scan.
    fn with_saved_state(&self) -> impl Iterator<Item = &ResourceDefinitionState> {
        self.resource_definitions()
            .filter(|definition| definition.has_saved_state())
    }
}

/// LINSTOR resources (replicas) per resource definition.
pub trait ResourceSource {
    /// The replicas of resource definition `resource_definition`, empty when
    /// it has none.
    fn resources(&self, resource_definition: &str) -> &[Replica];
}

/// LINSTOR node properties.
pub trait NodeSource {
    /// The properties of node `node_name`, `None` when LINSTOR does not know it.
    fn node_properties(&self, node_name: &str) -> Option<&Properties>;
}

/// Kubernetes StorageClass parameters.
pub trait StorageClassSource {
    /// The parameters of StorageClass `name`, `None` when it does not exist.
    fn storage_class_parameters(&self, name: &str) -> Option<&Properties>;
}

impl StorageClassSource for HashMap<String, Properties> {
    fn storage_class_parameters(&self, name: &str) -> Option<&Properties> {
        self.get(name)
    }
}

impl StorageClassSource for BTreeMap<String, Properties> {
    fn storage_class_parameters(&self, name: &str) -> Option<&Properties> {
        self.get(name)
    }
}

/// An in-memory copy of the LINSTOR state decisions need: resource
/// definitions, their replicas and the nodes' properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinstorSnapshot {
    resource_definitions: FastMap<String, ResourceDefinitionState>,
    /// Names of the resource definitions with saved replace state.
    with_saved_state: BTreeSet<String>,
    replicas: FastMap<String, Vec<Replica>>,
    nodes: FastMap<String, Properties>,
}

impl LinstorSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node and its properties.
    pub fn insert_node(&mut self, name: impl Into<String>, properties: Properties) {
        self.nodes.insert(name.into(), properties);
    }

    /// Adds or replaces a resource definition.
    pub fn insert_resource_definition(&mut self, definition: ResourceDefinitionState) {
        if definition.has_saved_state() {
            self.with_saved_state.insert(definition.name.clone());
        } else {
            self.with_saved_state.remove(&definition.name);
        }
        self.resource_definitions
            .insert(definition.name.clone(), definition);
    }

    /// Adds a replica to the resource definition its resource name names.
    pub fn push_replica(&mut self, replica: Replica) {
        self.replicas
            .entry(replica.resource_name.clone())
            .or_default()
            .push(replica);
    }

    /// Every node with its properties, in any order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &Properties)> {
        self.nodes.iter().map(|(name, props)| (name.as_str(), props))
    }
}

impl ResourceDefinitionSource for LinstorSnapshot {
    fn resource_definition(&self, name: &str) -> Option<&ResourceDefinitionState> {
        self.resource_definitions.get(name)
    }

    fn resource_definitions(&self) -> impl Iterator<Item = &ResourceDefinitionState> {
        self.resource_definitions.values()
    }

    fn with_saved_state(&self) -> impl Iterator<Item = &ResourceDefinitionState> {
        self.with_saved_state
            .iter()
            .filter_map(|name| self.resource_definitions.get(name))
    }
}

impl ResourceSource for LinstorSnapshot {
    fn resources(&self, resource_definition: &str) -> &[Replica] {
        self.replicas
            .get(resource_definition)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

impl NodeSource for LinstorSnapshot {
    fn node_properties(&self, node_name: &str) -> Option<&Properties> {
        self.nodes.get(node_name)
    }
}
