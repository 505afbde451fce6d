#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `plan` command on the example dump and on crafted dumps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::{Action, DecisionSettings, Planner, ReplaceTrigger, guess_property_namespace};
use assert_cmd::Command;
use linstor_affinity_cli::convert::core_state;
use linstor_affinity_cli::dump::load_dir;
use serde_json::{Value, json};

const NOW: &str = "2025-06-01T12:00:00Z";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/evacuated-cluster")
}

fn plan(dir: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("linstor-affinity")
        .unwrap()
        .args(["plan", "--now", NOW, "--from-dir"])
        .arg(dir)
        .args(extra)
        .assert()
}

fn json_plan(dir: &Path, extra: &[&str]) -> (i32, Value) {
    let output = plan(dir, &[&["-o", "json"], extra].concat()).get_output().clone();
    let code = output.status.code().unwrap();
    (code, serde_json::from_slice(&output.stdout).unwrap())
}

fn copy_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn decisions(report: &Value) -> BTreeMap<String, String> {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|volume| {
            let mut decision = volume["decision"].as_str().unwrap().to_owned();
            for detail in ["trigger", "skipReason"] {
                if let Some(text) = volume[detail].as_str() {
                    decision = format!("{decision}:{text}");
                }
            }
            (volume["pv"].as_str().unwrap().to_owned(), decision)
        })
        .collect()
}

#[test]
fn example_dump_reports_the_hand_made_decisions_and_exits_2() {
    let (code, report) = json_plan(&example(), &[]);
    assert_eq!(code, 2);
    assert_eq!(report["formatVersion"], 1);
    assert_eq!(report["propertyNamespace"], "Aux/topology");
    assert_eq!(
        report["summary"],
        json!({"volumes": 20, "inSync": 8, "replace": 7, "skip": 3, "clearSavedState": 1, "restoreReclaimPolicy": 0, "errors": 1})
    );
    let decisions = decisions(&report);
    let expected = [
        ("pvc-0b6f1c2e-5a41-4d0e-9a7e-1f2d3c4b5a01", "in-sync"),
        ("pvc-2d8b3e4a-7c63-4f2a-9c9a-3b4f5e6d7c03", "replace:drift"),
        ("pvc-3e9c4f5b-8d74-4a3b-8dab-4c5a6f7e8d04", "replace:drift"),
        ("pvc-4fad5a6c-9e85-4b4c-9ebc-5d6b7a8f9e05", "replace:drift"),
        ("pvc-5abe6b7d-af96-4c5d-8fcd-6e7c8b9aaf06", "in-sync"),
        ("pvc-6bcf7c8e-b0a7-4d6e-9ade-7f8d9cabb007", "skip:skip-annotation"),
        ("pvc-7cd08d9f-c1b8-4e7f-8bef-8a9eadbcc108", "error"),
        ("pvc-8de19eaa-d2c9-4f8a-9cfa-9badbecdd209", "clear-saved-state"),
        ("pvc-b104c1dd-05fc-4cbd-8f2d-cedae1f0050c", "in-sync"),
        ("pvc-0659b6c2-5a41-4b12-9e7c-b32d36e55a11", "skip:released"),
        ("pvc-176ac7d3-6b52-4c23-8f8d-c43e47f66b12", "skip:skip-property"),
        ("pvc-f548a5b1-4930-4a01-8d6b-a21c25d44910", "replace:drift"),
        ("shared-ledger-0", "replace:drift"),
        ("shared-ledger-1", "replace:drift"),
    ];
    for (pv, decision) in expected {
        assert_eq!(decisions[pv], decision, "{pv}");
    }
    let multi: Vec<&Value> = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["resourceDefinition"] == "shared-ledger")
        .collect();
    assert_eq!(multi.len(), 2);
    assert_eq!(multi[1]["volumeNumber"], 1);
    let error = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pv"] == "pvc-7cd08d9f-c1b8-4e7f-8bef-8a9eadbcc108")
        .unwrap();
    assert!(error["message"].as_str().unwrap().contains("override.piraeus.io"));
    let dropped = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pv"] == "pvc-f548a5b1-4930-4a01-8d6b-a21c25d44910")
        .unwrap();
    assert_eq!(dropped["desiredAffinity"], Value::Null);
    assert_eq!(
        dropped["currentAffinity"],
        json!([{"matchExpressions": [{"key": "linbit.com/hostname", "operator": "In", "values": ["worker-4"]}]}])
    );
}

