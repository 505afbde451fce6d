//! Prometheus metrics of the controller.
//!
//! The reconcile and operation series keep the names of the Go
//! `linstor-affinity-controller`, so existing dashboards and alerts keep
//! working; the remaining series are additions under the same prefix.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::permissions::Paths;
use crate::throttle::RequestCounter;

/// What an operation does, named as the reference's metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Replace (or re-create) a PV: metric operation `ReplacePV`.
    ReplacePv,
    /// Remove the saved state of a finished replace: `ResetOperation`.
    ResetOperation,
    /// Restore the reclaim policy of a PV created at `Retain` once its
    /// claim owns it: `RestoreReclaimPolicy`.
    RestoreReclaimPolicy,
}

impl OperationKind {
    /// Every kind, so that metric series exist from the start.
    pub const ALL: [OperationKind; 3] = [Self::ReplacePv, Self::ResetOperation, Self::RestoreReclaimPolicy];

    /// The metric label of the operation, as the reference spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReplacePv => "ReplacePV",
            Self::ResetOperation => "ResetOperation",
            Self::RestoreReclaimPolicy => "RestoreReclaimPolicy",
        }
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only reconciler of this controller; the label value matches the Go reference.
const RECONCILER: &str = "AffinityReconciler";

/// Label sets: `[("reconciler", ..)]`, `[("operation", ..)]` or both, in that order.
type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// The controller's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels<1>, Counter>,
    reconcile_failures: Family<Labels<1>, Counter>,
    reconcile_duration: Histograms<1>,
    operations: Family<Labels<1>, Counter>,
    operation_failures: Family<Labels<1>, Counter>,
    operations_per_reconciler: Family<Labels<2>, Counter>,
    operation_duration: Histograms<1>,
    pvs_replaced: Counter,
    pvs_out_of_sync: Gauge,
    pvs_held_at_retain: Gauge,
    intents_held: Gauge,
    last_successful_reconcile: Gauge<f64, AtomicU64>,
    linstor_errors: Counter,
    linstor_received_bytes: Counter,
    kubernetes_errors: Counter,
    kubernetes_requests: Counter,
    leading: Gauge,
    cached_pvs: Gauge,
    paths: Family<[(&'static str, &'static str); 1], Gauge>,
    nodes_draining: Gauge,
    drain_replicas_remaining: Family<[(&'static str, String); 1], Gauge>,
}

/// Buckets from 1 ms to about 65 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn reconciler_labels() -> Labels<1> {
    [("reconciler", RECONCILER)]
}

fn operation_labels(operation: OperationKind) -> Labels<1> {
    [("operation", operation.as_str())]
}

