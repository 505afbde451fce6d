//! The deployment: the Helm chart, the kustomize base and overlay, the alerting rules and the
//! image, checked with the real tools (helm, kubectl, promtool, buildah) and, for everything that
//! is applied, a real v1.20.2 API server.
//!
//! helm and kubectl come from `LINSTOR_AFFINITY_TOOLS_DIR` (the directory `scripts/tools/install`
//! prints; without the variable its cache is used), promtool from `PATH`. Without them a test
//! prints `SKIPPED: <reason>` and passes, except with `CI=true`, where it fails, as a missing
//! cluster does. The image test runs when `LINSTOR_AFFINITY_IMAGE` names the image
//! `scripts/image/build` built (`.ci/run` sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};

use kube_harness::TestEnv;
use serde::Deserialize;
use serde_json::{Value, json};

/// Environment variable naming the directory with helm and kubectl.
const TOOLS_DIR_ENV: &str = "LINSTOR_AFFINITY_TOOLS_DIR";
/// Environment variable naming the image built by `scripts/image/build`.
const IMAGE_ENV: &str = "LINSTOR_AFFINITY_IMAGE";
const ENDPOINT: &str = "http://linstor-controller.piraeus-datastore.svc:3370";

/// The LINSTOR auto-detection looks at cluster-wide objects (the one `LinstorCluster`): the tests
/// that create them run one at a time.
static DETECTION: Mutex<()> = Mutex::new(());
/// The CRDs created so far.
static CRDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

fn chart() -> PathBuf {
    root().join("charts/linstor-affinity-controller")
}

/// Prints `SKIPPED: <test>: <reason>` and returns false, or fails with `CI=true`.
fn skip(test: &str, reason: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    false
}

/// A program on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// helm and kubectl, with a Helm home of their own.
struct Tools {
    dir: PathBuf,
    home: tempfile::TempDir,
}

impl Tools {
    /// The tools, or `None` after [`skip`].
    fn get(test: &str) -> Option<Tools> {
        let dir = match std::env::var_os(TOOLS_DIR_ENV).filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let out = Command::new(root().join("scripts/tools/install"))
                    .arg("--print-dir")
                    .stdin(Stdio::null())
                    .output()
                    .expect("running scripts/tools/install --print-dir");
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let missing: Vec<&str> = ["helm", "kubectl"]
            .into_iter()
            .filter(|tool| !dir.join(tool).is_file())
            .collect();
        if !missing.is_empty() {
            skip(
                test,
                &format!(
                    "{} not found in {} (run scripts/tools/install, or set {TOOLS_DIR_ENV})",
                    missing.join(", "),
                    dir.display()
                ),
            );
            return None;
        }
        Some(Tools {
            dir,
            home: tempfile::tempdir().unwrap(),
        })
    }

    fn helm(&self) -> Command {
        let mut cmd = Command::new(self.dir.join("helm"));
        for (var, sub) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(var, self.home.path().join(sub));
        }
        cmd.env_remove("KUBECONFIG").stdin(Stdio::null());
        cmd
    }

    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.dir.join("kubectl"));
        cmd.env_remove("KUBECONFIG")
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `helm template <release> <chart> --namespace <namespace> ARGS`: the output, or the failure.
    fn template(&self, release: &str, namespace: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.helm();
        cmd.arg("template")
            .arg(release)
            .arg(chart())
            .args(["--namespace", namespace])
            .args(args);
        output(&mut cmd)
    }

    /// [`Tools::template`] that must succeed, as documents.
    fn render(&self, args: &[&str]) -> Vec<Value> {
        let text = self
            .template("lac", "piraeus-datastore", args)
            .unwrap_or_else(|e| panic!("helm template {args:?}: {e}"));
        documents(&text)
    }
}

/// Runs `cmd`: its stdout, or its status and stderr.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    result(cmd, out)
}

