//! Async client for the LINSTOR controller REST API (v1), and (with the `simulator` feature) an
//! in-memory LINSTOR controller that serves the same API on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), linstor_api::Error> {
//! let client = linstor_api::Client::from_env()?;
//! for node in client.list_nodes(&Default::default()).await? {
//!     println!("{} {:?}", node.name, node.flags);
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
mod compact;
pub mod config;
pub mod error;
pub mod json_array;
pub mod models;
#[cfg(feature = "simulator")]
pub mod sim;

pub use client::{Client, NodeFilter, ResourceDefinitionFilter, ResourceViewFilter};
pub use config::{Auth, ClientBuilder};
pub use error::{ConfigError, Error, Reports, Result};
