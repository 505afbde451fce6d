//! An in-memory LINSTOR controller serving the REST API (v1) on loopback, for tests, demos and
//! benchmarks.
//!
//! The simulator keeps a [`SimState`] (nodes, resource definitions, volume definitions,
//! resources) and answers the calls of [`crate::Client`], the calls needed to set a cluster up
//! and the node event stream (`GET /v1/events/nodes`, server-sent events), with the bodies and
//! status codes of a real controller. It serves plain HTTP and,
//! optionally, HTTPS with client-certificate verification.
//!
//! Besides the LINSTOR paths it serves a control API under `/sim/`:
//!
//! | call | effect |
//! | --- | --- |
//! | `GET /sim/state`, `PUT /sim/state` | save / replace the whole state (JSON, see [`SimState`]) |
//! | `GET /sim/counters`, `DELETE /sim/counters` | requests per endpoint (`"GET /v1/nodes"`: n) |
//! | `GET /sim/faults`, `POST /sim/faults`, `DELETE /sim/faults` | list / add / clear [`Fault`]s |
//! | `PUT /sim/nodes/{node}` | `{"flags": [...], "connection_status": "OFFLINE"}` |
//! | `PUT /sim/resources/{resource}/{node}` | `{"in_use": true, "flags": [...]}` |
//! | `GET /sim/restorer` | `{"every_seconds": 5.0, "restorations": n}` (`null`: restorer off) |
//! | `PUT /sim/restorer` | `{"every_seconds": 5}` turns the node restorer on, `{"every_seconds": null}` off; answers as `GET` |
//!
//! Evacuation (`PUT /v1/nodes/{node}/evacuate`) marks the node `EVACUATE`, places a replacement
//! for a diskful replica on an eligible node (not evacuating, evicted or being deleted, no
//! controller, `AutoplaceTarget` not `false`, in `target` when that is given, not in
//! `do_not_target`; a node holding a diskless replica is preferred and becomes diskful, else the
//! least loaded node), and removes the node's replicas as soon as they are not in use. A
//! replacement is placed only while the diskful replicas kept elsewhere (not marked for removal,
//! on nodes neither evacuating nor evicted) number fewer than the definition's place count
//! ([`SimResourceDefinition::place_count`], fixed at the first evacuation when absent), so
//! evacuating a node again after a restore adds no replica. The evacuation is planned as a whole
//! first and refused with HTTP 500 and an error [`ApiCallRc`] ([`rc::REFUSED`]), changing
//! nothing, when the node is not `ONLINE` or a needed replacement has no eligible node.
//! `PUT /v1/nodes/{node}/restore` clears the flags of the node and of its replicas, cancelling
//! their removal.
//!
//! The node restorer, off unless turned on ([`SimulatorBuilder::restore_evacuated_every`],
//! [`Simulator::set_restore_evacuated_every`], `PUT /sim/restorer`), models the Piraeus
//! Operator, which restores every LINSTOR node flagged `EVACUATE` or `EVICTED` of a running
//! satellite at each reconcile: each period it restores every such node as
//! `PUT /v1/nodes/{node}/restore` does and counts them ([`Simulator::restorations`]).

mod state;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use state::*;

use crate::models::{
    ApiCallRc, ConnectionStatus, EventNode, EventNodeModified, Node, NodeEvacuate, NodeEvent, NodeModify,
    NodeRestore, ResourceCreate, ResourceDefinitionCreate, ResourceDefinitionModify, ResourceModify,
    VolumeDefinitionCreate, VolumeDefinitionModify, flags,
};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the answer.
    Latency {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Answer with an error status and an `ApiCallRc` list.
    Error {
        /// HTTP status (default 500).
        #[serde(default = "default_fault_status")]
        status: u16,
        /// Message of the reply.
        #[serde(default = "default_fault_message")]
        message: String,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer 200 with a truncated (malformed) JSON body.
    MalformedJson,
}

fn default_fault_status() -> u16 {
    500
}

fn default_fault_message() -> String {
    "Injected failure".to_owned()
}

/// A fault injected into matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Only requests with this method (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only requests whose path starts with this (any `/v1/` path when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How many requests it affects (unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Fault {
    /// A fault of `kind` for every `/v1/` request.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            method: None,
            path: None,
            times: None,
        }
    }

    /// Restricts the fault to paths starting with `prefix`.
    pub fn on_path(mut self, prefix: impl Into<String>) -> Self {
        self.path = Some(prefix.into());
        self
    }

    /// Restricts the fault to one method.
    pub fn on_method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Limits the fault to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self.path.as_deref().is_none_or(|p| path.starts_with(p))
            && self.times != Some(0)
    }
}

