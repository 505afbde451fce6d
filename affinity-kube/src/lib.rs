//! Kubernetes side of the LINSTOR affinity controller.
//!
//! # Replacing one PV from your own code
//!
//! The [`ReplaceProtocol`] replaces a PV whose node affinity no longer
//! matches where LINSTOR keeps its data, safely at every step, given the
//! replacement `affinity_core` decides. It needs neither the controller nor
//! its HTTP server or metrics (`default-features = false`):
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::time::{Duration, SystemTime};
//!
//! use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
//! use affinity_core::{Action, DecisionSettings, Planner, Properties};
//! use affinity_kube::{ReplaceProtocol, linstor_state};
//! use kube::api::Api;
//!
//! # async fn replace(pv_name: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let kube = kube::Client::try_default().await?;
//! let linstor = linstor_api::Client::from_env()?; // LS_CONTROLLERS and the other LS_* variables
//! let live: PersistentVolume = Api::all(kube.clone()).get(pv_name).await?;
//!
//! // Gather and decide: what LINSTOR keeps, and the PV that matches it.
//! let state = linstor_state::fetch(&linstor).await?;
//! let nodes = state.snapshot.nodes().map(|(_, properties)| properties);
//! let settings = DecisionSettings::at(
//!     linstor_state::property_namespace(None, nodes),
//!     Duration::ZERO,
//!     SystemTime::now(),
//! );
//! let classes: BTreeMap<String, Properties> = BTreeMap::new();
//! let mut plan = Planner::new(&state.snapshot, &classes, &settings).plan([&live]);
//!
//! // Act: the intent log is kept on the LINSTOR volume definition.
//! let protocol = ReplaceProtocol::new(kube, linstor, "my-operator");
//! if let Some(decision) = plan.decisions.pop()
//!     && let Ok(Action::Replace(replacement)) = decision.outcome
//! {
//!     let replaced = protocol.run(&decision.volume, &replacement).await?;
//!     println!("{pv_name} replaced as UID {:?}", replaced.metadata.uid);
//! }
//! protocol.stop_rechecks().await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/replace_one_pv.rs` runs the same against a demo cluster and
//! LINSTOR simulator and checks the result.
//!
//! # What the crate offers
//!
//! The replace protocol usable alone, with what it builds on:
//!
//! - [`replace`]: the protocol for one PV ([`ReplaceProtocol`]), its steps
//!   ([`ReplaceStep`]) told to a [`StepObserver`], its [`ReplaceError`];
//! - [`intent`]: where intents are kept ([`IntentLog`]), by default on the
//!   LINSTOR volume definition, so that a crash at any step converges when
//!   the decision is taken again;
//! - [`leader`]: election on a Lease shared with the Go controller, and the
//!   [`Leadership`] that fences every write;
//! - [`events`]: the [`EventReporter`] announcing replacements;
//! - [`permissions`]: the RBAC grants, which decide the paths that are on;
//! - [`linstor_state`]: LINSTOR read into what decisions need;
//! - [`throttle`]: client-side pacing of the Kubernetes API;
//! - [`migrate`]: moving the Go controller's saved state to this layout.
//!
//! The controller as a whole needs the `controller` feature (on by default),
//! which also brings `metrics` (feature `metrics`) and the `http` health and
//! metrics endpoints (feature `http-server`).
#![cfg_attr(
    feature = "controller",
    doc = "
The [`controller`] gathers state (the [`pv_cache`] and [`class_cache`] kept
by watch, LINSTOR), decides with pure functions and acts through the
protocol; the [`drain`] reconciler drains a LINSTOR node while its
Kubernetes node (kept in the [`node_cache`]) is cordoned, tainted or
deleted. Around it, [`metrics`] and the [`http`] endpoints."
)]

#[cfg(feature = "controller")]
pub mod class_cache;
#[cfg(feature = "controller")]
pub mod controller;
#[cfg(feature = "controller")]
pub mod drain;
pub mod events;
#[cfg(feature = "http-server")]
pub mod http;
pub mod intent;
pub mod leader;
pub mod linstor_state;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod migrate;
#[cfg(feature = "controller")]
pub mod node_cache;
pub mod permissions;
#[cfg(feature = "controller")]
pub mod pv_cache;
#[cfg(feature = "controller")]
mod reconcile;
pub mod replace;
pub mod throttle;
#[cfg(feature = "controller")]
mod watch;

#[cfg(feature = "controller")]
pub use controller::{Controller, ControllerParts, ControllerSettings};
pub use events::EventReporter;
pub use intent::{IntentLog, IntentLogError};
pub use leader::{LeaderElector, Leadership, LeaseSettings, RunningElection};
#[cfg(feature = "metrics")]
pub use metrics::{Metrics, OperationKind};
pub use replace::{ReplaceError, ReplaceProtocol, ReplaceStep, StepObserver};
pub use throttle::ThrottleLayer;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`; a panic elsewhere while holding it leaves the data usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
