//! Bad input on a real control plane with the LINSTOR simulator: an invalid
//! override annotation, StorageClass value, saved PV or volume handle never
//! changes anything, is reported once (a warning event on the PV and a log
//! line, both naming the PV and the value), and the rest of the cluster is
//! still reconciled in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::{Event, PersistentVolume};
use affinity_core::names::{OVERRIDE_ANNOTATION_PREFIX, SAVED_PV_PROPERTY};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_harness::{BoundVolume, VolumeOptions};
use linstor_api::sim::{SimResource, SimResourceDefinition};
use serde_json::json;
use support::{ControllerProcess, Scenario, linstor_affinity};

/// How long a test waits for a replace or an event it expects.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Reason of the warning event on a PV the controller leaves alone.
const WARNING_REASON: &str = "AffinityNotManaged";
/// Namespace of the events about PVs.
const PV_EVENT_NAMESPACE: &str = "default";

fn name(bound: &BoundVolume) -> String {
    bound.pv.metadata.name.clone().unwrap()
}

/// The controller, named after the test so that its events can be told from
/// those of the controllers of other tests (which see every PV too).
struct Run {
    controller: ControllerProcess,
    instance: String,
}

/// Starts the controller, waits until the drifted volume `control` is
/// replaced (so every PV was decided for at least once) and for three more
/// full passes.
async fn run_until_control_replaced(scenario: &Scenario, control: &BoundVolume) -> Run {
    let identity = scenario.env.prefix().to_owned();
    let controller = scenario
        .run_until_control_replaced(control, &["--leader-election-id", &identity])
        .await;
    Run {
        controller,
        instance: format!("linstor-affinity-controller@{identity}"),
    }
}

/// The warning events this run's controller posted about PV `pv_name`.
async fn warnings_about(scenario: &Scenario, run: &Run, pv_name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(scenario.env.client(), PV_EVENT_NAMESPACE);
    let listed = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pv_name}")))
        .await
        .unwrap();
    listed
        .items
        .into_iter()
        .filter(|event| event.reporting_instance.as_deref() == Some(run.instance.as_str()))
        .filter(|event| event.reason.as_deref() == Some(WARNING_REASON))
        .collect()
}

/// Asserts that PV `before` (as read before the controller started) is
/// unchanged, that exactly one warning event names it and `value`, and that
/// the controller logged it once, naming the PV and `value`.
async fn assert_reported_once_and_unchanged(
    scenario: &Scenario,
    run: &Run,
    before: &PersistentVolume,
    value: &str,
) {
    let pv_name = before.metadata.name.clone().unwrap();
    scenario.assert_pv_unchanged(before).await;

    let log = &run.controller;
    let replaced = log.lines_with(&["PV replaced", &format!("pv={pv_name} ")]);
    assert!(replaced.is_empty(), "{replaced:?}");
    let logged = log.lines_with(&["PV left unchanged", &format!("pv={pv_name} "), value]);
    assert_eq!(
        logged.len(),
        1,
        "expected one log line naming {pv_name} and {value:?}; log:\n{}",
        log.log()
    );

    let events = warnings_about(scenario, run, &pv_name).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("PersistentVolume"));
    assert_eq!(event.involved_object.uid, before.metadata.uid);
    let message = event.message.clone().unwrap_or_default();
    assert!(
        message.contains(value),
        "event message {message:?} lacks {value:?}"
    );
}

