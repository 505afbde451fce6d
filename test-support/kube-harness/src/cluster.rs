//! Starting or attaching to the control plane shared by all tests of one test binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Environment variable naming the kubeconfig of an already running cluster to attach to. When set,
/// no cluster is started.
pub const KUBECONFIG_ENV: &str = "KUBE_HARNESS_KUBECONFIG";

/// Environment variable naming the directory with `etcd`, `kube-apiserver`,
/// `kube-controller-manager` and `kube-scheduler`. Defaults to the cache filled by
/// `scripts/k8s/build`.
pub const BIN_DIR_ENV: &str = "K8S_BIN_DIR";

/// Environment variable: when `1`, the component logs of a started cluster are kept after the test
/// binary exits (their directory is printed when the cluster starts).
pub const KEEP_LOGS_ENV: &str = "KUBE_HARNESS_KEEP_LOGS";

const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Why no cluster is available.
#[derive(Debug, Clone)]
pub enum ClusterError {
    /// Nothing to run: the binaries were never built. Outside CI the tests skip.
    Missing(String),
    /// A cluster should have been available but could not be started or attached. Always a failure.
    Failed(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Missing(reason) => write!(f, "no Kubernetes cluster available: {reason}"),
            ClusterError::Failed(reason) => {
                write!(f, "the Kubernetes test cluster failed: {reason}")
            }
        }
    }
}

/// A running control plane, reachable through a kubeconfig file.
///
/// Holds no client: a [`kube::Client`] is tied to the tokio runtime that created it, and every
/// `#[tokio::test]` has its own runtime, so call [`Cluster::client`] in each test.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    dir: Option<PathBuf>,
}

static SHARED: OnceLock<Result<Cluster, ClusterError>> = OnceLock::new();

/// The directory holding the `build`, `up` and `down` scripts.
pub fn scripts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/k8s");
    dir.canonicalize().unwrap_or(dir)
}

impl Cluster {
    /// The cluster of this test binary: attached through [`KUBECONFIG_ENV`], or started on first use
    /// and stopped by its watchdog when the process exits.
    pub fn shared() -> Result<&'static Cluster, ClusterError> {
        SHARED
            .get_or_init(|| match std::env::var_os(KUBECONFIG_ENV) {
                Some(path) if !path.is_empty() => Self::attach(PathBuf::from(path)),
                _ => Self::start(),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn attach(kubeconfig: PathBuf) -> Result<Cluster, ClusterError> {
        if !kubeconfig.is_file() {
            return Err(ClusterError::Failed(format!(
                "{KUBECONFIG_ENV}={} does not name a file",
                kubeconfig.display()
            )));
        }
        let _ = writeln!(
            std::io::stderr(),
            "kube-harness: using the cluster of {}",
            kubeconfig.display()
        );
        Ok(Cluster {
            kubeconfig,
            dir: None,
        })
    }

    fn bin_dir() -> Result<PathBuf, ClusterError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let script = scripts_dir().join("build");
        let out = Command::new(&script)
            .arg("--print-dir")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError::Failed(format!("cannot run {} --print-dir: {e}", script.display())))?;
        if !out.status.success() {
            return Err(ClusterError::Failed(format!(
                "{} --print-dir failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ))
    }

    fn start() -> Result<Cluster, ClusterError> {
        let bin_dir = Self::bin_dir()?;
        let missing: Vec<&str> = BINARIES
            .iter()
            .copied()
            .filter(|b| !bin_dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(ClusterError::Missing(format!(
                "{} not found in {} (run scripts/k8s/build, or set {BIN_DIR_ENV} or {KUBECONFIG_ENV})",
                missing.join(", "),
                bin_dir.display()
            )));
        }

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("kube-harness-{}-{nanos:08x}", std::process::id()));
        let script = scripts_dir().join("up");
        let mut cmd = Command::new(&script);
        cmd.arg("--owner-pid")
            .arg(std::process::id().to_string())
            .arg("--bin-dir")
            .arg(&bin_dir);
        if std::env::var(KEEP_LOGS_ENV).as_deref() == Ok("1") {
            cmd.arg("--keep-logs");
        }
        cmd.arg(&dir).stdin(Stdio::null());

        let started = Instant::now();
        let out = cmd
            .output()
            .map_err(|e| ClusterError::Failed(format!("cannot run {}: {e}", script.display())))?;
        if !out.status.success() {
            return Err(ClusterError::Failed(format!(
                "{} exited with {}; its output:\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| {
                ClusterError::Failed(format!("{} printed no kubeconfig path", script.display()))
            })?;
        let _ = writeln!(
            std::io::stderr(),
            "kube-harness: cluster started in {:.1}s, directory {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(Cluster {
            kubeconfig,
            dir: Some(dir),
        })
    }

    /// The `kubectl` of the cluster's binaries ([`BIN_DIR_ENV`], else the cache of
    /// `scripts/k8s/build`); [`ClusterError::Missing`] when it was never built.
    pub fn kubectl() -> Result<PathBuf, ClusterError> {
        let path = Self::bin_dir()?.join("kubectl");
        if path.is_file() {
            Ok(path)
        } else {
            Err(ClusterError::Missing(format!(
                "{} not found (run scripts/k8s/build, or set {BIN_DIR_ENV})",
                path.display()
            )))
        }
    }

    /// Path of the kubeconfig (token authentication, loopback API server).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster directory with `logs/`, when the cluster was started by this process.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// A new client for the calling tokio runtime.
    pub async fn client(&self) -> Result<Client, String> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| format!("reading {}: {e}", self.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("loading {}: {e}", self.kubeconfig.display()))?;
        Client::try_from(config).map_err(|e| format!("building a client: {e}"))
    }

    /// The last `lines` lines of a component's log (`kube-controller-manager`, `kube-scheduler`,
    /// `kube-apiserver`, `etcd`), when the cluster was started by this process.
    pub fn log_tail(&self, component: &str, lines: usize) -> Option<String> {
        let path = self.dir.as_ref()?.join("logs").join(format!("{component}.log"));
        let text = std::fs::read_to_string(path).ok()?;
        let all: Vec<&str> = text.lines().collect();
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Log tails of the controller manager and the scheduler, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for component in ["kube-controller-manager", "kube-scheduler"] {
            if let Some(tail) = self.log_tail(component, 15) {
                out.push_str(&format!("\n---- last lines of {component}.log ----\n{tail}"));
            }
        }
        out
    }
}
