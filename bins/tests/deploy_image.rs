//! The controller from its container image, run as the two deployments of
//! the Go controller run it: with the Piraeus Operator's args, env and RBAC,
//! and as our Helm chart renders it (args, env, ServiceAccount and RBAC read
//! back from the installed release). Each time it acts as the deployment's
//! ServiceAccount on a real control plane and fixes a drifted PV.
//!
//! Needs the image (`LINSTOR_AFFINITY_IMAGE`, built by `scripts/image/build`;
//! without it the tests print `SKIPPED` and pass), buildah, and for the chart
//! helm (`LINSTOR_AFFINITY_TOOLS_DIR`, from `scripts/tools/install`); without
//! those the tests are skipped too, except with `CI=true`, where they fail.
//! The image's controller runs through `buildah run` on the host network, as
//! the image's own user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::apps::v1::Deployment;
use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use affinity_core::restore_policy_of;
use kube::api::{Api, ListParams};
use kube_harness::LoggedProcess;
use support::{Scenario, affinity_nodes, rules_of};

/// Both deployments bind the health endpoints to port 8000: one at a time.
static HOST_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Piraeus Operator's container args for the affinity controller.
const OPERATOR_ARGS: [&str; 6] = [
    "/linstor-affinity-controller",
    "--v=1",
    "--leader-election=true",
    "--property-namespace=Aux/topology",
    "--bind-address=:8000",
    "--metrics-address=:8081",
];

/// The image `scripts/image/build` built, named by `LINSTOR_AFFINITY_IMAGE`
/// (which `.ci/run` sets), and buildah to run it; `None` after saying why
/// the test is skipped. Without the image the test is skipped; without
/// buildah it fails with `CI=true`, as a missing cluster does.
fn image_and_buildah(test: &str) -> Option<String> {
    let Some(image) = std::env::var("LINSTOR_AFFINITY_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
    else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: LINSTOR_AFFINITY_IMAGE is not set (scripts/image/build prints the image name)"
        );
        return None;
    };
    let found = Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and buildah is not installed (scripts/tools/install)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: buildah is not installed (scripts/tools/install)"
        );
        return None;
    }
    Some(image)
}

/// helm from `LINSTOR_AFFINITY_TOOLS_DIR`, else from the cache of
/// `scripts/tools/install`; `None` after saying why the test is skipped,
/// and a failure with `CI=true`.
fn helm(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("LINSTOR_AFFINITY_TOOLS_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let install = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tools/install");
            let out = Command::new(install).arg("--print-dir").output().unwrap();
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let helm = dir.join("helm");
    if helm.is_file() {
        return Some(helm);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no helm in {} (scripts/tools/install)",
        dir.display()
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: no helm in {} (scripts/tools/install)",
        dir.display()
    );
    None
}

fn buildah() -> Command {
    let mut command = Command::new("buildah");
    command.args(["--storage-driver", "vfs"]);
    command
}

/// A working container of the image; removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn of(image: &str) -> Self {
        let output = buildah().args(["from", "--pull=never", image]).output().unwrap();
        assert!(
            output.status.success(),
            "buildah from {image}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Container {
            name: String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        }
    }

    /// Runs `args` (the first one being the program) in the container with
    /// `env` and the host files `mounts` (host path, container path), read-only.
    fn run(&self, args: &[String], env: &[(String, String)], mounts: &[(PathBuf, &str)]) -> LoggedProcess {
        let mut command = buildah();
        command.args(["run", "--isolation", "chroot"]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        for (host, inside) in mounts {
            command.arg("-v").arg(format!("{}:{inside}:ro", host.display()));
        }
        command.arg(&self.name).arg("--").args(args);
        LoggedProcess::spawn(&mut command)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah().args(["rm", &self.name]).output();
    }
}

