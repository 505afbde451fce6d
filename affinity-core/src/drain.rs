//! Node drain: what to do with a LINSTOR node while its Kubernetes node is
//! cordoned, tainted `piraeus.io/evacuate` or deleted, and how to undo
//! exactly what was done.
//!
//! Moving data is LINSTOR's job (evacuation); this module only decides which
//! LINSTOR calls to make. Every change it asks for is described in a
//! [`DrainRecord`] kept on the LINSTOR node itself
//! ([`DRAIN_RECORD_PROPERTY`]), written before the change, so that undo (and
//! a restarted controller) restores what this project changed and nothing an
//! administrator set.
//!
//! [`plan_drains`] decides for every LINSTOR node at once, because
//! evacuations share a limit and must not target each other;
//! [`DrainRecord::state`] says where one node's drain stands, from the
//! record and LINSTOR alone (what `drain-status` shows).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::Properties;
use crate::names::{AUTOPLACE_TARGET_PROPERTY, DRAIN_RECORD_PROPERTY};

/// Times another actor may restore a node this project evacuates, with
/// replicas still on it, before the drain stops as blocked (the Piraeus
/// Operator restores the nodes of running satellites about once a minute).
pub const DEFAULT_MAX_RESTORES: u32 = 3;

/// What a cordon (`spec.unschedulable`) does to the node's LINSTOR node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DrainPolicy {
    /// Nothing.
    #[default]
    Ignore,
    /// No new replicas: `AutoplaceTarget=false`; existing replicas stay.
    NoSchedule,
    /// LINSTOR evacuates the node.
    Evacuate,
}

/// What the deletion of a Kubernetes node does to its LINSTOR node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeletePolicy {
    /// Leave the LINSTOR node as it is.
    #[default]
    Orphan,
    /// LINSTOR evacuates the node.
    Evacuate,
}

/// A policy name that is none of the known ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of {expected}")]
pub struct PolicyNameError {
    /// Which policy ("node drain policy", "node delete policy").
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The known names, comma-separated.
    pub expected: &'static str,
}

impl FromStr for DrainPolicy {
    type Err = PolicyNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Ignore" => Ok(Self::Ignore),
            "NoSchedule" => Ok(Self::NoSchedule),
            "Evacuate" => Ok(Self::Evacuate),
            _ => Err(PolicyNameError {
                what: "node drain policy",
                given: s.to_owned(),
                expected: "Ignore, NoSchedule, Evacuate",
            }),
        }
    }
}

impl fmt::Display for DrainPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ignore => "Ignore",
            Self::NoSchedule => "NoSchedule",
            Self::Evacuate => "Evacuate",
        })
    }
}

impl FromStr for DeletePolicy {
    type Err = PolicyNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Orphan" => Ok(Self::Orphan),
            "Evacuate" => Ok(Self::Evacuate),
            _ => Err(PolicyNameError {
                what: "node delete policy",
                given: s.to_owned(),
                expected: "Orphan, Evacuate",
            }),
        }
    }
}

impl fmt::Display for DeletePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Orphan => "Orphan",
            Self::Evacuate => "Evacuate",
        })
    }
}

/// Why a node is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainCause {
    /// The Kubernetes node is cordoned (the drain policy applies).
    Cordon,
    /// The Kubernetes node carries the taint `piraeus.io/evacuate`.
    Taint,
    /// The Kubernetes node was deleted (the delete policy applies).
    Deleted,
}

impl fmt::Display for DrainCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cordon => "cordon",
            Self::Taint => "taint",
            Self::Deleted => "deleted",
        })
    }
}

/// How a node is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DrainMode {
    /// No new replicas; existing ones stay.
    NoSchedule,
    /// LINSTOR moves the replicas elsewhere.
    Evacuate,
}

impl fmt::Display for DrainMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSchedule => "NoSchedule",
            Self::Evacuate => "Evacuate",
        })
    }
}

/// Settings of the drain decisions (the controller's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainSettings {
    /// What a cordon does (`--node-drain-policy`).
    pub drain_policy: DrainPolicy,
    /// What a node deletion does (`--node-delete-policy`).
    pub delete_policy: DeletePolicy,
    /// Evacuations running at once (`--max-concurrent-evacuations`, at least 1).
    pub max_concurrent_evacuations: usize,
    /// Restores by another actor tolerated per drain ([`DEFAULT_MAX_RESTORES`]).
    pub max_restores: u32,
    /// Whether evacuations LINSTOR refused are asked for again in this round
    /// (the caller paces the retries).
    pub retry_refused: bool,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            drain_policy: DrainPolicy::Ignore,
            delete_policy: DeletePolicy::Orphan,
            max_concurrent_evacuations: 1,
            max_restores: DEFAULT_MAX_RESTORES,
            retry_refused: true,
        }
    }
}

/// What the engine needs of a Kubernetes node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeNodeView {
    /// The node's name.
    pub name: String,
    /// Its `kubernetes.io/hostname` label, when set.
    pub hostname: Option<String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Whether it carries the taint `piraeus.io/evacuate` (any effect).
    pub evacuate_taint: bool,
    /// Whether the node object was deleted (or is being deleted).
    pub deleted: bool,
}

