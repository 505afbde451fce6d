//! Integration-test support against a real Kubernetes control plane.
//!
//! One control plane (etcd, kube-apiserver, kube-controller-manager with the PV binder and the PV/PVC
//! protection controllers and the StatefulSet controller, kube-scheduler) is started per test binary through `scripts/k8s/up`, or an
//! existing one is attached through [`KUBECONFIG_ENV`]. The cluster outlives no test binary: `up` runs a
//! watchdog that stops it once the test process is gone, so no destructor is needed.
//!
//! Each test obtains a [`TestEnv`] with [`TestEnv::setup`]: its own name prefix, its own namespace and
//! a fresh [`kube::Client`] bound to the test's runtime, so tests run in parallel within one binary.
//!
//! The test PVs look provisioned by LINSTOR CSI, and a [`ReclaimEmulator`] does what the CSI
//! external-provisioner would do with them when they are released or deleted, recording every
//! volume it deletes.
//!
//! When no cluster can be provided (the binaries were never built), [`TestEnv::setup`] returns `None`
//! after printing `SKIPPED: <reason>` to stderr, except with `CI=true`, where it fails the test.
//!
//! ```no_run
//! # async fn example() {
//! let Some(env) = kube_harness::TestEnv::setup("my_test").await else { return };
//! let node = env.create_node("a").await;
//! # let _ = node;
//! # }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod env;
mod objects;
mod process;
mod rbac;
mod reclaim;

pub use cluster::{BIN_DIR_ENV, Cluster, ClusterError, KEEP_LOGS_ENV, KUBECONFIG_ENV, scripts_dir};
pub use env::{BoundVolume, RESYNC_ANNOTATION, TestEnv, pod_spec_with_claim};
pub use objects::{
    CSI_DRIVER, TEST_LABEL, VolumeOptions, affinity_nodes, hostname_affinity, micro_time_now,
    persistent_volume, time_now,
};
pub use process::LoggedProcess;
pub use rbac::ServiceAccountAccess;
pub use reclaim::{
    DeleteVolume, PROVISIONED_BY_ANNOTATION, PROVISIONER_FINALIZER, Reclaim, ReclaimEmulator, ReclaimReason,
    SKIP_RECLAIM_ANNOTATION, linstor_volume_deleter,
};
