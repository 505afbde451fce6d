//! The drain reconciler: while a Kubernetes node is cordoned, tainted
//! `piraeus.io/evacuate` or deleted, its LINSTOR node is drained as the
//! policies say, and undone exactly when the request goes away.
//!
//! Each round gathers the Kubernetes nodes (kept by watch in the
//! [`NodeCache`]), the LINSTOR nodes and the resources on the nodes
//! involved, decides with [`affinity_core::drain::plan_drains`], then makes
//! the LINSTOR calls each node's step lists, in order, and reports through
//! events on the Node and metrics.
//!
//! While a node is evacuated, rounds come about every second and publish
//! the resource definitions with replicas on it ([`DrainReconciler::focus`]):
//! the affinity controller re-reads just those from LINSTOR as often, so a
//! PV allows the new node as soon as the replacement replica exists, and
//! drops the old one as soon as it is gone. Idle, a round reads LINSTOR only
//! when a node asks for a drain (or at start, to undo what a drain left).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use affinity_core::Properties;
use affinity_core::drain::{
    DrainChange, DrainRecord, DrainSettings, DrainState, DrainWrite, LinstorNodeView, NodeDrainStep,
    plan_drains, requested_drain,
};
use affinity_core::k8s_openapi::api::core::v1::Node;
use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::names::{DRAIN_RECORD_PROPERTY, KUBERNETES_HOSTNAME_LABEL};
use kube::api::Api;
use linstor_api::error::Reports;
use linstor_api::models::{ApiCallRc, NodeEvacuate, NodeModify, NodeRestore};
use linstor_api::{NodeFilter, ResourceViewFilter};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventReporter;
use crate::leader::Leadership;
use crate::linstor_state;
use crate::lock;
use crate::metrics::Metrics;
use crate::node_cache::NodeCache;
use crate::watch::run_watch;

/// Time between rounds while a node is evacuated or waits for a slot.
pub(crate) const DRAINING_ROUND: Duration = Duration::from_secs(1);
/// How long a resource definition stays in focus after it was last seen
/// on a node being evacuated: the affinity must still drop the old node.
const FOCUS_LINGER: Duration = Duration::from_secs(30);
/// LINSTOR flag of a node being evacuated.
const EVACUATE_FLAG: &str = "EVACUATE";

/// Event reasons on the Node.
const STARTED: &str = "NodeDrainStarted";
const QUEUED: &str = "NodeDrainQueued";
const PROGRESS: &str = "NodeDrainProgress";
const COMPLETED: &str = "NodeDrainCompleted";
const BLOCKED: &str = "NodeDrainBlocked";
const RESTORED: &str = "NodeDrainRestoredByOther";
const UNDONE: &str = "NodeDrainUndone";

/// Settings of the drain reconciler.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// The decisions' settings (policies, limits).
    pub decisions: DrainSettings,
    /// Time between rounds when no drain is going on, and between retries
    /// of an evacuation LINSTOR refused.
    pub reconcile_rate: Duration,
    /// LINSTOR property namespace of the topology labels (the hostname
    /// property lives there); guessed from the LINSTOR nodes when `None`.
    pub property_namespace: Option<String>,
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// LINSTOR could not be read; nothing was written.
    #[error("reading the LINSTOR {what}: {source}")]
    Read {
        /// "nodes" or "resources".
        what: &'static str,
        /// The client's error.
        source: linstor_api::Error,
    },
    /// A LINSTOR call failed.
    #[error("LINSTOR node {node}: {call}: {source}")]
    Call {
        /// The LINSTOR node.
        node: String,
        /// The call ("modify", "evacuate", "restore").
        call: &'static str,
        /// The client's error.
        source: linstor_api::Error,
    },
    /// LINSTOR answered a call with errors.
    #[error("LINSTOR node {node}: {call} refused: {reports}")]
    Rejected {
        /// The LINSTOR node.
        node: String,
        /// The call.
        call: &'static str,
        /// LINSTOR's error replies.
        reports: Reports,
    },
}

/// What the reconciler remembers between rounds.
#[derive(Debug, Default)]
struct Memory {
    /// Whether the next round must read LINSTOR even without a request
    /// (at start, after a drain, after leadership came back).
    check: bool,
    /// Whether a drain is going on: rounds come every [`DRAINING_ROUND`].
    active: bool,
    /// When LINSTOR last refused an evacuation: it is asked again one
    /// reconcile interval later.
    last_refusal: Option<Instant>,
    /// The last event message per Kubernetes node, so none is repeated.
    reported: HashMap<String, String>,
    /// Resources left per evacuated LINSTOR node, as last reported.
    remaining: HashMap<String, usize>,
    /// Resource definitions in focus, with when they were last seen on a
    /// node being evacuated.
    focus: HashMap<String, Instant>,
}