/// What the engine needs of a LINSTOR node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinstorNodeView {
    /// The node's name.
    pub name: String,
    /// Its properties (the drain record and `AutoplaceTarget` among them).
    pub properties: Properties,
    /// Whether LINSTOR flags it `EVACUATE`.
    pub evacuating: bool,
    /// Resources (replicas of any kind) still on the node.
    pub replicas: usize,
}

impl LinstorNodeView {
    /// Whether this LINSTOR node belongs to `kube`: through the property
    /// `hostname_property` (`<namespace>/kubernetes.io/hostname`) when the
    /// node has it, else by name.
    pub fn belongs_to(&self, kube: &KubeNodeView, hostname_property: &str) -> bool {
        match self.properties.get(hostname_property) {
            Some(hostname) => *hostname == kube.name || kube.hostname.as_deref() == Some(hostname.as_str()),
            None => self.name == kube.name,
        }
    }

    /// The drain record on the node, if any.
    pub fn record(&self) -> Option<Result<DrainRecord, DrainRecordError>> {
        self.properties
            .get(DRAIN_RECORD_PROPERTY)
            .map(|json| DrainRecord::decode(&self.name, json))
    }
}

/// What this project changed on a LINSTOR node to drain it, and why: the
/// value of [`DRAIN_RECORD_PROPERTY`] (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainRecord {
    /// The Kubernetes node drained.
    pub kubernetes_node: String,
    /// Why.
    pub cause: DrainCause,
    /// How.
    pub mode: DrainMode,
    /// When the drain began (RFC 3339).
    pub since: String,
    /// Whether this project set `AutoplaceTarget=false` (undo removes it).
    #[serde(default)]
    pub set_autoplace_target: bool,
    /// Whether this project asked LINSTOR to evacuate the node (undo
    /// restores it).
    #[serde(default)]
    pub evacuated: bool,
    /// How many times the node was restored by another actor while replicas
    /// were left on it.
    #[serde(default)]
    pub restored_by_others: u32,
    /// Why the drain cannot go on: LINSTOR's refusal, or too many restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// A drain record that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("LINSTOR node {node}: property {property} is not a drain record: {reason}")]
pub struct DrainRecordError {
    /// The LINSTOR node.
    pub node: String,
    /// The property.
    pub property: &'static str,
    /// The decoder's message.
    pub reason: String,
}

impl DrainRecord {
    /// Decodes the record of LINSTOR node `node`.
    pub fn decode(node: &str, json: &str) -> Result<Self, DrainRecordError> {
        serde_json::from_str(json).map_err(|error| DrainRecordError {
            node: node.to_owned(),
            property: DRAIN_RECORD_PROPERTY,
            reason: error.to_string(),
        })
    }

    /// The record as the property value.
    pub fn encode(&self) -> String {
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record after LINSTOR refused the evacuation with `answer`.
    pub fn refused(&self, answer: &str) -> Self {
        Self {
            evacuated: false,
            blocked: Some(format!("LINSTOR refused the evacuation: {answer}")),
            ..self.clone()
        }
    }

    /// Where the drain of `node` (which carries this record) stands.
    pub fn state(&self, node: &LinstorNodeView) -> DrainState {
        if let Some(reason) = &self.blocked {
            return DrainState::Blocked(reason.clone());
        }
        match self.mode {
            DrainMode::NoSchedule => DrainState::NoSchedule,
            DrainMode::Evacuate if node.replicas == 0 && (self.evacuated || node.evacuating) => {
                DrainState::Completed
            }
            DrainMode::Evacuate if self.evacuated || node.evacuating => DrainState::Evacuating,
            DrainMode::Evacuate => DrainState::Queued,
        }
    }
}

/// Where one node's drain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainState {
    /// No new replicas are placed there; existing ones stay.
    NoSchedule,
    /// Waiting for a free evacuation slot.
    Queued,
    /// LINSTOR is moving replicas off the node.
    Evacuating,
    /// No replica is left on the node.
    Completed,
    /// The drain cannot go on, for this reason.
    Blocked(String),
}

impl fmt::Display for DrainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSchedule => "NoSchedule",
            Self::Queued => "Queued",
            Self::Evacuating => "Evacuating",
            Self::Completed => "Completed",
            Self::Blocked(_) => "Blocked",
        })
    }
}

/// One LINSTOR call of a drain step, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainWrite {
    /// Set and delete node properties (one node modification).
    Properties {
        /// Properties to set.
        set: Properties,
        /// Properties to delete.
        delete: Vec<String>,
    },
    /// Ask LINSTOR to evacuate the node, placing nothing on these nodes.
    /// On refusal the caller stores [`DrainRecord::refused`] of the step's
    /// record.
    Evacuate {
        /// The other nodes being drained.
        do_not_target: Vec<String>,
    },
    /// Clear the node's `EVACUATE` state.
    Restore,
}

/// What happens to one LINSTOR node in this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDrainStep {
    /// The LINSTOR node.
    pub linstor_node: String,
    /// The Kubernetes node it belongs to, when known.
    pub kubernetes_node: Option<String>,
    /// The calls to make, in order (empty: nothing to change).
    pub writes: Vec<DrainWrite>,
    /// The record once the calls are made (`None`: no drain any more).
    pub record: Option<DrainRecord>,
    /// What the step means, for events.
    pub change: DrainChange,
}

