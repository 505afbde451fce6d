//! LINSTOR state in the decision engine's model: fetched with three requests
//! (resource definitions with their volume definitions, the resource view,
//! the nodes) whatever the number of volumes, or converted from lists read
//! elsewhere (for example a dump).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use affinity_core::{
    LinstorSnapshot, Properties, Replica, ResourceDefinitionState, VolumeDefinitionState,
    guess_property_namespace,
};
use linstor_api::models::{Node, ResourceDefinition, ResourceWithVolumes, VolumeDefinition};
use linstor_api::{Client, NodeFilter, ResourceDefinitionFilter, ResourceViewFilter};
use tracing::info;

/// The engine's view of LINSTOR, with what had to be left out.
#[derive(Debug, Default)]
pub struct LinstorState {
    /// Resource definitions, replicas and node properties.
    pub snapshot: LinstorSnapshot,
    /// Parts of the input left out, with the reason (for example a volume
    /// definition with an out-of-range number).
    pub warnings: Vec<String>,
}

/// Why LINSTOR state could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("reading the LINSTOR {what}: {source}")]
pub struct FetchError {
    /// What was being read: "resource definitions", "resources" or "nodes".
    pub what: &'static str,
    /// The client's error.
    pub source: linstor_api::Error,
}

/// Reads everything decisions need from LINSTOR in three concurrent
/// requests. Any failure fails the whole read: deciding on part of the state
/// could replace PVs with a wrong affinity.
pub async fn fetch(client: &Client) -> Result<LinstorState, FetchError> {
    fetch_filtered(client, &[]).await
}

/// [`fetch`] limited to the resource definitions `names` (and their
/// resources); every node is still read, as topology comes from them.
/// Empty `names`: everything.
pub async fn fetch_resource_definitions(
    client: &Client,
    names: &[String],
) -> Result<LinstorState, FetchError> {
    fetch_filtered(client, names).await
}

async fn fetch_filtered(client: &Client, names: &[String]) -> Result<LinstorState, FetchError> {
    let definitions = async {
        let filter = ResourceDefinitionFilter {
            resource_definitions: names.to_vec(),
            with_volume_definitions: true,
            ..ResourceDefinitionFilter::default()
        };
        client
            .list_resource_definitions(&filter)
            .await
            .map_err(|source| FetchError {
                what: "resource definitions",
                source,
            })
    };
    let resources = async {
        let filter = ResourceViewFilter {
            resources: names.to_vec(),
            ..ResourceViewFilter::default()
        };
        client.view_resources(&filter).await.map_err(|source| FetchError {
            what: "resources",
            source,
        })
    };
    let nodes = async {
        client
            .list_nodes(&NodeFilter::default())
            .await
            .map_err(|source| FetchError {
                what: "nodes",
                source,
            })
    };
    let (definitions, resources, nodes) = futures::try_join!(definitions, resources, nodes)?;
    Ok(convert(&nodes, &resources, &definitions, None))
}

/// Converts LINSTOR lists. Volume definitions of `volume_definitions` (a
/// resource definition list, as `linstor -m volume-definition list` prints
/// it) replace those of the same number in `definitions`.
pub fn convert(
    nodes: &[Node],
    resources: &[ResourceWithVolumes],
    definitions: &[ResourceDefinition],
    volume_definitions: Option<&[ResourceDefinition]>,
) -> LinstorState {
    let mut state = LinstorState::default();
    for node in nodes {
        state.snapshot.insert_node(node.name.clone(), node.props.clone());
    }
    for resource in resources {
        state.snapshot.push_replica(Replica::new(
            resource.name.clone(),
            resource.node_name.clone(),
            resource.flags.iter().cloned(),
        ));
    }
    let mut converted: BTreeMap<&str, ResourceDefinitionState> = BTreeMap::new();
    for definition in definitions {
        let volumes = definition
            .volume_definitions
            .iter()
            .filter_map(|volume| volume_definition(&definition.name, volume, &mut state.warnings))
            .collect();
        converted.insert(
            &definition.name,
            ResourceDefinitionState {
                name: definition.name.clone(),
                properties: definition.props.clone(),
                volume_definitions: volumes,
            },
        );
    }
    for definition in volume_definitions.into_iter().flatten() {
        let Some(target) = converted.get_mut(definition.name.as_str()) else {
            state.warnings.push(format!(
                "volume definitions of resource definition {} ignored: it is not in the resource \
                 definition list",
                definition.name
            ));
            continue;
        };
        for volume in &definition.volume_definitions {
            let Some(volume) = volume_definition(&definition.name, volume, &mut state.warnings) else {
                continue;
            };
            match target
                .volume_definitions
                .iter_mut()
                .find(|known| known.volume_number == volume.volume_number)
            {
                Some(known) => *known = volume,
                None => target.volume_definitions.push(volume),
            }
        }
    }
    for definition in converted.into_values() {
        state.snapshot.insert_resource_definition(definition);
    }
    state
}