/// Drains LINSTOR nodes as their Kubernetes nodes ask.
pub struct DrainReconciler {
    config: DrainConfig,
    kube: kube::Client,
    linstor: linstor_api::Client,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    events: EventReporter,
    nodes: Arc<NodeCache>,
    focus: watch::Sender<BTreeSet<String>>,
    memory: Mutex<Memory>,
}

impl DrainReconciler {
    /// A reconciler; nothing runs before [`Self::run`].
    pub fn new(
        config: DrainConfig,
        kube: kube::Client,
        linstor: linstor_api::Client,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        events: EventReporter,
    ) -> Self {
        Self {
            config,
            kube,
            linstor,
            leadership,
            metrics,
            events,
            nodes: Arc::new(NodeCache::new()),
            focus: watch::Sender::new(BTreeSet::new()),
            memory: Mutex::new(Memory {
                check: true,
                ..Memory::default()
            }),
        }
    }

    /// The resource definitions whose volumes follow a drain: sent after
    /// every round while a node is evacuated (empty once none is).
    pub fn focus(&self) -> watch::Receiver<BTreeSet<String>> {
        self.focus.subscribe()
    }

    /// The Kubernetes nodes, as this reconciler's watch last saw them.
    pub fn node_cache(&self) -> &Arc<NodeCache> {
        &self.nodes
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        let watches = shutdown.child_token();
        let node_watch = run_watch(Api::<Node>::all(self.kube.clone()), &*self.nodes, watches.clone());
        tokio::select! {
            () = node_watch => {}
            () = self.rounds(&shutdown) => {}
        }
        watches.cancel();
    }

