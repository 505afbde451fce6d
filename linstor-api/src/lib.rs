//! Async client for the LINSTOR controller REST API (v1), and (with the `simulator` feature) an
//! in-memory LINSTOR controller that serves the same API on loopback.
//!
//! The example `examples/read_cluster.rs` reads the nodes and the resource view of the controller
//! the `LS_*` environment names (as the Go LINSTOR client reads it, see [`config`]) and prints
//! every node with its type, connection state and resources
//! (`LS_CONTROLLERS=http://127.0.0.1:3370 cargo run -p linstor-api --example read_cluster`). Its
//! core:
//!
//! ```no_run
//! use linstor_api::{Client, NodeFilter, ResourceViewFilter};
//!
//! # async fn demo() -> Result<(), linstor_api::Error> {
//! let client = Client::from_env()?;
//! for node in client.list_nodes(&NodeFilter::default()).await? {
//!     let connection = node.connection_status.as_ref().map_or("unknown", |s| s.as_str());
//!     println!("{} ({}, {connection})", node.name, node.node_type);
//! }
//! for resource in client.view_resources(&ResourceViewFilter::default()).await? {
//!     let kind = if resource.is_diskless() { "diskless" } else { "diskful" };
//!     println!("{} on {}: {kind}", resource.name, resource.node_name);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Client`] is configured from the environment ([`Client::from_env`]) or with a
//! [`ClientBuilder`]; its calls return [`Result`] with [`Error`]. The [`models`] are the API's JSON
//! objects; their enumerations keep a value this client does not know as `Other`.

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
