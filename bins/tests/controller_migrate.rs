//! The `migrate-properties` subcommand of the controller binary against the
//! LINSTOR simulator alone (no Kubernetes): saved PVs move from resource
//! definitions to volume definitions, a second run changes nothing, a bad
//! resource definition fails the run (exit 1, named on stderr) without
//! stopping the others. Also the command line: every flag of the reference
//! controller is accepted, and an unusable value exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Output, Stdio};

use affinity_core::names::SAVED_PV_PROPERTY;
use linstor_api::sim::{
    SimNode, SimResource, SimResourceDefinition, SimState, SimVolumeDefinition, Simulator,
};

const BINARY: &str = env!("CARGO_BIN_EXE_linstor-affinity-controller");

/// A saved PV of the LINSTOR CSI volume `handle`, as older versions kept it.
fn saved_pv(handle: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": handle.split('/').next().unwrap()},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "csi": {"driver": "linstor.csi.linbit.com", "volumeHandle": handle},
            "persistentVolumeReclaimPolicy": "Delete"
        }
    })
    .to_string()
}

/// A resource definition with volume definitions `volumes`, one replica, an
/// unrelated property, and `saved` as the resource-definition saved PV.
fn rd(name: &str, volumes: &[i32], saved: Option<&str>) -> SimResourceDefinition {
    let mut definition = SimResourceDefinition::new(name, 1 << 20).resource(SimResource::diskful("node-a"));
    definition.volume_definitions = volumes
        .iter()
        .map(|&volume_number| SimVolumeDefinition {
            volume_number,
            ..SimVolumeDefinition::default()
        })
        .collect();
    definition
        .props
        .insert("Aux/unrelated".to_owned(), "kept".to_owned());
    if let Some(json) = saved {
        definition
            .props
            .insert(SAVED_PV_PROPERTY.to_owned(), json.to_owned());
    }
    definition
}

async fn simulator(definitions: Vec<SimResourceDefinition>) -> Simulator {
    Simulator::start(SimState {
        nodes: vec![SimNode::new("node-a")],
        resource_definitions: definitions,
        ..SimState::default()
    })
    .await
    .unwrap()
}

fn rd_prop(sim: &Simulator, name: &str) -> Option<String> {
    sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .props
            .get(SAVED_PV_PROPERTY)
            .cloned()
    })
}

fn vd_prop(sim: &Simulator, name: &str, volume: i32) -> Option<String> {
    sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .volume_definitions
            .iter()
            .find(|v| v.volume_number == volume)
            .unwrap()
            .props
            .get(SAVED_PV_PROPERTY)
            .cloned()
    })
}