/// Saturates rather than wraps: a gauge is an `i64`.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Creates and registers all metrics, each labelled series at zero.
    pub fn new() -> Self {
        let metrics = Metrics {
            registry: Registry::with_prefix("linstor_affinity_controller"),
            reconciles: Family::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            operations: Family::default(),
            operation_failures: Family::default(),
            operations_per_reconciler: Family::default(),
            operation_duration: Family::new_with_constructor(duration_histogram),
            pvs_replaced: Counter::default(),
            pvs_out_of_sync: Gauge::default(),
            pvs_held_at_retain: Gauge::default(),
            intents_held: Gauge::default(),
            last_successful_reconcile: Gauge::default(),
            linstor_errors: Counter::default(),
            linstor_received_bytes: Counter::default(),
            kubernetes_errors: Counter::default(),
            kubernetes_requests: Counter::default(),
            leading: Gauge::default(),
            cached_pvs: Gauge::default(),
            paths: Family::default(),
            nodes_draining: Gauge::default(),
            drain_replicas_remaining: Family::default(),
        };
        metrics.register()
    }

    /// Registers clones (they share their values) and touches every label
    /// set, so that dashboards see zeros before the first event.
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        // prometheus-client appends `_total` to counter names itself.
        r.register("reconciles", "Number of reconciles", self.reconciles.clone());
        r.register(
            "reconciles_failures",
            "Number of failed reconciles",
            self.reconcile_failures.clone(),
        );
        r.register(
            "reconciles_duration",
            "Duration of reconciles in seconds",
            self.reconcile_duration.clone(),
        );
        r.register("operations", "Number of operations", self.operations.clone());
        r.register(
            "operations_failures",
            "Number of failed operations",
            self.operation_failures.clone(),
        );
        r.register(
            "operations_per_reconciler",
            "Number of operations per reconciler",
            self.operations_per_reconciler.clone(),
        );
        r.register(
            "operations_duration",
            "Duration of operations in seconds",
            self.operation_duration.clone(),
        );
        r.register(
            "pvs_replaced",
            "Number of PVs replaced",
            self.pvs_replaced.clone(),
        );
        r.register(
            "pvs_out_of_sync",
            "Number of PVs whose node affinity differed from LINSTOR in the last reconcile",
            self.pvs_out_of_sync.clone(),
        );
        r.register(
            "pvs_held_at_retain",
            "Number of PVs this controller created at reclaim policy Retain whose claim does not own them (yet), in the last reconcile",
            self.pvs_held_at_retain.clone(),
        );
        r.register(
            "intents_held",
            "Number of saved replace intents kept without any write because the cluster contradicts them, in the last reconcile",
            self.intents_held.clone(),
        );
        r.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last successful reconcile",
            self.last_successful_reconcile.clone(),
        );
        r.register(
            "linstor_request_errors",
            "Number of failed LINSTOR reads and writes (a failed read of the three lists counts once)",
            self.linstor_errors.clone(),
        );
        r.register(
            "linstor_received_bytes",
            "Bytes of LINSTOR's resource definition and resource lists received by reconcile passes",
            self.linstor_received_bytes.clone(),
        );
        r.register(
            "kubernetes_request_errors",
            "Number of failed requests to the Kubernetes API",
            self.kubernetes_errors.clone(),
        );
        r.register(
            "kubernetes_requests",
            "Number of requests sent to the Kubernetes API",
            self.kubernetes_requests.clone(),
        );
        r.register(
            "leader",
            "Whether this instance holds the leader lease (1) or not (0)",
            self.leading.clone(),
        );
        r.register(
            "cached_pvs",
            "Number of PVs in the watch cache",
            self.cached_pvs.clone(),
        );
        r.register(
            "path_enabled",
            "Whether an optional path of the controller is on (1) or off (0) because RBAC does not grant it",
            self.paths.clone(),
        );

        r.register(
            "nodes_draining",
            "Number of LINSTOR nodes drained for their Kubernetes node (no new replicas, queued, evacuating or blocked)",
            self.nodes_draining.clone(),
        );
        r.register(
            "drain_replicas_remaining",
            "Number of resources left on a LINSTOR node this controller evacuates",
            self.drain_replicas_remaining.clone(),
        );

        let reconciler = reconciler_labels();
        self.reconciles.get_or_create_owned(&reconciler);
        self.reconcile_failures.get_or_create_owned(&reconciler);
        self.reconcile_duration.get_or_create_owned(&reconciler);
        for operation in OperationKind::ALL {
            let labels = operation_labels(operation);
            self.operations.get_or_create_owned(&labels);
            self.operation_failures.get_or_create_owned(&labels);
            self.operation_duration.get_or_create_owned(&labels);
            self.operations_per_reconciler
                .get_or_create_owned(&[("reconciler", RECONCILER), ("operation", operation.as_str())]);
        }
        self
    }

    /// Sets the drain figures: the nodes draining, and the resources left
    /// on each node evacuated (nodes not listed lose their series).
    pub fn set_drains(&self, draining: u64, remaining: &[(String, u64)]) {
        self.nodes_draining.set(gauge_value(draining));
        self.drain_replicas_remaining.clear();
        for (node, left) in remaining {
            self.drain_replicas_remaining
                .get_or_create(&[("node", node.clone())])
                .set(gauge_value(*left));
        }
    }

    /// Records one reconcile; a success also sets the last-successful time to now.
    pub fn record_reconcile(&self, duration: Duration, succeeded: bool) {
        let labels = reconciler_labels();
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if succeeded {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_successful_reconcile.set(now.as_secs_f64());
        } else {
            self.reconcile_failures.get_or_create(&labels).inc();
        }
    }

    /// Records one operation; a successful [`OperationKind::ReplacePv`] also counts a replaced PV.
    pub fn record_operation(&self, operation: OperationKind, duration: Duration, succeeded: bool) {
        let labels = operation_labels(operation);
        self.operations.get_or_create(&labels).inc();
        self.operations_per_reconciler
            .get_or_create(&[("reconciler", RECONCILER), ("operation", operation.as_str())])
            .inc();
        self.operation_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if !succeeded {
            self.operation_failures.get_or_create(&labels).inc();
        } else if operation == OperationKind::ReplacePv {
            self.pvs_replaced.inc();
        }
    }

    /// Sets the number of PVs found out of sync in the current cycle.
    pub fn set_out_of_sync(&self, pvs: u64) {
        self.pvs_out_of_sync.set(gauge_value(pvs));
    }

    /// Sets the number of PVs held at `Retain` until their claim owns them,
    /// and the number of intents the cluster contradicts, found in the
    /// current cycle.
    pub fn set_held(&self, pvs_at_retain: u64, intents: u64) {
        self.pvs_held_at_retain.set(gauge_value(pvs_at_retain));
        self.intents_held.set(gauge_value(intents));
    }

    /// Sets the number of PVs in the watch cache.
    pub fn set_cached_pvs(&self, pvs: u64) {
        self.cached_pvs.set(gauge_value(pvs));
    }

    /// Sets whether this instance is the leader.
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    /// Sets which optional paths are on.
    pub fn set_paths(&self, paths: &Paths) {
        for (path, on) in paths.by_name() {
            self.paths.get_or_create(&[("path", path)]).set(i64::from(on));
        }
    }

    /// Counts a failed request to the LINSTOR API.
    pub fn record_linstor_error(&self) {
        self.linstor_errors.inc();
    }

    /// Counts bytes of LINSTOR lists received.
    pub fn record_linstor_bytes(&self, bytes: u64) {
        self.linstor_received_bytes.inc_by(bytes);
    }

    /// Counts a failed request to the Kubernetes API.
    pub fn record_kubernetes_error(&self) {
        self.kubernetes_errors.inc();
    }

    /// The counter of requests to the Kubernetes API, for the client's
    /// service stack (see [`crate::throttle::ThrottleLayer::counting`]).
    pub fn kubernetes_requests(&self) -> Counter {
        self.kubernetes_requests.clone()
    }

    /// Encodes all metrics in the OpenMetrics text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an error would mean a malformed metric.
        if let Err(err) = encode(&mut text, &self.registry) {
            tracing::error!(%err, "encoding metrics failed");
        }
        text
    }
}

