//! Where a volume can be accessed from, computed from LINSTOR state.

use std::collections::BTreeMap;

use crate::model::{Properties, Replica};
use crate::names::NODE_NAME_KEY;
use crate::policy::RemoteAccessPolicy;

/// Topology segments: topology key to value. Describes one node, or one
/// topology from which a volume is accessible.
pub type Segments = BTreeMap<String, String>;

/// Where a volume can be accessed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Accessibility {
    /// From every node: the PV should carry no node affinity.
    Everywhere,
    /// From nodes matching one of these topologies: sorted, without
    /// duplicates, never empty and never holding an empty map.
    Restricted(Vec<Segments>),
}

impl Accessibility {
    /// The topologies, empty when accessible from everywhere.
    pub fn topologies(&self) -> &[Segments] {
        match self {
            Self::Everywhere => &[],
            Self::Restricted(topologies) => topologies,
        }
    }

    /// Combines the topologies of the diskful nodes under a policy: each
    /// node's segments go through [`RemoteAccessPolicy::accessible_segments`];
    /// an empty map, or no map at all, means everywhere.
    pub fn from_nodes<'a, I>(policy: &RemoteAccessPolicy, diskful_nodes: I) -> Self
    where
        I: IntoIterator<Item = &'a Segments>,
    {
        let per_node: Vec<Vec<Segments>> = diskful_nodes
            .into_iter()
            .map(|segments| policy.accessible_segments(segments))
            .collect();
        Self::from_merged(merge_topologies(per_node.iter().map(Vec::as_slice)))
    }

    /// The accessibility of a [`merge_topologies`] result.
    pub(crate) fn from_merged(merged: Option<Vec<&Segments>>) -> Self {
        match merged {
            None => Self::Everywhere,
            Some(topologies) => Self::Restricted(topologies.into_iter().cloned().collect()),
        }
    }
}

/// Merges the accessible topologies of every diskful node: `None` (from
/// everywhere) when a node yields an empty map or no node yields any map,
/// otherwise the maps sorted and without duplicates.
pub(crate) fn merge_topologies<'s, I>(per_node: I) -> Option<Vec<&'s Segments>>
where
    I: IntoIterator<Item = &'s [Segments]>,
{
    let mut merged = Vec::new();
    for topologies in per_node {
        for topology in topologies {
            if topology.is_empty() {
                return None;
            }
            merged.push(topology);
        }
    }
    if merged.is_empty() {
        return None;
    }
    merged.sort_unstable();
    merged.dedup();
    Some(merged)
}

/// The topology segments of a LINSTOR node: every property under
/// `<namespace>/` with that prefix removed, and [`NODE_NAME_KEY`] set to the
/// node name (which wins over a property of the same key).
pub fn node_segments(node_name: &str, properties: &Properties, namespace: &str) -> Segments {
    let mut segments: Segments = properties
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(namespace)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|key| (key.to_owned(), value.clone()))
        })
        .collect();
    segments.insert(NODE_NAME_KEY.to_owned(), node_name.to_owned());
    segments
}

/// Names of the nodes holding a healthy diskful replica, sorted and unique.
pub fn diskful_nodes(replicas: &[Replica]) -> Vec<&str> {
    let mut nodes: Vec<&str> = replicas
        .iter()
        .filter(|replica| replica.is_healthy_diskful())
        .map(|replica| replica.node_name.as_str())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RemoteAccessRule;
    use crate::test_util::pairs as seg;

    #[test]
    fn node_segments_take_the_namespace_and_the_node_name() {
        let props: Properties = seg(&[
            ("Aux/topology/topology.kubernetes.io/zone", "z1"),
            ("Aux/topology/kubernetes.io/hostname", "k8s-n1"),
            ("Aux/topology/linbit.com/hostname", "spoofed"),
            ("Aux/topologyX/other", "no"),
            ("Aux/other", "not in namespace"),
            ("CurStltConnName", "default"),
        ]);
        assert_eq!(
            node_segments("n1", &props, "Aux/topology"),
            seg(&[
                ("topology.kubernetes.io/zone", "z1"),
                ("kubernetes.io/hostname", "k8s-n1"),
                (NODE_NAME_KEY, "n1"),
            ])
        );
        // The legacy namespace keeps the rest of the key.
        assert_eq!(
            node_segments("n1", &props, "Aux"),
            seg(&[
                ("topology/topology.kubernetes.io/zone", "z1"),
                ("topology/kubernetes.io/hostname", "k8s-n1"),
                ("topology/linbit.com/hostname", "spoofed"),
                ("topologyX/other", "no"),
                ("other", "not in namespace"),
                (NODE_NAME_KEY, "n1"),
            ])
        );
        assert_eq!(
            node_segments("n2", &Properties::new(), "Aux/topology"),
            seg(&[(NODE_NAME_KEY, "n2")])
        );
    }

    #[test]
    fn diskful_nodes_follow_the_flag_rules() {
        let replica = |node: &str, flags: &[&str]| Replica::new("rd", node, flags.iter().copied());
        let replicas = [
            replica("a", &[]),
            replica("b", &["DISKLESS", "DRBD_DISKLESS"]),
            replica("c", &["DELETE"]),
            replica("d", &["FAILED_DEPLOYMENT"]),
            replica("e", &["FAILED_DISCONNECT"]),
            replica("f", &["INACTIVE", "AUTO_SELECTED"]),
            replica("a", &[]),
            replica("", &[]),
            Replica::new("", "g", Vec::<String>::new()),
            replica("h", &["diskless"]),
        ];
        assert_eq!(diskful_nodes(&replicas), ["a", "f", "h"]);
    }

    #[test]
    fn accessibility_is_sorted_deduplicated_and_detects_everywhere() {
        let n1 = seg(&[(NODE_NAME_KEY, "n1"), ("zone", "z2")]);
        let n2 = seg(&[(NODE_NAME_KEY, "n2"), ("zone", "z1")]);
        let n3 = seg(&[(NODE_NAME_KEY, "n3"), ("zone", "z1")]);
        let zone = RemoteAccessPolicy::new(vec![RemoteAccessRule::from_same(["zone"])]);
        assert_eq!(
            Accessibility::from_nodes(&zone, [&n1, &n2, &n3]),
            Accessibility::Restricted(vec![seg(&[("zone", "z1")]), seg(&[("zone", "z2")])])
        );
        assert_eq!(
            Accessibility::from_nodes(&RemoteAccessPolicy::local_only(), [&n2, &n1]),
            Accessibility::Restricted(vec![seg(&[(NODE_NAME_KEY, "n1")]), seg(&[(NODE_NAME_KEY, "n2")])])
        );
        // A node without the zone key makes the volume reachable from everywhere.
        let bare = seg(&[(NODE_NAME_KEY, "n4")]);
        assert_eq!(
            Accessibility::from_nodes(&zone, [&n1, &bare]),
            Accessibility::Everywhere
        );
        assert_eq!(
            Accessibility::from_nodes(&RemoteAccessPolicy::anywhere(), [&n1]),
            Accessibility::Everywhere
        );
        assert_eq!(
            Accessibility::from_nodes(&RemoteAccessPolicy::new(Vec::new()), [&n1]),
            Accessibility::Everywhere
        );
        assert_eq!(Accessibility::Everywhere.topologies(), &[] as &[Segments]);
    }
}