    async fn rounds(&self, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = self.nodes.wait_synced() => {}
        }
        let decisions = &self.config.decisions;
        info!(
            policy = %decisions.drain_policy,
            delete_policy = %decisions.delete_policy,
            max_concurrent_evacuations = decisions.max_concurrent_evacuations,
            "node drain on"
        );
        let mut ticks = tokio::time::interval(self.config.reconcile_rate);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut draining = tokio::time::interval(DRAINING_ROUND);
        draining.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let active = lock(&self.memory).active;
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
                () = self.nodes.changed() => {}
                _ = draining.tick(), if active => {}
            }
            if !self.leadership.is_leading() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.leadership.wait_until_leading() => {}
                }
                lock(&self.memory).check = true;
            }
            if let Err(error) = self.round().await {
                self.metrics.record_linstor_error();
                warn!(%error, "drain round failed; the next one retries");
            }
        }
    }

    /// One round: gather, decide, act, report.
    async fn round(&self) -> Result<(), DrainError> {
        let kube = self.nodes.views();
        let mut settings = self.config.decisions.clone();
        let requested = kube.iter().any(|node| requested_drain(node, &settings).is_some());
        if !requested && !lock(&self.memory).check {
            return Ok(());
        }
        settings.retry_refused = {
            let memory = lock(&self.memory);
            memory
                .last_refusal
                .is_none_or(|at| at.elapsed() >= self.config.reconcile_rate)
        };

        // Gather.
        let linstor = read_linstor_nodes(
            &self.linstor,
            self.config.property_namespace.as_deref(),
            |view, hostname_property| {
                view.properties.contains_key(DRAIN_RECORD_PROPERTY)
                    || kube.iter().any(|k| {
                        view.belongs_to(k, hostname_property) && requested_drain(k, &settings).is_some()
                    })
            },
        )
        .await?;
        let (views, hostname_property, on_node) =
            (linstor.nodes, linstor.hostname_property, linstor.resources);

        // Decide.
        let now = Timestamp::now().to_string();
        let (steps, unreadable) = plan_drains(&kube, &views, &hostname_property, &settings, &now);
        for error in unreadable {
            warn!(%error, "LINSTOR node left alone");
        }

        // Act.
        let mut records = Vec::new();
        for step in steps {
            // Only the leader writes; a successor decides again from LINSTOR.
            if !step.writes.is_empty() && !self.leadership.is_leading() {
                return Ok(());
            }
            let record = self.carry_out(&step).await?;
            if let Some(record) = record {
                records.push((step.kubernetes_node.clone(), step.linstor_node.clone(), record));
            }
        }

        // Report.
        self.report(&views, &records, &on_node).await;
        Ok(())
    }

    /// Makes the calls of `step` in order and reports what it means; returns
    /// the record the node holds afterwards.
    async fn carry_out(&self, step: &NodeDrainStep) -> Result<Option<DrainRecord>, DrainError> {
        let node = step.linstor_node.as_str();
        let mut record = step.record.clone();
        for write in &step.writes {
            match write {
                DrainWrite::Properties { set, delete } => {
                    self.modify(node, set.clone(), delete.clone()).await?;
                }
                DrainWrite::Evacuate { do_not_target } => {
                    let options = NodeEvacuate {
                        do_not_target: do_not_target.clone(),
                        ..NodeEvacuate::default()
                    };
                    let answer = match self.linstor.evacuate_node(node, &options).await {
                        Ok(replies) => accepted(node, "evacuate", replies)
                            .err()
                            .map(|error| error.to_string()),
                        Err(error) => Some(error.to_string()),
                    };
                    if let (Some(answer), Some(current)) = (answer, &record) {
                        // Refused: say so in the record; nothing else changed.
                        let refused = current.refused(&answer);
                        let property = [(DRAIN_RECORD_PROPERTY.to_owned(), refused.encode())].into();
                        self.modify(node, property, Vec::new()).await?;
                        warn!(node, %answer, "LINSTOR refused the evacuation");
                        lock(&self.memory).last_refusal = Some(Instant::now());
                        self.metrics.record_linstor_error();
                        record = Some(refused);
                        break;
                    }
                }
                DrainWrite::Restore => {
                    let replies = self
                        .linstor
                        .restore_node(node, &NodeRestore::default())
                        .await
                        .map_err(|source| DrainError::Call {
                            node: node.to_owned(),
                            call: "restore",
                            source,
                        })?;
                    accepted(node, "restore", replies)?;
                }
            }
        }
        if !step.writes.is_empty() {
            info!(node, change = ?step.change, "drain step done");
        }
        if let Some(kube_node) = &step.kubernetes_node {
            let refused = record.as_ref().and_then(|r| r.blocked.clone()).filter(|_| {
                step.record
                    .as_ref()
                    .is_some_and(|planned| planned.blocked.is_none())
            });
            let event = match (&step.change, refused) {
                (_, Some(reason)) => Some((true, BLOCKED, format!("LINSTOR node {node}: {reason}"))),
                (DrainChange::None | DrainChange::Changed, None) => None,
                (DrainChange::BeganNoSchedule, None) => Some((
                    false,
                    STARTED,
                    format!(
                        "LINSTOR node {node}: no new replicas (AutoplaceTarget=false); existing replicas stay"
                    ),
                )),
                (DrainChange::EvacuationStarted, None) => {
                    Some((false, STARTED, format!("LINSTOR node {node} is being evacuated")))
                }
                (DrainChange::Retried, None) => Some((
                    false,
                    STARTED,
                    format!("LINSTOR node {node} is being evacuated (asked again after a refusal)"),
                )),
                (DrainChange::Queued { running, max }, None) => Some((
                    false,
                    QUEUED,
                    format!(
                        "LINSTOR node {node} waits for its evacuation: {running} running, at most {max} at once \
                         (--max-concurrent-evacuations)"
                    ),
                )),
                (DrainChange::RestoredByOther { restores, max }, None) => Some((
                    true,
                    RESTORED,
                    format!(
                        "LINSTOR node {node} was restored by another actor with replicas left; evacuating again \
                         ({restores} of at most {max} times)"
                    ),
                )),
                (DrainChange::GaveUp, None) => Some((
                    true,
                    BLOCKED,
                    record
                        .as_ref()
                        .and_then(|r| r.blocked.clone())
                        .unwrap_or_else(|| format!("LINSTOR node {node}: drain stopped")),
                )),
                (DrainChange::Undone, None) => Some((
                    false,
                    UNDONE,
                    format!("LINSTOR node {node}: drain undone; what this controller changed is restored"),
                )),
            };
            if let Some((warning, reason, message)) = event {
                self.event(kube_node, warning, reason, message).await;
            }
        }
        if step.change == DrainChange::Undone {
            lock(&self.memory).remaining.remove(node);
        }
        Ok(record)
    }

    /// Sets and deletes properties of LINSTOR node `node`.
    async fn modify(&self, node: &str, set: Properties, delete: Vec<String>) -> Result<(), DrainError> {
        let modify = NodeModify {
            override_props: set,
            delete_props: delete,
            ..NodeModify::default()
        };
        let replies = self
            .linstor
            .modify_node(node, &modify)
            .await
            .map_err(|source| DrainError::Call {
                node: node.to_owned(),
                call: "modify",
                source,
            })?;
        accepted(node, "modify", replies)
    }

    /// Events on progress and completion, the metrics, and the focus of the
    /// affinity controller.
    async fn report(
        &self,
        views: &[LinstorNodeView],
        records: &[(Option<String>, String, DrainRecord)],
        on_node: &BTreeMap<String, Vec<String>>,
    ) {
        let mut remaining = Vec::new();
        let mut active = false;
        let mut progress = Vec::new();
        let now = Instant::now();
        let focus: BTreeSet<String> = {
            let mut memory = lock(&self.memory);
            for (kube_node, linstor_node, record) in records {
                let Some(view) = views.iter().find(|v| v.name == *linstor_node) else {
                    continue;
                };
                let state = record.state(view);
                let evacuating = matches!(state, DrainState::Evacuating);
                active |= evacuating || matches!(state, DrainState::Queued);
                if matches!(state, DrainState::Evacuating | DrainState::Completed) {
                    remaining.push((view.name.clone(), view.replicas as u64));
                    for definition in on_node.get(&view.name).into_iter().flatten() {
                        memory.focus.insert(definition.clone(), now);
                    }
                    let before = memory.remaining.insert(view.name.clone(), view.replicas);
                    if before != Some(view.replicas)
                        && let Some(kube_node) = kube_node
                    {
                        progress.push((kube_node.clone(), view.name.clone(), view.replicas));
                    }
                }
            }
            memory
                .focus
                .retain(|_, seen| now.duration_since(*seen) < FOCUS_LINGER);
            memory.active = active || !memory.focus.is_empty();
            memory.check = !records.is_empty();
            memory.focus.keys().cloned().collect()
        };
        self.metrics.set_drains(records.len() as u64, &remaining);
        if !focus.is_empty() || !self.focus.borrow().is_empty() {
            self.focus.send_replace(focus);
        }
        for (kube_node, linstor_node, left) in progress {
            let (reason, message) = if left == 0 {
                (
                    COMPLETED,
                    format!("LINSTOR node {linstor_node}: evacuation completed, no replica left"),
                )
            } else {
                (
                    PROGRESS,
                    format!("LINSTOR node {linstor_node}: {left} replicas remaining"),
                )
            };
            self.event(&kube_node, false, reason, message).await;
        }
    }

    /// Posts an event on `node` unless it is the same as the last one.
    async fn event(&self, node: &str, warning: bool, reason: &'static str, message: String) {
        if lock(&self.memory)
            .reported
            .insert(node.to_owned(), message.clone())
            == Some(message.clone())
        {
            debug!(node, %message, "event already reported");
            return;
        }
        info!(node, reason, %message, "drain");
        self.events.report_on_node(node, warning, reason, &message).await;
    }
}

