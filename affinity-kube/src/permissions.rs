//! What the controller's RBAC grants, asked once at start, and which of its
//! paths that leaves on.
//!
//! The controller runs under the Go controller's ClusterRole too (PVs,
//! StorageClasses `get` only, `events.k8s.io` events), which lacks what its
//! faster paths use. Each [`Capability`] names the rules one path needs;
//! [`probe`] asks the API server (SelfSubjectAccessReview, which every
//! authenticated user may create) whether they are granted, and
//! [`Grants::paths`] decides, without I/O, which paths are on.

use std::fmt;

use affinity_core::k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use futures::future::join_all;
use kube::Client;
use kube::api::{Api, PostParams};

/// One thing the controller may need to do: `verb` on `resource` (with
/// `subresource`) of API group `group`, cluster-wide or in the Lease's
/// namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Resource, such as `persistentvolumes`.
    pub resource: &'static str,
    /// Subresource, such as `status`; empty for none.
    pub subresource: &'static str,
    /// Verb, such as `patch`.
    pub verb: &'static str,
    /// Whether it is asked in the Lease's namespace rather than cluster-wide.
    pub in_lease_namespace: bool,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() { "core" } else { self.group };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        Ok(())
    }
}

const fn cluster(group: &'static str, resource: &'static str, verb: &'static str) -> Rule {
    Rule {
        group,
        resource,
        subresource: "",
        verb,
        in_lease_namespace: false,
    }
}

const PV: &str = "persistentvolumes";
const SC: &str = "storageclasses";
const PVC: &str = "persistentvolumeclaims";
const REPLACE_PVS: [Rule; 6] = [
    cluster("", PV, "get"),
    cluster("", PV, "list"),
    cluster("", PV, "watch"),
    cluster("", PV, "create"),
    cluster("", PV, "patch"),
    cluster("", PV, "delete"),
];
const WATCH_STORAGE_CLASSES: [Rule; 2] = [
    cluster("storage.k8s.io", SC, "list"),
    cluster("storage.k8s.io", SC, "watch"),
];
const GET_STORAGE_CLASSES: [Rule; 1] = [cluster("storage.k8s.io", SC, "get")];
const CLAIMS: [Rule; 2] = [cluster("", PVC, "get"), cluster("", PVC, "patch")];
const MARK_BOUND: [Rule; 1] = [Rule {
    subresource: "status",
    ..cluster("", PV, "patch")
}];
const CORE_EVENTS: [Rule; 1] = [cluster("", "events", "create")];
const EVENTS: [Rule; 1] = [cluster("events.k8s.io", "events", "create")];
const WATCH_NODES: [Rule; 3] = [
    cluster("", "nodes", "get"),
    cluster("", "nodes", "list"),
    cluster("", "nodes", "watch"),
];
const LEADER_ELECTION: [Rule; 3] = [lease("get"), lease("create"), lease("update")];

const fn lease(verb: &'static str) -> Rule {
    Rule {
        in_lease_namespace: true,
        ..cluster("coordination.k8s.io", "leases", verb)
    }
}

/// A path of the controller and the rules it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Watch and replace PVs: required.
    ReplacePvs,
    /// Keep StorageClasses by list and watch; without it, each class a PV
    /// names is read once per pass.
    WatchStorageClasses,
    /// Read StorageClasses one by one; needed when they cannot be watched.
    GetStorageClasses,
    /// Read and nudge the claim of a re-created PV: the claim is bound again
    /// at once and its ownership checked directly. Without it, claims wait
    /// for the PV binder, whose `Bound` mark is the evidence of ownership.
    Claims,
    /// Mark a re-created PV `Bound` when its claim owns it, as the PV binder
    /// would, instead of waiting for the binder.
    MarkBound,
    /// core/v1 events: events on PVs on API servers before 1.22, which refuse
    /// `events.k8s.io` events about cluster-scoped objects.
    CoreEvents,
    /// `events.k8s.io/v1` events.
    Events,
    /// Leader election on the Lease: required with leader election on.
    LeaderElection,
    /// Watch Kubernetes nodes: node drain (cordon, deletion, the
    /// `piraeus.io/evacuate` taint). Required when a drain or delete policy
    /// is set.
    WatchNodes,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Self; 9] = [
        Self::ReplacePvs,
        Self::WatchStorageClasses,
        Self::GetStorageClasses,
        Self::Claims,
        Self::MarkBound,
        Self::CoreEvents,
        Self::Events,
        Self::LeaderElection,
        Self::WatchNodes,
    ];

    /// The rules it needs.
    pub fn rules(self) -> &'static [Rule] {
        match self {
            Self::ReplacePvs => &REPLACE_PVS,
            Self::WatchStorageClasses => &WATCH_STORAGE_CLASSES,
            Self::GetStorageClasses => &GET_STORAGE_CLASSES,
            Self::Claims => &CLAIMS,
            Self::MarkBound => &MARK_BOUND,
            Self::CoreEvents => &CORE_EVENTS,
            Self::Events => &EVENTS,
            Self::LeaderElection => &LEADER_ELECTION,
            Self::WatchNodes => &WATCH_NODES,
        }
    }

    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReplacePvs => "replace_pvs",
            Self::WatchStorageClasses => "watch_storage_classes",
            Self::GetStorageClasses => "get_storage_classes",
            Self::Claims => "claims",
            Self::MarkBound => "mark_bound",
            Self::CoreEvents => "core_events",
            Self::Events => "events",
            Self::LeaderElection => "leader_election",
            Self::WatchNodes => "node_drain",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answers of the API server, rule by rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    denied: Vec<Rule>,
}