#[test]
fn json_output_matches_the_core_decisions() {
    let (_, report) = json_plan(&example(), &[]);
    let dump = load_dir(&example()).unwrap();
    let state = core_state(&dump);
    let namespace = guess_property_namespace(dump.nodes.iter().map(|node| &node.props));
    let settings = DecisionSettings {
        property_namespace: namespace.to_owned(),
        grace_period: std::time::Duration::from_secs(60),
        now: NOW.parse().unwrap(),
    };
    let plan = Planner::new(&state.linstor, &state.storage_classes, &settings).plan(&dump.pvs);
    let expected: BTreeMap<String, String> = plan
        .decisions
        .iter()
        .map(|decision| {
            let text = match &decision.outcome {
                Ok(Action::InSync) => "in-sync".to_owned(),
                Ok(Action::ClearSavedState) => "clear-saved-state".to_owned(),
                Ok(Action::RestoreReclaimPolicy { .. }) => "restore-reclaim-policy".to_owned(),
                Ok(Action::Skip(reason)) => {
                    format!("skip:{}", linstor_affinity_cli::report::skip_code(reason))
                }
                Ok(Action::Replace(replacement)) => match replacement.trigger {
                    ReplaceTrigger::AffinityDrift => "replace:drift".to_owned(),
                    ReplaceTrigger::ResumeInterrupted => "replace:resume".to_owned(),
                    ReplaceTrigger::RecreateFromSavedState => "replace:recreate".to_owned(),
                },
                Err(_) => "error".to_owned(),
            };
            (decision.pv_name.clone(), text)
        })
        .collect();
    assert_eq!(decisions(&report), expected);
    for (decision, replacement) in plan.replacements() {
        let shown = report["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["pv"] == decision.pv_name.as_str())
            .unwrap();
        let terms = replacement
            .pv
            .spec
            .as_ref()
            .and_then(|spec| spec.node_affinity.as_ref())
            .and_then(|affinity| affinity.required.as_ref())
            .map(|required| serde_json::to_value(&required.node_selector_terms).unwrap())
            .unwrap_or(Value::Null);
        assert_eq!(shown["desiredAffinity"], terms, "{}", decision.pv_name);
    }
}

#[test]
fn table_is_the_default_and_has_a_summary() {
    let output = plan(&example(), &[]).code(2).get_output().stdout.clone();
    let text = String::from_utf8(output).unwrap();
    assert!(text.starts_with("PV "), "{text}");
    assert!(!text.contains('\x1b'), "no colours when not on a terminal");
    assert!(text.contains("replace (drift)"));
    assert!(text.contains("20 volumes: 8 in sync, 7 to replace, 3 skipped"));
}

#[test]
fn only_drift_keeps_volumes_that_need_attention() {
    let (code, report) = json_plan(&example(), &["--only-drift"]);
    assert_eq!(code, 2);
    let volumes = report["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 9);
    assert!(
        volumes
            .iter()
            .all(|v| ["replace", "clear-saved-state", "error"].contains(&v["decision"].as_str().unwrap()))
    );
    assert_eq!(report["summary"]["volumes"], 20);
}

#[test]
fn yaml_output_is_the_same_report() {
    let (_, json_report) = json_plan(&example(), &[]);
    let output = plan(&example(), &["-o", "yaml"])
        .code(2)
        .get_output()
        .stdout
        .clone();
    let yaml_report: Value = serde_yaml_ng::from_slice(&output).unwrap();
    assert_eq!(yaml_report, json_report);
}

#[test]
fn emit_manifests_writes_reviewable_replacement_pvs() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("manifests");
    plan(&example(), &["--emit-manifests", target.to_str().unwrap()]).code(2);
    let mut files: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    assert!(files.contains(&"shared-ledger-1.yaml".to_owned()));
    let text = std::fs::read_to_string(target.join("pvc-3e9c4f5b-8d74-4a3b-8dab-4c5a6f7e8d04.yaml")).unwrap();
    assert!(text.contains("kind: PersistentVolume"));
    let pv: PersistentVolume = serde_yaml_ng::from_str(&text).unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(
        spec.mount_options,
        Some(vec!["noatime".to_owned(), "discard".to_owned()])
    );
    let hosts: Vec<String> = spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms
        .iter()
        .map(|term| {
            term.match_expressions.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap()[0]
                .clone()
        })
        .collect();
    assert_eq!(hosts, ["worker-3", "worker-5"]);
    assert!(spec.claim_ref.unwrap().uid.is_some());
    let annotations = pv.metadata.annotations.unwrap();
    assert!(!annotations.contains_key("linstor.csi.linbit.com/skip-reclaim"));
}

fn fails_naming(dir: &Path, file: &str, why: &str) {
    let output = plan(dir, &[]).code(1).get_output().clone();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(file), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn missing_file_is_named() {
    let dir = copy_example();
    std::fs::remove_file(dir.path().join("resources.json")).unwrap();
    fails_naming(
        dir.path(),
        "resources.json",
        "missing (make it with `linstor -m resource list",
    );
}

#[test]
fn missing_directory_is_an_error() {
    fails_naming(Path::new("/nonexistent/dump"), "pv.json", "missing");
}

#[test]
fn bad_json_is_named_with_its_position() {
    let dir = copy_example();
    std::fs::write(dir.path().join("nodes.json"), "[{\"name\": \"worker-1\",}]").unwrap();
    fails_naming(dir.path(), "nodes.json", "not valid JSON");
}

#[test]
fn wrong_shapes_are_named() {
    let dir = copy_example();
    std::fs::write(dir.path().join("nodes.json"), "{\"name\": \"worker-1\"}").unwrap();
    fails_naming(dir.path(), "nodes.json", "found an object");

    let dir = copy_example();
    std::fs::copy(example().join("nodes.json"), dir.path().join("resources.json")).unwrap();
    fails_naming(dir.path(), "resources.json", "missing field `node_name`");

    let dir = copy_example();
    std::fs::copy(example().join("pv.json"), dir.path().join("storageclasses.json")).unwrap();
    fails_naming(dir.path(), "storageclasses.json", "items[0]");

    let dir = copy_example();
    let mut nodes: Value =
        serde_json::from_str(&std::fs::read_to_string(example().join("nodes.json")).unwrap()).unwrap();
    nodes[2]["props"] = json!(["not", "a", "map"]);
    std::fs::write(dir.path().join("nodes.json"), nodes.to_string()).unwrap();
    fails_naming(dir.path(), "nodes.json", "at [2].props");
}

#[test]
fn bad_flags_exit_1() {
    plan(&example(), &["--grace-period", "5 parsecs"]).code(1);
    Command::cargo_bin("linstor-affinity")
        .unwrap()
        .args(["plan", "--from-dir", "x", "--now", "yesterday"])
        .assert()
        .code(1);
}

/// A cluster in sync: REST shapes without the `-m` wrapping, one local
/// volume and one anywhere volume.
fn write_in_sync_dump(dir: &Path) {
    let pv = |name: &str, class: &str, affinity: Value| {
        let mut pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {
                "storageClassName": class,
                "csi": {"driver": "linstor.csi.linbit.com", "volumeHandle": name},
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]
            },
            "status": {"phase": "Bound"}
        });
        if !affinity.is_null() {
            pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": affinity}});
        }
        pv
    };
    let host = |node: &str| json!({"matchExpressions": [{"key": "linbit.com/hostname", "operator": "In", "values": [node]}]});
    let files = [
        (
            "pv.json",
            json!({"apiVersion": "v1", "kind": "List", "items": [
                pv("pvc-a", "local", json!([host("n1"), host("n2")])),
                pv("pvc-b", "anywhere", Value::Null),
            ]}),
        ),
        (
            "storageclasses.json",
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
                 "provisioner": "linstor.csi.linbit.com", "parameters": {"allowRemoteVolumeAccess": "false"}},
                {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "anywhere"},
                 "provisioner": "linstor.csi.linbit.com"},
            ]}),
        ),
        (
            "nodes.json",
            json!([
                {"name": "n1", "type": "SATELLITE", "props": {"Aux/topology/kubernetes.io/hostname": "n1"}},
                {"name": "n2", "type": "SATELLITE", "props": {"Aux/topology/kubernetes.io/hostname": "n2"}},
            ]),
        ),
        (
            "resources.json",
            json!([
                {"name": "pvc-a", "node_name": "n1", "flags": []},
                {"name": "pvc-a", "node_name": "n2", "flags": []},
                {"name": "pvc-b", "node_name": "n1", "flags": []},
                {"name": "pvc-b", "node_name": "n2", "flags": ["DISKLESS", "DRBD_DISKLESS"]},
            ]),
        ),
        (
            "resource-definitions.json",
            json!([
                {"name": "pvc-a", "volume_definitions": [{"volume_number": 0, "size_kib": 1048576}]},
                {"name": "pvc-b", "volume_definitions": [{"volume_number": 0, "size_kib": 1048576}]},
            ]),
        ),
    ];
    for (file, content) in files {
        std::fs::write(dir.join(file), content.to_string()).unwrap();
    }
}

