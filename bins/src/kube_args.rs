//! The kubeconfig flags kubectl has (`--kubeconfig`, `--context`, `--cluster`, `--user`), for any
//! binary of the toolkit that talks to Kubernetes.
//!
//! Flatten [`KubeArgs`] into a clap command, call [`KubeArgs::config`] and build the client with
//! [`client`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use affinity_kube::throttle::ThrottleLayer;
//! use clap::Parser;
//! use linstor_affinity_cli::kube_args::{KubeArgs, client};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     kube: KubeArgs,
//! }
//!
//! let cli = Cli::parse();
//! let client = client(cli.kube.config().await?, &ThrottleLayer::new(50.0, 100))?;
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::PathBuf;

use affinity_kube::throttle::ThrottleLayer;
use kube::client::ClientBuilder;
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use linstor_api::error::chain;

/// Where the Kubernetes API server and credentials come from, as kubectl's flags say it.
///
/// Without any flag the configuration is inferred: `$KUBECONFIG`, then `~/.kube/config`, then the
/// in-cluster service account. `--context`, `--cluster` and `--user` pick entries of the kubeconfig
/// file (the one given with `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else the in-cluster service
    /// account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Kubeconfig cluster to use (default: the context's cluster).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Kubeconfig user to use (default: the context's user).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// Why no Kubernetes client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeArgsError {
    /// The kubeconfig named with `--kubeconfig` cannot be used.
    #[error("kubeconfig {path}{selection}: {source}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The context, cluster and user asked for, as text (empty when none).
        selection: Selection,
        /// What went wrong.
        source: KubeconfigError,
    },
    /// The default kubeconfig (`$KUBECONFIG` or `~/.kube/config`) cannot be used for the context,
    /// cluster or user asked for.
    #[error("kubeconfig from $KUBECONFIG or ~/.kube/config{selection}: {source}")]
    Default {
        /// The context, cluster and user asked for, as text.
        selection: Selection,
        /// What went wrong.
        source: KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error(
        "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config or run \
         in a pod ({source})"
    )]
    Infer {
        /// Why each source failed.
        source: InferConfigError,
    },
    /// No client could be built from the configuration.
    #[error(
        "Kubernetes API server {api_server}: cannot create a client: {reason}{hint}",
        hint = if *.trust_store { TRUST_STORE_HINT } else { "" }
    )]
    Client {
        /// URL of the API server.
        api_server: String,
        /// Whether the platform's trust store was needed: an https server without a certificate
        /// authority in the configuration.
        trust_store: bool,
        /// The client's error, with its causes.
        reason: String,
    },
}

/// What to do when the platform's trust store was needed and failed.
const TRUST_STORE_HINT: &str = " (the kubeconfig names no certificate authority for this https server, so the \
     system's CA certificates were needed: give its CA as certificate-authority or \
     certificate-authority-data in the kubeconfig)";

/// A client for `config`, its requests paced, repeated after `429` answers and counted by
/// `throttle` (the only retry: kube's own is turned off). Nothing is contacted yet.
///
/// The platform's trust store is only loaded when the connection needs it: an https API server (or
/// proxy) without a certificate authority in the configuration, and with verification on. Otherwise
/// (plain http, a CA given, `insecure-skip-tls-verify`) the client never reads the system's CA
/// certificates, so it also works in an image that has none.
pub fn client(mut config: kube::Config, throttle: &ThrottleLayer) -> Result<kube::Client, KubeArgsError> {
    ThrottleLayer::configure(&mut config);
    let https = [Some(&config.cluster_url), config.proxy_url.as_ref()]
        .into_iter()
        .flatten()
        .any(|uri| uri.scheme_str() != Some("http"));
    let trust_store = config.root_cert.is_none() && !config.accept_invalid_certs && https;
    if !trust_store {
        // Roots of its own, even none: kube-client would otherwise build a verifier from the
        // platform's, which a connection without verification or without TLS never uses.
        config.root_cert.get_or_insert_with(Vec::new);
    }
    let api_server = config.cluster_url.to_string();
    let builder = ClientBuilder::try_from(config).map_err(|source| KubeArgsError::Client {
        api_server,
        trust_store,
        reason: chain(&source),
    })?;
    Ok(builder.with_layer(throttle).build())
}

/// The context, cluster and user a command asked for; prints as ` (context "a", user "b")`, or
/// nothing when none was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection(Vec<(&'static str, String)>);

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(what, name)| format!("{what} {name:?}"))
            .collect();
        write!(f, " ({})", parts.join(", "))
    }
}

impl KubeArgs {
    /// The kubeconfig selection of these flags.
    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    fn selection(&self) -> Selection {
        Selection(
            [
                ("context", &self.context),
                ("cluster", &self.cluster),
                ("user", &self.user),
            ]
            .into_iter()
            .filter_map(|(what, name)| name.clone().map(|name| (what, name)))
            .collect(),
        )
    }

    /// Whether any flag was given.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// The client configuration these flags select. Nothing is contacted yet: an unreachable
    /// API server shows only with the first request.
    pub async fn config(&self) -> Result<kube::Config, KubeArgsError> {
        if let Some(path) = &self.kubeconfig {
            let file_error = |source| KubeArgsError::File {
                path: path.clone(),
                selection: self.selection(),
                source,
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(file_error)?;
            return kube::Config::from_custom_kubeconfig(kubeconfig, &self.options())
                .await
                .map_err(file_error);
        }
        if self.is_set() {
            // Names of contexts, clusters and users only exist in a kubeconfig: no in-cluster fallback.
            return kube::Config::from_kubeconfig(&self.options())
                .await
                .map_err(|source| KubeArgsError::Default {
                    selection: self.selection(),
                    source,
                });
        }
        kube::Config::infer()
            .await
            .map_err(|source| KubeArgsError::Infer { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
current-context: one
clusters:
- name: c1
  cluster: {server: 'https://127.0.0.1:1'}
- name: c2
  cluster: {server: 'https://127.0.0.2:2'}
users:
- name: u1
  user: {token: abc}
contexts:
- name: one
  context: {cluster: c1, user: u1}
- name: two
  context: {cluster: c2, user: u1}
";

    fn args(file: &std::path::Path) -> KubeArgs {
        KubeArgs {
            kubeconfig: Some(file.to_owned()),
            ..KubeArgs::default()
        }
    }

    #[tokio::test]
    async fn file_and_context_select_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, KUBECONFIG).unwrap();
        let current = args(&file).config().await.unwrap();
        assert_eq!(current.cluster_url.to_string(), "https://127.0.0.1:1/");
        let two = KubeArgs {
            context: Some("two".to_owned()),
            ..args(&file)
        };
        assert_eq!(
            two.config().await.unwrap().cluster_url.to_string(),
            "https://127.0.0.2:2/"
        );
    }

    #[tokio::test]
    async fn errors_name_the_file_and_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = args(&missing).config().await.unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");

        let file = dir.path().join("config");
        std::fs::write(&file, KUBECONFIG).unwrap();
        let unknown = KubeArgs {
            context: Some("nope".to_owned()),
            ..args(&file)
        };
        let error = unknown.config().await.unwrap_err().to_string();
        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(error.contains("context \"nope\""), "{error}");
    }
}