impl Grants {
    /// Everything granted.
    pub fn all() -> Self {
        Self::default()
    }

    /// Everything granted except `denied`.
    pub fn denying(denied: impl IntoIterator<Item = Rule>) -> Self {
        let mut denied: Vec<Rule> = denied.into_iter().collect();
        denied.sort();
        denied.dedup();
        Self { denied }
    }

    /// Whether every rule of `capability` is granted.
    pub fn allows(&self, capability: Capability) -> bool {
        capability.rules().iter().all(|rule| !self.denied.contains(rule))
    }

    /// The rules of `capability` that are not granted.
    pub fn missing(&self, capability: Capability) -> Vec<Rule> {
        capability
            .rules()
            .iter()
            .filter(|rule| self.denied.contains(rule))
            .copied()
            .collect()
    }

    /// Which paths are on, or what the controller cannot work without.
    /// With `node_drain` (a drain or delete policy is set) the nodes are
    /// required too.
    pub fn paths(&self, leader_election: bool, node_drain: bool) -> Result<Paths, MissingPermissions> {
        let mut missing = self.missing(Capability::ReplacePvs);
        if leader_election {
            missing.extend(self.missing(Capability::LeaderElection));
        }
        if node_drain {
            missing.extend(self.missing(Capability::WatchNodes));
        }
        let watch_storage_classes = self.allows(Capability::WatchStorageClasses);
        if !watch_storage_classes && !self.allows(Capability::GetStorageClasses) {
            missing.extend(self.missing(Capability::GetStorageClasses));
        }
        if !missing.is_empty() {
            return Err(MissingPermissions { missing });
        }
        let claims = self.allows(Capability::Claims);
        Ok(Paths {
            watch_storage_classes,
            claims,
            // Marking needs the claim read first.
            mark_bound: claims && self.allows(Capability::MarkBound),
            events: EventApis {
                core: self.allows(Capability::CoreEvents),
                events_v1: self.allows(Capability::Events),
            },
            node_drain: self.allows(Capability::WatchNodes),
        })
    }
}

/// What the controller cannot work without.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("missing permissions: {}", list(.missing))]
pub struct MissingPermissions {
    /// The rules not granted.
    pub missing: Vec<Rule>,
}

fn list(rules: &[Rule]) -> String {
    rules.iter().map(Rule::to_string).collect::<Vec<_>>().join(", ")
}

/// The Event APIs the controller may post to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventApis {
    /// core/v1 Events.
    pub core: bool,
    /// `events.k8s.io/v1` Events.
    pub events_v1: bool,
}

impl EventApis {
    /// Both.
    pub const ALL: Self = Self {
        core: true,
        events_v1: true,
    };
}

/// The controller's optional paths, on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paths {
    /// StorageClasses kept by watch (else read once per class per pass).
    pub watch_storage_classes: bool,
    /// Claims read and nudged after a re-creation (else the PV binder's
    /// `Bound` mark is awaited as evidence that the claim owns the PV).
    pub claims: bool,
    /// Re-created PVs marked `Bound` without waiting for the PV binder.
    pub mark_bound: bool,
    /// The Event APIs granted.
    pub events: EventApis,
    /// Kubernetes nodes watched, so LINSTOR nodes are drained as they ask.
    pub node_drain: bool,
}

impl Paths {
    /// Every path on.
    pub const ALL: Self = Self {
        watch_storage_classes: true,
        claims: true,
        mark_bound: true,
        events: EventApis::ALL,
        node_drain: true,
    };