#[test]
fn cluster_in_sync_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    write_in_sync_dump(dir.path());
    let (code, report) = json_plan(dir.path(), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["summary"]["inSync"], 2);
    let (code, report) = json_plan(dir.path(), &["--only-drift"]);
    assert_eq!(code, 0);
    assert_eq!(report["volumes"], json!([]));
}

#[test]
fn grace_period_and_property_namespace_flags_apply() {
    let dir = tempfile::tempdir().unwrap();
    write_in_sync_dump(dir.path());
    let (code, report) = json_plan(
        dir.path(),
        &["--grace-period", "1000000h", "--property-namespace", "Aux"],
    );
    assert_eq!(code, 0);
    assert_eq!(report["propertyNamespace"], "Aux");
    assert_eq!(report["summary"]["skip"], 2);
    assert_eq!(report["volumes"][0]["skipReason"], "grace-period");
}

#[test]
fn from_dir_and_kubeconfig_flags_exclude_each_other() {
    // Usage errors exit 1: exit code 2 means that volumes need attention.
    for flag in ["--kubeconfig", "--context", "--cluster", "--user"] {
        let output = plan(&example(), &[flag, "x"]).code(1).get_output().clone();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot be used with"), "{flag}: {stderr}");
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A kubeconfig file naming an API server on a closed port.
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    let server = format!("https://127.0.0.1:{}", closed_port());
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": "secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn live(args: &[&str], kubeconfig: &Path, linstor: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("linstor-affinity")
        .unwrap()
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("LS_CONTROLLERS", linstor)
        .env_remove("KUBECONFIG")
        .timeout(std::time::Duration::from_secs(60))
        .assert()
}

#[test]
fn live_plan_with_unreachable_sources_exits_1_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let linstor = format!("http://127.0.0.1:{}", closed_port());
    let output = live(&["plan"], &kubeconfig, &linstor)
        .code(1)
        .get_output()
        .clone();
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Kubernetes API server https://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("listing PersistentVolumes"), "{stderr}");
    assert!(
        stderr.contains("cannot connect to any LINSTOR controller"),
        "{stderr}"
    );
    assert!(stderr.contains(&linstor), "{stderr}");

    // Bad configurations are named too.
    let missing = dir.path().join("missing");
    let output = live(&["plan"], &missing, &linstor).code(1).get_output().clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("kubeconfig {}", missing.display())),
        "{stderr}"
    );
    let output = live(&["plan", "--context", "nope"], &kubeconfig, &linstor)
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("context \"nope\""), "{stderr}");
    let output = live(&["plan"], &kubeconfig, "http://[::1")
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LS_CONTROLLERS"), "{stderr}");
}