/// A file readable by the image's user, holding `text`.
fn shared_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until the health endpoint on port 8000 says ready.
async fn wait_ready(process: &LoggedProcess, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = tokio::net::TcpStream::connect("127.0.0.1:8000").await.is_ok()
            && Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "http://127.0.0.1:8000/readyz"])
                .status()
                .is_ok_and(|status| status.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within {timeout:?}; log:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves the volume's replica and waits for its PV to be replaced and
/// finished (affinity on node 1, reclaim policy back).
async fn drift_and_wait(scenario: &Scenario, pv_name: &str, original_uid: &str, process: &LoggedProcess) {
    scenario.move_replica(pv_name, 0, 1);
    let replaced = scenario
        .env
        .try_wait_for(&scenario.env.pvs(), pv_name, Duration::from_secs(90), |pv| {
            pv.metadata.uid.as_deref() != Some(original_uid)
                && affinity_nodes(pv) == [scenario.node(1)]
                && restore_policy_of(pv).is_none()
        })
        .await;
    if let Err(observed) = replaced {
        panic!(
            "PV not replaced; last seen:\n{observed}\ncontroller log:\n{}",
            process.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_under_the_operators_args_env_and_rbac_fixes_a_drifted_pv() {
    let test = "the_image_under_the_operators_args_env_and_rbac_fixes_a_drifted_pv";
    let Some(image) = image_and_buildah(test) else {
        return;
    };
    let Some(scenario) = Scenario::new("deploy-image-operator", 2).await else {
        return;
    };
    let _ports = HOST_PORTS.lock().await;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/piraeus-operator-rbac.yaml"
    );
    let (cluster_rules, lease_rules) = rules_of(fixture);
    let dir = tempfile::tempdir().unwrap();
    let account = scenario
        .env
        .service_account(
            "linstor-affinity-controller",
            cluster_rules,
            lease_rules,
            dir.path(),
        )
        .await;
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 0).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let original_uid = bound.pv.metadata.uid.clone().unwrap();

    // As in a pod: no POD_NAMESPACE, the namespace comes from the service
    // account's file.
    let namespace = scenario.env.namespace().to_owned();
    let namespace_file = shared_file(dir.path(), "namespace", &namespace);
    let env = [
        ("KUBECONFIG", "/etc/linstor-affinity/kubeconfig".to_owned()),
        ("LEASE_LOCK_NAME", "linstor-affinity-controller".to_owned()),
        (
            "LEASE_HOLDER_IDENTITY",
            "linstor-affinity-controller-5d8f-x2x7q".to_owned(),
        ),
        ("LS_CONTROLLERS", scenario.sim.http_url().unwrap()),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let container = Container::of(&image);
    let mut controller = container.run(
        &OPERATOR_ARGS.map(str::to_owned),
        &env,
        &[
            (account.kubeconfig.clone(), "/etc/linstor-affinity/kubeconfig"),
            (
                namespace_file,
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            ),
        ],
    );
    wait_ready(&controller, Duration::from_secs(60)).await;
    drift_and_wait(&scenario, &pv_name, &original_uid, &controller).await;

    let lease = Api::<Lease>::namespaced(scenario.env.client(), &namespace)
        .get("linstor-affinity-controller")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.and_then(|spec| spec.holder_identity).as_deref(),
        Some("linstor-affinity-controller-5d8f-x2x7q")
    );
    controller.terminate(Duration::from_secs(20)).await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_as_the_chart_installs_it_fixes_a_drifted_pv() {
    let test = "the_image_as_the_chart_installs_it_fixes_a_drifted_pv";
    let (Some(image), Some(helm_binary)) = (image_and_buildah(test), helm(test)) else {
        return;
    };
    let Some(scenario) = Scenario::new("deploy-image-chart", 2).await else {
        return;
    };
    let _ports = HOST_PORTS.lock().await;
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 0).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let original_uid = bound.pv.metadata.uid.clone().unwrap();
    let namespace = scenario.env.namespace().to_owned();
    let release = scenario.env.name("lac");
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/linstor-affinity-controller"
    );
    let helm = |args: &[&str]| {
        let output = Command::new(&helm_binary)
            .args(args)
            .arg("--kubeconfig")
            .arg(scenario.env.cluster().kubeconfig())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let started = Instant::now();
    let endpoint = format!("linstor.endpoint={}", scenario.sim.http_url().unwrap());
    helm(&[
        "install",
        &release,
        chart,
        "--namespace",
        &namespace,
        "--set",
        &endpoint,
        // Every path on, node drain included.
        "--set",
        "nodeDrain.enabled=true",
    ]);

    // What the chart asks the cluster to run, read back from the API server.
    let instance = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let deployments = Api::<Deployment>::namespaced(scenario.env.client(), &namespace)
        .list(&instance)
        .await
        .unwrap()
        .items;
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    let pod = deployments[0].spec.template.spec.clone().unwrap();
    let account = pod.service_account_name.clone().unwrap();
    let container_spec = pod.containers.into_iter().next().unwrap();
    let args = container_spec.args.unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("/linstor-affinity-controller")
    );
    let pod_name = format!("{release}-7c9d-abcde");
    let env: Vec<(String, String)> = container_spec
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|var| {
            let field = var
                .value_from
                .as_ref()
                .and_then(|from| from.field_ref.as_ref())
                .map(|field| field.field_path.clone());
            let value = match field.as_deref() {
                Some("metadata.name") => pod_name.clone(),
                Some("metadata.namespace") => namespace.clone(),
                Some(other) => panic!("env {} from field {other}", var.name),
                None => var.value.clone().unwrap_or_default(),
            };
            (var.name, value)
        })
        .chain([(
            "KUBECONFIG".to_owned(),
            "/etc/linstor-affinity/kubeconfig".to_owned(),
        )])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = scenario.env.kubeconfig_as(
        &format!("system:serviceaccount:{namespace}:{account}"),
        dir.path(),
    );

    let container = Container::of(&image);
    let mut controller = container.run(&args, &env, &[(kubeconfig, "/etc/linstor-affinity/kubeconfig")]);
    wait_ready(&controller, Duration::from_secs(60)).await;
    eprintln!(
        "helm install to ready: {:.1} s (install, then the image's controller started as the chart renders it)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        !controller.log().contains("RBAC does not grant"),
        "the chart's role grants every path:\n{}",
        controller.log()
    );
    drift_and_wait(&scenario, &pv_name, &original_uid, &controller).await;
    let lease_name = &env.iter().find(|(name, _)| name == "LEASE_LOCK_NAME").unwrap().1;
    let lease = Api::<Lease>::namespaced(scenario.env.client(), &namespace)
        .get(lease_name)
        .await
        .unwrap();
    assert_eq!(
        lease.spec.and_then(|spec| spec.holder_identity).as_deref(),
        Some(pod_name.as_str())
    );
    controller.terminate(Duration::from_secs(20)).await;
    helm(&["uninstall", &release, "--namespace", &namespace]);
    scenario.finish().await;
}