/// Counts the Kubernetes requests of a [`crate::throttle::ThrottleLayer`]
/// ([`Metrics::kubernetes_requests`]).
impl RequestCounter for Counter {
    fn request_sent(&self) {
        self.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics.encode().lines().map(str::to_owned).collect()
    }

    fn assert_line(lines: &[String], expected: &str) {
        assert!(
            lines.iter().any(|line| line == expected),
            "missing line {expected:?} in:\n{}",
            lines.join("\n")
        );
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }

    #[test]
    fn all_counters_start_at_zero_under_the_go_names() {
        let lines = lines(&Metrics::new());
        for line in [
            r#"linstor_affinity_controller_reconciles_total{reconciler="AffinityReconciler"} 0"#,
            r#"linstor_affinity_controller_reconciles_failures_total{reconciler="AffinityReconciler"} 0"#,
            r#"linstor_affinity_controller_operations_total{operation="ReplacePV"} 0"#,
            r#"linstor_affinity_controller_operations_total{operation="ResetOperation"} 0"#,
            r#"linstor_affinity_controller_operations_failures_total{operation="ReplacePV"} 0"#,
            r#"linstor_affinity_controller_operations_failures_total{operation="ResetOperation"} 0"#,
            r#"linstor_affinity_controller_operations_per_reconciler_total{reconciler="AffinityReconciler",operation="ReplacePV"} 0"#,
            r#"linstor_affinity_controller_operations_per_reconciler_total{reconciler="AffinityReconciler",operation="ResetOperation"} 0"#,
            r#"linstor_affinity_controller_reconciles_duration_count{reconciler="AffinityReconciler"} 0"#,
            r#"linstor_affinity_controller_operations_duration_count{operation="ReplacePV"} 0"#,
            "linstor_affinity_controller_pvs_replaced_total 0",
            "linstor_affinity_controller_pvs_out_of_sync 0",
            "linstor_affinity_controller_linstor_request_errors_total 0",
            "linstor_affinity_controller_kubernetes_request_errors_total 0",
            "linstor_affinity_controller_leader 0",
            "linstor_affinity_controller_cached_pvs 0",
            "# TYPE linstor_affinity_controller_reconciles_duration histogram",
            "# EOF",
        ] {
            assert_line(&lines, line);
        }
        // Every metric carries HELP text.
        let types = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = lines.iter().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        // No doubled suffix from naming a counter `..._total` ourselves.
        assert!(lines.iter().all(|l| !l.contains("_total_total")));
    }

