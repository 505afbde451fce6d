//! The controller on a real control plane while LINSTOR misbehaves: down
//! (connection refused), answering 500, dropping connections, sending
//! malformed JSON, or answering slowly. While LINSTOR cannot be read no PV is
//! touched (deciding on part of the state could give a PV a wrong affinity);
//! the failure is logged naming the endpoint and counted in the metrics; once
//! LINSTOR answers again the controller recovers by itself and replaces the
//! drifted PV.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use kube_harness::BoundVolume;
use linstor_api::sim::{Fault, FaultKind, SimState, Simulator};
use support::{ControllerProcess, Scenario, affinity_nodes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The endpoint key of the intent log writes in the simulator's counters.
const VOLUME_DEFINITION_PUT: &str =
    "PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}";
const LINSTOR_ERRORS: &str = "linstor_affinity_controller_linstor_request_errors_total";
const RECONCILE_FAILURES: &str =
    r#"linstor_affinity_controller_reconciles_failures_total{reconciler="AffinityReconciler"}"#;
const RECONCILES: &str = r#"linstor_affinity_controller_reconciles_total{reconciler="AffinityReconciler"}"#;
const LAST_SUCCESS: &str = "linstor_affinity_controller_last_successful_reconcile_timestamp_seconds";

/// The address the controller's metrics endpoint is bound to, from its log.
async fn metrics_address(controller: &ControllerProcess) -> String {
    let line = controller
        .wait_for_line("metrics endpoint", Duration::from_secs(30))
        .await;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

/// `GET /metrics` over a plain TCP connection; the body.
async fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("metrics answer within 10 s")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` (name with its labels) in `metrics`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A scenario with one bound volume whose PV names node 0 while its only
/// replica is on node 1: the controller replaces it as soon as it can read
/// LINSTOR.
async fn drifted(test: &str) -> Option<(Scenario, BoundVolume)> {
    let scenario = Scenario::new(test, 2).await?;
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 1).await;
    Some((scenario, bound))
}

fn pv_name(bound: &BoundVolume) -> String {
    bound.pv.metadata.name.clone().unwrap()
}

/// While LINSTOR cannot be read: passes fail with an error naming one of
/// `endpoints` (and every word of `words`), the failures are counted, and
/// for several passes the PV keeps its UID and affinity and no intent is
/// written. `counted` is where intent writes would show (the simulator the
/// controller talks to).
async fn assert_left_alone(
    scenario: &Scenario,
    bound: &BoundVolume,
    controller: &ControllerProcess,
    metrics: &str,
    endpoints: &[&str],
    words: &[&str],
) {
    let name = pv_name(bound);
    let uid = bound.pv.metadata.uid.clone().unwrap();
    let failed = controller
        .wait_for_line("pass failed", Duration::from_secs(60))
        .await;
    assert!(
        failed.contains("reading the LINSTOR"),
        "{failed}\n{}",
        controller.log()
    );
    assert!(
        endpoints
            .iter()
            .any(|endpoint| failed.contains(&format!("GET {endpoint}"))),
        "no endpoint of {endpoints:?} named in {failed}"
    );
    for word in words {
        assert!(failed.contains(word), "{word:?} not in {failed}");
    }

    // Counted: LINSTOR errors and failed full reconciles, never a success.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(metrics).await;
        if sample(&text, LINSTOR_ERRORS) > 0.0 && sample(&text, RECONCILE_FAILURES) > 0.0 {
            assert!(
                sample(&text, LAST_SUCCESS) == 0.0,
                "a reconcile succeeded:\n{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failures not counted within 30 s:\n{text}\nlog:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Several more passes (one per second) fail and leave the PV alone.
    let failures_before = controller.count("pass failed");
    controller
        .wait_for_count("pass failed", failures_before + 3, Duration::from_secs(30))
        .await;
    let text = scrape(metrics).await;
    assert!(
        sample(&text, RECONCILE_FAILURES) >= 2.0,
        "failed reconciles not counted:\n{text}"
    );
    assert_eq!(sample(&text, LAST_SUCCESS), 0.0, "{text}");
    let pv = scenario.env.pvs().get(&name).await.unwrap();
    assert_eq!(
        pv.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "PV replaced while LINSTOR was unreadable:\n{}",
        controller.log()
    );
    assert_eq!(affinity_nodes(&pv), [scenario.node(0)]);
    assert_eq!(pv.metadata.deletion_timestamp, None);
    assert_eq!(
        pv.spec
            .as_ref()
            .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref()),
        Some("Delete")
    );
    assert!(scenario.saved_pv(&name).is_none(), "intent written");
    assert_eq!(scenario.sim.count(VOLUME_DEFINITION_PUT), 0);
    assert_eq!(controller.count("PV replaced"), 0);
}

/// Once LINSTOR answers again: the PV is replaced with affinity on node 1,
/// the intent is cleared, the claim is bound, and a reconcile succeeds.
async fn assert_recovers(
    scenario: &Scenario,
    bound: &BoundVolume,
    controller: &ControllerProcess,
    metrics: &str,
) {
    let name = pv_name(bound);
    let uid = bound.pv.metadata.uid.clone().unwrap();
    scenario
        .wait_for_pv(
            &name,
            "replaced with affinity on node 1",
            Duration::from_secs(60),
            |pv| pv.metadata.uid.as_deref() != Some(uid.as_str()) && affinity_nodes(pv) == [scenario.node(1)],
        )
        .await;
    let claim = bound.pvc.metadata.name.clone().unwrap();
    scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while scenario.saved_pv(&name).is_some() {
        assert!(Instant::now() < deadline, "intent not cleared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Logged once the replace is announced, after the intent was cleared.
    controller
        .wait_for_line("PV replaced", Duration::from_secs(30))
        .await;
    assert_eq!(controller.count("PV replaced"), 1, "{}", controller.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(metrics).await;
        if sample(&text, LAST_SUCCESS) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no successful reconcile:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Injects `faults` before the controller starts, checks that nothing is
/// touched while they last, clears them and checks the recovery.
async fn fault_then_recovery(test: &str, faults: Vec<Fault>, endpoints: &[&str], words: &[&str]) {
    let Some((scenario, bound)) = drifted(test).await else {
        return;
    };
    for fault in faults {
        scenario.sim.add_fault(fault);
    }
    let controller = scenario.controller(&["--metrics-address", "127.0.0.1:0"]);
    let metrics = metrics_address(&controller).await;
    assert_left_alone(&scenario, &bound, &controller, &metrics, endpoints, words).await;
    scenario.sim.clear_faults();
    assert_recovers(&scenario, &bound, &controller, &metrics).await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_500_on_resource_definitions_touches_nothing_until_linstor_recovers() {
    fault_then_recovery(
        "faults-500",
        vec![
            Fault::new(FaultKind::Error {
                status: 500,
                message: "controller on fire".to_owned(),
            })
            .on_method("GET")
            .on_path("/v1/resource-definitions"),
        ],
        &["/v1/resource-definitions"],
        &["HTTP 500", "controller on fire"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_on_the_resource_view_touch_nothing_until_linstor_recovers() {
    fault_then_recovery(
        "faults-drop",
        vec![
            Fault::new(FaultKind::Drop)
                .on_method("GET")
                .on_path("/v1/view/resources"),
        ],
        &["/v1/view/resources"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_from_nodes_touches_nothing_until_linstor_recovers() {
    fault_then_recovery(
        "faults-json",
        vec![
            Fault::new(FaultKind::MalformedJson)
                .on_method("GET")
                .on_path("/v1/nodes"),
        ],
        &["/v1/nodes"],
        &["cannot decode"],
    )
    .await;
}

/// LINSTOR down: nothing listens on its address (connection refused) until a
/// simulator with the same state starts there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linstor_down_touches_nothing_and_the_controller_reconnects_by_itself() {
    let Some((mut scenario, bound)) = drifted("faults-down").await else {
        return;
    };
    let address = scenario.sim.http_addr().unwrap();
    let url = scenario.sim.http_url().unwrap();
    let state = scenario.sim.state();
    // Stop the simulator; a stand-in (elsewhere, never contacted) takes its place in the scenario.
    let stand_in = Simulator::start(SimState::default()).await.unwrap();
    drop(std::mem::replace(&mut scenario.sim, stand_in));
    // The listener closes once its aborted task is dropped, a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(address).await.is_ok() {
        assert!(Instant::now() < deadline, "LINSTOR still answers at {address}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let controller = scenario.controller_with_linstor(&url, &["--metrics-address", "127.0.0.1:0"]);
    let metrics = metrics_address(&controller).await;
    assert_left_alone(
        &scenario,
        &bound,
        &controller,
        &metrics,
        &["/v1/resource-definitions", "/v1/view/resources", "/v1/nodes"],
        &["cannot connect to any LINSTOR controller"],
    )
    .await;

    scenario.sim = Simulator::builder()
        .state(state)
        .http_addr(address)
        .start()
        .await
        .unwrap();
    assert_recovers(&scenario, &bound, &controller, &metrics).await;
    scenario.finish().await;
}

/// A slow LINSTOR (3 s per read, well below the LINSTOR client's 60 s
/// request timeout) only slows the passes down: nothing fails, the PV is
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_linstor_slows_passes_down_without_failures() {
    const DELAY_MS: u64 = 3000;
    let Some((scenario, bound)) = drifted("faults-slow").await else {
        return;
    };
    for path in ["/v1/resource-definitions", "/v1/view/resources", "/v1/nodes"] {
        scenario.sim.add_fault(
            Fault::new(FaultKind::Latency { ms: DELAY_MS })
                .on_method("GET")
                .on_path(path),
        );
    }
    let controller = scenario.controller(&["--metrics-address", "127.0.0.1:0"]);
    let metrics = metrics_address(&controller).await;
    let name = pv_name(&bound);
    let uid = bound.pv.metadata.uid.clone().unwrap();
    scenario
        .wait_for_pv(
            &name,
            "replaced with affinity on node 1",
            Duration::from_secs(90),
            |pv| pv.metadata.uid.as_deref() != Some(uid.as_str()) && affinity_nodes(pv) == [scenario.node(1)],
        )
        .await;
    let claim = bound.pvc.metadata.name.clone().unwrap();
    scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
    controller
        .wait_for_line("PV replaced", Duration::from_secs(30))
        .await;

    // Let a few more slow passes finish, then look at what they did.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(&metrics).await;
        if sample(&text, RECONCILES) >= 2.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 reconciles in 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(controller.count("pass failed"), 0, "{}", controller.log());
    assert_eq!(sample(&text, RECONCILE_FAILURES), 0.0, "{text}");
    assert_eq!(sample(&text, LINSTOR_ERRORS), 0.0, "{text}");
    // Every full pass waited for the delayed reads.
    let count = sample(
        &text,
        r#"linstor_affinity_controller_reconciles_duration_count{reconciler="AffinityReconciler"}"#,
    );
    let sum = sample(
        &text,
        r#"linstor_affinity_controller_reconciles_duration_sum{reconciler="AffinityReconciler"}"#,
    );
    #[allow(clippy::cast_precision_loss)]
    let delay = DELAY_MS as f64 / 1000.0;
    assert!(
        count >= 2.0 && sum >= count * delay,
        "passes did not wait for LINSTOR: {sum} s in {count} passes"
    );
    assert!(scenario.saved_pv(&name).is_none(), "intent cleared");
    assert_eq!(controller.count("PV replaced"), 1, "{}", controller.log());
    scenario.finish().await;
}
