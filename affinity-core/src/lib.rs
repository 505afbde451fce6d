//! Pure decision engine keeping Kubernetes PersistentVolume node affinity in
//! sync with where LINSTOR keeps each volume's data.
//!
//! A PV's `spec.nodeAffinity` cannot change once set, but LINSTOR moves
//! replicas (node evacuation, ephemeral nodes, manual migration). This crate
//! computes the affinity a PV should have from LINSTOR state and decides, per
//! volume, what must happen: nothing, skip (and why), replace with a complete
//! replacement PV, or clear saved state of a finished replace.
//!
//! It does no I/O and needs no async runtime. State comes in through small
//! traits ([`ResourceDefinitionSource`], [`ResourceSource`], [`NodeSource`],
//! [`StorageClassSource`]) with in-memory implementations
//! ([`LinstorSnapshot`], maps of StorageClass parameters), so callers can feed
//! it from their own caches; decisions come out as plain values
//! ([`VolumeDecision`], [`Action`]) for the caller to carry out.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::{Duration, SystemTime};
//! use affinity_core::{DecisionSettings, LinstorSnapshot, Planner, Replica, ResourceDefinitionState};
//! # use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolume, PersistentVolumeSpec};
//! # use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
//!
//! let mut linstor = LinstorSnapshot::new();
//! linstor.insert_node("node-b", BTreeMap::new());
//! linstor.insert_resource_definition(ResourceDefinitionState { name: "pvc-1".into(), ..Default::default() });
//! linstor.push_replica(Replica::new("pvc-1", "node-b", Vec::<String>::new()));
//!
//! let storage_classes = BTreeMap::from([(
//!     "local".to_string(),
//!     BTreeMap::from([("allowRemoteVolumeAccess".to_string(), "false".to_string())]),
//! )]);
//! let pv = PersistentVolume {
//!     metadata: ObjectMeta { name: Some("pvc-1".into()), ..Default::default() },
//!     spec: Some(PersistentVolumeSpec {
//!         storage_class_name: Some("local".into()),
//!         csi: Some(CSIPersistentVolumeSource {
//!             driver: "linstor.csi.linbit.com".into(),
//!             volume_handle: "pvc-1".into(),
//!             ..Default::default()
//!         }),
//!         ..Default::default()
//!     }),
//!     status: None,
//! };
//!
//! let settings = DecisionSettings::at("Aux/topology", Duration::from_secs(60), SystemTime::now());
//! let plan = Planner::new(&linstor, &storage_classes, &settings).plan([&pv]);
//! // The PV has no affinity yet but its data lives on node-b only.
//! assert_eq!(plan.summary().replace, 1);
//! ```

#![warn(missing_docs)]

mod affinity;
mod decision;
pub mod drain;
mod fast_hash;
mod handle;
mod model;
pub mod names;
mod namespace;
mod planner;
mod policy;
mod policy_source;
mod pv_view;
mod replacement;
mod safety;
mod source;
mod storage_class;
mod topology;

#[cfg(test)]
mod test_util;

pub use affinity::{affinity_matches, desired_node_affinity, term_matches};
pub use decision::{
    Action, AffinityBasis, DecisionError, DecisionSettings, InvalidHandle, Plan, PlanSummary, ReplaceTrigger,
    Replacement, RetiredPv, SkipReason, VolumeDecision, decision_time,
};
pub use handle::{HandleError, VolumeId, linstor_volume_of};
pub use model::{
    NOT_DISKFUL_FLAGS, Properties, Replica, ResourceDefinitionState, VolumeDefinitionState, saved_pv_json,
};
pub use namespace::guess_property_namespace;
pub use planner::{LinstorSource, Planner};
pub use policy::{PolicyParseError, RemoteAccessPolicy, RemoteAccessRule, prune};
pub use policy_source::{PolicyError, PolicyOrigin, resolve_policy};
pub use pv_view::{PvRecord, PvView, RecordInterner, ReplaceNeeded};
pub use replacement::{
    SavedIntent, SavedStateError, SavedStateLocation, decode_intent, decode_saved_pv,
    decode_saved_pv_on_resource_definition, encode_intent, encode_saved_pv, held_at_retain, replacement_pv,
};
pub use safety::{
    BoundMark, ClaimProblem, IntentVerdict, RestoreStep, bound_mark, claim_of, claim_owns,
    difference_outside_protocol, intent_verdict, is_earlier_creation, may_recreate, may_recreate_unread,
    needs_another_nudge, reclaim_policy_of, restore_policy_of, restore_step, restore_step_by_binder,
};
pub use source::{LinstorSnapshot, NodeSource, ResourceDefinitionSource, ResourceSource, StorageClassSource};
pub use storage_class::{
    DEFAULT_LAYER_LIST, LAYER_KINDS, StorageClassError, class_parameters, parse_layer_list,
    policy_from_parameters,
};
pub use topology::{Accessibility, Segments, diskful_nodes, node_segments};

/// Re-export of the Kubernetes API types the engine speaks in.
pub use k8s_openapi;