fn result(cmd: &Command, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `cmd` with `input` on stdin.
fn output_with_input(cmd: &mut Command, input: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    result(cmd, out)
}

/// The YAML documents of `text` (empty ones left out), as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).unwrap())
        .collect()
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|doc| doc["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|doc| doc["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected in {docs:#?}");
    found[0]
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect()
}

/// The container's environment variables by name.
fn env_vars(deployment: &Value) -> Vec<(String, Value)> {
    container(deployment)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| (var["name"].as_str().unwrap().to_owned(), var.clone()))
        .collect()
}

fn env_var(deployment: &Value, name: &str) -> Option<Value> {
    env_vars(deployment)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn default_args() -> Vec<String> {
    [
        "/linstor-affinity-controller",
        "--kube-api-burst=600",
        "--kube-api-qps=300",
        "--leader-election=true",
        "--log-format=text",
        "--v=1",
        "--workers=10",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The ClusterRole's rules: one per capability.
fn expected_cluster_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["persistentvolumes"],
         "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["persistentvolumes/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["list", "watch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ])
}

fn expected_lease_rules() -> Value {
    json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// Asserts the TLS environment from `secret` and the endpoint.
fn assert_tls_env(deployment: &Value, endpoint: &str, secret: &str) {
    assert_eq!(
        env_var(deployment, "LS_CONTROLLERS"),
        Some(json!({"name": "LS_CONTROLLERS", "value": endpoint}))
    );
    for (name, key) in [
        ("LS_USER_CERTIFICATE", "tls.crt"),
        ("LS_USER_KEY", "tls.key"),
        ("LS_ROOT_CA", "ca.crt"),
    ] {
        assert_eq!(env_var(deployment, name), Some(secret_env(name, secret, key)));
    }
}

/// Asserts plain HTTP to `endpoint`: no TLS environment.
fn assert_plain_env(deployment: &Value, endpoint: &str) {
    assert_eq!(
        env_var(deployment, "LS_CONTROLLERS"),
        Some(json!({"name": "LS_CONTROLLERS", "value": endpoint}))
    );
    for name in ["LS_USER_CERTIFICATE", "LS_USER_KEY", "LS_ROOT_CA"] {
        assert_eq!(env_var(deployment, name), None, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering, without a cluster

#[test]
fn chart_version_follows_the_workspace() {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let chart: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["kubeVersion"], ">=1.20.0-0");
}

#[test]
fn chart_lints() {
    let Some(tools) = Tools::get("chart_lints") else {
        return;
    };
    let out = output(
        tools
            .helm()
            .arg("lint")
            .arg("--strict")
            .arg(chart())
            .args(["--set", &format!("linstor.endpoint={ENDPOINT}")]),
    )
    .unwrap();
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // The values are checked against values.schema.json.
    let err = tools
        .template(
            "lac",
            "default",
            &["--set", "linstor.endpoint=x", "--set", "options.workers=many"],
        )
        .unwrap_err();
    assert!(err.contains("/options/workers"), "{err}");
}

#[test]
fn default_rendering_is_the_reference_deployment() {
    let Some(tools) = Tools::get("default_rendering_is_the_reference_deployment") else {
        return;
    };
    let docs = tools.render(&["--set", &format!("linstor.endpoint={ENDPOINT}")]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
        .map(str::to_owned)
        .into()
    );

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "lac-linstor-affinity-controller");
    assert_eq!(deployment["metadata"]["namespace"], "piraeus-datastore");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "lac-linstor-affinity-controller");
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert!(pod.get("priorityClassName").is_none());
    let c = container(deployment);
    assert_eq!(
        c["image"],
        format!("linstor-affinity-controller:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert!(
        c.get("command").is_none(),
        "the image has no entrypoint; args name the binary"
    );
    assert_eq!(args(deployment), default_args());
    assert_eq!(
        env_vars(deployment)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        [
            "LEASE_LOCK_NAME",
            "LEASE_HOLDER_IDENTITY",
            "POD_NAMESPACE",
            "LS_CONTROLLERS"
        ]
    );
    assert_eq!(
        env_var(deployment, "LEASE_LOCK_NAME").unwrap()["value"],
        "lac-linstor-affinity-controller"
    );
    assert_eq!(
        env_var(deployment, "LEASE_HOLDER_IDENTITY").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env_var(deployment, "POD_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_plain_env(deployment, ENDPOINT);
    assert_eq!(
        c["ports"],
        json!([{"name": "health", "containerPort": 8000, "protocol": "TCP"}])
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": path, "port": "health"}),
            "{probe}"
        );
    }
    assert_eq!(
        c["securityContext"],
        json!({"capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "20m", "memory": "64Mi"}})
    );

    assert_eq!(one(&docs, "ClusterRole")["rules"], expected_cluster_rules());
    assert_eq!(one(&docs, "Role")["rules"], expected_lease_rules());
    let subject = json!([{"kind": "ServiceAccount", "name": "lac-linstor-affinity-controller", "namespace": "piraeus-datastore"}]);
    assert_eq!(one(&docs, "ClusterRoleBinding")["subjects"], subject);
    assert_eq!(one(&docs, "RoleBinding")["subjects"], subject);
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["name"],
        "lac-linstor-affinity-controller"
    );
}

#[test]
fn options_become_flags_and_leader_election_off_drops_the_role() {
    let Some(tools) = Tools::get("options_become_flags_and_leader_election_off_drops_the_role") else {
        return;
    };
    let docs = tools.render(&[
        "--set",
        "linstor.endpoint=http://l:3370",
        "--set",
        "options.leaderElection=false",
        "--set",
        "options.propertyNamespace=Aux/topology",
        "--set",
        "options.reconcileRate=30s",
        "--set",
        "options.kubeApiQps=null",
        "--set-string",
        "options.logFormat=json",
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "image.repository=registry.example.com/lac",
        "--set",
        "image.tag=dev",
    ]);
    assert_eq!(
        args(one(&docs, "Deployment")),
        [
            "/linstor-affinity-controller",
            "--kube-api-burst=600",
            "--leader-election=false",
            "--log-format=json",
            "--property-namespace=Aux/topology",
            "--reconcile-rate=30s",
            "--v=1",
            "--workers=10",
        ]
    );
    let deployment = one(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    assert_eq!(container(deployment)["image"], "registry.example.com/lac:dev");
    let rendered = kinds(&docs);
    assert!(
        !rendered.contains("Role") && !rendered.contains("RoleBinding"),
        "{rendered:?}"
    );
    assert!(rendered.contains("ClusterRole"));

    let docs = tools.render(&[
        "--set",
        "linstor.endpoint=http://l:3370",
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=existing",
    ]);
    assert_eq!(kinds(&docs), ["Deployment".to_owned()].into());
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "existing"
    );
}

#[test]
fn a_client_secret_passes_the_tls_environment() {
    let Some(tools) = Tools::get("a_client_secret_passes_the_tls_environment") else {
        return;
    };
    let docs = tools.render(&[
        "--set",
        "linstor.endpoint=https://linstor-controller.piraeus-datastore.svc:3371",
        "--set",
        "linstor.clientSecret=my-client-tls",
    ]);
    assert_tls_env(
        one(&docs, "Deployment"),
        "https://linstor-controller.piraeus-datastore.svc:3371",
        "my-client-tls",
    );
}

#[test]
fn monitoring_off_renders_no_metrics_and_on_renders_them() {
    let Some(tools) = Tools::get("monitoring_off_renders_no_metrics_and_on_renders_them") else {
        return;
    };
    let endpoint = format!("linstor.endpoint={ENDPOINT}");

    // Off (the default): no metrics address, port, Service or monitoring objects, even when forced.
    let docs = tools.render(&["--set", &endpoint, "--set", "monitoring.forceMonitoringAPI=true"]);
    let deployment = one(&docs, "Deployment");
    assert!(
        !args(deployment)
            .iter()
            .any(|a| a.starts_with("--metrics-address"))
    );
    assert_eq!(container(deployment)["ports"].as_array().unwrap().len(), 1);
    let kinds_off = kinds(&docs);
    for kind in ["Service", "ServiceMonitor", "PrometheusRule"] {
        assert!(!kinds_off.contains(kind), "{kind} rendered with monitoring off");
    }

    // On, without the monitoring.coreos.com API (helm template knows none): the Service only.
    let docs = tools.render(&["--set", &endpoint, "--set", "monitoring.enabled=true"]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(args(deployment).last().unwrap(), "--metrics-address=:8001");
    assert_eq!(
        container(deployment)["ports"][1],
        json!({"name": "metrics", "containerPort": 8001, "protocol": "TCP"})
    );
    let service = one(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 8001, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        json!({"app.kubernetes.io/name": "linstor-affinity-controller", "app.kubernetes.io/instance": "lac"})
    );
    let kinds_on = kinds(&docs);
    assert!(!kinds_on.contains("ServiceMonitor") && !kinds_on.contains("PrometheusRule"));

    // Forced: the ServiceMonitor selects the metrics Service; the PrometheusRule carries the
    // groups of files/prometheus-rules.yaml.
    let docs = tools.render(&[
        "--set",
        &endpoint,
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.forceMonitoringAPI=true",
        "--set",
        "monitoring.serviceMonitor.interval=30s",
        "--set",
        "monitoring.prometheusRule.labels.release=prometheus",
    ]);
    let monitor = one(&docs, "ServiceMonitor");
    let service = one(&docs, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][key], value, "Service label {key}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "30s"}])
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": ["piraeus-datastore"]})
    );
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
}

#[test]
fn node_drain_adds_the_nodes_rule_and_its_flags() {
    let Some(tools) = Tools::get("node_drain_adds_the_nodes_rule_and_its_flags") else {
        return;
    };
    let endpoint = format!("linstor.endpoint={ENDPOINT}");

    // Off (the default): neither the rule nor a flag.
    let docs = tools.render(&["--set", &endpoint]);
    assert_eq!(one(&docs, "ClusterRole")["rules"], expected_cluster_rules());
    assert_eq!(args(one(&docs, "Deployment")), default_args());

    let docs = tools.render(&[
        "--set",
        &endpoint,
        "--set",
        "nodeDrain.enabled=true,nodeDrain.drainPolicy=Evacuate,nodeDrain.maxConcurrentEvacuations=2",
    ]);
    let mut rules = expected_cluster_rules();
    rules
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}));
    assert_eq!(one(&docs, "ClusterRole")["rules"], rules);
    let mut expected = default_args();
    expected.extend(
        [
            "--node-drain-policy=Evacuate",
            "--node-delete-policy=Orphan",
            "--max-concurrent-evacuations=2",
        ]
        .map(str::to_owned),
    );
    assert_eq!(args(one(&docs, "Deployment")), expected);

    // An unknown policy fails, also while off; so do the flags under options, which would come
    // without the nodes rule.
    for (set, message) in [
        (
            "nodeDrain.drainPolicy=Evict",
            r#"nodeDrain.drainPolicy "Evict" is not one of Ignore, NoSchedule, Evacuate"#,
        ),
        (
            "nodeDrain.enabled=true,nodeDrain.deletePolicy=Delete",
            r#"nodeDrain.deletePolicy "Delete" is not one of Orphan, Evacuate"#,
        ),
        (
            "options.nodeDrainPolicy=Evacuate",
            "options.nodeDrainPolicy: set nodeDrain.drainPolicy instead",
        ),
    ] {
        let err = tools
            .template("lac", "default", &["--set", &endpoint, "--set", set])
            .unwrap_err();
        assert!(err.contains(message), "{set}: {err}");
    }
}

#[test]
fn the_disruption_budget_never_blocks_a_drain() {
    let Some(tools) = Tools::get("the_disruption_budget_never_blocks_a_drain") else {
        return;
    };
    let endpoint = format!("linstor.endpoint={ENDPOINT}");
    let pdb = |extra: &[&str]| -> Option<Value> {
        let mut args = vec!["--set", endpoint.as_str()];
        args.extend_from_slice(extra);
        tools
            .render(&args)
            .into_iter()
            .find(|doc| doc["kind"] == "PodDisruptionBudget")
    };
    // minAvailable 1 of 1 replica would forbid every eviction: left out.
    assert_eq!(pdb(&[]), None);
    assert_eq!(
        pdb(&[
            "--set",
            "replicaCount=2",
            "--set",
            "podDisruptionBudget.minAvailable=2"
        ]),
        None
    );
    assert_eq!(
        pdb(&["--set", "autoscaling.enabled=true", "--set", "replicaCount=3"]),
        None
    );
    assert_eq!(
        pdb(&[
            "--set",
            "replicaCount=2",
            "--set",
            "podDisruptionBudget.enabled=false"
        ]),
        None
    );

    let two = pdb(&["--set", "replicaCount=2"]).expect("a PDB for two replicas");
    assert_eq!(two["apiVersion"], "policy/v1");
    assert_eq!(two["spec"]["minAvailable"], 1);
    assert_eq!(
        two["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "linstor-affinity-controller", "app.kubernetes.io/instance": "lac"})
    );
    let percent = pdb(&[
        "--set",
        "replicaCount=2",
        "--set-string",
        "podDisruptionBudget.minAvailable=50%",
    ])
    .expect("a PDB for two replicas");
    assert_eq!(percent["spec"]["minAvailable"], "50%");
    assert!(
        pdb(&[
            "--set",
            "autoscaling.enabled=true",
            "--set",
            "autoscaling.minReplicas=2"
        ])
        .is_some()
    );
    // Offline for Kubernetes 1.20: policy/v1 does not exist there yet.
    let old = pdb(&["--set", "replicaCount=2", "--kube-version", "1.20.2"]).unwrap();
    assert_eq!(old["apiVersion"], "policy/v1beta1");
}

#[test]
fn autoscaler_api_versions_follow_the_kubernetes_version() {
    let Some(tools) = Tools::get("autoscaler_api_versions_follow_the_kubernetes_version") else {
        return;
    };
    let endpoint = format!("linstor.endpoint={ENDPOINT}");
    for (kube_version, api_version) in [
        (None, "autoscaling/v2"),
        (Some("1.23.0"), "autoscaling/v2"),
        (Some("1.22.0"), "autoscaling/v2beta2"),
        (Some("1.20.2"), "autoscaling/v2beta2"),
    ] {
        let mut args = vec!["--set", endpoint.as_str(), "--set", "autoscaling.enabled=true"];
        if let Some(version) = kube_version {
            args.extend(["--kube-version", version]);
        }
        let docs = tools.render(&args);
        let hpa = one(&docs, "HorizontalPodAutoscaler");
        assert_eq!(hpa["apiVersion"], api_version, "{kube_version:?}");
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["maxReplicas"], 3);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"],
            json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}})
        );
        assert!(one(&docs, "Deployment")["spec"].get("replicas").is_none());
    }
}

#[test]
fn without_an_endpoint_and_nothing_to_detect_the_rendering_fails() {
    let Some(tools) = Tools::get("without_an_endpoint_and_nothing_to_detect_the_rendering_fails") else {
        return;
    };
    let err = tools.template("lac", "default", &[]).unwrap_err();
    assert!(err.contains("specify linstor.endpoint"), "{err}");
}

#[test]
fn prometheus_rules_check_and_pass_their_unit_tests() {
    let test = "prometheus_rules_check_and_pass_their_unit_tests";
    let Some(promtool) = on_path("promtool") else {
        skip(test, "promtool not found on PATH (run scripts/tools/install)");
        return;
    };
    let check = output(
        Command::new(&promtool)
            .args(["check", "rules", "files/prometheus-rules.yaml"])
            .current_dir(chart()),
    )
    .unwrap();
    assert!(check.contains("SUCCESS: 6 rules found"), "{check}");
    let tests = output(
        Command::new(&promtool)
            .args(["test", "rules", "tests/prometheus-rules.test.yaml"])
            .current_dir(chart()),
    )
    .unwrap();
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert has a unit test that fires it.
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let unit_tests = std::fs::read_to_string(chart().join("tests/prometheus-rules.test.yaml")).unwrap();
    let unit_tests: Value = serde_yaml_ng::from_str(&unit_tests).unwrap();
    let fired: BTreeSet<&str> = unit_tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|case| !case["exp_alerts"].as_array().unwrap().is_empty())
        .map(|case| case["alertname"].as_str().unwrap())
        .collect();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap();
        assert!(fired.contains(alert), "no unit test fires {alert}");
    }
}