    /// Each optional path by name, with whether it is on.
    pub fn by_name(&self) -> [(&'static str, bool); 6] {
        [
            (
                Capability::WatchStorageClasses.as_str(),
                self.watch_storage_classes,
            ),
            (Capability::Claims.as_str(), self.claims),
            (Capability::MarkBound.as_str(), self.mark_bound),
            (Capability::CoreEvents.as_str(), self.events.core),
            (Capability::Events.as_str(), self.events.events_v1),
            (Capability::WatchNodes.as_str(), self.node_drain),
        ]
    }

    /// What each path that is off costs, for the start-up log.
    pub fn off_explained(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if !self.watch_storage_classes {
            off.push(
                "StorageClasses cannot be listed and watched: each class a PV names is read once per pass",
            );
        }
        if !self.claims {
            off.push(
                "claims cannot be read and patched: a re-created PV's claim waits for the PV binder, \
                 and its reclaim policy comes back once the binder marks it Bound",
            );
        } else if !self.mark_bound {
            off.push("persistentvolumes/status cannot be patched: re-created PVs wait for the PV binder's Bound mark");
        }
        if !self.events.core {
            off.push(
                "core/v1 events cannot be created: events on PVs go to events.k8s.io, which API servers \
                 before 1.22 refuse for cluster-scoped objects",
            );
        }
        if !self.events.events_v1 {
            off.push("events.k8s.io events cannot be created: claim events use core/v1");
        }
        if !self.node_drain {
            off.push(
                "nodes cannot be listed and watched: node drain is off (cordons, node deletions and the \
                 piraeus.io/evacuate taint leave LINSTOR nodes alone)",
            );
        }
        off
    }
}

/// Why the permissions could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("asking the API server whether {rule} is allowed: {source}")]
pub struct ProbeError {
    /// The rule asked about.
    pub rule: Rule,
    /// The API server's answer.
    #[source]
    pub source: Box<kube::Error>,
}

/// Asks the API server, for every rule of every capability, whether this
/// client may use it; `lease_namespace` is where the Lease lives.
pub async fn probe(client: &Client, lease_namespace: &str) -> Result<Grants, ProbeError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut rules: Vec<Rule> = Capability::ALL
        .iter()
        .flat_map(|capability| capability.rules().iter().copied())
        .collect();
    rules.sort();
    rules.dedup();
    let answers = join_all(rules.iter().map(|rule| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(rule.group.to_owned()),
                    resource: Some(rule.resource.to_owned()),
                    subresource: (!rule.subresource.is_empty()).then(|| rule.subresource.to_owned()),
                    verb: Some(rule.verb.to_owned()),
                    namespace: rule.in_lease_namespace.then(|| lease_namespace.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let reviews = reviews.clone();
        async move { reviews.create(&PostParams::default(), &review).await }
    }))
    .await;
    let mut denied = Vec::new();
    for (rule, answer) in rules.iter().zip(answers) {
        let review = answer.map_err(|source| ProbeError {
            rule: *rule,
            source: Box::new(source),
        })?;
        if !review.status.is_some_and(|status| status.allowed) {
            denied.push(*rule);
        }
    }
    Ok(Grants::denying(denied))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denying(capabilities: &[Capability]) -> Grants {
        Grants::denying(
            capabilities
                .iter()
                .flat_map(|capability| capability.rules().iter().copied()),
        )
    }

    #[test]
    fn everything_granted_turns_every_path_on() {
        assert_eq!(Grants::all().paths(true, false), Ok(Paths::ALL));
    }

    #[test]
    fn the_reference_role_leaves_the_slow_paths() {
        let reference = denying(&[
            Capability::WatchStorageClasses,
            Capability::Claims,
            Capability::MarkBound,
            Capability::CoreEvents,
            Capability::WatchNodes,
        ]);
        let paths = reference.paths(true, false).unwrap();
        assert_eq!(
            paths,
            Paths {
                watch_storage_classes: false,
                claims: false,
                mark_bound: false,
                events: EventApis {
                    core: false,
                    events_v1: true
                },
                node_drain: false,
            }
        );
        assert_eq!(paths.off_explained().len(), 4);
        assert!(paths.by_name().iter().filter(|(_, on)| !on).count() == 5);
    }

    #[test]
    fn marking_bound_needs_the_claims() {
        let paths = denying(&[Capability::Claims]).paths(false, false).unwrap();
        assert!(!paths.mark_bound);
    }

    #[test]
    fn required_rules_are_named() {
        let error = Grants::denying([cluster("", "persistentvolumes", "delete")])
            .paths(false, false)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "missing permissions: delete core/persistentvolumes"
        );

        let no_classes = denying(&[Capability::WatchStorageClasses, Capability::GetStorageClasses]);
        let error = no_classes.paths(false, false).unwrap_err();
        assert!(
            error.to_string().contains("get storage.k8s.io/storageclasses"),
            "{error}"
        );

        let no_lease = denying(&[Capability::LeaderElection]);
        assert!(no_lease.paths(false, false).is_ok());
        let error = no_lease.paths(true, false).unwrap_err();
        assert!(
            error.to_string().contains("update coordination.k8s.io/leases"),
            "{error}"
        );
    }

    #[test]
    fn a_drain_policy_requires_the_nodes() {
        let no_nodes = denying(&[Capability::WatchNodes]);
        assert!(!no_nodes.paths(false, false).unwrap().node_drain);
        let error = no_nodes.paths(false, true).unwrap_err();
        assert!(error.to_string().contains("watch core/nodes"), "{error}");
    }

    #[test]
    fn classes_by_get_suffice() {
        let paths = denying(&[Capability::WatchStorageClasses])
            .paths(false, false)
            .unwrap();
        assert!(!paths.watch_storage_classes);
    }
}
