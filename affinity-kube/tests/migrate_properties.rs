//! `migrate-properties` against the LINSTOR simulator: saved PVs move from
//! the resource definition to the volume definition their handle names,
//! copy before delete, one bad resource definition does not stop the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use affinity_core::names::SAVED_PV_PROPERTY;
use affinity_core::{SavedStateError, VolumeId};
use affinity_kube::migrate::{MigrateAction, MigrateError, MigrationReport, migrate_properties};
use linstor_api::Client;
use linstor_api::sim::{
    Fault, FaultKind, SimNode, SimResource, SimResourceDefinition, SimState, SimVolumeDefinition, Simulator,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A saved PV of `handle`, formatted the way no serializer would write it,
/// so that a copy which re-encodes it shows.
fn saved_pv(handle: &str) -> String {
    format!(
        "{{ \"kind\":\"PersistentVolume\", \"apiVersion\":\"v1\",\n  \"metadata\": {{\"name\": \"{name}\"}},\
         \"spec\": {{\"csi\": {{\"volumeHandle\": \"{handle}\", \"driver\": \"linstor.csi.linbit.com\"}},\
         \"capacity\": {{\"storage\": \"1Gi\"}} }} }}",
        name = handle.split('/').next().unwrap(),
    )
}

/// A resource definition with volume definitions `volumes` (each with
/// `vd_saved` when given), a replica on node-a, and `rd_saved` on itself.
fn rd(name: &str, volumes: &[i32], rd_saved: Option<&str>, vd_saved: Option<&str>) -> SimResourceDefinition {
    let mut def = SimResourceDefinition::new(name, 1 << 20).resource(SimResource::diskful("node-a"));
    def.volume_definitions = volumes
        .iter()
        .map(|&n| SimVolumeDefinition {
            volume_number: n,
            props: vd_saved
                .map(|json| (SAVED_PV_PROPERTY.to_owned(), json.to_owned()))
                .into_iter()
                .collect(),
            ..SimVolumeDefinition::default()
        })
        .collect();
    def.props.insert("Aux/unrelated".to_owned(), "kept".to_owned());
    if let Some(json) = rd_saved {
        def.props.insert(SAVED_PV_PROPERTY.to_owned(), json.to_owned());
    }
    def
}

async fn start(definitions: Vec<SimResourceDefinition>) -> (Simulator, Client) {
    let state = SimState {
        nodes: vec![SimNode::new("node-a")],
        resource_definitions: definitions,
        ..SimState::default()
    };
    let sim = Simulator::start(state).await.unwrap();
    let client = client_for(&sim.http_url().unwrap());
    (sim, client)
}

fn client_for(url: &str) -> Client {
    Client::builder()
        .controllers([url])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn rd_prop(sim: &Simulator, name: &str) -> Option<String> {
    let state = sim.state();
    let def = state
        .resource_definitions
        .iter()
        .find(|d| d.name == name)
        .unwrap();
    def.props.get(SAVED_PV_PROPERTY).cloned()
}

fn vd_prop(sim: &Simulator, name: &str, volume: i32) -> Option<String> {
    let state = sim.state();
    let def = state
        .resource_definitions
        .iter()
        .find(|d| d.name == name)
        .unwrap();
    let vd = def
        .volume_definitions
        .iter()
        .find(|v| v.volume_number == volume)
        .unwrap();
    vd.props.get(SAVED_PV_PROPERTY).cloned()
}

fn failure<'a>(report: &'a MigrationReport, name: &str) -> &'a MigrateError {
    &report
        .failed
        .iter()
        .find(|f| f.resource_definition == name)
        .unwrap_or_else(|| panic!("{name} not in failed: {report:?}"))
        .error
}

#[tokio::test]
async fn copies_to_volume_definition_and_removes_from_resource_definition() {
    let json = saved_pv("pvc-1");
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&json), None)]).await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.migrated, vec![VolumeId::new("pvc-1", 0)]);
    assert!(report.already_present.is_empty() && report.failed.is_empty());
    assert!(report.is_complete());
    assert_eq!(
        vd_prop(&sim, "pvc-1", 0).as_deref(),
        Some(json.as_str()),
        "exact JSON copied"
    );
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
    let state = sim.state();
    assert_eq!(
        state.resource_definitions[0]
            .props
            .get("Aux/unrelated")
            .map(String::as_str),
        Some("kept")
    );
}

#[tokio::test]
async fn handle_volume_number_selects_the_volume_definition() {
    let json = saved_pv("pvc-m/1");
    let (sim, client) = start(vec![rd("pvc-m", &[0, 1, 2], Some(&json), None)]).await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.migrated, vec![VolumeId::new("pvc-m", 1)]);
    assert_eq!(vd_prop(&sim, "pvc-m", 1).as_deref(), Some(json.as_str()));
    assert_eq!(vd_prop(&sim, "pvc-m", 0), None);
    assert_eq!(vd_prop(&sim, "pvc-m", 2), None);
    assert_eq!(rd_prop(&sim, "pvc-m"), None);
}