/// The LINSTOR nodes as drain decisions see them.
#[derive(Debug, Default)]
pub struct LinstorNodes {
    /// Every LINSTOR node; resources counted on the involved ones only.
    pub nodes: Vec<LinstorNodeView>,
    /// The node property naming the Kubernetes node
    /// (`<property namespace>/kubernetes.io/hostname`).
    pub hostname_property: String,
    /// Resource definitions with a resource on each involved node.
    pub resources: BTreeMap<String, Vec<String>>,
}

/// Reads the LINSTOR nodes, and the resources on those `involved` selects
/// (given each node and the hostname property): one request, two when any
/// node is involved. `property_namespace` `None`: guessed from the nodes.
pub async fn read_linstor_nodes(
    client: &linstor_api::Client,
    property_namespace: Option<&str>,
    involved: impl Fn(&LinstorNodeView, &str) -> bool,
) -> Result<LinstorNodes, DrainError> {
    let nodes = client
        .list_nodes(&NodeFilter::default())
        .await
        .map_err(|source| DrainError::Read {
            what: "nodes",
            source,
        })?;
    let namespace =
        linstor_state::property_namespace(property_namespace, nodes.iter().map(|node| &node.props));
    let hostname_property = format!("{namespace}/{KUBERNETES_HOSTNAME_LABEL}");
    let mut views: Vec<LinstorNodeView> = nodes
        .into_iter()
        .map(|node| LinstorNodeView {
            evacuating: node.flags.iter().any(|flag| flag == EVACUATE_FLAG),
            name: node.name,
            properties: node.props,
            replicas: 0,
        })
        .collect();
    let selected: Vec<String> = views
        .iter()
        .filter(|view| involved(view, &hostname_property))
        .map(|view| view.name.clone())
        .collect();
    let mut resources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !selected.is_empty() {
        let filter = ResourceViewFilter {
            nodes: selected,
            ..ResourceViewFilter::default()
        };
        let listed = client
            .view_resources(&filter)
            .await
            .map_err(|source| DrainError::Read {
                what: "resources",
                source,
            })?;
        for resource in listed {
            resources
                .entry(resource.node_name.clone())
                .or_default()
                .push(resource.name.clone());
        }
    }
    for view in &mut views {
        view.replicas = resources.get(&view.name).map_or(0, Vec::len);
    }
    Ok(LinstorNodes {
        nodes: views,
        hostname_property,
        resources,
    })
}

/// Error replies inside a successful answer are a refusal.
fn accepted(node: &str, call: &'static str, replies: Vec<ApiCallRc>) -> Result<(), DrainError> {
    Reports::errors_of(replies).map_err(|reports| DrainError::Rejected {
        node: node.to_owned(),
        call,
        reports,
    })
}