#[test]
fn deploy_base_is_up_to_date() {
    let Some(tools) = Tools::get("deploy_base_is_up_to_date") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    output(
        Command::new(root().join("scripts/deploy/render-base"))
            .arg("--output")
            .arg(out.path())
            .env("HELM", tools.dir.join("helm"))
            .env("HELM_CACHE_HOME", tools.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", tools.home.path().join("config"))
            .env("HELM_DATA_HOME", tools.home.path().join("data")),
    )
    .unwrap();
    for file in ["kustomization.yaml", "linstor-affinity-controller.yaml"] {
        let fresh = std::fs::read_to_string(out.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(root().join("deploy/base").join(file)).unwrap();
        assert!(
            fresh == committed,
            "deploy/base/{file} is not the chart's rendering: run scripts/deploy/render-base"
        );
    }
}

#[test]
fn tls_overlay_renders_the_tls_environment() {
    let Some(tools) = Tools::get("tls_overlay_renders_the_tls_environment") else {
        return;
    };
    let text = output(
        tools
            .kubectl()
            .arg("kustomize")
            .arg(root().join("deploy/overlays/tls")),
    )
    .unwrap();
    let docs = documents(&text);
    let deployment = one(&docs, "Deployment");
    assert_tls_env(
        deployment,
        "https://linstor-controller.piraeus-datastore.svc:3371",
        "linstor-client-tls",
    );
    // The rest of the base is kept.
    assert_eq!(args(deployment), default_args());
    assert!(env_var(deployment, "LEASE_HOLDER_IDENTITY").is_some());
    let base = documents(
        &std::fs::read_to_string(root().join("deploy/base/linstor-affinity-controller.yaml")).unwrap(),
    );
    assert_eq!(kinds(&docs), kinds(&base));
    assert_plain_env(one(&base, "Deployment"), ENDPOINT);
}

#[test]
fn the_image_runs_as_the_reference_image_does() {
    let test = "the_image_runs_as_the_reference_image_does";
    let Some(image) = std::env::var(IMAGE_ENV).ok().filter(|i| !i.is_empty()) else {
        // Not a missing tool: the image is only built by .ci/run, which sets the variable.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: {IMAGE_ENV} is not set (scripts/image/build prints the image name)"
        );
        return;
    };
    let Some(buildah) = on_path("buildah") else {
        skip(test, "buildah not found on PATH (run scripts/tools/install)");
        return;
    };
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image} is not tagged with the workspace version, the chart's appVersion"
    );
    let text = output(
        Command::new(buildah)
            .args(["--storage-driver", "vfs", "inspect", "--type", "image"])
            .arg(&image),
    )
    .unwrap();
    let inspect: Value = serde_json::from_str(&text).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Cmd"], json!(["/linstor-affinity-controller", "-v=2"]));
    assert!(
        config["Entrypoint"].as_array().is_none_or(|e| e.is_empty()),
        "{config}"
    );
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.title"],
        "linstor-affinity-controller"
    );
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        env!("CARGO_PKG_REPOSITORY")
    );
    assert!(
        !labels["org.opencontainers.image.description"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Against the v1.20.2 API server

/// A test's tools and cluster.
struct Cluster {
    tools: Tools,
    env: TestEnv,
}

impl Cluster {
    async fn setup(test: &str) -> Option<Cluster> {
        let tools = Tools::get(test)?;
        let env = TestEnv::setup(test).await?;
        Some(Cluster { tools, env })
    }

    fn kubeconfig(&self) -> &Path {
        self.env.cluster().kubeconfig()
    }

    fn kubectl(&self) -> Command {
        let mut cmd = self.tools.kubectl();
        cmd.arg("--kubeconfig").arg(self.kubeconfig());
        cmd
    }

    fn helm(&self) -> Command {
        let mut cmd = self.tools.helm();
        cmd.arg("--kubeconfig").arg(self.kubeconfig());
        cmd
    }

    /// `kubectl apply --server-side --dry-run=server` of `manifests`.
    fn dry_run(&self, manifests: &str, what: &str) {
        let out = output_with_input(
            self.kubectl()
                .args(["apply", "--server-side", "--dry-run=server", "-f", "-"]),
            manifests,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.contains("(server dry run)"), "{what}: {out}");
    }

    /// `helm install <release> <chart> --namespace <namespace> ARGS` (no --wait: no kubelet runs).
    fn install(&self, release: &str, namespace: &str, args: &[&str]) -> Result<String, String> {
        output(
            self.helm()
                .arg("install")
                .arg(release)
                .arg(chart())
                .args(["--namespace", namespace])
                .args(args),
        )
    }

    /// The release's manifest as Helm rendered it against the cluster.
    fn manifest(&self, release: &str, namespace: &str) -> Vec<Value> {
        documents(
            &output(
                self.helm()
                    .args(["get", "manifest", release, "--namespace", namespace]),
            )
            .unwrap(),
        )
    }

    /// `kubectl get ARGS -o json`.
    fn object(&self, args: &[&str]) -> Value {
        let text = output(self.kubectl().arg("get").args(args).args(["-o", "json"]))
            .unwrap_or_else(|e| panic!("kubectl get {args:?}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// Whether the service account may `verb` `resource` (in `namespace`, or cluster-wide).
    fn can(&self, account: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        let mut cmd = self.kubectl();
        cmd.args(["auth", "can-i", verb, resource, "--as", account]);
        match namespace {
            Some(ns) => cmd.args(["--namespace", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = cmd.output().unwrap();
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "kubectl auth can-i {verb} {resource}: {other} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Applies `manifests` for real (CRDs and the objects the chart looks up).
    fn apply(&self, manifests: &str) {
        output_with_input(self.kubectl().args(["apply", "-f", "-"]), manifests)
            .unwrap_or_else(|e| panic!("kubectl apply: {e}\n{manifests}"));
    }

    /// The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs.
    fn create_monitoring_crds(&self) {
        for (kind, plural) in [
            ("ServiceMonitor", "servicemonitors"),
            ("PrometheusRule", "prometheusrules"),
        ] {
            self.create_crd("monitoring.coreos.com", kind, plural, "Namespaced");
        }
    }

    /// Creates a CRD whose objects keep any field, and waits until it is served; once per test
    /// binary (the tests share the cluster).
    fn create_crd(&self, group: &str, kind: &str, plural: &str, scope: &str) {
        let name = format!("{plural}.{group}");
        let mut created = CRDS.lock().unwrap_or_else(PoisonError::into_inner);
        if !created.insert(name.clone()) {
            return;
        }
        self.apply(
            &json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {
                    "group": group,
                    "scope": scope,
                    "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                              "singular": kind.to_lowercase()},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                      "x-kubernetes-preserve-unknown-fields": true}}}],
                }
            })
            .to_string(),
        );
        output(
            self.kubectl()
                .args(["wait", "--for", "condition=established", "--timeout", "60s"])
                .arg(format!("crd/{name}")),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn renderings_apply_to_a_v1_20_api_server() {
    let Some(cluster) = Cluster::setup("renderings_apply").await else {
        return;
    };
    let ns = cluster.env.namespace().to_owned();
    cluster.create_monitoring_crds();
    let endpoint = format!("linstor.endpoint={ENDPOINT}");
    let cases: [(&str, Vec<&str>); 6] = [
        ("defaults", vec![]),
        (
            "node drain",
            vec!["--set", "nodeDrain.enabled=true,nodeDrain.drainPolicy=NoSchedule"],
        ),
        (
            "client secret",
            vec!["--set", "linstor.clientSecret=linstor-client-tls"],
        ),
        (
            "monitoring",
            vec![
                "--set",
                "monitoring.enabled=true",
                "--set",
                "monitoring.forceMonitoringAPI=true",
            ],
        ),
        (
            "two replicas",
            vec!["--set", "replicaCount=2", "--kube-version", "1.20.2"],
        ),
        (
            "autoscaling",
            vec![
                "--set",
                "autoscaling.enabled=true",
                "--set",
                "autoscaling.minReplicas=2",
                "--kube-version",
                "1.20.2",
            ],
        ),
    ];
    for (index, (what, extra)) in cases.iter().enumerate() {
        let mut args = vec!["--set", endpoint.as_str()];
        args.extend(extra);
        let release = format!("r{index}");
        let text = cluster.tools.template(&release, &ns, &args).unwrap();
        cluster.dry_run(&text, what);
    }

    // The kustomize base and overlay, and the Piraeus Operator's RBAC, in the namespace they name.
    cluster.apply(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "piraeus-datastore"}}"#);
    for dir in ["deploy/base", "deploy/overlays/tls"] {
        let text = output(cluster.tools.kubectl().arg("kustomize").arg(root().join(dir))).unwrap();
        cluster.dry_run(&text, dir);
    }
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/piraeus-operator-rbac.yaml"),
    )
    .unwrap();
    cluster.dry_run(&fixture, "piraeus-operator-rbac.yaml");
}

#[tokio::test]
async fn helm_install_creates_the_deployment_and_rbac() {
    let Some(cluster) = Cluster::setup("install").await else {
        return;
    };
    let ns = cluster.env.namespace().to_owned();
    let release = cluster.env.prefix().to_owned();
    let notes = cluster
        .install(&release, &ns, &["--set", &format!("linstor.endpoint={ENDPOINT}")])
        .unwrap();
    assert!(notes.contains(&format!("LINSTOR: {ENDPOINT}")), "{notes}");
    let name = format!("{release}-linstor-affinity-controller");

    let deployment = cluster.object(&["deployment", &name, "--namespace", &ns]);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(args(&deployment), default_args());
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], name);
    assert_eq!(env_var(&deployment, "LEASE_LOCK_NAME").unwrap()["value"], name);
    assert_eq!(
        env_var(&deployment, "LEASE_HOLDER_IDENTITY").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_plain_env(&deployment, ENDPOINT);
    let c = container(&deployment);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["ports"][0]["containerPort"], 8000);

    cluster.object(&["serviceaccount", &name, "--namespace", &ns]);
    assert_eq!(
        cluster.object(&["clusterrole", &name])["rules"],
        expected_cluster_rules()
    );
    assert_eq!(
        cluster.object(&["role", &name, "--namespace", &ns])["rules"],
        expected_lease_rules()
    );
    let binding = cluster.object(&["clusterrolebinding", &name]);
    assert_eq!(binding["roleRef"]["name"], name);
    assert_eq!(binding["subjects"][0]["namespace"], ns);
    assert_eq!(
        cluster.object(&["rolebinding", &name, "--namespace", &ns])["subjects"][0]["name"],
        name
    );
    // No PodDisruptionBudget for the single replica, and no metrics Service.
    let rendered = kinds(&cluster.manifest(&release, &ns));
    assert!(
        !rendered.contains("PodDisruptionBudget") && !rendered.contains("Service"),
        "{rendered:?}"
    );

    // What the service account may do: exactly what the rules say.
    let account = format!("system:serviceaccount:{ns}:{name}");
    let other = "default";
    for (verb, resource, namespace, allowed) in [
        ("watch", "persistentvolumes", None, true),
        ("delete", "persistentvolumes", None, true),
        ("update", "persistentvolumes", None, false),
        ("patch", "persistentvolumes/status", None, true),
        ("update", "persistentvolumes/status", None, false),
        ("patch", "persistentvolumeclaims", Some(other), true),
        ("delete", "persistentvolumeclaims", Some(other), false),
        ("watch", "storageclasses.storage.k8s.io", None, true),
        ("delete", "storageclasses.storage.k8s.io", None, false),
        ("create", "events.events.k8s.io", Some(other), true),
        ("create", "events", Some(other), true),
        ("update", "leases.coordination.k8s.io", Some(ns.as_str()), true),
        ("get", "leases.coordination.k8s.io", Some(other), false),
        ("get", "secrets", Some(ns.as_str()), false),
        // Only with nodeDrain.enabled.
        ("watch", "nodes", None, false),
    ] {
        assert_eq!(
            cluster.can(&account, verb, resource, namespace),
            allowed,
            "{verb} {resource} in {namespace:?}"
        );
    }
}

#[tokio::test]
async fn helm_install_picks_api_versions_a_v1_20_cluster_serves() {
    let Some(cluster) = Cluster::setup("api-versions").await else {
        return;
    };
    let ns = cluster.env.namespace().to_owned();
    let endpoint = format!("linstor.endpoint={ENDPOINT}");

    let release = format!("{}-a", cluster.env.prefix());
    cluster
        .install(&release, &ns, &["--set", &endpoint, "--set", "replicaCount=2"])
        .unwrap();
    let docs = cluster.manifest(&release, &ns);
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    let name = format!("{release}-linstor-affinity-controller");
    let live = cluster.object(&["poddisruptionbudgets.v1beta1.policy", &name, "--namespace", &ns]);
    assert_eq!(live["spec"]["minAvailable"], 1);
    assert_eq!(
        cluster.object(&["deployment", &name, "--namespace", &ns])["spec"]["replicas"],
        2
    );

    let release = format!("{}-b", cluster.env.prefix());
    cluster
        .install(
            &release,
            &ns,
            &[
                "--set",
                &endpoint,
                "--set",
                "autoscaling.enabled=true",
                "--set",
                "autoscaling.minReplicas=2",
            ],
        )
        .unwrap();
    let docs = cluster.manifest(&release, &ns);
    assert_eq!(
        one(&docs, "HorizontalPodAutoscaler")["apiVersion"],
        "autoscaling/v2beta2"
    );
    assert_eq!(one(&docs, "PodDisruptionBudget")["apiVersion"], "policy/v1beta1");
}

#[tokio::test]
async fn helm_install_with_the_monitoring_api_creates_the_monitoring_objects() {
    let Some(cluster) = Cluster::setup("monitoring").await else {
        return;
    };
    let ns = cluster.env.namespace().to_owned();
    cluster.create_monitoring_crds();
    let release = cluster.env.prefix().to_owned();
    cluster
        .install(
            &release,
            &ns,
            &[
                "--set",
                &format!("linstor.endpoint={ENDPOINT}"),
                "--set",
                "monitoring.enabled=true",
            ],
        )
        .unwrap();
    let name = format!("{release}-linstor-affinity-controller");
    let deployment = cluster.object(&["deployment", &name, "--namespace", &ns]);
    assert!(args(&deployment).contains(&"--metrics-address=:8001".to_owned()));
    let service = cluster.object(&["service", &format!("{name}-metrics"), "--namespace", &ns]);
    assert_eq!(service["spec"]["ports"][0]["port"], 8001);
    let monitor = cluster.object(&["servicemonitors.monitoring.coreos.com", &name, "--namespace", &ns]);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let rule = cluster.object(&["prometheusrules.monitoring.coreos.com", &name, "--namespace", &ns]);
    assert_eq!(rule["spec"]["groups"][0]["rules"].as_array().unwrap().len(), 6);
}

/// A `LinstorCluster` and, when `tls` is given, its `spec.apiTLS`.
fn linstor_cluster(name: &str, api_tls: Option<Value>) -> String {
    let spec = match api_tls {
        Some(tls) => json!({"apiTLS": tls}),
        None => json!({}),
    };
    json!({"apiVersion": "piraeus.io/v1", "kind": "LinstorCluster", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

#[tokio::test]
async fn helm_install_detects_the_linstor_cluster_of_operator_v2() {
    let Some(cluster) = Cluster::setup("detect-v2").await else {
        return;
    };
    let _serial = DETECTION.lock().unwrap_or_else(PoisonError::into_inner);
    let ns = cluster.env.namespace().to_owned();
    let prefix = cluster.env.prefix().to_owned();
    cluster.create_crd("piraeus.io", "LinstorCluster", "linstorclusters", "Cluster");
    let _ = output(
        cluster
            .kubectl()
            .args(["delete", "linstorclusters.piraeus.io", "--all"]),
    );
    let install = |suffix: &str| cluster.install(&format!("{prefix}-{suffix}"), &ns, &[]);
    let deployment = |suffix: &str| {
        cluster.object(&[
            "deployment",
            &format!("{prefix}-{suffix}-linstor-affinity-controller"),
            "--namespace",
            &ns,
        ])
    };

    // No LinstorCluster: nothing to detect.
    let err = install("none").unwrap_err();
    assert!(err.contains("specify linstor.endpoint"), "{err}");

    // One, with the Service of its controller (in this test's namespace; another cluster's Service
    // is ignored): plain HTTP.
    let name = format!("{prefix}-lc");
    cluster.apply(&linstor_cluster(&name, None));
    let err = install("no-service").unwrap_err();
    assert!(
        err.contains("specify linstor.endpoint") && err.contains("no Service"),
        "{err}"
    );
    for (service, instance) in [
        ("linstor-controller", name.as_str()),
        ("other-controller", "other"),
    ] {
        cluster.apply(
            &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service, "namespace": ns, "labels": {
                    "app.kubernetes.io/component": "linstor-controller",
                    "app.kubernetes.io/instance": instance}},
                "spec": {"ports": [{"name": "api", "port": 3370}]},
            })
            .to_string(),
        );
    }
    install("http").unwrap();
    assert_plain_env(
        &deployment("http"),
        &format!("http://linstor-controller.{ns}.svc:3370"),
    );

    // spec.apiTLS: https and its client secret, linstor-client-tls unless named.
    cluster.apply(&linstor_cluster(&name, Some(json!({}))));
    install("tls").unwrap();
    assert_tls_env(
        &deployment("tls"),
        &format!("https://linstor-controller.{ns}.svc:3371"),
        "linstor-client-tls",
    );
    cluster.apply(&linstor_cluster(
        &name,
        Some(json!({"clientSecretName": "my-client"})),
    ));
    install("named").unwrap();
    assert_tls_env(
        &deployment("named"),
        &format!("https://linstor-controller.{ns}.svc:3371"),
        "my-client",
    );
    // The values win over what is detected.
    cluster
        .install(
            &format!("{prefix}-set"),
            &ns,
            &[
                "--set",
                "linstor.endpoint=https://elsewhere:3371",
                "--set",
                "linstor.clientSecret=mine",
            ],
        )
        .unwrap();
    assert_tls_env(&deployment("set"), "https://elsewhere:3371", "mine");

    // Two LinstorClusters: which one is meant cannot be told.
    cluster.apply(&linstor_cluster(&format!("{prefix}-second"), None));
    let err = install("two").unwrap_err();
    assert!(
        err.contains("specify linstor.endpoint") && err.contains("2 piraeus.io/v1 LinstorCluster"),
        "{err}"
    );

    output(
        cluster
            .kubectl()
            .args(["delete", "linstorclusters.piraeus.io", "--all"]),
    )
    .unwrap();
}

#[tokio::test]
async fn helm_install_detects_the_linstor_controller_of_operator_v1() {
    let Some(cluster) = Cluster::setup("detect-v1").await else {
        return;
    };
    let _serial = DETECTION.lock().unwrap_or_else(PoisonError::into_inner);
    let ns = cluster.env.namespace().to_owned();
    let prefix = cluster.env.prefix().to_owned();
    // Operator v2's kind may be served too, without a LinstorCluster.
    cluster.create_crd("piraeus.io", "LinstorCluster", "linstorclusters", "Cluster");
    let _ = output(
        cluster
            .kubectl()
            .args(["delete", "linstorclusters.piraeus.io", "--all"]),
    );
    cluster.create_crd(
        "piraeus.linbit.com",
        "LinstorController",
        "linstorcontrollers",
        "Namespaced",
    );
    cluster.create_crd(
        "linstor.linbit.com",
        "LinstorController",
        "linstorcontrollers",
        "Namespaced",
    );
    let deployment = |suffix: &str| {
        cluster.object(&[
            "deployment",
            &format!("{prefix}-{suffix}-linstor-affinity-controller"),
            "--namespace",
            &ns,
        ])
    };
    let controller = |group: &str, name: &str, secret: Option<&str>| {
        let mut spec = json!({});
        if let Some(secret) = secret {
            spec["linstorHttpsClientSecret"] = json!(secret);
        }
        json!({"apiVersion": format!("{group}/v1"), "kind": "LinstorController",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
        .to_string()
    };

    let err = cluster.install(&format!("{prefix}-none"), &ns, &[]).unwrap_err();
    assert!(err.contains("specify linstor.endpoint"), "{err}");

    // The older group, without a client secret: plain HTTP to the controller's Service.
    cluster.apply(&controller("linstor.linbit.com", "old-cs", None));
    cluster.install(&format!("{prefix}-old"), &ns, &[]).unwrap();
    assert_plain_env(&deployment("old"), &format!("http://old-cs.{ns}.svc:3370"));

    // piraeus.linbit.com is looked at first; with a client secret: https.
    cluster.apply(&controller("piraeus.linbit.com", "piraeus-cs", Some("cs-client")));
    cluster.install(&format!("{prefix}-tls"), &ns, &[]).unwrap();
    assert_tls_env(
        &deployment("tls"),
        &format!("https://piraeus-cs.{ns}.svc:3371"),
        "cs-client",
    );
}
