//! LINSTOR state in the decision engine's model: fetched with three requests
//! (resource definitions with their volume definitions, the resource view,
//! the nodes) whatever the number of volumes, or converted from lists read
//! elsewhere (for example a dump).
//!
//! A fetch decodes the two large lists while they stream in and keeps of
//! each element only what decisions read (replica placement and flags; the
//! skip and saved-PV properties), so its memory grows with the state the
//! engine keeps, not with the size of LINSTOR's answers.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_PROPERTY};
use affinity_core::{
    LinstorSnapshot, Properties, Replica, ResourceDefinitionState, VolumeDefinitionState,
    guess_property_namespace,
};
use linstor_api::models::{Node, ResourceDefinition, ResourceWithVolumes};
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
    /// Bytes of the resource definition and resource lists received (0
    /// when converted from lists read elsewhere).
    pub received_bytes: u64,
}

/// What decisions read of a resource in the resource view.
#[derive(serde::Deserialize)]
struct Placement {
    name: String,
    node_name: String,
    #[serde(default)]
    flags: Vec<String>,
}

/// What decisions read of a resource definition in the list.
#[derive(serde::Deserialize)]
struct DefinitionFacts {
    name: String,
    #[serde(default, deserialize_with = "skip_property")]
    props: Properties,
    #[serde(default)]
    volume_definitions: Vec<VolumeFacts>,
}

/// What decisions read of a volume definition.
#[derive(serde::Deserialize)]
struct VolumeFacts {
    volume_number: Option<i32>,
    #[serde(default, deserialize_with = "saved_pv_property")]
    props: Properties,
}

/// A resource definition's properties, of which decisions read only the
/// skip property.
fn skip_property<'de, D: serde::Deserializer<'de>>(properties: D) -> Result<Properties, D::Error> {
    properties.deserialize_map(KeptProperty(SKIP_PROPERTY))
}

/// A volume definition's properties, of which decisions read only the saved
/// PV.
fn saved_pv_property<'de, D: serde::Deserializer<'de>>(properties: D) -> Result<Properties, D::Error> {
    properties.deserialize_map(KeptProperty(SAVED_PV_PROPERTY))
}