/// TLS material of the HTTPS listener (PEM).
#[derive(Clone)]
pub struct SimTls {
    /// Server certificate chain.
    pub cert_pem: Vec<u8>,
    /// Server private key.
    pub key_pem: Vec<u8>,
    /// CA that client certificates must chain to; when set, clients must present one.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTls")
            .field("client_auth", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Errors starting the simulator or loading its state.
#[derive(Debug, thiserror::Error)]
pub enum SimStartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS material is not usable.
    #[error("simulator TLS setup: {0}")]
    Tls(String),
    /// A state or scenario file could not be read or written.
    #[error("state file {path}: {reason}")]
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

struct Shared {
    state: Mutex<SimState>,
    faults: Mutex<Vec<Fault>>,
    counters: Mutex<BTreeMap<String, u64>>,
    events: broadcast::Sender<NodeEvent>,
    /// Period of the node restorer (`None`: off).
    restore_every: watch::Sender<Option<Duration>>,
    /// Nodes the restorer restored.
    restorations: AtomicU64,
}

/// Shortest period of the node restorer; shorter ones are raised to it.
const MIN_RESTORE_PERIOD: Duration = Duration::from_millis(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builder of a [`Simulator`].
#[derive(Debug)]
pub struct SimulatorBuilder {
    state: SimState,
    http: Option<SocketAddr>,
    https: Option<(SocketAddr, SimTls)>,
    restore_every: Option<Duration>,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        SimulatorBuilder {
            state: SimState::default(),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            https: None,
            restore_every: None,
        }
    }
}

impl SimulatorBuilder {
    /// Plain HTTP on a free port of 127.0.0.1, empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from this state.
    pub fn state(mut self, state: SimState) -> Self {
        self.state = state;
        self
    }

    /// Starts from a scenario (state) file.
    pub fn scenario_file(mut self, path: &Path) -> Result<Self, SimStartError> {
        self.state = load_state_file(path)?;
        Ok(self)
    }

    /// Plain HTTP listener address (port 0: a free port).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// No plain HTTP listener.
    pub fn no_http(mut self) -> Self {
        self.http = None;
        self
    }

    /// Adds an HTTPS listener.
    pub fn https(mut self, addr: SocketAddr, tls: SimTls) -> Self {
        self.https = Some((addr, tls));
        self
    }

    /// Restores every node flagged `EVACUATE` or `EVICTED` every `every`, as the Piraeus
    /// Operator does for a running satellite at each reconcile (off by default; see
    /// [`Simulator::set_restore_evacuated_every`]).
    pub fn restore_evacuated_every(mut self, every: Duration) -> Self {
        self.restore_every = Some(every);
        self
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> Result<Simulator, SimStartError> {
        let mut state = self.state;
        state.normalize();
        let (events, _) = broadcast::channel(1024);
        let (restore_every, restore_every_rx) =
            watch::channel(self.restore_every.map(|d| d.max(MIN_RESTORE_PERIOD)));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            events,
            restore_every,
            restorations: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(restorer(
            shared.clone(),
            restore_every_rx,
            shutdown_rx.clone(),
        ))];
        let mut http_addr = None;
        let mut https_addr = None;
        if let Some(addr) = self.http {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SimStartError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| SimStartError::Bind { addr, source })?;
            http_addr = Some(local);
            tasks.push(tokio::spawn(serve(
                listener,
                None,
                shared.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some((addr, tls)) = self.https {
            let acceptor = tls_acceptor(&tls)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SimStartError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| SimStartError::Bind { addr, source })?;
            https_addr = Some(local);
            tasks.push(tokio::spawn(serve(
                listener,
                Some(acceptor),
                shared.clone(),
                shutdown_rx.clone(),
            )));
        }
        tracing::info!(?http_addr, ?https_addr, "LINSTOR simulator listening");
        Ok(Simulator {
            shared,
            http_addr,
            https_addr,
            shutdown,
            tasks,
        })
    }
}

fn tls_acceptor(tls: &SimTls) -> Result<tokio_rustls::TlsAcceptor, SimStartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimStartError::Tls(format!("server certificate: {e}")))?;
    if certs.is_empty() {
        return Err(SimStartError::Tls(
            "server certificate: no PEM certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| SimStartError::Tls(format!("server key: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SimStartError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| SimStartError::Tls(format!("client CA: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| SimStartError::Tls(format!("client CA: {e}")))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| SimStartError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| SimStartError::Tls(format!("server certificate/key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads a state or scenario file (the JSON form of [`SimState`]) and checks it.
pub fn load_state_file(path: &Path) -> Result<SimState, SimStartError> {
    let bad = |reason: String| SimStartError::StateFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    let mut state: SimState =
        serde_path_to_error::deserialize(de).map_err(|e| bad(format!("at {}: {}", e.path(), e.inner())))?;
    check_state(&state).map_err(bad)?;
    state.normalize();
    Ok(state)
}

/// Checks that every resource refers to an existing node and names are unique.
pub fn check_state(state: &SimState) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for n in &state.nodes {
        if n.name.is_empty() {
            return Err("a node has an empty name".to_owned());
        }
        if !names.insert(n.name.to_ascii_lowercase()) {
            return Err(format!("node {:?} is listed twice", n.name));
        }
    }
    let mut rds = std::collections::BTreeSet::new();
    for rd in &state.resource_definitions {
        if !rds.insert(rd.name.to_ascii_lowercase()) {
            return Err(format!("resource definition {:?} is listed twice", rd.name));
        }
        let mut on = std::collections::BTreeSet::new();
        for r in &rd.resources {
            if !names.contains(&r.node_name.to_ascii_lowercase()) {
                return Err(format!(
                    "resource {:?} is on unknown node {:?}",
                    rd.name, r.node_name
                ));
            }
            if !on.insert(r.node_name.to_ascii_lowercase()) {
                return Err(format!(
                    "resource {:?} is listed twice on node {:?}",
                    rd.name, r.node_name
                ));
            }
        }
    }
    Ok(())
}

/// A running simulator. Dropping it stops the listeners and the node restorer and closes open
/// connections.
pub struct Simulator {
    shared: Arc<Shared>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("http_addr", &self.http_addr)
            .field("https_addr", &self.https_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Simulator {
    /// A builder.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::new()
    }

    /// Starts a plain HTTP simulator on a free loopback port with `state`.
    pub async fn start(state: SimState) -> Result<Simulator, SimStartError> {
        SimulatorBuilder::new().state(state).start().await
    }

    /// Address of the HTTP listener.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Address of the HTTPS listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener.
    pub fn http_url(&self) -> Option<String> {
        self.http_addr.map(|a| format!("http://{a}"))
    }

    /// `https://ADDRESS:PORT` of the HTTPS listener (the server certificate must name the
    /// listener's IP address).
    pub fn https_url(&self) -> Option<String> {
        self.https_addr.map(|a| format!("https://{a}"))
    }

    /// A client of the HTTP listener, with the default settings otherwise; `None` without an
    /// HTTP listener.
    pub fn http_client(&self) -> Option<Result<crate::Client, crate::ConfigError>> {
        self.http_url()
            .map(|url| crate::Client::builder().controllers([url]).build())
    }

    /// A copy of the current state.
    pub fn state(&self) -> SimState {
        lock(&self.shared.state).clone()
    }

    /// Runs `f` on the state (no events are emitted for changes made this way).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// Replaces the whole state.
    pub fn replace_state(&self, mut state: SimState) {
        state.normalize();
        *lock(&self.shared.state) = state;
    }

    /// Writes the state as JSON to `path`.
    pub fn save_state(&self, path: &Path) -> Result<(), SimStartError> {
        let text = serde_json::to_vec_pretty(&self.state()).map_err(|e| SimStartError::StateFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| SimStartError::StateFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Sets `in_use` of a resource (then evacuated replicas not in use are removed).
    pub fn set_in_use(&self, rd: &str, node: &str, in_use: bool) -> SimResult {
        lock(&self.shared.state).set_resource_state(rd, node, Some(Some(in_use)), None)
    }

    /// Adds a node, emitting `node-create`.
    pub fn add_node(&self, node: SimNode) -> SimResult {
        let (rc, change) = lock(&self.shared.state).create_node(node)?;
        self.shared.emit(change);
        Ok(rc)
    }

    /// Adds a resource definition with its volume definitions and resources.
    pub fn add_resource_definition(&self, rd: SimResourceDefinition) -> SimResult {
        lock(&self.shared.state).create_resource_definition(rd)
    }

    /// Adds a resource.
    pub fn add_resource(&self, rd: &str, r: SimResource) -> SimResult {
        lock(&self.shared.state).create_resource(rd, r)
    }

    /// Deletes a resource.
    pub fn delete_resource(&self, rd: &str, node: &str) -> SimResult {
        lock(&self.shared.state).delete_resource(rd, node)
    }

    /// Adds a fault.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Requests per endpoint, keyed `"METHOD /path/{template}"`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counters).clone()
    }

    /// Requests counted for one endpoint key, e.g. `"GET /v1/nodes"`.
    pub fn count(&self, endpoint: &str) -> u64 {
        lock(&self.shared.counters).get(endpoint).copied().unwrap_or(0)
    }

    /// Resets the request counters.
    pub fn reset_counters(&self) {
        lock(&self.shared.counters).clear();
    }

    /// Turns the node restorer on (`Some(period)`) or off (`None`), at once: while on, every
    /// node flagged `EVACUATE` or `EVICTED` is restored each `period` (as
    /// `PUT /v1/nodes/{node}/restore` with default options does, emitting `node-restored`),
    /// modelling the Piraeus Operator, which restores such nodes of a running satellite at each
    /// reconcile. A new period starts counting when it is set; periods under 1 ms count as 1 ms.
    pub fn set_restore_evacuated_every(&self, every: Option<Duration>) {
        self.shared.set_restore_every(every);
    }

    /// Nodes restored by the node restorer so far (each node restored counts once per round).
    pub fn restorations(&self) -> u64 {
        self.shared.restorations.load(Ordering::SeqCst)
    }

    /// Stops serving (same as dropping).
    pub fn shutdown(self) {}
}

impl Shared {
    fn emit(&self, change: NodeChange) {
        let ev = match change {
            NodeChange::Created(n) => NodeEvent::Created(EventNode { node: Some(n) }),
            NodeChange::Deleted(n) => NodeEvent::Deleted(EventNode { node: Some(n) }),
            NodeChange::Evacuating(n) => NodeEvent::Evacuating(EventNode { node: Some(n) }),
            NodeChange::Restored(n) => NodeEvent::Restored(EventNode { node: Some(n) }),
            NodeChange::Modified { old, new } => NodeEvent::Modified(Box::new(EventNodeModified {
                old_node: Some(*old),
                new_node: Some(*new),
            })),
        };
        let _ = self.events.send(ev);
    }

    /// Restores every node flagged `EVACUATE` or `EVICTED` and emits the events, unless the
    /// restorer was turned off meanwhile.
    fn restore_evacuated(&self) {
        let changes: Vec<NodeChange> = {
            let mut state = lock(&self.state);
            // Checked under the state lock: once turning off has returned, no change made after
            // it is undone.
            if self.restore_every.borrow().is_none() {
                return;
            }
            let flagged: Vec<String> = state
                .nodes
                .iter()
                .filter(|n| n.has_flag(flags::EVACUATE) || n.has_flag(flags::EVICTED))
                .map(|n| n.name.clone())
                .collect();
            let changes: Vec<NodeChange> = flagged
                .iter()
                .filter_map(|n| state.restore_node(n, &NodeRestore::default()).ok())
                .map(|(_, change)| change)
                .collect();
            // Counted under the lock, so whoever sees a restored node sees it counted.
            self.restorations
                .fetch_add(u64::try_from(changes.len()).unwrap_or(u64::MAX), Ordering::SeqCst);
            if !flagged.is_empty() {
                tracing::info!(nodes = ?flagged, "simulator restorer restored nodes");
            }
            changes
        };
        for change in changes {
            self.emit(change);
        }
    }

    fn set_restore_every(&self, every: Option<Duration>) {
        self.restore_every
            .send_replace(every.map(|d| d.max(MIN_RESTORE_PERIOD)));
    }

    fn restorer_status(&self) -> RestorerStatus {
        RestorerStatus {
            every_seconds: self.restore_every.borrow().map(|d| d.as_secs_f64()),
            restorations: self.restorations.load(Ordering::SeqCst),
        }
    }
}

/// The node restorer: restores flagged nodes each period while one is set, until shutdown.
async fn restorer(
    shared: Arc<Shared>,
    mut every: watch::Receiver<Option<Duration>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let period = *every.borrow_and_update();
        let tick = async move {
            match period {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = every.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tick => shared.restore_evacuated(),
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let stream = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "simulator TLS handshake failed");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.changed() => {}
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        });
    }
}

/// Error that makes hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

fn full(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(b) => full(status, "application/json", b),
        Err(e) => fail(500, &format!("cannot encode answer: {e}")),
    }
}

fn fail(status: u16, message: &str) -> Response<Body> {
    let rc = ApiCallRc {
        ret_code: rc::FAILED,
        message: message.to_owned(),
        ..Default::default()
    };
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &vec![rc],
    )
}

fn sim_error(e: SimError) -> Response<Body> {
    json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &vec![*e.reply],
    )
}

fn replies(status: StatusCode, r: SimResult) -> Response<Body> {
    match r {
        Ok(list) => json(status, &list),
        Err(e) => sim_error(e),
    }
}

/// A path segment with its percent-encoded bytes decoded; invalid UTF-8 is replaced.
fn decode_segment(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes an `application/x-www-form-urlencoded` query string.
    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// All values of `key`; comma-separated values are split too.
    fn list(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Property filters: unlike names, values may hold commas, so they are not split.
    fn props(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == "props" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn flag(&self, key: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == key && (v.is_empty() || v.eq_ignore_ascii_case("true")))
    }

    fn usize(&self, key: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }
}

fn paginate<T>(mut v: Vec<T>, q: &Query) -> Vec<T> {
    let offset = q.usize("offset").unwrap_or(0);
    if offset > 0 {
        v.drain(..offset.min(v.len()));
    }
    if let Some(limit) = q.usize("limit").filter(|l| *l > 0) {
        v.truncate(limit);
    }
    v
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}").map_err(|e| format!("empty request body: {e}"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| format!("invalid request body at {}: {}", e.path(), e.inner()))
}

/// The endpoint template of a path, for counters (`/v1/nodes/{node}/evacuate`).
fn template(segs: &[String]) -> String {
    let names: &[&str] = match segs.first().map(String::as_str) {
        Some("v1") => match segs.get(1).map(String::as_str) {
            Some("nodes") => &["v1", "nodes", "{node}", "", ""],
            Some("resource-definitions") => match segs.get(3).map(String::as_str) {
                Some("volume-definitions") => {
                    &["v1", "resource-definitions", "{resource}", "", "{volume_number}"]
                }
                _ => &["v1", "resource-definitions", "{resource}", "", "{node}"],
            },
            _ => &[],
        },
        Some("sim") => match segs.get(1).map(String::as_str) {
            Some("nodes") => &["sim", "nodes", "{node}"],
            Some("resources") => &["sim", "resources", "{resource}", "{node}"],
            _ => &[],
        },
        _ => &[],
    };
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        out.push('/');
        match names.get(i) {
            Some(n) if !n.is_empty() => out.push_str(n),
            _ => out.push_str(s),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect();
    let key = format!("{method} {}", template(&segs));
    *lock(&shared.counters).entry(key.clone()).or_insert(0) += 1;
    tracing::debug!(%key, "simulator request");

    // Faults (LINSTOR paths only).
    let mut action = None;
    if path.starts_with("/v1/") {
        let mut delay = 0u64;
        {
            let mut faults = lock(&shared.faults);
            for f in faults.iter_mut() {
                if !f.matches(&method, &path) {
                    continue;
                }
                if let FaultKind::Latency { ms } = f.kind {
                    delay += ms;
                } else if action.is_some() {
                    continue;
                } else {
                    action = Some(f.kind.clone());
                }
                if let Some(t) = f.times.as_mut() {
                    *t = t.saturating_sub(1);
                }
            }
            faults.retain(|f| f.times != Some(0));
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match &action {
            Some(FaultKind::Drop) => return Err(DropConnection),
            Some(FaultKind::Error { status, message }) => return Ok(fail(*status, message)),
            _ => {}
        }
    }

    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(fail(400, &format!("cannot read request body: {e}"))),
    };
    let resp = route(&shared, &method, &segs, &query, &body);
    if matches!(action, Some(FaultKind::MalformedJson)) && resp.status().is_success() {
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let cut = (bytes.len() / 2).max(1).min(bytes.len());
        let mut broken = bytes[..cut].to_vec();
        if broken.is_empty() || broken.len() == bytes.len() {
            broken = b"[{\"name\": ".to_vec();
        }
        return Ok(full(StatusCode::OK, "application/json", broken));
    }
    Ok(resp)
}

fn node_events(shared: &Arc<Shared>) -> Response<Body> {
    let rx = shared.events.subscribe();
    let first = futures::stream::once(async {
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b": subscribed\n\n")))
    });
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev.data_json()).unwrap_or_default();
                    let text = format!("event: {}\ndata: {}\n\n", ev.name(), data);
                    return Some((Ok(Frame::data(Bytes::from(text))), rx));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    let body = StreamBody::new(first.chain(rest));
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

#[derive(Deserialize)]
struct SimNodeControl {
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    connection_status: Option<ConnectionStatus>,
}

#[derive(Deserialize)]
struct SimResourceControl {
    /// `true`/`false`, or `null` for unknown; absent: unchanged.
    #[serde(default, deserialize_with = "double_option")]
    in_use: Option<Option<bool>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RestorerControl {
    /// Seconds between rounds, or `null` for off; absent: an error.
    #[serde(default, deserialize_with = "double_option")]
    every_seconds: Option<Option<f64>>,
}

/// What `GET /sim/restorer` answers.
#[derive(Serialize)]
struct RestorerStatus {
    /// Seconds between rounds; `null`: off.
    every_seconds: Option<f64>,
    /// Nodes restored so far.
    restorations: u64,
}

/// The restorer period asked for in a `PUT /sim/restorer` body.
fn restorer_period(c: &RestorerControl) -> Result<Option<Duration>, String> {
    match c.every_seconds {
        None => Err(
            "every_seconds is required (a number of seconds, or null to turn the restorer off)".to_owned(),
        ),
        Some(None) => Ok(None),
        Some(Some(s)) if s.is_finite() && s > 0.0 => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|e| format!("every_seconds {s}: {e}")),
        Some(Some(s)) => Err(format!(
            "every_seconds must be a positive number of seconds, not {s}"
        )),
    }
}

fn sim_resource_from_create(node: Option<&str>, c: ResourceCreate) -> SimResource {
    let r = c.resource;
    SimResource {
        node_name: node.map_or(r.node_name, str::to_owned),
        flags: r.flags,
        in_use: r.state.and_then(|s| s.in_use).or(Some(false)),
        storage_pool: r.props.get("StorPoolName").cloned(),
        props: r.props,
        node_id: c.drbd_node_id,
        create_timestamp: None,
    }
}

macro_rules! body {
    ($t:ty, $b:expr) => {
        match decode_body::<$t>($b) {
            Ok(v) => v,
            Err(msg) => return fail(400, &msg),
        }
    };
}

fn route(shared: &Arc<Shared>, method: &Method, segs: &[String], q: &Query, body: &[u8]) -> Response<Body> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let st = || lock(&shared.state);
    let node_change = |r: SimResult<(Vec<ApiCallRc>, NodeChange)>, status: StatusCode| match r {
        Ok((rc, change)) => {
            shared.emit(change);
            json(status, &rc)
        }
        Err(e) => sim_error(e),
    };
    match (method.clone(), s.as_slice()) {
        (Method::GET, ["v1", "controller", "version"]) => json(StatusCode::OK, &st().controller_version),
        (Method::GET, ["v1", "events", "nodes"]) => node_events(shared),
        (Method::GET, ["v1", "nodes"]) => {
            let nodes = st().list_nodes(&q.list("nodes"), &q.props());
            json(StatusCode::OK, &paginate(nodes, q))
        }
        (Method::POST, ["v1", "nodes"]) => {
            let n: Node = body!(Node, body);
            let node = SimNode {
                name: n.name,
                node_type: n.node_type,
                props: n.props,
                flags: n.flags,
                address: n.net_interfaces.first().map(|i| i.address.clone()),
                connection_status: ConnectionStatus::Online,
            };
            let r = st().create_node(node);
            node_change(r, StatusCode::CREATED)
        }
        (Method::GET, ["v1", "nodes", node]) => {
            let nodes = st().list_nodes(&[(*node).to_owned()], &[]);
            match nodes.into_iter().next() {
                Some(n) => json(StatusCode::OK, &n),
                None => sim_error(not_found(format!("Node '{node}' not found."))),
            }
        }
        (Method::PUT, ["v1", "nodes", node]) => {
            let m = body!(NodeModify, body);
            let r = st().modify_node(node, &m);
            node_change(r, StatusCode::OK)
        }
        (Method::DELETE, ["v1", "nodes", node]) => {
            let r = st().delete_node(node);
            node_change(r, StatusCode::OK)
        }
        (Method::PUT, ["v1", "nodes", node, "evacuate"]) => {
            let m = body!(NodeEvacuate, body);
            let r = st().evacuate_node(node, &m);
            node_change(r, StatusCode::OK)
        }
        (Method::PUT, ["v1", "nodes", node, "restore"]) => {
            let m = body!(NodeRestore, body);
            let r = st().restore_node(node, &m);
            node_change(r, StatusCode::OK)
        }
        (Method::GET, ["v1", "view", "resources"]) => {
            let v = st().view_resources(&q.list("nodes"), &q.list("resources"), &q.props());
            json(StatusCode::OK, &paginate(v, q))
        }
        (Method::GET, ["v1", "resource-definitions"]) => {
            let v = st().list_resource_definitions(
                &q.list("resource_definitions"),
                &q.props(),
                q.flag("with_volume_definitions"),
            );
            json(StatusCode::OK, &paginate(v, q))
        }
        (Method::POST, ["v1", "resource-definitions"]) => {
            let c = body!(ResourceDefinitionCreate, body);
            let rd = c.resource_definition;
            let sim = SimResourceDefinition {
                name: rd.name,
                props: rd.props,
                flags: rd.flags,
                resource_group_name: rd.resource_group_name,
                port: c.drbd_port,
                place_count: None,
                volume_definitions: Vec::new(),
                resources: Vec::new(),
            };
            replies(StatusCode::CREATED, st().create_resource_definition(sim))
        }
        (Method::GET, ["v1", "resource-definitions", rd]) => {
            let v = st().list_resource_definitions(&[(*rd).to_owned()], &[], false);
            match v.into_iter().next() {
                Some(d) => json(StatusCode::OK, &d),
                None => sim_error(not_found(format!("Resource definition '{rd}' not found."))),
            }
        }
        (Method::PUT, ["v1", "resource-definitions", rd]) => {
            let m = body!(ResourceDefinitionModify, body);
            replies(StatusCode::OK, st().modify_resource_definition(rd, &m))
        }
        (Method::DELETE, ["v1", "resource-definitions", rd]) => {
            replies(StatusCode::OK, st().delete_resource_definition(rd))
        }
        (Method::GET, ["v1", "resource-definitions", rd, "volume-definitions"]) => {
            match st().list_volume_definitions(rd) {
                Ok(v) => json(StatusCode::OK, &paginate(v, q)),
                Err(e) => sim_error(e),
            }
        }
        (Method::POST, ["v1", "resource-definitions", rd, "volume-definitions"]) => {
            let c = body!(VolumeDefinitionCreate, body);
            let vd = c.volume_definition;
            let sim = SimVolumeDefinition {
                volume_number: vd.volume_number.unwrap_or(0),
                size_kib: vd.size_kib,
                props: vd.props,
                flags: vd.flags,
                minor_number: c.drbd_minor_number,
            };
            replies(
                StatusCode::CREATED,
                st().create_volume_definition(rd, sim, vd.volume_number),
            )
        }
        (Method::PUT, ["v1", "resource-definitions", rd, "volume-definitions", vnr]) => {
            let Ok(vnr) = vnr.parse::<i32>() else {
                return fail(400, &format!("invalid volume number {vnr:?}"));
            };
            let m = body!(VolumeDefinitionModify, body);
            replies(StatusCode::OK, st().modify_volume_definition(rd, vnr, &m))
        }
        (Method::GET, ["v1", "resource-definitions", rd, "resources"]) => match st().list_resources(rd) {
            Ok(v) => json(StatusCode::OK, &paginate(v, q)),
            Err(e) => sim_error(e),
        },
        (Method::POST, ["v1", "resource-definitions", rd, "resources"]) => {
            let list = body!(Vec<ResourceCreate>, body);
            let mut state = st();
            let mut out = Vec::new();
            for c in list {
                match state.create_resource(rd, sim_resource_from_create(None, c)) {
                    Ok(rc) => out.extend(rc),
                    Err(e) => return sim_error(e),
                }
            }
            json(StatusCode::CREATED, &out)
        }
        (Method::POST, ["v1", "resource-definitions", rd, "resources", node]) => {
            let c = body!(ResourceCreate, body);
            replies(
                StatusCode::CREATED,
                st().create_resource(rd, sim_resource_from_create(Some(node), c)),
            )
        }
        (Method::PUT, ["v1", "resource-definitions", rd, "resources", node]) => {
            let m = body!(ResourceModify, body);
            replies(StatusCode::OK, st().modify_resource(rd, node, &m))
        }
        (Method::DELETE, ["v1", "resource-definitions", rd, "resources", node]) => {
            replies(StatusCode::OK, st().delete_resource(rd, node))
        }
        // ----- simulator control -----
        (Method::GET, ["sim", "state"]) => json(StatusCode::OK, &*st()),
        (Method::PUT, ["sim", "state"]) => {
            let mut new = body!(SimState, body);
            if let Err(e) = check_state(&new) {
                return fail(400, &e);
            }
            new.normalize();
            *st() = new;
            json(StatusCode::OK, &Vec::<ApiCallRc>::new())
        }
        (Method::GET, ["sim", "counters"]) => json(StatusCode::OK, &*lock(&shared.counters)),
        (Method::DELETE, ["sim", "counters"]) => {
            lock(&shared.counters).clear();
            json(StatusCode::OK, &Vec::<ApiCallRc>::new())
        }
        (Method::GET, ["sim", "faults"]) => json(StatusCode::OK, &*lock(&shared.faults)),
        (Method::POST, ["sim", "faults"]) => {
            let f = body!(Fault, body);
            lock(&shared.faults).push(f);
            json(StatusCode::CREATED, &Vec::<ApiCallRc>::new())
        }
        (Method::DELETE, ["sim", "faults"]) => {
            lock(&shared.faults).clear();
            json(StatusCode::OK, &Vec::<ApiCallRc>::new())
        }
        (Method::PUT, ["sim", "nodes", node]) => {
            let c = body!(SimNodeControl, body);
            let r = st().set_node_state(node, c.flags, c.connection_status);
            node_change(r, StatusCode::OK)
        }
        (Method::GET, ["sim", "restorer"]) => json(StatusCode::OK, &shared.restorer_status()),
        (Method::PUT, ["sim", "restorer"]) => {
            let c = body!(RestorerControl, body);
            match restorer_period(&c) {
                Ok(every) => {
                    shared.set_restore_every(every);
                    json(StatusCode::OK, &shared.restorer_status())
                }
                Err(e) => fail(400, &e),
            }
        }
        (Method::PUT, ["sim", "resources", rd, node]) => {
            let c = body!(SimResourceControl, body);
            replies(
                StatusCode::OK,
                st().set_resource_state(rd, node, c.in_use, c.flags),
            )
        }
        _ => {
            let path = format!("/{}", segs.join("/"));
            sim_error(not_found(format!("No such endpoint: {method} {path}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_for_counters() {
        let t = |p: &str| {
            template(
                &p.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(t("/v1/nodes"), "/v1/nodes");
        assert_eq!(t("/v1/nodes/n1/evacuate"), "/v1/nodes/{node}/evacuate");
        assert_eq!(
            t("/v1/resource-definitions/r/volume-definitions/0"),
            "/v1/resource-definitions/{resource}/volume-definitions/{volume_number}"
        );
        assert_eq!(
            t("/v1/resource-definitions/r/resources/n"),
            "/v1/resource-definitions/{resource}/resources/{node}"
        );
        assert_eq!(t("/v1/view/resources"), "/v1/view/resources");
    }

    #[test]
    fn faults_parse_from_json() {
        let f: Fault = serde_json::from_str(r#"{"kind":"error","path":"/v1/nodes","times":2}"#).unwrap();
        assert_eq!(
            f.kind,
            FaultKind::Error {
                status: 500,
                message: "Injected failure".to_owned()
            }
        );
        assert_eq!(f.times, Some(2));
        let l: Fault = serde_json::from_str(r#"{"kind":"latency","ms":5}"#).unwrap();
        assert_eq!(l.kind, FaultKind::Latency { ms: 5 });
    }
}