    #[test]
    fn reconciles_count_failures_and_durations() {
        let metrics = Metrics::new();
        metrics.record_reconcile(Duration::from_millis(3), true);
        let lines = lines(&metrics);
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_total{reconciler="AffinityReconciler"} 1"#,
        );
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_failures_total{reconciler="AffinityReconciler"} 0"#,
        );
        let timestamp = lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("linstor_affinity_controller_last_successful_reconcile_timestamp_seconds ")
            })
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap();
        assert!(timestamp > 1.6e9, "{timestamp}");

        metrics.record_reconcile(Duration::from_secs(2), false);
        let lines = self::lines(&metrics);
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_total{reconciler="AffinityReconciler"} 2"#,
        );
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_failures_total{reconciler="AffinityReconciler"} 1"#,
        );
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_duration_count{reconciler="AffinityReconciler"} 2"#,
        );
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_duration_sum{reconciler="AffinityReconciler"} 2.003"#,
        );
        assert_line(
            &lines,
            r#"linstor_affinity_controller_reconciles_duration_bucket{le="0.004",reconciler="AffinityReconciler"} 1"#,
        );
    }

    #[test]
    fn drain_figures_replace_the_previous_ones() {
        let metrics = Metrics::new();
        metrics.set_drains(2, &[("a".to_owned(), 3), ("b".to_owned(), 0)]);
        let lines = lines(&metrics);
        assert_line(&lines, "linstor_affinity_controller_nodes_draining 2");
        assert_line(
            &lines,
            r#"linstor_affinity_controller_drain_replicas_remaining{node="a"} 3"#,
        );
        metrics.set_drains(1, &[("b".to_owned(), 0)]);
        let after = super::tests::lines(&metrics);
        assert_line(&after, "linstor_affinity_controller_nodes_draining 1");
        assert!(
            !after.iter().any(|line| line.contains(r#"node="a""#)),
            "a node no longer evacuated loses its series: {after:?}"
        );
    }

    #[test]
    fn operations_count_per_operation_and_replaced_pvs() {
        let metrics = Metrics::new();
        metrics.record_operation(OperationKind::ReplacePv, Duration::from_millis(10), true);
        metrics.record_operation(OperationKind::ReplacePv, Duration::from_millis(10), false);
        metrics.record_operation(OperationKind::ResetOperation, Duration::from_millis(10), true);
        let lines = lines(&metrics);
        for line in [
            r#"linstor_affinity_controller_operations_total{operation="ReplacePV"} 2"#,
            r#"linstor_affinity_controller_operations_total{operation="ResetOperation"} 1"#,
            r#"linstor_affinity_controller_operations_failures_total{operation="ReplacePV"} 1"#,
            r#"linstor_affinity_controller_operations_failures_total{operation="ResetOperation"} 0"#,
            r#"linstor_affinity_controller_operations_per_reconciler_total{reconciler="AffinityReconciler",operation="ReplacePV"} 2"#,
            r#"linstor_affinity_controller_operations_duration_count{operation="ReplacePV"} 2"#,
            "linstor_affinity_controller_pvs_replaced_total 1",
        ] {
            assert_line(&lines, line);
        }
    }

    #[test]
    fn gauges_and_error_counters() {
        let metrics = Metrics::default();
        metrics.set_out_of_sync(4);
        metrics.set_cached_pvs(u64::MAX);
        metrics.set_leading(true);
        metrics.record_linstor_error();
        metrics.record_kubernetes_error();
        metrics.record_kubernetes_error();
        let lines = lines(&metrics);
        for line in [
            "linstor_affinity_controller_pvs_out_of_sync 4",
            "linstor_affinity_controller_cached_pvs 9223372036854775807",
            "linstor_affinity_controller_leader 1",
            "linstor_affinity_controller_linstor_request_errors_total 1",
            "linstor_affinity_controller_kubernetes_request_errors_total 2",
        ] {
            assert_line(&lines, line);
        }
        metrics.set_leading(false);
        assert_line(&self::lines(&metrics), "linstor_affinity_controller_leader 0");
    }

    #[test]
    fn paths_show_which_are_off() {
        let metrics = Metrics::default();
        metrics.set_paths(&Paths {
            claims: false,
            mark_bound: false,
            ..Paths::ALL
        });
        let lines = lines(&metrics);
        for line in [
            r#"linstor_affinity_controller_path_enabled{path="claims"} 0"#,
            r#"linstor_affinity_controller_path_enabled{path="mark_bound"} 0"#,
            r#"linstor_affinity_controller_path_enabled{path="watch_storage_classes"} 1"#,
            r#"linstor_affinity_controller_path_enabled{path="core_events"} 1"#,
            r#"linstor_affinity_controller_path_enabled{path="events"} 1"#,
        ] {
            assert_line(&lines, line);
        }
    }

    #[test]
    fn operation_names_match_the_go_reference() {
        assert_eq!(OperationKind::ReplacePv.to_string(), "ReplacePV");
        assert_eq!(OperationKind::ResetOperation.as_str(), "ResetOperation");
    }
}
