//! The controller binary with the command lines its users run it with (the Piraeus Operator's, the
//! upstream chart's, the reference image's), and without CA certificates: no cluster is needed.
//! Kubernetes and LINSTOR are at 127.0.0.1:1, where nothing answers, so a run that got past its
//! flags and its configuration logs `starting` with its settings and keeps retrying; a run that did
//! not exits with code 2 and says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kube_harness::LoggedProcess;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const BINARY: &str = env!("CARGO_BIN_EXE_linstor-affinity-controller");

/// Where nothing answers.
const NOWHERE_HTTP: &str = "http://127.0.0.1:1";
const NOWHERE_HTTPS: &str = "https://127.0.0.1:1";

/// How long the controller may take to log `starting`.
const STARTUP: Duration = Duration::from_secs(30);

/// The variables that make the platform trust store empty: rustls-native-certs (under the
/// platform verifier, on Linux) reads only these locations when they are set.
const NO_CA_CERTIFICATES: [(&str, &str); 2] = [
    ("SSL_CERT_FILE", "/nonexistent"),
    ("SSL_CERT_DIR", "/nonexistent"),
];

/// A temporary home with a kubeconfig whose cluster is `cluster` (YAML of its fields).
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(cluster: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster: {{{cluster}}}\n\
             users:\n- name: test\n  user: {{token: secret}}\n\
             contexts:\n- name: test\n  context: {{cluster: test, user: test}}\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), config).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The controller with `args`, a clean environment, this kubeconfig, LINSTOR at `linstor`
    /// and the variables `env`.
    fn command(&self, args: &[&str], linstor: &str, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("HOME", self.path())
            .env("KUBECONFIG", self.path().join("kubeconfig"))
            .env("LS_CONTROLLERS", linstor)
            .envs(env.iter().copied());
        command
    }

    /// Runs the controller to its exit (for runs that must not get far).
    fn run(&self, args: &[&str], linstor: &str, env: &[(&str, &str)]) -> Output {
        assert_cmd::Command::from_std(self.command(args, linstor, env))
            .timeout(STARTUP)
            .output()
            .unwrap()
    }

    /// Starts the controller and waits for its `starting` line; returns the process.
    async fn start(&self, args: &[&str], linstor: &str, env: &[(&str, &str)]) -> (LoggedProcess, String) {
        let process = LoggedProcess::spawn(&mut self.command(args, linstor, env));
        let line = process.wait_for_line("starting", STARTUP).await;
        (process, line)
    }
}