#[test]
fn replace_without_a_terminal_needs_yes() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_kubeconfig(dir.path());
    let linstor = format!("http://127.0.0.1:{}", closed_port());
    // Refused before anything is contacted.
    let output = live(&["replace", "pvc-x"], &kubeconfig, &linstor)
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("standard input is not a terminal"), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(!stderr.contains("Kubernetes API server"), "{stderr}");
    // With --yes (and without the lease check) it goes on, and names what
    // cannot be reached.
    let output = live(
        &["replace", "pvc-x", "--yes", "--ignore-lease"],
        &kubeconfig,
        &linstor,
    )
    .code(1)
    .get_output()
    .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Kubernetes API server https://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn help_explains_live_and_offline_modes_and_exit_codes() {
    let help = |command: &str| {
        let output = Command::cargo_bin("linstor-affinity")
            .unwrap()
            .args([command, "--help"])
            .assert()
            .code(0)
            .get_output()
            .clone();
        String::from_utf8(output.stdout).unwrap()
    };
    let plan_help = help("plan");
    for text in [
        "--from-dir",
        "--kubeconfig",
        "--context",
        "LS_CONTROLLERS",
        "Exit codes",
        "live",
    ] {
        assert!(plan_help.contains(text), "plan --help lacks {text}");
    }
    let replace_help = help("replace");
    for text in [
        "--yes",
        "--kubeconfig",
        "--grace-period",
        "LS_CONTROLLERS",
        "Exit codes",
    ] {
        assert!(replace_help.contains(text), "replace --help lacks {text}");
    }
    assert!(!replace_help.contains("--from-dir"));
}
