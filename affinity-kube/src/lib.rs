//! Kubernetes side of the LINSTOR affinity controller.
//!
//! The [`controller`] gathers state, decides with pure functions, then acts:
//!
//! - gather: [`watch`] keeps the [`pv_cache`] and the [`class_cache`] in
//!   step with the API server; [`linstor_state`] reads LINSTOR;
//! - decide: `affinity_core` per volume, then [`reconcile`] turns decisions
//!   into operations and warnings;
//! - act: [`replace`] carries out the replace protocol for one PV, with
//!   [`intent`] keeping the intent log on the LINSTOR volume definition, so
//!   that a crash at any step converges when the decision is taken again;
//!   [`events`] reports on the PV and its claim.
//!
//! Beside it, the [`drain`] reconciler drains a LINSTOR node while its
//! Kubernetes node (kept in the [`node_cache`]) is cordoned, tainted or
//! deleted, and tells the controller which volumes to follow closely.
//!
//! Around it: [`leader`] election on a Lease, [`metrics`] and the [`http`]
//! endpoints, client-side [`throttle`] of the Kubernetes API, and the
//! [`permissions`] RBAC grants, which decide the paths that are on.

pub mod class_cache;
pub mod controller;
pub mod drain;
pub mod events;
pub mod http;
pub mod intent;
pub mod leader;
pub mod linstor_state;
pub mod metrics;
pub mod migrate;
pub mod node_cache;
pub mod permissions;
pub mod pv_cache;
pub mod reconcile;
pub mod replace;
pub mod throttle;
pub mod watch;

pub use intent::{IntentLog, IntentLogError};
pub use replace::{ReplaceError, ReplaceProtocol};