#[tokio::test]
async fn keeps_the_newer_volume_definition_intent() {
    let old = saved_pv("pvc-1");
    let newer = format!("{} ", saved_pv("pvc-1"));
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&old), Some(&newer))]).await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.already_present, vec![VolumeId::new("pvc-1", 0)]);
    assert!(report.migrated.is_empty() && report.is_complete());
    assert_eq!(vd_prop(&sim, "pvc-1", 0).as_deref(), Some(newer.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
}

#[tokio::test]
async fn bad_resource_definitions_are_reported_and_the_others_migrated() {
    let bad_json = "{\"kind\": \"PersistentVolume\", ";
    let foreign = saved_pv("pvc-other/0");
    let missing = saved_pv("pvc-missing/3");
    let good = saved_pv("pvc-good");
    let (sim, client) = start(vec![
        rd("pvc-bad-json", &[0], Some(bad_json), None),
        rd("pvc-foreign", &[0], Some(&foreign), None),
        rd("pvc-missing", &[0, 1], Some(&missing), None),
        rd("pvc-good", &[0], Some(&good), None),
    ])
    .await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.migrated, vec![VolumeId::new("pvc-good", 0)]);
    assert_eq!(report.failed.len(), 3, "{report:?}");
    assert!(!report.is_complete());

    let e = failure(&report, "pvc-bad-json");
    assert!(
        matches!(e, MigrateError::SavedPv { source, .. } if matches!(**source, SavedStateError::InvalidJson { .. })),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "saved PV of resource definition pvc-bad-json is not a PersistentVolume JSON document"
        ),
        "{e}"
    );
    let e = failure(&report, "pvc-foreign");
    assert_eq!(
        e.to_string(),
        "saved PV pvc-other on resource definition pvc-foreign names volume pvc-other/0 in its handle"
    );
    let e = failure(&report, "pvc-missing");
    assert_eq!(
        e.to_string(),
        "resource definition pvc-missing: volume definition 3 does not exist"
    );

    for (name, json) in [
        ("pvc-bad-json", bad_json),
        ("pvc-foreign", foreign.as_str()),
        ("pvc-missing", missing.as_str()),
    ] {
        assert_eq!(
            rd_prop(&sim, name).as_deref(),
            Some(json),
            "{name} keeps its property"
        );
        assert_eq!(vd_prop(&sim, name, 0), None, "{name}: nothing copied");
    }
    assert_eq!(vd_prop(&sim, "pvc-missing", 1), None);
    assert_eq!(vd_prop(&sim, "pvc-good", 0).as_deref(), Some(good.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-good"), None);
}

#[tokio::test]
async fn second_run_finds_nothing_and_changes_nothing() {
    let (sim, client) = start(vec![
        rd("pvc-1", &[0], Some(&saved_pv("pvc-1")), None),
        rd("pvc-2", &[0, 1], Some(&saved_pv("pvc-2/1")), None),
        rd("pvc-3", &[0], Some(&saved_pv("pvc-3")), Some(&saved_pv("pvc-3"))),
        rd("pvc-4", &[0], None, None),
    ])
    .await;

    let first = migrate_properties(&client).await.unwrap();
    assert_eq!(first.migrated.len() + first.already_present.len(), 3, "{first:?}");
    let after_first = sim.state();
    sim.reset_counters();

    let second = migrate_properties(&client).await.unwrap();

    assert!(second.is_empty() && second.is_complete(), "{second:?}");
    assert_eq!(sim.state(), after_first);
    let writes: Vec<_> = sim
        .counters()
        .into_keys()
        .filter(|k| !k.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "second run wrote: {writes:?}");
}

#[tokio::test]
async fn finishes_a_migration_interrupted_after_the_copy() {
    // What a crash between copy and delete leaves: both copies, equal.
    let json = saved_pv("pvc-1");
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&json), Some(&json))]).await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.already_present, vec![VolumeId::new("pvc-1", 0)]);
    assert!(report.is_complete());
    assert_eq!(vd_prop(&sim, "pvc-1", 0).as_deref(), Some(json.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
}

fn injected(message: &str) -> Fault {
    Fault::new(FaultKind::Error {
        status: 503,
        message: message.to_owned(),
    })
}

#[tokio::test]
async fn a_failed_copy_fails_only_that_resource_definition() {
    let jsons: Vec<String> = ["pvc-1", "pvc-2", "pvc-3"].iter().map(|h| saved_pv(h)).collect();
    let (sim, client) = start(vec![
        rd("pvc-1", &[0], Some(&jsons[0]), None),
        rd("pvc-2", &[0], Some(&jsons[1]), None),
        rd("pvc-3", &[0], Some(&jsons[2]), None),
    ])
    .await;
    sim.add_fault(
        injected("database unavailable")
            .on_method("PUT")
            .on_path("/v1/resource-definitions/pvc-2/volume-definitions/0")
            .times(1),
    );

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(
        report.migrated,
        vec![VolumeId::new("pvc-1", 0), VolumeId::new("pvc-3", 0)]
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let e = failure(&report, "pvc-2");
    assert!(
        matches!(
            e,
            MigrateError::Linstor {
                action: MigrateAction::Copy { volume_number: 0 },
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("resource definition pvc-2: copying the saved PV to volume definition 0: ")
            && text.contains("database unavailable"),
        "{text}"
    );
    assert_eq!(rd_prop(&sim, "pvc-2").as_deref(), Some(jsons[1].as_str()));
    assert_eq!(vd_prop(&sim, "pvc-2", 0), None);
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
    assert_eq!(rd_prop(&sim, "pvc-3"), None);

    // Once LINSTOR answers again, the next run finishes the job.
    let again = migrate_properties(&client).await.unwrap();
    assert_eq!(again.migrated, vec![VolumeId::new("pvc-2", 0)]);
    assert_eq!(vd_prop(&sim, "pvc-2", 0).as_deref(), Some(jsons[1].as_str()));
    assert_eq!(rd_prop(&sim, "pvc-2"), None);
}

#[tokio::test]
async fn error_replies_in_a_successful_answer_fail_the_copy() {
    let json = saved_pv("pvc-1");
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&json), None)]).await;
    sim.add_fault(
        Fault::new(FaultKind::Error {
            status: 200,
            message: "property rejected".to_owned(),
        })
        .on_method("PUT")
        .on_path("/v1/resource-definitions/pvc-1/volume-definitions/0")
        .times(1),
    );

    let report = migrate_properties(&client).await.unwrap();

    let e = failure(&report, "pvc-1");
    assert!(
        matches!(
            e,
            MigrateError::Rejected {
                action: MigrateAction::Copy { volume_number: 0 },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("property rejected"), "{e}");
    // Nothing was deleted: the resource definition still holds the only copy.
    assert_eq!(rd_prop(&sim, "pvc-1").as_deref(), Some(json.as_str()));
}

#[tokio::test]
async fn a_failed_delete_keeps_the_property_for_the_next_run() {
    // The volume definition already holds it, so the only write is the delete.
    let json = saved_pv("pvc-1");
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&json), Some(&json))]).await;
    sim.add_fault(
        injected("database unavailable")
            .on_method("PUT")
            .on_path("/v1/resource-definitions/pvc-1")
            .times(1),
    );

    let report = migrate_properties(&client).await.unwrap();

    let e = failure(&report, "pvc-1");
    assert!(
        matches!(
            e,
            MigrateError::Linstor {
                action: MigrateAction::Delete,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "resource definition pvc-1: deleting the saved PV property from the resource definition: "
        ),
        "{e}"
    );
    assert_eq!(rd_prop(&sim, "pvc-1").as_deref(), Some(json.as_str()));

    let again = migrate_properties(&client).await.unwrap();
    assert_eq!(again.already_present, vec![VolumeId::new("pvc-1", 0)]);
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
    assert_eq!(vd_prop(&sim, "pvc-1", 0).as_deref(), Some(json.as_str()));
}