/// Waits until this run's controller has posted a warning event about `pv_name`.
async fn wait_for_warning(scenario: &Scenario, run: &Run, pv_name: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while warnings_about(scenario, run, pv_name).await.is_empty() {
        if Instant::now() >= deadline {
            panic!(
                "no warning event about {pv_name} within {TIMEOUT:?}; log:\n{}",
                run.controller.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_override_annotation_is_reported_once() {
    let Some(scenario) = Scenario::new("bad-override", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let bad = scenario.volume("annotated", &class, 0, 1).await;
    let control = scenario.volume("control", &class, 0, 1).await;
    let value = "- fromSame: [oops";
    let key = format!("{OVERRIDE_ANNOTATION_PREFIX}/remote-access-policy");
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let before = scenario
        .env
        .pvs()
        .patch(&name(&bad), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let run = run_until_control_replaced(&scenario, &control).await;
    wait_for_warning(&scenario, &run, &name(&bad)).await;
    run.controller.wait_for_full_passes(2, TIMEOUT).await;
    assert_reported_once_and_unchanged(&scenario, &run, &before, value).await;
    assert!(scenario.saved_pv(&name(&bad)).is_none());
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_storage_class_value_is_reported_once() {
    let Some(scenario) = Scenario::new("bad-class", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let value = "maybe";
    let undecided = scenario
        .storage_class("undecided", &[("allowRemoteVolumeAccess", value)])
        .await;
    let bad = scenario.volume("classed", &undecided, 0, 1).await;
    let control = scenario.volume("control", &class, 0, 1).await;

    let run = run_until_control_replaced(&scenario, &control).await;
    wait_for_warning(&scenario, &run, &name(&bad)).await;
    run.controller.wait_for_full_passes(2, TIMEOUT).await;
    assert_reported_once_and_unchanged(&scenario, &run, &bad.pv, value).await;
    assert!(scenario.saved_pv(&name(&bad)).is_none());
    scenario.finish().await;
}

/// Sets the saved-PV property of volume 0 of `resource_definition`.
fn set_saved_pv(scenario: &Scenario, resource_definition: &str, value: &str) {
    scenario.sim.with_state(|state| {
        let definition = state
            .resource_definitions
            .iter_mut()
            .find(|definition| definition.name == resource_definition)
            .unwrap();
        definition.volume_definitions[0]
            .props
            .insert(SAVED_PV_PROPERTY.to_owned(), value.to_owned());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_saved_pv_is_reported_once() {
    let Some(scenario) = Scenario::new("bad-saved", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let value = "{not json";
    // Drifted, with saved state that cannot be read.
    let bad = scenario.volume("saved", &class, 0, 1).await;
    set_saved_pv(&scenario, &name(&bad), value);
    // Two volumes without a PV, only saved state that cannot be read.
    let gone = [scenario.env.name("gone-a"), scenario.env.name("gone-b")];
    for definition in &gone {
        scenario
            .sim
            .add_resource_definition(
                SimResourceDefinition::new(definition, 1 << 20)
                    .resource(SimResource::diskful(scenario.node(1))),
            )
            .unwrap();
        set_saved_pv(&scenario, definition, value);
    }
    let control = scenario.volume("control", &class, 0, 1).await;

    let run = run_until_control_replaced(&scenario, &control).await;
    wait_for_warning(&scenario, &run, &name(&bad)).await;
    run.controller.wait_for_full_passes(2, TIMEOUT).await;
    assert_reported_once_and_unchanged(&scenario, &run, &bad.pv, value).await;
    assert_eq!(scenario.saved_pv(&name(&bad)).as_deref(), Some(value));

    // The volumes without a PV: nothing created, the property kept, and the
    // problem logged once each, naming the volume and the value. There is
    // no PV to post an event about.
    for definition in &gone {
        assert_eq!(scenario.saved_pv(definition).as_deref(), Some(value));
        let volume = format!("{definition}/0");
        let logged = run.controller.lines_with(&["PV left unchanged", &volume, value]);
        assert_eq!(logged.len(), 1, "{volume}; log:\n{}", run.controller.log());
    }
    let nameless = warnings_about(&scenario, &run, "").await;
    assert!(nameless.is_empty(), "{nameless:#?}");
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_volume_handle_is_reported_once() {
    let Some(scenario) = Scenario::new("bad-handle", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let no_resource = "/7";
    let no_number = format!("{}/notanumber", scenario.env.name("x"));
    let mut bad = Vec::new();
    for (suffix, handle) in [("noresource", no_resource), ("nonumber", no_number.as_str())] {
        let options = VolumeOptions {
            volume_handle: Some(handle.to_owned()),
            storage_class: Some(class.clone()),
            node_affinity: Some(linstor_affinity(&[scenario.node(0)])),
            reclaim_policy: "Delete".to_owned(),
            ..VolumeOptions::default()
        };
        bad.push((scenario.env.create_bound_volume(suffix, &options).await, handle));
    }
    let control = scenario.volume("control", &class, 0, 1).await;

    let run = run_until_control_replaced(&scenario, &control).await;
    for (bound, _) in &bad {
        wait_for_warning(&scenario, &run, &name(bound)).await;
    }
    run.controller.wait_for_full_passes(2, TIMEOUT).await;
    for (bound, handle) in &bad {
        assert_reported_once_and_unchanged(&scenario, &run, &bound.pv, handle).await;
    }
    scenario.finish().await;
}
