//! The decision per volume: for every volume, compare the PV with LINSTOR
//! and with saved replace state, and say what to do.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::SignedDuration;

use crate::affinity::{affinity_matches, desired_node_affinity};
use crate::decision::{
    Action, AffinityBasis, DecisionError, DecisionSettings, InvalidHandle, Plan, ReplaceTrigger, Replacement,
    RetiredPv, SkipReason, VolumeDecision,
};
use crate::fast_hash::FastMap;
use crate::handle::{VolumeId, split_handle};
use crate::model::{Replica, ResourceDefinitionState, saved_pv_json};
use crate::names::{PHASE_FAILED, PHASE_RELEASED, SKIP_PROPERTY};
use crate::policy::{PolicyParseError, RemoteAccessPolicy};
use crate::policy_source::{PolicyError, policy_for_origin, pv_name};
use crate::pv_view::PvView;
use crate::replacement::{SavedIntent, decode_intent, replacement_pv};
use crate::safety::{IntentVerdict, intent_verdict};
use crate::source::{NodeSource, ResourceDefinitionSource, ResourceSource, StorageClassSource};
use crate::storage_class::{StorageClassError, policy_from_parameters};
use crate::topology::{Accessibility, Segments, diskful_nodes, merge_topologies, node_segments};

/// Everything the engine reads of LINSTOR.
pub trait LinstorSource: ResourceDefinitionSource + ResourceSource + NodeSource {}

impl<T: ResourceDefinitionSource + ResourceSource + NodeSource + ?Sized> LinstorSource for T {}

type Cached<T, E> = Result<Arc<T>, E>;

/// Decides, for PVs and LINSTOR state, what must happen to each volume.
///
/// A planner lives for one reconcile: it caches parsed policies (per text
/// and per StorageClass) and node segments, so deciding many volumes costs
/// little more than comparing their affinities. Build a new one when the
/// sources change.
pub struct Planner<'a, L: ?Sized, S: ?Sized> {
    linstor: &'a L,
    storage_classes: &'a S,
    settings: &'a DecisionSettings,
    policy_texts: FastMap<String, Cached<RemoteAccessPolicy, PolicyParseError>>,
    class_policies: FastMap<String, Option<Cached<RemoteAccessPolicy, StorageClassError>>>,
    segments: FastMap<String, Option<Arc<Segments>>>,
    /// Accessible topologies per (policy, node), both identified by the
    /// address of their cached `Arc`, which the caches keep alive.
    node_topologies: FastMap<(usize, usize), Arc<[Segments]>>,
}