/// What a step means, for events and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainChange {
    /// Nothing changes.
    None,
    /// A drain begins: no new replicas (`NoSchedule`).
    BeganNoSchedule,
    /// An evacuation begins.
    EvacuationStarted,
    /// The evacuation waits for a slot: this many are running.
    Queued {
        /// Evacuations running.
        running: usize,
        /// The limit.
        max: usize,
    },
    /// Another actor restored the node with replicas left; evacuating again.
    RestoredByOther {
        /// Restores seen so far.
        restores: u32,
        /// Restores tolerated.
        max: u32,
    },
    /// Another actor restored the node too often: the drain stops.
    GaveUp,
    /// A refused evacuation is asked for again.
    Retried,
    /// The drain request changed (policy, cause); the record follows.
    Changed,
    /// The drain is undone.
    Undone,
}

/// The drain request of a Kubernetes node, if any.
pub fn requested_drain(node: &KubeNodeView, settings: &DrainSettings) -> Option<(DrainCause, DrainMode)> {
    if node.deleted {
        return (settings.delete_policy == DeletePolicy::Evacuate)
            .then_some((DrainCause::Deleted, DrainMode::Evacuate));
    }
    if node.evacuate_taint {
        return Some((DrainCause::Taint, DrainMode::Evacuate));
    }
    if !node.unschedulable {
        return None;
    }
    match settings.drain_policy {
        DrainPolicy::Ignore => None,
        DrainPolicy::NoSchedule => Some((DrainCause::Cordon, DrainMode::NoSchedule)),
        DrainPolicy::Evacuate => Some((DrainCause::Cordon, DrainMode::Evacuate)),
    }
}

/// What a LINSTOR node is asked for in this round.
enum Request {
    /// Drain, for this cause, this way.
    Drain(DrainCause, DrainMode),
    /// Leave the node as it is (its Kubernetes node is unknown, or deleted
    /// under `Orphan`).
    Keep,
    /// No drain: undo any.
    Undo,
}

/// Decides, for every LINSTOR node, what to write this round.
///
/// `kube` are the Kubernetes nodes known (deleted ones with
/// [`KubeNodeView::deleted`]); a LINSTOR node whose Kubernetes node is not
/// known is left as it is, so a drain survives a restart and LINSTOR nodes
/// outside Kubernetes are never touched. `now` (RFC 3339) dates new
/// records. Nodes whose record cannot be read are left alone (reported in
/// the second list).
pub fn plan_drains(
    kube: &[KubeNodeView],
    linstor: &[LinstorNodeView],
    hostname_property: &str,
    settings: &DrainSettings,
    now: &str,
) -> (Vec<NodeDrainStep>, Vec<DrainRecordError>) {
    let mut unreadable = Vec::new();
    let mut nodes: Vec<(
        &LinstorNodeView,
        Option<&KubeNodeView>,
        Option<DrainRecord>,
        Request,
    )> = Vec::new();
    for node in linstor {
        let record = match node.record() {
            None => None,
            Some(Ok(record)) => Some(record),
            Some(Err(error)) => {
                unreadable.push(error);
                continue;
            }
        };
        let owner = kube.iter().find(|k| node.belongs_to(k, hostname_property));
        let request = match owner {
            None => Request::Keep,
            Some(k) => match requested_drain(k, settings) {
                Some((cause, mode)) => Request::Drain(cause, mode),
                None if k.deleted => Request::Keep,
                None => Request::Undo,
            },
        };
        nodes.push((node, owner, record, request));
    }

    // Nodes that are leaving: no evacuation may place replicas there.
    let leaving: BTreeSet<&str> = nodes
        .iter()
        .filter(|(node, _, record, request)| {
            matches!(request, Request::Drain(..))
                || (matches!(request, Request::Keep) && record.is_some())
                || node.evacuating
        })
        .map(|(node, ..)| node.name.as_str())
        .collect();
    let mut running = nodes
        .iter()
        .filter(|(node, _, record, _)| {
            record
                .as_ref()
                .is_some_and(|r| r.state(node) == DrainState::Evacuating)
        })
        .count();
    let max = settings.max_concurrent_evacuations.max(1);

    // Queued nodes start in the order they began draining.
    nodes.sort_by(|a, b| {
        let since = |r: &Option<DrainRecord>| r.as_ref().map(|r| r.since.clone());
        (since(&a.2).is_none(), since(&a.2), &a.0.name).cmp(&(since(&b.2).is_none(), since(&b.2), &b.0.name))
    });

    let mut steps = Vec::new();
    for (node, owner, record, request) in nodes {
        let do_not_target: Vec<String> = leaving
            .iter()
            .filter(|name| **name != node.name)
            .map(|name| (*name).to_owned())
            .collect();
        let kubernetes_node = owner.map(|k| k.name.clone());
        let step = match request {
            Request::Undo => undo(node, record),
            Request::Keep => keep(node, record, settings, &do_not_target),
            Request::Drain(cause, mode) => {
                let kube_name = kubernetes_node.clone().unwrap_or_else(|| node.name.clone());
                drain(
                    node,
                    record,
                    Target {
                        cause,
                        mode,
                        kube_name,
                    },
                    settings,
                    now,
                    &do_not_target,
                    (&mut running, max),
                )
            }
        };
        steps.push(NodeDrainStep {
            linstor_node: node.name.clone(),
            kubernetes_node,
            writes: step.0,
            record: step.1,
            change: step.2,
        });
    }
    steps.sort_by(|a, b| a.linstor_node.cmp(&b.linstor_node));
    (steps, unreadable)
}

