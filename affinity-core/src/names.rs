//! Names shared with LINSTOR CSI, the reference controller and Kubernetes.
//!
//! These values are part of the on-cluster contract: changing one breaks
//! interoperability with volumes, annotations and saved state written before.

/// The CSI driver whose volumes are managed.
pub const CSI_DRIVER: &str = "linstor.csi.linbit.com";

/// Topology key naming the LINSTOR node itself.
pub const NODE_NAME_KEY: &str = "linbit.com/hostname";

/// Property on a LINSTOR volume definition holding the replacement PV while a
/// replace is in progress: the intent log of the replace protocol.
pub const SAVED_PV_PROPERTY: &str = "Aux/affinity-updater-saved-pv";

/// Property on a LINSTOR resource definition that, with any non-empty value,
/// excludes all of its volumes.
pub const SKIP_PROPERTY: &str = "Aux/affinity-updater-skip";

/// PV annotation that, with any non-empty value, excludes the PV.
pub const SKIP_ANNOTATION: &str = "piraeus.io/skip-affinity-controller";

/// Prefix of PV annotation keys that override the remote access policy.
pub const OVERRIDE_ANNOTATION_PREFIX: &str = "override.piraeus.io";

/// Annotation telling LINSTOR CSI not to delete the backing volume when the PV
/// goes away (`<driver>/skip-reclaim`).
pub const SKIP_RECLAIM_ANNOTATION: &str = "linstor.csi.linbit.com/skip-reclaim";

/// Field manager used for server-side apply of replacement PVs.
pub const FIELD_MANAGER: &str = "linstor-affinity-controller-v1";

/// `reportingController` of the events the controller emits.
pub const EVENT_REPORTING_CONTROLLER: &str = "LinstorAffinityController";

/// Reason of the event emitted after a PV was replaced.
pub const EVENT_REASON: &str = "VolumeAffinityUpdated";

/// Action of the event emitted after a PV was replaced.
pub const EVENT_ACTION: &str = "Replaced with updated version";

/// Note of the event emitted after a PV was replaced.
pub const EVENT_NOTE: &str = "Affinity was out of sync with LINSTOR resource state";

/// CSI volume attribute marking volumes whose attributes carry their parameters.
pub const VOLUME_CONTEXT_MARKER: &str = "linstor.csi.linbit.com/uses-volume-context";

/// CSI volume attribute holding the remote access policy of the volume.
pub const VOLUME_CONTEXT_POLICY: &str = "linstor.csi.linbit.com/remote-access-policy";

/// Optional prefix of LINSTOR CSI StorageClass parameter keys.
pub const STORAGE_CLASS_PARAMETER_PREFIX: &str = "linstor.csi.linbit.com/";

/// StorageClass parameter holding the remote access policy (matched without case).
pub const ALLOW_REMOTE_VOLUME_ACCESS_PARAMETER: &str = "allowRemoteVolumeAccess";

/// StorageClass parameter holding the LINSTOR layer list (matched without case).
pub const LAYER_LIST_PARAMETER: &str = "layerList";

/// Property namespace of node labels written by Piraeus Operator v1 and LINSTOR CSI.
pub const LEGACY_PROPERTY_NAMESPACE: &str = "Aux";

/// Property namespace of node labels written by Piraeus Operator v2.
pub const TOPOLOGY_PROPERTY_NAMESPACE: &str = "Aux/topology";

/// Reclaim policy that keeps the backing volume when a PV is deleted.
pub const RECLAIM_RETAIN: &str = "Retain";

/// Volume mode assumed when a PV does not state one.
pub const DEFAULT_VOLUME_MODE: &str = "Filesystem";

/// PV phase of a volume whose claim was deleted.
pub const PHASE_RELEASED: &str = "Released";

/// PV phase of a volume whose reclaim failed.
pub const PHASE_FAILED: &str = "Failed";

/// PV phase of a volume bound to its claim.
pub const PHASE_BOUND: &str = "Bound";

/// Annotation on a PV this project created with reclaim policy `Retain` in
/// place of another: its value is the reclaim policy to restore once the
/// claim that owned the old PV owns the new one. Removed when restored.
pub const RESTORE_RECLAIM_POLICY_ANNOTATION: &str = "linstor.csi.linbit.com/affinity-restore-reclaim-policy";

/// Key of the saved PV document under which the intent records the PV it
/// retires (UID and resource version). Readers that decode the document as
/// a PersistentVolume, the reference controller's among them, ignore it.
pub const SAVED_RETIRES_KEY: &str = "linstorAffinityRetires";

/// Property on a LINSTOR node holding this project's drain record (JSON):
/// what it changed on the node to drain it, so undo restores exactly that.
pub const DRAIN_RECORD_PROPERTY: &str = "Aux/linstor-affinity/drain";

/// LINSTOR node property that, set to `false`, keeps new replicas off the node.
pub const AUTOPLACE_TARGET_PROPERTY: &str = "AutoplaceTarget";

/// Taint key on a Kubernetes node that requests evacuation of its LINSTOR
/// node, whatever the drain policy (any effect).
pub const EVACUATE_TAINT: &str = "piraeus.io/evacuate";

/// Kubernetes node label, also kept as a LINSTOR node property
/// (`<property namespace>/kubernetes.io/hostname`), that ties the two nodes.
pub const KUBERNETES_HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