/// Runs the binary with `args`, LINSTOR at `linstor_url`, and no way to find
/// a Kubernetes cluster: no kubeconfig, an empty home, no in-cluster
/// variables. Run off the async workers, so the simulator keeps answering.
async fn run(args: &[&str], linstor_url: Option<&str>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env("HOME", home.path())
        .stdin(Stdio::null());
    match linstor_url {
        Some(url) => command.env("LS_CONTROLLERS", url),
        None => command.env_remove("LS_CONTROLLERS"),
    };
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    drop(home);
    output
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A resource definition's name, saved-PV property, and the saved-PV
/// property of each volume definition by number.
type SavedProperties = (String, Option<String>, Vec<(i32, Option<String>)>);

/// The state of every resource definition's saved-PV properties, to compare runs.
fn saved_properties(sim: &Simulator) -> Vec<SavedProperties> {
    sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.props.get(SAVED_PV_PROPERTY).cloned(),
                    d.volume_definitions
                        .iter()
                        .map(|v| (v.volume_number, v.props.get(SAVED_PV_PROPERTY).cloned()))
                        .collect(),
                )
            })
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_properties_moves_saved_pvs_without_kubernetes_and_is_idempotent() {
    let one = saved_pv("pvc-one");
    let two = saved_pv("pvc-two/1");
    let sim = simulator(vec![
        rd("pvc-one", &[0], Some(&one)),
        rd("pvc-two", &[0, 1], Some(&two)),
        rd("pvc-plain", &[0], None),
    ])
    .await;
    let url = sim.http_url().unwrap();

    let first = run(&["migrate-properties"], Some(&url)).await;
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    assert_eq!(vd_prop(&sim, "pvc-one", 0).as_deref(), Some(one.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-one"), None);
    assert_eq!(
        vd_prop(&sim, "pvc-two", 1).as_deref(),
        Some(two.as_str()),
        "volume 1, named by the handle"
    );
    assert_eq!(vd_prop(&sim, "pvc-two", 0), None);
    assert_eq!(rd_prop(&sim, "pvc-two"), None);
    assert_eq!(vd_prop(&sim, "pvc-plain", 0), None);
    sim.with_state(|state| {
        for definition in &state.resource_definitions {
            assert_eq!(
                definition.props.get("Aux/unrelated").map(String::as_str),
                Some("kept"),
                "{}",
                definition.name
            );
        }
    });
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("migration done"), "{}", describe(&first));

    // Again: nothing to move, no write at all.
    let before = saved_properties(&sim);
    sim.reset_counters();
    let second = run(&["migrate-properties"], Some(&url)).await;
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    assert_eq!(saved_properties(&sim), before);
    let writes: Vec<_> = sim
        .counters()
        .into_iter()
        .filter(|(endpoint, _)| !endpoint.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "second run wrote: {writes:?}");
    assert!(
        sim.count("GET /v1/resource-definitions") >= 1,
        "{:?}",
        sim.counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_properties_exits_1_naming_a_bad_resource_definition_and_migrates_the_others() {
    let good = saved_pv("pvc-good");
    let other = saved_pv("pvc-other");
    let foreign = saved_pv("pvc-elsewhere/0");
    let sim = simulator(vec![
        rd("pvc-good", &[0], Some(&good)),
        rd("pvc-broken", &[0], Some("{\"kind\": \"PersistentVolume\", ")),
        rd("pvc-foreign", &[0], Some(&foreign)),
        rd("pvc-other", &[0], Some(&other)),
    ])
    .await;
    let url = sim.http_url().unwrap();

    let output = run(&["migrate-properties"], Some(&url)).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["pvc-broken", "pvc-foreign"] {
        assert!(
            stderr.contains(&format!("resource definition {name}")),
            "{name} not named: {}",
            describe(&output)
        );
    }
    assert!(
        stderr.contains("2 resource definitions could not be migrated"),
        "{}",
        describe(&output)
    );
    assert_eq!(vd_prop(&sim, "pvc-good", 0).as_deref(), Some(good.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-good"), None);
    assert_eq!(vd_prop(&sim, "pvc-other", 0).as_deref(), Some(other.as_str()));
    assert_eq!(rd_prop(&sim, "pvc-other"), None);
    // The bad ones keep their property and get no volume-definition copy.
    assert_eq!(
        rd_prop(&sim, "pvc-broken").as_deref(),
        Some("{\"kind\": \"PersistentVolume\", ")
    );
    assert_eq!(vd_prop(&sim, "pvc-broken", 0), None);
    assert_eq!(rd_prop(&sim, "pvc-foreign").as_deref(), Some(foreign.as_str()));
    assert_eq!(vd_prop(&sim, "pvc-foreign", 0), None);

    // Still failing on a second run, and still only because of those two.
    let again = run(&["migrate-properties"], Some(&url)).await;
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("2 resource definitions could not be migrated"),
        "{}",
        describe(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_properties_exits_1_when_linstor_cannot_be_reached() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = run(&["migrate-properties"], Some(&format!("http://127.0.0.1:{port}"))).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("GET /v1/resource-definitions"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_flag_of_the_reference_controller() {
    let output = run(&["--help"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--reconcile-rate",
        "--resync-rate",
        "--timeout",
        "--bind-address",
        "--metrics-address",
        "--property-namespace",
        "--workers",
        "--leader-election",
        "--leader-election-id",
        "--lease-lock-name",
        "--lease-lock-namespace",
        "--leader-election-lease-duration",
        "--leader-election-renew-deadline",
        "--leader-election-retry-period",
        "--kubeconfig",
        "--context",
    ] {
        // Followed by a space, an optional value (`[=<BOOL>]`) or the end of the line:
        // `--leader-election` must be its own flag.
        assert!(
            help.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with(&format!("{flag} "))
                    || line.starts_with(&format!("{flag}[="))
                    || line == flag
            }),
            "{flag} missing from --help:\n{help}"
        );
    }
    assert!(
        help.lines().any(|line| line.trim_start().starts_with("-v, ")),
        "-v missing from --help:\n{help}"
    );
    assert!(help.contains("migrate-properties"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_flag_values_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--reconcile-rate", "soon"][..], "--reconcile-rate"),
        (&["--resync-rate", "5 minutes"][..], "--resync-rate"),
        (&["--timeout", "10 parsecs"][..], "--timeout"),
        (&["--workers", "0"][..], "--workers"),
        (
            &["--leader-election-lease-duration", "x"][..],
            "--leader-election-lease-duration",
        ),
        (&["-v", "loud"][..], "--v"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let output = run(args, None).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", describe(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(flag),
            "{args:?}: {}",
            describe(&output)
        );
    }
}