type Step = (Vec<DrainWrite>, Option<DrainRecord>, DrainChange);

struct Target {
    cause: DrainCause,
    mode: DrainMode,
    kube_name: String,
}

fn write_record(record: &DrainRecord, extra: Option<(&str, &str)>) -> DrainWrite {
    let mut set = Properties::from([(DRAIN_RECORD_PROPERTY.to_owned(), record.encode())]);
    if let Some((key, value)) = extra {
        set.insert(key.to_owned(), value.to_owned());
    }
    DrainWrite::Properties {
        set,
        delete: Vec::new(),
    }
}

fn unchanged(record: Option<DrainRecord>) -> Step {
    (Vec::new(), record, DrainChange::None)
}

fn undo(node: &LinstorNodeView, record: Option<DrainRecord>) -> Step {
    let Some(record) = record else {
        return unchanged(None);
    };
    let mut writes = Vec::new();
    if record.evacuated && node.evacuating {
        writes.push(DrainWrite::Restore);
    }
    let mut delete = vec![DRAIN_RECORD_PROPERTY.to_owned()];
    if record.set_autoplace_target {
        delete.push(AUTOPLACE_TARGET_PROPERTY.to_owned());
    }
    writes.push(DrainWrite::Properties {
        set: Properties::new(),
        delete,
    });
    (writes, None, DrainChange::Undone)
}

/// A node whose Kubernetes node is unknown keeps its drain going as
/// recorded (re-evacuating after a restore) but starts nothing new.
fn keep(
    node: &LinstorNodeView,
    record: Option<DrainRecord>,
    settings: &DrainSettings,
    do_not_target: &[String],
) -> Step {
    match record {
        Some(record) if record.evacuated && record.blocked.is_none() => {
            continue_evacuation(node, record, settings, do_not_target)
        }
        other => unchanged(other),
    }
}

fn drain(
    node: &LinstorNodeView,
    record: Option<DrainRecord>,
    target: Target,
    settings: &DrainSettings,
    now: &str,
    do_not_target: &[String],
    (running, max): (&mut usize, usize),
) -> Step {
    let Some(mut record) = record else {
        // A new drain: the record first, with AutoplaceTarget=false unless
        // an administrator set AutoplaceTarget already.
        let set_autoplace_target = !node.properties.contains_key(AUTOPLACE_TARGET_PROPERTY);
        let record = DrainRecord {
            kubernetes_node: target.kube_name,
            cause: target.cause,
            mode: target.mode,
            since: now.to_owned(),
            set_autoplace_target,
            evacuated: false,
            restored_by_others: 0,
            blocked: None,
        };
        let autoplace = set_autoplace_target.then_some((AUTOPLACE_TARGET_PROPERTY, "false"));
        if target.mode == DrainMode::NoSchedule || node.evacuating {
            return (
                vec![write_record(&record, autoplace)],
                Some(record),
                if target.mode == DrainMode::NoSchedule {
                    DrainChange::BeganNoSchedule
                } else {
                    DrainChange::EvacuationStarted
                },
            );
        }
        if *running >= max {
            return (
                vec![write_record(&record, autoplace)],
                Some(record),
                DrainChange::Queued {
                    running: *running,
                    max,
                },
            );
        }
        *running += 1;
        let record = DrainRecord {
            evacuated: true,
            ..record
        };
        return (
            vec![
                write_record(&record, autoplace),
                DrainWrite::Evacuate {
                    do_not_target: do_not_target.to_vec(),
                },
            ],
            Some(record),
            DrainChange::EvacuationStarted,
        );
    };

    let mut writes = Vec::new();
    let mut change = DrainChange::None;
    if record.cause != target.cause || record.mode != target.mode {
        change = DrainChange::Changed;
        if target.mode == DrainMode::NoSchedule && record.evacuated {
            // Evacuation is no longer asked for: undo it, keep NoSchedule.
            if node.evacuating {
                writes.push(DrainWrite::Restore);
            }
            record.evacuated = false;
        }
        if target.mode == DrainMode::Evacuate && record.mode == DrainMode::NoSchedule {
            record.blocked = None;
        }
        record.cause = target.cause;
        record.mode = target.mode;
        if target.mode == DrainMode::NoSchedule {
            record.blocked = None;
            record.restored_by_others = 0;
        }
        writes.push(write_record(&record, None));
    }
    if record.mode == DrainMode::NoSchedule {
        return (writes, Some(record), change);
    }
    if record.evacuated {
        if record.blocked.is_some() {
            return (writes, Some(record), change);
        }
        let (more, record, continued) = continue_evacuation(node, record, settings, do_not_target);
        writes.extend(more);
        let change = if continued == DrainChange::None {
            change
        } else {
            continued
        };
        return (writes, record, change);
    }
    if node.evacuating {
        // Someone else evacuates the node; nothing to ask for.
        return (writes, Some(record), change);
    }
    let refused = record.blocked.is_some();
    if refused && !settings.retry_refused {
        return (writes, Some(record), change);
    }
    if *running >= max {
        // Still waiting: the queued event was reported when the record was made.
        return (writes, Some(record), change);
    }
    *running += 1;
    record.evacuated = true;
    record.blocked = None;
    writes.retain(|write| !matches!(write, DrainWrite::Properties { .. }));
    writes.push(write_record(&record, None));
    writes.push(DrainWrite::Evacuate {
        do_not_target: do_not_target.to_vec(),
    });
    (
        writes,
        Some(record),
        if refused {
            DrainChange::Retried
        } else {
            DrainChange::EvacuationStarted
        },
    )
}