#[tokio::test]
async fn failing_list_is_an_error_naming_the_endpoint() {
    let json = saved_pv("pvc-1");
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(&json), None)]).await;
    let before = sim.state();
    sim.add_fault(
        injected("controller restarting")
            .on_method("GET")
            .on_path("/v1/resource-definitions"),
    );

    let e = migrate_properties(&client).await.unwrap_err();

    assert!(matches!(e, MigrateError::List { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("GET /v1/resource-definitions") && text.contains("controller restarting"),
        "{text}"
    );
    assert_eq!(sim.state(), before);
}

#[tokio::test]
async fn unreachable_controller_is_an_error_naming_the_endpoint() {
    // A port that was free a moment ago: nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let e = migrate_properties(&client_for(&url)).await.unwrap_err();

    assert!(matches!(e, MigrateError::List { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("GET /v1/resource-definitions"), "{text}");
}

#[tokio::test]
async fn empty_property_is_just_removed() {
    let (sim, client) = start(vec![rd("pvc-1", &[0], Some(""), None)]).await;

    let report = migrate_properties(&client).await.unwrap();

    assert_eq!(report.removed_empty, vec!["pvc-1".to_owned()]);
    assert!(report.migrated.is_empty() && report.is_complete());
    assert_eq!(rd_prop(&sim, "pvc-1"), None);
    assert_eq!(vd_prop(&sim, "pvc-1", 0), None);
}

/// A LINSTOR that ignores the `props` filter: answers every GET with a
/// definition lacking the property, and records the request lines.
async fn filter_ignoring_controller() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let line = text.lines().next().unwrap_or_default().to_owned();
            let _ = tx.send(line.clone());
            let body = if line.starts_with("GET ") {
                r#"[{"name":"pvc-plain","props":{"Aux/unrelated":"x"},"volume_definitions":[{"volume_number":0,"size_kib":1024}]}]"#
            } else {
                "[]"
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn definitions_without_the_property_are_ignored_even_if_listed() {
    let (url, mut requests) = filter_ignoring_controller().await;

    let report = migrate_properties(&client_for(&url)).await.unwrap();

    assert!(report.is_empty(), "{report:?}");
    let mut seen = Vec::new();
    while let Ok(line) = requests.try_recv() {
        seen.push(line);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /v1/resource-definitions?"), "{seen:?}");
}