fn nowhere_http() -> Home {
    Home::new(&format!("server: '{NOWHERE_HTTP}'"))
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that a log line shows every one of `fields`.
fn assert_fields(line: &str, fields: &[&str]) {
    for field in fields {
        assert!(line.contains(field), "{field} missing from: {line}");
    }
}

/// The addresses of the endpoints, on free ports: appended to a command line they win over the
/// ones before, as in Go.
const FREE_PORTS: [&str; 2] = ["--bind-address=:0", "--metrics-address=:0"];

#[tokio::test]
async fn the_piraeus_operators_command_line_is_accepted() {
    let home = nowhere_http();
    let operator = [
        "--v=1",
        "--leader-election=true",
        "--property-namespace=Aux/topology",
        "--bind-address=:8000",
        "--metrics-address=:8081",
    ];
    let args = [&operator[..], &FREE_PORTS].concat();
    let env = [
        ("LEASE_HOLDER_IDENTITY", "controller-pod-0"),
        ("POD_NAMESPACE", "piraeus-datastore"),
    ];
    let (process, starting) = home.start(&args, NOWHERE_HTTP, &env).await;
    assert_fields(
        &starting,
        &[
            "leader_election=true",
            "property_namespace=\"Aux/topology\"",
            "reconcile_rate=15s",
            "resync_rate=300s",
            "timeout=60s",
            "workers=10",
        ],
    );
    // Logged after `starting`.
    let election = process.wait_for_line("leader election on", STARTUP).await;
    assert_eq!(process.count("leader election on"), 1, "{}", process.log());
    assert_fields(
        &election,
        &[
            "lease=linstor-affinity-controller",
            "namespace=piraeus-datastore",
            "identity=controller-pod-0",
        ],
    );
    assert_eq!(process.count("metrics endpoint"), 1, "{}", process.log());
}

#[tokio::test]
async fn the_upstream_charts_command_line_is_accepted() {
    let home = nowhere_http();
    let chart = [
        "--v=1",
        "--leader-election=true",
        "--reconcile-rate=15s",
        "--resync-rate=15m",
        "--workers=10",
    ];
    let args = [&chart[..], &FREE_PORTS[..1]].concat();
    let env = [("LEASE_LOCK_NAME", "from-env")];
    let (process, starting) = home.start(&args, NOWHERE_HTTP, &env).await;
    assert_fields(
        &starting,
        &[
            "leader_election=true",
            "reconcile_rate=15s",
            "resync_rate=900s",
            "workers=10",
        ],
    );
    // Logged after `starting`.
    let election = process.wait_for_line("leader election on", STARTUP).await;
    assert!(election.contains("lease=from-env"), "{election}");
    assert_eq!(process.count("leader election on"), 1, "{}", process.log());
    assert_eq!(process.count("metrics endpoint"), 0, "{}", process.log());
}

#[tokio::test]
async fn the_reference_images_command_and_go_spellings_are_accepted() {
    let home = nowhere_http();
    let (_process, starting) = home.start(&["-v=2", FREE_PORTS[0]], NOWHERE_HTTP, &[]).await;
    assert_fields(&starting, &["leader_election=false"]);
    let args = [
        "-v",
        "3",
        "-leader-election=T",
        "-timeout",
        "1.5m",
        "--workers",
        "4",
        "-bind-address",
        ":0",
    ];
    let (_process, starting) = home.start(&args, NOWHERE_HTTP, &[]).await;
    assert_fields(
        &starting,
        &[
            "leader_election=true",
            "timeout=90s",
            "grace_period=90s",
            "workers=4",
        ],
    );
}

#[test]
fn unknown_flags_and_bad_values_exit_2_naming_the_flag() {
    let home = nowhere_http();
    for (args, named) in [
        (&["--no-such-flag"][..], "'--no-such-flag'"),
        (&["-no-such-flag=1"], "'--no-such-flag'"),
        (&["--leader-election=yes"], "invalid boolean \"yes\""),
        (&["--resync-rate=-5m"], "must not be negative"),
        (&["-timeout", "1d"], "unknown unit \"d\""),
        // As in Go, a boolean takes no separate value: `true` is an argument of its own.
        (&["--leader-election", "true"], "'true'"),
    ] {
        let output = home.run(args, NOWHERE_HTTP, &[]);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(!stderr.contains("starting"), "{args:?}: {stderr}");
    }
}

/// A CA certificate in a PEM file under `dir`.
fn ca_file(dir: &Path) -> PathBuf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

#[tokio::test]
async fn without_ca_certificates_http_and_connections_with_their_own_ca_start() {
    let certificate_dir = tempfile::tempdir().unwrap();
    let ca = ca_file(certificate_dir.path());
    for cluster in [
        format!("server: '{NOWHERE_HTTP}'"),
        format!(
            "server: '{NOWHERE_HTTPS}', certificate-authority: '{}'",
            ca.display()
        ),
        format!("server: '{NOWHERE_HTTPS}', insecure-skip-tls-verify: true"),
    ] {
        let home = Home::new(&cluster);
        let (process, _) = home
            .start(&FREE_PORTS[..1], NOWHERE_HTTP, &NO_CA_CERTIFICATES)
            .await;
        let log = process.log();
        assert!(!log.contains("trust store"), "{cluster}: {log}");
        assert!(!log.contains("No CA certificates"), "{cluster}: {log}");
    }
}

#[test]
fn without_ca_certificates_the_https_connection_that_needs_them_is_named() {
    let home = nowhere_http();
    let output = home.run(
        &FREE_PORTS[..1],
        "https://127.0.0.1:1,http://127.0.0.1:2",
        &NO_CA_CERTIFICATES,
    );
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("platform trust store"), "{stderr}");
    assert!(
        stderr.contains("https LINSTOR controller(s) https://127.0.0.1:1/ "),
        "{stderr}"
    );
    assert!(stderr.contains("LS_ROOT_CA nor LS_ROOT_CA_FILE"), "{stderr}");

    let home = Home::new(&format!("server: '{NOWHERE_HTTPS}'"));
    let output = home.run(&FREE_PORTS[..1], NOWHERE_HTTP, &NO_CA_CERTIFICATES);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Kubernetes API server https://127.0.0.1:1/: cannot create a client"),
        "{stderr}"
    );
    assert!(stderr.contains("No CA certificates were loaded"), "{stderr}");
    assert!(stderr.contains("certificate-authority-data"), "{stderr}");
}
