//! Kubernetes side of the LINSTOR affinity controller.
//!
//! [`intent`] keeps the replace intent log on the LINSTOR volume definition;
//! [`replace`] carries out the replace protocol for one PV, so that a crash
//! at any step converges when the decision is taken again; [`events`]
//! announces each replaced PV on the PV and on its claim.

pub mod events;
pub mod intent;
pub mod replace;

pub use intent::{IntentLog, IntentLogError};
pub use replace::{ReplaceError, ReplaceProtocol};