/// An evacuation this project asked for: if another actor restored the
/// node with replicas left, evacuate again, at most `max_restores` times.
fn continue_evacuation(
    node: &LinstorNodeView,
    mut record: DrainRecord,
    settings: &DrainSettings,
    do_not_target: &[String],
) -> Step {
    if node.evacuating || node.replicas == 0 {
        return unchanged(Some(record));
    }
    record.restored_by_others += 1;
    if record.restored_by_others > settings.max_restores {
        record.blocked = Some(format!(
            "LINSTOR node {} was restored by another actor {} times while replicas were left on it \
             (the Piraeus Operator restores the LINSTOR nodes of running satellites); the drain stopped",
            node.name, record.restored_by_others
        ));
        return (
            vec![write_record(&record, None)],
            Some(record),
            DrainChange::GaveUp,
        );
    }
    let change = DrainChange::RestoredByOther {
        restores: record.restored_by_others,
        max: settings.max_restores,
    };
    (
        vec![
            write_record(&record, None),
            DrainWrite::Evacuate {
                do_not_target: do_not_target.to_vec(),
            },
        ],
        Some(record),
        change,
    )
}

/// Where one node's drain stands, as `drain-status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDrainStatus {
    /// The Kubernetes node (from the record, else the node asking).
    pub node: String,
    /// The LINSTOR node, when one belongs to it.
    pub linstor_node: Option<String>,
    /// What asks for the drain: `cordon`, `taint` or `deleted`, with the
    /// mode (`cordon/Evacuate`); a bare request when there is no record.
    pub request: String,
    /// `NoSchedule`, `Queued`, `Evacuating`, `Completed`, `Blocked`, or
    /// `NotHandled` (the node asks, but no drain record exists: the
    /// controller's policy ignores it, or it has not acted yet).
    pub state: String,
    /// Resources left on the LINSTOR node.
    pub replicas_left: Option<usize>,
    /// When the drain began (RFC 3339).
    pub since: Option<String>,
    /// Why it cannot go on.
    pub blocked_reason: Option<String>,
}

impl NodeDrainStatus {
    /// Whether the drain is blocked.
    pub fn is_blocked(&self) -> bool {
        self.blocked_reason.is_some()
    }
}

