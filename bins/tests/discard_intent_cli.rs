//! `linstor-affinity discard-intent` against the LINSTOR simulator: it removes exactly the intent
//! it shows, and changes nothing when the volume is unknown, holds no intent, the confirmation is
//! missing or the controller's Lease cannot be checked. (Fencing by a held Lease needs a
//! Kubernetes cluster: `live_cli.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;
use std::time::Duration;

use affinity_core::names::SAVED_PV_PROPERTY;
use assert_cmd::Command;
use linstor_api::sim::{SimResourceDefinition, SimState, SimVolumeDefinition, Simulator};

/// The endpoint key of volume definition writes in the simulator's counters.
const VOLUME_DEFINITION_PUT: &str =
    "PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}";

const SAVED_PV: &str = r#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pvc-saved"},"spec":{"capacity":{"storage":"1Gi"}}}"#;

/// Runs `linstor-affinity ARGS` with LINSTOR at `linstor`, off the runtime's threads (the
/// simulator answers on them); stdin is empty, not a terminal.
async fn cli(linstor: &str, args: &[&str]) -> Output {
    let linstor = linstor.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("linstor-affinity")
            .unwrap()
            .args(&args)
            .env("LS_CONTROLLERS", &linstor)
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rd-a`: volume 0 holds a saved PV, volume 1 unparseable text; `rd-b`: no intent.
async fn simulator() -> Simulator {
    let mut with_intents = SimResourceDefinition::new("rd-a", 1 << 20);
    with_intents.volume_definitions[0]
        .props
        .insert(SAVED_PV_PROPERTY.to_owned(), SAVED_PV.to_owned());
    let mut second = SimVolumeDefinition {
        volume_number: 1,
        size_kib: 1 << 20,
        ..SimVolumeDefinition::default()
    };
    second
        .props
        .insert(SAVED_PV_PROPERTY.to_owned(), "not json at all".to_owned());
    second.props.insert("Aux/other".to_owned(), "kept".to_owned());
    with_intents.volume_definitions.push(second);
    Simulator::start(SimState {
        resource_definitions: vec![with_intents, SimResourceDefinition::new("rd-b", 1 << 20)],
        ..SimState::default()
    })
    .await
    .unwrap()
}

fn property(sim: &Simulator, definition: &str, volume: i32, key: &str) -> Option<String> {
    sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .find(|rd| rd.name == definition)
            .and_then(|rd| rd.volume_definitions.iter().find(|vd| vd.volume_number == volume))
            .and_then(|vd| vd.props.get(key).cloned())
    })
}

fn intent(sim: &Simulator, definition: &str, volume: i32) -> Option<String> {
    property(sim, definition, volume, SAVED_PV_PROPERTY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discards_exactly_the_intent_it_shows() {
    let sim = simulator().await;
    let linstor = sim.http_url().unwrap();

    let output = cli(&linstor, &["discard-intent", "rd-a", "--yes", "--ignore-lease"]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("Volume rd-a/0 holds the intent of a replace: saved PV pvc-saved"),
        "{stdout}"
    );
    assert!(stdout.contains("Intent of volume rd-a/0 discarded"), "{stdout}");
    assert!(stderr.contains("--ignore-lease: not checking"), "{stderr}");
    assert_eq!(intent(&sim, "rd-a", 0), None);
    assert!(
        intent(&sim, "rd-a", 1).is_some(),
        "the other volume's intent stays"
    );

    let output = cli(&linstor, &["discard-intent", "rd-a/1", "--yes", "--ignore-lease"]).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains(r#"unparseable text "not json at all" (15 bytes; not a saved PV)"#),
        "{stdout}"
    );
    assert_eq!(intent(&sim, "rd-a", 1), None);
    assert_eq!(
        property(&sim, "rd-a", 1, "Aux/other").as_deref(),
        Some("kept"),
        "other properties stay"
    );

    // Gone now: a second run finds nothing.
    let output = cli(&linstor, &["discard-intent", "rd-a", "--yes", "--ignore-lease"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("volume rd-a/0: no intent to discard"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_intent_or_an_unknown_volume_is_an_error_and_changes_nothing() {
    let sim = simulator().await;
    let linstor = sim.http_url().unwrap();
    let before = sim.state();
    let cases = [
        (
            "rd-b",
            "volume rd-b/0: no intent to discard (property Aux/affinity-updater-saved-pv is not set)",
        ),
        (
            "rd-nope",
            "volume rd-nope/0: LINSTOR has no resource definition rd-nope: nothing discarded",
        ),
        (
            "rd-a/7",
            "volume rd-a/7: resource definition rd-a has no volume definition 7: nothing discarded",
        ),
    ];
    for (volume, message) in cases {
        let output = cli(&linstor, &["discard-intent", volume, "--yes", "--ignore-lease"]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{volume}: {stderr}");
        assert!(stderr.contains(message), "{volume}: {stderr}");
        assert!(output.stdout.is_empty(), "{volume}: {}", text(&output.stdout));
    }
    // Not a volume at all: a usage error.
    let output = cli(&linstor, &["discard-intent", "rd-a/x", "--yes", "--ignore-lease"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("rd-a/x"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(sim.count(VOLUME_DEFINITION_PUT), 0, "{:?}", sim.counters());
    assert_eq!(sim.state(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_confirmation_or_a_readable_lease_nothing_is_discarded() {
    let sim = simulator().await;
    let linstor = sim.http_url().unwrap();

    // No terminal and no --yes: refused before contacting anything.
    let output = cli(&linstor, &["discard-intent", "rd-a", "--ignore-lease"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to discard the intent of volume rd-a/0 without confirmation"),
        "{stderr}"
    );
    assert!(
        sim.counters().values().all(|count| *count == 0),
        "{:?}",
        sim.counters()
    );

    // Fencing on, and the API server does not answer: the Lease cannot be checked, so nothing
    // is written.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {closed}\n    \
             insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let output = cli(
        &linstor,
        &[
            "discard-intent",
            "rd-a",
            "--yes",
            "--lease-lock-namespace",
            "piraeus",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot read Lease piraeus/linstor-affinity-controller to check that no controller is writing"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("pass --ignore-lease"), "{stderr}");
    assert_eq!(sim.count(VOLUME_DEFINITION_PUT), 0, "{:?}", sim.counters());
    assert_eq!(intent(&sim, "rd-a", 0).as_deref(), Some(SAVED_PV));
}