/// The property namespace of the nodes' topology labels: `configured` when
/// one is, else guessed from the properties of the LINSTOR nodes
/// ([`guess_property_namespace`]). A guess is logged when this process first
/// makes it, and again whenever it differs from the one before.
pub fn property_namespace<'a>(
    configured: Option<&str>,
    node_properties: impl IntoIterator<Item = &'a Properties>,
) -> String {
    static LAST_GUESS: Mutex<Option<&'static str>> = Mutex::new(None);
    if let Some(configured) = configured {
        return configured.to_owned();
    }
    let guessed = guess_property_namespace(node_properties);
    if is_new_guess(&LAST_GUESS, guessed) {
        info!(namespace = %guessed, "property namespace guessed from the LINSTOR nodes");
    }
    guessed.to_owned()
}

/// Records `guess` in `last`; whether it differs from the guess recorded before.
fn is_new_guess(last: &Mutex<Option<&'static str>>, guess: &'static str) -> bool {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    last.replace(guess) != Some(guess)
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

#[cfg(test)]
mod tests {
    use affinity_core::{ResourceDefinitionSource, ResourceSource};

    use super::*;

    fn definition(json: serde_json::Value) -> ResourceDefinition {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn later_volume_definitions_replace_earlier_ones_and_bad_numbers_are_reported() {
        let definitions = [definition(serde_json::json!({
            "name": "pvc-1",
            "props": {"Aux/affinity-updater-skip": "yes"},
            "volume_definitions": [
                {"volume_number": 0, "size_kib": 1, "props": {"A": "old"}},
                {"volume_number": 70000, "size_kib": 1}
            ]
        }))];
        let overrides = [
            definition(serde_json::json!({
                "name": "pvc-1",
                "volume_definitions": [{"volume_number": 0, "size_kib": 1, "props": {"A": "new"}}]
            })),
            definition(serde_json::json!({"name": "pvc-unknown"})),
        ];
        let state = convert(&[], &[], &definitions, Some(&overrides));
        let converted = state.snapshot.resource_definition("pvc-1").unwrap();
        assert_eq!(converted.volume_definitions.len(), 1);
        assert_eq!(converted.volume_definitions[0].properties["A"], "new");
        assert_eq!(converted.properties["Aux/affinity-updater-skip"], "yes");
        assert_eq!(state.warnings.len(), 2, "{:?}", state.warnings);
        assert!(state.warnings[0].contains("70000 out of range"));
        assert!(state.warnings[1].contains("pvc-unknown"));
        assert!(state.snapshot.resources("pvc-1").is_empty());
    }

    #[test]
    fn a_configured_namespace_wins_over_the_guess() {
        let v2 = Properties::from([(
            "Aux/topology/kubernetes.io/hostname".to_owned(),
            "node-a".to_owned(),
        )]);
        assert_eq!(property_namespace(Some("Custom"), [&v2]), "Custom");
        assert_eq!(property_namespace(None, [&v2]), "Aux/topology");
        assert_eq!(property_namespace(None, []), "Aux");
    }

    #[test]
    fn a_guess_is_new_the_first_time_and_when_it_changes() {
        let last = Mutex::new(None);
        assert!(is_new_guess(&last, "Aux"));
        assert!(!is_new_guess(&last, "Aux"));
        assert!(is_new_guess(&last, "Aux/topology"));
        assert!(!is_new_guess(&last, "Aux/topology"));
        assert!(is_new_guess(&last, "Aux"));
    }
}
