//! Reading the live cluster: PVs and StorageClasses from the Kubernetes API server, LINSTOR state
//! from its controller (three requests, see [`affinity_kube::linstor_state::fetch`]).

use std::fmt::Debug;
use std::sync::Mutex;

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_kube::linstor_state::{self, FetchError};
use kube::api::{Api, ListParams};
use linstor_api::error::chain;
use serde::de::DeserializeOwned;

use crate::convert::{ClusterState, CoreState};
use affinity_kube::throttle::ThrottleLayer;

use crate::kube_args::{KubeArgs, KubeArgsError, client};
use crate::progress::Spinner;

/// Objects per page when listing from the API server.
const PAGE_SIZE: u32 = 500;

/// Why the live cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No Kubernetes client configuration, or no client from it.
    #[error(transparent)]
    KubeConfig(#[from] KubeArgsError),
    /// The LS_* environment does not describe a usable LINSTOR client.
    #[error("LINSTOR client configuration (LS_* environment): {0}")]
    LinstorConfig(#[from] linstor_api::ConfigError),
    /// Kubernetes, LINSTOR or both could not be read (one line each).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Read(Vec<ReadError>),
}

/// One source that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A list request to the Kubernetes API server failed.
    #[error("Kubernetes API server {api_server}: listing {what}: {}", chain(.source))]
    Kubernetes {
        /// URL of the API server.
        api_server: String,
        /// What was listed.
        what: &'static str,
        /// The client's error.
        source: kube::Error,
    },
    /// LINSTOR could not be read (the error names the endpoint and the controllers tried).
    #[error(transparent)]
    Linstor(#[from] FetchError),
}

/// A client of the Kubernetes API server `kube_args` select, and the server's URL. Nothing is
/// contacted yet.
pub async fn kube_client(kube_args: &KubeArgs) -> Result<(kube::Client, String), LiveError> {
    let config = kube_args.config().await?;
    let api_server = config.cluster_url.to_string();
    Ok((client(config, &ThrottleLayer::unlimited())?, api_server))
}

/// Clients of the live cluster.
#[derive(Clone)]
pub struct LiveCluster {
    kube: kube::Client,
    api_server: String,
    linstor: linstor_api::Client,
}

impl Debug for LiveCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCluster")
            .field("api_server", &self.api_server)
            .field("linstor", &self.linstor.controllers())
            .finish_non_exhaustive()
    }
}

impl LiveCluster {
    /// Clients for the Kubernetes API server `kube_args` select and the LINSTOR controller of the
    /// LS_* environment. Nothing is contacted yet.
    pub async fn connect(kube_args: &KubeArgs) -> Result<Self, LiveError> {
        let (kube, api_server) = kube_client(kube_args).await?;
        let linstor = linstor_api::Client::from_env()?;
        Ok(Self {
            kube,
            api_server,
            linstor,
        })
    }

    /// The Kubernetes client.
    pub fn kube(&self) -> kube::Client {
        self.kube.clone()
    }

    /// The LINSTOR client.
    pub fn linstor(&self) -> &linstor_api::Client {
        &self.linstor
    }

    /// Reads every PV, every StorageClass and the LINSTOR state, concurrently. Any failure fails
    /// the whole read (deciding on part of the state could replace PVs wrongly); every source
    /// that failed is named.
    pub async fn read(&self, spinner: &Spinner) -> Result<ClusterState, LiveError> {
        let pending = Pending::new(spinner, &["PVs", "StorageClasses", "LINSTOR"]);
        let pvs = async {
            let result = self.list_all::<PersistentVolume>("PersistentVolumes").await;
            pending.done("PVs");
            result
        };
        let classes = async {
            let result = self.list_all::<StorageClass>("StorageClasses").await;
            pending.done("StorageClasses");
            result
        };
        // One error per source, always the PV list's when both fail (the second list would most
        // likely fail the same way), so the message does not depend on which answered first.
        let kubernetes = async {
            let (pvs, classes) = tokio::join!(pvs, classes);
            Ok::<_, ReadError>((pvs?, classes?))
        };
        let linstor = async {
            let result = linstor_state::fetch(&self.linstor).await;
            pending.done("LINSTOR");
            result
        };
        match tokio::join!(kubernetes, linstor) {
            (Ok((pvs, classes)), Ok(linstor)) => {
                tracing::debug!(pvs = pvs.len(), storage_classes = classes.len(), "cluster read");
                Ok(ClusterState {
                    pvs,
                    core: CoreState::new(linstor, &classes),
                })
            }
            (kubernetes, linstor) => Err(LiveError::Read(
                [kubernetes.err(), linstor.err().map(ReadError::from)]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }

    /// Every object of kind `K`, page by page.
    async fn list_all<K>(&self, what: &'static str) -> Result<Vec<K>, ReadError>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.kube.clone());
        let mut items = Vec::new();
        let mut params = ListParams::default().limit(PAGE_SIZE);
        loop {
            let page = api.list(&params).await.map_err(|source| ReadError::Kubernetes {
                api_server: self.api_server.clone(),
                what,
                source,
            })?;
            items.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(items),
            }
        }
    }
}

/// The sources still being read, shown in the spinner.
struct Pending<'a> {
    spinner: &'a Spinner,
    parts: Mutex<Vec<&'static str>>,
}

impl<'a> Pending<'a> {
    fn new(spinner: &'a Spinner, parts: &[&'static str]) -> Self {
        let pending = Self {
            spinner,
            parts: Mutex::new(parts.to_vec()),
        };
        pending.show(parts);
        pending
    }

    fn done(&self, part: &str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.retain(|known| *known != part);
            self.show(&parts);
        }
    }

    fn show(&self, parts: &[&str]) {
        if !parts.is_empty() {
            self.spinner.set_message(format!("reading {}…", parts.join(", ")));
        }
    }
}