/// Decodes a property map into the entry of one key; the other entries are
/// skipped without being allocated, as there are many per definition and
/// thousands of definitions per pass.
struct KeptProperty(&'static str);

impl<'de> serde::de::Visitor<'de> for KeptProperty {
    type Value = Properties;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a map of property names to values")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Properties, A::Error> {
        let mut kept = Properties::new();
        while let Some(is_kept) = entries.next_key_seed(IsKey(self.0))? {
            if is_kept {
                kept.insert(self.0.to_owned(), entries.next_value()?);
            } else {
                entries.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}

/// Decodes a map key into whether it is the given key.
struct IsKey(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for IsKey {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, key: D) -> Result<bool, D::Error> {
        key.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsKey {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a property name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
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
        let mut definitions = Vec::new();
        let mut warnings = Vec::new();
        let bytes = client
            .list_resource_definitions_each(&filter, |definition: DefinitionFacts| {
                definitions.push(definition_state(definition, &mut warnings));
            })
            .await
            .map_err(|source| FetchError {
                what: "resource definitions",
                source,
            })?;
        Ok((definitions, warnings, bytes))
    };
    let resources = async {
        let filter = ResourceViewFilter {
            resources: names.to_vec(),
            ..ResourceViewFilter::default()
        };
        let mut replicas = Vec::new();
        let bytes = client
            .view_resources_each(&filter, |resource: Placement| {
                replicas.push(Replica {
                    resource_name: resource.name,
                    node_name: resource.node_name,
                    flags: resource.flags,
                });
            })
            .await
            .map_err(|source| FetchError {
                what: "resources",
                source,
            })?;
        Ok((replicas, bytes))
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
    let ((definitions, warnings, definition_bytes), (replicas, resource_bytes), nodes) =
        futures::try_join!(definitions, resources, nodes)?;
    let mut state = LinstorState {
        warnings,
        received_bytes: definition_bytes + resource_bytes,
        ..LinstorState::default()
    };
    for node in nodes {
        state.snapshot.insert_node(node.name, node.props);
    }
    for replica in replicas {
        state.snapshot.push_replica(replica);
    }
    for definition in definitions {
        state.snapshot.insert_resource_definition(definition);
    }
    Ok(state)
}

/// What decisions read of a resource definition and its volume definitions.
fn definition_state(definition: DefinitionFacts, warnings: &mut Vec<String>) -> ResourceDefinitionState {
    let volume_definitions = definition
        .volume_definitions
        .into_iter()
        .filter_map(|volume| {
            volume_definition(&definition.name, volume.volume_number, volume.props, warnings)
        })
        .collect();
    ResourceDefinitionState {
        name: definition.name,
        properties: definition.props,
        volume_definitions,
    }
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
            .filter_map(|volume| {
                volume_definition(
                    &definition.name,
                    volume.volume_number,
                    volume.props.clone(),
                    &mut state.warnings,
                )
            })
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
            let Some(volume) = volume_definition(
                &definition.name,
                volume.volume_number,
                volume.props.clone(),
                &mut state.warnings,
            ) else {
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

/// The volume definition numbered `volume_number` with `properties`, or
/// none and a warning when the number is missing or out of range.
fn volume_definition(
    resource_definition: &str,
    volume_number: Option<i32>,
    properties: Properties,
    warnings: &mut Vec<String>,
) -> Option<VolumeDefinitionState> {
    let number = volume_number.and_then(|number| u16::try_from(number).ok());
    if number.is_none() {
        warnings.push(format!(
            "a volume definition of resource definition {resource_definition} was ignored: volume number {}",
            volume_number.map_or_else(|| "missing".to_owned(), |number| format!("{number} out of range")),
        ));
    }
    number.map(|volume_number| VolumeDefinitionState {
        volume_number,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use affinity_core::{ResourceDefinitionSource, ResourceSource};

    use super::*;

    fn definition(json: serde_json::Value) -> ResourceDefinition {
        serde_json::from_value(json).unwrap()
    }

    #[tokio::test]
    async fn a_fetch_keeps_every_replica_and_only_the_properties_decisions_read() {
        use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};

        let mut marked = SimResourceDefinition::new("pvc-1", 1024)
            .resource(SimResource::diskful("a"))
            .resource(SimResource::diskless("b"));
        marked.props.insert(SKIP_PROPERTY.to_owned(), "yes".to_owned());
        marked
            .props
            .insert("DrbdOptions/Net/protocol".to_owned(), "C".to_owned());
        marked.volume_definitions[0]
            .props
            .insert(SAVED_PV_PROPERTY.to_owned(), "{}".to_owned());
        marked.volume_definitions[0]
            .props
            .insert("DrbdOptions/Disk/al-extents".to_owned(), "6007".to_owned());
        let state = SimState {
            nodes: vec![SimNode::new("a"), SimNode::new("b")],
            resource_definitions: (2..300)
                .map(|i| {
                    SimResourceDefinition::new(format!("pvc-{i}"), 1024).resource(SimResource::diskful("b"))
                })
                .chain([marked])
                .collect(),
            ..SimState::default()
        };
        let sim = Simulator::start(state).await.unwrap();
        let client = sim.http_client().unwrap().unwrap();
        let state = fetch(&client).await.unwrap();
        assert!(state.received_bytes > 0);
        let marked = state.snapshot.resource_definition("pvc-1").unwrap();
        assert_eq!(
            marked.properties,
            Properties::from([(SKIP_PROPERTY.to_owned(), "yes".to_owned())])
        );
        assert_eq!(
            marked.volume_definitions[0].properties,
            Properties::from([(SAVED_PV_PROPERTY.to_owned(), "{}".to_owned())])
        );
        let replicas = state.snapshot.resources("pvc-1");
        assert_eq!(replicas.len(), 2);
        assert!(
            replicas
                .iter()
                .any(|replica| replica.node_name == "b" && !replica.is_healthy_diskful())
        );
        assert!((2..300).all(|i| state.snapshot.resources(&format!("pvc-{i}")).len() == 1));
    }

    #[test]
    fn a_definition_keeps_only_the_properties_decisions_read() {
        // The skip key is written with an escape, as JSON allows; other
        // entries of any type are skipped.
        let json = br#"{"name": "pvc-1",
            "props": {"DrbdOptions/x": "1", "Aux\/affinity-updater-skip": "true", "Odd": {"a": [1]}},
            "volume_definitions": [{"volume_number": 0,
                "props": {"Aux/affinity-updater-saved-pv": "{}", "Aux/affinity-updater-skip": "no"}}]}"#;
        let facts: DefinitionFacts = serde_json::from_slice(json).unwrap();
        let state = definition_state(facts, &mut Vec::new());
        assert_eq!(
            state.properties,
            Properties::from([(SKIP_PROPERTY.to_owned(), "true".to_owned())])
        );
        assert_eq!(
            state.volume_definitions[0].properties,
            Properties::from([(SAVED_PV_PROPERTY.to_owned(), "{}".to_owned())])
        );
        let not_text = serde_json::from_slice::<DefinitionFacts>(
            br#"{"name": "a", "props": {"Aux/affinity-updater-skip": 1}}"#,
        );
        assert!(not_text.is_err(), "a kept property must be text");
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