/// The drain status of every node with a drain record, and of every
/// Kubernetes node cordoned or tainted `piraeus.io/evacuate` without one,
/// ordered by Kubernetes node. Reads records and LINSTOR state only, so it
/// needs no policy.
pub fn drain_status(
    kube: &[KubeNodeView],
    linstor: &[LinstorNodeView],
    hostname_property: &str,
) -> Vec<NodeDrainStatus> {
    let mut rows = Vec::new();
    let mut covered = BTreeSet::new();
    for node in linstor {
        let owner = kube.iter().find(|k| node.belongs_to(k, hostname_property));
        let row = match node.record() {
            None => continue,
            Some(Err(error)) => NodeDrainStatus {
                node: owner.map_or_else(|| node.name.clone(), |k| k.name.clone()),
                linstor_node: Some(node.name.clone()),
                request: "unknown".to_owned(),
                state: "Blocked".to_owned(),
                replicas_left: Some(node.replicas),
                since: None,
                blocked_reason: Some(error.to_string()),
            },
            Some(Ok(record)) => {
                let state = record.state(node);
                NodeDrainStatus {
                    node: record.kubernetes_node.clone(),
                    linstor_node: Some(node.name.clone()),
                    request: format!("{}/{}", record.cause, record.mode),
                    state: state.to_string(),
                    replicas_left: Some(node.replicas),
                    since: Some(record.since.clone()),
                    blocked_reason: match state {
                        DrainState::Blocked(reason) => Some(reason),
                        _ => None,
                    },
                }
            }
        };
        if let Some(owner) = owner {
            covered.insert(owner.name.clone());
        }
        covered.insert(row.node.clone());
        rows.push(row);
    }
    for node in kube {
        if covered.contains(&node.name) || node.deleted || !(node.unschedulable || node.evacuate_taint) {
            continue;
        }
        let linstor_node = linstor.iter().find(|l| l.belongs_to(node, hostname_property));
        rows.push(NodeDrainStatus {
            node: node.name.clone(),
            linstor_node: linstor_node.map(|l| l.name.clone()),
            request: if node.evacuate_taint { "taint" } else { "cordon" }.to_owned(),
            state: "NotHandled".to_owned(),
            replicas_left: linstor_node.map(|l| l.replicas),
            since: None,
            blocked_reason: None,
        });
    }
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTNAME: &str = "Aux/topology/kubernetes.io/hostname";
    const NOW: &str = "2026-12-01T10:00:00Z";

    fn kube(name: &str) -> KubeNodeView {
        KubeNodeView {
            name: name.to_owned(),
            hostname: Some(name.to_owned()),
            ..KubeNodeView::default()
        }
    }

    fn cordoned(name: &str) -> KubeNodeView {
        KubeNodeView {
            unschedulable: true,
            ..kube(name)
        }
    }

    fn linstor(name: &str, replicas: usize) -> LinstorNodeView {
        LinstorNodeView {
            name: name.to_owned(),
            replicas,
            ..LinstorNodeView::default()
        }
    }

    fn settings(policy: DrainPolicy) -> DrainSettings {
        DrainSettings {
            drain_policy: policy,
            ..DrainSettings::default()
        }
    }

    /// Applies the writes of `step` to `node` as LINSTOR would (evacuation
    /// flags the node; restore clears the flag).
    fn apply(node: &mut LinstorNodeView, step: &NodeDrainStep) {
        for write in &step.writes {
            match write {
                DrainWrite::Properties { set, delete } => {
                    node.properties.extend(set.clone());
                    for key in delete {
                        node.properties.remove(key);
                    }
                }
                DrainWrite::Evacuate { .. } => node.evacuating = true,
                DrainWrite::Restore => node.evacuating = false,
            }
        }
    }

    fn plan(
        kube: &[KubeNodeView],
        linstor: &[LinstorNodeView],
        settings: &DrainSettings,
    ) -> Vec<NodeDrainStep> {
        let (steps, unreadable) = plan_drains(kube, linstor, HOSTNAME, settings, NOW);
        assert!(unreadable.is_empty(), "{unreadable:?}");
        steps
    }

    fn step<'a>(steps: &'a [NodeDrainStep], node: &str) -> &'a NodeDrainStep {
        steps.iter().find(|s| s.linstor_node == node).unwrap()
    }

    #[test]
    fn policies_parse_their_names_and_refuse_others() {
        assert_eq!(
            "NoSchedule".parse::<DrainPolicy>().unwrap(),
            DrainPolicy::NoSchedule
        );
        assert_eq!(
            "Evacuate".parse::<DeletePolicy>().unwrap(),
            DeletePolicy::Evacuate
        );
        let error = "Evict".parse::<DeletePolicy>().unwrap_err();
        assert!(error.to_string().contains("Orphan, Evacuate"), "{error}");
        assert!("noschedule".parse::<DrainPolicy>().is_err());
    }

    #[test]
    fn a_cordon_under_evacuate_records_then_evacuates_and_uncordon_undoes_exactly() {
        let settings = settings(DrainPolicy::Evacuate);
        let mut a = linstor("a", 2);
        let steps = plan(
            &[cordoned("a"), kube("b")],
            &[a.clone(), linstor("b", 1)],
            &settings,
        );
        let first = step(&steps, "a");
        assert_eq!(first.change, DrainChange::EvacuationStarted);
        let DrainWrite::Properties { set, .. } = &first.writes[0] else {
            panic!("the record comes first: {:?}", first.writes);
        };
        assert_eq!(set[AUTOPLACE_TARGET_PROPERTY], "false");
        let record = DrainRecord::decode("a", &set[DRAIN_RECORD_PROPERTY]).unwrap();
        assert!(record.evacuated && record.set_autoplace_target);
        assert_eq!(
            first.writes[1],
            DrainWrite::Evacuate {
                do_not_target: vec![]
            }
        );
        assert_eq!(step(&steps, "b").writes, vec![]);
        apply(&mut a, first);

        // Again: nothing new while LINSTOR evacuates.
        let again = plan(&[cordoned("a")], &[a.clone()], &settings);
        assert_eq!(again[0].writes, vec![]);
        assert_eq!(a.record().unwrap().unwrap().state(&a), DrainState::Evacuating);

        let undo = plan(&[kube("a")], &[a.clone()], &settings);
        assert_eq!(undo[0].change, DrainChange::Undone);
        apply(&mut a, &undo[0]);
        assert!(!a.evacuating);
        assert!(a.properties.is_empty(), "{:?}", a.properties);
    }

    #[test]
    fn no_schedule_leaves_an_administrators_autoplace_target_alone() {
        let settings = settings(DrainPolicy::NoSchedule);
        let mut a = linstor("a", 1);
        a.properties
            .insert(AUTOPLACE_TARGET_PROPERTY.to_owned(), "false".to_owned());
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        assert_eq!(steps[0].change, DrainChange::BeganNoSchedule);
        assert!(!steps[0].record.as_ref().unwrap().set_autoplace_target);
        apply(&mut a, &steps[0]);
        let undo = plan(&[kube("a")], &[a.clone()], &settings);
        apply(&mut a, &undo[0]);
        assert_eq!(
            a.properties,
            Properties::from([(AUTOPLACE_TARGET_PROPERTY.to_owned(), "false".to_owned())])
        );

        let mut b = linstor("b", 1);
        let steps = plan(&[cordoned("b")], &[b.clone()], &settings);
        assert!(
            !steps[0]
                .writes
                .iter()
                .any(|w| matches!(w, DrainWrite::Evacuate { .. }))
        );
        apply(&mut b, &steps[0]);
        assert_eq!(b.properties[AUTOPLACE_TARGET_PROPERTY], "false");
        let undo = plan(&[kube("b")], &[b.clone()], &settings);
        apply(&mut b, &undo[0]);
        assert!(b.properties.is_empty());
    }

    #[test]
    fn the_taint_evacuates_whatever_the_policy_and_ignore_ignores_cordons() {
        let settings = settings(DrainPolicy::Ignore);
        let tainted = KubeNodeView {
            evacuate_taint: true,
            ..kube("a")
        };
        let steps = plan(
            &[tainted, cordoned("b")],
            &[linstor("a", 1), linstor("b", 1)],
            &settings,
        );
        assert_eq!(step(&steps, "a").change, DrainChange::EvacuationStarted);
        assert_eq!(
            step(&steps, "a").record.as_ref().unwrap().cause,
            DrainCause::Taint
        );
        assert_eq!(step(&steps, "b").writes, vec![]);
    }

    #[test]
    fn further_evacuations_queue_and_never_target_leaving_nodes() {
        let settings = settings(DrainPolicy::Evacuate);
        let mut nodes = vec![linstor("a", 1), linstor("b", 1), linstor("c", 1)];
        let kube_nodes = [cordoned("a"), cordoned("b"), kube("c")];
        let steps = plan(&kube_nodes, &nodes, &settings);
        assert_eq!(step(&steps, "a").change, DrainChange::EvacuationStarted);
        assert_eq!(
            step(&steps, "a").writes[1],
            DrainWrite::Evacuate {
                do_not_target: vec!["b".to_owned()]
            }
        );
        assert_eq!(
            step(&steps, "b").change,
            DrainChange::Queued { running: 1, max: 1 }
        );
        for node in &mut nodes {
            let s = step(&steps, &node.name).clone();
            apply(node, &s);
        }
        assert_eq!(
            nodes[1].record().unwrap().unwrap().state(&nodes[1]),
            DrainState::Queued
        );

        // Waiting again writes nothing.
        let steps = plan(&kube_nodes, &nodes, &settings);
        assert_eq!(step(&steps, "b").writes, vec![]);

        // a is empty: b starts, avoiding a.
        nodes[0].replicas = 0;
        let steps = plan(&kube_nodes, &nodes, &settings);
        assert_eq!(step(&steps, "b").change, DrainChange::EvacuationStarted);
        assert!(step(&steps, "b").writes.contains(&DrainWrite::Evacuate {
            do_not_target: vec!["a".to_owned()]
        }));
        for node in &mut nodes {
            let s = step(&steps, &node.name).clone();
            apply(node, &s);
        }

        // Undoing a leaves b's drain alone.
        let steps = plan(&[kube("a"), cordoned("b"), kube("c")], &nodes, &settings);
        assert_eq!(step(&steps, "a").change, DrainChange::Undone);
        assert_eq!(step(&steps, "b").writes, vec![]);
    }

    #[test]
    fn a_refused_evacuation_is_blocked_and_retried_only_when_due() {
        let mut settings = settings(DrainPolicy::Evacuate);
        let mut a = linstor("a", 1);
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        // LINSTOR refuses: the record says so and nothing else changed.
        let record = steps[0].record.as_ref().unwrap().refused("no eligible node");
        a.properties
            .insert(DRAIN_RECORD_PROPERTY.to_owned(), record.encode());
        a.properties
            .insert(AUTOPLACE_TARGET_PROPERTY.to_owned(), "false".to_owned());
        assert!(matches!(record.state(&a), DrainState::Blocked(reason) if reason.contains("no eligible")));

        settings.retry_refused = false;
        assert_eq!(plan(&[cordoned("a")], &[a.clone()], &settings)[0].writes, vec![]);
        settings.retry_refused = true;
        let retry = plan(&[cordoned("a")], &[a.clone()], &settings);
        assert_eq!(retry[0].change, DrainChange::Retried);
        assert!(retry[0].record.as_ref().unwrap().blocked.is_none());
    }

    #[test]
    fn restores_by_another_actor_are_answered_a_bounded_number_of_times() {
        let settings = settings(DrainPolicy::Evacuate);
        let mut a = linstor("a", 1);
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        apply(&mut a, &steps[0]);
        for attempt in 1..=settings.max_restores {
            a.evacuating = false; // another actor restores it
            let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
            assert_eq!(
                steps[0].change,
                DrainChange::RestoredByOther {
                    restores: attempt,
                    max: settings.max_restores
                }
            );
            apply(&mut a, &steps[0]);
            assert!(a.evacuating);
        }
        a.evacuating = false;
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        assert_eq!(steps[0].change, DrainChange::GaveUp);
        apply(&mut a, &steps[0]);
        assert!(!a.evacuating);
        assert!(matches!(
            a.record().unwrap().unwrap().state(&a),
            DrainState::Blocked(_)
        ));
        assert_eq!(plan(&[cordoned("a")], &[a.clone()], &settings)[0].writes, vec![]);

        // Once nothing is left, a restore is no reason to evacuate again.
        let mut b = linstor("b", 1);
        let steps = plan(&[cordoned("b")], &[b.clone()], &settings);
        apply(&mut b, &steps[0]);
        b.replicas = 0;
        b.evacuating = false;
        let steps = plan(&[cordoned("b")], &[b.clone()], &settings);
        assert_eq!(steps[0].writes, vec![]);
        assert_eq!(b.record().unwrap().unwrap().state(&b), DrainState::Completed);
    }

    #[test]
    fn nodes_map_by_hostname_property_else_by_name_and_unknown_ones_are_left_alone() {
        let settings = settings(DrainPolicy::Evacuate);
        let mut mapped = linstor("linstor-1", 1);
        mapped
            .properties
            .insert(HOSTNAME.to_owned(), "worker-1".to_owned());
        let steps = plan(
            &[cordoned("worker-1")],
            &[mapped, linstor("worker-1-old", 1), linstor("outside", 1)],
            &settings,
        );
        assert_eq!(
            step(&steps, "linstor-1").kubernetes_node.as_deref(),
            Some("worker-1")
        );
        assert_eq!(step(&steps, "linstor-1").change, DrainChange::EvacuationStarted);
        assert_eq!(step(&steps, "worker-1-old").writes, vec![]);
        assert_eq!(step(&steps, "outside").writes, vec![]);
    }

    #[test]
    fn deletion_follows_the_delete_policy_and_absence_keeps_the_drain() {
        let deleted = KubeNodeView {
            deleted: true,
            ..kube("a")
        };
        let orphan = settings(DrainPolicy::Ignore);
        assert_eq!(
            plan(std::slice::from_ref(&deleted), &[linstor("a", 1)], &orphan)[0].writes,
            vec![]
        );
        let evacuate = DrainSettings {
            delete_policy: DeletePolicy::Evacuate,
            ..orphan
        };
        let mut a = linstor("a", 1);
        let steps = plan(&[deleted], &[a.clone()], &evacuate);
        assert_eq!(steps[0].record.as_ref().unwrap().cause, DrainCause::Deleted);
        apply(&mut a, &steps[0]);
        // After a restart the node is simply unknown: nothing is undone.
        assert_eq!(plan(&[], &[a.clone()], &evacuate)[0].writes, vec![]);
        assert!(a.evacuating);
    }

    #[test]
    fn an_unreadable_record_is_reported_and_its_node_left_alone() {
        let mut a = linstor("a", 1);
        a.properties
            .insert(DRAIN_RECORD_PROPERTY.to_owned(), "{oops".to_owned());
        let (steps, unreadable) = plan_drains(&[kube("a")], &[a], HOSTNAME, &DrainSettings::default(), NOW);
        assert!(steps.is_empty());
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].to_string().contains("LINSTOR node a"));
    }

    #[test]
    fn dropping_the_taint_while_cordoned_under_no_schedule_restores_but_keeps_no_schedule() {
        let settings = settings(DrainPolicy::NoSchedule);
        let tainted = KubeNodeView {
            evacuate_taint: true,
            ..cordoned("a")
        };
        let mut a = linstor("a", 1);
        let steps = plan(&[tainted], &[a.clone()], &settings);
        apply(&mut a, &steps[0]);
        assert!(a.evacuating);
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        assert_eq!(steps[0].change, DrainChange::Changed);
        apply(&mut a, &steps[0]);
        assert!(!a.evacuating);
        assert_eq!(a.properties[AUTOPLACE_TARGET_PROPERTY], "false");
        assert_eq!(a.record().unwrap().unwrap().state(&a), DrainState::NoSchedule);
    }

    #[test]
    fn status_shows_records_and_unhandled_requests_and_blocks() {
        let settings = settings(DrainPolicy::Evacuate);
        let mut a = linstor("a", 3);
        let steps = plan(&[cordoned("a")], &[a.clone()], &settings);
        apply(&mut a, &steps[0]);
        let mut b = linstor("b", 1);
        let refused = DrainRecord {
            kubernetes_node: "b".to_owned(),
            cause: DrainCause::Taint,
            mode: DrainMode::Evacuate,
            since: NOW.to_owned(),
            set_autoplace_target: false,
            evacuated: false,
            restored_by_others: 0,
            blocked: None,
        }
        .refused("no eligible node");
        b.properties
            .insert(DRAIN_RECORD_PROPERTY.to_owned(), refused.encode());
        let rows = drain_status(
            &[cordoned("a"), kube("b"), cordoned("c")],
            &[a, b, linstor("c", 2)],
            HOSTNAME,
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            (rows[0].state.as_str(), rows[0].replicas_left),
            ("Evacuating", Some(3))
        );
        assert_eq!(rows[0].request, "cordon/Evacuate");
        assert!(rows[1].is_blocked() && rows[1].blocked_reason.as_ref().unwrap().contains("no eligible"));
        assert_eq!(
            (rows[2].state.as_str(), rows[2].request.as_str()),
            ("NotHandled", "cordon")
        );
        assert!(!rows[0].is_blocked() && !rows[2].is_blocked());
    }
}