impl<'a, L, S> Planner<'a, L, S>
where
    L: LinstorSource + ?Sized,
    S: StorageClassSource + ?Sized,
{
    /// A planner reading these sources.
    pub fn new(linstor: &'a L, storage_classes: &'a S, settings: &'a DecisionSettings) -> Self {
        Self {
            linstor,
            storage_classes,
            settings,
            policy_texts: FastMap::default(),
            class_policies: FastMap::default(),
            segments: FastMap::default(),
            node_topologies: FastMap::default(),
        }
    }

    /// Decides for every LINSTOR CSI PV in `pvs` (others are ignored) and for
    /// every volume with saved replace state whose PV is gone.
    ///
    /// `pvs` are whole PVs ([`PersistentVolume`]) or records of them
    /// ([`crate::PvRecord`]). A record of a PV whose volume has saved
    /// replace state gets [`DecisionError::LivePvNeeded`]: give the whole PV
    /// for those.
    pub fn plan<'p, P, I>(&mut self, pvs: I) -> Plan<P::Replace>
    where
        P: PvView + 'p,
        I: IntoIterator<Item = &'p P>,
    {
        let mut plan = Plan::default();
        let mut volumes: Vec<(SortKey<'_>, u16, &P)> = Vec::new();
        for pv in pvs {
            let Some(handle) = pv.linstor_volume_handle() else {
                continue;
            };
            match split_handle(handle) {
                Ok((definition, number)) => volumes.push((SortKey::new(definition), number, pv)),
                Err(error) => plan.invalid_handles.push(InvalidHandle {
                    pv: pv.name().to_owned(),
                    error,
                }),
            }
        }
        // Stable: of several PVs for one volume, the first seen stays first.
        volumes.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut orphaned: Vec<SortKey<'_>> = self
            .linstor
            .with_saved_state()
            .map(|definition| SortKey::new(&definition.name))
            .filter(|key| volumes.binary_search_by(|(other, _, _)| other.cmp(key)).is_err())
            .collect();
        orphaned.sort_unstable();
        plan.decisions.reserve(volumes.len() + orphaned.len());
        let mut orphaned = orphaned.into_iter().peekable();
        let mut rest = volumes.as_slice();
        while let Some((key, _, _)) = rest.first() {
            while let Some(orphan) = orphaned.next_if(|orphan| orphan < key) {
                self.decide_volumes::<P>(orphan.name, &[], &mut plan.decisions);
            }
            let run = rest.partition_point(|(other, _, _)| other == key);
            let (group, tail) = rest.split_at(run);
            self.decide_volumes(key.name, group, &mut plan.decisions);
            rest = tail;
        }
        for orphan in orphaned {
            self.decide_volumes::<P>(orphan.name, &[], &mut plan.decisions);
        }
        plan
    }

    /// Decides for every volume of one resource definition: those named by
    /// the given PVs (PVs of other drivers, other resource definitions or
    /// with invalid handles are ignored) and those with saved replace state.
    pub fn decide_resource_definition<P: PvView>(
        &mut self,
        resource_definition: &str,
        pvs: &[&P],
    ) -> Vec<VolumeDecision<P::Replace>> {
        let mut volumes: Vec<(SortKey<'_>, u16, &P)> = pvs
            .iter()
            .filter_map(|pv| {
                let (definition, number) = split_handle(pv.linstor_volume_handle()?).ok()?;
                (definition == resource_definition).then_some((SortKey::new(definition), number, *pv))
            })
            .collect();
        volumes.sort_by_key(|(_, number, _)| *number);
        let mut decisions = Vec::new();
        self.decide_volumes(resource_definition, &volumes, &mut decisions);
        decisions
    }

    /// Decides for one volume, with `pvs` in view (those of other volumes
    /// are ignored): first the decision for the PV kept for it (for its
    /// saved state when no PV stands for it), then one per duplicate PV.
    /// Empty when there is nothing to decide: no PV, no saved state.
    pub fn decide_volume_of(&mut self, volume: &VolumeId, pvs: &[&PersistentVolume]) -> Vec<VolumeDecision> {
        let mut decisions = self.decide_resource_definition(&volume.resource_definition, pvs);
        decisions.retain(|decision| decision.volume == *volume);
        decisions
    }

    /// Where the volume of `pv` is accessible from, by the rules [`Self::plan`]
    /// applies (skips aside). `None` when it cannot be computed: `pv` is not a
    /// LINSTOR CSI volume, its policy is invalid, or LINSTOR shows no healthy
    /// diskful replica or a replica on a node it does not list.
    pub fn accessibility<P: PvView>(&mut self, pv: &P) -> Option<Accessibility> {
        let (definition, _) = split_handle(pv.linstor_volume_handle()?).ok()?;
        self.recompute(definition, pv).ok()
    }

    /// `pvs` all belong to resource definition `name`, sorted by volume number.
    fn decide_volumes<P: PvView>(
        &mut self,
        name: &str,
        pvs: &[(SortKey<'_>, u16, &P)],
        out: &mut Vec<VolumeDecision<P::Replace>>,
    ) {
        let definition = self.linstor.resource_definition(name);
        let mut numbers: Vec<u16> = pvs.iter().map(|(_, number, _)| *number).collect();
        if let Some(definition) = definition {
            numbers.extend(
                definition
                    .volume_definitions
                    .iter()
                    .filter(|vd| saved_pv_json(&vd.properties).is_some())
                    .map(|vd| vd.volume_number),
            );
        }
        numbers.sort_unstable();
        numbers.dedup();
        for number in numbers {
            let volume = VolumeId::new(name, number);
            let saved = definition
                .and_then(|definition| definition.volume_properties(number))
                .and_then(saved_pv_json);
            let mut live: Vec<&P> = pvs
                .iter()
                .filter(|(_, n, _)| *n == number)
                .map(|(_, _, pv)| *pv)
                .collect();
            if live.len() > 1 {
                keep_first(
                    &mut live,
                    saved.and_then(|json| decode_intent(json, &volume).ok()).as_ref(),
                );
            }
            let mut live = live.into_iter();
            let first = live.next();
            let duplicates: Vec<VolumeDecision<P::Replace>> = match first {
                None => Vec::new(),
                Some(kept) => live
                    .map(|duplicate| VolumeDecision {
                        volume: volume.clone(),
                        pv_name: duplicate.name().to_owned(),
                        outcome: Ok(Action::Skip(SkipReason::DuplicateVolume {
                            kept: kept.name().to_owned(),
                        })),
                    })
                    .collect(),
            };
            if let Some(decision) = self.decide_volume(volume, definition, first, saved) {
                out.push(decision);
            }
            out.extend(duplicates);
        }
    }

    fn decide_volume<P: PvView>(
        &mut self,
        volume: VolumeId,
        definition: Option<&ResourceDefinitionState>,
        live: Option<&P>,
        saved: Option<&str>,
    ) -> Option<VolumeDecision<P::Replace>> {
        let (pv_name, outcome) = match (live, saved) {
            (None, None) => return None,
            (Some(pv), None) => (pv.name().to_owned(), self.decide_live(&volume, definition, pv)),
            (live, Some(json)) => match decode_intent(json, &volume) {
                Err(error) => (
                    live.map(P::name).unwrap_or_default().to_owned(),
                    Err(DecisionError::from(error)),
                ),
                Ok(intent) => {
                    let name = pv_name(&intent.pv).to_owned();
                    (name, self.decide_with_saved_state(&volume, live, intent))
                }
            },
        };
        Some(VolumeDecision {
            volume,
            pv_name,
            outcome,
        })
    }

    /// A PV without saved state: whether it is considered at all, then its
    /// accessible topology and the comparison of the affinities.
    fn decide_live<P: PvView>(
        &mut self,
        volume: &VolumeId,
        definition: Option<&ResourceDefinitionState>,
        pv: &P,
    ) -> Result<Action<P::Replace>, DecisionError> {
        if let Some(reason) = deliberate_skip(definition, pv) {
            return Ok(Action::Skip(reason));
        }
        let replicas = self.linstor.resources(&volume.resource_definition);
        if let Some(policy) = pv.restore_policy() {
            // Only for volumes this LINSTOR keeps: another controller's PVs
            // may share the cluster.
            if replicas.is_empty() {
                return Ok(Action::Skip(SkipReason::NoResources));
            }
            let policy = policy.to_owned();
            return Ok(match pv.phase() {
                Some(PHASE_RELEASED | PHASE_FAILED) => Action::Skip(SkipReason::ClaimGone { policy }),
                _ => Action::RestoreReclaimPolicy { policy },
            });
        }
        if let Some(reason) = self.state_skip(pv) {
            return Ok(Action::Skip(reason));
        }
        if replicas.is_empty() {
            return Ok(Action::Skip(SkipReason::NoResources));
        }
        let policy = self.policy(pv)?;
        let per_node = match self.node_topologies(&policy, replicas) {
            Ok(per_node) => per_node,
            Err(reason) => return Ok(Action::Skip(reason)),
        };
        let merged = merge_topologies(per_node.iter().map(|topologies| &topologies[..]));
        if affinity_matches(pv.node_affinity(), merged.as_deref().unwrap_or_default()) {
            return Ok(Action::InSync);
        }
        let accessibility = Accessibility::from_merged(merged);
        Ok(Action::Replace(pv.replace_drifted(
            desired_node_affinity(&accessibility),
            AffinityBasis::Recomputed(accessibility),
        )))
    }

    /// Skips for the PV's state: claim gone, reclaim failed, or too young.
    fn state_skip<P: PvView>(&self, pv: &P) -> Option<SkipReason> {
        match pv.phase() {
            Some(PHASE_RELEASED) => return Some(SkipReason::Released),
            Some(PHASE_FAILED) => return Some(SkipReason::Failed),
            _ => {}
        }
        let remaining = self.grace_remaining(pv);
        (!remaining.is_zero()).then_some(SkipReason::GracePeriod { remaining })
    }

    fn grace_remaining<P: PvView>(&self, pv: &P) -> Duration {
        let Some(created) = pv.created() else {
            return Duration::ZERO;
        };
        let age = self.settings.now.duration_since(created);
        let grace = SignedDuration::try_from(self.settings.grace_period).unwrap_or(SignedDuration::MAX);
        Duration::try_from(grace.saturating_sub(age)).unwrap_or(Duration::ZERO)
    }

    /// Saved state present: finish an interrupted replace, recreate a
    /// missing PV, or clear the state of a replace that completed; or, when
    /// the cluster contradicts the intent, nothing.
    fn decide_with_saved_state<P: PvView>(
        &mut self,
        volume: &VolumeId,
        live: Option<&P>,
        intent: SavedIntent,
    ) -> Result<Action<P::Replace>, DecisionError> {
        let (retire, trigger) = match live {
            None => (None, ReplaceTrigger::RecreateFromSavedState),
            Some(view) => {
                let (live_name, saved_name) = (view.name(), pv_name(&intent.pv));
                if live_name != saved_name {
                    return Err(DecisionError::SavedStateConflict {
                        volume: volume.clone(),
                        saved_pv: saved_name.to_owned(),
                        live_pv: live_name.to_owned(),
                    });
                }
                let Some(pv) = view.whole() else {
                    return Err(DecisionError::LivePvNeeded {
                        volume: volume.clone(),
                        pv: live_name.to_owned(),
                    });
                };
                match intent_verdict(&intent, pv) {
                    IntentVerdict::Finished => return Ok(Action::ClearSavedState),
                    IntentVerdict::Contradicted(reason) => {
                        return Err(DecisionError::IntentContradicted {
                            volume: volume.clone(),
                            pv: live_name.to_owned(),
                            reason,
                        });
                    }
                    IntentVerdict::Resume => (Some(retired(pv)), ReplaceTrigger::ResumeInterrupted),
                }
            }
        };
        let saved = intent.pv;
        let (node_affinity, affinity) = match self.recompute(&volume.resource_definition, &saved) {
            Ok(accessibility) => (
                desired_node_affinity(&accessibility),
                AffinityBasis::Recomputed(accessibility),
            ),
            Err(reason) => (
                saved.spec.as_ref().and_then(|spec| spec.node_affinity.clone()),
                AffinityBasis::KeptFromSavedState { reason },
            ),
        };
        Ok(Action::Replace(P::Replace::from(Box::new(Replacement {
            pv: replacement_pv(&saved, node_affinity),
            retire,
            trigger,
            affinity,
        }))))
    }

    /// The accessibility of `pv`'s volume in resource definition
    /// `definition`, or why current state gives none.
    fn recompute<P: PvView>(&mut self, definition: &str, pv: &P) -> Result<Accessibility, String> {
        let replicas = self.linstor.resources(definition);
        if replicas.is_empty() {
            return Err(SkipReason::NoResources.to_string());
        }
        let policy = self.policy(pv).map_err(|error| error.to_string())?;
        let per_node = self
            .node_topologies(&policy, replicas)
            .map_err(|reason| reason.to_string())?;
        Ok(Accessibility::from_merged(merge_topologies(
            per_node.iter().map(|topologies| &topologies[..]),
        )))
    }

    /// The accessible topologies of each diskful node under `policy`.
    fn node_topologies(
        &mut self,
        policy: &Arc<RemoteAccessPolicy>,
        replicas: &[Replica],
    ) -> Result<Vec<Arc<[Segments]>>, SkipReason> {
        let nodes = diskful_nodes(replicas);
        if nodes.is_empty() {
            return Err(SkipReason::NoHealthyDiskfulReplica);
        }
        nodes
            .into_iter()
            .map(|node| {
                let segments = self.node_segments(node).ok_or_else(|| SkipReason::UnknownNode {
                    node: node.to_owned(),
                })?;
                let key = (Arc::as_ptr(policy) as usize, Arc::as_ptr(&segments) as usize);
                Ok(self
                    .node_topologies
                    .entry(key)
                    .or_insert_with(|| policy.accessible_segments(&segments).into())
                    .clone())
            })
            .collect()
    }

    fn node_segments(&mut self, node: &str) -> Option<Arc<Segments>> {
        if let Some(cached) = self.segments.get(node) {
            return cached.clone();
        }
        let segments = self
            .linstor
            .node_properties(node)
            .map(|props| Arc::new(node_segments(node, props, &self.settings.property_namespace)));
        self.segments.insert(node.to_owned(), segments.clone());
        segments
    }

    fn policy<P: PvView>(&mut self, pv: &P) -> Result<Arc<RemoteAccessPolicy>, PolicyError> {
        let origin = pv.policy_origin();
        let (texts, classes, storage_classes) = (
            &mut self.policy_texts,
            &mut self.class_policies,
            self.storage_classes,
        );
        policy_for_origin(
            pv.name(),
            &origin,
            |text| cached(texts, text, || text.parse().map(Arc::new)),
            |name| {
                cached(classes, name, || {
                    storage_classes
                        .storage_class_parameters(name)
                        .map(|params| policy_from_parameters(params).map(Arc::new))
                })
            },
        )
    }
}

/// Looks `key` up, computing and storing the value on a miss only, so hits
/// allocate nothing.
fn cached<V: Clone>(cache: &mut FastMap<String, V>, key: &str, compute: impl FnOnce() -> V) -> V {
    if let Some(value) = cache.get(key) {
        return value.clone();
    }
    let value = compute();
    cache.insert(key.to_owned(), value.clone());
    value
}

/// A resource definition name ordered as the name, with its first 16 bytes
/// kept inline so that most comparisons while sorting many volumes need not
/// follow the pointer into the PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey<'a> {
    /// The first 16 bytes, big-endian, zero-padded: ordering by it and then
    /// by the whole name is ordering by the name.
    prefix: u128,
    name: &'a str,
}

impl<'a> SortKey<'a> {
    fn new(name: &'a str) -> Self {
        let mut bytes = [0u8; 16];
        let len = name.len().min(16);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            prefix: u128::from_be_bytes(bytes),
            name,
        }
    }
}

fn retired(pv: &PersistentVolume) -> RetiredPv {
    RetiredPv {
        name: pv_name(pv).to_owned(),
        uid: pv.metadata.uid.clone(),
        resource_version: pv.metadata.resource_version.clone(),
    }
}

/// Skips its owner asked for (annotation on the PV, property on the
/// resource definition) or that a deletion under way imposes.
fn deliberate_skip<P: PvView>(definition: Option<&ResourceDefinitionState>, pv: &P) -> Option<SkipReason> {
    if pv.skip_annotated() {
        return Some(SkipReason::SkipAnnotation);
    }
    let skip_property = definition
        .and_then(|definition| definition.properties.get(SKIP_PROPERTY))
        .is_some_and(|value| !value.is_empty());
    if skip_property {
        return Some(SkipReason::SkipProperty);
    }
    pv.being_deleted().then_some(SkipReason::BeingDeleted)
}

/// Orders the PVs standing for one volume so that the one to keep comes
/// first, the same whatever order they were listed in: the PV an intent
/// retires, then the PV an intent names, then the oldest, then by name.
fn keep_first<P: PvView>(pvs: &mut [&P], intent: Option<&SavedIntent>) {
    let retired_uid = intent
        .and_then(|intent| intent.retires.as_ref())
        .and_then(|retires| retires.uid.as_deref());
    let saved_name = intent.map(|intent| pv_name(&intent.pv));
    pvs.sort_by_key(|pv| {
        let created = pv.created();
        (
            retired_uid.is_none() || pv.uid() != retired_uid,
            saved_name != Some(pv.name()),
            created.is_none(),
            created,
            pv.name(),
        )
    });
}
