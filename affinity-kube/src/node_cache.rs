//! The Kubernetes node cache of the drain reconciler: per node only what a
//! drain decision reads ([`KubeNodeView`]), kept by watch. A node deleted
//! while the controller runs stays as a tombstone (`deleted`), so the delete
//! policy applies even when the deletion was only noticed at a re-list.

use std::collections::BTreeMap;
use std::sync::Mutex;

use affinity_core::drain::KubeNodeView;
use affinity_core::k8s_openapi::api::core::v1::Node;
use affinity_core::names::{EVACUATE_TAINT, KUBERNETES_HOSTNAME_LABEL};
use tokio::sync::{Notify, watch};

use crate::lock;
use crate::watch::WatchSink;

/// What a drain decision reads of `node`.
pub fn view_of(node: &Node) -> Option<KubeNodeView> {
    let name = node.metadata.name.clone()?;
    let spec = node.spec.as_ref();
    Some(KubeNodeView {
        hostname: node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(KUBERNETES_HOSTNAME_LABEL).cloned()),
        unschedulable: spec.and_then(|spec| spec.unschedulable).unwrap_or(false),
        evacuate_taint: spec
            .and_then(|spec| spec.taints.as_ref())
            .is_some_and(|taints| taints.iter().any(|taint| taint.key == EVACUATE_TAINT)),
        deleted: node.metadata.deletion_timestamp.is_some(),
        name,
    })
}

/// Kubernetes nodes as the watch last saw them, with tombstones of the
/// deleted ones.
#[derive(Debug)]
pub struct NodeCache {
    nodes: Mutex<BTreeMap<String, KubeNodeView>>,
    pending: Mutex<Option<BTreeMap<String, KubeNodeView>>>,
    change_signal: Notify,
    synced: watch::Sender<bool>,
}

impl NodeCache {
    /// An empty cache, not synced; the drain reconciler's watch fills it.
    pub(crate) fn new() -> Self {
        Self {
            nodes: Mutex::default(),
            pending: Mutex::default(),
            change_signal: Notify::new(),
            synced: watch::Sender::new(false),
        }
    }

    /// The nodes, deleted ones included.
    pub fn views(&self) -> Vec<KubeNodeView> {
        lock(&self.nodes).values().cloned().collect()
    }

    /// Waits until a node changed in a way a drain decision reads.
    pub(crate) async fn changed(&self) {
        self.change_signal.notified().await;
    }

    /// Waits until the first list is complete.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as the cache, so this only ends synced.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    fn put(&self, view: KubeNodeView) {
        let changed = lock(&self.nodes).insert(view.name.clone(), view.clone()) != Some(view);
        if changed {
            self.change_signal.notify_one();
        }
    }
}

impl WatchSink<Node> for NodeCache {
    fn list_started(&self) {
        *lock(&self.pending) = Some(BTreeMap::new());
    }

    fn listed(&self, object: Node) {
        if let (Some(pending), Some(view)) = (lock(&self.pending).as_mut(), view_of(&object)) {
            pending.insert(view.name.clone(), view);
        }
    }

    fn list_done(&self) {
        let Some(mut listed) = lock(&self.pending).take() else {
            return;
        };
        let mut nodes = lock(&self.nodes);
        // Nodes gone since the last list were deleted meanwhile.
        for (name, view) in nodes.iter() {
            if !listed.contains_key(name) {
                listed.insert(
                    name.clone(),
                    KubeNodeView {
                        deleted: true,
                        ..view.clone()
                    },
                );
            }
        }
        let changed = *nodes != listed;
        *nodes = listed;
        drop(nodes);
        self.synced.send_replace(true);
        if changed {
            self.change_signal.notify_one();
        }
    }

    fn applied(&self, object: Node) {
        if let Some(view) = view_of(&object) {
            self.put(view);
        }
    }

    fn deleted(&self, object: Node) {
        if let Some(view) = view_of(&object) {
            self.put(KubeNodeView {
                deleted: true,
                ..view
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, unschedulable: bool, taint: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: taint.map(|key| {
                    vec![Taint {
                        key: key.to_owned(),
                        effect: "NoExecute".to_owned(),
                        ..Taint::default()
                    }]
                }),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn views_read_the_cordon_and_the_evacuate_taint_only() {
        let view = view_of(&node("a", true, Some(EVACUATE_TAINT))).unwrap();
        assert!(view.unschedulable && view.evacuate_taint && !view.deleted);
        let other = view_of(&node("b", false, Some("example.com/other"))).unwrap();
        assert!(!other.unschedulable && !other.evacuate_taint);
    }

    #[test]
    fn a_node_missing_from_a_new_list_is_a_deleted_tombstone() {
        let cache = NodeCache::new();
        cache.list_started();
        cache.listed(node("a", false, None));
        cache.listed(node("b", false, None));
        cache.list_done();
        cache.list_started();
        cache.listed(node("a", false, None));
        cache.list_done();
        let views = cache.views();
        assert_eq!(views.len(), 2);
        assert!(views.iter().any(|v| v.name == "b" && v.deleted));
        cache.applied(node("b", false, None));
        assert!(cache.views().iter().all(|v| !v.deleted));
        cache.deleted(node("a", true, None));
        assert!(cache.views().iter().any(|v| v.name == "a" && v.deleted));
    }
}
