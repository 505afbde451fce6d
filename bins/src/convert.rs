//! Turning the objects of a dump into the decision engine's model.

use std::collections::BTreeMap;

use affinity_core::{LinstorSnapshot, Properties, Replica, ResourceDefinitionState, VolumeDefinitionState};
use linstor_api::models::{ResourceDefinition, VolumeDefinition};

use crate::dump::Dump;

/// The engine's view of a dump's LINSTOR state and StorageClasses.
#[derive(Debug, Default)]
pub struct CoreState {
    /// Resource definitions, replicas and node properties.
    pub linstor: LinstorSnapshot,
    /// StorageClass parameters by StorageClass name.
    pub storage_classes: BTreeMap<String, Properties>,
    /// Parts of the dump left out, with the reason.
    pub warnings: Vec<String>,
}

/// Converts a dump. Volume definitions of `volume-definitions.json` replace
/// those of the same number in `resource-definitions.json`.
pub fn core_state(dump: &Dump) -> CoreState {
    let mut state = CoreState::default();
    for node in &dump.nodes {
        state.linstor.insert_node(node.name.clone(), node.props.clone());
    }
    for resource in &dump.resources {
        state.linstor.push_replica(Replica::new(
            resource.name.clone(),
            resource.node_name.clone(),
            resource.flags.iter().cloned(),
        ));
    }
    let mut definitions: BTreeMap<String, ResourceDefinitionState> = BTreeMap::new();
    for definition in &dump.resource_definitions {
        let converted = resource_definition(definition, &mut state.warnings);
        definitions.insert(converted.name.clone(), converted);
    }
    for definition in dump.volume_definitions.iter().flatten() {
        let Some(target) = definitions.get_mut(&definition.name) else {
            state.warnings.push(format!(
                "volume definitions of resource definition {} ignored: it is not in the resource \
                 definition list",
                definition.name
            ));
            continue;
        };
        for volume in &definition.volume_definitions {
            let Some(converted) = volume_definition(&definition.name, volume, &mut state.warnings) else {
                continue;
            };
            match target
                .volume_definitions
                .iter_mut()
                .find(|known| known.volume_number == converted.volume_number)
            {
                Some(known) => *known = converted,
                None => target.volume_definitions.push(converted),
            }
        }
    }
    for definition in definitions.into_values() {
        state.linstor.insert_resource_definition(definition);
    }
    for class in &dump.storage_classes {
        let Some(name) = class.metadata.name.clone().filter(|name| !name.is_empty()) else {
            state
                .warnings
                .push("a StorageClass without a name was ignored".to_owned());
            continue;
        };
        let parameters: Properties = class.parameters.clone().unwrap_or_default().into_iter().collect();
        state.storage_classes.insert(name, parameters);
    }
    state
}

fn resource_definition(
    definition: &ResourceDefinition,
    warnings: &mut Vec<String>,
) -> ResourceDefinitionState {
    ResourceDefinitionState {
        name: definition.name.clone(),
        properties: definition.props.clone(),
        volume_definitions: definition
            .volume_definitions
            .iter()
            .filter_map(|volume| volume_definition(&definition.name, volume, warnings))
            .collect(),
    }
}

fn volume_definition(
    resource_definition: &str,
    volume: &VolumeDefinition,
    warnings: &mut Vec<String>,
) -> Option<VolumeDefinitionState> {
    let number = volume.volume_number.and_then(|number| u16::try_from(number).ok());
    if number.is_none() {
        warnings.push(format!(
            "a volume definition of resource definition {resource_definition} was ignored: volume number {}",
            volume
                .volume_number
                .map_or_else(|| "missing".to_owned(), |number| format!("{number} out of range")),
        ));
    }
    number.map(|volume_number| VolumeDefinitionState {
        volume_number,
        properties: volume.props.clone(),
    })
}
