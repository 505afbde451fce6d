//! Turning LINSTOR and Kubernetes objects into the decision engine's model.

use std::collections::BTreeMap;

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::{LinstorSnapshot, Properties, class_parameters};
use affinity_kube::linstor_state::{self, LinstorState};

use crate::dump::Dump;

/// The engine's view of LINSTOR state and StorageClasses, from a dump or from the live cluster.
#[derive(Debug, Default)]
pub struct CoreState {
    /// Resource definitions, replicas and node properties.
    pub linstor: LinstorSnapshot,
    /// StorageClass parameters by StorageClass name.
    pub storage_classes: BTreeMap<String, Properties>,
    /// Parts of the input left out, with the reason.
    pub warnings: Vec<String>,
}

impl CoreState {
    /// Combines converted LINSTOR state with the parameters of `storage_classes`.
    pub fn new(linstor: LinstorState, storage_classes: &[StorageClass]) -> Self {
        let mut state = CoreState {
            linstor: linstor.snapshot,
            storage_classes: BTreeMap::new(),
            warnings: linstor.warnings,
        };
        for class in storage_classes {
            let Some((name, parameters)) = class_parameters(class) else {
                state
                    .warnings
                    .push("a StorageClass without a name was ignored".to_owned());
                continue;
            };
            state.storage_classes.insert(name, parameters);
        }
        state
    }
}

/// Converts a dump. Volume definitions of `volume-definitions.json` replace
/// those of the same number in `resource-definitions.json`.
pub fn core_state(dump: &Dump) -> CoreState {
    let linstor = linstor_state::convert(
        &dump.nodes,
        &dump.resources,
        &dump.resource_definitions,
        dump.volume_definitions.as_deref(),
    );
    CoreState::new(linstor, &dump.storage_classes)
}

/// Everything a decision is made from: the PVs and the engine's view of the rest.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// The PVs (of every driver; the engine picks the LINSTOR CSI ones).
    pub pvs: Vec<PersistentVolume>,
    /// LINSTOR state and StorageClass parameters.
    pub core: CoreState,
}
